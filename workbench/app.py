"""The workbench TUI: experiments, live runs, launch and control, over SSH.

The App owns the state every screen reads (config, runs, metric series,
GPUs, plugins) and the long-lived background workers that keep it true:
a watcher thread polling the runs folder and the experiments file
(:mod:`workbench.watch`), a GPU poller, and short workers for launching,
stopping and resuming. Workers post typed Messages (:mod:`workbench.messages`);
only the UI thread touches widgets. The TUI never trains and never imports
torch: runs are detached processes (:mod:`workbench.launch`) that outlive it.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from textual import work
from textual.app import App, ScreenStackError
from textual.binding import Binding
from textual.css.query import NoMatches
from textual.worker import Worker, WorkerState, get_current_worker

from workbench import config as config_mod
from workbench import gpus as gpus_mod
from workbench import launch, queue
from workbench.config import Config, ConfigError
from workbench.messages import (
    ConfigChanged,
    GpusChanged,
    LogChanged,
    Notice,
    PluginsLoaded,
    ReportWritten,
    RunEvents,
    RunsChanged,
)
from workbench.runs import Run, RunError, read_config
from workbench.screens.main import MainScreen
from workbench.series import RunSeries
from workbench.watch import Watcher, load_config, stamp

PLUGIN_WAIT_S = 60.0


def _palette_provider() -> type:
    """The command palette's provider, imported when the palette first opens."""
    from workbench.commands import WorkbenchCommands

    return WorkbenchCommands


