"""The sampling defaults: one definition for the schema, the generation worker and its client.

The study this project grew from sampled at temperature 0.7 and top-p 0.9;
``[sampling]`` in ``experiments.toml`` overrides any of these per experiment.
Standard library only (the TUI and the generation client import it).
"""

from __future__ import annotations

TEMPERATURE = 0.7
TOP_P = 0.9
MAX_NEW_TOKENS = 60
SEED = 1234
NUM_SAMPLES = 1
