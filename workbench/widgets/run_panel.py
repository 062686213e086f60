"""The right-hand panel: one run's title, error banner, charts, progress and detail tabs.

The panel only displays; the main screen decides which run (and which
overlaid runs) it shows and hands them over with their read models
(:class:`~workbench.runview.RunView`). The charts draw the views' kept,
downsampled series (training loss, and the metric the user picks: ``m``
cycles through every metric the run declared or reported, then the learning
rate and the gradient norm logged with the train events), so a run of
200k steps draws as fast as a short one. The main screen mounts the panel
just after the first frame, so the experiments table paints without waiting
for the charts (textual-plotext) to load.
"""

from __future__ import annotations

from pathlib import Path

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.widgets import Log, Static, TabbedContent, TabPane

from workbench.metrics import BUILTIN, PERPLEXITY, Metric, undeclared
from workbench.runmeta import RunMeta
from workbench.runs import Run
from workbench.runview import GRAD_NORM, LOSS, LR, RunView
from workbench.series import ChartView
from workbench.widgets.charts import PALETTE, Curve, Legend, MetricChart
from workbench.widgets.details import DetailText, RunHistory, samples_text
from workbench.widgets.format import state_badge, stopping, typed
from workbench.widgets.progress import Progress, RunProgress

TABS = ("config", "diff", "runs", "samples", "log")
LOG_IN_BANNER = 4  # last lines of train.log shown under a failed run's error
LOG_IN_SHORT_BANNER = 1  # on a short terminal: the last line, the error itself, is what fits
DEFAULT_METRIC = PERPLEXITY.name  # the right chart's metric until the user picks another
ARROWS = {"lower": "↓", "higher": "↑"}
TRAIN_CHARTS = {LR: "learning rate", GRAD_NORM: "grad norm"}  # train-event series ``m`` also offers
IN_TITLE = {"perplexity": "ppl", "bits_per_byte": "bits/B"}  # the built-ins' words in the panel title


def banner_text(run: Run, view: RunView | None, log_tail: list[str], log_lines: int = LOG_IN_BANNER
                ) -> Text | None:
    """Why a run failed or stopped, what to do next, and its warnings; ``None`` when all is well."""
    st = view.status if view is not None else typed(run.status)
    text = Text()
    if st.state == "failed":
        text.append(f"✗ failed: {st.error or 'no error recorded'}", style="bold red")
        if st.hint:
            text.append(f"\n  hint: {st.hint}", style="red")
        tail = [ln for ln in log_tail
                if ln.strip() and not ln.startswith("Traceback (most recent call last)")][-log_lines:]
        for line in tail:
            text.append(f"\n  │ {line}", style="dim")
        if tail:
            text.append("\n  (the Log tab, 5, has more)", style="dim italic")
    elif st.state == "stopped" and st.cancelled:
        text.append("■ taken out of the queue before it started", style="yellow")
    elif st.state == "stopped":
        text.append(f"■ stopped at step {st.step or 0}: u resumes from its last checkpoint", style="yellow")
    elif stopping(st):
        text.append("◐ stopping: the run saves a checkpoint, then exits", style="yellow")
    job = st.raw.get("job_detail")
    if isinstance(job, str) and job and st.state != "failed":  # a run handed to Slurm: its job and where
        text.append(("\n" if text else "") + f"⧗ {job}", style="cyan")
    skipped = st.raw.get("skipped_steps")
    if isinstance(skipped, int) and skipped:  # fp16: steps the grad scaler threw away (train/loss_scale.py)
        scale = st.raw.get("loss_scale")
        text.append("\n" if text else "")
        text.append(f"⚠ fp16: {skipped} steps skipped on non-finite gradients "
                    f"(loss scale {scale if isinstance(scale, (int, float)) else 0:g})", style="yellow")
    warnings = view.warnings if view is not None else [f"plugin failed to load: {f}"
                                                       for f in st.plugin_failures]
    for warning in warnings:  # an evaluator that raised, a plugin that failed in the run
        if text:
            text.append("\n")
        text.append(f"⚠ {warning}", style="yellow")
    return text or None


