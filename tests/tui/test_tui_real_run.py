"""The whole path with the real trainer: launch the repo's ``tiny`` experiment from the TUI.

Slow (tens of seconds to a couple of minutes on a small CPU box): opt in with
``--runslow`` or ``WORKBENCH_SLOW=1``.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
from helpers import ready, until

from workbench import runs
from workbench.app import make_app

REPO = Path(__file__).parents[2]


@pytest.mark.slow
async def test_launch_tiny_for_real_and_watch_it_finish(tmp_path, monkeypatch) -> None:
    monkeypatch.delenv("FAKE_STEP_S", raising=False)
    root = tmp_path / "runs"
    app = make_app(REPO / "experiments.toml", runs_dir=root, poll_interval=0.25)
    try:
        async with app.run_test(size=(120, 40)) as pilot:
            await ready(pilot)
            assert app.main.query_one("#experiments").select("tiny")
            await pilot.press("r")
            await until(pilot, lambda: (root / "tiny" / "1" / runs.STATUS).exists(), what="run folder")
            await until(pilot, lambda: (app.runs_by_exp.get("tiny") or [None])[-1] is not None
                        and app.runs_by_exp["tiny"][-1].state in ("finished", "failed"),
                        timeout=400, what="tiny to end")
            status = runs.read_status(root / "tiny" / "1")
            assert status["state"] == "finished", status.get("error")
            loss = app.main.query_one("#loss-chart")
            await until(pilot, lambda: loss.curves and len(loss.curves[0].points) == 60, what="60 points")
            ppl = app.main.query_one("#ppl-chart")
            assert len(ppl.curves[0].points) >= 6
            assert app.views[root / "tiny" / "1"].samples()[1]
    finally:
        for run in runs.list_runs(root):
            pid = run.status.get("pgid") or run.status.get("pid")
            if run.state == "running" and isinstance(pid, int):
                os.killpg(pid, signal.SIGKILL)
