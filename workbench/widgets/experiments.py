"""The experiments table: one row per experiment, with the state of its latest run.

Columns drop out by priority when the table is narrow (at 80 columns it
shows name, r, state and perplexity; wider, backend, model and bits per
byte too). Rows update in place, so the cursor never jumps while runs
progress.
"""

from __future__ import annotations

from dataclasses import dataclass

from rich.text import Text
from textual import events
from textual.widgets import DataTable

# key, header, priority (lower stays longer), right-aligned
COLUMNS: tuple[tuple[str, str, int, bool], ...] = (
    ("mark", " ", 0, False),
    ("name", "experiment", 0, False),
    ("backend", "backend", 6, False),
    ("model", "model", 4, False),
    ("r", "r", 2, True),
    ("state", "state", 1, False),
    ("ppl", "ppl", 3, True),
    ("bpb", "bits/B", 5, True),
)
MARK = "▶"


@dataclass(frozen=True)
class ExperimentRow:
    """What the table shows for one experiment."""

    name: str
    backend: str
    model: str
    r: str
    state: Text
    ppl: str
    bpb: str
    in_config: bool = True
    marked: bool = False

    def cell(self, key: str) -> str | Text:
        if key == "mark":
            return Text(MARK, style="bold cyan") if self.marked else Text(" ")
        if key == "name":
            return Text(self.name) if self.in_config else Text(self.name, style="dim italic")
        value = getattr(self, key)
        if key in ("r", "ppl", "bpb") and isinstance(value, str):
            return Text(value, justify="right")
        return value


def _width(row: ExperimentRow, key: str) -> int:
    cell = row.cell(key)
    return cell.cell_len if isinstance(cell, Text) else len(cell)


class ExperimentsTable(DataTable):
    """Experiments from the TOML (and any runs folder not in it), one row each."""

    DEFAULT_CSS = """
    ExperimentsTable { height: 1fr; }
    """

    def __init__(self, **kwargs) -> None:
        super().__init__(cursor_type="row", zebra_stripes=False, **kwargs)
        self._rows: list[ExperimentRow] = []
        self._columns_shown: tuple[str, ...] = ()

    @property
    def current(self) -> str | None:
        """The experiment under the cursor."""
        if not self._rows or self.cursor_row < 0 or self.cursor_row >= len(self._rows):
            return None
        return self._rows[self.cursor_row].name

    def names(self) -> list[str]:
        return [r.name for r in self._rows]

    def set_rows(self, rows: list[ExperimentRow]) -> None:
        """Show ``rows``: cells updated in place when the experiments are the same ones."""
        columns = self._fit_columns(rows, self.size.width or 80)
        same_shape = columns == self._columns_shown and [r.name for r in rows] == self.names()
        if same_shape:
            for old, new in zip(self._rows, rows, strict=True):
                if old != new:
                    for key in columns:
                        if old.cell(key) != new.cell(key):
                            self.update_cell(new.name, key, new.cell(key))
            self._rows = rows
            return
        current = self.current
        self._rows = rows
        self._columns_shown = columns
        self.clear(columns=True)
        for key, header, _, right in COLUMNS:
            if key in columns:
                self.add_column(Text(header, justify="right") if right else header, key=key)
        for row in rows:
            self.add_row(*(row.cell(k) for k in columns), key=row.name)
        if current in self.names():
            self.move_cursor(row=self.names().index(current), animate=False)

    def _fit_columns(self, rows: list[ExperimentRow], width: int) -> tuple[str, ...]:
        """The columns that fit in ``width`` cells, dropping the least important first."""
        need = {key: max([len(header)] + [_width(r, key) for r in rows]) + 2 * self.cell_padding
                for key, header, _, _ in COLUMNS}
        keep = set()
        used = 1  # scrollbar gutter slack
        for key, _, _, _ in sorted(COLUMNS, key=lambda c: c[2]):
            if used + need[key] <= width or key in ("mark", "name"):
                keep.add(key)
                used += need[key]
        return tuple(key for key, *_ in COLUMNS if key in keep)

    def on_resize(self, event: events.Resize) -> None:
        if self._rows and self._fit_columns(self._rows, event.size.width) != self._columns_shown:
            self.set_rows(list(self._rows))

    def select(self, name: str) -> bool:
        """Move the cursor to ``name``; ``False`` when it is not in the table."""
        if name not in self.names():
            return False
        self.move_cursor(row=self.names().index(name), animate=False)
        return True
