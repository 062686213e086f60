"""The experiments table: one row per experiment, with the state of its latest run.

Columns drop out by priority when the table is narrow (at 80 columns it
shows name, r, state and perplexity; wider, bits per byte, then model and
backend). The perplexity and bits-per-byte columns hold the experiment's best
result over all its runs, beside the latest run's state.
Rows update in place, so the cursor never jumps while runs
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
    ("model", "model", 5, False),
    ("r", "r", 2, True),
    ("state", "state", 1, False),
    ("ppl", "ppl", 3, True),
    ("bpb", "bits/B", 4, True),
)
MARK = "◆"
NAME_MIN = 12  # a long experiment name is cut to this before the state column goes
NARROW = 44  # below this width the state column shows short badges


@dataclass(frozen=True)
class ExperimentRow:
    """What the table shows for one experiment."""

    name: str
    backend: str
    model: str
    r: str
    state: Text
    ppl: str | Text
    bpb: str | Text
    in_config: bool = True
    marked: bool = False
    state_short: Text | None = None  # the badge for a narrow table (``● 212`` for ``● 212/500``)

    def cell(self, key: str, narrow: bool = False) -> str | Text:
        if key == "mark":
            return Text(MARK, style="bold cyan") if self.marked else Text(" ")
        if key == "name":
            return Text(self.name) if self.in_config else Text(self.name, style="dim italic")
        if key == "state" and narrow and self.state_short is not None:
            return self.state_short
        value = getattr(self, key)
        if key in ("r", "ppl", "bpb") and isinstance(value, str):
            return Text(value, justify="right")
        return value


def shorten(name: str, width: int | None) -> str:
    """Cut a long name in the middle, keeping its end (where matrix entries differ)."""
    if width is None or len(name) <= width or width < 5:
        return name
    head = max(2, (width - 1) // 3)
    return f"{name[:head]}…{name[-(width - 1 - head):]}"


def _width(row: ExperimentRow, key: str, narrow: bool = False) -> int:
    cell = row.cell(key, narrow)
    return cell.cell_len if isinstance(cell, Text) else len(cell)


class ExperimentsTable(DataTable):
    """Experiments from the TOML (and any runs folder not in it), one row each."""

    DEFAULT_CSS = """
    ExperimentsTable { height: 1fr; }
    """

    def __init__(self, **kwargs) -> None:
        super().__init__(cursor_type="row", zebra_stripes=False, **kwargs)
        self._rows: list[ExperimentRow] = []
        self._layout: tuple[tuple[str, int | None], ...] = ()

    @property
    def current(self) -> str | None:
        """The experiment under the cursor."""
        if not self._rows or self.cursor_row < 0 or self.cursor_row >= len(self._rows):
            return None
        return self._rows[self.cursor_row].name

    def names(self) -> list[str]:
        return [r.name for r in self._rows]

    def row(self, name: str) -> ExperimentRow | None:
        """What the table holds for ``name`` (narrow tables show only some of it)."""
        return next((r for r in self._rows if r.name == name), None)


    def set_rows(self, rows: list[ExperimentRow]) -> None:
        """Show ``rows``: cells updated in place when the experiments are the same ones."""
        layout = self._fit_columns(rows, self.size.width or 80)
        same_shape = layout == self._layout and [r.name for r in rows] == self.names()
        if same_shape:
            for old, new in zip(self._rows, rows, strict=True):
                if old != new:
                    for key in self.columns_shown:
                        if old.cell(key, self.narrow) != new.cell(key, self.narrow):
                            self.update_cell(new.name, key, self._cell(new, key), update_width=True)
            self._rows = rows
            return
        current = self.current
        self._rows = rows
        self._layout = layout
        # Rebuilding passes the cursor over other rows: say nothing until it is back in place.
        with self.prevent(DataTable.RowHighlighted):
            self.clear(columns=True)
            widths = dict(layout)
            for key, header, _, right in COLUMNS:  # ("narrow" in the layout is not a column)
                if key in widths:
                    label = Text(header, justify="right") if right else header
                    self.add_column(label, key=key, width=widths[key])
            for row in rows:
                self.add_row(*(self._cell(row, k) for k in self.columns_shown), key=row.name)
        if current in self.names():
            self.move_cursor(row=self.names().index(current), animate=False)

    @property
    def narrow(self) -> bool:
        return 0 < self.size.width < NARROW

    def _cell(self, row: ExperimentRow, key: str) -> str | Text:
        cell = row.cell(key, self.narrow)
        if key == "name" and isinstance(cell, Text):
            width = dict(self._layout).get("name")
            short = shorten(row.name, width)
            if short != row.name:
                cell = Text(short, style=cell.style)
        return cell

    @property
    def columns_shown(self) -> tuple[str, ...]:
        return tuple(key for key, _ in self._layout if key != "narrow")

    def _fit_columns(self, rows: list[ExperimentRow], width: int) -> tuple[tuple[str, int | None], ...]:
        """``(column, width)`` pairs that fit in ``width`` cells.

        Mark, name and state always show (a long name is cut short first);
        then r, perplexity, bits per byte, model and backend, each while it
        fits; the name gets the room left.
        """
        pad = 2 * self.cell_padding
        narrow = 0 < width < NARROW
        need = {key: max([len(header)] + [_width(r, key, narrow) for r in rows])
                for key, header, _, _ in COLUMNS}
        room = width - 2  # scrollbar gutter slack
        name_width = min(need["name"], NAME_MIN)
        used = need["mark"] + need["state"] + name_width + 3 * pad
        keep = {"mark", "name", "state"}
        for key, *_ in sorted(COLUMNS, key=lambda c: c[2]):
            if key not in keep and used + need[key] + pad <= room:
                keep.add(key)
                used += need[key] + pad
        name_width += min(need["name"] - name_width, max(room - used, 0))  # what is left: a longer name
        layout = tuple((key, name_width if key == "name" else None) for key, *_ in COLUMNS if key in keep)
        return layout + ((("narrow", None),) if narrow else ())

    def on_resize(self, event: events.Resize) -> None:
        if self._rows and self._fit_columns(self._rows, event.size.width) != self._layout:
            self.set_rows(list(self._rows))

    def select(self, name: str) -> bool:
        """Move the cursor to ``name``; ``False`` when it is not in the table."""
        if name not in self.names():
            return False
        self.move_cursor(row=self.names().index(name), animate=False)
        return True
