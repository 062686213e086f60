"""Pilot tests of launch, stop, resume, re-attach, vanished processes and errors as notices.

Launches go through the real path (``launch.start`` -> queue -> scheduler ->
``launch.spawn``, detached) with the ``fake`` launcher plugin, whose process
writes through the engine's own writer; stops send a real SIGTERM to the
leader of a real process group.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import time

from helpers import HERE, NOW, ready, screen_text, state_of, until

from workbench import processes, runs
from workbench.screens.confirm import ConfirmScreen
from workbench.screens.plugins import PluginsScreen
from workbench.widgets.charts import MetricChart
from workbench.widgets.experiments import ExperimentsTable


def notices(app) -> str:
    return "\n".join(str(n.message) for n in app._notifications)


async def test_launch_runs_detached_and_charts_follow(workspace, monkeypatch) -> None:
    monkeypatch.setenv("FAKE_STEP_S", "0.1")  # 4 s of training: time to look at the live process
    app = workspace.app()
    run_dir = workspace.root / "alpha" / "1"
    async with app.run_test(size=(120, 40)) as pilot:
        await ready(pilot)
        await until(pilot, lambda: app.registry is not None, what="plugins")
        await pilot.press("r")
        # the toast lasts 5 s: read it while it shows
        await until(pilot, lambda: "queued alpha#1" in notices(app), what="the notice")
        await until(pilot, lambda: (run_dir / runs.STATUS).exists(), what="run folder")
        assert runs.read_status(run_dir)["state"] in ("queued", "running", "finished")
        assert runs.read_config(run_dir)["experiment"]["name"] == "alpha"
        await until(pilot, lambda: state_of(app, "alpha") == "running", timeout=20, what="running")
        status = runs.read_status(run_dir)
        assert runs.is_alive(status["pid"], status["pid_start"])
        # It leads a session of its own (closing this terminal does not reach it) and its group.
        assert os.getsid(status["pid"]) == status["pid"] == status["pgid"] != os.getsid(0)
        assert os.getpgid(status["pid"]) == status["pid"]
        await until(pilot, lambda: state_of(app, "alpha") == "finished", timeout=30, what="finished")
        loss = app.main.query_one("#loss-chart", MetricChart)
        await until(pilot, lambda: loss.curves and len(loss.curves[0].points) == 40, what="40 points")


async def test_launch_marked_experiments(workspace) -> None:
    app = workspace.app()
    async with app.run_test(size=(120, 40)) as pilot:
        await ready(pilot)
        await pilot.press("space", "space", "r")  # alpha and beta
        await until(pilot, lambda: state_of(app, "alpha") and state_of(app, "beta"), timeout=10,
                    what="two runs")
        await until(pilot, lambda: state_of(app, "alpha") == state_of(app, "beta") == "finished",
                    timeout=40, what="both finished")
        assert state_of(app, "sweep-learning_rate0.001") is None


async def test_launch_refused_for_unknown_backend(workspace) -> None:
    workspace.toml.write_text(workspace.toml.read_text() + '\n[experiments.odd]\nbackend = "testlmm"\n')
    app = workspace.app()
    async with app.run_test(size=(120, 40)) as pilot:
        await ready(pilot)
        app.main.query_one(ExperimentsTable).select("odd")
        await pilot.press("r")
        await until(pilot, lambda: "unknown backend 'testlmm'" in notices(app), what="the refusal")
        assert "did you mean 'testlm'" in notices(app)
        assert not (workspace.root / "odd").exists()


async def test_stop_asks_then_sends_one_sigterm_to_the_group_leader_only(workspace, tmp_path) -> None:
    """One SIGTERM reaches the run's registered trainer (here the group's leader, registered as rank 0
    the way a trainer registers once its stop handler is installed); no other member of its group gets
    one from us (signalled twice, a rank stops without a checkpoint)."""
    out = tmp_path / "signals"
    out.mkdir()
    leader = subprocess.Popen([sys.executable, str(HERE / "group_leader.py"), str(out)],
                              start_new_session=True)
    workspace.processes.append(leader)
    await asyncio.to_thread(lambda: until_file(out / "ready"))
    run_dir = workspace.make_run("alpha", "running", steps=3, pid=leader.pid)
    (run_dir / processes.RANKS).mkdir()
    (run_dir / processes.RANKS / f"{socket.gethostname()}.0").write_text(json.dumps(
        {"rank": 0, "pid": leader.pid, "start": runs.process_start_time(leader.pid),
         "host": socket.gethostname()}))
    app = workspace.app()
    async with app.run_test(size=(120, 40)) as pilot:
        await ready(pilot)
        await until(pilot, lambda: state_of(app, "alpha") == "running", what="running")
        await pilot.press("s")
        assert isinstance(app.screen, ConfirmScreen)
        await pilot.press("n")  # cancel: nothing happens (the count of stops below shows it)
        assert app.screen is app.main
        await pilot.press("s")
        assert "Stop alpha#1?" in screen_text(app)
        await pilot.press("y")
        assert await asyncio.to_thread(leader.wait, 10) == 0
        await until(pilot, lambda: runs.read_status(run_dir).get("stop_requested"), what="stop_requested")
        await until(pilot, lambda: "stopping alpha#1" in notices(app), what="the notice")
    assert (out / "leader-term").read_text() == "TERM\n", "one SIGTERM, to the leader"
    assert (out / "child-report").read_text() == "none", "the rest of the group is left to the leader"
    assert notices(app).count("stopping alpha#1") == 1


def until_file(path, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"no {path}"
        time.sleep(0.02)


async def test_stop_refused_when_not_running(workspace) -> None:
    workspace.make_run("alpha", "finished", steps=5)
    app = workspace.app()
    async with app.run_test(size=(120, 40)) as pilot:
        await ready(pilot)
        await until(pilot, lambda: state_of(app, "alpha") == "finished", what="finished")
        await pilot.press("s")
        assert app.screen is app.main
        assert "alpha#1 is finished: nothing to stop" in notices(app)


async def test_stop_then_resume_a_real_run(workspace, monkeypatch) -> None:
    monkeypatch.setenv("FAKE_STEP_S", "0.05")
    workspace.toml.write_text(workspace.toml.read_text().replace("steps = 40", "steps = 200"))
    app = workspace.app()
    async with app.run_test(size=(120, 40)) as pilot:
        await ready(pilot)
        await pilot.press("r")
        run_dir = workspace.root / "alpha" / "1"
        await until(pilot, lambda: (runs.read_status(run_dir).get("step") or 0) >= 12, timeout=20,
                    what="past the first checkpoint")
        await pilot.press("s", "y")
        await until(pilot, lambda: state_of(app, "alpha") == "stopped", timeout=10, what="stopped")
        stopped_at = runs.read_status(run_dir)["step"]
        assert "stopped at step" in screen_text(app)
        monkeypatch.setenv("FAKE_STEP_S", "0.002")
        await pilot.press("u")
        await until(pilot, lambda: state_of(app, "alpha") == "finished", timeout=40, what="resumed, finished")
        loss = app.main.query_one("#loss-chart", MetricChart)
        await until(pilot, lambda: loss.curves and len(loss.curves[0].points) == 200, what="200 points")
        steps = [s for s, _ in loss.curves[0].points]
        assert steps == list(range(1, 201))  # no step twice, none missing
        assert any(e["type"] == "resume" and e["from_step"] == stopped_at
                   for e in runs.read_events(run_dir))


async def test_resume_refused_without_checkpoint(workspace) -> None:
    workspace.make_run("alpha", "stopped", steps=5)
    app = workspace.app()
    async with app.run_test(size=(120, 40)) as pilot:
        await ready(pilot)
        await until(pilot, lambda: state_of(app, "alpha") == "stopped", what="stopped")
        await pilot.press("u")
        await until(pilot, lambda: "no checkpoint to resume from" in notices(app), what="refusal")


async def test_cancel_a_queued_run(workspace, monkeypatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")  # a CPU-only machine: one run at a time
    workspace.make_run("beta", "running", steps=3)  # holds the slot: alpha waits its turn
    run_dir = workspace.prepare("alpha")  # queued; the TUI starts a scheduler, which waits
    app = workspace.app()
    async with app.run_test(size=(120, 40)) as pilot:
        await ready(pilot)
        await until(pilot, lambda: state_of(app, "alpha") == "queued", what="queued")
        app.main.action_select("alpha")
        await pilot.press("s")
        assert "out of the queue" in screen_text(app)
        await pilot.press("y")
        await until(pilot, lambda: state_of(app, "alpha") == "stopped", what="cancelled")
        assert runs.read_status(run_dir)["cancelled"] is True


async def test_reattach_after_quit_shows_the_run_live(workspace, monkeypatch) -> None:
    monkeypatch.setenv("FAKE_STEP_S", "0.05")
    workspace.toml.write_text(workspace.toml.read_text().replace("steps = 40", "steps = 4000"))
    app = workspace.app()
    async with app.run_test(size=(120, 40)) as pilot:
        await ready(pilot)
        await pilot.press("r")
        await until(pilot, lambda: state_of(app, "alpha") == "running", timeout=15, what="running")
        await pilot.press("q")
    run_dir = workspace.root / "alpha" / "1"
    status = runs.read_status(run_dir)
    assert status["state"] == "running"  # quitting the TUI left the run going
    step_at_quit = status.get("step") or 0
    deadline = time.monotonic() + 20
    while (runs.read_status(run_dir).get("step") or 0) <= step_at_quit:  # it goes on without a TUI
        assert time.monotonic() < deadline, "the run stopped moving when the TUI quit"
        time.sleep(0.05)
    again = workspace.app()
    async with again.run_test(size=(120, 40)) as pilot:
        await ready(pilot)
        loss = again.main.query_one("#loss-chart", MetricChart)
        await until(pilot, lambda: loss.curves and len(loss.curves[0].points) > step_at_quit,
                    timeout=10, what="history since before the quit")
        seen = len(loss.curves[0].points)
        await until(pilot, lambda: len(loss.curves[0].points) > seen + 3, timeout=10, what="live again")
        assert "● " in screen_text(again)


async def test_two_tuis_show_the_same_truth(workspace) -> None:
    proc = workspace.sleeper()
    run_dir = workspace.make_run("alpha", "running", steps=5, pid=proc.pid)
    first, second = workspace.app(), workspace.app()
    async with first.run_test(size=(120, 40)) as p1, second.run_test(size=(120, 40)) as p2:
        await ready(p1)
        await ready(p2)
        runs.append_event(run_dir, "train", step=6, loss=0.5)
        runs.write_status(run_dir, step=6)
        for app, pilot in ((first, p1), (second, p2)):
            loss = app.main.query_one("#loss-chart", MetricChart)
            await until(pilot, lambda loss=loss: loss.curves and len(loss.curves[0].points) == 6,
                        what="6 points")
        proc.kill()
        proc.wait()
        for app, pilot in ((first, p1), (second, p2)):
            await until(pilot, lambda app=app: state_of(app, "alpha") == "failed", what="vanished")


async def test_vanished_process_shows_failed_with_error(workspace) -> None:
    proc = workspace.sleeper()
    workspace.make_run("alpha", "running", steps=4, pid=proc.pid)
    app = workspace.app(clock=lambda: NOW)
    async with app.run_test(size=(120, 40)) as pilot:
        await ready(pilot)
        await until(pilot, lambda: state_of(app, "alpha") == "running", what="running")
        proc.kill()
        proc.wait()
        await until(pilot, lambda: state_of(app, "alpha") == "failed", what="failed")
        text = screen_text(app)
        assert "✗ vanished" in text and "process vanished" in text


async def test_bad_toml_then_fixed(workspace) -> None:
    good = workspace.toml.read_text()
    workspace.toml.write_text(good.replace('lora.r = 8', 'lora.r = = 8'))
    app = workspace.app()
    async with app.run_test(size=(120, 40)) as pilot:
        await ready(pilot)
        text = screen_text(app)
        assert "cannot read the experiments file" in text
        line = good.splitlines().index("lora.r = 8") + 1
        assert f"experiments.toml:{line}:" in notices(app) and "invalid TOML" in notices(app)
        assert app.main.query_one(ExperimentsTable).names() == []
        await pilot.press("r")
        assert "fix the experiments file first" in notices(app)
        # an unknown key names the key path and a suggestion
        workspace.toml.write_text(good.replace('lora.r = 8', 'lora.rr = 8'))
        await until(pilot, lambda: f"experiments.toml:{line}: experiments.beta.lora.rr: unknown key "
                    "(did you mean 'r'?)" in notices(app), what="key error with its line")
        assert "experiments.beta.lora.rr" in screen_text(app)
        workspace.toml.write_text(good)
        table = app.main.query_one(ExperimentsTable)
        await until(pilot, lambda: len(table.names()) == 4, what="reloaded")
        assert "cannot read" not in screen_text(app)
        assert "reloaded" in notices(app)


async def test_bad_toml_still_shows_runs_on_disk(workspace) -> None:
    workspace.make_run("alpha", "finished", steps=10)
    workspace.toml.write_text("[experiments\n")
    app = workspace.app()
    async with app.run_test(size=(120, 40)) as pilot:
        await ready(pilot)
        table = app.main.query_one(ExperimentsTable)
        await until(pilot, lambda: table.names() == ["alpha"], what="alpha from the runs folder")
        assert not table.row("alpha").in_config
        text = screen_text(app)
        assert "experiments.toml cannot be read; this is the config alpha's" in text
        assert "alpha is not in" not in text, "an unreadable file says nothing about what it holds"


async def test_broken_plugin_in_plugins_view(workspace) -> None:
    (workspace.plugins / "broken.py").write_text("raise ImportError('needs the frobnicator package')\n")
    app = workspace.app()
    async with app.run_test(size=(120, 40)) as pilot:
        await ready(pilot)
        await until(pilot, lambda: app.registry is not None, what="plugins")
        await until(pilot, lambda: "1 plugin failed to load" in notices(app), what="a notice")
        await pilot.press("p")
        assert isinstance(app.screen, PluginsScreen)
        text = screen_text(app)
        assert "broken" in text and "ImportError: needs the frobnicator package" in text
        assert "testlm" in text and "fake" in text  # the others still loaded
        (workspace.plugins / "broken.py").unlink()
        await pilot.press("r")
        await until(pilot, lambda: "all plugins loaded" in screen_text(app), what="reloaded plugins")
        await pilot.press("escape")
        assert app.screen is app.main
