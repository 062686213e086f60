"""Declared metrics in the TUI: a plugin's metric gets a chart (m picks it) and a results column that
marks the best by its direction; an evaluator that raised is shown on the run panel."""

from __future__ import annotations

from helpers import T0, ready, screen_text, until

from workbench import runs
from workbench.screens.results import ResultsScreen
from workbench.widgets.charts import MetricChart

GREENTEXT = {"name": "greentext-format", "label": "greentext", "better": "higher", "format": ".2f"}
DECLARED = [{"name": "perplexity", "label": "held-out ppl", "better": "lower", "format": ".3f"}, GREENTEXT]


def with_plugin_metric(workspace, name: str, scores: list[float], error: str | None = None):
    """A finished run whose evaluator declared ``greentext-format`` and reported ``scores`` (one per eval)."""
    run_dir = workspace.make_run(name, "finished", steps=40, metrics=DECLARED)
    for i, score in enumerate(scores, start=1):
        fields = {"greentext-format": score}
        if error and i == len(scores):
            fields["errors"] = {"greentext": error}
        runs.append_event(run_dir, "eval", step=10 * i, time=T0 + 10 * i, **fields)
    return run_dir


async def test_plugin_metric_chart_and_evaluator_error_on_the_panel(workspace) -> None:
    with_plugin_metric(workspace, "alpha", [0.2, 0.5, 0.9], error="ValueError: no greentext")
    app = workspace.app()
    async with app.run_test(size=(120, 40)) as pilot:
        await ready(pilot)
        assert app.main.current == "alpha"
        chart = app.main.query_one("#ppl-chart", MetricChart)
        await until(pilot, lambda: chart.curves and chart.curves[0].points, what="the perplexity chart")
        assert chart.title == "held-out perplexity"  # the default view as before
        await until(pilot, lambda: "evaluator 'greentext' failed at step 30" in screen_text(app),
                    what="the evaluator's error on the panel")
        assert "ValueError" in screen_text(app)  # (the banner wraps at the panel's width)
        await pilot.press("m")  # perplexity -> the plugin's metric
        await until(pilot, lambda: chart.title == "greentext ↑", what="the metric chart")
        assert [p[1] for p in chart.curves[0].points] == [0.2, 0.5, 0.9]
        assert "greentext ↑" in screen_text(app)
        for _ in range(4):  # every metric (bits/byte), learning rate, grad norm, then around again
            await pilot.press("m")
        await until(pilot, lambda: chart.title == "held-out perplexity", what="back to perplexity")


async def test_results_screen_has_a_column_per_declared_metric(workspace) -> None:
    with_plugin_metric(workspace, "alpha", [0.3, 0.4])
    with_plugin_metric(workspace, "beta", [0.6, 0.8])
    app = workspace.app()
    async with app.run_test(size=(160, 30)) as pilot:
        await ready(pilot)
        await pilot.press("t")
        screen = await until(pilot, lambda: isinstance(app.screen, ResultsScreen) and app.screen,
                             what="results")
        assert "greentext-format" in screen.columns
        text = screen_text(app)
        assert "greentext ↑" in text and "held-out ppl ↓" in text
        beta = next(r for r in screen.rows if r.run.experiment == "beta")
        assert "greentext-format" in beta.best  # higher is better: 0.8 beats 0.4
        assert "★ 0.80" in text
        await pilot.press(str(screen.columns.index("greentext-format") + 1))  # sort by it: best first
        assert screen.sorted_runs() == ["beta#1", "alpha#1"]
