"""The run-folder contract, typed: what ``status.json`` and ``events.jsonl`` hold.

Every reader goes through :func:`parse_status` and :func:`parse_event`
instead of indexing raw dicts: a field of the wrong type is dropped and named
in ``damaged`` (``"started is 'x', not a number"``), so one malformed run
folder shows as damaged with the reason and a listing of the others goes on.
Writers (launcher, queue, trainer) still merge plain fields with
:func:`workbench.runs.write_status`; the names they write are the attributes
below. Standard library only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal, TypedDict

from workbench.metrics import Metric, declarations

State = Literal["queued", "running", "finished", "failed", "stopped", "pruned"]
STATES: tuple[str, ...] = ("queued", "running", "finished", "failed", "stopped", "pruned")
#: The state of a run whose ``status.json`` is missing, unreadable or holds no valid state.
DAMAGED = "damaged"


# --- events -------------------------------------------------------------------------------


class TrainEvent(TypedDict, total=False):
    """One logged training step: ``tokens`` trained since the previous one, at ``tokens_per_s``."""

    type: Literal["train"]
    time: float
    step: int
    loss: float | None
    lr: float | None
    grad_norm: float | None
    tokens: int
    tokens_per_s: float
    epoch: float | None
    peak_mem_gb: float


class EvalEvent(TypedDict, total=False):
    """One evaluation: the engine's ``eval_loss``/``tokens``/``bytes``, then each evaluator's metrics.

    ``errors`` maps an evaluator that raised to its one-line error.
    """

    type: Literal["eval"]
    time: float
    step: int
    eval_loss: float
    tokens: int
    bytes: int
    errors: dict[str, str]


class SampleEvent(TypedDict, total=False):
    type: Literal["sample"]
    time: float
    step: int
    checkpoint: str
    prompt: str
    text: str
    index: int
    seed: int


class CheckpointEvent(TypedDict, total=False):
    type: Literal["checkpoint"]
    time: float
    step: int
    path: str


class ResumeEvent(TypedDict, total=False):
    """A new process continued the run from ``checkpoint`` at ``from_step``: later work is redone."""

    type: Literal["resume"]
    time: float
    from_step: int
    checkpoint: str


class StatusEvent(TypedDict, total=False):
    type: Literal["status"]
    time: float
    state: str
    message: str
    step: int


Event = TrainEvent | EvalEvent | SampleEvent | CheckpointEvent | ResumeEvent | StatusEvent


def number(value: Any) -> float | None:
    """``value`` as a float when it is a real, non-NaN number (not a bool), else ``None``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return None if math.isnan(value) else float(value)


