"""workbench: a terminal workbench for LoRA fine-tuning experiments on small language models."""

from __future__ import annotations

import pluggy

__version__ = "0.1.0"

PROJECT = "workbench"

#: Marker a plugin uses to implement a hook: ``@workbench.hookimpl``.
hookimpl = pluggy.HookimplMarker(PROJECT)

__all__ = ["PROJECT", "hookimpl", "__version__"]
