"""The detail tabs' contents: resolved config, diff from ``extends``, samples, run history.

Text builders are plain functions (tested without an app); the widgets only
display what they build.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rich.text import Text
from textual.widgets import DataTable, Static

from workbench.runs import Run
from workbench.terminal import printable
from workbench.widgets.format import age, fmt_duration, fmt_rate, num, state_badge, typed


def _value(value: Any) -> str:
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "(unset)"
    return json.dumps(value, ensure_ascii=False) if isinstance(value, (list, dict)) else str(value)


def config_text(values: dict[str, Any], default_model: str | None = None, note: str = "") -> Text:
    """A resolved experiment as TOML-like lines: top-level keys first, then each table."""
    text = Text()
    if note:
        text.append(note + "\n\n", style="italic dim")
    values = {k: v for k, v in values.items() if k != "name"}
    for key, value in values.items():
        if isinstance(value, dict):
            continue
        text.append(f"{key}", style="bold")
        shown = _value(value)
        if key == "model" and value is None:
            shown = f"(backend default: {default_model})" if default_model else "(backend default)"
        text.append(f" = {shown}\n")
    for key, value in values.items():
        if not isinstance(value, dict):
            continue
        text.append(f"[{key}]\n", style="bold cyan")
        for sub, sub_value in value.items():
            text.append(f"  {sub}", style="bold")
            text.append(f" = {_value(sub_value)}\n")
    return text


def diff_text(name: str, parent_name: str | None, changes: list[tuple[str, Any, Any]] | None,
              matrix_base: str | None = None) -> Text:
    """``ablation-a extends baseline`` and one ``key: old → new`` line per difference."""
    text = Text()
    if matrix_base:
        text.append(f"{name} is one entry of the matrix {matrix_base!r}.\n", style="italic")
    if parent_name is None:
        text.append(f"{name} extends nothing: it is [defaults] plus its own settings.\n", style="dim")
        return text
    text.append(f"{name} extends {parent_name}", style="bold")
    if changes is None:
        text.append(f"\n({parent_name} is not in the experiments file)\n", style="dim")
        return text
    if not changes:
        text.append(": no setting differs.\n")
        return text
    count = len(changes)
    text.append(f": {'only ' if count == 1 else ''}{count} setting{'s' if count > 1 else ''} differ"
                f"{'s' if count == 1 else ''}\n\n")
    width = max(len(k) for k, _, _ in changes)
    for key, old, new in changes:
        text.append(f"  {key.ljust(width)}  ", style="bold")
        text.append(_value(old), style="red")
        text.append("  →  ")
        text.append(_value(new), style="green")
        text.append("\n")
    return text


def samples_text(samples: list[dict[str, Any]], ref: str | None) -> Text:
    """The latest generations: checkpoint header, then each prompt (dim) and its text."""
    if not samples:
        return Text("no samples yet: they appear at each checkpoint"
                    if ref else "no run selected", style="dim")
    first = samples[0]
    where = first.get("checkpoint") or f"step {first.get('step')}"
    text = Text(f"{ref} · {Path(str(where)).name} · step {first.get('step')}\n", style="bold")
    for sample in samples:
        text.append("\n")
        prompt = printable(str(sample.get("prompt") or ""))
        if prompt:
            text.append(prompt, style="dim")
        text.append(printable(str(sample.get("text") or "")), style="green")
        seed = sample.get("seed")
        text.append(f"\n  (sample {sample.get('index', 0)}{f', seed {seed}' if seed is not None else ''})\n",
                    style="dim italic")
    return text


class DetailText(Static):
    """A scrollable-by-parent block of text in a detail tab."""

    DEFAULT_CSS = """
    DetailText { width: 1fr; height: auto; padding: 0 1; }
    """


class RunHistory(DataTable):
    """Every run of the selected experiment, newest first; enter shows one."""

    DEFAULT_CSS = """
    RunHistory { height: 1fr; }
    """

    HEADERS = ("run", "state", "step", "ppl", "bits/B", "tok/s", "started", "took")

    def __init__(self, **kwargs) -> None:
        super().__init__(cursor_type="row", **kwargs)
        self._shown: list[tuple[str, tuple]] = []

    def on_mount(self) -> None:
        for header in self.HEADERS:
            self.add_column(header, key=header)

    def set_runs(self, runs: list[Run], now: float, pinned: Path | None) -> None:
        rows = []
        for run in reversed(runs):
            st = typed(run.status)  # the run model's Status: one reading of status.json for every surface
            started = st.started or st.launched or st.created
            end = st.ended or (now if st.state == "running" else st.updated)
            took = fmt_duration(end - started) if started and end else "-"
            label = Text(("▸ " if run.path == pinned else "  ") + run.ref)
            rows.append((str(run.path), (
                label, state_badge(st, short=True), str(st.step or 0),
                num(st.best.get("perplexity")), num(st.best.get("bits_per_byte"), ".3f"),
                fmt_rate(st.tokens_per_s), age(now - started) if started else "-", took,
            )))
        if rows == self._shown:
            return
        cursor = self.cursor_row
        self._shown = rows
        self.clear()
        for key, cells in rows:
            self.add_row(*cells, key=key)
        if rows:
            self.move_cursor(row=min(cursor, len(rows) - 1), animate=False)
