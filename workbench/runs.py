"""The run store: folder layout, the event log, atomic status and process liveness.

Layout: ``<runs>/<experiment>/<n>/`` holding ``config.json`` (the resolved
experiment), ``events.jsonl`` (append-only), ``status.json`` (replaced
atomically), ``train.log``, ``adapter/`` and ``checkpoints/``. A run is named
``experiment#n`` on the command line and in the TUI.

Readers never trust ``status.json`` alone: a run that says it is running but
whose process (pid *and* start time) is gone reads as failed, "process
vanished". :func:`checkpoints` is the one definition of a complete
checkpoint (resume, the trainer, generation and the UI use it).

The typed side of the contract is beside this module: :mod:`workbench.records`
(``Status``, the event types), :mod:`workbench.summary` (what readers need
from the events, kept incrementally), :mod:`workbench.runview` (the read
model every surface renders) and :mod:`workbench.present` (state words,
labels, formats). Standard library only: the TUI imports this module.
"""

from __future__ import annotations

import errno
import fcntl
import json
import math
import os
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from workbench.schema import NAME_MAX, NAME_RE

STATES = ("queued", "running", "finished", "failed", "stopped")
ACTIVE = ("queued", "running")
EVENTS = "events.jsonl"
STATUS = "status.json"
CONFIG = "config.json"
LOG = "train.log"
ADAPTER = "adapter"
CHECKPOINTS = "checkpoints"
VANISHED = "process vanished"
STATUS_PROBLEM = "status_problem"  # set by read_status only, never written


class RunError(Exception):
    """A run reference that does not name a run, or would escape the runs folder."""


# --- layout -----------------------------------------------------------------


def _check_name(kind: str, value: str) -> str:
    if not NAME_RE.match(value) or value in (".", ".."):
        raise RunError(f"invalid {kind} {value[:60]!r}: use letters, digits, '.', '_' and '-' only")
    if len(value) > NAME_MAX:
        raise RunError(f"invalid {kind} {value[:40]!r}…: at most {NAME_MAX} characters")
    return value


def _inside(root: Path, path: Path) -> Path:
    root_r, path_r = root.resolve(), path.resolve()
    if root_r != path_r and root_r not in path_r.parents:
        raise RunError(f"{path} is outside the runs folder {root}")
    return path


def experiment_dir(root: Path, experiment: str) -> Path:
    return _inside(root, root / _check_name("experiment name", experiment))


def new_run_dir(root: Path, experiment: str) -> Path:
    """Create and return a fresh, never-before-used run folder for ``experiment``.

    ``mkdir`` is atomic, so two launches racing for the same number can't share
    a folder: the loser takes the next number.
    """
    parent = experiment_dir(root, experiment)
    parent.mkdir(parents=True, exist_ok=True)
    archived = parent / ".archive"  # an archived run keeps its number (workbench.runmeta)
    taken = [*parent.iterdir(), *(archived.iterdir() if archived.is_dir() else ())]
    n = max((int(p.name) for p in taken if p.name.isdigit()), default=0) + 1
    while True:
        path = parent / str(n)
        try:
            path.mkdir()
            return path
        except FileExistsError:
            n += 1


@dataclass
class Run:
    """One run folder and what its status says (liveness already applied)."""

    experiment: str
    run_id: str
    path: Path
    status: dict[str, Any] = field(default_factory=dict)

    @property
    def ref(self) -> str:
        return f"{self.experiment}#{self.run_id}"

    @property
    def state(self) -> str:
        return self.status.get("state", "unknown")

    def refresh(self) -> Run:
        self.status = read_status(self.path)
        return self


def _run(path: Path) -> Run:
    return Run(path.parent.name, path.name, path, read_status(path))


def list_runs(root: Path, experiment: str | None = None) -> list[Run]:
    """Runs under ``root`` (of one experiment when given), oldest first."""
    if not root.is_dir():
        return []
    parents = [experiment_dir(root, experiment)] if experiment else sorted(root.iterdir())
    runs: list[Run] = []
    for parent in parents:
        if not parent.is_dir():
            continue
        ids = sorted((p for p in parent.iterdir() if p.name.isdigit()), key=lambda p: int(p.name))
        runs.extend(_run(p) for p in ids if p.is_dir())
    return runs


def latest_run(root: Path, experiment: str) -> Run | None:
    runs = list_runs(root, experiment)
    return runs[-1] if runs else None


