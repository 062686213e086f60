"""The processes of a run: its verified launcher, its registered ranks, and everything below them.

A run starts as one launcher process (``launch.spawn``: the trainer itself for
``python``, the agent for ``torchrun`` / ``accelerate``) in a session and
process group of its own; ``status.json`` records its pid as ``pgid`` and its
kernel start time as ``pgid_start``. The launcher's children are not always in
its group: torch's elastic agent (behind both torchrun and multi-process
accelerate) starts every rank in a session of its own. So a run's processes
are the launcher's *descendants*, and a stop goes to the *ranks*, never to the
launcher: a launcher may not forward it (single-process ``accelerate launch``
just dies and leaves its child training) or may forward it with a deadline
(torchrun's SIGKILL after its shutdown timeout).

Each trainer process registers itself (``<run>/.ranks/<host>.<rank>``: pid,
start time) as soon as its stop handler is installed, so a rank listed there
takes SIGTERM as "checkpoint, then stop". Nothing here signals a pid that is
not verified by its start time: a recycled pid, or a ``pgid`` in
``status.json`` that names another process group, is never signalled. Standard library only.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from workbench import runs

RANKS = ".ranks"


@dataclass(frozen=True)
class Proc:
    """A process identified beyond pid reuse: pid plus kernel start time."""

    pid: int
    start: str

    def alive(self) -> bool:
        return runs.process_start_time(self.pid) == self.start


# --- /proc ------------------------------------------------------------------


def _stat_fields(pid: int) -> list[str] | None:
    """``/proc/PID/stat`` after the command name: state, ppid, pgrp, session, ..."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat[stat.rfind(")") + 2:].split()


def session_id(pid: int) -> int | None:
    """The session id of ``pid`` (``None`` when it can't be read)."""
    fields = _stat_fields(pid)
    try:
        return int(fields[3]) if fields else None
    except (IndexError, ValueError):
        return None


def parent_id(pid: int) -> int | None:
    fields = _stat_fields(pid)
    try:
        return int(fields[1]) if fields else None
    except (IndexError, ValueError):
        return None


def ancestors(pid: int, limit: int = 16) -> list[int]:
    """``pid``, its parent, its parent's parent... up to (not including) init."""
    chain: list[int] = []
    current: int | None = pid
    while current is not None and current > 1 and len(chain) < limit:
        chain.append(current)
        current = parent_id(current)
    return chain


def _living() -> dict[int, int]:
    """Every live (not zombie) process's parent: ``{pid: ppid}``."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        fields = _stat_fields(int(entry.name))
        if fields and fields[0] not in ("Z", "X"):
            parents[int(entry.name)] = int(fields[1])
    return parents


def descendants(roots: Iterable[int]) -> list[Proc]:
    """Every live process at or below ``roots`` in the process tree (roots included)."""
    parents = _living()
    children: dict[int, list[int]] = {}
    for pid, ppid in parents.items():
        children.setdefault(ppid, []).append(pid)
    found: list[int] = []
    todo = [r for r in roots if r in parents]
    while todo:
        pid = todo.pop()
        if pid in found:
            continue
        found.append(pid)
        todo.extend(children.get(pid, []))
    out = []
    for pid in found:
        start = runs.process_start_time(pid)
        if start is not None:
            out.append(Proc(pid, start))
    return out


# --- the launcher -------------------------------------------------------------


def verified_leader(run_dir: Path, status: Mapping[str, Any]) -> Proc | None:
    """The run's launcher, if it is still the very process ``spawn`` started for this run.

    ``pgid`` counts only with the start time recorded beside it (``pgid_start``, or,
    for a run whose launcher is the trainer, ``pid_start``), and only while that
    process still leads a group of the same id. ``run_dir`` is the run it is checked for.
    """
    pgid = status.get("pgid")
    if not isinstance(pgid, int) or pgid <= 1:
        return None
    start = status.get("pgid_start")
    if start is None and status.get("pid") == pgid:
        start = status.get("pid_start")
    if start is None or runs.process_start_time(pgid) != str(start):
        return None
    try:
        if os.getpgid(pgid) != pgid:
            return None
    except ProcessLookupError:
        return None
    return Proc(pgid, str(start))


# --- ranks ----------------------------------------------------------------------


def register_rank(run_dir: Path, rank: int) -> None:
    """Say "this process takes a stop request now" (call once the SIGTERM handler is installed)."""
    folder = Path(run_dir) / RANKS
    folder.mkdir(exist_ok=True)
    host = socket.gethostname()
    record = {"rank": rank, "pid": os.getpid(), "start": runs.process_start_time(os.getpid()),
              "host": host}
    tmp = folder / f".{host}.{rank}.{os.getpid()}.tmp"
    tmp.write_text(json.dumps(record))
    os.replace(tmp, folder / f"{host}.{rank}")


def clear_ranks(run_dir: Path) -> None:
    """Forget the ranks of an earlier launch of this folder (before a resume starts)."""
    for path in (Path(run_dir) / RANKS).glob("*"):
        path.unlink(missing_ok=True)


def ready_ranks(run_dir: Path) -> list[Proc]:
    """This host's ranks of the run that are alive and have their stop handler installed."""
    host = socket.gethostname()
    found = []
    for path in sorted((Path(run_dir) / RANKS).glob(f"{host}.*")):
        try:
            record = json.loads(path.read_text())
            proc = Proc(int(record["pid"]), str(record["start"]))
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if proc.alive():
            found.append(proc)
    return found


def of_run(run_dir: Path, status: Mapping[str, Any]) -> list[Proc]:
    """Every live process of the run on this host: the launcher's tree and each rank's."""
    leader = verified_leader(run_dir, status)
    roots = [p.pid for p in ready_ranks(run_dir)] + ([leader.pid] if leader else [])
    return descendants(roots)


# --- signals --------------------------------------------------------------------


def send(procs: Iterable[Proc], sig: int) -> int:
    """Send ``sig`` to each process still alive as itself; return how many got it."""
    sent = 0
    for proc in procs:
        if not proc.alive():
            continue
        try:
            os.kill(proc.pid, sig)
            sent += 1
        except ProcessLookupError:
            pass
    return sent


def wait_gone(procs: Iterable[Proc], timeout: float, poll: float = 0.1) -> bool:
    """Wait until none of ``procs`` is alive; whether that happened within ``timeout``."""
    procs = list(procs)
    deadline = time.monotonic() + timeout
    while any(p.alive() for p in procs):
        if time.monotonic() > deadline:
            return False
        time.sleep(poll)
    return True


def end_all(procs: Iterable[Proc], grace: float) -> None:
    """SIGTERM, ``grace`` seconds, then SIGKILL for whatever is left."""
    procs = list(procs)
    send(procs, signal.SIGTERM)
    if not wait_gone(procs, grace):
        send(procs, signal.SIGKILL)
        wait_gone(procs, 5.0)
