"""The main screen: experiments on the left, the selected experiment's run on the right.

The screen holds only what the user chose (cursor, marks, overlay, a pinned
older run, the filter); every fact it shows comes from the App's state, which
the watcher keeps in step with the disk. Once its run panel is mounted the
screen subscribes to the App's signals (runs, events, log, config, plugins)
and redraws the parts each one touches; :meth:`MainScreen.refresh_all` redraws
everything.
"""

from __future__ import annotations

import dataclasses
import os
import shlex
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.text import Text
from textual import events
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import Screen
from textual.widget import MountError
from textual.widgets import DataTable, Footer, Input, Static

from workbench import config as config_mod
from workbench import runmeta
from workbench.runs import Run, RunError, read_config
from workbench.runview import BestResult, experiment_results
from workbench.series import ChartView
from workbench.terminal import printable
from workbench.widgets.details import config_text, diff_text
from workbench.widgets.experiments import ExperimentRow, ExperimentsTable
from workbench.widgets.format import num, state_badge, typed
from workbench.widgets.gpubar import GpuBar

if TYPE_CHECKING:
    from workbench.app import WorkbenchApp
    from workbench.plugins import Registry
    from workbench.widgets.run_panel import RunPanel

TABS = ("config", "diff", "runs", "samples", "log")  # keys 1-5
SMOOTHING = (0.0, 0.6, 0.9, 0.99)  # w cycles the loss chart's EMA weight
LAST_STEPS = (0, 100, 1000)  # z cycles the charts' range: all steps, the last 100, the last 1000


def best_cell(history: list[Run], found: BestResult | None, spec: str) -> Text:
    """An experiment's best result over its runs; an older run's carries its number (``263.64 #2``)."""
    if found is None or not history:
        return Text("-", justify="right")
    text = Text(num(found.value, spec), justify="right")
    if found.run.path != history[-1].path:
        text.append(f" #{found.run.run_id}", style="dim")
    return text


def editor_command(path: Path, line: int | None) -> list[str]:
    """``$VISUAL`` (else ``$EDITOR``, else ``vi``) on ``path``, at ``line`` (``+LINE``, which vi, vim,
    nano, emacs and micro understand)."""
    editor = os.environ.get("VISUAL") or os.environ.get("EDITOR") or "vi"
    return [*shlex.split(editor), *([f"+{line}"] if line else []), str(path)]


