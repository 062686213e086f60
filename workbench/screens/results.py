"""The results screen (``t``): one row per run, sortable, best values marked ★; ``e`` writes the report.

Rows come from :mod:`workbench.results`, the same code as ``workbench
results``, so the screen and the command agree. Besides the fixed columns
there is one per metric the runs declared or reported (a plugin's as much as
perplexity), its header arrow showing which way is better, ★ following it. The report is written by
:func:`workbench.report.write_report` in a thread, in no-generate mode: the
samples are the runs' own (seeded, written during training), so exporting
never starts the generation worker nor needs a base model on disk.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from rich.text import Text
from textual import events, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Static

from workbench import results
from workbench.messages import ReportWritten

if TYPE_CHECKING:
    from workbench.app import WorkbenchApp
    from workbench.plugins import Registry

COLUMNS = ("run", "model", "r", "steps", "ppl", "bpb", "time", "tok_s")  # every metric goes before time
SORTS = ("ppl", "bpb", "tok_s", "time", "steps", "r", "model", "run")  # s cycles: these, then metrics
ARROWS = {"low": "↓", "high": "↑"}
REPORT_FOLDER = "report"


def screen_columns(rows: list[results.Row]) -> list[str]:
    """The fixed columns, with one per further metric of the rows before the training time."""
    extra = [c.key for c in results.metric_columns(rows)]
    at = COLUMNS.index("time")
    notes = ["notes"] if any(row["notes"] for row in rows) else []  # a run's tags and note
    return [*COLUMNS[:at], *extra, *COLUMNS[at:], *notes]


def header(column: results.Column) -> str:
    """A column's header: its label, and for a scored metric the arrow of its better direction."""
    arrow = ARROWS.get(column.better or "") if column.numeric and column.key != "tok_s" else None
    return f"{column.label} {arrow}" if arrow else column.label


