"""A run's progress on one line: bar, step, ETA, tokens per second, training and wall time.

Tokens per second: over the last steps while the run runs (labelled
``tok/s (last 20 steps)``), else the whole-run average (``tok/s avg``).

Training time counts only the time training processes ran (the run model's
definition); wall time runs from the start to the end (or now, ticking every
second while the run runs), stops and queue waits included.

Drawn from numbers it is handed (no clock of its own), so it is the same on
every screen that shows the same run and deterministic in snapshots.
"""

from __future__ import annotations

from dataclasses import dataclass

from rich.text import Text
from textual.widget import Widget

from workbench.summary import WINDOW
from workbench.widgets.format import fmt_duration, fmt_rate

EIGHTHS = " ▏▎▍▌▋▊▉█"


@dataclass(frozen=True)
class Progress:
    """The numbers the progress line shows; ``None`` where unknown."""

    step: int = 0
    max_steps: int | None = None
    eta_s: float | None = None
    tokens_per_s: float | None = None
    elapsed_s: float | None = None
    state: str = ""
    train_s: float | None = None  # time in training processes (stops and queue waits excluded)
    recent_rate: bool = False  # tokens_per_s is over the last steps' window, not the whole run

    @property
    def fraction(self) -> float:
        if not self.max_steps:
            return 0.0
        return min(max(self.step / self.max_steps, 0.0), 1.0)


def bar(fraction: float, width: int) -> str:
    """A bar ``width`` cells wide, filled to ``fraction`` in eighths of a cell."""
    eighths = int(round(fraction * width * 8))
    full, part = divmod(eighths, 8)
    text = "█" * full + (EIGHTHS[part] if part and full < width else "")
    return text.ljust(width)


class RunProgress(Widget):
    """``████▌   212/500 41%  ETA 6m12s  4.1k tok/s avg  1m50s training  2m03s wall``."""

    DEFAULT_CSS = """
    RunProgress { height: 1; padding: 0 1; }
    """

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.progress = Progress()

    def set_progress(self, progress: Progress) -> None:
        if progress != self.progress:
            self.progress = progress
            self.refresh()

    def describe(self) -> str:
        """The text part (without the bar), also used in tests."""
        p = self.progress
        parts = [f"{p.step}/{p.max_steps}" if p.max_steps else f"step {p.step}"]
        if p.max_steps:
            parts[0] += f" {p.fraction:.0%}"
        if p.state == "running":
            parts.append(f"ETA {fmt_duration(p.eta_s)}" if p.eta_s is not None else "ETA -")
        wide = self.size.width > 60
        if p.tokens_per_s:
            label = f" (last {WINDOW} steps)" if p.recent_rate else " avg"
            parts.append(f"{fmt_rate(p.tokens_per_s)} tok/s" + (label if wide else ""))
        if p.train_s is not None and wide:
            parts.append(f"{fmt_duration(p.train_s)} training")
        if p.elapsed_s is not None:
            parts.append(f"{fmt_duration(p.elapsed_s)} wall" if wide else fmt_duration(p.elapsed_s))
        return "  ".join(parts)

    def render(self) -> Text:
        if self.progress == Progress():
            return Text("")  # no run: nothing to measure
        label = self.describe()
        width = max(self.size.width - len(label) - 1, 4)
        color = {"running": "green", "finished": "green", "failed": "red",
                 "stopped": "yellow"}.get(self.progress.state, "dim")
        text = Text(bar(self.progress.fraction, width), style=color)
        text.append(" " + label)
        return text
