"""Pilot tests of the main screen: experiments, details, live charts, overlay, help, palette."""

from __future__ import annotations

import math

from helpers import NOW, T0, gpu_runner, ready, screen_text, until

from workbench import runs
from workbench.screens.help import HelpScreen
from workbench.widgets.charts import Legend, MetricChart
from workbench.widgets.details import RunHistory
from workbench.widgets.experiments import ExperimentsTable
from workbench.widgets.progress import RunProgress


def chart(app, name: str) -> MetricChart:
    return app.main.query_one(f"#{name}-chart", MetricChart)


def cell(app, row: str, column: str) -> str:
    table = app.main.query_one(ExperimentsTable)
    return str(table.get_cell(row, column))


async def test_experiments_table_lists_every_experiment(workspace) -> None:
    workspace.make_run("alpha", "finished", steps=40)
    workspace.make_run("beta", "failed", steps=12, error="CUDA out of memory", error_kind="oom")
    app = workspace.app(clock=lambda: NOW)
    async with app.run_test(size=(160, 48)) as pilot:
        await ready(pilot)
        table = app.main.query_one(ExperimentsTable)
        assert table.names() == ["alpha", "beta", "sweep-learning_rate0.001", "sweep-learning_rate0.003"]
        await until(pilot, lambda: "finished" in cell(app, "alpha", "state"), what="alpha's state")
        await until(pilot, lambda: table.row("alpha").model == "TestLM-1M", what="model from plugin")
        assert table.row("alpha").backend == "testlm"
        assert {"name", "r", "state", "ppl", "model"} <= set(table.columns_shown)
        assert cell(app, "beta", "r") == "8"
        assert "OOM" in cell(app, "beta", "state")
        best = runs.read_status(workspace.root / "alpha" / "1")["best_perplexity"]
        assert cell(app, "alpha", "ppl") == f"{best:.2f}"
        assert cell(app, "sweep-learning_rate0.001", "state") == "·"


async def test_selecting_shows_config_diff_and_history(workspace) -> None:
    workspace.make_run("beta", "finished", steps=40)
    workspace.make_run("beta", "stopped", steps=20)
    app = workspace.app(clock=lambda: NOW)
    async with app.run_test(size=(120, 40)) as pilot:
        await ready(pilot)
        assert app.main.current == "beta"  # the cursor starts on the experiment with the newest run
        text = screen_text(app)
        assert "description = \"alpha with LoRA r=8" in text
        await pilot.press("2")  # diff tab
        text = screen_text(app)
        assert "beta extends alpha: only 1 setting differs" in text
        assert "lora.r" in text and "4  →  8" in text
        await pilot.press("down")  # a matrix entry: the diff is against what the matrix extends
        await pilot.pause()
        text = screen_text(app)
        assert "one entry of the matrix 'sweep'" in text
        assert "extends alpha" in text and "train.learning_rate" in text
        await pilot.press("up", "3")  # beta's runs
        history = app.main.query_one(RunHistory)
        await until(pilot, lambda: history.row_count == 2, what="two runs in history")
        assert str(history.get_row_at(0)[0]).strip() == "beta#2"
        # enter on the older run shows it; esc goes back to the latest
        history.focus()
        await pilot.press("down", "enter")
        await until(pilot, lambda: app.main.focused_run().ref == "beta#1", what="pinned beta#1")
        assert "older run" in screen_text(app)
        await pilot.press("escape")
        assert app.main.focused_run().ref == "beta#2"


