"""The run queue: runs wait as ``queued`` and start as GPUs (or the CPU) free up.

Queued runs are ordinary run folders whose status says ``queued`` with a
``queue_seq`` that orders them. One scheduler process per runs folder
(``python -m workbench.queue RUNS``, detached like a run, single instance by
``flock``) starts the head of the queue whenever a slot is free: one run per
GPU by default (``CUDA_VISIBLE_DEVICES`` set per run), one at a time on a
CPU-only machine; ``max_parallel`` lowers the GPU count or raises the CPU
count (a GPU is never shared). Only the scheduler assigns GPUs,
so two ``workbench`` commands enqueueing at once can never double-book one.
It exits when the queue is empty; the next enqueue starts a new one.
Standard library only.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from workbench import jobs, runs
from workbench.runs import Run

LOCK = ".queue.lock"
LOG = ".queue.log"
POLL_S = 0.5
REVIVE_EVERY_S = 10.0  # a scheduler that keeps dying is restarted at most this often
# A run queued this recently may have a scheduler that is still starting (it takes the lock
# within a second or so; longer on a loaded machine): not yet a dead one.
REVIVE_AFTER_S = 10.0
_revived: dict[Path, float] = {}


class QueueError(runs.RunError):
    """A queue operation that can't be done, with the reason."""


def queued(root: Path) -> list[Run]:
    """Queued runs in the order they will start (a run handed to Slurm has no ``queue_seq``)."""
    waiting = [r for r in runs.list_runs(root) if r.state == "queued" and "queue_seq" in r.status]
    return sorted(waiting, key=lambda r: r.status.get("queue_seq", 0))


def position(root: Path, run: Run) -> int | None:
    """1 for the next run to start, ``None`` when ``run`` is not queued."""
    for i, other in enumerate(queued(root), start=1):
        if other.path == run.path:
            return i
    return None


def enqueue(run_dir: Path, gpus_needed: int = 1, max_parallel: int | None = None) -> None:
    """Mark a prepared run folder as queued at the back of the queue."""
    runs.write_status(
        run_dir, state="queued", queue_seq=time.time_ns(), queued_at=time.time(),
        gpus_needed=gpus_needed, max_parallel=max_parallel,
    )


def cancel(run: Run) -> None:
    """Take a queued run out of the queue; it reads as stopped, never started."""
    if jobs.is_submitted(run.status):  # waiting in Slurm's queue, not ours
        return jobs.stop(run)
    after = runs.write_status(run.path, only_if=("queued",), state="stopped", cancelled=True,
                              ended=time.time(), message="cancelled while queued")
    if not after.get("cancelled"):
        raise QueueError(f"{run.ref} is {run.refresh().state}, not queued")


def move_up(root: Path, run: Run, to_top: bool = False) -> int:
    """Move a queued run one place up (or to the top); returns its new position."""
    order = queued(root)
    index = next((i for i, r in enumerate(order) if r.path == run.path), None)
    if index is None:
        raise QueueError(f"{run.ref} is not queued")
    if index == 0:
        return 1
    target = 0 if to_top else index - 1
    seq = order[target].status.get("queue_seq", 0) - 1
    if not to_top:  # swap with the one above
        runs.write_status(order[target].path, only_if=("queued",), queue_seq=run.status.get("queue_seq"))
        seq = order[target].status.get("queue_seq", 0)
    runs.write_status(run.path, only_if=("queued",), queue_seq=seq)
    return target + 1


# --- resources --------------------------------------------------------------


def visible_gpus() -> list[str]:
    """GPU ids this machine offers: ``CUDA_VISIBLE_DEVICES`` if set, else ``nvidia-smi``'s."""
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return [g.strip() for g in env.split(",") if g.strip() and g.strip() != "-1"]
    if not shutil.which("nvidia-smi"):
        return []
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=index", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=10, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [line.strip() for line in out.splitlines() if line.strip()]


def plan(head: dict[str, Any], running: list[dict[str, Any]], gpus: list[str]) -> list[str] | None:
    """GPUs to give the queue's head now (``[]`` on a CPU-only box), or ``None`` to wait.

    Pure function of the head's needs, the running runs' statuses and the
    machine's GPUs, so the rules are tested without a scheduler.
    """
    limit = head.get("max_parallel")
    if gpus:
        busy = {g for st in running for g in st.get("gpus") or []}
        free = [g for g in gpus if g not in busy]
        need = max(1, int(head.get("gpus_needed") or 1))
        if limit is not None and len(running) >= limit:
            return None
        return free[:need] if len(free) >= need else None
    return [] if len(running) < (limit or 1) else None


