"""Start runs detached from the terminal, stop them, resume them.

A run is a ``python -m workbench.train RUN_DIR`` process in its own session
(``start_new_session``), so closing the terminal, the SSH connection or the
TUI that started it does not touch it. Its output goes to ``train.log``.
Standard library only: the TUI launches through this module.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from workbench import jobs, processes, queue, runenv, runs
from workbench.config import Config
from workbench.runs import Run, RunError
from workbench.schema import Experiment

TERMINAL = ("finished", "failed", "stopped", "pruned")
SHUTDOWN_TIMEOUT_S = 300  # torchrun's grace for ranks after the agent is signalled (default 30)
STARTUP_GRACE_S = 10.0  # a run stopped while starting: SIGTERM, then SIGKILL after this


class LaunchError(RunError):
    """A launch, stop or resume that can't be done, with the reason."""


def runs_root(config_path: Path, config: Config | None = None, override: str | Path | None = None) -> Path:
    """Where runs live: ``--runs-dir``, else the TOML's ``runs_dir``, else ``runs/`` beside the TOML."""
    if override:
        return Path(override).expanduser().resolve()
    if config is not None and config.runs_dir is not None:
        return config.runs_dir.resolve()
    return Path(config_path).expanduser().resolve().parent / "runs"


def prepare(config: Config, name: str, root: Path, plugins_dir: Path | None = None,
            experiment: Experiment | None = None, extra: dict[str, Any] | None = None) -> Path:
    """Create a fresh run folder for experiment ``name`` holding its resolved config.

    ``experiment`` replaces the file's (a search trial's sampled values) and
    ``extra`` adds top-level blocks to ``config.json`` (the trial's).
    """
    experiment = experiment or config.get(name)
    run_dir = runs.new_run_dir(root, name)
    resolved = {
        "experiment": experiment.model_dump(mode="json"),
        "extends": config.parents.get(name),
        "config_path": str(Path(config.path).resolve()),
        "plugins_dir": str(plugins_dir) if plugins_dir else None,
        "offline": config.offline,
        **(extra or {}),
    }
    with _removed_on_os_error() as made:
        made.path = run_dir
        runs.write_text(run_dir / runs.CONFIG, json.dumps(resolved, indent=2))
        runs.write_status(
            run_dir, state="queued", experiment=name, run_id=run_dir.name, created=time.time(),
            max_steps=experiment.train.steps, step=0,
            **({"trial": extra["trial"]["number"]} if extra and "trial" in extra else {}),
        )
    return run_dir


