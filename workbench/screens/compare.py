"""The compare screen: one prompt, two to four panes (runs at a checkpoint, or untuned bases), streamed.

Generation happens in the App's :class:`~workbench.generate.client.GenerationClient`
(a worker process that keeps base models loaded between prompts); a thread
worker owned by this screen iterates the request and posts each reply as a
small :class:`~workbench.messages.Generated` message, which the pane it names
applies. Grid mode (``m``) lays out every checkpoint of the panes' runs for
one prompt; enter picks the focused cell's checkpoint for its run's panes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import Screen
from textual.widgets import Footer, Input, Label, Select, Static, TextArea
from textual.worker import Worker, WorkerState, get_current_worker

from workbench import comparisons, runs
from workbench.compare_model import base_label, base_spec, default_sampling
from workbench.generate import client as gen
from workbench.messages import Generated, GenerationEnded
from workbench.widgets.gen_pane import GenPane, PaneSource

if TYPE_CHECKING:
    from workbench.app import WorkbenchApp

MAX_PANES = 4
MIN_PANES = 2  # x refuses to go below: a comparison of one is not one
MAX_SAMPLES = 4
SETTINGS = ("temperature", "top_p", "max_new_tokens", "seed")
SETTING_LABELS = {"temperature": "temp", "top_p": "top-p", "max_new_tokens": "max", "seed": "seed"}


@dataclass
class Sampling:
    """The shared sampling settings, validated."""

    temperature: float
    top_p: float
    max_new_tokens: int
    seed: int

    def as_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in SETTINGS}


def parse_setting(key: str, text: str) -> float | int:
    """One setting from its box; ``ValueError`` with a short reason when it is not valid."""
    text = text.strip()
    if key in ("max_new_tokens", "seed"):
        value: float | int = int(text)
    else:
        value = float(text)
    if key == "temperature" and not value >= 0:
        raise ValueError("temperature must be 0 or more (0: greedy)")
    if key == "top_p" and not 0 < value <= 1:
        raise ValueError("top-p must be in (0, 1]")
    if key == "max_new_tokens" and not 0 < value <= 4096:
        raise ValueError("max new tokens must be 1..4096")
    return value


def first_line(text: str, width: int = 40) -> str:
    line = next((ln for ln in text.splitlines() if ln.strip()), text)
    return line if len(line) <= width else line[: width - 1] + "…"


class CompareScreen(Screen):
    """Panes side by side for one prompt; every pane streams as the worker generates."""

    BINDINGS = [
        Binding("g", "generate", "generate"),
        Binding("ctrl+g", "generate", "generate", show=False),
        Binding("r", "regenerate", "regenerate"),
        Binding("n", "samples", "samples"),
        Binding("a", "add_pane", "add pane"),
        Binding("x", "remove_pane", "remove pane"),
        Binding("k", "checkpoint", "checkpoint"),
        Binding("s", "save", "save"),
        Binding("l", "saved", "saved"),
        Binding("m", "grid", "grid mode"),
        Binding("enter", "pick", "pick checkpoint", show=False),
        Binding("escape", "back", "back"),
    ]

    def __init__(self, sources: list[PaneSource], prompts: list[str],
                 sampling: dict[str, Any] | None = None) -> None:
        super().__init__()
        self.initial = sources[:MAX_PANES]
        self.prompts = list(dict.fromkeys(prompts))
        sampling = sampling or default_sampling(None)
        self.sampling = {k: sampling[k] for k in SETTINGS}
        self.n = max(1, min(MAX_SAMPLES, int(sampling.get("num_samples") or 1)))
        self.grid_mode = False
        self.request_seq = 0  # not `batch`: Widget.batch() is Textual's
        self.generating = False
        self._ids = 0
        self._targets: dict[str, GenPane] = {}

    @property
    def wb(self) -> WorkbenchApp:
        return self.app  # type: ignore[return-value]

    # --- layout ---------------------------------------------------------------

    def compose(self) -> ComposeResult:
        yield Static(id="cmp-title")
        with Horizontal(id="cmp-top"):
            yield TextArea(self.prompts[0] if self.prompts else "", id="prompt", soft_wrap=True,
                           show_line_numbers=False)
            with Vertical(id="cmp-settings"):
                options = [(first_line(p, 30), i) for i, p in enumerate(self.prompts)]
                yield Select(options, prompt="preset prompt", id="preset", compact=True,
                             value=0 if options else Select.NULL)
                for pair in (SETTINGS[:2], SETTINGS[2:]):
                    with Horizontal(classes="cmp-row"):
                        for key in pair:
                            yield Label(SETTING_LABELS[key])
                            yield Input(str(self.sampling[key]), id=f"set-{key}", compact=True)
        yield Horizontal(id="cmp-panes")
        yield VerticalScroll(id="cmp-grid")
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self.query_one("#prompt").border_title = "Prompt"
        self.query_one("#cmp-settings").border_title = "Sampling"
        box = self.query_one("#cmp-panes", Horizontal)
        box.mount_all([self._new_pane(source) for source in self.initial])
        self.refresh_title()
        self.call_after_refresh(self._focus_panes)

    def _new_pane(self, source: PaneSource, prefix: str = "p") -> GenPane:
        self._ids += 1
        return GenPane(source, f"{prefix}{self._ids}")

    def _focus_panes(self) -> None:
        panes = self.panes()
        if panes:
            panes[0].focus()
        else:
            self.set_focus(None)  # keys stay the screen's, not typed into the prompt

    def panes(self) -> list[GenPane]:
        return list(self.query_one("#cmp-panes").query(GenPane))

    def grid_cells(self) -> list[GenPane]:
        return list(self.query_one("#cmp-grid").query(GenPane))

    def focused_pane(self, grid: bool = False) -> GenPane | None:
        shown = self.grid_cells() if grid else self.panes()
        focused = self.focused
        return focused if isinstance(focused, GenPane) and focused in shown else None

    def refresh_title(self) -> None:
        settings = self.read_settings(quiet=True)
        title = Text(" Compare", style="bold")
        where = "grid: runs × checkpoints" if self.grid_mode else f"{len(self.panes())} panes"
        title.append(f" — {where}")
        if settings is not None:
            title.append(f" · temp {settings.temperature:g} · top-p {settings.top_p:g} · "
                         f"max {settings.max_new_tokens} · seed {settings.seed}", style="dim")
        if not self.grid_mode:  # a grid cell holds one sample
            title.append(f" · {self.n} sample{'s' if self.n > 1 else ''}", style="dim")
        if self.generating:
            title.append(" · generating…", style="bold green")
        self.query_one("#cmp-title", Static).update(title)

    # --- settings -------------------------------------------------------------

    def read_settings(self, quiet: bool = False) -> Sampling | None:
        """The settings boxes, validated; ``None`` (and the box marked, and a notice) when one is bad."""
        values: dict[str, Any] = {}
        for key in SETTINGS:
            box = self.query_one(f"#set-{key}", Input)
            try:
                values[key] = parse_setting(key, box.value)
                box.remove_class("-invalid")
            except ValueError as exc:
                box.add_class("-invalid")
                if not quiet:
                    reason = str(exc) if "must" in str(exc) else f"{box.value!r} is not a number"
                    self.wb.notice(f"{SETTING_LABELS[key]}: {reason}", "error", title="sampling")
                return None
        return Sampling(**values)

    def set_settings(self, settings: dict[str, Any]) -> None:
        for key in SETTINGS:
            if key in settings:
                self.query_one(f"#set-{key}", Input).value = str(settings[key])

    def on_input_changed(self, event: Input.Changed) -> None:
        if event.input.id and event.input.id.startswith("set-"):
            self.refresh_title()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self._focus_panes()

    def on_select_changed(self, event: Select.Changed) -> None:
        if event.select.id == "preset" and isinstance(event.value, int):
            self.query_one("#prompt", TextArea).text = self.prompts[event.value]

    @property
    def prompt(self) -> str:
        return self.query_one("#prompt", TextArea).text

    # --- generating -------------------------------------------------------------

    def action_generate(self) -> None:
        """Generate the prompt in every pane (every grid cell in grid mode)."""
        settings = self.read_settings()
        if settings is None:
            return
        if not self.prompt.strip():
            self.wb.notice("type a prompt first (or pick a preset)", "warning")
            return
        targets = self.grid_cells() if self.grid_mode else self.panes()
        if not targets:
            self.wb.notice("no panes: press a to add one", "warning")
            return
        specs = []
        for view in targets:
            try:
                specs.append(view.source.spec(view.pane_id))
                view.clear("waiting")
            except gen.GenerationError as exc:
                view.clear()
                view.apply({"error": str(exc)})
        self.request_seq += 1
        self._targets = {v.pane_id: v for v in targets}
        if not specs:
            return
        self.generating = True
        self.refresh_title()
        n = 1 if self.grid_mode else self.n
        self._generate(self.request_seq, specs, self.prompt, settings.as_dict(), n)

    @work(thread=True, exclusive=True, exit_on_error=False, group="generate", name="generate")
    def _generate(self, seq: int, specs: list[dict[str, Any]], prompt: str, settings: dict[str, Any],
                  n: int) -> None:
        """Send one request and post its replies as they stream in."""
        worker = get_current_worker()
        request = self.wb.generation_client().generate(specs, prompt, n=n, **settings)
        for reply in request:
            if worker.is_cancelled:
                request.cancel()
                return
            self.post_message(Generated(seq, reply))
        self.post_message(GenerationEnded(seq))

    def on_generated(self, message: Generated) -> None:
        if message.seq != self.request_seq:
            return  # a request a newer generate replaced
        view = self._targets.get(str(message.reply.get("pane")))
        if view is not None:
            view.apply(message.reply)

    def on_generation_ended(self, message: GenerationEnded) -> None:
        if message.seq != self.request_seq:
            return
        self._end_generation(message.error)

    def _end_generation(self, error: str | None) -> None:
        self.generating = False
        for view in self._targets.values():
            if error is not None and not view.output.texts and view.output.error is None:
                view.apply({"error": error})
            view.finish()
        self.refresh_title()

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        """The client failing (cannot start the worker) ends up in the panes, not in a traceback."""
        if event.worker.group == "generate" and event.state == WorkerState.ERROR:
            self._end_generation(f"{type(event.worker.error).__name__}: {event.worker.error}")

    def action_regenerate(self) -> None:
        """New samples: the next seed, then generate."""
        settings = self.read_settings()
        if settings is None:
            return
        self.query_one("#set-seed", Input).value = str(settings.seed + 1)
        self.action_generate()

    def action_samples(self) -> None:
        """Samples per pane: 1, 2, 3, 4, then 1 again (seeded seed, seed+1, ...)."""
        self.n = self.n % MAX_SAMPLES + 1
        self.refresh_title()
        self.wb.notice(f"{self.n} sample{'s' if self.n > 1 else ''} per pane: g generates them")

    # --- choosing panes ------------------------------------------------------------

    def pane_choices(self) -> list[tuple[str, PaneSource]]:
        """Every run with an adapter (newest first), then the base model of each backend."""
        all_runs = [r for rs in self.wb.runs_by_exp.values() for r in rs]
        with_adapters = [r for r in all_runs if gen.checkpoints(r.path)]
        with_adapters.sort(key=lambda r: r.status.get("started") or r.status.get("created") or 0,
                           reverse=True)
        choices: list[tuple[str, PaneSource]] = []
        for run in with_adapters:
            source = PaneSource.for_run(run)
            choices.append((f"{source.label}  ({run.state})", source))
        bases: list[dict[str, Any]] = []
        for run in with_adapters:
            try:
                spec = base_spec(run.path)
            except gen.GenerationError:
                continue
            if spec not in bases:
                bases.append(spec)
        have = {b["backend"] for b in bases}
        registry = self.wb.registry
        plugins_dir = str(self.wb.plugins_dir) if self.wb.plugins_dir else None
        for name in sorted(getattr(registry, "backends", {}) or {}):
            if name not in have:
                bases.append({"backend": name, "model": self.wb.default_model(name),
                              "plugins_dir": plugins_dir, "precision": "auto"})
        for spec in bases:
            choices.append((f"base of {spec['backend']}: {base_label(spec)}", PaneSource(base=spec)))
        return choices

    def action_add_pane(self) -> None:
        from workbench.screens.pick import PickScreen

        if self.grid_mode:
            return
        if len(self.panes()) >= MAX_PANES:
            self.wb.notice(f"at most {MAX_PANES} panes: x removes the focused one", "warning")
            return

        def picked(source: PaneSource | None) -> None:
            if source is not None:
                self.add_pane(source)

        self.app.push_screen(PickScreen("Add a pane", self.pane_choices(),
                                        empty="no run has an adapter yet, and no backend is loaded"), picked)

    def add_pane(self, source: PaneSource) -> GenPane:
        view = self._new_pane(source)
        self.query_one("#cmp-panes").mount(view)
        view.focus()
        self.refresh_title()
        return view

    def action_remove_pane(self) -> None:
        if self.grid_mode:
            return
        panes = self.panes()
        view = self.focused_pane() or (panes[-1] if panes else None)
        if view is None:
            return
        if len(panes) <= MIN_PANES:
            self.wb.notice(f"a comparison keeps at least {MIN_PANES} panes: add one (a) before "
                           "removing this one", "warning")
            return
        index = panes.index(view)
        view.remove()
        rest = [p for p in panes if p is not view]
        if rest:
            rest[min(index, len(rest) - 1)].focus()
        else:
            self.set_focus(None)  # keys stay the screen's, not typed into the prompt
        self.call_after_refresh(self.refresh_title)

    def action_checkpoint(self) -> None:
        """Cycle the focused run pane's adapter: checkpoint-N by step, then final."""
        if self.grid_mode:
            return
        view = self.focused_pane() or next((p for p in self.panes() if p.source.run), None)
        if view is None or view.source.run is None:
            self.wb.notice("focus a run's pane first (a base model has no checkpoints)", "warning")
            return
        have = gen.checkpoints(view.source.run.path)
        if not have:
            self.wb.notice(f"{view.source.run.ref} has no adapter yet", "warning")
            return
        current = view.source.checkpoint
        nxt = have[(have.index(current) + 1) % len(have)] if current in have else have[-1]
        view.set_source(PaneSource(run=view.source.run, checkpoint=nxt))

    # --- saving and reopening --------------------------------------------------------

    def action_save(self) -> None:
        """Keep the prompt, settings and every pane's texts in ``RUNS/.comparisons``."""
        if self.generating:
            self.wb.notice("still generating: save once the panes are done", "warning")
            return
        settings = self.read_settings()
        if settings is None:
            return
        panes = [v.source.saved(v.output.texts, v.output.error) for v in self.panes()]
        comparison = comparisons.Comparison(self.prompt, {**settings.as_dict(), "n": self.n}, panes)
        try:
            path = comparisons.save(self.wb.root, comparison)
        except OSError as exc:
            self.wb.notice(f"cannot save: {exc}", "error")
            return
        self.wb.notice(f"saved {path}", title="comparison")

    def action_saved(self) -> None:
        from workbench.screens.pick import PickScreen

        saved = comparisons.list_saved(self.wb.root)
        choices = [(c.title, c) for c in saved]

        def picked(comparison: comparisons.Comparison | None) -> None:
            if comparison is not None:
                self.call_later(self.open_comparison, comparison)

        self.app.push_screen(PickScreen("Saved comparisons (newest first)", choices,
                                        empty="none saved yet: s saves the panes"), picked)

    async def open_comparison(self, comparison: comparisons.Comparison) -> None:
        """Put a saved comparison back: its prompt, settings and panes with their texts."""
        if self.grid_mode:
            self.action_grid()
        self.request_seq += 1  # whatever still streams belongs to the old panes
        self.generating = False
        self.query_one("#prompt", TextArea).text = comparison.prompt
        self.set_settings(comparison.settings)
        self.n = max(1, min(MAX_SAMPLES, int(comparison.settings.get("n") or 1)))
        box = self.query_one("#cmp-panes")
        await box.remove_children()  # before focusing: a pane being removed must not take the focus
        views = []
        for saved in comparison.panes:
            view = self._new_pane(self.source_of(saved))
            view.output.texts = list(saved.texts)
            view.output.error = saved.error
            views.append(view)
        await box.mount_all(views)
        self._focus_panes()
        self.refresh_title()

    def source_of(self, saved: comparisons.SavedPane) -> PaneSource:
        """The pane a saved one names: its run when the folder is still there, else just its label."""
        if saved.run_dir or saved.run:
            for ref in (saved.run_dir, saved.run):
                if not ref:
                    continue
                try:
                    run = runs.resolve(self.wb.root, ref)
                except runs.RunError:
                    continue
                return PaneSource(run=run, checkpoint=saved.checkpoint or gen.FINAL)
            return PaneSource(saved_label=f"{saved.label} (gone)")
        if saved.base:
            return PaneSource(base=dict(saved.base))
        return PaneSource(saved_label=saved.label)

    # --- grid mode ------------------------------------------------------------------

    def action_grid(self) -> None:
        """Toggle grid mode: a row per run of the panes, a cell per checkpoint of it."""
        grid = self.query_one("#cmp-grid", VerticalScroll)
        if self.grid_mode:
            self.grid_mode = False
            self.request_seq += 1
            self.generating = False
            grid.remove_children()
            self.set_class(False, "-grid")
            self._focus_panes()
            self.refresh_title()
            return
        seen: dict[Any, runs.Run] = {}
        for view in self.panes():
            if view.source.run is not None:
                seen.setdefault(view.source.run.path, view.source.run)
        if not seen:
            self.wb.notice("grid mode needs a run's pane (it shows the run's checkpoints)", "warning")
            return
        self.grid_mode = True
        rows = []
        for run in seen.values():
            cells = [self._new_pane(PaneSource(run=run, checkpoint=c), "g")
                     for c in gen.checkpoints(run.path)]
            rows.append(Horizontal(*cells, classes="grid-row"))
        grid.mount_all(rows)
        self.set_class(True, "-grid")
        self.call_after_refresh(lambda: self.grid_cells() and self.grid_cells()[0].focus())
        self.refresh_title()

    def action_pick(self) -> None:
        """In grid mode: the focused cell's checkpoint becomes its run's panes' checkpoint."""
        cell = self.focused_pane(grid=True) if self.grid_mode else None
        if cell is None or cell.source.run is None:
            return
        run, checkpoint = cell.source.run, cell.source.checkpoint
        for view in self.panes():
            if view.source.run is not None and view.source.run.path == run.path:
                view.set_source(PaneSource(run=run, checkpoint=checkpoint))
                if cell.output.texts:
                    view.output.texts = list(cell.output.texts)
                    view.redraw()
        self.action_grid()
        self.wb.notice(f"{run.ref}: {checkpoint} picked", title="grid")

    def action_back(self) -> None:
        """Leave a box for the panes; from the panes, leave grid mode or the screen."""
        if isinstance(self.focused, (Input, TextArea, Select)):
            self._focus_panes()
        elif self.grid_mode:
            self.action_grid()
        else:
            self.app.pop_screen()