def _step(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return None


_NUMERIC = {
    "train": ("loss", "lr", "grad_norm", "tokens", "tokens_per_s", "epoch", "peak_mem_gb"),
    "eval": ("eval_loss", "tokens", "bytes"),
}


def parse_event(raw: Any) -> tuple[Event | None, str | None]:
    """``(event, None)`` for a well-formed event line, ``(None, reason)`` for a malformed one.

    Checked: ``type`` is a string; ``time`` a number; ``step`` (when present)
    and a resume's ``from_step`` whole numbers; a train/eval event's engine
    fields numbers or null. Unknown types and unknown fields pass through.
    """
    if not isinstance(raw, dict):
        return None, "not a JSON object"
    kind = raw.get("type")
    if not isinstance(kind, str):
        return None, "no event type"
    if "time" in raw and number(raw["time"]) is None:
        return None, f"{kind} event: time {raw['time']!r} is not a number"
    if "step" in raw and raw["step"] is not None and _step(raw["step"]) is None:
        return None, f"{kind} event: step {raw['step']!r} is not a whole number"
    if kind == "resume" and _step(raw.get("from_step")) is None:
        return None, f"resume event: from_step {raw.get('from_step')!r} is not a whole number"
    for key in _NUMERIC.get(kind, ()):
        value = raw.get(key)
        if value is not None and number(value) is None and not _nonfinite(value):
            return None, f"{kind} event: {key} {value!r} is not a number"
    if kind == "eval" and "errors" in raw and not isinstance(raw["errors"], dict):
        return None, "eval event: errors is not an object"
    return raw, None  # type: ignore[return-value]  # checked above, field by field


def _nonfinite(value: Any) -> bool:
    return isinstance(value, float) and math.isnan(value)


# --- status -------------------------------------------------------------------------------


@dataclass(frozen=True)
class EvaluatorError:
    """An evaluator that raised: which, at which step, and its one-line error."""

    evaluator: str
    error: str
    step: int | None = None

    def __str__(self) -> str:
        at = f" at step {self.step}" if self.step is not None else ""
        return f"evaluator {self.evaluator!r} failed{at}: {self.error}"


@dataclass(frozen=True)
class Status:
    """``status.json`` read strictly: each field has its type or is ``None``, and why is in ``damaged``.

    ``state`` is one of :data:`STATES`, or :data:`DAMAGED` when the file is
    missing, unreadable or names no valid state. ``best`` holds the
    trainer's ``best_<metric>`` values; ``metrics`` the evaluators'
    declarations; ``raw`` the dict as read (liveness applied).
    """

    state: str
    raw: dict[str, Any] = field(repr=False, default_factory=dict)
    step: int | None = None
    max_steps: int | None = None
    created: float | None = None
    started: float | None = None
    resumed: float | None = None
    launched: float | None = None
    ended: float | None = None
    updated: float | None = None
    stop_requested: float | None = None
    pid: int | None = None
    exit_code: int | None = None
    loss: float | None = None
    tokens_per_s: float | None = None
    train_seconds: float | None = None
    tokens: int | None = None
    queue_seq: int | None = None
    pruned_step: int | None = None
    cancelled: bool = False
    error: str | None = None
    error_kind: str | None = None
    hint: str | None = None
    message: str | None = None
    gpus: tuple[str, ...] = ()
    best: dict[str, float] = field(default_factory=dict)
    metrics: tuple[Metric, ...] = ()
    plugin_failures: tuple[str, ...] = ()
    evaluator_errors: tuple[EvaluatorError, ...] = ()
    damaged: tuple[str, ...] = ()

    @property
    def is_damaged(self) -> bool:
        return bool(self.damaged)


_TIMES = ("created", "started", "resumed", "launched", "ended", "updated", "stop_requested")
_INTS = ("step", "max_steps", "pid", "exit_code", "tokens", "queue_seq", "pruned_step")
_FLOATS = ("loss", "tokens_per_s", "train_seconds")
_TEXTS = ("error", "error_kind", "hint", "message")


def parse_status(raw: dict[str, Any], problem: str | None = None) -> Status:
    """A typed :class:`Status` from a raw ``status.json`` dict; ``problem`` says why it could not be read."""
    damaged: list[str] = [problem] if problem else []
    values: dict[str, Any] = {}

    def bad(key: str, what: str) -> None:
        damaged.append(f"{key} is {raw[key]!r}, not {what}")

    for key in _TIMES + _FLOATS:
        if raw.get(key) is not None:
            values[key] = number(raw[key])
            if values[key] is None and not _nonfinite(raw[key]):
                bad(key, "a number")
    for key in _INTS:
        if raw.get(key) is not None:
            values[key] = _step(raw[key])
            if values[key] is None:
                bad(key, "a whole number")
    for key in _TEXTS:
        if raw.get(key) is not None:
            values[key] = raw[key] if isinstance(raw[key], str) else str(raw[key])
    state = raw.get("state")
    if state not in STATES:
        if not problem:
            damaged.append("status.json has no state" if state is None
                           else f"state is {state!r}, not a run state")
        state = DAMAGED
    best: dict[str, float] = {}
    for key, value in raw.items():
        if key.startswith("best_") and value is not None:
            v = number(value)
            if v is None:
                if not _nonfinite(value):
                    bad(key, "a number")
            else:
                best[key[5:]] = v
    metrics, problems = declarations(raw.get("metrics"))
    damaged += problems
    failures = raw.get("plugin_failures") or []
    gpus = raw.get("gpus") or []
    return Status(
        state=state, raw=raw, best=best, metrics=tuple(metrics),
        cancelled=raw.get("cancelled") is True,
        gpus=tuple(str(g) for g in gpus) if isinstance(gpus, list) else (),
        plugin_failures=tuple(str(f) for f in failures) if isinstance(failures, list) else (str(failures),),
        evaluator_errors=_evaluator_errors(raw.get("evaluator_errors"), damaged),
        damaged=tuple(damaged), **values,
    )


def _evaluator_errors(raw: Any, damaged: list[str]) -> tuple[EvaluatorError, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, dict):
        damaged.append("evaluator_errors is not an object")
        return ()
    out = []
    for name, info in raw.items():
        if isinstance(info, dict):
            out.append(EvaluatorError(str(name), str(info.get("error", "")), _step(info.get("step"))))
        else:
            out.append(EvaluatorError(str(name), str(info)))
    return tuple(out)