def progress_of(run: Run, view: RunView | None, now: float) -> Progress:
    """Step, ETA (from the steps over the training time), tokens/s and elapsed time.

    Tokens/s is the recent rate (the last steps' window) while the run runs,
    else the whole-run average (what ``status`` and results say).
    """
    st = view.status if view is not None else typed(run.status)
    step = max(st.step or 0, (view.steps if view else None) or 0)
    total = (view.max_steps if view else None) or st.max_steps
    timings = view.timings if view is not None else None
    started = (timings.started if timings else None) or st.started or st.launched
    running = st.state == "running"
    end = None if running else st.ended
    elapsed = ((end or now) - started) if started and (running or end) else None
    trained = timings.train_seconds if timings else None
    rate = step / trained if (trained and step) else None
    eta = (total - step) / rate if (rate and total and running) else None
    tokens = (timings.tokens_per_s if timings else None) or st.tokens_per_s
    recent = timings.recent_tokens_per_s if (timings is not None and running) else None
    if running and trained is not None and timings is not None and timings.started is not None:
        trained = min(trained, now - timings.started)  # never more than the wall time so far
    return Progress(step=step, max_steps=total, eta_s=eta, tokens_per_s=recent or tokens, elapsed_s=elapsed,
                    state=st.state, train_s=trained, recent_rate=recent is not None)


def metric_of(views: list[RunView | None], name: str) -> Metric:
    """The declaration of ``name`` in the first view that has it (else the built-in, else undeclared)."""
    for v in views:
        found = v.metric(name) if v is not None else None
        if found is not None:
            return found.metric
    return BUILTIN.get(name) or undeclared(name)


def metric_names(view: RunView | None) -> list[str]:
    """What a run's right chart can show: declared metrics first, then any other reported, then the
    learning rate and grad norm when the train events logged them."""
    names = [m.name for m in view.metrics] if view is not None else []
    names = names or [DEFAULT_METRIC]
    return names + [n for n in TRAIN_CHARTS if view is not None and view.series(n)]


