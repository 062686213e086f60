"""Pilot tests of the results screen: rows, sorting, best marks, report export."""

from __future__ import annotations

from helpers import ready, screen_text, until
from textual.widgets import DataTable

from workbench.screens.results import ResultsScreen

PNG = b"\x89PNG\r\n\x1a\n"


def scene(workspace) -> None:
    """alpha: 40 steps (the best perplexity); beta: 20 steps, faster; a sweep run with nothing yet."""
    workspace.make_run("alpha", "finished", steps=40)
    workspace.make_run("beta", "finished", steps=20, rate=4096.0)
    workspace.make_run("sweep-learning_rate0.001", "finished", steps=0, evals=0, samples=False)


async def open_results(pilot) -> ResultsScreen:
    app = pilot.app
    await ready(pilot)
    await until(pilot, lambda: app.registry is not None, what="plugins")
    await pilot.press("t")
    screen = await until(pilot, lambda: isinstance(app.screen, ResultsScreen) and app.screen, what="results")
    await until(pilot, lambda: len(screen.rows) == 3, what="the rows")
    return screen


async def test_rows_sorting_and_best_marks(workspace) -> None:
    scene(workspace)
    app = workspace.app()
    async with app.run_test(size=(120, 30)) as pilot:
        screen = await open_results(pilot)
        table = screen.query_one(DataTable)
        assert [str(c.label) for c in table.columns.values()] == [
            "run", "model", "r", "steps", "held-out ppl ↓", "bits/byte ↓", "train time", "tok/s"]
        # default: best held-out perplexity first, unknowns last
        assert screen.sorted_runs() == ["alpha#1", "beta#1", "sweep-learning_rate0.001#1"]
        first = [str(table.get_row_at(0)[i]) for i in range(8)]
        assert first[0] == "alpha#1" and first[1] == "TestLM-1M" and first[2] == "4"
        assert first[4].startswith("★ ") and first[5].startswith("★ ")
        assert not str(table.get_row_at(1)[4]).startswith("★")
        text = screen_text(app)
        assert "Results — 3 runs" in text and "sort: held-out ppl ↑" in text

        await pilot.press("S")  # reversed: the unknown still last
        assert screen.sorted_runs() == ["beta#1", "alpha#1", "sweep-learning_rate0.001#1"]
        await pilot.press("3")  # LoRA r, ascending
        assert screen.sort_key == "r" and screen.sorted_runs()[-1] == "beta#1"
        await pilot.press("3")  # the same key again reverses
        assert screen.sorted_runs()[0] == "beta#1"
        await pilot.press("s")  # cycles on from r
        assert screen.sort_key == "model"
        await pilot.click("#results-table", offset=(60, 0))  # a header: "train time" or so
        await pilot.pause()
        assert screen.sort_key != "model"
        await pilot.press("8")  # tok/s: best (highest) first, starred
        assert screen.sorted_runs()[:2] == ["beta#1", "alpha#1"]
        assert str(table.get_row_at(0)[7]) == "★ 4.1k"
        assert str(table.get_row_at(1)[7]) == "2.0k", "the slower run: no star"
        await pilot.press("escape")
        assert app.screen is app.main


async def test_export_writes_the_report(workspace) -> None:
    scene(workspace)
    app = workspace.app()
    async with app.run_test(size=(120, 30)) as pilot:
        await open_results(pilot)
        await pilot.press("e")
        report = workspace.path / "report" / "report.md"
        await until(pilot, lambda: any("wrote" in n.message for n in app._notifications), timeout=30,
                    what="the report")
        text = report.read_text()
        assert "## Results" in text and "alpha#1" in text and "beta#1" in text
        assert "sample of alpha at step 40" in text  # the run's own samples: no generation
        pngs = sorted(report.parent.glob("*.png"))
        assert pngs and all(p.read_bytes().startswith(PNG) for p in pngs)
