"""The right-hand panel: one run's title, error banner, charts, progress and detail tabs.

The panel only displays; the main screen decides which run (and which
overlaid runs) it shows and hands them over with their metric series. The
main screen mounts it just after the first frame, so the experiments table
paints without waiting for the charts (textual-plotext) to load.
"""

from __future__ import annotations

from pathlib import Path

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.widgets import Log, Static, TabbedContent, TabPane

from workbench.runs import Run
from workbench.series import RunSeries
from workbench.widgets.charts import PALETTE, Curve, Legend, MetricChart
from workbench.widgets.details import DetailText, RunHistory, samples_text
from workbench.widgets.format import num, state_badge, stopping
from workbench.widgets.progress import Progress, RunProgress

TABS = ("config", "diff", "runs", "samples", "log")
LOG_IN_BANNER = 4  # last lines of train.log shown under a failed run's error
LOG_IN_SHORT_BANNER = 1  # on a short terminal: the last line, the error itself, is what fits


def banner_text(run: Run, log_tail: list[str], log_lines: int = LOG_IN_BANNER) -> Text | None:
    """Why a run failed or stopped, and what to do next; ``None`` when all is well."""
    st = run.status
    text = Text()
    state = st.get("state")
    if state == "failed":
        text.append(f"✗ failed: {st.get('error') or 'no error recorded'}", style="bold red")
        if st.get("hint"):
            text.append(f"\n  hint: {st['hint']}", style="red")
        tail = [ln for ln in log_tail
                if ln.strip() and not ln.startswith("Traceback (most recent call last)")][-log_lines:]
        for line in tail:
            text.append(f"\n  │ {line}", style="dim")
        if tail:
            text.append("\n  (the Log tab, 5, has more)", style="dim italic")
    elif state == "stopped" and st.get("cancelled"):
        text.append("■ taken out of the queue before it started", style="yellow")
    elif state == "stopped":
        text.append(f"■ stopped at step {st.get('step') or 0}: u resumes from its last checkpoint",
                    style="yellow")
    elif stopping(st):
        text.append("◐ stopping: the run saves a checkpoint, then exits", style="yellow")
    if st.get("job_detail") and state != "failed":  # a run handed to Slurm: its job and where it is
        text.append(("\n" if text else "") + f"⧗ {st['job_detail']}", style="cyan")
    if st.get("skipped_steps"):  # fp16: steps the grad scaler threw away (see train/loss_scale.py)
        text.append("\n" if text else "")
        text.append(f"⚠ fp16: {st['skipped_steps']} steps skipped on non-finite gradients "
                    f"(loss scale {st.get('loss_scale', 0):g})", style="yellow")
    for failure in st.get("plugin_failures") or []:
        if text:
            text.append("\n")
        text.append(f"⚠ plugin failed in the run: {failure}", style="yellow")
    return text or None


def progress_of(run: Run, series: RunSeries | None, now: float) -> Progress:
    """Step, ETA (from the recent step rate in the events), tokens/s and elapsed time."""
    st = run.status
    step = max(st.get("step") or 0, (series.step if series else None) or 0)
    total = st.get("max_steps")
    started = st.get("started") or st.get("launched")
    running = st.get("state") == "running"
    end = None if running else st.get("ended")
    elapsed = ((end or now) - started) if started and (running or end) else None
    rate = series.steps_per_second() if series else None
    eta = (total - step) / rate if (rate and total and running) else None
    tok = (series.last_train or {}).get("tokens_per_s") if series else None
    return Progress(step=step, max_steps=total, eta_s=eta, tokens_per_s=tok or st.get("tokens_per_s"),
                    elapsed_s=elapsed, state=st.get("state", ""))


class RunPanel(Vertical):
    """Title, banner, loss and perplexity charts, legend, progress, and the detail tabs."""

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

    def show_status(self, run: Run | None, series: RunSeries | None, *, now: float, experiment: str | None,
                    history: list[Run], pinned: Path | None, position: int | None,
                    log_tail: list[str], wide: bool) -> None:
        """Title, banner, progress and run history: what status.json says."""
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
        st = run.status
        title = Text(run.ref, style="bold")
        title.append(" · ")
        title.append_text(state_badge(st, position=position))
        if st.get("best_perplexity") is not None:
            title.append(f" · best ppl {num(st['best_perplexity'])}")
        if st.get("best_bits_per_byte") is not None and wide:
            title.append(f" · {num(st['best_bits_per_byte'], '.3f')} bits/B")
        if pinned is not None:
            title.append("  (older run: esc returns to the latest)", style="dim")
        self.query_one("#run-title", Static).update(title)
        short = self.screen.has_class("-short")
        self.set_banner(banner_text(run, log_tail, LOG_IN_SHORT_BANNER if short else LOG_IN_BANNER))
        self.query_one(RunProgress).set_progress(progress_of(run, series, now))
        self.query_one(RunHistory).set_runs(history, now, pinned)

    def show_curves(self, shown: list[tuple[Run, RunSeries | None]]) -> None:
        """Charts (one curve per run, first is the focused run), legend and latest samples."""
        with self.app.batch_update():  # both charts, legend and samples land in one frame
            self._show_curves(shown)

    def _show_curves(self, shown: list[tuple[Run, RunSeries | None]]) -> None:
        loss, ppl, labels = [], [], []
        for i, (run, series) in enumerate(shown):
            color = PALETTE[i % len(PALETTE)]
            loss.append(Curve(run.ref, color, list(series.loss) if series else []))
            ppl.append(Curve(run.ref, color, list(series.perplexity) if series else []))
            labels.append((run.ref, color))
        x_max = max((r.status.get("max_steps") or 0 for r, _ in shown), default=0) or None
        self.query_one("#loss-chart", MetricChart).set_curves(loss, x_max)
        self.query_one("#ppl-chart", MetricChart).set_curves(ppl, x_max)
        legend = self.query_one(Legend)
        legend.set_curves(labels)
        legend.set_class(len(labels) > 1, "-overlay")
        focused, series = shown[0] if shown else (None, None)
        samples = series.latest_samples() if series else []
        self.query_one("#samples-text", DetailText).update(
            samples_text(samples, focused.ref if focused else None))

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
