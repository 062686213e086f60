"""The workbench TUI: experiments, live runs, launch and control, over SSH.

The App owns the state every screen reads (config, runs, metric series,
GPUs, plugins) and the long-lived background workers that keep it true:
a watcher thread polling the runs folder and the experiments file
(:mod:`workbench.watch`), a GPU poller, and short workers for launching,
stopping and resuming. Workers post typed Messages (:mod:`workbench.messages`);
only the UI thread touches widgets. The App updates its state from those
messages and publishes each change on a Textual ``Signal`` it owns
(``runs_signal``, ``views_signal``...); screens and widgets subscribe in
``on_mount`` and redraw themselves, so the App never calls into a screen.
The TUI never trains and never imports torch: runs are detached processes
(:mod:`workbench.launch`) that outlive it.
"""

from __future__ import annotations

import dataclasses
import os
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from textual import work
from textual.app import App
from textual.binding import Binding
from textual.signal import Signal
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
    RunsChanged,
    RunViews,
)
from workbench.present import default_models, metric_label, model_label
from workbench.runs import Run, RunError, read_config
from workbench.runview import RunView
from workbench.screens.main import MainScreen
from workbench.watch import Watcher, load_config, stamp
from workbench.widgets.format import typed

if TYPE_CHECKING:
    from workbench.plugins import Registry  # imported by the plugin-loading thread, after the first frame

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
        bell: bool | None = None,
    ) -> None:
        super().__init__()
        # ring the terminal bell with a run's end notice: off unless asked (WORKBENCH_BELL=1)
        self.bell_on_end = bell if bell is not None else os.environ.get("WORKBENCH_BELL", "") not in ("", "0")
        self._states: dict[Path, str] | None = None  # each run's state at the last scan (None: none yet)
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
        self.registry: Registry | None = None
        self._default_models: tuple[Registry, dict[str, str]] | None = None
        self.runs_by_exp: dict[str, list[Run]] = {}
        # Read models of the shown runs and of each experiment's latest run, kept by the watcher.
        self.views: dict[Path, RunView] = {}
        self.gpus: list[gpus_mod.Gpu] = []
        self._log_lines: tuple[Path | None, list[str]] = (None, [])  # not `_log`: Textual's logger
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
        for message in self.watcher.poll(views=False):
            if isinstance(message, RunsChanged):
                self._apply_runs(message.runs)
        # App-wide changes, published once the App's state holds them; screens and widgets
        # subscribe in on_mount (one that is not mounted simply has not subscribed).
        self.config_signal: Signal[None] = Signal(self, "config-changed")
        self.runs_signal: Signal[None] = Signal(self, "runs-changed")
        self.views_signal: Signal[set[Path]] = Signal(self, "views-changed")  # run folders with a new view
        self.log_signal: Signal[list[str]] = Signal(self, "log-changed")  # the shown run's log tail
        self.gpus_signal: Signal[list[gpus_mod.Gpu]] = Signal(self, "gpus-changed")
        self.plugins_signal: Signal[Registry] = Signal(self, "plugins-loaded")
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
        self._stopping.set()
        self._kick.set()
        super().exit(*args, **kwargs)

    def _publish(self, signal: Signal[Any], data: Any = None) -> None:
        """Tell the subscribers, unless the app is closing (its screens are going away)."""
        if not self._stopping.is_set():
            signal.publish(data)

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
                queued = launch.start_experiment(cfg, name, self.root, self.plugins_dir)
            except (ConfigError, RunError, OSError) as exc:
                self.post_message(Notice(f"{name}: {exc}", "error", "cannot start"))
                continue
            started += [run.ref for run in queued]
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
        latest = self.latest_paths()
        for path in list(self.views):
            if path not in wanted[0] and path not in latest:
                del self.views[path]
        for path in wanted[0]:
            if path not in self.views:
                # The watcher may still hold its view (dropped and wanted again between two
                # polls): have it post one, or a finished run would never fill in again.
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
            count = len(message.config.experiments) if message.config is not None else 0
            self.notice(f"{self.config_path.name} reloaded: {count} experiments", title="experiments file")
        else:
            self.notice(f"{self.config_path.name} changed: reloaded")
        if self.plugins_dir != self._plugins_loaded_for:
            self.load_registry()
        self._publish(self.config_signal)

    def on_runs_changed(self, message: RunsChanged) -> None:
        self._apply_runs(message.runs)
        keep = set(self._following[0] if self._following else ()) | self.latest_paths()
        for path in [p for p in self.views if p not in keep]:
            del self.views[path]
        self._publish(self.runs_signal)

    def _apply_runs(self, found: dict[str, list[Run]]) -> None:
        self.runs_by_exp = found
        states = {r.path: r.state for runs in found.values() for r in runs}
        before = self._states
        if before is not None:
            for run in (r for runs in found.values() for r in runs):
                if before.get(run.path) in ("running", "queued") and run.state in ("finished", "failed"):
                    self._announce_end(run)
        self._states = states
        active = [r for runs in found.values() for r in runs if r.state == "running"]
        self._run_pids = gpus_mod.run_pids((r.ref, r.status) for r in active)
        self._run_gpus = {str(g): r.ref for r in active for g in r.status.get("gpus") or []}
        waiting = sorted((r for runs in found.values() for r in runs if r.state == "queued"),
                         key=lambda r: r.status.get("queue_seq") or 0)
        self.queue_positions = {r.path: i for i, r in enumerate(waiting, start=1)}

    def _announce_end(self, run: Run) -> None:
        """A toast naming a run that finished or failed while the TUI is open, with its result."""
        st = typed(run.status)
        if run.state == "finished":
            results = [f"{metric_label(name, {m.name: m for m in st.metrics})} {value:.4g}"
                       for name, value in st.best.items()]
            self.notice(f"{run.ref} finished" + (f": {', '.join(results)}" if results else ""),
                        title="run finished", timeout=10)
        else:
            self.notice(f"{run.ref} failed: {st.error or st.error_kind or 'error'}", "error",
                        title="run failed", timeout=10)
        if self.bell_on_end:
            self.bell()

    def latest_paths(self) -> set[Path]:
        """The folders of each experiment's newest run (the table's rows)."""
        return {found[-1].path for found in self.runs_by_exp.values() if found}

    def on_run_views(self, message: RunViews) -> None:
        keep = set(self._following[0] if self._following else ()) | self.latest_paths()
        changed = {path for path in message.views if path in keep}
        for path in changed:
            self.views[path] = message.views[path]
        if changed:
            self._publish(self.views_signal, changed)

    def on_log_changed(self, message: LogChanged) -> None:
        if self._following and message.path == self._following[1]:
            self._log_lines = (message.path, message.lines)
            self._publish(self.log_signal, message.lines)

    def on_gpus_changed(self, message: GpusChanged) -> None:
        self.gpus = message.gpus
        self._publish(self.gpus_signal, message.gpus)

    def on_plugins_loaded(self, message: PluginsLoaded) -> None:
        self.registry = message.registry
        self._plugins_ready.set()
        if message.registry.failures:
            count = len(message.registry.failures)
            self.notice(f"{count} plugin{'s' if count > 1 else ''} failed to load: press p for details",
                        "warning", title="plugins")
        self._publish(self.plugins_signal, message.registry)

    def on_notice(self, message: Notice) -> None:
        self.notice(message.text, message.severity, message.title)

    def on_report_written(self, message: ReportWritten) -> None:
        if message.path is not None:
            self.notice(f"wrote {message.path}", title="report")
        else:
            self.notice(f"the report failed: {message.error}", "error", title="report")

    def log_tail(self, path: Path) -> list[str]:
        """The latest ``train.log`` lines read for ``path`` (only the shown run's are kept)."""
        return self._log_lines[1] if self._log_lines[0] == path else []

    # --- labels that need the plugins ------------------------------------------------

    def default_model(self, backend: str) -> str | None:
        """The backend's default model, resolved once per plugin load (``None`` before plugins load)."""
        if self.registry is None:
            return None
        if self._default_models is None or self._default_models[0] is not self.registry:
            self._default_models = (self.registry, default_models(self.registry))
        return self._default_models[1].get(backend)

    def model_label(self, exp: Any) -> str:
        """The model's label in the CLI's words: the experiment's ``model``, else its backend's default."""
        return model_label(exp.model or self.default_model(exp.backend), exp.backend)

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

    def open_compare(self, names: list[str], current: str | None = None) -> None:
        """Open the compare screen on the latest runs with an adapter of ``names``.

        ``current`` (the selected experiment) gives the prompts and sampling when
        none of them has a run yet.
        """
        from workbench.compare_model import default_sampling
        from workbench.generate.client import checkpoints
        from workbench.screens.compare import CompareScreen
        from workbench.widgets.gen_pane import PaneSource

        if isinstance(self.screen, CompareScreen):
            return
        chosen = []
        for name in names:
            done = [r for r in self.runs_by_exp.get(name, []) if checkpoints(r.path)]
            if done:
                chosen.append(done[-1])
        sources = [PaneSource.for_run(run) for run in chosen[:4]]
        if len(sources) == 1:  # before and after: the run's untuned base next to it
            from workbench.compare_model import base_spec

            try:
                sources.insert(0, PaneSource(base=base_spec(chosen[0].path)))
            except Exception:  # noqa: BLE001 - a run without a readable config: just the run
                pass
        experiment = read_config(chosen[0].path).get("experiment") if chosen else None
        cfg = self.config
        if experiment is None and cfg is not None and current in cfg.experiments:
            experiment = cfg.experiments[current].model_dump(mode="json")
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

    def action_study(self) -> None:
        """The selected search experiment's study: trials, best so far, a scatter per param."""
        from workbench.screens.study import StudyScreen

        name = self.main.current
        experiment = self.config.experiments.get(name) if self.config is not None and name else None
        if name is None or experiment is None or experiment.search is None:
            self.notice("the selected experiment has no [search] table: y shows a study", "warning",
                        title="study")
            return
        self.push_screen(StudyScreen(self.root, name))

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