class ResultsScreen(Screen):
    """The study's results table, measured from the run folders."""

    BINDINGS = [
        Binding("s", "cycle_sort", "sort"),
        Binding("S", "reverse", "reverse", key_display="S"),
        Binding("e", "export", "export report"),
        Binding("escape", "back", "back"),
        *(Binding(str(i), f"sort_nth({i})", f"sort by column {i}", show=False) for i in range(1, 10)),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.sort_key = "ppl"
        self.reverse = False
        self.rows: list[results.Row] = []
        self.columns: list[str] = []

    @property
    def wb(self) -> WorkbenchApp:
        return self.app  # type: ignore[return-value]

    def compose(self) -> ComposeResult:
        yield Static(id="results-title")
        yield DataTable(id="results-table", zebra_stripes=True, cursor_type="row")
        yield Footer(compact=True)

    def on_mount(self) -> None:
        table = self.query_one(DataTable)
        self.reload()
        table.focus()
        self.watch(table, "scroll_x", self._scrolled, init=False)  # the off-screen columns change
        self.wb.runs_signal.subscribe(self, self.on_runs_signal)  # new numbers, never stale
        self.wb.plugins_signal.subscribe(self, self.on_plugins_signal)  # default models' labels

    def on_runs_signal(self, _: None) -> None:
        self.reload()

    def on_plugins_signal(self, _: Registry) -> None:
        self.reload()

    def reload(self) -> None:
        """Read the rows again from the run folders."""
        all_runs = [run for rs in self.wb.runs_by_exp.values() for run in rs]
        self.rows = results.rows_for(all_runs, results.default_models(self.wb.registry))
        self.redraw()

    def redraw(self) -> None:
        """Sort, then fill the table; the cursor stays on the same run."""
        table = self.query_one(DataTable)
        keep = None
        if table.row_count and table.cursor_row < table.row_count:
            keep = table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value
        known = results.columns_for(self.rows)
        columns = screen_columns(self.rows)
        if columns != self.columns:  # a run reported a new metric: one more column
            self.columns = columns
            table.clear(columns=True)
            for key in columns:
                table.add_column(header(known[key]), key=key)
        if self.sort_key not in known:
            self.sort_key, self.reverse = "ppl", False
        rows = results.sort_rows(self.rows, self.sort_key, self.reverse)
        table.clear()
        for row in rows:
            cells = []
            for key in columns:
                text = results.cell(row, key)
                style = "bold green" if key in row.best else ""
                cells.append(Text(text, style=style, justify="right" if known[key].numeric else "left"))
            table.add_row(*cells, key=str(row.run.path))
        if keep is not None:
            try:
                table.move_cursor(row=table.get_row_index(keep), animate=False)
            except Exception:  # noqa: BLE001 - the run is gone: the cursor stays where it is
                pass
        self.refresh_title()

    def refresh_title(self) -> None:
        title = Text(" Results", style="bold")
        title.append(f" — {len(self.rows)} run{'s' if len(self.rows) != 1 else ''}")
        column = results.columns_for(self.rows)[self.sort_key]
        arrow = "↓" if (column.better == "high") != self.reverse else "↑"
        title.append(f" · sort: {column.label} {arrow}", style="dim")
        if not self.rows:
            title.append(" · no runs yet: r on the main screen starts one", style="dim")
        hidden = self.hidden_columns()
        if hidden:
            title.append(f" · off-screen: {', '.join(hidden)} (←/→ scroll)", style="yellow")
        self.query_one("#results-title", Static).update(title)

    def hidden_columns(self) -> list[str]:
        """Labels of the columns outside the table's visible width (the table scrolls sideways to them)."""
        table = self.query_one(DataTable)
        width = table.scrollable_content_region.width
        if not width:
            return []
        known = results.columns_for(self.rows)
        left, right, hidden = table.scroll_x, table.scroll_x + width, []
        x = 0
        for column in table.ordered_columns:
            w = column.get_render_width(table)
            if x + w > right or x < left:
                hidden.append(known[key].label if (key := str(column.key.value)) in known else key)
            x += w
        return hidden

    def on_resize(self, _: events.Resize) -> None:
        self.call_after_refresh(self.refresh_title)

    def _scrolled(self, _: float) -> None:
        self.refresh_title()

    def sorted_runs(self) -> list[str]:
        """The run references in the order shown (for tests and the report)."""
        return [row["run"] for row in results.sort_rows(self.rows, self.sort_key, self.reverse)]

    # --- actions ----------------------------------------------------------------

    def action_sort(self, key: str) -> None:
        if key == self.sort_key:
            self.reverse = not self.reverse
        else:
            self.sort_key, self.reverse = key, False
        self.redraw()

    def action_sort_nth(self, n: int) -> None:
        """Sort by the ``n``-th column shown (keys 1-9); again reverses."""
        if 0 < n <= len(self.columns):
            self.action_sort(self.columns[n - 1])

    def action_cycle_sort(self) -> None:
        order = [*SORTS, *(k for k in self.columns if k not in SORTS)]
        index = order.index(self.sort_key) if self.sort_key in order else -1
        self.sort_key, self.reverse = order[(index + 1) % len(order)], False
        self.redraw()

    def action_reverse(self) -> None:
        self.reverse = not self.reverse
        self.redraw()

    def on_data_table_header_selected(self, event: DataTable.HeaderSelected) -> None:
        self.action_sort(str(event.column_key.value))

    def report_folder(self) -> Path:
        """``report/`` next to the experiments file, like ``workbench report`` run from there."""
        return self.wb.config_path.resolve().parent / REPORT_FOLDER

    def action_export(self) -> None:
        if not self.rows:
            self.wb.notice("no runs to report on yet", "warning")
            return
        self.wb.notice(f"writing the report to {self.report_folder()} …", title="report")
        self._export([row.run for row in results.sort_rows(self.rows, self.sort_key, self.reverse)],
                     self.report_folder())

    @work(thread=True, exclusive=True, exit_on_error=False, group="report", name="report")
    def _export(self, selected: list, folder: Path) -> None:
        """The report of the shown runs, without generating (the runs' own samples only)."""
        from workbench.report import write_report

        try:
            path = write_report(selected, folder, results.default_models(self.wb.registry), generate=False)
        except Exception as exc:  # noqa: BLE001 - any failure becomes a notice
            self.app.post_message(ReportWritten(None, f"{type(exc).__name__}: {exc}"))
            return
        self.app.post_message(ReportWritten(path))  # the App tells, even if this screen is gone

    def action_back(self) -> None:
        self.app.pop_screen()
