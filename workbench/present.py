"""Presentation: state words, labels and number formats, one vocabulary for CLI, TUI and report.

Decisions made once here:

- **State words**: ``queued``, ``running``, ``finished``, ``failed``,
  ``stopped`` (stopped while running, with a checkpoint), ``cancelled``
  (taken out of the queue before it started), ``pruned`` (a search trial cut
  short) and ``damaged`` (its ``status.json`` is missing or malformed: the
  reason follows).
- **Model label**: the last part of the model's source: ``SmolLM-135M`` for
  the hub id ``HuggingFaceTB/SmolLM-135M``, the folder name for a local
  folder, the file name *with* ``.gguf`` for a GGUF file (it says what was
  loaded); a backend's default found at run time is resolved the same way
  (``<backend> (default)`` only when that fails).
- **Numbers**: durations ``42s`` / ``3m07s`` / ``2h05m``; rates ``850`` /
  ``12.3k``; a metric in its declared format; ``-`` for unknown.

Standard library only: the TUI's widgets import it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from workbench.metrics import ENGINE_EVAL_FIELDS, Metric, undeclared
from workbench.records import DAMAGED, Status, number, parse_status
from workbench.terminal import one_line

STATE_WORDS = {
    "queued": "queued", "running": "running", "finished": "finished", "failed": "failed",
    "stopped": "stopped", "cancelled": "cancelled", "pruned": "pruned", DAMAGED: DAMAGED,
}


# --- numbers ----------------------------------------------------------------------------------


def fmt_duration(seconds: float | None) -> str:
    """``42s``, ``3m07s``, ``2h05m``; ``-`` when unknown."""
    if seconds is None or not isinstance(seconds, (int, float)) or not math.isfinite(seconds) or seconds < 0:
        return "-"
    seconds = int(seconds)
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m" if h else (f"{m}m{s:02d}s" if m else f"{s}s")


def fmt_num(value: Any, spec: str = ".3f") -> str:
    """A number in ``spec``; ``-`` when missing or not a number."""
    v = number(value)
    if v is None:
        return "-"
    return format(v, spec) if math.isfinite(v) else str(v)


def fmt_rate(value: Any) -> str:
    """``850``, ``12.3k``; ``-`` when unknown."""
    v = number(value)
    if v is None:
        return "-"
    return f"{v / 1000:.1f}k" if v >= 1000 else f"{v:.0f}"


def fmt_metric(metric: Metric, value: Any) -> str:
    """A metric's value in its declared format."""
    v = number(value)
    return metric.fmt(v) if v is not None else "-"


def table(rows: list[list[str]], header: list[str], right: Iterable[int] = ()) -> str:
    """An aligned plain-text table; columns whose index is in ``right`` are right-aligned."""
    right = set(right)
    rows = [[one_line(str(c)) for c in row] for row in rows]  # names, models, errors come from files
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        return "  ".join(str(c).rjust(w) if i in right else str(c).ljust(w)
                         for i, (c, w) in enumerate(zip(cells, widths, strict=True))).rstrip()

    return "\n".join([line(header), *(line(r) for r in rows)])


# --- states -----------------------------------------------------------------------------------


def _status(status: Status | Mapping[str, Any]) -> Status:
    return status if isinstance(status, Status) else parse_status(dict(status))


def state_word(status: Status | Mapping[str, Any]) -> str:
    """The one word for a run's state (see the module docstring)."""
    st = _status(status)
    if st.state == "stopped" and st.cancelled:
        return "cancelled"
    return STATE_WORDS.get(st.state, st.state)


def state_text(status: Status | Mapping[str, Any], damage: Iterable[str] = ()) -> str:
    """The state with its detail: ``running 3/10``, ``failed (oom)``, ``damaged: <reason>``."""
    st = _status(status)
    reasons = [*st.damaged, *damage]
    if st.state == DAMAGED or reasons:
        return f"{DAMAGED}: {reasons[0]}" if reasons else DAMAGED
    text = state_word(st)
    if st.state == "running":
        text = f"running {st.step or 0}/{st.max_steps if st.max_steps is not None else '?'}"
    elif st.state == "failed":
        text = f"failed ({st.error_kind or 'error'})"
    elif st.state == "pruned" and st.pruned_step is not None:
        text = f"pruned at step {st.pruned_step}"
    job = st.raw.get("job_detail")  # a run handed to an outside scheduler (Slurm): where its job is
    return f"{text} · {job}" if isinstance(job, str) and job else text


