"""The main screen: experiments on the left, the selected experiment's run on the right.

The screen holds only what the user chose (cursor, marks, overlay, a pinned
older run, the filter); every fact it shows comes from the App's state, which
the watcher keeps in step with the disk. :meth:`MainScreen.refresh_all` and
its parts redraw from that state.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import Screen
from textual.widget import MountError
from textual.widgets import DataTable, Footer, Input, Static

from workbench import config as config_mod
from workbench.runs import Run, read_config
from workbench.terminal import printable
from workbench.widgets.details import config_text, diff_text
from workbench.widgets.experiments import ExperimentRow, ExperimentsTable
from workbench.widgets.format import num, state_badge
from workbench.widgets.gpubar import GpuBar

if TYPE_CHECKING:
    from workbench.app import WorkbenchApp
    from workbench.widgets.run_panel import RunPanel

TABS = ("config", "diff", "runs", "samples", "log")  # keys 1-5


class MainScreen(Screen):
    """Experiments table, run panel, footer."""

    HORIZONTAL_BREAKPOINTS = [(0, "-narrow"), (110, "-wide")]
    VERTICAL_BREAKPOINTS = [(0, "-short"), (32, "-tall")]

    BINDINGS = [
        Binding("r", "launch", "run"),
        Binding("s", "stop", "stop"),
        Binding("u", "resume", "resume"),
        Binding("space", "mark", "mark", key_display="␣"),  # short: the footer fits 80 columns
        Binding("o", "overlay", "overlay"),
        Binding("c", "app.compare", "compare"),
        Binding("t", "app.results", "results"),
        Binding("slash", "filter", "filter", key_display="/", show=False),
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
        self._shown_run: Path | None = None
        self.ready = False

    @property
    def wb(self) -> WorkbenchApp:
        return self.app  # type: ignore[return-value]

    # --- layout ---------------------------------------------------------------

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
        self.query_one("#left").border_title = "Experiments"
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

        try:
            await self.query_one("#run-slot", Vertical).mount(RunPanel(id="run"))
        except MountError:  # the app closed before its first frame settled
            return
        self.call_after_refresh(self._panel_ready)

    def _panel_ready(self) -> None:
        self.ready = True
        self.refresh_all()

    @property
    def table(self) -> ExperimentsTable:
        return self.query_one(ExperimentsTable)

    @property
    def panel(self) -> RunPanel:
        return self.query_one("#run")  # type: ignore[return-value]

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
        self.query_one(GpuBar).set_gpus(self.wb.gpus)

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
            if self.filter_text and self.filter_text.lower() not in name.lower():
                continue
            exp = cfg.experiments.get(name) if cfg else None
            runs = wb.runs_by_exp.get(name, [])
            st = runs[-1].status if runs else None
            position = wb.queue_positions.get(runs[-1].path) if runs else None
            rows.append(ExperimentRow(
                name=name,
                backend=exp.backend if exp else "-",
                model=wb.model_label(exp) if exp else "-",
                r=str(exp.lora.r) if exp else "-",
                state=state_badge(st, position=position),
                state_short=state_badge(st, short=True, position=position),
                ppl=num((st or {}).get("best_perplexity")),
                bpb=num((st or {}).get("best_bits_per_byte"), ".3f"),
                in_config=exp is not None,
                marked=name in self.marks,
            ))
        return rows

    def refresh_table(self) -> None:
        table = self.table
        table.set_rows(self.experiment_rows())
        current = table.current
        if current != self.current:
            self.current = current
            self.pinned = None
            if self.ready:
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
            run, wb.series.get(run.path) if run else None, now=wb.clock(), experiment=self.current,
            history=wb.runs_by_exp.get(run.experiment, []) if run else [], pinned=self.pinned,
            position=wb.queue_positions.get(run.path) if run else None,
            log_tail=wb.log_tail(run.path) if run else [], wide=self.size.width >= 110,
        )

    def refresh_charts(self) -> None:
        run = self.focused_run()
        shown = ([run] if run else []) + self.overlay_runs(run)
        self.panel.show_curves([(r, self.wb.series.get(r.path)) for r in shown])

    def refresh_details(self) -> None:
        """Config and diff tabs for the current experiment."""
        wb = self.wb
        name = self.current
        cfg = wb.config
        exp = cfg.experiments.get(name) if (cfg and name) else None
        if name is None:
            self.panel.show_details(Text("no experiment selected", style="dim"), Text(""))
        elif exp is not None:
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
            if self.ready:
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
        """Mark (or unmark) the experiment under the cursor, then move down."""
        name = self.table.current
        if name is None:
            return
        self.marks.symmetric_difference_update({name})
        self.refresh_table()
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

    # --- called by the App when state changes ----------------------------------

    def runs_updated(self) -> None:
        self.refresh_title()
        self.refresh_table()
        self.refresh_run()

    def events_arrived(self, paths: set[Path]) -> None:
        run = self.focused_run()
        shown = {r.path for r in ([run] if run else []) + self.overlay_runs(run)}
        if shown & paths:
            self.refresh_status(run)
            self.refresh_charts()

    def log_arrived(self, lines: list[str]) -> None:
        self.panel.set_log(lines)
        run = self.focused_run()
        if run is not None and run.state == "failed":
            self.refresh_status(run)

    def gpus_arrived(self, gpus: list) -> None:
        self.query_one(GpuBar).set_gpus(gpus)

    def plugins_arrived(self) -> None:
        self.refresh_table()
        self.refresh_details()

    def on_unmount(self) -> None:
        self.ready = False

    def config_updated(self) -> None:
        self.refresh_title()
        self.refresh_config_error()
        self.refresh_table()
        self.refresh_run(details=True)
