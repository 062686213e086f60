"""Errors a user can cause, and the one-line summary every failure ends in.

Standard library (and the run store) only: plugins raise :class:`UserError` from their light
descriptor functions too.
"""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass
from pathlib import Path

from workbench.runs import DISK_FULL, DISK_FULL_HINT

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


# Less free than this on the run's disk after a failed write means the disk filled up.
NEARLY_FULL_BYTES = 1024 * 1024


def is_disk_full(exc: BaseException, run_dir: Path | None = None) -> bool:
    """True for ENOSPC anywhere in the exception's chain (safetensors and torch say it in words).

    torch's checkpoint writer reports only "file write failed": then a disk with
    (almost) nothing left decides.
    """
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno == errno.ENOSPC:
            return True
        text = str(current)
        if "No space left on device" in text or "os error 28" in text:
            return True
        if "file write failed" in text and run_dir is not None and free_bytes(run_dir) < NEARLY_FULL_BYTES:
            return True
        current = current.__cause__ or current.__context__
    return False


def free_bytes(path: Path) -> int:
    try:
        st = os.statvfs(path)
    except OSError:
        return 1 << 62
    return st.f_bavail * st.f_frsize


def describe(exc: BaseException, run_dir: Path | None = None) -> Failure:
    """Turn any exception into the status fields ``error``, ``error_kind`` and ``hint``."""
    if isinstance(exc, UserError):
        return Failure(str(exc), exc.kind, exc.hint)
    summary = f"{type(exc).__name__}: {first_line(exc)}".rstrip(": ")
    if is_oom(exc):
        return Failure(summary, "oom", OOM_HINT)
    if is_disk_full(exc, run_dir):
        where = f" ({free_bytes(run_dir) // 1024} KiB free in {run_dir})" if run_dir else ""
        return Failure(f"the disk is full{where}: {summary}", DISK_FULL, DISK_FULL_HINT)
    return Failure(summary, "error", "the full traceback is in train.log")
