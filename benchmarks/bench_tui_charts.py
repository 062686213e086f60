"""How long the TUI takes to show the charts of a long run (200k train events by default).

Writes a run folder with ``--events`` train events (an eval every 1000 steps,
with a plugin's declared metric), opens the TUI headless on it and times
from the app's start until the loss and metric charts hold the run's last
step. Twice: cold (no summary beside the events yet: the first reader folds
them all) and warm (the summary is there, as it is for any run a reader or
the TUI has followed). Usage: ``python benchmarks/bench_tui_charts.py [--events N]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import sys
import tempfile
import time
from pathlib import Path

from workbench import summary
from workbench.app import make_app

T0 = 1_700_000_000.0
TOML = '[experiments.big]\nbackend = "tiny"\n'


def write_run(root: Path, events: int) -> Path:
    run_dir = root / "big" / "1"
    run_dir.mkdir(parents=True)
    with open(run_dir / "events.jsonl", "w") as fh:
        for s in range(1, events + 1):
            fh.write(json.dumps({"type": "train", "time": T0 + s * 0.1, "step": s,
                                 "loss": 3 / (1 + s / 1e4) + 0.05 * math.sin(s), "lr": 1e-4, "grad_norm": 1.0,
                                 "tokens": 512, "tokens_per_s": 5000.0}) + "\n")
            if s % 1000 == 0:
                fh.write(json.dumps({"type": "eval", "time": T0 + s * 0.1, "step": s, "eval_loss": 2.0,
                                     "perplexity": math.exp(2 - s / events), "greentext-format": s / events})
                         + "\n")
    metrics = [{"name": "perplexity", "label": "held-out ppl", "better": "lower", "format": ".3f"},
               {"name": "greentext-format", "label": "greentext", "better": "higher", "format": ".2f"}]
    (run_dir / "status.json").write_text(json.dumps({
        "state": "finished", "step": events, "max_steps": events, "started": T0, "ended": T0 + events * 0.1,
        "metrics": metrics}))
    (run_dir / "config.json").write_text(json.dumps({"experiment": {"name": "big", "backend": "tiny",
                                                                    "train": {"steps": events}}}))
    return run_dir


async def time_to_charts(project: Path, last_step: int) -> tuple[float, float]:
    """Seconds from the app's start to its run panel, and from the panel to the filled charts."""
    start = time.perf_counter()
    ready = None
    app = make_app(project / "experiments.toml", runs_dir=project / "runs")
    async with app.run_test(size=(160, 48)) as pilot:
        while True:
            if app.main.ready:
                ready = ready or time.perf_counter()
                loss = app.main.query_one("#loss-chart")
                ppl = app.main.query_one("#ppl-chart")
                if (loss.curves and loss.curves[0].points and loss.curves[0].points[-1][0] == last_step
                        and ppl.curves and ppl.curves[0].points):
                    return ready - start, time.perf_counter() - ready
            if time.perf_counter() - start > 120:
                raise SystemExit("the charts did not show within 120 s")
            await pilot.pause(0.01)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        project = Path(tmp)
        (project / "experiments.toml").write_text(TOML)
        run_dir = write_run(project / "runs", args.events)
        size = (run_dir / "events.jsonl").stat().st_size / 1e6
        print(f"{args.events} train events ({size:.0f} MB of events.jsonl)")
        for when in (f"cold (no {summary.SUMMARY} yet)", "warm (the summary kept beside the events)"):
            panel, charts = asyncio.run(time_to_charts(project, args.events))
            print(f"{when}: run panel after {panel:.2f} s, then the charts after {charts:.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
