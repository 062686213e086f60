"""Pilot tests of the daily-use points: best results beside a stopped run, the narrow footer, marks."""

from __future__ import annotations

from helpers import NOW, T0, ready, screen_text, until
from textual.widgets import Footer

from workbench import runs
from workbench.widgets.charts import MetricChart
from workbench.widgets.experiments import ExperimentsTable


def cell(app, row: str, column: str) -> str:
    return str(app.main.query_one(ExperimentsTable).get_cell(row, column))


async def test_a_stopped_latest_run_keeps_the_experiments_best_result(workspace) -> None:
    workspace.make_run("alpha", "finished", steps=40)
    workspace.make_run("alpha", "stopped", steps=5, evals=0)  # no eval yet: no result of its own
    app = workspace.app(clock=lambda: NOW)
    async with app.run_test(size=(160, 48)) as pilot:
        await ready(pilot)
        table = app.main.query_one(ExperimentsTable)
        await until(pilot, lambda: "stopped" in cell(app, "alpha", "state"), what="alpha's state")
        best = runs.read_status(workspace.root / "alpha" / "1")
        assert cell(app, "alpha", "ppl") == f"{best['best_perplexity']:.2f} #1"
        assert cell(app, "alpha", "bpb") == f"{best['best_bits_per_byte']:.3f} #1"
        # at 160 columns every column shows, the long matrix names included
        await until(pilot, lambda: app.registry is not None, what="plugins")
        assert set(table.columns_shown) == {"mark", "name", "backend", "model", "r", "state", "ppl", "bpb"}
        assert table.row("alpha").model == "TestLM-1M"


async def test_a_better_latest_run_shows_without_a_run_number(workspace) -> None:
    workspace.make_run("alpha", "finished", steps=10)
    workspace.make_run("alpha", "finished", steps=40)
    app = workspace.app(clock=lambda: NOW)
    async with app.run_test(size=(160, 48)) as pilot:
        await ready(pilot)
        best = runs.read_status(workspace.root / "alpha" / "2")["best_perplexity"]
        await until(pilot, lambda: cell(app, "alpha", "ppl") == f"{best:.2f}", what="run 2's best")


async def test_narrow_footer_fits_every_key_and_space_marks_then_moves(workspace) -> None:
    app = workspace.app(clock=lambda: NOW)
    async with app.run_test(size=(80, 24)) as pilot:
        await ready(pilot)
        footer = app.main.query_one(Footer)
        assert footer.show_command_palette is False
        last = screen_text(app).splitlines()[-1]
        assert "p plugins" in last and "q quit" in last and "palette" not in last
        table = app.main.query_one(ExperimentsTable)
        assert table.current == "alpha"
        await pilot.press("space")
        assert app.main.marks == {"alpha"} and table.current == "beta"  # marked, then moved down
        assert any("o overlays" in str(n.message) for n in app._notifications)  # o is off the footer
        await pilot.press("space")
        last = screen_text(app).splitlines()[-1]
        assert last.rstrip().endswith("q quit")
    async with workspace.app(clock=lambda: NOW).run_test(size=(160, 48)) as pilot:
        await ready(pilot)
        assert pilot.app.main.query_one(Footer).show_command_palette is True


async def test_progress_line_ticks_wall_time_and_shows_training_time(workspace) -> None:
    from workbench.widgets.progress import RunProgress

    workspace.make_run("alpha", "running", steps=20, step_s=0.5)  # 10 s of training from T0
    clock = [T0 + 30.0]
    app = workspace.app(clock=lambda: clock[0])
    async with app.run_test(size=(160, 48)) as pilot:
        await ready(pilot)
        progress = app.main.query_one("#progress", RunProgress)
        # the status's figures show first; the run's view brings training time and the recent rate
        await until(pilot, lambda: "30s wall" in progress.describe() and "training" in progress.describe(),
                    what="wall and training time")
        text = progress.describe()
        assert "10s training" in text and "2.0k tok/s (last 20 steps)" in text  # running: the recent rate
        clock[0] += 5  # no event arrives: the wall time still moves within a second or so
        await until(pilot, lambda: "35s wall" in progress.describe(), what="wall time ticking")
        assert "10s training" in progress.describe()


