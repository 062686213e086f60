"""Small text helpers shared by the widgets: state badges, numbers, ages, axis ticks."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from rich.text import Text

from workbench.present import fmt_duration, fmt_rate, state_word
from workbench.records import DAMAGED, Status, parse_status
from workbench.runs import STATUS_PROBLEM

__all__ = ["age", "compact", "fmt_duration", "fmt_rate", "log_ticks", "nice_ticks", "num", "state_badge",
           "stopping"]

# Short reasons for a failed run, by the error_kind the trainer (or read_status) writes.
FAIL_REASONS = {"vanished": "vanished", "oom": "OOM", "config": "config", "plugin": "plugin",
                "data": "data", "model": "model"}
StatusLike = Status | Mapping[str, Any]


def typed(status: StatusLike) -> Status:
    """``status`` as the run model's :class:`~workbench.records.Status`."""
    if isinstance(status, Status):
        return status
    raw = dict(status)
    return parse_status(raw, raw.pop(STATUS_PROBLEM, None))


def stopping(status: StatusLike) -> bool:
    """A stop was asked of the current process (a resumed run keeps an older request's time)."""
    st = typed(status)
    return st.state == "running" and st.stop_requested is not None and st.stop_requested >= (st.launched or 0)


def state_badge(status: StatusLike | None, short: bool = False, position: int | None = None) -> Text:
    """A run's state as a coloured cell: ``● 212/500``, ``✓ finished``, ``✗ OOM``, ``■ stopped 13``.

    The words are the CLI's (:func:`workbench.present.state_word`); ``short``
    keeps the symbol and the detail that matters most. ``position`` is a
    queued run's place in the queue (1 starts next).
    """
    if not status:
        return Text("·", style="dim")
    st = typed(status)
    word = state_word(st)
    if word == "running":
        step, total = st.step or 0, st.max_steps
        label = f"● {step}/{total}" if total and not short else f"● {step}"
        if stopping(st):
            label = f"◐ stopping {step}" if not short else "◐ stopping"
        return Text(label, style="bold green")
    if word == "finished":
        return Text("✓ finished", style="green")
    if word == "failed":
        kind = st.error_kind or "error"
        reason = FAIL_REASONS.get(kind, kind)
        return Text(f"✗ {reason}", style="bold red")  # the banner says "failed" and why, in full
    if word == "stopped":
        return Text(f"■ stopped {st.step or 0}" if not short else "■ stopped", style="yellow")
    if word == "cancelled":
        return Text("■ cancelled", style="yellow")
    if word == "queued":
        return Text(f"◌ queued {position}" if position else "◌ queued", style="dim")
    if word == "pruned":  # a search trial the study's pruner cut short: not a failure
        pruned_step = st.raw.get("pruned_step")
        label = f"✂ pruned {pruned_step}" if isinstance(pruned_step, int) and not short else "✂ pruned"
        return Text(label, style="magenta")
    if word == DAMAGED:
        return Text("⚠ damaged", style="bold red")
    return Text(word, style="dim")


def num(value: Any, spec: str = ".2f") -> str:
    """A number for a table cell, ``-`` when missing."""
    if not isinstance(value, (int, float)) or isinstance(value, bool) or math.isnan(value):
        return "-"
    return format(value, spec)


def compact(value: float) -> str:
    """A short axis label: ``0.123``, ``4.56``, ``78.9``, ``1.2k``, ``34k``, ``5.6M``."""
    mag = abs(value)
    if mag >= 1e6:
        return f"{value / 1e6:.3g}M"
    if mag >= 1e4:
        return f"{value / 1e3:.3g}k"
    if mag >= 100 or value == int(value):
        return f"{value:.0f}"
    return f"{value:.3g}"


def nice_ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    """About ``count`` round tick positions (1, 2, 5 times a power of ten) covering ``lo..hi``."""
    if not math.isfinite(lo) or not math.isfinite(hi):
        return []
    if hi <= lo:
        return [lo]
    raw = (hi - lo) / max(count, 1)
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 2.5, 5, 10) if m * power >= raw)
    first = math.ceil(lo / step - 1e-9) * step
    ticks = []
    value = first
    while value <= hi + step * 1e-9:
        ticks.append(round(value, 10))
        value += step
    return ticks


def log_ticks(lo: float, hi: float) -> list[float]:
    """Ticks at 1, 2 and 5 times powers of ten inside ``lo..hi`` (thinned to at most 6)."""
    if lo <= 0 or hi <= lo:
        return [lo] if lo > 0 else []
    ticks = [m * 10 ** e for e in range(math.floor(math.log10(lo)), math.ceil(math.log10(hi)) + 1)
             for m in (1, 2, 5)]
    ticks = [t for t in ticks if lo <= t <= hi]
    while len(ticks) > 6:
        ticks = ticks[::2]
    return ticks


def age(seconds: float | None) -> str:
    """``42s ago``, ``3m ago``, ``5h ago``, ``2d ago``."""
    if seconds is None:
        return "-"
    seconds = max(0, int(seconds))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit} ago"
    return f"{seconds}s ago"
