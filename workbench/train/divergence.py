"""A diverged run ends ``failed`` with kind ``diverged``, before a bad checkpoint is saved.

Two checks, both raising :class:`UserError`: a non-finite logged loss (the
step is named), and non-finite trainable weights just before a checkpoint
would be written, so every checkpoint on disk holds finite weights (a
``logging_every`` above 1 could otherwise hide a NaN until after a save).
Under fp16 a non-finite loss can be a step the gradient scaler skips, so
there only the weights decide.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from workbench.train.errors import UserError

KIND = "diverged"


def check_loss(loss: Any, step: int, run_dir: Path, learning_rate: float, fp16: bool = False) -> None:
    """Raise when the logged ``loss`` at ``step`` is NaN or infinite."""
    if fp16 or not isinstance(loss, (int, float)) or math.isfinite(loss):
        return
    raise diverged(f"training diverged: the loss is {loss} at step {step}", run_dir, learning_rate)


def check_weights(model: Any, step: int, run_dir: Path, learning_rate: float) -> None:
    """Raise when any trainable parameter of ``model`` holds a NaN or an infinity."""
    import torch

    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        return
    finite = torch.stack([torch.isfinite(p.detach()).all() for p in params]).all()
    if not bool(finite.item()):
        raise diverged(f"training diverged: the weights are no longer finite at step {step}",
                       run_dir, learning_rate)


def diverged(message: str, run_dir: Path, learning_rate: float) -> UserError:
    from workbench.train.trainer import latest_checkpoint

    found = latest_checkpoint(run_dir)
    kept = (f"checkpoint-{found[1]} is from before it" if found
            else "no checkpoint was saved before it")
    return UserError(f"{message}; {kept}", kind=KIND,
                     hint=f"lower train.learning_rate (it is {learning_rate:g}) or raise "
                     "train.warmup_steps, then start a new run")
