"""Two tiny runs trained once per test session, through the real training process.

Shared by test_generate.py and test_results_report.py: both need real
adapters, and training them is the slow part, so the first caller trains and
later callers get the same folders. Each run is prepared with
``launch.prepare`` and trained with ``python -m workbench.train RUN_DIR``
(4 steps on the tiny Llama, checkpoints at steps 2 and 4), the two in
parallel. One torch thread per process: on a busy 2-core machine the default
two threads per process make the tiny model about 10x slower.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from workbench import config, launch, runs

PROMPT = ">be me\n>"
TOML = """
[defaults]
backend = "tiny"
model = "{model}"
prompts = [">be me\\n>"]
[defaults.train]
steps = 4
batch_size = 8
max_length = 48
eval_every = 2
save_every = 2
[defaults.data]
source = "{data}"
column = "greentexts"
train_split = "train[:64]"
eval_split = "test[:8]"
[defaults.sampling]
max_new_tokens = 12
temperature = 1.0
[experiments.a]
lora.r = 4
train.learning_rate = 2e-2
[experiments.b]
lora.r = 8
train.learning_rate = 4e-2
"""
DATA = Path(__file__).resolve().parents[1] / "workbench" / "data" / "greentext"
_CACHE: dict[str, tuple[Path, dict[str, runs.Run]]] = {}


def quiet_env(cache: Path | None = None) -> dict[str, str]:
    """The environment for workbench subprocesses in tests: offline, one thread each."""
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false")
    if cache is not None:
        env["WORKBENCH_CACHE"] = str(cache)
    return env


def trained_runs(tmp_path_factory, tiny_llama_dir: Path) -> tuple[Path, dict[str, runs.Run]]:
    """``(runs root, {"a": Run, "b": Run})``, trained on the first call."""
    if "runs" in _CACHE:
        return _CACHE["runs"]
    base = tmp_path_factory.mktemp("trained")
    toml = base / "experiments.toml"
    toml.write_text(TOML.format(model=tiny_llama_dir, data=DATA))
    cfg = config.load(toml)
    root = base / "runs"
    folders = {name: launch.prepare(cfg, name, root) for name in ("a", "b")}
    env = quiet_env(base / "cache")
    procs = {}
    for name, path in folders.items():
        with open(path / runs.LOG, "wb") as log:
            procs[name] = subprocess.Popen([sys.executable, "-m", "workbench.train", str(path)],
                                           env=env, stdout=log, stderr=subprocess.STDOUT)
    for name, proc in procs.items():
        code = proc.wait(timeout=300)
        log = "\n".join(runs.tail_log(folders[name], 30))
        assert code == 0, f"training {name} failed:\n{log}"
    result = (root, {name: runs.resolve(root, f"{name}#1") for name in folders})
    _CACHE["runs"] = result
    return result
