"""The results table: one row per run, sortable by any column, best values marked.

Each row is a :class:`~workbench.runview.RunView` laid out as columns, so
the table, the ``results`` command, ``status``, the report and the TUI's
results screen agree on every number. Besides the fixed columns there is one
column per metric any run reported (built-in or a plugin's), keyed by the
metric's name, marked best by its declared direction. Standard library only:
the TUI imports this module.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from workbench import runmeta, runs
from workbench.metrics import Metric
from workbench.present import default_models, fmt_duration, fmt_metric, fmt_rate, model_label, table
from workbench.runview import RunView, view
from workbench.terminal import one_line

__all__ = ["BY_KEY", "COLUMNS", "Column", "Row", "cell", "collect", "default_models", "rows_for",
           "sort_rows"]


@dataclass(frozen=True)
class Column:
    """A results column: its key (for ``--sort``), header, and which way is better."""

    key: str
    label: str
    better: str | None = None  # "low", "high", or None: no best mark
    numeric: bool = True
    metric: Metric | None = None


# The built-in metrics keep their short keys: ppl/bpb are the best value, final_* the last one.
BUILTIN_KEYS = {"perplexity": ("ppl", "final_ppl"), "bits_per_byte": ("bpb", "final_bpb")}

COLUMNS: tuple[Column, ...] = (
    Column("run", "run", numeric=False),
    Column("model", "model", numeric=False),
    Column("r", "r"),
    Column("steps", "steps"),
    Column("ppl", "held-out ppl", "low"),
    Column("final_ppl", "final ppl", "low"),
    Column("bpb", "bits/byte", "low"),
    Column("final_bpb", "final bits/byte", "low"),
    Column("time", "train time"),
    Column("tok_s", "tok/s", "high"),
    Column("state", "state", numeric=False),
    Column("notes", "notes", numeric=False),  # the run's tags and note (workbench.runmeta)
)
BY_KEY = {c.key: c for c in COLUMNS}
DEFAULT_COLUMNS = ("run", "model", "r", "steps", "ppl", "final_ppl", "bpb", "time", "tok_s", "state")
STAR = "★"
_BETTER = {"lower": "low", "higher": "high"}


@dataclass
class Row:
    """One run's results; ``values`` holds the raw value of every column (None when unknown)."""

    run: runs.Run
    values: dict[str, Any]
    experiment: dict[str, Any] = field(default_factory=dict)
    best: set[str] = field(default_factory=set)
    view: RunView | None = None

    def __getitem__(self, key: str) -> Any:
        return self.values.get(key)

    def to_json(self) -> dict[str, Any]:
        v = self.view
        extra: dict[str, Any] = {}
        if v is not None:
            extra = {
                "metrics": {m.name: {"label": m.metric.title, "better": m.metric.better,
                                     "format": m.metric.format, "best": m.best,
                                     "best_step": m.best_step, "final": m.final} for m in v.metrics},
                "warnings": v.warnings, "damaged": v.damaged, "errors": v.errors,
                "started": v.timings.started, "checkpoints": [c.name for c in v.checkpoints],
            }
        return {**self.values, **extra, "experiment": self.run.experiment, "run_id": self.run.run_id,
                "path": str(self.run.path), "best": sorted(self.best)}


# --- building rows ------------------------------------------------------------------


def short_model(model: str | None) -> str:
    """The model label (see :func:`workbench.present.model_label`)."""
    return model_label(model)


def meta_text(meta: runmeta.RunMeta) -> str | None:
    """``#keep #lr-sweep lr too high``: a run's tags, then its note (``None`` without either)."""
    text = " ".join([*(f"#{t}" for t in meta.tags), *([meta.note] if meta.note else [])])
    return text or None


def row_of(v: RunView) -> Row:
    """The results row of one run view."""
    values: dict[str, Any] = {
        "run": v.ref, "model": v.model, "backend": v.backend, "r": v.lora_r, "steps": v.steps,
        "max_steps": v.max_steps, "time": v.timings.train_seconds, "tok_s": v.timings.tokens_per_s,
        "state": v.state, "notes": meta_text(runmeta.read_meta(v.path)),
    }
    for key, final in BUILTIN_KEYS.values():
        values[key] = values[final] = None
    for m in v.metrics:
        values[m.name] = m.best
        if m.name in BUILTIN_KEYS:
            key, final = BUILTIN_KEYS[m.name]
            values[key], values[final] = m.best, m.final
    return Row(v.run, values, v.experiment, view=v)


