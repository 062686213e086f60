"""The study screen (``y`` on a search experiment): trials, best so far, a scatter per param.

Read from the trial run folders through :mod:`workbench.studyview` (standard
library), re-read every :data:`POLL_S` seconds and whenever the App says
runs changed, so it updates live as trials end. It never imports Optuna.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Grid, Vertical
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Static
from textual_plotext import PlotextPlot

from workbench.studyview import StudyView, fmt_param, study_view, trials_table

POLL_S = 2.0


class StudyChart(PlotextPlot):
    """One plotext chart of the study; :meth:`show` replaces what it draws."""

    def show(self, title: str, xs: list[Any], ys: list[float], xlabel: str, log_x: bool = False,
             line: bool = False) -> None:
        plt = self.plt
        plt.clear_data()
        plt.clear_figure()
        plt.title(title)
        plt.xlabel(xlabel)
        if not ys:
            plt.title(f"{title}: no finished trial yet")
        elif all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in xs):
            nums = [math.log10(x) if log_x and x > 0 else x for x in xs]
            if log_x:
                plt.xlabel(f"log10 {xlabel}")
            (plt.plot if line else plt.scatter)(nums, ys)
        else:  # choices: one column per value, in first-seen order
            labels = list(dict.fromkeys(str(x) for x in xs))
            plt.scatter([labels.index(str(x)) + 1 for x in xs], ys)
            plt.xticks(list(range(1, len(labels) + 1)), labels)
        self.refresh()


class StudyScreen(Screen):
    """One experiment's study: the trials table and its charts, live."""

    DEFAULT_CSS = """
    StudyScreen #study-title { height: 1; padding: 0 1; }
    StudyScreen #study-table { height: 1fr; }
    StudyScreen #study-charts { height: 2fr; grid-size: 2; }
    StudyScreen StudyChart { height: 1fr; min-height: 8; }
    """
    BINDINGS = [Binding("escape", "back", "back")]

    def __init__(self, root: Path, experiment: str) -> None:
        super().__init__()
        self.root = root
        self.experiment = experiment
        self.study: StudyView | None = None

    def compose(self) -> ComposeResult:
        yield Static(id="study-title")
        with Vertical():
            yield DataTable(id="study-table", zebra_stripes=True, cursor_type="row")
            yield Grid(StudyChart(id="study-best"), id="study-charts")
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self.reload()
        self.set_interval(POLL_S, self.reload)

    def reload(self) -> None:
        """Read the trials again and redraw (the App calls it as ``runs_updated`` too)."""
        self.study = study_view(self.root, self.experiment)
        self.redraw()

    runs_updated = reload

    def redraw(self) -> None:
        title = Text(f" Study {self.experiment}", style="bold")
        study = self.study
        table = self.query_one(DataTable)
        if study is None:
            title.append(" · no trials yet: r on the main screen starts the study", style="dim")
            self.query_one("#study-title", Static).update(title)
            return
        header, rows = trials_table(study, star=" ★")
        if [str(c.label) for c in table.columns.values()] != header:
            table.clear(columns=True)
            table.add_columns(*header)
        keep = table.cursor_row
        table.clear()
        for row, trial in zip(rows, sorted(study.trials, key=lambda t: t.number), strict=True):
            style = {"pruned": "magenta", "failed": "red", "running": "green"}.get(trial.state, "")
            table.add_row(*(Text(c, style="bold green" if trial.best and i == len(row) - 1 else style)
                            for i, c in enumerate(row)))
        if keep < table.row_count:
            table.move_cursor(row=keep, animate=False)
        counts = ", ".join(f"{n} {state}" for state, n in study.counts().items())
        title.append(f" — {len(study.trials)} trials: {counts}", style="dim")
        best = study.best
        if best is not None:
            title.append(f" · best {study.metric.title} {study.metric.fmt(best.value)} ({best.ref}: "
                         + ", ".join(f"{p}={fmt_param(best.params.get(p))}" for p in study.params) + ")")
        self.query_one("#study-title", Static).update(title)
        self._charts(study)

    def _charts(self, study: StudyView) -> None:
        grid = self.query_one("#study-charts", Grid)
        charts = {c.id: c for c in self.query(StudyChart)}
        for i in range(len(study.params)):
            if f"study-param-{i}" not in charts:
                chart = StudyChart(id=f"study-param-{i}")
                grid.mount(chart)
                charts[chart.id] = chart
        curve = study.best_so_far()
        metric = study.metric.title
        charts["study-best"].show(f"best {metric} so far", [n for n, _ in curve], [v for _, v in curve],
                                  "trial", line=True)
        for i, param in enumerate(study.params):
            pts = study.points(param)
            charts[f"study-param-{i}"].show(f"{metric} vs {param}", [x for x, _ in pts],
                                            [y for _, y in pts], param, log_x=param in study.log_params)

    def action_back(self) -> None:
        self.app.pop_screen()