def start_experiment(config: Config, name: str, root: Path, plugins_dir: Path | None = None,
                     max_parallel: int | None = None) -> list[Run]:
    """What ``workbench run NAME`` and the TUI's ``r`` do: queue a run, or start/resume a study.

    A search experiment's trials are asked for by ``python -m workbench.search``
    in its own process, so neither the CLI nor the TUI imports Optuna.
    """
    if config.get(name).search is None:
        return [start(config, name, root, plugins_dir, max_parallel)]
    argv = [sys.executable, "-m", "workbench.search", "start", str(Path(config.path).resolve()), name,
            str(root)]
    if plugins_dir:
        argv += ["--plugins-dir", str(plugins_dir)]
    if max_parallel:
        argv += ["--max-parallel", str(max_parallel)]
    done = subprocess.run(argv, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    if done.returncode != 0:
        lines = (done.stderr or "").strip().splitlines()
        raise LaunchError(f"{name}: the study did not start: {lines[-1] if lines else done.returncode}")
    started = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    return [Run(s["experiment"], s["run_id"], Path(s["path"]), runs.read_status(Path(s["path"])))
            for s in started]


def start(config: Config, name: str, root: Path, plugins_dir: Path | None = None,
          max_parallel: int | None = None, experiment: Experiment | None = None,
          extra: dict[str, Any] | None = None) -> Run:
    """Queue experiment ``name`` in a fresh run folder; it starts, detached, when a slot is free.

    On an idle machine that is at once: the scheduler picks it up within a poll.
    """
    experiment = experiment or config.get(name)
    if jobs.submits(experiment.launcher, plugins_dir):  # Slurm queues it: not held back here
        run_dir = prepare(config, name, root, plugins_dir, experiment, extra)
        runenv.record(run_dir)
        jobs.submit(run_dir)
        return Run(name, run_dir.name, run_dir, runs.read_status(run_dir))
    dist = experiment.distributed
    refuse_more_gpus_than_the_machine(name, dist.nproc_per_node)
    with _removed_on_os_error() as made:
        run_dir = made.path = prepare(config, name, root, plugins_dir, experiment, extra)
        runenv.record(run_dir)
        queue.enqueue(run_dir, gpus_needed=dist.nproc_per_node, max_parallel=max_parallel)
    queue.ensure_scheduler(root)
    return Run(name, run_dir.name, run_dir, runs.read_status(run_dir))


def refuse_more_gpus_than_the_machine(what: str, nproc_per_node: int) -> None:
    """A run needing more GPUs than this machine has would wait in the queue forever: refuse it.

    A machine without GPUs runs every process on the CPU, so any count is possible there.
    """
    gpus = queue.visible_gpus()
    if gpus and nproc_per_node > len(gpus):
        raise LaunchError(
            f"{what}: distributed.nproc_per_node = {nproc_per_node}, but this machine has "
            f"{len(gpus)} GPU{'s' if len(gpus) != 1 else ''} ({', '.join(gpus)}); "
            "lower it, or run on a machine with more GPUs")


class _Made:
    path: Path | None = None


@contextlib.contextmanager
def _removed_on_os_error() -> Iterator[_Made]:
    """Remove the run folder made inside when a write fails (a full disk): never a folder
    without a status. ``prepare`` itself removes one it could not fill."""
    made = _Made()
    try:
        yield made
    except OSError:
        if made.path is not None:
            shutil.rmtree(made.path, ignore_errors=True)
        raise


def command(run_dir: Path, resume: bool = False) -> list[str]:
    """The argv that starts the run's training, from its experiment's launcher plugin."""
    from workbench.plugins import load_plugins

    resolved = runs.read_config(run_dir)
    experiment = resolved.get("experiment", {})
    name = experiment.get("launcher", "python")
    registry = load_plugins(resolved.get("plugins_dir"))
    launcher = registry.launchers.get(name)
    if launcher is None:
        raise LaunchError(f"unknown launcher {name!r} (known: {', '.join(sorted(registry.launchers))})")
    argv = launcher.command(str(run_dir), experiment.get("distributed") or {})
    return [*argv, "--resume"] if resume else argv


def spawn(run_dir: Path, resume: bool = False, gpus: list[str] | None = None) -> subprocess.Popen:
    """Start the training process for ``run_dir`` now, in its own session, output to train.log."""
    cmd = command(run_dir, resume)
    env = dict(runenv.for_run(run_dir), PYTHONUNBUFFERED="1")  # the env of the command that queued it
    # torchrun (and multi-process accelerate) give the ranks this long to finish after the
    # agent itself is signalled, then SIGKILL them: 30 s by default, less than a checkpoint
    # with its samples may take. `workbench stop` signals the ranks, not the agent.
    env.setdefault("TORCH_ELASTIC_SHUTDOWN_TIMEOUT", str(SHUTDOWN_TIMEOUT_S))
    if gpus:
        env["CUDA_VISIBLE_DEVICES"] = ",".join(gpus)
    processes.clear_ranks(run_dir)
    with open(run_dir / runs.LOG, "ab") as log:
        proc = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True, env=env, close_fds=True,
        )
    runs.write_status(
        run_dir, only_if=("queued", "stopped", "failed"), state="running", pid=proc.pid,
        pid_start=runs.process_start_time(proc.pid), pgid=proc.pid,
        pgid_start=runs.process_start_time(proc.pid), launched=time.time(), gpus=gpus or [],
        error=None, error_kind=None, hint=None, exit_code=None, ended=None, resume_on_start=None,
        stop_requested=None,
    )
    # Reap the child when it ends, so a long-lived parent (the TUI) keeps no zombies.
    threading.Thread(target=proc.wait, daemon=True).start()
    return proc


