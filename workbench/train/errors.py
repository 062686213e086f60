"""Errors a user can cause, and the one-line summary every failure ends in.

Standard library only: plugins raise :class:`UserError` from their light
descriptor functions too.
"""

from __future__ import annotations

from dataclasses import dataclass

OOM_HINT = (
    "lower train.batch_size or train.max_length, or set train.gradient_checkpointing = true"
)


class UserError(Exception):
    """A problem the user can fix (a missing column, a model not available offline, ...).

    ``str()`` is the one-line message naming what to fix; ``kind`` lands in
    ``status.json`` as ``error_kind`` and ``hint`` as ``hint``.
    """

    def __init__(self, message: str, kind: str = "error", hint: str | None = None) -> None:
        super().__init__(message)
        self.kind = kind
        self.hint = hint


@dataclass(frozen=True)
class Failure:
    """What ``status.json`` says about a failed run."""

    error: str
    kind: str
    hint: str | None = None


def first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0].strip() if lines else ""


def is_oom(exc: BaseException) -> bool:
    """True for torch's OutOfMemoryError (any device) or an allocator's "out of memory"."""
    names = {cls.__name__ for cls in type(exc).__mro__}
    if "OutOfMemoryError" in names or isinstance(exc, MemoryError):
        return True
    return "out of memory" in str(exc).lower()


def describe(exc: BaseException) -> Failure:
    """Turn any exception into the status fields ``error``, ``error_kind`` and ``hint``."""
    if isinstance(exc, UserError):
        return Failure(str(exc), exc.kind, exc.hint)
    summary = f"{type(exc).__name__}: {first_line(exc)}".rstrip(": ")
    if is_oom(exc):
        return Failure(summary, "oom", OOM_HINT)
    return Failure(summary, "error", "the full traceback is in train.log")