_REF_RE = re.compile(r"^(?P<exp>[^#/]+)(?:#(?P<id>\d+))?$")


def resolve(root: Path, ref: str) -> Run:
    """``exp#3`` -> that run; ``exp`` -> its latest run; a run folder path -> that run."""
    m = _REF_RE.match(ref)
    if m:
        exp, run_id = m.group("exp"), m.group("id")
        try:
            folder = experiment_dir(root, exp)
        except RunError:
            folder = None
        if folder is not None and (run_id or folder.is_dir()):
            if run_id is None:
                run = latest_run(root, exp)
                if run is None:
                    raise RunError(f"experiment {exp!r} has no runs in {root}")
                return run
            path = folder / run_id
            if not (path / STATUS).exists() and not path.is_dir():
                raise RunError(f"no run {ref!r} in {root}")
            return _run(path)
    path = Path(ref)
    if _is_run_folder(path):
        return _run(_inside(root, path) if root.exists() and _is_under(root, path) else path)
    shown = repr(ref) if len(ref) <= 80 else repr(ref[:80]) + "…"
    raise RunError(f"no run {shown} in {root} (use EXPERIMENT#N, EXPERIMENT, or a run folder)")


def _is_run_folder(path: Path) -> bool:
    try:
        return path.is_dir() and (path / STATUS).exists()
    except OSError:  # a name too long for the file system, a folder we may not read
        return False


def _is_under(root: Path, path: Path) -> bool:
    return root.resolve() in path.resolve().parents


# --- events -----------------------------------------------------------------