def build_row(run: runs.Run, default_models: Mapping[str, str] | None = None) -> Row:
    """The results row of one run, from its folder."""
    return row_of(view(run, default_models))


def collect(root: Path, refs: Iterable[str] | None = None,
            default_models: Mapping[str, str] | None = None) -> list[Row]:
    """Rows for ``refs`` (run references, see :func:`runs.resolve`), or for every run under ``root``."""
    refs = list(refs or [])
    selected = [runs.resolve(root, ref) for ref in refs] if refs else runs.list_runs(root)
    return rows_for(selected, default_models)


def rows_for(selected: Iterable[runs.Run], default_models: Mapping[str, str] | None = None) -> list[Row]:
    """Rows for these runs (each once), best values marked."""
    unique = list({run.path.resolve(): run for run in selected}.values())
    return mark_best([build_row(run, default_models) for run in unique])


def metric_columns(rows: Iterable[Row]) -> list[Column]:
    """A column per metric the rows hold, other than the built-ins (which have their own)."""
    found: dict[str, Metric] = {}
    for row in rows:
        for m in row.view.metrics if row.view else []:
            if m.name not in BUILTIN_KEYS:
                found.setdefault(m.name, m.metric)
    return [Column(name, metric.title, _BETTER.get(metric.better or ""), metric=metric)
            for name, metric in found.items()]


def columns_for(rows: Iterable[Row]) -> dict[str, Column]:
    """Every column of these rows by key: the fixed ones, then one per other metric."""
    return {**BY_KEY, **{c.key: c for c in metric_columns(rows)}}


def default_columns(rows: list[Row]) -> list[str]:
    """The columns shown by default: the fixed ones with each further metric before the time."""
    extra = [c.key for c in metric_columns(rows)]
    keys = list(DEFAULT_COLUMNS)
    at = keys.index("time")
    notes = ["notes"] if any(row["notes"] for row in rows) else []  # rows: a list, read twice
    return keys[:at] + extra + keys[at:] + notes


# --- best marks and sorting -----------------------------------------------------------


def mark_best(rows: list[Row]) -> list[Row]:
    """Mark, in each scored column, the rows holding the best value (when two or more rows have one)."""
    for column in columns_for(rows).values():
        if column.better is None:
            continue
        values = [row[column.key] for row in rows if row[column.key] is not None]
        if len(values) < 2:
            continue
        best = min(values) if column.better == "low" else max(values)
        for row in rows:
            row.best.discard(column.key)
            if row[column.key] == best:
                row.best.add(column.key)
    return rows


def _run_order(row: Row) -> tuple[str, int]:
    run_id = row.run.run_id
    return row.run.experiment, int(run_id) if run_id.isdigit() else 0


def sort_rows(rows: list[Row], key: str = "ppl", reverse: bool = False) -> list[Row]:
    """Sort by column ``key``: best first for scored columns, otherwise ascending; unknowns last."""
    known_columns = columns_for(rows)
    column = known_columns.get(key)
    if column is None:
        raise KeyError(f"unknown column {key!r} (columns: {', '.join(known_columns)})")
    if key == "run":
        return sorted(rows, key=_run_order, reverse=reverse)
    known = [r for r in rows if r[key] is not None]
    unknown = sorted((r for r in rows if r[key] is None), key=_run_order)
    descending = (column.better == "high") != reverse
    known.sort(key=lambda r: (r[key] if column.numeric else str(r[key]), _run_order(r)),
               reverse=descending)
    return known + unknown


# --- formatting ---------------------------------------------------------------------------


def cell(row: Row, key: str, star: str = STAR) -> str:
    """A column's value as text, with ``star`` before the best value."""
    value = row[key]
    metric = _metric_of(row, key)
    if value is None:
        text = "-"
    elif metric is not None:
        text = fmt_metric(metric, value)
    elif key == "time":
        text = fmt_duration(value)
    elif key == "tok_s":
        text = fmt_rate(value)
    elif key == "state" and row.view is not None:
        text = row.view.state_text
    elif key == "steps":
        total = row["max_steps"]
        text = f"{value}/{total}" if total and value != total else str(value)
    else:
        text = str(value)
    return f"{star} {text}" if key in row.best and star else text


