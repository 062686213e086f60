"""The results table: one row per run, sortable by any column, best values marked.

Each row comes from the run folder alone (``config.json``, ``status.json``
and the effective ``events.jsonl``, resumes applied), so the table, the
``results`` command, the report and the TUI's results screen agree.
Standard library only: the TUI imports this module.
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from workbench import runs
from workbench.terminal import one_line


@dataclass(frozen=True)
class Column:
    """A results column: its key (for ``--sort``), header, and which way is better."""

    key: str
    label: str
    better: str | None = None  # "low", "high", or None: no best mark
    numeric: bool = True


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
)
BY_KEY = {c.key: c for c in COLUMNS}
DEFAULT_COLUMNS = ("run", "model", "r", "steps", "ppl", "final_ppl", "bpb", "time", "tok_s", "state")
STAR = "★"


@dataclass
class Row:
    """One run's results; ``values`` holds the raw value of every column (None when unknown)."""

    run: runs.Run
    values: dict[str, Any]
    experiment: dict[str, Any] = field(default_factory=dict)
    best: set[str] = field(default_factory=set)

    def __getitem__(self, key: str) -> Any:
        return self.values.get(key)

    def to_json(self) -> dict[str, Any]:
        return {**self.values, "experiment": self.run.experiment, "run_id": self.run.run_id,
                "path": str(self.run.path), "best": sorted(self.best)}


# --- building rows ------------------------------------------------------------------


def short_model(model: str | None) -> str:
    """``HuggingFaceTB/SmolLM-135M`` -> ``SmolLM-135M``; a path -> its last part."""
    if not model:
        return "-"
    return Path(model.rstrip("/")).name or model


def model_name(experiment: dict[str, Any], default_models: dict[str, str] | None = None) -> str:
    """The model a run trained: its ``model``, else the backend's default (when known)."""
    if experiment.get("model"):
        return short_model(experiment["model"])
    backend = experiment.get("backend", "?")
    default = (default_models or {}).get(backend)
    return short_model(default) if default else f"{backend} (default)"


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return None if math.isnan(value) else float(value)


def train_seconds(events: list[dict[str, Any]], status: dict[str, Any]) -> float | None:
    """Wall time spent training, summed over the run's processes (the gaps between them excluded).

    A finished run that never resumed reports ``train_seconds`` itself;
    otherwise each process session (split at ``resume`` events) counts from
    its first to its last event, the first session from the status's ``started``.
    """
    resumed = any(e.get("type") == "resume" for e in events)
    if not resumed and _number(status.get("train_seconds")) is not None:
        return float(status["train_seconds"])
    sessions: list[list[float]] = [[]]
    if _number(status.get("started")) is not None:
        sessions[0].append(float(status["started"]))
    for event in events:
        if event.get("type") == "resume":
            sessions.append([])
        t = _number(event.get("time"))
        if t is not None:
            sessions[-1].append(t)
    total = sum(max(s) - min(s) for s in sessions if len(s) > 1)
    return total if total > 0 else None


def tokens_per_second(events: list[dict[str, Any]], status: dict[str, Any]) -> float | None:
    """Trained tokens over step time: each ``train`` event's tokens and rate give its seconds."""
    tokens = seconds = 0.0
    for event in events:
        if event.get("type") != "train":
            continue
        n, rate = _number(event.get("tokens")), _number(event.get("tokens_per_s"))
        if n and rate:
            tokens += n
            seconds += n / rate
    if seconds > 0:
        return tokens / seconds
    return _number(status.get("tokens_per_s"))


def build_row(run: runs.Run, default_models: dict[str, str] | None = None) -> Row:
    """The results row of one run, from its folder."""
    status = run.status
    experiment = runs.read_config(run.path).get("experiment") or {}
    raw = runs.read_events(run.path)
    events = runs.effective(raw)
    evals = [e for e in events if e.get("type") == "eval"]
    train_steps = [e["step"] for e in events if e.get("type") == "train" and isinstance(e.get("step"), int)]

    def series(key: str) -> list[float]:
        return [v for v in (_number(e.get(key)) for e in evals) if v is not None]

    ppl, bpb = series("perplexity"), series("bits_per_byte")
    step = status.get("step") if isinstance(status.get("step"), int) else None
    steps_done = max([*train_steps, step or 0]) if (train_steps or step) else None
    values = {
        "run": run.ref,
        "model": model_name(experiment, default_models),
        "backend": experiment.get("backend"),
        "r": (experiment.get("lora") or {}).get("r"),
        "steps": steps_done,
        "max_steps": status.get("max_steps") or (experiment.get("train") or {}).get("steps"),
        "ppl": min(ppl) if ppl else _number(status.get("best_perplexity")),
        "final_ppl": ppl[-1] if ppl else None,
        "bpb": min(bpb) if bpb else _number(status.get("best_bits_per_byte")),
        "final_bpb": bpb[-1] if bpb else None,
        "time": train_seconds(raw, status),  # work lost to a crash took time too
        "tok_s": tokens_per_second(events, status),
        "state": status.get("state", "unknown"),
    }
    return Row(run, values, experiment)