def append_event(run_dir: Path, type: str, **fields: Any) -> dict[str, Any]:  # noqa: A002
    """Append one event line; a single ``write`` on an ``O_APPEND`` file, never a rewrite."""
    event = strict_json({"type": type, "time": time.time(), **fields})
    line = (dumps(event) + "\n").encode()
    fd = os.open(run_dir / EVENTS, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        try:
            os.write(fd, line)
        except OSError as exc:  # a full disk: spend the reserve on the run's last words
            if exc.errno != errno.ENOSPC or not release_space(run_dir):
                raise
            os.write(fd, line)
    finally:
        os.close(fd)
    return event


def _json_default(value: Any) -> Any:
    if hasattr(value, "item"):  # numpy / torch scalars
        return strict_json(value.item())
    return str(value)


def strict_json(value: Any) -> Any:
    """``value`` with every NaN or infinity (at any depth) replaced by ``None``.

    ``json.dumps`` would write bare ``NaN``/``Infinity`` tokens, which strict JSON
    readers (``jq``, JavaScript, Go) reject; a diverged loss must not poison the files.
    """
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: strict_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [strict_json(v) for v in value]
    if not isinstance(value, (str, bytes, int)) and hasattr(value, "item"):
        try:
            return strict_json(value.item())
        except (TypeError, ValueError):  # not a scalar
            return value
    return value


def dumps(value: Any, indent: int | None = None) -> str:
    """Strict JSON text for a status or an event (non-finite numbers written as ``null``)."""
    return json.dumps(strict_json(value), indent=indent, default=_json_default, allow_nan=False)


class EventTail:
    """Incremental reader of ``events.jsonl``: each :meth:`read` returns only new events.

    Keeps a byte offset; a torn last line (a writer mid-append) is left for
    the next read. When the file has not grown, a read costs one ``stat``.
    """

    def __init__(self, run_dir: Path) -> None:
        self.path = Path(run_dir) / EVENTS
        self.offset = 0

    def read(self) -> list[dict[str, Any]]:
        try:
            size = self.path.stat().st_size
        except FileNotFoundError:
            return []
        if size < self.offset:  # replaced from scratch: start over
            self.offset = 0
        if size == self.offset:
            return []
        with open(self.path, "rb") as fh:
            fh.seek(self.offset)
            chunk = fh.read(size - self.offset)
        end = chunk.rfind(b"\n")
        if end < 0:
            return []
        self.offset += end + 1
        return list(_parse_lines(chunk[: end + 1].splitlines()))


def _parse_lines(lines: Iterable[bytes]) -> Iterable[dict[str, Any]]:
    for line in lines:
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if isinstance(event, dict) and "type" in event:
            yield event


def read_events(run_dir: Path) -> list[dict[str, Any]]:
    return EventTail(run_dir).read()


def effective(events: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """The run's history as a reader should show it.

    A resumed run restarts from its last checkpoint; a ``resume`` event carries
    ``from_step``, and any train/eval event from before it with a later step
    (work lost with the process) is dropped, so no step shows twice.
    """
    out: list[dict[str, Any]] = []
    for event in events:
        if event.get("type") == "resume":
            cut = event.get("from_step", 0)
            out = [e for e in out if e.get("step") is None or e["step"] <= cut or
                   e.get("type") not in ("train", "eval", "sample")]
        out.append(event)
    return out


# --- status -----------------------------------------------------------------


def write_status(run_dir: Path, only_if: tuple[str, ...] | None = None, **fields: Any) -> dict[str, Any]:
    """Merge ``fields`` into ``status.json`` atomically (temp file, then rename).

    Writers (launcher, trainer, a stop request) take a lock around the
    read-merge-write so none loses another's fields. With ``only_if``, nothing
    is written unless the current state is one of those.
    """
    run_dir = Path(run_dir)
    with open(run_dir / ".status.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        status = _read_raw_status(run_dir)
        if only_if is not None and status.get("state") not in only_if:
            return status
        status.update(fields)
        status["updated"] = time.time()
        _replace_status(run_dir, dumps(status, indent=1).encode())
        return status


# --- a full disk ------------------------------------------------------------
#
# A run that fills its disk must still be able to say so. The trainer keeps a
# small reserve file in the run folder; a status or event write that meets
# ENOSPC deletes it and tries again, and a status write that still can't make
# a temp file overwrites status.json in place (not atomic, but the only way to
# record the failure: it only reuses the file's own bytes, so it can't be cut
# short). No empty temp file is ever left behind.

RESERVE = ".reserve"
RESERVE_BYTES = 256 * 1024
DISK_FULL = "disk_full"
DISK_FULL_HINT = "free space on the disk holding the runs folder, then `workbench resume` the run"


def reserve_space(run_dir: Path, size: int = RESERVE_BYTES) -> bool:
    """Set aside ``size`` bytes for the run's last words; False when the disk is already full."""
    path = Path(run_dir) / RESERVE
    try:
        with open(path, "wb") as fh:
            fh.write(b"\0" * size)
            fh.flush()
            os.fsync(fh.fileno())
    except OSError:
        path.unlink(missing_ok=True)
        return False
    return True


def release_space(run_dir: Path) -> bool:
    """Delete the reserve file; True when there was one to free."""
    try:
        (Path(run_dir) / RESERVE).unlink()
    except FileNotFoundError:
        return False
    return True


def _replace_status(run_dir: Path, data: bytes) -> None:
    tmp = run_dir / f".{STATUS}.{os.getpid()}.tmp"
    for last_try in (False, True):
        try:
            tmp.write_bytes(data)
            os.replace(tmp, run_dir / STATUS)
            return
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            if exc.errno != errno.ENOSPC:
                raise
            if last_try or not release_space(run_dir):
                if not _overwrite_in_place(run_dir / STATUS, data):
                    raise OSError(exc.errno, exc.strerror, str(run_dir / STATUS)) from None
                return


def write_text(path: Path, text: str) -> None:
    """``path.write_text(text)``, its OSError naming the file even when the final flush failed."""
    try:
        path.write_text(text, encoding="utf-8")
    except OSError as exc:
        if exc.filename:
            raise
        raise OSError(exc.errno, exc.strerror, str(path)) from None


def _overwrite_in_place(path: Path, data: bytes) -> bool:
    """Write ``data`` over ``path``'s existing bytes, padded with spaces (valid JSON
    whitespace): no new disk block is needed. False when ``data`` is longer."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return False
    if len(data) > size:
        return False
    with open(path, "r+b") as fh:
        fh.write(data + b" " * (size - len(data)))
    return True


def _read_raw_status(run_dir: Path) -> dict[str, Any]:
    return load_status(run_dir)[0]


def load_status(run_dir: Path) -> tuple[dict[str, Any], str | None]:
    """``status.json`` as a dict, and why it could not be read (``None`` when it could)."""
    path = Path(run_dir) / STATUS
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {}, "no status.json"
    except (ValueError, UnicodeDecodeError) as exc:
        return {}, f"status.json is not valid JSON ({str(exc).splitlines()[0] if str(exc) else exc})"
    except OSError as exc:
        return {}, f"status.json can't be read ({exc.strerror or exc})"
    if not isinstance(data, dict):
        return {}, f"status.json holds a {type(data).__name__}, not an object"
    return data, None


def read_status(run_dir: Path) -> dict[str, Any]:
    """``status.json`` with liveness applied: a dead "running" process reads as failed.

    When the file is missing or unreadable the dict is empty but for
    ``STATUS_PROBLEM``, saying why (see :func:`workbench.records.parse_status`).
    """
    status, problem = load_status(run_dir)
    if problem:
        return {STATUS_PROBLEM: problem}
    if status.get("job_id") is not None:  # handed to a scheduler (Slurm): its launcher answers, not a pid
        from workbench import jobs

        return jobs.checked(Path(run_dir), status)
    if status.get("state") == "running" and not is_alive(status.get("pid"), status.get("pid_start")):
        if disk_full_in_log(run_dir):
            return dict(status, state="failed", error=f"{VANISHED}: the disk is full (see train.log)",
                        error_kind=DISK_FULL, hint=DISK_FULL_HINT)
        status = dict(status, state="failed", error=VANISHED, error_kind="vanished",
                      hint="the training process died without a word (killed, or the machine "
                      "rebooted); `workbench resume` continues from the last checkpoint")
    return status


def disk_full_in_log(run_dir: Path) -> bool:
    """Whether the end of ``train.log`` says the disk was full (the process could write no status)."""
    return any("No space left on device" in line for line in tail_log(run_dir, 40))


def process_start_time(pid: int) -> str | None:
    """The kernel's start time of ``pid`` (clock ticks since boot), or None if it is gone.

    A pid alone can be reused by an unrelated process; pid plus start time can't.
    Zombies count as gone.
    """
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    except OSError:
        return None
    fields = stat[stat.rfind(")") + 2:].split()
    if fields[0] in ("Z", "X"):
        return None
    return fields[19]


def is_alive(pid: Any, start: Any = None) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    if Path("/proc/self/stat").exists():
        now = process_start_time(pid)
        return now is not None and (start is None or str(start) == now)
    try:  # no /proc (macOS): the pid alone
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# --- checkpoints ---------------------------------------------------------------


@dataclass(frozen=True)
class Checkpoint:
    """A complete ``checkpoints/checkpoint-N`` folder: the trainer can resume from it."""

    step: int
    path: Path

    @property
    def name(self) -> str:
        return self.path.name


#: What a checkpoint holds once the trainer has finished writing it: the adapter, then the
#: trainer state (written last). A folder missing any of these is a save cut short.
CHECKPOINT_FILES = ("trainer_state.json", "adapter_config.json")
ADAPTER_WEIGHTS = ("adapter_model.safetensors", "adapter_model.bin")


def is_complete_checkpoint(path: Path) -> bool:
    """True when ``path`` holds the trainer state and the adapter (config and weights)."""
    return (all((path / f).is_file() for f in CHECKPOINT_FILES)
            and any((path / f).is_file() for f in ADAPTER_WEIGHTS))


def checkpoints(run_dir: Path) -> list[Checkpoint]:
    """The run's complete checkpoints, by step: the one definition resume, trainer and UI use."""
    found = []
    for path in (Path(run_dir) / CHECKPOINTS).glob("checkpoint-*"):
        suffix = path.name[len("checkpoint-"):]
        if suffix.isdigit() and is_complete_checkpoint(path):
            found.append(Checkpoint(int(suffix), path))
    return sorted(found, key=lambda c: c.step)


def latest_checkpoint(run_dir: Path) -> Checkpoint | None:
    """The complete checkpoint a resume continues from (the highest step), or ``None``."""
    found = checkpoints(run_dir)
    return found[-1] if found else None


def read_config(run_dir: Path) -> dict[str, Any]:
    try:
        return json.loads((Path(run_dir) / CONFIG).read_text())
    except (FileNotFoundError, ValueError):
        return {}


def tail_log(run_dir: Path, lines: int = 20) -> list[str]:
    """The last ``lines`` lines of ``train.log`` (reads at most the last 64 KiB)."""
    path = Path(run_dir) / LOG
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - 65536))
            data = fh.read().decode("utf-8", "replace")
    except FileNotFoundError:
        return []
    # progress bars rewrite their line with \r: keep only the last state of each
    kept = [ln.rstrip("\r").rsplit("\r", 1)[-1] for ln in data.rstrip("\n").split("\n")]
    return kept[-lines:] if data else []