class RunPanel(Vertical):
    """Title, banner, loss and metric charts, legend, progress, and the detail tabs."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.metric = DEFAULT_METRIC

    def compose(self) -> ComposeResult:
        yield Static(id="run-title")
        yield Static(id="banner")
        with Horizontal(id="charts"):
            yield MetricChart("train loss", "loss", id="loss-chart")
            yield MetricChart("held-out perplexity", "perplexity", log_scale_ok=True, id="ppl-chart")
        yield Legend(id="legend")
        yield RunProgress(id="progress")
        with TabbedContent(id="tabs", initial="tab-config"):
            with TabPane("Config", id="tab-config"), VerticalScroll():
                yield DetailText(id="config-text")
            with TabPane("Diff", id="tab-diff"), VerticalScroll():
                yield DetailText(id="diff-text")
            with TabPane("Runs", id="tab-runs"):
                yield RunHistory(id="history")
            with TabPane("Samples", id="tab-samples"), VerticalScroll():
                yield DetailText(id="samples-text")
            with TabPane("Log", id="tab-log"):
                yield Log(id="log", highlight=False, max_lines=500)

    # --- what the main screen calls ---------------------------------------------------

    def show_status(self, run: Run | None, view: RunView | None, *, now: float, experiment: str | None,
                    history: list[Run], pinned: Path | None, position: int | None,
                    log_tail: list[str], wide: bool, meta: RunMeta | None = None) -> None:
        """Title, banner, progress and run history: what the run's view says."""
        if run is None:
            if experiment is None:
                self.query_one("#run-title", Static).update(Text("no experiment selected", style="dim"))
            else:
                self.query_one("#run-title", Static).update(Text.assemble(
                    (experiment, "bold"), (" · no runs yet: press r to start one", "dim")))
            self.set_banner(None)
            self.query_one(RunProgress).set_progress(Progress())
            self.query_one(RunHistory).set_runs([], now, None)
            return
        title = Text(run.ref, style="bold")
        title.append(" · ")
        title.append_text(state_badge(view.status if view is not None else run.status, position=position))
        if pinned is not None:  # before the numbers: a narrow title cuts from the right
            title.append("  (older run: esc returns to the latest)", style="dim")
        for result in (view.metrics if view is not None else [])[: 2 if wide else 1]:
            if result.best is not None:
                word = IN_TITLE.get(result.name, result.metric.title)
                title.append(f" · best {word} {result.metric.fmt(result.best)}")
        self.query_one("#run-title", Static).update(title)
        short = self.screen.has_class("-short")
        banner = banner_text(run, view, log_tail, LOG_IN_SHORT_BANNER if short else LOG_IN_BANNER)
        if meta is not None and (meta.note or meta.tags):
            line = Text.assemble(("✎ ", "cyan"), (meta.note, "italic"))
            line.append((" " if meta.note else "") + " ".join(f"#{t}" for t in meta.tags), style="cyan")
            banner = line if banner is None else Text.assemble(line, "\n", banner)
        self.set_banner(banner)
        self.query_one(RunProgress).set_progress(progress_of(run, view, now))
        self.query_one(RunHistory).set_runs(history, now, pinned)

    def show_curves(self, shown: list[tuple[Run, RunView | None]]) -> None:
        """Charts (one curve per run, first is the focused run), legend and latest samples."""
        with self.app.batch_update():  # both charts, legend and samples land in one frame
            self._show_curves(shown)

    def _show_curves(self, shown: list[tuple[Run, RunView | None]]) -> None:
        loss, chosen, labels = [], [], []
        for i, (run, view) in enumerate(shown):
            color = PALETTE[i % len(PALETTE)]
            loss.append(Curve(run.ref, color, view.series(LOSS) if view else []))
            chosen.append(Curve(run.ref, color, view.series(self.metric) if view else []))
            labels.append((run.ref, color))
        x_max = max((v.max_steps or 0 for _, v in shown if v is not None), default=0) or None
        self.query_one("#loss-chart", MetricChart).set_curves(loss, x_max)
        chart = self.query_one("#ppl-chart", MetricChart)
        if self.metric == DEFAULT_METRIC:  # the default view, as it always looked
            chart.set_title("held-out perplexity", "perplexity", log_scale_ok=True)
        elif self.metric in TRAIN_CHARTS:
            chart.set_title(TRAIN_CHARTS[self.metric], TRAIN_CHARTS[self.metric], log_scale_ok=False)
        else:
            metric = metric_of([v for _, v in shown], self.metric)
            arrow = ARROWS.get(metric.better or "", "")
            chart.set_title(f"{metric.title} {arrow}".rstrip(), metric.title, log_scale_ok=False)
        chart.set_curves(chosen, x_max)
        legend = self.query_one(Legend)
        legend.set_curves(labels)
        legend.set_class(len(labels) > 1, "-overlay")
        focused, view = shown[0] if shown else (None, None)
        samples = view.samples()[1] if view is not None else []
        self.query_one("#samples-text", DetailText).update(
            samples_text(samples, focused.ref if focused else None))

    def set_drawing(self, drawing: ChartView) -> None:
        """Smoothing (the loss chart), log scale and last-N-steps for both charts; redrawn at once."""
        for chart in self.query(MetricChart):
            chart.drawing = drawing
            chart.smooths = chart.id == "loss-chart"
            chart.replot()

    @property
    def metric_title(self) -> str:
        """The right chart's title (the metric the user picked)."""
        return self.query_one("#ppl-chart", MetricChart).title

    def show_details(self, config: Text, diff: Text) -> None:
        self.query_one("#config-text", DetailText).update(config)
        self.query_one("#diff-text", DetailText).update(diff)

    def set_banner(self, text: Text | None) -> None:
        banner = self.query_one("#banner", Static)
        banner.update(text or "")
        banner.set_class(bool(text), "-shown")

    def set_log(self, lines: list[str]) -> None:
        log = self.query_one("#log", Log)
        log.clear()
        if lines:
            log.write_lines(lines)

    def show_tab(self, name: str) -> None:
        self.query_one("#tabs", TabbedContent).active = f"tab-{name}"

    @property
    def active_tab(self) -> str:
        return (self.query_one("#tabs", TabbedContent).active or "tab-config").removeprefix("tab-")
