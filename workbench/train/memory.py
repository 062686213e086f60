"""Peak memory of training and of evaluation, kept apart.

A process-lifetime peak is the largest thing the process ever did: after the
first evaluation that is the eval pass (full-vocabulary logits for a whole
eval batch), not training. So the peak is reset around every evaluation and
sampling pass, and the two are reported separately: ``peak_mem_gb`` (training)
and ``eval_peak_mem_gb`` on ``train`` events and in ``status.json``.

What is measured: on a GPU, torch's allocator peak
(``torch.cuda.max_memory_allocated``, reset with ``reset_peak_memory_stats``);
on a CPU, the process's resident-set high-water mark (``VmHWM`` in
``/proc/self/status``, reset by writing ``5`` to ``/proc/self/clear_refs``,
Linux 4.0+). Where neither can be read, nothing is reported.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path

GB = 1e9


def rss_peak_bytes() -> int | None:
    """This process's resident-set peak since start or the last reset (``None`` off Linux)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def reset_rss_peak() -> None:
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")


class PeakMemory:
    """Training and evaluation peaks in bytes, from a ``read`` / ``reset`` pair of a device."""

    def __init__(self, read: Callable[[], int | None], reset: Callable[[], None]) -> None:
        self.read = read
        self.reset = reset
        self.train: int | None = None
        self.eval: int | None = None

    @classmethod
    def for_device(cls, cuda: bool) -> PeakMemory:
        if cuda:
            import torch

            return cls(torch.cuda.max_memory_allocated, torch.cuda.reset_peak_memory_stats)
        return cls(rss_peak_bytes, reset_rss_peak)

    @staticmethod
    def _max(a: int | None, b: int | None) -> int | None:
        return b if a is None else a if b is None else max(a, b)

    def training_peak(self) -> int | None:
        """The training peak so far (evaluation passes excluded)."""
        self.train = self._max(self.train, self.read())
        return self.train

    @contextlib.contextmanager
    def evaluation(self) -> Iterator[None]:
        """Count what the block uses as evaluation, not training."""
        self.training_peak()
        self.reset()
        try:
            yield
        finally:
            self.eval = self._max(self.eval, self.read())
            self.reset()

    def fields(self) -> dict[str, float]:
        """``peak_mem_gb`` (training) and ``eval_peak_mem_gb``, for the events and status."""
        out = {}
        train = self.training_peak()
        if train is not None:
            out["peak_mem_gb"] = round(train / GB, 3)
        if self.eval is not None:
            out["eval_peak_mem_gb"] = round(self.eval / GB, 3)
        return out