async def test_a_run_that_finishes_or_fails_while_open_gets_a_toast(workspace) -> None:
    alpha = workspace.make_run("alpha", "running", steps=20)
    beta = workspace.make_run("beta", "running", steps=20)
    app = workspace.app(clock=lambda: NOW, bell=True)
    rung = []
    app.bell = lambda: rung.append(1)
    async with app.run_test(size=(160, 48)) as pilot:
        await ready(pilot)
        runs.write_status(alpha, state="finished", ended=NOW, best_perplexity=12.345)
        runs.write_status(beta, state="failed", ended=NOW, error="CUDA out of memory", error_kind="oom")

        def toasts() -> str:
            return "\n".join(str(n.message) for n in app._notifications)

        await until(pilot, lambda: "alpha#1 finished: held-out ppl 12.35" in toasts(), what="finished toast")
        await until(pilot, lambda: "beta#1 failed: CUDA out of memory" in toasts(), what="failed toast")
        assert len(rung) == 2
    quiet = workspace.app(clock=lambda: NOW)
    assert quiet.bell_on_end is False  # the bell is off unless asked


async def test_note_tags_filter_and_archive_from_the_tui(workspace) -> None:
    from workbench import runmeta

    workspace.make_run("alpha", "finished", steps=40)
    second = workspace.make_run("alpha", "stopped", steps=5, evals=0)
    app = workspace.app(clock=lambda: NOW)
    async with app.run_test(size=(160, 48)) as pilot:
        await ready(pilot)
        assert app.main.focused_run().ref == "alpha#2"
        await pilot.press("n")
        await pilot.press(*"lr too high", "enter")
        await pilot.press("T")
        await pilot.press(*"keep lrtest", "enter")
        assert runmeta.read_meta(second) == runmeta.RunMeta("lr too high", ("keep", "lrtest"))
        await until(pilot, lambda: "✎ lr too high #keep #lrtest" in screen_text(app), what="note shown")
        # / keeps experiments whose runs carry the text in a note or tag
        await pilot.press("slash", *"lrtest")
        table = app.main.query_one(ExperimentsTable)
        await until(pilot, lambda: table.names() == ["alpha"], what="filtered by tag")
        await pilot.press("escape")
        # archive: asks, then the run leaves the table; its folder is kept under .archive
        await pilot.press("A")
        await pilot.press("y")
        await until(pilot, lambda: [r.ref for r in app.runs_by_exp.get("alpha", [])] == ["alpha#1"],
                    what="alpha#2 archived")
        assert (second.parent / ".archive" / "2" / "meta.json").is_file()
        await until(pilot, lambda: app.main.focused_run().ref == "alpha#1", what="alpha#1 shown")
        # delete asks too; n keeps it
        await pilot.press("D", "n")
        await pilot.pause()
        assert (second.parent / "1").is_dir()


async def test_e_opens_the_editor_at_the_experiments_line(workspace, monkeypatch, tmp_path) -> None:
    import contextlib
    import sys

    seen = tmp_path / "editor-args"
    editor = tmp_path / "editor.py"
    editor.write_text(f"import sys\nopen({str(seen)!r}, 'w').write(' '.join(sys.argv[1:]))\n")
    monkeypatch.setenv("VISUAL", f"{sys.executable} {editor}")
    app = workspace.app(clock=lambda: NOW)
    async with app.run_test(size=(160, 48)) as pilot:
        await ready(pilot)
        # a headless test terminal cannot be suspended: it says so, with the file and line
        await pilot.press("e")
        await until(pilot, lambda: any("cannot hand over" in str(n.message) for n in app._notifications),
                    what="notice")
        monkeypatch.setattr(app, "suspend", contextlib.nullcontext)  # a real terminal hands over here
        lines = workspace.toml.read_text().splitlines()
        await pilot.press("down", "e")  # beta
        assert seen.read_text() == f"+{lines.index('[experiments.beta]') + 1} {workspace.toml}"
        await pilot.press("down", "e")  # a matrix entry: its matrix's table
        assert seen.read_text() == f"+{lines.index('[experiments.sweep]') + 1} {workspace.toml}"


async def test_chart_keys_smooth_log_and_last_steps_and_few_points_get_markers(workspace) -> None:
    from workbench.widgets.charts import MetricChart

    workspace.make_run("alpha", "finished", steps=400, total=400, evals=100)  # 4 evals: markers
    app = workspace.app(clock=lambda: NOW)
    async with app.run_test(size=(160, 48)) as pilot:
        await ready(pilot)
        loss = app.main.query_one("#loss-chart", MetricChart)
        ppl = app.main.query_one("#ppl-chart", MetricChart)
        await until(pilot, lambda: loss.curves and loss.curves[0].points, what="loss curve")
        assert "●" in screen_text(app)  # the perplexity chart's four points, each marked
        await pilot.press("w")
        await until(pilot, lambda: "(ema 0.6: " in str(loss.plt._active.monitor.title), what="ema title")
        assert ppl.drawing.smoothing == 0.6 and not ppl.smooths  # only the loss chart is smoothed
        await pilot.press("w", "w", "w")
        assert loss.drawing.smoothing == 0.0
        await pilot.press("l")
        assert loss.drawing.log and ppl.drawing.log
        await pilot.press("z")
        assert loss.drawing.last == 100
        await pilot.pause()
        assert loss.plt._active.monitor.xlim[0] == [300.0, 400.0]  # steps 300-400 only


