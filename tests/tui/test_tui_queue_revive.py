"""A dead scheduler never stalls the queue silently: every command that looks at runs, and the
TUI, starts a new one; a queue that still can't move says why (CLI and the TUI's title).

The scheduler here is the real one (``python -m workbench.queue``), killed with SIGKILL as
the OOM killer would; runs use the ``fake`` launcher of the TUI fixtures.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import ready, screen_text, state_of, until

from workbench import launch, queue, runs


def scheduler_pids(root: Path) -> list[int]:
    """Processes running ``python -m workbench.queue ROOT``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"workbench.queue" in argv and str(root).encode() in argv:
            found.append(int(entry.name))
    return found


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "workbench.cli", *args], cwd=cwd, env=dict(os.environ),
                          capture_output=True, text=True, timeout=60)


def wait_until(predicate, timeout: float = 30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {predicate}")


def orphaned_queue(workspace) -> Path:
    """A queued run whose scheduler was killed: a running run holds the only (CPU) slot while
    the scheduler waits; SIGKILL the scheduler, then the running run."""
    blocker = workspace.make_run("beta", "running", steps=3)
    alpha = launch.start(workspace.config(), "alpha", workspace.root, workspace.plugins)
    pids = wait_until(lambda: scheduler_pids(workspace.root))
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    wait_until(lambda: not scheduler_pids(workspace.root))
    pid = runs.read_status(blocker)["pid"]
    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: runs.read_status(blocker)["state"] == "failed")
    assert runs.read_status(alpha.path)["state"] == "queued" and not queue.scheduler_running(workspace.root)
    # As if all this happened a minute ago: a run queued seconds ago may have a scheduler
    # still starting, and is left alone (queue.REVIVE_AFTER_S).
    runs.write_status(alpha.path, queued_at=time.time() - 60)
    return alpha.path


@pytest.mark.parametrize("command", [["status"], ["list"], ["queue"]])
def test_a_command_restarts_a_dead_scheduler(workspace, monkeypatch, command) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")  # a CPU-only machine: one run at a time
    alpha = orphaned_queue(workspace)
    time.sleep(1.0)
    assert runs.read_status(alpha)["state"] == "queued", "nothing moves by itself"
    done = cli(*command, cwd=workspace.path)
    assert done.returncode == 0, done.stderr
    assert "had no scheduler" in done.stderr and "started one" in done.stderr
    wait_until(lambda: runs.read_status(alpha)["state"] == "finished")


def stuck_queue(workspace) -> Path:
    """A run queued a minute ago whose scheduler can't be started: ``.queue.log`` (where a
    scheduler's output goes) is a folder, as a broken or read-only runs folder would be."""
    run_dir = workspace.prepare("alpha")
    queue.enqueue(run_dir)
    runs.write_status(run_dir, queued_at=time.time() - 60)
    (workspace.root / queue.LOG).mkdir()
    return run_dir


def test_a_queue_that_can_not_move_says_why(workspace) -> None:
    run_dir = stuck_queue(workspace)
    done = cli("queue", cwd=workspace.path)
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
    assert "none could be started" in done.stderr and ".queue.log" in done.stderr, done.stderr
    assert "alpha#1" in done.stdout and "the queue is stalled: no scheduler is running" in done.stdout
    assert runs.read_status(run_dir)["state"] == "queued"


async def test_the_tui_restarts_a_dead_scheduler(workspace, monkeypatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    orphaned_queue(workspace)
    app = workspace.app()
    async with app.run_test(size=(120, 40)) as pilot:
        await ready(pilot)
        await until(pilot, lambda: state_of(app, "alpha") == "finished", timeout=30,
                    what="the queued run started by a scheduler the TUI restarted")


async def test_the_tui_title_shows_a_stalled_queue(workspace) -> None:
    stuck_queue(workspace)
    app = workspace.app()
    async with app.run_test(size=(160, 40)) as pilot:
        await ready(pilot)
        await until(pilot, lambda: "stalled: " in screen_text(app), timeout=20,
                    what="the title saying the queue is stalled")
        assert "scheduler" in screen_text(app)
