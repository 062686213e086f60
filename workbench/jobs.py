"""Runs handed to an outside scheduler (Slurm): submit, liveness and stop through their launcher.

A run whose experiment names a launcher with ``submit`` skips the local queue:
``workbench run`` hands it to the scheduler at once, and its status records
``launcher`` and ``job_id``. From then on that launcher answers for the run:
readers ask its ``liveness`` instead of checking a pid (the job may run on
another machine), ``workbench stop`` calls its ``stop`` and ``workbench
resume`` submits the run again. The trainer inside the job writes the run
folder exactly as a local run does. Standard library only at import time;
plugins load on first need, once per process and plugins folder.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from workbench import runs
from workbench.api import Launcher, Liveness
from workbench.runs import Run, RunError

# Fields a fresh submission clears: what an earlier job of the same run left behind.
_CLEARED = dict(error=None, error_kind=None, hint=None, exit_code=None, ended=None, stop_requested=None,
                cancelled=None, message=None)

_registries: dict[str | None, Any] = {}


class JobError(RunError):
    """A submission or stop the scheduler refused, with its reason."""


def is_submitted(status: dict[str, Any]) -> bool:
    """Whether the run was handed to an outside scheduler (its launcher answers for it)."""
    return status.get("job_id") is not None


def launcher_named(name: str | None, plugins_dir: str | Path | None = None) -> Launcher | None:
    """The launcher plugin called ``name`` (plugins loaded once per process and folder)."""
    if not name:
        return None
    key = str(plugins_dir) if plugins_dir else None
    if key not in _registries:
        from workbench.plugins import load_plugins

        _registries[key] = load_plugins(key)
    return _registries[key].launchers.get(name)


def submits(name: str, plugins_dir: str | Path | None = None) -> bool:
    """Whether launcher ``name`` hands runs to an outside scheduler instead of the local queue."""
    launcher = launcher_named(name, plugins_dir)
    return launcher is not None and launcher.submit is not None


def _launcher_of(run_dir: Path, name: str | None) -> Launcher | None:
    return launcher_named(name, runs.read_config(run_dir).get("plugins_dir"))


def submit(run_dir: Path) -> str:
    """Hand a prepared (queued) run folder to its launcher's scheduler; return the job id.

    Only ``launcher`` and ``job_id`` are written after ``sbatch`` returns: the job
    may already be running and its trainer writing ``running``.
    """
    resolved = runs.read_config(run_dir)
    experiment = resolved.get("experiment") or {}
    name = experiment.get("launcher")
    launcher = launcher_named(name, resolved.get("plugins_dir"))
    if launcher is None or launcher.submit is None:
        raise JobError(f"launcher {name!r} does not submit runs to a scheduler")
    try:
        job_id = str(launcher.submit(str(run_dir), experiment))
    except Exception as exc:  # noqa: BLE001 - the scheduler's refusal, as one line
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        runs.write_status(run_dir, state="failed", error=f"could not submit: {reason}",
                          error_kind="submit", ended=time.time())
        raise JobError(f"{experiment.get('name')}#{Path(run_dir).name}: could not submit: {reason}") from None
    runs.write_status(run_dir, launcher=name, job_id=job_id, submitted=time.time())
    return job_id


def resubmit(run: Run) -> Run:
    """Submit a stopped or failed run again; the job resumes from the folder's last checkpoint."""
    runs.write_status(run.path, state="queued", **_CLEARED)
    submit(run.path)
    return run.refresh()


def _user_stopped(status: dict[str, Any]) -> bool:
    return bool(status.get("stop_requested") or status.get("cancelled"))


def checked(run_dir: Path, status: dict[str, Any]) -> dict[str, Any]:
    """``status.json`` of a submitted run as a reader should see it, the launcher consulted.

    Adds ``job_detail`` (one line naming the job and its state). A job the
    scheduler no longer runs while the status says queued or running reads as
    failed with the scheduler's reason (or stopped, when a stop was asked of a
    job that never started), and so does a trainer that stopped with a checkpoint
    on a TERM workbench did not send, when the job then ended cancelled or timed
    out rather than completed; a job requeued after its trainer stopped
    (preemption, ``scontrol requeue``) reads as queued again. When the scheduler can't be asked,
    the status shows as written.
    """
    state = status.get("state")
    unasked_stop = state == "stopped" and not _user_stopped(status)  # requeued, timed out or cancelled?
    if state not in runs.ACTIVE and not unasked_stop:
        return status
    launcher = _launcher_of(run_dir, status.get("launcher"))
    if launcher is None or launcher.liveness is None:
        return dict(status, job_detail=f"job {status['job_id']} (launcher {status.get('launcher')!r} "
                    "is not available here to ask about it)")
    live: Liveness = launcher.liveness(status)
    out = dict(status, job_detail=live.detail)
    if live.alive is None:
        return out
    if live.alive:
        if unasked_stop and live.waiting:
            out.update(state="queued", requeued=True)  # it resumes from its checkpoint when it starts
        return out
    if unasked_stop:
        if live.reason in ("", "vanished"):
            return out  # stopped on the signal ahead of the time limit, and the job ended well
        return dict(out, state="failed", error=live.detail, error_kind=live.reason,
                    hint="the trainer saved a checkpoint as the job ended; "
                    "`workbench resume` submits it again from there")
    if state == "queued" and _user_stopped(status):
        return dict(out, state="stopped", cancelled=True)
    return dict(out, state="failed", error=live.detail, error_kind=live.reason or "vanished",
                hint="the job ended without the trainer writing its end (see train.log); "
                "`workbench resume` submits it again from the last checkpoint")


def stop(run: Run) -> None:
    """Ask a submitted run's job to stop: it checkpoints and ends ``stopped``; a waiting job is cancelled."""
    status = run.refresh().status
    if status.get("state") not in runs.ACTIVE:
        raise JobError(f"{run.ref} is {run.state}, not running")
    launcher = _launcher_of(run.path, status.get("launcher"))
    if launcher is None or launcher.stop is None:
        raise JobError(f"{run.ref}: launcher {status.get('launcher')!r} can't stop its job from here")
    runs.write_status(run.path, stop_requested=time.time())
    try:
        launcher.stop(status)
    except Exception as exc:  # noqa: BLE001 - the scheduler's refusal, as one line
        raise JobError(f"{run.ref}: could not stop job {status['job_id']}: {exc}") from None
    if status.get("state") == "queued":
        runs.write_status(run.path, only_if=("queued",), state="stopped", cancelled=True, ended=time.time(),
                          message="cancelled before it started")