def stop(run: Run) -> None:
    """Ask a running run to stop: each rank checkpoints, the run writes ``stopped`` and exits.

    SIGTERM goes once to each rank that has its stop handler installed (see
    :mod:`workbench.processes`), whatever the launcher. A run with no such rank yet
    is still starting: nothing is trained, so it is ended at once and marked ``stopped``.
    Only processes verified by their start time are ever signalled.
    """
    status = run.refresh().status
    if jobs.is_submitted(status):
        return jobs.stop(run)
    if status.get("state") != "running":
        raise LaunchError(f"{run.ref} is {run.state}, not running")
    ready = processes.ready_ranks(run.path)
    if ready and len(ready) >= _local_ranks(run.path):
        runs.write_status(run.path, stop_requested=time.time())
        processes.send(ready, signal.SIGTERM)
        return
    leader = processes.verified_leader(run.path, status)
    if leader is None:
        if ready:  # the launcher is gone but ranks are not: they can still checkpoint
            runs.write_status(run.path, stop_requested=time.time())
            processes.send(ready, signal.SIGTERM)
            return
        raise LaunchError(f"{run.ref}: its process is already gone")
    stop_while_starting(run, leader)


def _local_ranks(run_dir: Path) -> int:
    """How many ranks of the run start on this machine (``distributed.nproc_per_node``)."""
    experiment = runs.read_config(run_dir).get("experiment") or {}
    if experiment.get("launcher", "python") == "python":
        return 1
    try:
        return max(1, int((experiment.get("distributed") or {}).get("nproc_per_node", 1)))
    except (TypeError, ValueError):
        return 1


def stop_while_starting(run: Run, leader: processes.Proc) -> None:
    """End a run whose ranks can't take a stop request yet, and record it ``stopped``.

    Its processes (the launcher's tree, ranks that did register) get SIGTERM, then
    SIGKILL after :data:`STARTUP_GRACE_S`; nothing had been trained, so nothing is lost.
    """
    runs.write_status(run.path, stop_requested=time.time())
    processes.end_all(processes.descendants([leader.pid]) + processes.ready_ranks(run.path),
                      grace=STARTUP_GRACE_S)
    message = "stopped while starting, before any training"
    after = runs.write_status(run.path, only_if=("running",), state="stopped", ended=time.time(),
                              exit_code=None, stopped_while_starting=True)
    if after.get("stopped_while_starting") and after.get("state") == "stopped":
        runs.append_event(run.path, "status", state="stopped", message=message)


def resume(run: Run, max_parallel: int | None = None) -> Run:
    """Queue a stopped (or failed) run to continue from its last checkpoint, in the same folder."""
    status = run.refresh().status
    if status.get("state") not in ("stopped", "failed"):
        raise LaunchError(f"{run.ref} is {run.state}; only a stopped or failed run can be resumed")
    if runs.latest_checkpoint(run.path) is None:
        raise LaunchError(f"{run.ref} has no checkpoint to resume from (a complete one holds "
                          "trainer_state.json and the adapter); start a new run instead")
    if jobs.is_submitted(status):
        return jobs.resubmit(run)
    dist = runs.read_config(run.path).get("experiment", {}).get("distributed") or {}
    refuse_more_gpus_than_the_machine(run.ref, dist.get("nproc_per_node", 1))
    runs.write_status(run.path, state="queued", resume_on_start=True, cancelled=None)
    runenv.record(run.path)
    queue.enqueue(run.path, gpus_needed=dist.get("nproc_per_node", 1), max_parallel=max_parallel)
    queue.ensure_scheduler(run.path.parent.parent)
    return run.refresh()


def latest_checkpoint(run_dir: Path) -> Path | None:
    """The folder of the complete checkpoint a resume continues from (see :func:`runs.checkpoints`)."""
    found = runs.latest_checkpoint(run_dir)
    return found.path if found else None


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