# --- the scheduler ----------------------------------------------------------


def _try_lock(root: Path):
    root.mkdir(parents=True, exist_ok=True)
    fh = open(root / LOCK, "a")
    try:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        fh.close()
        return None
    return fh


def ensure_scheduler(root: Path) -> None:
    """Start the scheduler for ``root`` unless one is already running."""
    probe = _try_lock(root)
    if probe is None:
        return  # a scheduler holds the lock and will see the new entry
    probe.close()  # released: the scheduler we start takes it (a racing twin just exits)
    with open(root / LOG, "ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "workbench.queue", str(root)], stdin=subprocess.DEVNULL,
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True, close_fds=True,
        )
    # Reap it when it exits, so a long-lived caller (the TUI, `run --follow`) keeps no zombie.
    threading.Thread(target=proc.wait, daemon=True).start()


def scheduler_running(root: Path) -> bool:
    """Whether a scheduler holds ``root``'s lock (a probe: it takes the lock and lets go)."""
    if not (root / LOCK).exists():
        return False
    try:
        fh = open(root / LOCK, "a")
    except OSError:
        return True  # can't tell: don't start a second one
    with fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
    return False


def revive(root: Path) -> bool:
    """Start a scheduler when runs are queued and none holds the lock (it was killed, or the
    machine rebooted); True when one was started. Every command and the TUI call this."""
    if not root.is_dir() or scheduler_running(root) or not _waited_long(queued(root)):
        return False
    now = time.monotonic()
    if now - _revived.get(root, -REVIVE_EVERY_S) < REVIVE_EVERY_S:
        return False
    ensure_scheduler(root)  # an OSError (say, a full disk) reaches the caller, who says so
    _revived[root] = now
    return True


def stall_reason(root: Path) -> str | None:
    """Why the queue is not moving although runs wait, or ``None`` when it is (or is empty)."""
    waiting = queued(root)
    if not waiting:
        return None
    just_started = time.monotonic() - _revived.get(root, -REVIVE_EVERY_S) < 2.0
    if not just_started and _waited_long(waiting) and not scheduler_running(root):
        return f"no scheduler is running (it keeps exiting? see {root / LOG})"
    return None


def _waited_long(waiting: list[Run]) -> bool:
    """Whether a queued run has waited long enough that its scheduler should hold the lock."""
    oldest = min((r.status.get("queued_at") or 0 for r in waiting), default=None)
    return oldest is not None and time.time() - oldest >= REVIVE_AFTER_S


def step(root: Path, gpus: list[str]) -> bool:
    """Start every queued run that fits now; return whether anything is still queued."""
    from workbench.launch import spawn  # launch imports this module

    while True:
        waiting = queued(root)
        if not waiting:
            return False
        head = waiting[0]
        need = int(head.status.get("gpus_needed") or 1)
        if gpus and need > len(gpus):  # would wait forever (the GPUs changed since it was queued)
            runs.write_status(head.path, state="failed", error_kind="config", ended=time.time(),
                              error=f"needs {need} GPUs; this machine has {len(gpus)}")
            continue
        running = [r.status for r in runs.list_runs(root)
                   if r.state == "running" and not jobs.is_submitted(r.status)]
        assigned = plan(head.status, running, gpus)
        if assigned is None:
            return True
        try:
            spawn(head.path, resume=bool(head.status.get("resume_on_start")), gpus=assigned)
        except Exception as exc:  # noqa: BLE001 - one bad run must not stop the queue
            runs.write_status(head.path, state="failed", error=f"could not start: {exc}",
                              error_kind="error", ended=time.time())


def serve(root: Path) -> None:
    """The scheduler loop: run until the queue is empty, re-checking after letting go."""
    lock = _try_lock(root)
    if lock is None:
        return
    gpus = visible_gpus()
    try:
        while True:
            if not step(root, gpus):
                lock.close()
                if not queued(root):
                    return
                lock = _try_lock(root)  # something arrived as we let go
                if lock is None:
                    return
            time.sleep(POLL_S)
    finally:
        if lock is not None:
            lock.close()


if __name__ == "__main__":
    from workbench import offline

    offline.apply()
    serve(Path(sys.argv[1]))