def test_ema_is_debiased_and_weight_zero_is_the_raw_series() -> None:
    from workbench.series import ema

    points = [(1.0, 2.0), (2.0, 2.0), (3.0, 5.0)]
    assert ema(points, 0.0) == points
    smoothed = ema(points, 0.5)
    assert smoothed[:2] == [(1.0, 2.0), (2.0, 2.0)]  # not pulled towards zero at the start
    assert 2.0 < smoothed[2][1] < 5.0 and smoothed[2][0] == 3.0


async def test_narrow_results_name_the_columns_off_screen_and_scroll_to_them(workspace) -> None:
    from workbench.screens.results import ResultsScreen

    workspace.make_run("sweep-learning_rate0.003", "finished", steps=40)  # a long name: a wide table
    app = workspace.app(clock=lambda: NOW)
    async with app.run_test(size=(80, 24)) as pilot:
        await ready(pilot)
        await pilot.press("t")
        screen = await until(pilot, lambda: isinstance(app.screen, ResultsScreen) and app.screen,
                             what="results")
        await pilot.pause()
        assert "tok/s" in screen.hidden_columns()
        title = str(screen.query_one("#results-title").render())
        assert "off-screen:" in title and "tok/s" in title and "←/→ scroll" in title
        await pilot.press(*["right"] * 60)
        await pilot.pause()
        assert "tok/s" not in screen.hidden_columns() and "run" in screen.hidden_columns()
    async with workspace.app(clock=lambda: NOW).run_test(size=(160, 48)) as pilot:
        await ready(pilot)
        await pilot.press("t")
        await pilot.pause(0.3)
        assert pilot.app.screen.hidden_columns() == []


async def test_progress_line_shows_the_recent_tokens_per_s_of_a_running_run(workspace) -> None:
    from workbench.widgets.progress import RunProgress

    run_dir = workspace.make_run("alpha", "running", steps=60, rate=500.0)  # slow for 60 steps...
    for step in range(61, 81):  # ...then 20 fast ones
        runs.append_event(run_dir, "train", step=step, loss=1.0, tokens=256, tokens_per_s=8000.0,
                          time=T0 + 30 + (step - 60) * 0.05)
    runs.write_status(run_dir, step=80)
    app = workspace.app()
    async with app.run_test(size=(160, 48)) as pilot:
        await ready(pilot)
        progress = app.main.query_one("#progress", RunProgress)
        # until the run's view arrives the line shows the status's whole-run average; then the window
        await until(pilot, lambda: "(last 20 steps)" in progress.describe(), what="the recent rate")
        assert "8.0k tok/s (last 20 steps)" in progress.describe()
        whole = app.views[run_dir].timings.tokens_per_s  # what status and results say
        assert whole is not None and whole < 2000


async def test_m_charts_the_learning_rate_and_grad_norm_with_their_latest_values(workspace) -> None:
    run_dir = workspace.make_run("alpha", "finished", steps=0)
    for step in range(1, 41):
        runs.append_event(run_dir, "train", step=step, loss=2.0, lr=1e-3 * (41 - step) / 40,
                          grad_norm=0.5 + step / 100, tokens=256, tokens_per_s=1000.0, time=T0 + step)
    runs.write_status(run_dir, step=40, max_steps=40)
    app = workspace.app()
    async with app.run_test(size=(160, 48)) as pilot:
        await ready(pilot)
        chart = app.main.query_one("#ppl-chart", MetricChart)
        await until(pilot, lambda: chart.title == "held-out perplexity", what="the default right chart")
        await pilot.press("m")  # no evaluation metric: perplexity -> learning rate
        await until(pilot, lambda: chart.title == "learning rate" and chart.curves[0].points,
                    what="the lr chart")
        assert chart.curves[0].points[-1] == (40.0, 2.5e-5)
        assert "learning rate · 2.5e-05" in screen_text(app)
        await pilot.press("m")
        await until(pilot, lambda: chart.title == "grad norm", what="the grad-norm chart")
        assert chart.curves[0].points[-1] == (40.0, 0.9)
        assert "grad norm · 0.9" in screen_text(app)
        await pilot.press("m")
        await until(pilot, lambda: chart.title == "held-out perplexity", what="around again")
