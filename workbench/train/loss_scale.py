"""fp16's skipped steps, made visible.

With fp16 the grad scaler multiplies the loss by a scale; when the gradients
come out non-finite (an overflow, or a NaN loss) it skips that optimizer step
and halves the scale. The Trainer's NaN filter then keeps the logged loss
looking fine, so a base model pretrained in bf16 that overflows in fp16 can
skip many steps without a word. :class:`LossScaleWatch` reads the scale after
every optimizer step: each drop is one skipped step, counted and reported.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Skipped:
    """One optimizer step the scaler skipped, and the scale before and after."""

    step: int
    scale_before: float
    scale_after: float
    total: int

    def message(self) -> str:
        return (f"fp16: step {self.step} skipped (non-finite gradients), loss scale "
                f"{self.scale_before:g} -> {self.scale_after:g}; {self.total} skipped so far")


class LossScaleWatch:
    """Counts the scaler's backoffs; a no-op without an enabled scaler (bf16, fp32)."""

    def __init__(self, scaler: Any = None) -> None:
        self.scaler = scaler if scaler is not None and scaler.is_enabled() else None
        self.scale: float | None = None
        self.skipped = 0

    @property
    def active(self) -> bool:
        return self.scaler is not None

    def observe(self, step: int) -> Skipped | None:
        """Read the scale after ``step``'s optimizer step; a :class:`Skipped` if it dropped."""
        if self.scaler is None:
            return None
        scale = float(self.scaler.get_scale())
        before, self.scale = self.scale, scale
        if before is None:
            before = float(getattr(self.scaler, "_init_scale", scale))
        if scale < before:
            self.skipped += 1
            return Skipped(step, before, scale, self.skipped)
        return None

    def fields(self) -> dict[str, Any]:
        """``loss_scale`` and ``skipped_steps`` for train events and status (fp16 only)."""
        if self.scaler is None or self.scale is None:
            return {}
        return {"loss_scale": self.scale, "skipped_steps": self.skipped}
