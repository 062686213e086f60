"""Metric charts (textual-plotext) with one curve per run, and their legend.

A chart is handed a run view's kept series (already downsampled to about a
thousand points however long the run: :mod:`workbench.summary`) and thins
it further for drawing (:func:`workbench.series.downsample`, about two points
per braille column), so a run of 200k steps draws as fast as a short one and
keeps its spikes. Colours are fixed per position so the legend below the charts names
each curve in both charts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from rich.text import Text
from textual import events
from textual.widgets import Static
from textual_plotext import PlotextPlot

from workbench.series import ChartView, Point, downsample, ema
from workbench.widgets.format import compact, log_ticks, nice_ticks

# Plotext and Rich share these colour names, so chart and legend agree.
PALETTE = ("cyan", "magenta", "green", "yellow", "blue", "red")
LOG_SPREAD = 20.0  # a series spanning more than this factor draws on a log scale


@dataclass
class Curve:
    """One run's series on a chart."""

    label: str
    color: str
    points: list[Point] = field(default_factory=list)


MARKERS_BELOW = 30  # a curve with fewer points than this gets a marker on each (an eval every 50 steps)


class MetricChart(PlotextPlot):
    """A line chart of one metric against step, for one or several runs."""

    DEFAULT_CSS = """
    MetricChart { width: 1fr; height: 1fr; min-height: 6; }
    """

    def __init__(self, title: str, short_title: str = "", log_scale_ok: bool = False, **kwargs) -> None:
        super().__init__(**kwargs)
        self.title = title
        self.short_title = short_title or title
        self.log_scale_ok = log_scale_ok
        self.curves: list[Curve] = []
        self.x_max: float | None = None
        self.drawn_points = 0
        self.drawing = ChartView()
        self.smooths = False  # this chart applies the view's smoothing (the loss chart)

    def set_title(self, title: str, short_title: str = "", log_scale_ok: bool = False) -> None:
        """Name the chart (a long and a short title, by width); drawn at the next :meth:`set_curves`."""
        self.title = title
        self.short_title = short_title or title
        self.log_scale_ok = log_scale_ok

    def set_curves(self, curves: list[Curve], x_max: float | None = None) -> None:
        """Replace the curves (the data is kept whole; drawing thins it)."""
        self.curves = curves
        self.x_max = x_max
        self.replot()

    def replot(self) -> None:
        """Redraw the figure from :attr:`curves` at the current size."""
        plt = self.plt
        plt.clear_data()
        plt.clear_figure()
        width = max(self.size.width, 20)
        # the y labels and frame take about 8 columns; braille packs 2 points a column
        buckets = max(width - 8, 4)
        view = self.drawing
        with_data = []
        for c in self.curves:
            pts = c.points
            if view.last and pts:
                pts = [p for p in pts if p[0] > pts[-1][0] - view.last]
            if pts:
                with_data.append(Curve(c.label, c.color, list(pts)))
        smoothing = view.smoothing if self.smooths else 0.0
        latest = ""
        if with_data:
            last = with_data[0].points[-1][1]
            latest = f" · {compact(last) if last >= 100 else f'{last:.3g}'}"
            if smoothing:
                mean = ema(with_data[0].points, smoothing)[-1][1]
                latest += f" (ema {smoothing:g}: {compact(mean) if mean >= 100 else f'{mean:.3g}'})"
        title = self.title if width >= len(self.title) + 16 else self.short_title
        plt.title(f"{title}{latest}" if with_data else f"{title} · no data yet")
        self.drawn_points = 0
        ys = [y for c in with_data for _, y in c.points if math.isfinite(y)]
        for curve in with_data:
            pts = [p for p in downsample(curve.points, buckets) if math.isfinite(p[1])]
            if not pts:
                continue
            self.drawn_points += len(pts)
            xs, vals = zip(*pts, strict=True)
            if smoothing:  # raw dim beneath, smoothed bright on top (TensorBoard's look)
                plt.plot(list(xs), list(vals), color="gray", marker="braille")
                vals = tuple(y for _, y in ema(pts, smoothing))
            if len(pts) > 1:
                plt.plot(list(xs), list(vals), color=curve.color, marker="braille")
            if len(pts) < MARKERS_BELOW:  # few points: each one marked, not an invisible dot
                plt.scatter(list(xs), list(vals), color=curve.color, marker="●")
        x_hi = (max((c.points[-1][0] for c in with_data), default=1) if view.last else self.x_max) \
            or max((c.points[-1][0] for c in with_data), default=1) or 1
        x_lo = max(0.0, x_hi - view.last) if view.last else 0.0
        plt.xlim(x_lo, x_hi)
        xt = [t for t in nice_ticks(x_lo, x_hi, 4 if width < 50 else 6) if x_lo <= t <= x_hi]
        plt.xticks(xt, [compact(t) for t in xt])
        if ys:
            lo, hi = min(ys), max(ys)
            if lo > 0 and (view.log or (self.log_scale_ok and hi / lo > LOG_SPREAD)):
                plt.yscale("log")
                yt = log_ticks(lo, hi)
            else:
                yt = nice_ticks(lo, hi, 4 if self.size.height < 12 else 5)
            if yt:
                plt.yticks(yt, [compact(t) for t in yt])
        self.refresh()

    def on_resize(self, event: events.Resize) -> None:
        self.replot()


class Legend(Static):
    """One line naming each curve in its colour: ``━ baseline#3  ━ ablation-a#1``."""

    DEFAULT_CSS = """
    Legend { height: auto; max-height: 3; padding: 0 1; }
    """

    def set_curves(self, labels: list[tuple[str, str]]) -> None:
        text = Text()
        for i, (label, color) in enumerate(labels):
            if i:
                text.append("   ")
            text.append("━━ ", style=f"bold {color}")
            text.append(label)
        self.update(text)