def _metric_of(row: Row, key: str) -> Metric | None:
    name = next((n for n, keys in BUILTIN_KEYS.items() if key in keys), key)
    found = row.view.metric(name) if row.view else None
    if found is not None:
        return found.metric
    from workbench.metrics import BUILTIN

    return BUILTIN.get(name)


def render(rows: list[Row], columns: Iterable[str] | None = None) -> str:
    """The rows as an aligned plain-text table (numbers right-aligned)."""
    keys = list(columns or default_columns(rows))
    by_key = columns_for(rows)
    header = [by_key[k].label for k in keys]
    body = [[one_line(cell(row, k)) for k in keys] for row in rows]  # names come from files
    widths = [max(len(x) for x in [h, *(b[i] for b in body)]) for i, h in enumerate(header)]

    def line(cells: list[str]) -> str:
        parts = [c.rjust(w) if by_key[k].numeric else c.ljust(w)
                 for c, w, k in zip(cells, widths, keys, strict=True)]
        return "  ".join(parts).rstrip()

    return "\n".join([line(header), *(line(b) for b in body)])


# --- the command ---------------------------------------------------------------------------


def notes(rows: Iterable[Row]) -> list[str]:
    """One line per warning or damage on a run (evaluators that raised, malformed files)."""
    out = []
    for row in rows:
        v = row.view
        if v is None:
            continue
        out += [f"{v.ref}: warning: {w}" for w in v.warnings]
        out += [f"{v.ref}: damaged: {d}" for d in v.damaged]
    return out


def cmd_results(ctx: Any) -> int:
    """``workbench results``: the table, or JSON with ``--json``."""
    args = ctx.args
    if len(args.runs) == 1 and "#" not in args.runs[0]:
        study = _study(ctx.root, args.runs[0])
        if study is not None:
            return print_study(study, args.json)
    rows = collect(ctx.root, args.runs, default_models(ctx.registry))
    try:
        rows = sort_rows(rows, args.sort, args.reverse)
    except KeyError as exc:
        raise runs.RunError(f"--sort: {exc.args[0]}") from None
    if args.json:
        print(json.dumps([row.to_json() for row in rows], indent=1, default=str))
        return 0
    if not rows:
        print(f"no runs yet in {ctx.root}")
        return 0
    print(render(rows))
    for line in notes(rows):
        print(line)
    return 0


def _study(root: Path, experiment: str) -> Any:
    from workbench.studyview import study_view

    try:
        return study_view(root, experiment)
    except runs.RunError:
        return None


def print_study(study: Any, as_json: bool = False) -> int:
    """``workbench results SEARCH-EXPERIMENT``: one row per trial, the best marked."""
    from workbench.studyview import trials_table

    if as_json:
        print(json.dumps(study.to_json(), indent=1, default=str))
        return 0
    header, rows = trials_table(study, star=STAR)
    print(table(rows, header, right=[1, len(header) - 1]))
    counts = study.counts()
    best = study.best
    print(f"study {study.experiment}: {len(study.trials)} trial(s), "
          + ", ".join(f"{n} {state}" for state, n in counts.items())
          + (f"; best {study.metric.title} {study.metric.fmt(best.value)} ({best.ref})" if best else ""))
    return 0


def add_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    """Add ``results`` to the CLI's subcommands."""
    p = sub.add_parser("results", parents=[common],
                       help="one row per run: every metric, speed; best values marked")
    p.add_argument("runs", nargs="*", metavar="RUN", help="only these runs (default: every run)")
    p.add_argument("--sort", default="ppl", metavar="COL",
                   help=f"sort column (best first): {', '.join(BY_KEY)} or any metric's name; "
                   "default ppl")
    p.add_argument("--reverse", action="store_true", help="reverse the order")
    p.add_argument("--json", action="store_true", help="machine-readable rows, every metric, best marks")
    p.set_defaults(func=cmd_results)