def collect(root: Path, refs: Iterable[str] | None = None,
            default_models: dict[str, str] | None = None) -> list[Row]:
    """Rows for ``refs`` (run references, see :func:`runs.resolve`), or for every run under ``root``."""
    refs = list(refs or [])
    selected = [runs.resolve(root, ref) for ref in refs] if refs else runs.list_runs(root)
    return rows_for(selected, default_models)


def rows_for(selected: Iterable[runs.Run], default_models: dict[str, str] | None = None) -> list[Row]:
    """Rows for these runs (each once), best values marked."""
    unique = list({run.path.resolve(): run for run in selected}.values())
    return mark_best([build_row(run, default_models) for run in unique])


# --- best marks and sorting -----------------------------------------------------------


def mark_best(rows: list[Row]) -> list[Row]:
    """Mark, in each scored column, the rows holding the best value (when two or more rows have one)."""
    for column in COLUMNS:
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
    column = BY_KEY.get(key)
    if column is None:
        raise KeyError(f"unknown column {key!r} (columns: {', '.join(BY_KEY)})")
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
    from workbench.cli import fmt_duration, fmt_rate

    value = row[key]
    if value is None:
        text = "-"
    elif key in ("ppl", "final_ppl"):
        text = f"{value:.3f}" if value < 1000 else f"{value:.0f}"
    elif key in ("bpb", "final_bpb"):
        text = f"{value:.4f}"
    elif key == "time":
        text = fmt_duration(value)
    elif key == "tok_s":
        text = fmt_rate(value)
    elif key == "steps":
        total = row["max_steps"]
        text = f"{value}/{total}" if total and value != total else str(value)
    else:
        text = str(value)
    return f"{star} {text}" if key in row.best and star else text


def render(rows: list[Row], columns: Iterable[str] | None = None) -> str:
    """The rows as an aligned plain-text table (numbers right-aligned)."""
    keys = list(columns or DEFAULT_COLUMNS)
    header = [BY_KEY[k].label for k in keys]
    body = [[one_line(cell(row, k)) for k in keys] for row in rows]  # names come from files
    widths = [max(len(x) for x in [h, *(b[i] for b in body)]) for i, h in enumerate(header)]

    def line(cells: list[str]) -> str:
        parts = [c.rjust(w) if BY_KEY[k].numeric else c.ljust(w)
                 for c, w, k in zip(cells, widths, keys, strict=True)]
        return "  ".join(parts).rstrip()

    return "\n".join([line(header), *(line(b) for b in body)])


# --- the command ---------------------------------------------------------------------------


def default_models(registry: Any) -> dict[str, str]:
    """``{backend: default model}`` for backends whose default is a plain string."""
    out = {}
    for name, backend in getattr(registry, "backends", {}).items():
        if isinstance(backend.default_model, str):
            out[name] = backend.default_model
    return out


def cmd_results(ctx: Any) -> int:
    """``workbench results``: the table, or JSON with ``--json``."""
    args = ctx.args
    rows = collect(ctx.root, args.runs, default_models(ctx.registry))
    rows = sort_rows(rows, args.sort, args.reverse)
    if args.json:
        print(json.dumps([row.to_json() for row in rows], indent=1))
        return 0
    if not rows:
        print(f"no runs yet in {ctx.root}")
        return 0
    print(render(rows))
    return 0


def add_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    """Add ``results`` to the CLI's subcommands."""
    p = sub.add_parser("results", parents=[common], help="one row per run: perplexity, bits/byte, speed")
    p.add_argument("runs", nargs="*", metavar="RUN", help="only these runs (default: every run)")
    p.add_argument("--sort", default="ppl", choices=list(BY_KEY), metavar="COL",
                   help=f"sort column (best first): {', '.join(BY_KEY)}; default ppl")
    p.add_argument("--reverse", action="store_true", help="reverse the order")
    p.add_argument("--json", action="store_true", help="machine-readable rows, with best marks")
    p.set_defaults(func=cmd_results)