class MainScreen(Screen):
    """Experiments table, run panel, footer."""

    HORIZONTAL_BREAKPOINTS = [(0, "-narrow"), (110, "-wide"), (150, "-roomy")]
    VERTICAL_BREAKPOINTS = [(0, "-short"), (32, "-tall")]

    BINDINGS = [
        Binding("r", "launch", "run"),
        Binding("s", "stop", "stop"),
        Binding("u", "resume", "resume"),
        Binding("space", "mark", "mark", key_display="␣"),  # short: the footer fits 80 columns
        Binding("o", "overlay", "overlay", show=False),  # marking says so: the footer fits 80 columns
        Binding("m", "metric", "metric", show=False),
        Binding("c", "compare", "compare"),
        Binding("t", "app.results", "results"),
        Binding("y", "app.study", "study", show=False),  # a search experiment's study (screens/study.py)
        Binding("slash", "filter", "filter", key_display="/", show=False),
        Binding("n", "note", "note", show=False),
        Binding("T", "tag", "tags", show=False),
        Binding("A", "archive", "archive", show=False),
        Binding("D", "delete", "delete", show=False),
        Binding("e", "edit", "edit", show=False),
        Binding("w", "smoothing", "smoothing", show=False,
                tooltip="cycle the loss chart's EMA weight: off, 0.6, 0.9, 0.99 (the raw curve stays grey)"),
        Binding("l", "log_scale", "log scale", show=False, tooltip="toggle a log y scale on both charts"),
        Binding("z", "last_steps", "last N steps", show=False,
                tooltip="cycle the charts' x range: every step, the last 100, the last 1000"),
        Binding("escape", "escape", "back", show=False),
        *(Binding(str(i), f"tab('{name}')", f"{name} tab", show=False)
          for i, name in enumerate(TABS, start=1)),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.current: str | None = None
        self.pinned: Path | None = None
        self.marks: set[str] = set()
        self.overlay = False
        self.filter_text = ""
        self.drawing = ChartView()  # smoothing, log scale, last N steps (keys w, l, z)
        self._shown_run: Path | None = None
        self._panel: RunPanel | None = None  # mounted just after the first frame

    @property
    def wb(self) -> WorkbenchApp:
        return self.app  # type: ignore[return-value]

    # --- layout ---------------------------------------------------------------

    def on_resize(self, event: events.Resize) -> None:
        # Narrow: the footer drops the command palette's entry (ctrl+p still opens it; ? lists it),
        # so every key the screen has fits in 80 columns and nothing is cut mid-word.
        self.query_one(Footer).show_command_palette = event.size.width >= 110

    def compose(self) -> ComposeResult:
        with Horizontal(id="topbar"):
            yield Static(id="app-title")
            yield GpuBar(id="gpus")
        with Horizontal(id="body"):
            with Vertical(id="left"):
                yield Input(placeholder="filter experiments (esc clears)", id="filter")
                yield Static(id="config-error")
                yield ExperimentsTable(id="experiments")
            yield Vertical(id="run-slot")
        yield Footer(compact=True)

    def on_mount(self) -> None:
        left = self.query_one("#left")
        left.border_title = "Experiments"
        self.query_one(ExperimentsTable).focus()
        # The experiments are in the very first frame; the run panel's tabs compose their
        # panes a moment after this screen mounts, so the panel is drawn once they exist.
        self.refresh_title()
        self.refresh_config_error()
        self.refresh_table()
        latest = self.most_recent_experiment()
        if latest is not None:
            self.table.select(latest)  # re-attaching: start where the action is
        self.call_after_refresh(self._first_draw)

    async def _first_draw(self) -> None:
        from workbench.widgets.run_panel import RunPanel  # charts load after the first frame

        panel = RunPanel(id="run")
        try:
            await self.query_one("#run-slot", Vertical).mount(panel)
        except MountError:  # the app closed before its first frame settled
            return
        self.call_after_refresh(self._panel_ready, panel)

    def _panel_ready(self, panel: RunPanel) -> None:
        """Draw everything once, then follow the App's changes."""
        self._panel = panel
        wb = self.wb
        wb.config_signal.subscribe(self, self.on_config_signal)
        wb.runs_signal.subscribe(self, self.on_runs_signal)
        wb.views_signal.subscribe(self, self.on_views_signal)
        wb.log_signal.subscribe(self, self.on_log_signal)
        wb.plugins_signal.subscribe(self, self.on_plugins_signal)
        self.refresh_all()
        self.set_interval(1.0, self.tick)

    def tick(self) -> None:
        """Once a second: a running run's wall time moves on even when no event arrives."""
        run = self.focused_run()
        if run is not None and run.state == "running":
            self.refresh_status(run)

    @property
    def ready(self) -> bool:
        """The run panel is drawn and the screen follows the App's changes."""
        return self._panel is not None

    @property
    def table(self) -> ExperimentsTable:
        return self.query_one(ExperimentsTable)

    @property
    def panel(self) -> RunPanel:
        if self._panel is None:
            raise RuntimeError("the run panel is mounted just after the first frame")
        return self._panel

    # --- what is shown --------------------------------------------------------

    def focused_run(self) -> Run | None:
        """The run the panel shows: a pinned one, else the current experiment's latest."""
        runs = self.wb.runs_by_exp.get(self.current or "", [])
        if self.pinned is not None:
            for run in runs:
                if run.path == self.pinned:
                    return run
            self.pinned = None
        return runs[-1] if runs else None

    def most_recent_experiment(self) -> str | None:
        """The experiment whose running run started last, else whose run is newest (``None``: no runs)."""

        def started(run: Run) -> float:
            st = run.status
            return st.get("started") or st.get("launched") or st.get("created") or 0.0

        latest = [runs[-1] for runs in self.wb.runs_by_exp.values() if runs]
        if not latest:
            return None
        running = [r for r in latest if r.state == "running"]
        return max(running or latest, key=started).experiment

    def overlay_runs(self, focused: Run | None) -> list[Run]:
        """Latest runs of the marked experiments (when overlay is on), besides the focused one."""
        if not self.overlay:
            return []
        names = [n for n in self.table.names() if n in self.marks] or sorted(self.marks)
        out = []
        for name in names:
            runs = self.wb.runs_by_exp.get(name, [])
            if runs and (focused is None or runs[-1].path != focused.path):
                out.append(runs[-1])
        return out

    # --- redraw ---------------------------------------------------------------

    def refresh_all(self) -> None:
        self.refresh_title()
        self.refresh_config_error()
        self.refresh_table()
        self.refresh_run(details=True)

    def refresh_title(self) -> None:
        wb = self.wb
        title = Text(" workbench", style="bold")
        title.append(f" — {wb.config_path.name}")
        if wb.config is not None and self.size.width >= 110:
            title.append(f" · {len(wb.config.experiments)} experiments", style="dim")
        states = [r.state for runs in wb.runs_by_exp.values() for r in runs]
        if states.count("running"):
            title.append(f" · {states.count('running')} running", style="green")
        if states.count("queued"):
            title.append(f" · {states.count('queued')} queued", style="dim")
            if wb.queue_stalled:
                title.append(f" · stalled: {printable(wb.queue_stalled)}", style="bold red")
        self.query_one("#app-title", Static).update(title)

    def refresh_config_error(self) -> None:
        box = self.query_one("#config-error", Static)
        error = self.wb.config_error
        if error:
            text = Text("✗ cannot read the experiments file\n", style="bold red")
            text.append(error, style="red")
            text.append("\n\nfix it and save: this view reloads by itself", style="dim")
            box.update(text)
        box.set_class(bool(error), "-shown")

    def experiment_rows(self) -> list[ExperimentRow]:
        wb = self.wb
        cfg = wb.config
        names = list(cfg.experiments) if cfg else []
        names += sorted(n for n in wb.runs_by_exp if n not in names)
        rows = []
        for name in names:
            if self.filter_text and not self._matches(name, self.filter_text.lower()):
                continue
            exp = cfg.experiments.get(name) if cfg else None
            runs = wb.runs_by_exp.get(name, [])
            view = wb.views.get(runs[-1].path) if runs else None
            # the run's view once the watcher has read it; until then its status, typed
            st = view.status if view is not None else (typed(runs[-1].status) if runs else None)
            # the best held-out result of any of its runs: a stopped latest run hides nothing
            results = experiment_results(runs, view)
            position = wb.queue_positions.get(runs[-1].path) if runs else None
            rows.append(ExperimentRow(
                name=name,
                backend=exp.backend if exp else "-",
                model=wb.model_label(exp) if exp else "-",
                r=str(exp.lora.r) if exp else "-",
                state=state_badge(st, position=position),
                state_short=state_badge(st, short=True, position=position),
                ppl=best_cell(runs, results.get("perplexity"), ".2f"),
                bpb=best_cell(runs, results.get("bits_per_byte"), ".3f"),
                in_config=exp is not None,
                marked=name in self.marks,
            ))
        return rows

    def _matches(self, name: str, text: str) -> bool:
        """The filter keeps an experiment whose name, or a run's note or tag, holds ``text``."""
        return text in name.lower() or any(runmeta.read_meta(r.path).matches(text)
                                           for r in self.wb.runs_by_exp.get(name, []))

    def refresh_table(self) -> None:
        table = self.table
        table.set_rows(self.experiment_rows())
        self.query_one("#left").border_subtitle = ("ppl, bits/B: best of all runs"
                                                   if "ppl" in table.columns_shown else "")
        current = table.current
        if current != self.current:
            self.current = current
            self.pinned = None
            if self._panel is not None:
                self.refresh_run(details=True)

    def refresh_run(self, details: bool = False) -> None:
        """Re-aim the watcher at what is shown, then redraw the whole panel."""
        run = self.focused_run()
        overlay = self.overlay_runs(run)
        paths = [r.path for r in ([run] if run else []) + overlay]
        self.wb.follow(paths, run.path if run else None)
        if run is None or run.path != self._shown_run:
            self.panel.set_log([])
        self._shown_run = run.path if run else None
        self.refresh_status(run)
        self.refresh_charts()
        if details:
            self.refresh_details()

    def refresh_status(self, run: Run | None) -> None:
        """Title, banner, progress and history: what status.json says."""
        wb = self.wb
        self.panel.show_status(
            run, wb.views.get(run.path) if run else None, now=wb.clock(), experiment=self.current,
            history=wb.runs_by_exp.get(run.experiment, []) if run else [], pinned=self.pinned,
            position=wb.queue_positions.get(run.path) if run else None,
            log_tail=wb.log_tail(run.path) if run else [], wide=self.size.width >= 110,
            meta=runmeta.read_meta(run.path) if run else None,
        )

    def refresh_charts(self) -> None:
        run = self.focused_run()
        shown = ([run] if run else []) + self.overlay_runs(run)
        self.panel.show_curves([(r, self.wb.views.get(r.path)) for r in shown])

    def refresh_details(self) -> None:
        """Config and diff tabs for the current experiment."""
        wb = self.wb
        name = self.current
        cfg = wb.config
        exp = cfg.experiments.get(name) if (cfg and name) else None
        if name is None:
            self.panel.show_details(Text("no experiment selected", style="dim"), Text(""))
        elif cfg is not None and exp is not None:
            parent_name = cfg.parent_name(name)
            parent = cfg.experiments.get(parent_name) if parent_name else None
            changes = config_mod.diff(parent, exp) if parent is not None else None
            base = cfg.parents.get(name)
            matrix_base = base if base and base not in cfg.experiments else None
            self.panel.show_details(
                config_text(exp.model_dump(mode="json"), wb.default_model(exp.backend)),
                diff_text(name, parent_name, changes, matrix_base))
        else:
            runs = wb.runs_by_exp.get(name, [])
            saved: dict[str, Any] = read_config(runs[-1].path).get("experiment", {}) if runs else {}
            # a file that fails to parse says nothing about which experiments it holds
            where = (f"{wb.config_path.name} cannot be read" if cfg is None
                     else f"{name} is not in {wb.config_path.name}")
            note = f"{where}; this is the config {name}'s latest run used."
            self.panel.show_details(config_text(saved, note=note) if saved else Text(note, style="dim"),
                                    Text(f"{where}.", style="dim"))

    # --- events from the widgets ----------------------------------------------

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        if not isinstance(event.data_table, ExperimentsTable):
            return
        name = event.row_key.value
        if name != self.current:
            self.current = name
            self.pinned = None
            if self._panel is not None:
                self.refresh_run(details=True)

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        if event.data_table.id == "history" and event.row_key.value:
            path = Path(event.row_key.value)
            runs = self.wb.runs_by_exp.get(self.current or "", [])
            self.pinned = None if runs and runs[-1].path == path else path
            self.refresh_run()

    def on_input_changed(self, event: Input.Changed) -> None:
        if event.input.id == "filter":
            self.filter_text = event.value.strip()
            self.refresh_table()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        if event.input.id == "filter":
            self.table.focus()

    # --- actions --------------------------------------------------------------

    def action_launch(self) -> None:
        """Start the marked experiments, or the one under the cursor."""
        cfg = self.wb.config
        if cfg is None:
            self.wb.notice("fix the experiments file first (its error is on the left)", "error")
            return
        names = [n for n in cfg.experiments if n in self.marks]
        if not names:
            if self.current is None or self.current not in cfg.experiments:
                self.wb.notice(f"{self.current} is not in {self.wb.config_path.name}: nothing to start",
                               "warning")
                return
            names = [self.current]
        self.wb.start_runs(names)

    def _run_in(self, states: tuple[str, ...], refusal: str):
        """The shown run if its state is one of ``states``; else a warning notice and None."""
        run = self.focused_run()
        if run is None or run.state not in states:
            what = f"{run.ref} is {run.state}" if run else f"{self.current or 'nothing'} has no run"
            self.wb.notice(f"{what}: {refusal}", "warning")
            return None
        return run

    def action_stop(self) -> None:
        """Stop the shown run (or take it out of the queue), after asking."""
        from workbench.screens.confirm import ConfirmScreen

        run = self._run_in(("running", "queued"), "nothing to stop")
        if run is None:
            return

        def answered(yes: bool | None) -> None:
            if yes:
                self.wb.stop_run(run)

        if run.state == "queued":
            question = ConfirmScreen(f"Take {run.ref} out of the queue?",
                                     "It never starts; it shows as cancelled.", action="Cancel run")
        else:
            question = ConfirmScreen(f"Stop {run.ref}?",
                                     "It saves a checkpoint and exits; u resumes it later from there.",
                                     action="Stop")
        self.app.push_screen(question, answered)

    def action_resume(self) -> None:
        """Resume the shown run (stopped or failed) from its last checkpoint."""
        run = self._run_in(("stopped", "failed"), "only a stopped or failed run can be resumed")
        if run is None:
            return
        self.wb.resume_run(run)

    def action_mark(self) -> None:
        """Mark (or unmark) the experiment under the cursor, then move down (to mark a run of rows)."""
        name = self.table.current
        if name is None:
            return
        self.marks.symmetric_difference_update({name})
        self.refresh_table()
        if self.marks:
            count = len(self.marks)
            self.wb.notice(f"{count} marked: r runs, o overlays, c compares {'them' if count > 1 else 'it'}",
                           timeout=3)
        if self.table.cursor_row < self.table.row_count - 1:
            self.table.move_cursor(row=self.table.cursor_row + 1, animate=False)
        if self.overlay:
            self.refresh_run()

    def action_overlay(self) -> None:
        """Overlay the latest runs of the marked experiments on the charts (toggle)."""
        if not self.overlay and not self.marks:
            self.wb.notice("mark experiments with space first; o then overlays their latest runs",
                           "warning")
            return
        self.overlay = not self.overlay
        self.refresh_run()
        self.wb.notice("overlay on: marked runs drawn together" if self.overlay else "overlay off")

    def action_metric(self) -> None:
        """Cycle the right chart through the shown run's metrics (declared ones first)."""
        from workbench.widgets.run_panel import metric_names

        run = self.focused_run()
        names = metric_names(self.wb.views.get(run.path) if run else None)
        panel = self.panel
        panel.metric = names[(names.index(panel.metric) + 1) % len(names)] if panel.metric in names \
            else names[0]
        self.refresh_charts()
        self.wb.notice(f"chart: {panel.metric_title}"
                       + ("" if len(names) > 1 else " (the run's only metric)"))

    def _draw(self, **change: Any) -> ChartView:
        self.drawing = dataclasses.replace(self.drawing, **change)
        self.panel.set_drawing(self.drawing)
        return self.drawing

    def action_smoothing(self) -> None:
        """Cycle the loss chart's EMA smoothing weight: off, 0.6, 0.9, 0.99."""
        weights = SMOOTHING
        now = self._draw(smoothing=weights[(weights.index(self.drawing.smoothing) + 1) % len(weights)]
                         if self.drawing.smoothing in weights else weights[1])
        self.wb.notice(f"loss smoothing: EMA weight {now.smoothing:g}" if now.smoothing else "smoothing off")

    def action_log_scale(self) -> None:
        """Toggle a log y scale on both charts (positive values only)."""
        now = self._draw(log=not self.drawing.log)
        self.wb.notice("log scale on" if now.log else "log scale off (perplexity still goes log when it "
                       "spans a wide range)")

    def action_last_steps(self) -> None:
        """Cycle the charts' x range: every step, the last 100, the last 1000."""
        steps = LAST_STEPS
        now = self._draw(last=steps[(steps.index(self.drawing.last) + 1) % len(steps)]
                         if self.drawing.last in steps else steps[1])
        self.wb.notice(f"charts: the last {now.last} steps" if now.last else "charts: every step")

    def action_compare(self) -> None:
        """Compare the marked experiments' latest runs (else the selected one's, with its base)."""
        names = [n for n in self.table.names() if n in self.marks]
        if not names and self.current:
            names = [self.current]
        self.wb.open_compare(names, self.current)

    def _run_or_notice(self) -> Run | None:
        run = self.focused_run()
        if run is None:
            self.wb.notice(f"{self.current or 'nothing'} has no run", "warning")
        return run

    def action_note(self) -> None:
        """Write the shown run's note (kept in its folder; an empty note clears it)."""
        from workbench.screens.prompt import PromptScreen

        run = self._run_or_notice()
        if run is None:
            return

        def answered(text: str | None) -> None:
            if text is not None:
                runmeta.set_note(run.path, text)
                self.refresh_status(run)
                self.wb.notice(f"{run.ref}: note saved" if text.strip() else f"{run.ref}: note cleared")

        self.app.push_screen(PromptScreen(f"Note on {run.ref}", runmeta.read_meta(run.path).note,
                                          "enter saves (empty clears), esc cancels"), answered)

    def action_tag(self) -> None:
        """Set the shown run's tags: words separated by spaces."""
        from workbench.screens.prompt import PromptScreen

        run = self._run_or_notice()
        if run is None:
            return
        old = runmeta.read_meta(run.path).tags

        def answered(text: str | None) -> None:
            if text is not None:
                new = text.split()
                runmeta.set_tags(run.path, new, [t for t in old if t not in new])
                self.refresh_status(run)
                self.wb.notice(f"{run.ref}: tags {' '.join(new) or '(none)'}")

        self.app.push_screen(PromptScreen(f"Tags of {run.ref}", " ".join(old),
                                          "words separated by spaces; / filters by them"), answered)

    def _manage(self, verb: str, detail: str, do: Any) -> None:
        from workbench.screens.confirm import ConfirmScreen

        run = self._run_or_notice()
        if run is None:
            return
        if run.state in runmeta.BUSY:
            self.wb.notice(f"{run.ref} is {run.state}: stop it first (s)", "warning")
            return

        def answered(yes: bool | None) -> None:
            if not yes:
                return
            try:
                do(run)
            except (OSError, RunError) as exc:
                self.wb.notice(f"{verb} {run.ref}: {exc}", "error")
                return
            self.pinned = None
            self.wb.notice(f"{verb}d {run.ref}")
            self.wb.kick()

        word = verb.capitalize()
        self.app.push_screen(ConfirmScreen(f"{word} {run.ref}?", detail, action=word), answered)

    def action_archive(self) -> None:
        """Archive the shown run: hidden from the table and results, kept under runs/EXP/.archive/."""
        self._manage("archive", "It moves to runs/<experiment>/.archive/ (hidden, not lost; "
                     "move it back to restore it).", runmeta.archive)

    def action_delete(self) -> None:
        """Delete the shown run's folder for good."""
        self._manage("delete", "Its folder, checkpoints and events are removed for good.", runmeta.delete)

    def action_edit(self) -> None:
        """Open the experiments file in $VISUAL / $EDITOR at the selected experiment's line."""
        from textual.app import SuspendNotSupported

        from workbench.tomlpos import locate

        path = self.wb.config_path
        cfg = self.wb.config
        name = self.current
        base = cfg.parents.get(name) if (cfg is not None and name) else None
        entry = base if base and cfg is not None and base not in cfg.experiments else name  # a matrix entry
        try:
            line = locate(path.read_text(), f"experiments.{entry}") if entry else None
        except OSError:
            line = None
        command = editor_command(path, line)
        try:
            with self.app.suspend():
                subprocess.run(command, check=False)
        except SuspendNotSupported:
            self.wb.notice(f"this terminal cannot hand over to an editor: open {path}"
                           + (f":{line}" if line else "") + " yourself", "warning")
        except OSError as exc:
            self.wb.notice(f"cannot start the editor {command[0]!r}: {exc.strerror or exc} "
                           "(set $EDITOR)", "error")
        self.wb.kick()  # the table follows the saved file
        if self._panel is not None:
            self.refresh_run(details=True)  # whatever arrived while the editor had the terminal

    def action_filter(self) -> None:
        box = self.query_one("#filter", Input)
        box.add_class("-shown")
        box.focus()

    def action_escape(self) -> None:
        box = self.query_one("#filter", Input)
        if box.has_focus or self.filter_text:
            box.value = ""
            box.remove_class("-shown")
            self.table.focus()
        elif self.pinned is not None:
            self.pinned = None
            self.refresh_run()

    def action_tab(self, name: str) -> None:
        self.panel.show_tab(name)

    def action_select(self, name: str) -> None:
        """Put the cursor on experiment ``name`` (the palette's "Show NAME")."""
        if not self.table.select(name):
            self.wb.notice(f"{name} is not in the table (is a filter on?)", "warning")

    # --- the App's signals (subscribed once the run panel is mounted) -----------------

    def on_runs_signal(self, _: None) -> None:
        self.refresh_title()
        self.refresh_table()
        self.refresh_run()

    def on_views_signal(self, paths: set[Path]) -> None:
        if paths & self.wb.latest_paths():
            self.refresh_table()
        run = self.focused_run()
        shown = {r.path for r in ([run] if run else []) + self.overlay_runs(run)}
        if shown & paths:
            self.refresh_status(run)
            self.refresh_charts()

    def on_log_signal(self, lines: list[str]) -> None:
        self.panel.set_log(lines)
        run = self.focused_run()
        if run is not None and run.state == "failed":
            self.refresh_status(run)

    def on_plugins_signal(self, _: Registry) -> None:
        self.refresh_table()
        self.refresh_details()

    def on_config_signal(self, _: None) -> None:
        self.refresh_title()
        self.refresh_config_error()
        self.refresh_table()
        self.refresh_run(details=True)