async def test_live_charts_follow_appended_events(workspace) -> None:
    run_dir = workspace.make_run("alpha", "running", steps=5, total=2000)
    app = workspace.app(clock=lambda: NOW)
    async with app.run_test(size=(120, 40)) as pilot:
        await ready(pilot)
        loss = chart(app, "loss")
        await until(pilot, lambda: len(loss.curves[0].points) == 5 if loss.curves else False,
                    what="first 5 points")
        progress = app.main.query_one(RunProgress)
        assert progress.progress.step == 5
        for step in range(6, 1501):  # a step a second: the run's own downsampled series, thinned again
            runs.append_event(run_dir, "train", step=step, loss=3 / (1 + step / 100), tokens_per_s=2048.0,
                              time=T0 + step)
            if step % 100 == 0:
                runs.append_event(run_dir, "eval", step=step, perplexity=math.exp(3 / (1 + step / 100)),
                                  bits_per_byte=1.0, time=T0 + step)
        await until(pilot, lambda: loss.curves[0].points[-1][0] == 1500, what="the loss up to step 1500")
        assert len(loss.curves[0].points) <= 1000  # bounded however long the run (summary's series)
        ppl = chart(app, "ppl")
        await until(pilot, lambda: len(ppl.curves[0].points) == 15, what="15 evals")
        assert loss.drawn_points < 400  # thinned for drawing
        await until(pilot, lambda: progress.progress.step == 1500, what="progress at 1500")
        assert progress.progress.eta_s is not None and progress.progress.eta_s == 500.0  # 1 step/s
        assert "1500/2000" in progress.describe() and "ETA 8m20s" in progress.describe()


async def test_overlay_of_marked_runs(workspace) -> None:
    workspace.make_run("alpha", "finished", steps=40)
    workspace.make_run("beta", "finished", steps=30)
    app = workspace.app(clock=lambda: NOW)
    async with app.run_test(size=(160, 48)) as pilot:
        await ready(pilot)
        await pilot.press("o")  # nothing marked: a notice, no overlay
        assert not app.main.overlay
        await pilot.press("space", "space")  # marks alpha and beta, cursor moves down
        assert app.main.marks == {"alpha", "beta"}
        await pilot.press("up", "up", "o")
        loss = chart(app, "loss")
        await until(pilot, lambda: [len(c.points) for c in loss.curves] == [40, 30], what="two curves")
        assert [c.label for c in loss.curves] == ["alpha#1", "beta#1"]
        assert loss.curves[0].color != loss.curves[1].color
        legend = app.main.query_one(Legend)
        assert legend.display and "alpha#1" in str(legend.render()) and "beta#1" in str(legend.render())
        await pilot.press("o")
        await until(pilot, lambda: len(loss.curves) == 1, what="overlay off")


async def test_samples_and_log_tabs(workspace) -> None:
    run_dir = workspace.make_run("alpha", "finished", steps=20)
    (run_dir / runs.LOG).write_text("loading model\nstep 20 loss 0.5\n")
    app = workspace.app(clock=lambda: NOW)
    async with app.run_test(size=(120, 40)) as pilot:
        await ready(pilot)
        await pilot.press("4")
        await until(pilot, lambda: "sample of alpha at step 20" in screen_text(app), what="sample text")
        await pilot.press("5")
        await until(pilot, lambda: "step 20 loss 0.5" in screen_text(app), what="log tail")


async def test_failed_run_shows_error_hint_and_log_tail(workspace) -> None:
    run_dir = workspace.make_run("alpha", "failed", steps=8, error_kind="oom",
                                 error="CUDA out of memory. Tried to allocate 2 GiB",
                                 hint="lower train.batch_size or max_length")
    (run_dir / runs.LOG).write_text("loading\nTraceback (most recent call last):\n"
                                    "torch.OutOfMemoryError: CUDA out of memory\n")
    app = workspace.app(clock=lambda: NOW)
    async with app.run_test(size=(120, 40)) as pilot:
        await ready(pilot)
        await until(pilot, lambda: "│ torch.OutOfMemoryError" in screen_text(app), what="log tail in banner")
        text = screen_text(app)
        assert "✗ failed: CUDA out of memory. Tried to allocate 2 GiB" in text
        assert "hint: lower train.batch_size or max_length" in text
        assert "✗ OOM" in text


