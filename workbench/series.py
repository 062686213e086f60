"""A run's metrics as the charts need them, built incrementally from event batches.

:class:`RunSeries` ingests the new events an :class:`~workbench.runs.EventTail`
returns and keeps loss / perplexity / bits-per-byte series, the samples and a
step rate for the ETA. A ``resume`` event cuts work lost with the process the
same way :func:`workbench.runs.effective` does, so no step shows twice.
:func:`downsample` thins a series for drawing only: the data stays whole.
Standard library only.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

Point = tuple[float, float]
CUT_TYPES = ("train", "eval", "sample")


@dataclass(frozen=True)
class ChartView:
    """How the charts draw: smoothing weight (0: none), log scale, the last N steps only (0: all)."""

    smoothing: float = 0.0
    log: bool = False
    last: int = 0


def ema(points: Sequence[Point], weight: float) -> list[Point]:
    """TensorBoard's smoothing: an exponential moving average, debiased at the start.

    ``weight`` 0 returns the points as they are; 0.9 keeps 90% of the past at
    each point. Debiasing (dividing by ``1 - weight**n``) keeps the first
    points where they are instead of pulled towards zero.
    """
    if weight <= 0 or not points:
        return list(points)
    out: list[Point] = []
    last, n = 0.0, 0
    for x, y in points:
        if y != y or y in (float("inf"), float("-inf")):  # NaN or inf: keep the point, not the average
            out.append((x, y))
            continue
        n += 1
        last = last * weight + (1 - weight) * y
        out.append((x, last / (1 - weight ** n)))
    return out


def downsample(points: Sequence[Point], buckets: int) -> list[Point]:
    """At most about ``2 * buckets`` points that keep every bucket's minimum and maximum.

    Points are split into ``buckets`` runs of equal count; each keeps its
    lowest and highest value in step order, so spikes (a loss blow-up) stay
    visible however long the run. The first and last points always stay.
    """
    n = len(points)
    if buckets <= 0 or n <= 2 * buckets:
        return list(points)
    out: list[Point] = [points[0]]
    size = n / buckets
    for b in range(buckets):
        lo, hi = int(b * size), int((b + 1) * size)
        chunk = points[max(lo, 1):min(hi, n - 1)]
        if not chunk:
            continue
        low = min(chunk, key=lambda p: p[1])
        high = max(chunk, key=lambda p: p[1])
        out.extend(sorted({low, high}, key=lambda p: p[0]) if low != high else [low])
    out.append(points[-1])
    return out


class RunSeries:
    """Metrics of one run, grown by :meth:`ingest` with each new batch of events."""

    RATE_WINDOW = 50

    def __init__(self) -> None:
        self.loss: list[Point] = []
        self.perplexity: list[Point] = []
        self.bits_per_byte: list[Point] = []
        self.samples: list[dict[str, Any]] = []
        self.last_train: dict[str, Any] | None = None
        self.last_status: dict[str, Any] | None = None
        self.checkpoints: list[int] = []
        self.events = 0
        self._recent: deque[tuple[float, float]] = deque(maxlen=self.RATE_WINDOW)

    def ingest(self, events: Iterable[dict[str, Any]]) -> bool:
        """Add new events; ``True`` when anything a chart shows changed."""
        changed = False
        for event in events:
            self.events += 1
            kind = event.get("type")
            step = event.get("step")
            if kind == "train" and isinstance(step, (int, float)):
                loss = event.get("loss")
                if isinstance(loss, (int, float)):
                    self.loss.append((step, float(loss)))
                    changed = True
                self.last_train = event
                if isinstance(event.get("time"), (int, float)):
                    self._recent.append((float(event["time"]), float(step)))
            elif kind == "eval" and isinstance(step, (int, float)):
                for key, target in (("perplexity", self.perplexity), ("bits_per_byte", self.bits_per_byte)):
                    value = event.get(key)
                    if isinstance(value, (int, float)):
                        target.append((step, float(value)))
                        changed = True
            elif kind == "sample":
                self.samples.append(event)
                changed = True
            elif kind == "checkpoint" and isinstance(step, int):
                self.checkpoints.append(step)
            elif kind == "status":
                self.last_status = event
            elif kind == "resume":
                self._cut(event.get("from_step", 0) or 0)
                changed = True
        return changed

    def _cut(self, step: float) -> None:
        """Forget metrics past ``step``: the resumed process redoes them."""
        for series in (self.loss, self.perplexity, self.bits_per_byte):
            while series and series[-1][0] > step:
                series.pop()
        self.samples = [s for s in self.samples if not isinstance(s.get("step"), (int, float))
                        or s["step"] <= step]
        self.checkpoints = [c for c in self.checkpoints if c <= step]
        self._recent.clear()
        if self.last_train and (self.last_train.get("step") or 0) > step:
            self.last_train = None

    @property
    def step(self) -> int | None:
        """The latest training step seen in the events."""
        return int(self.last_train["step"]) if self.last_train else None

    def steps_per_second(self) -> float | None:
        """Recent speed, from the times of the last few train events (since any resume)."""
        if len(self._recent) < 2:
            return None
        (t0, s0), (t1, s1) = self._recent[0], self._recent[-1]
        if t1 <= t0 or s1 <= s0:
            return None
        return (s1 - s0) / (t1 - t0)

    def latest_samples(self) -> list[dict[str, Any]]:
        """The samples of the most recent checkpoint (the last step that produced any)."""
        if not self.samples:
            return []
        last = self.samples[-1].get("step")
        return [s for s in self.samples if s.get("step") == last]
