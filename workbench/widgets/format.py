"""Small text helpers shared by the widgets: state badges, numbers, ages, axis ticks."""

from __future__ import annotations

import math
from typing import Any

from rich.text import Text

from workbench.present import fmt_duration, fmt_rate

__all__ = ["age", "compact", "fmt_duration", "fmt_rate", "log_ticks", "nice_ticks", "num", "state_badge",
           "stopping"]

# Short reasons for a failed run, by the error_kind the trainer (or read_status) writes.
FAIL_REASONS = {"vanished": "vanished", "oom": "OOM", "config": "config", "plugin": "plugin",
                "data": "data", "model": "model"}


def stopping(status: dict[str, Any]) -> bool:
    """A stop was asked of the current process (a resumed run keeps an older request's time)."""
    asked = status.get("stop_requested")
    launched = status.get("launched") or 0
    return status.get("state") == "running" and isinstance(asked, (int, float)) and asked >= launched


def state_badge(status: dict[str, Any] | None, short: bool = False, position: int | None = None) -> Text:
    """A run's state as a coloured cell: ``● 212/500``, ``✓ done``, ``✗ OOM``, ``■ stopped``.

    ``position`` is a queued run's place in the queue (1 starts next).
    """
    if not status:
        return Text("·", style="dim")
    state = status.get("state", "?")
    if state == "running":
        step, total = status.get("step") or 0, status.get("max_steps")
        label = f"● {step}/{total}" if total and not short else f"● {step}"
        if stopping(status):
            label = f"◐ stopping {step}" if not short else "◐ stopping"
        return Text(label, style="bold green")
    if state == "finished":
        return Text("✓ done", style="green")
    if state == "failed":
        kind = status.get("error_kind") or "error"
        return Text(f"✗ {FAIL_REASONS.get(kind, kind)}", style="bold red")
    if state == "stopped" and not status.get("cancelled"):
        return Text(f"■ stopped {status.get('step') or 0}" if not short else "■ stopped", style="yellow")
    if state == "stopped" and status.get("cancelled"):
        return Text("■ cancelled", style="yellow")
    if state == "queued":
        return Text(f"◌ queued {position}" if position else "◌ queued", style="dim")
    return Text(str(state), style="dim")


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
