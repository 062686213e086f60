"""Pilot test of the study screen (``y``): trials table, best marked, pruned shown, live updates.

Trial run folders are written with the engine's writers (``launch.prepare`` with the
trial block the search command writes, ``runs.write_status`` as the trainer does).
"""

from __future__ import annotations

import textwrap
from pathlib import Path

from helpers import ready, until
from textual.widgets import DataTable

from workbench import config as config_mod
from workbench import launch, runs
from workbench.app import make_app
from workbench.screens.study import StudyChart, StudyScreen

TOML = """\
[experiments.base]
backend = "tiny"
evaluators = ["perplexity"]
data.source = "rows.jsonl"
[experiments.lr-search]
extends = "base"
[experiments.lr-search.search]
trials = 4
params."train.learning_rate" = { low = 1e-5, high = 1e-1, log = true }
params."lora.r" = [4, 8]
"""


def trial(project: Path, number: int, lr: float, r: int, state: str, value: float, step: int = 4) -> None:
    cfg = config_mod.load(project / "experiments.toml")
    block = {"study": "lr-search", "storage": "journal:x", "number": number, "metric": "perplexity",
             "direction": "minimize", "params": {"train.learning_rate": lr, "lora.r": r}}
    run_dir = launch.prepare(cfg, "lr-search", project / "runs", extra={"trial": block})
    eval_ = {"step": step, "perplexity": value}
    if state == "finished":
        runs.write_status(run_dir, state=state, step=step, final=eval_, last_eval=eval_)
    else:
        runs.write_status(run_dir, state=state, step=step + 1, pruned_step=step, last_eval=eval_)


async def test_study_screen_shows_trials_best_and_pruned_and_updates_live(tmp_path: Path) -> None:
    (tmp_path / "rows.jsonl").write_text('{"text": "x"}\n')
    (tmp_path / "experiments.toml").write_text(textwrap.dedent(TOML))
    trial(tmp_path, 0, 1e-3, 4, "finished", 500.0)
    trial(tmp_path, 1, 1e-5, 8, "pruned", 900.0, step=2)
    trial(tmp_path, 2, 3e-2, 8, "finished", 400.0)
    app = make_app(tmp_path / "experiments.toml")
    async with app.run_test(size=(140, 40)) as pilot:
        await ready(pilot)
        await app.main.run_action("select('lr-search')")
        await pilot.press("y")
        screen = await until(pilot, lambda: isinstance(app.screen, StudyScreen) and app.screen, what="study")
        table = screen.query_one(DataTable)
        await until(pilot, lambda: table.row_count == 3, what="three trials")
        rows = [[str(c) for c in table.get_row_at(i)] for i in range(3)]
        assert rows[1][0] == "lr-search#2" and rows[1][4] == "pruned at step 2"
        assert [r[0] for r in rows if "★" in r[-1]] == ["lr-search#3"]
        assert len(screen.query(StudyChart)) == 3  # best so far + one per param
        assert screen.study is not None and screen.study.best_so_far() == [(0, 500.0), (2, 400.0)]
        trial(tmp_path, 3, 1e-2, 4, "finished", 300.0)  # a trial ends: the screen follows
        await until(pilot, lambda: table.row_count == 4, timeout=10, what="the new trial")
        await until(pilot, lambda: "★" in str(table.get_row_at(3)[-1]), what="the new best")
        assert "★" not in str(table.get_row_at(2)[-1])