async def test_filter(workspace) -> None:
    app = workspace.app()
    async with app.run_test(size=(120, 40)) as pilot:
        await ready(pilot)
        await pilot.press("slash", "s", "w")
        table = app.main.query_one(ExperimentsTable)
        await until(pilot, lambda: table.names() == ["sweep-learning_rate0.001", "sweep-learning_rate0.003"],
                    what="filtered rows")
        await pilot.press("enter")
        assert table.has_focus
        await pilot.press("escape")
        await until(pilot, lambda: len(table.names()) == 4, what="filter cleared")


async def test_help_screen_lists_keys(workspace) -> None:
    app = workspace.app()
    async with app.run_test(size=(100, 60)) as pilot:  # tall enough for the whole list, no scrolling
        await ready(pilot)
        await pilot.press("question_mark")
        assert isinstance(app.screen, HelpScreen)
        text = screen_text(app)
        for words in ("run", "stop", "resume", "overlay", "plugins", "command palette"):
            assert words in text
        await pilot.press("escape")
        assert app.screen is app.main


async def test_command_palette_has_every_action(workspace) -> None:
    from workbench.commands import ACTIONS

    app = workspace.app()
    async with app.run_test(size=(120, 40)) as pilot:
        await ready(pilot)
        screen_actions = {a for _, _, a in ACTIONS if not a.startswith("app.")}
        for action in screen_actions:
            name = action.split("(")[0]
            assert hasattr(app.main, f"action_{name}"), action
        for binding in app.main.BINDINGS:
            if binding.show:
                assert any(a == binding.action for _, _, a in ACTIONS), binding.action
        await pilot.press("ctrl+p")
        await pilot.pause()
        for key in "show beta":
            await pilot.press("space" if key == " " else key)
        await until(pilot, lambda: "Show beta" in screen_text(app), what="palette hit")
        await pilot.press("enter")
        await until(pilot, lambda: app.main.current == "beta", what="palette moved the cursor")


async def test_gpu_bar_maps_processes_to_runs(workspace) -> None:
    proc = workspace.sleeper()
    workspace.make_run("alpha", "running", steps=3, pid=proc.pid)
    app = workspace.app(gpu_runner=gpu_runner(pid_map={"48213": proc.pid}), gpu_interval=0.1)
    async with app.run_test(size=(160, 40)) as pilot:
        await ready(pilot)
        await until(pilot, lambda: "alpha#1" in screen_text(app).splitlines()[0], what="GPU holder")
        top = screen_text(app).splitlines()[0]
        assert "GPU0 H100 61% 23.1/80G alpha#1" in top
        assert "GPU1 H100 idle" in top


async def test_no_gpus_no_bar(workspace) -> None:
    calls: list[list[str]] = []

    def no_nvidia_smi(cmd: list[str]) -> None:
        calls.append(cmd)

    app = workspace.app(gpu_runner=no_nvidia_smi, gpu_interval=0.05)
    async with app.run_test(size=(120, 40)) as pilot:
        await ready(pilot)
        await until(pilot, lambda: len(calls) >= 2, what="the GPU poll, twice")  # the first one answered
        await pilot.pause()
        assert "GPU" not in screen_text(app).splitlines()[0]


async def test_chart_refills_when_a_run_is_shown_again(workspace) -> None:
    run_dir = workspace.make_run("alpha", "finished", steps=30)
    app = workspace.app(poll_interval=0.2)
    async with app.run_test(size=(120, 40)) as pilot:
        await ready(pilot)
        loss = chart(app, "loss")
        await until(pilot, lambda: loss.curves and len(loss.curves[0].points) == 30, what="30 points")
        # what a table rebuild does: the cursor passes another row and comes back, between two polls
        app.follow([], None)
        app.follow([run_dir], run_dir)
        app.main.refresh_charts()
        await until(pilot, lambda: loss.curves and len(loss.curves[0].points) == 30, what="refilled")