class WorkbenchApp(App[int]):
    """Experiments from ``experiments.toml`` and their runs, live."""

    CSS_PATH = "app.tcss"
    TITLE = "workbench"
    COMMANDS = App.COMMANDS | {_palette_provider}
    BINDINGS = [
        Binding("question_mark", "help", "help", key_display="?"),
        Binding("p", "plugins", "plugins"),
        Binding("q", "quit", "quit"),
    ]

    def __init__(
        self,
        config_path: str | Path = config_mod.DEFAULT_CONFIG,
        runs_dir: str | Path | None = None,
        plugins_dir: str | Path | None = None,
        *,
        poll_interval: float = 0.5,
        gpu_interval: float = 2.0,
        gpu_runner: gpus_mod.Runner | None = None,
        clock: Callable[[], float] = time.time,
        generation_env: dict[str, str] | None = None,
    ) -> None:
        super().__init__()
        self.config_path = Path(config_path)
        self.runs_dir = runs_dir
        self.plugins_dir_arg = Path(plugins_dir).resolve() if plugins_dir else None
        self.poll_interval = poll_interval
        self.gpu_interval = gpu_interval
        self.gpu_runner = gpu_runner
        self.clock = clock
        self.generation_env = generation_env
        self._generation: Any = None  # the GenerationClient, started on the first generate
        self._generation_lock = threading.Lock()
        # Read the file before the first frame: the table is filled on first paint.
        first_stamp = stamp(self.config_path)
        self.config, self.config_error, self.root = load_config(self.config_path, runs_dir)
        self.registry: Any = None
        self.runs_by_exp: dict[str, list[Run]] = {}
        self.series: dict[Path, RunSeries] = {}
        self.gpus: list[gpus_mod.Gpu] = []
        self._log: tuple[Path | None, list[str]] = (None, [])
        self.watcher = Watcher(self.config_path, self.root, runs_dir, config_stamp=first_stamp)
        self._following: tuple[tuple[Path, ...], Path | None] | None = None
        self._run_pids: dict[int, str] = {}
        self._run_gpus: dict[str, str] = {}
        self.queue_positions: dict[Path, int] = {}
        self.queue_stalled: str | None = None  # why queued runs can't start, shown in the title
        self._kick = threading.Event()
        self._stopping = threading.Event()
        self._plugins_ready = threading.Event()
        self._plugins_loaded_for: Path | None = None
        # One scan of the runs folder now (a stat per run), so states are in the first frame too.
        for message in self.watcher.poll():
            if isinstance(message, RunsChanged):
                self._apply_runs(message.runs)
        self.main = MainScreen()

    # --- lifecycle --------------------------------------------------------------

    def get_default_screen(self) -> MainScreen:
        return self.main

    def on_mount(self) -> None:
        if self.config_error:
            self.notice(self.config_error, "error", title="experiments file", timeout=12)
        # Background threads start once the first frame is out: importing plugins in a thread
        # competes for the GIL and would delay that frame.
        self.call_after_refresh(self._start_background)

    def _start_background(self) -> None:
        if self._stopping.is_set():
            return
        self.start_watching()
        self.load_registry()
        if self.gpu_runner is not None or gpus_mod.available():
            self.poll_gpus()

    def on_unmount(self) -> None:
        self._stopping.set()
        self._kick.set()
        self.close_generation()

    def generation_client(self) -> Any:
        """The one generation client of the app, created on first use (its worker starts lazily too).

        It stays warm between prompts and screens, so a base model loads once per
        app; it goes away with the app (:meth:`close_generation` on unmount).
        """
        from workbench.generate.client import GenerationClient

        with self._generation_lock:
            if self._generation is None:
                self._generation = GenerationClient(env=self.generation_env)
            return self._generation

    def close_generation(self) -> None:
        """Stop the generation worker process, if one was started."""
        with self._generation_lock:
            client, self._generation = self._generation, None
        if client is not None:
            client.close()

    def exit(self, *args: Any, **kwargs: Any) -> None:
        """Stop the watchers at once (runs are untouched: they are other processes)."""
        self.main.ready = False
        self._stopping.set()
        self._kick.set()
        super().exit(*args, **kwargs)

    def _on_main(self, method: Callable[..., None], *args: Any) -> None:
        """Call a main-screen update, unless the screen is not drawn yet or is going away."""
        if not self.main.ready:
            return
        try:
            method(*args)
        except NoMatches:  # a message that arrived while the app closes
            if self.main.ready and not self._exit:
                raise

    @property
    def plugins_dir(self) -> Path | None:
        """``--plugins-dir``, else the experiments file's ``plugins_dir``."""
        if self.plugins_dir_arg is not None:
            return self.plugins_dir_arg
        return self.config.plugins_dir if self.config is not None else None

    def kick(self) -> None:
        """Poll now instead of at the next tick (after an action, or a change of what is shown)."""
        self._kick.set()

    def notice(self, text: str, severity: str = "information", title: str = "",
               timeout: float | None = None) -> None:
        """A toast; never interprets markup (messages hold paths and ``train[:100]`` slices)."""
        self.notify(text, title=title, severity=severity, markup=False,  # type: ignore[arg-type]
                    timeout=timeout if timeout is not None else (10 if severity == "error" else 5))

    # --- background workers -----------------------------------------------------

    def start_watching(self) -> None:
        self._watch_loop()

    @work(thread=True, exclusive=True, exit_on_error=False, group="watch", name="watcher")
    def _watch_loop(self) -> None:
        """Poll the runs folder and the experiments file until the app closes."""
        worker = get_current_worker()
        last_error = None
        while not worker.is_cancelled and not self._stopping.is_set():
            self._kick.clear()
            try:
                messages = self.watcher.poll()
                last_error = None
            except Exception as exc:  # noqa: BLE001 - report once, keep watching
                error = f"{type(exc).__name__}: {exc}"
                messages = [Notice(f"reading the runs folder failed: {error}", "error")] \
                    if error != last_error else []
                last_error = error
            for message in messages:
                self.post_message(message)
            self._check_queue(messages)
            self._kick.wait(self.poll_interval)

    def _check_queue(self, messages: list[Any]) -> None:
        """(Watcher thread) restart a dead scheduler while runs are queued; note a stalled queue."""
        reason = None
        if self.queue_positions:
            try:
                if queue.revive(self.watcher.root):
                    self.post_message(Notice("queued runs had no scheduler (killed, or a reboot): "
                                             "started one", title="queue"))
                reason = queue.stall_reason(self.watcher.root)
            except OSError as exc:
                reason = f"cannot start the scheduler: {exc}"
        if reason != self.queue_stalled and not self._stopping.is_set():
            self.queue_stalled = reason
            latest = [m.runs for m in messages if isinstance(m, RunsChanged)]  # never older data
            self.post_message(RunsChanged(latest[-1] if latest else self.runs_by_exp))  # redraw

    def load_registry(self) -> None:
        self._plugins_ready.clear()
        self._plugins_loaded_for = self.plugins_dir
        self._load_plugins(self.plugins_dir)

    @work(thread=True, exclusive=True, exit_on_error=False, group="plugins", name="plugins")
    def _load_plugins(self, plugins_dir: Path | None) -> None:
        from workbench.plugins import load_plugins

        self.post_message(PluginsLoaded(load_plugins(plugins_dir)))

    @work(thread=True, exclusive=True, exit_on_error=False, group="gpus", name="gpus")
    def poll_gpus(self) -> None:
        """Read nvidia-smi every few seconds; quietly nothing on a machine without GPUs."""
        runner = self.gpu_runner or gpus_mod.run_nvidia_smi
        last: list[gpus_mod.Gpu] | None = None
        worker = get_current_worker()
        while not worker.is_cancelled and not self._stopping.is_set():
            found = gpus_mod.query(dict(self._run_pids), runner, reserved=dict(self._run_gpus))
            if found != last:
                self.post_message(GpusChanged(found))
                last = found
            self._stopping.wait(self.gpu_interval)

    def _registry_or_wait(self) -> Any:
        if not self._plugins_ready.wait(PLUGIN_WAIT_S):
            raise ConfigError("plugins are still loading; try again in a moment")
        return self.registry

    @work(thread=True, exit_on_error=False, group="launch", name="launch")
    def start_runs(self, names: list[str]) -> None:
        """Validate the experiments against the plugins, then start each, detached."""
        cfg: Config | None = self.config
        if cfg is None:
            self.post_message(Notice("the experiments file has errors: fix it first", "error"))
            return
        try:
            reg = self._registry_or_wait()
            chosen = dataclasses.replace(cfg, experiments={n: cfg.get(n) for n in names})
            config_mod.check_plugins(chosen, reg.backends, reg.evaluators)
        except ConfigError as exc:
            self.post_message(Notice(str(exc), "error", "cannot start"))
            return
        started = []
        for name in names:
            try:
                run = launch.start(cfg, name, self.root, self.plugins_dir)
            except (ConfigError, RunError, OSError) as exc:
                self.post_message(Notice(f"{name}: {exc}", "error", "cannot start"))
                continue
            started.append(run.ref)
        if started:
            self.post_message(Notice(f"queued {', '.join(started)}: each starts when a slot is free "
                                     "(at once on an idle machine)", title="run"))
        self.kick()

    @work(thread=True, exit_on_error=False, group="control", name="stop")
    def stop_run(self, run: Run) -> None:
        """SIGTERM to each trainer process of a running run; a queued run leaves the queue."""
        try:
            if run.refresh().state == "queued":
                queue.cancel(run)
                self.post_message(Notice(f"{run.ref} taken out of the queue", title="stop"))
            else:
                launch.stop(run)
                self.post_message(Notice(f"stopping {run.ref}: it saves a checkpoint and exits",
                                         title="stop"))
        except RunError as exc:
            self.post_message(Notice(str(exc), "warning", "stop"))
        self.kick()

    @work(thread=True, exit_on_error=False, group="control", name="resume")
    def resume_run(self, run: Run) -> None:
        """Continue a stopped or failed run from its last checkpoint, in its folder."""
        try:
            checkpoint = launch.latest_checkpoint(run.path)
            launch.resume(run)
        except RunError as exc:
            self.post_message(Notice(str(exc), "warning", "resume"))
            return
        where = checkpoint.name if checkpoint else "its checkpoint"
        self.post_message(Notice(f"resumed {run.ref} from {where}", title="resume"))
        self.kick()

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        """A worker that died of an unexpected error becomes a notice (and the watcher restarts)."""
        worker = event.worker
        if event.state != WorkerState.ERROR:
            return
        self.notice(f"{worker.name or 'background task'} failed: {worker.error!r}", "error")
        if worker.group == "watch" and not self._stopping.is_set():
            self.set_timer(1.0, self.start_watching)

    # --- what to watch ------------------------------------------------------------

    def follow(self, paths: Iterable[Path], log_path: Path | None) -> None:
        """Watch the events of ``paths`` and the log of ``log_path`` (the shown runs)."""
        wanted = (tuple(dict.fromkeys(paths)), log_path)
        if wanted == self._following:
            return
        self._following = wanted
        for path in list(self.series):
            if path not in wanted[0]:
                del self.series[path]
        for path in wanted[0]:
            if path not in self.series:
                # The watcher may still hold a tail for it (dropped and wanted again between two
                # polls): have it read from the top, or a finished run would never fill in again.
                self.watcher.forget(path)
        self.watcher.want(*wanted)
        self.kick()

    # --- messages from the workers ---------------------------------------------------

    def on_config_changed(self, message: ConfigChanged) -> None:
        had_error = self.config_error
        self.config, self.config_error, self.root = message.config, message.error, message.root
        if message.error:
            self.notice(message.error, "error", title="experiments file", timeout=12)
        elif had_error:
            self.clear_notifications()  # the error toasts are stale now
            self.notice(f"{self.config_path.name} reloaded: {len(message.config.experiments)} experiments",
                        title="experiments file")
        else:
            self.notice(f"{self.config_path.name} changed: reloaded")
        if self.plugins_dir != self._plugins_loaded_for:
            self.load_registry()
        self._on_main(self.main.config_updated)

    def on_runs_changed(self, message: RunsChanged) -> None:
        self._apply_runs(message.runs)
        self._on_main(self.main.runs_updated)
        try:
            screen = self.screen
        except ScreenStackError:  # a poll that lands while the app starts or exits: no screen
            return
        if screen is not self.main and hasattr(screen, "runs_updated"):
            try:
                screen.runs_updated()  # the results screen: new numbers, never stale
            except NoMatches:  # not composed yet: it reads the runs when it mounts
                pass

    def _apply_runs(self, found: dict[str, list[Run]]) -> None:
        self.runs_by_exp = found
        active = [r for runs in found.values() for r in runs if r.state == "running"]
        self._run_pids = gpus_mod.run_pids((r.ref, r.status) for r in active)
        self._run_gpus = {str(g): r.ref for r in active for g in r.status.get("gpus") or []}
        waiting = sorted((r for runs in found.values() for r in runs if r.state == "queued"),
                         key=lambda r: r.status.get("queue_seq") or 0)
        self.queue_positions = {r.path: i for i, r in enumerate(waiting, start=1)}

    def on_run_events(self, message: RunEvents) -> None:
        wanted = self._following[0] if self._following else ()
        changed: set[Path] = set()
        for path, (events, reset) in message.batches.items():
            if path not in wanted:
                continue
            if reset:
                self.series[path] = RunSeries()
            elif path not in self.series:
                self.watcher.forget(path)  # we dropped it meanwhile: ask for it from the top
                self.kick()
                continue
            self.series[path].ingest(events)
            changed.add(path)
        if changed:
            self._on_main(self.main.events_arrived, changed)

    def on_log_changed(self, message: LogChanged) -> None:
        if self._following and message.path == self._following[1]:
            self._log = (message.path, message.lines)
            self._on_main(self.main.log_arrived, message.lines)

    def on_gpus_changed(self, message: GpusChanged) -> None:
        self.gpus = message.gpus
        self._on_main(self.main.gpus_arrived, message.gpus)

    def on_plugins_loaded(self, message: PluginsLoaded) -> None:
        self.registry = message.registry
        self._plugins_ready.set()
        if message.registry.failures:
            count = len(message.registry.failures)
            self.notice(f"{count} plugin{'s' if count > 1 else ''} failed to load: press p for details",
                        "warning", title="plugins")
        from workbench.screens.plugins import PluginsScreen

        if isinstance(self.screen, PluginsScreen):
            self.screen.show(message.registry)
        self._on_main(self.main.plugins_arrived)

    def on_notice(self, message: Notice) -> None:
        self.notice(message.text, message.severity, message.title)

    def on_report_written(self, message: ReportWritten) -> None:
        if message.path is not None:
            self.notice(f"wrote {message.path}", title="report")
        else:
            self.notice(f"the report failed: {message.error}", "error", title="report")

    def log_tail(self, path: Path) -> list[str]:
        """The latest ``train.log`` lines read for ``path`` (only the shown run's are kept)."""
        return self._log[1] if self._log[0] == path else []

    # --- labels that need the plugins ------------------------------------------------

    def default_model(self, backend: str) -> str | None:
        item = self.registry.backends.get(backend) if self.registry is not None else None
        model = getattr(item, "default_model", None)
        return model if isinstance(model, str) else None

    def model_label(self, exp: Any) -> str:
        """A short model name: the experiment's ``model``, else its backend's default."""
        model = exp.model or self.default_model(exp.backend)
        if not model:
            return "(default)"
        return Path(model).name.removesuffix(".gguf") or model

    # --- actions ---------------------------------------------------------------------------

    def action_help(self) -> None:
        from workbench.screens.compare import CompareScreen
        from workbench.screens.help import HelpScreen
        from workbench.screens.results import ResultsScreen

        groups = [("runs", [b for b in MainScreen.BINDINGS if isinstance(b, Binding)]),
                  ("anywhere", [*self.BINDINGS, Binding("ctrl+p", "command_palette", "command palette")]),
                  ("compare", [b for b in CompareScreen.BINDINGS if isinstance(b, Binding) and b.show]),
                  ("results", [b for b in ResultsScreen.BINDINGS if isinstance(b, Binding)][:4])]
        self.push_screen(HelpScreen(groups))  # type: ignore[arg-type]

    def action_compare(self) -> None:
        """Open the compare screen on the marked experiments' latest runs (else the selected one's)."""
        from workbench.screens.compare import CompareScreen, default_sampling
        from workbench.widgets.gen_pane import PaneSource

        if isinstance(self.screen, CompareScreen):
            return
        from workbench.generate.client import checkpoints

        names = [n for n in self.main.table.names() if n in self.main.marks] if self.main.ready else []
        if not names and self.main.current:
            names = [self.main.current]
        chosen = []
        for name in names:
            done = [r for r in self.runs_by_exp.get(name, []) if checkpoints(r.path)]
            if done:
                chosen.append(done[-1])
        sources = [PaneSource.for_run(run) for run in chosen[:4]]
        if len(sources) == 1:  # before and after: the run's untuned base next to it
            from workbench.compare import base_spec

            try:
                sources.insert(0, PaneSource(base=base_spec(chosen[0].path)))
            except Exception:  # noqa: BLE001 - a run without a readable config: just the run
                pass
        experiment = read_config(chosen[0].path).get("experiment") if chosen else None
        if experiment is None and self.config is not None and self.main.current in self.config.experiments:
            experiment = self.config.experiments[self.main.current].model_dump(mode="json")
        prompts = list((experiment or {}).get("prompts") or [])
        if self.config is not None:
            prompts += [p for exp in self.config.experiments.values() for p in exp.prompts]
        self.push_screen(CompareScreen(sources, prompts, default_sampling(experiment)))
        if not sources:
            self.notice("no finished run with an adapter selected: a adds panes (runs or base models)",
                        "warning", title="compare")

    def action_results(self) -> None:
        from workbench.screens.results import ResultsScreen

        if not isinstance(self.screen, ResultsScreen):
            self.push_screen(ResultsScreen())

    def action_plugins(self) -> None:
        from workbench.screens.plugins import PluginsScreen

        if not isinstance(self.screen, PluginsScreen):
            self.push_screen(PluginsScreen())


def make_app(config_path: str | Path = config_mod.DEFAULT_CONFIG, runs_dir: str | Path | None = None,
             plugins_dir: str | Path | None = None, **options: Any) -> WorkbenchApp:
    """The one factory the CLI and the tests use."""
    return WorkbenchApp(config_path, runs_dir=runs_dir, plugins_dir=plugins_dir, **options)


def run_app(config_path: str | Path = config_mod.DEFAULT_CONFIG, runs_dir: str | Path | None = None,
            plugins_dir: str | Path | None = None) -> int:
    """Run the TUI until the user quits; runs keep going after it exits."""
    return make_app(config_path, runs_dir=runs_dir, plugins_dir=plugins_dir).run() or 0