# --- labels ------------------------------------------------------------------------------------


def model_label(source: str | None, backend: str | None = None) -> str:
    """The model's label (see the module docstring); the backend's default when no source."""
    if not source:
        return f"{backend} (default)" if backend else "-"
    name = Path(str(source).rstrip("/")).name
    return name or str(source)


def default_models(registry: Any) -> dict[str, str]:
    """``{backend: default model}`` for a registry's backends, a default found at run time resolved.

    Resolving is the backend's own cheap look-up (a path in a cache or in an
    installed package); a backend whose look-up fails (the package that ships
    the model is missing) is left out, and its runs say ``<backend> (default)``.
    """
    found: dict[str, str] = {}
    for name, b in getattr(registry, "backends", {}).items():
        model = b.default_model
        if callable(model):
            try:
                model = model()
            except Exception:  # noqa: BLE001 - the run itself reports why; a label falls back
                continue
        if isinstance(model, str) and model:
            found[name] = model
    return found


def metric_label(name: str, metrics: Mapping[str, Metric] | None = None) -> str:
    return (metrics or {}).get(name, undeclared(name)).title


# --- event lines (run --follow, train.log) -------------------------------------------------------


def eval_metrics(event: Mapping[str, Any], declared: Iterable[Metric] = ()) -> list[tuple[Metric, Any]]:
    """The metrics of an ``eval`` event: declared ones first (in order), then any others."""
    out: list[tuple[Metric, Any]] = []
    seen = set()
    for m in declared:
        if m.name in event:
            out.append((m, event[m.name]))
            seen.add(m.name)
    for key, value in event.items():
        if key in seen or key in ENGINE_EVAL_FIELDS:
            continue
        if number(value) is not None or value is None or (isinstance(value, float)):
            out.append((undeclared(key), value))
    return out


def eval_line(event: Mapping[str, Any], declared: Iterable[Metric] = (), prefix: str = "eval ") -> str:
    """``eval step 4  eval_loss 3.2101  held-out ppl 24.781  greentext-format 0.9300``."""
    parts = [f"{prefix}step {event.get('step')}"]
    if number(event.get("eval_loss")) is not None:
        parts.append(f"eval_loss {event['eval_loss']:.4f}")
    for metric, value in eval_metrics(event, declared):
        parts.append(f"{metric.title} {fmt_metric(metric, value)}")
    for name, error in (event.get("errors") or {}).items():
        parts.append(f"[evaluator {name!r} failed: {error}]")
    return one_line("  ".join(parts))


def event_line(event: Mapping[str, Any], max_steps: Any = None,
               declared: Iterable[Metric] = ()) -> str | None:
    """One line for ``run --follow`` per event (``None`` for events it does not show)."""
    kind, step = event.get("type"), event.get("step")
    where = f"step {step}/{max_steps}" if max_steps else f"step {step}"
    if kind == "train":
        return (f"{where}  loss {fmt_num(event.get('loss'), '.4f')}  lr {fmt_num(event.get('lr'), '.2e')}"
                f"  {fmt_rate(event.get('tokens_per_s'))} tok/s")
    if kind == "eval":
        return eval_line(event, declared, prefix="").replace(f"step {step}", where, 1)
    if kind == "sample":
        text = one_line(str(event.get("text", "")), limit=200)
        return f"{where}  sample [{one_line(str(event.get('checkpoint')))}] {text}"
    if kind == "status":
        return one_line(f"-- {event.get('state', '')}: {event.get('message', '')}".rstrip(": "))
    if kind == "resume":
        return f"-- resumed from step {event.get('from_step')}"
    if kind == "checkpoint":
        return f"{where}  checkpoint saved"
    return None
