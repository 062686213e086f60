"""Start runs detached from the terminal, stop them, resume them.

A run is a ``python -m workbench.train RUN_DIR`` process in its own session
(``start_new_session``), so closing the terminal, the SSH connection or the
TUI that started it does not touch it. Its output goes to ``train.log``.
Standard library only: the TUI launches through this module.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from workbench import runs
from workbench.config import Config
from workbench.runs import Run, RunError

TERMINAL = ("finished", "failed", "stopped")


class LaunchError(RunError):
    """A launch, stop or resume that can't be done, with the reason."""


def runs_root(config_path: Path, config: Config | None = None, override: str | Path | None = None) -> Path:
    """Where runs live: ``--runs-dir``, else the TOML's ``runs_dir``, else ``runs/`` beside the TOML."""
    if override:
        return Path(override).expanduser().resolve()
    if config is not None and config.runs_dir is not None:
        return config.runs_dir.resolve()
    return Path(config_path).expanduser().resolve().parent / "runs"


def start(config: Config, name: str, root: Path, plugins_dir: Path | None = None) -> Run:
    """Create a fresh run folder for experiment ``name`` and start training it, detached."""
    experiment = config.get(name)
    run_dir = runs.new_run_dir(root, name)
    resolved = {
        "experiment": experiment.model_dump(mode="json"),
        "extends": config.parents.get(name),
        "config_path": str(Path(config.path).resolve()),
        "plugins_dir": str(plugins_dir) if plugins_dir else None,
    }
    (run_dir / runs.CONFIG).write_text(json.dumps(resolved, indent=2))
    runs.write_status(
        run_dir, state="queued", experiment=name, run_id=run_dir.name, created=time.time(),
        max_steps=experiment.train.steps, step=0,
    )
    _spawn(run_dir, resume=False)
    return Run(name, run_dir.name, run_dir, runs.read_status(run_dir))


def _spawn(run_dir: Path, resume: bool) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "workbench.train", str(run_dir)]
    if resume:
        cmd.append("--resume")
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    with open(run_dir / runs.LOG, "ab") as log:
        proc = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True, env=env, close_fds=True,
        )
    runs.write_status(
        run_dir, only_if=("queued", "stopped", "failed"), state="running", pid=proc.pid,
        pid_start=runs.process_start_time(proc.pid), launched=time.time(),
        error=None, error_kind=None, hint=None, exit_code=None, ended=None,
    )
    # Reap the child when it ends, so a long-lived parent (the TUI) keeps no zombies.
    threading.Thread(target=proc.wait, daemon=True).start()
    return proc


def stop(run: Run) -> None:
    """Ask a running run to stop: SIGTERM to its process group; it checkpoints and exits."""
    status = run.refresh().status
    if status.get("state") != "running":
        raise LaunchError(f"{run.ref} is {run.state}, not running")
    pid = status["pid"]
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        raise LaunchError(f"{run.ref}: its process is already gone") from None
    runs.write_status(run.path, stop_requested=time.time())


def resume(run: Run) -> Run:
    """Continue a stopped (or failed) run from its last checkpoint, in the same folder."""
    status = run.refresh().status
    if status.get("state") not in ("stopped", "failed"):
        raise LaunchError(f"{run.ref} is {run.state}; only a stopped or failed run can be resumed")
    if not latest_checkpoint(run.path):
        raise LaunchError(f"{run.ref} has no checkpoint to resume from; start a new run instead")
    if status.get("state") == "failed" and status.get("error_kind") == "vanished":
        runs.write_status(run.path, state="failed")  # a dead "running": make it resumable
    _spawn(run.path, resume=True)
    return run.refresh()


def latest_checkpoint(run_dir: Path) -> Path | None:
    folder = Path(run_dir) / runs.CHECKPOINTS
    found = [p for p in folder.glob("checkpoint-*") if p.name.split("-")[-1].isdigit()]
    return max(found, key=lambda p: int(p.name.split("-")[-1])) if found else None


def wait(run: Run, states: tuple[str, ...] = TERMINAL, timeout: float | None = None,
         poll: float = 0.2) -> dict[str, Any]:
    """Block until the run reaches one of ``states`` (or ``timeout`` seconds pass)."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        status = run.refresh().status
        if status.get("state") in states:
            return status
        if deadline is not None and time.monotonic() > deadline:
            return status
        time.sleep(poll)
