"""Snapshots of the main screens at 80x24 and 160x48 (``pytest --snapshot-update`` to accept).

Deterministic: fixed event and status times, a fixed clock, a replayed
nvidia-smi, no spinner or clock on screen, toasts cleared unless they are
the point, and paths shown relative to the project folder (the app runs
from inside it, as ``workbench`` does).
"""

from __future__ import annotations

import pytest
from helpers import NOW, gpu_runner, ready, until

from workbench import runs
from workbench.app import make_app


@pytest.fixture
def scene(workspace, monkeypatch):
    """alpha running at 25/40, beta finished, one sweep entry failed with OOM."""
    monkeypatch.chdir(workspace.path)
    proc = workspace.sleeper()
    workspace.make_run("alpha", "running", steps=25, pid=proc.pid)
    workspace.make_run("beta", "finished", steps=40)
    failed = workspace.make_run("sweep-learning_rate0.003", "failed", steps=12,
                                error="CUDA out of memory. Tried to allocate 2.00 GiB", error_kind="oom",
                                hint="lower train.batch_size or train.max_length")
    (failed / runs.LOG).write_text("loading model test/TestLM-1M\nstep 12 loss 2.31\n"
                                   "Traceback (most recent call last):\n"
                                   "torch.OutOfMemoryError: CUDA out of memory.\n")
    return workspace, proc


def app_for(scene, **options):
    _, proc = scene
    return make_app("experiments.toml", clock=lambda: NOW, poll_interval=0.1,
                    gpu_runner=gpu_runner(pid_map={"48213": proc.pid}), gpu_interval=0.1, **options)


def settled(*keys: str, gpus: bool = True, charts: int = 1, clear: bool = True, notice: str = ""):
    """A run_before that waits for plugins, charts and GPUs (and the toast saying ``notice``),
    presses ``keys``, then clears toasts."""

    async def run_before(pilot) -> None:
        app = pilot.app
        await ready(pilot)
        await until(pilot, lambda: app.registry is not None, what="plugins")
        if notice:  # it arrives after the registry; cleared under a modal screen, it would stay drawn
            await until(pilot, lambda: any(notice in str(n.message) for n in app._notifications),
                        what=notice)
            app.clear_notifications()
            await pilot.pause()
        if gpus:
            await until(pilot, lambda: app.gpus, what="gpus")
        for key in keys:
            await pilot.press(key)
        if charts:
            loss = app.main.query_one("#loss-chart")
            await until(pilot, lambda: sum(bool(c.points) for c in loss.curves) >= charts, what="charts")
        await pilot.pause(0.2)
        if clear:
            app.clear_notifications()
        await pilot.pause()

    return run_before


def test_main_80x24(scene, snap_compare) -> None:
    assert snap_compare(app_for(scene), terminal_size=(80, 24), run_before=settled())


def test_main_160x48_overlay_and_gpus(scene, snap_compare) -> None:
    # mark alpha and beta, back to alpha, overlay
    run_before = settled("space", "space", "up", "up", "o", charts=2)
    assert snap_compare(app_for(scene), terminal_size=(160, 48), run_before=run_before)


def test_failed_run_80x24(scene, snap_compare) -> None:
    assert snap_compare(app_for(scene), terminal_size=(80, 24),
                        run_before=settled("down", "down", "down", charts=1))


def test_diff_tab_120x40(scene, snap_compare) -> None:
    assert snap_compare(app_for(scene), terminal_size=(120, 40), run_before=settled("down", "2"))


def test_bad_toml_80x24(scene, snap_compare) -> None:
    workspace, _ = scene
    text = workspace.toml.read_text().replace("lora.r = 8", "lora.r = = 8")
    workspace.toml.write_text(text)
    assert snap_compare(app_for(scene), terminal_size=(80, 24),
                        run_before=settled(charts=0, clear=False))


def test_plugins_view_with_a_broken_plugin(scene, snap_compare, monkeypatch) -> None:
    workspace, _ = scene
    monkeypatch.setenv("WORKBENCH_BLOCK_PLUGINS", "backends,evaluators,launchers,slurm")  # built-ins vary
    (workspace.plugins / "broken.py").write_text("import frobnicator  # not installed\n")
    assert snap_compare(app_for(scene), terminal_size=(100, 30),
                        run_before=settled("p", charts=0, notice="1 plugin failed to load"))


def test_help_100x40(scene, snap_compare) -> None:
    assert snap_compare(app_for(scene), terminal_size=(100, 40),
                        run_before=settled("question_mark", charts=0))
