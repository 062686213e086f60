"""The ``workbench`` command: the TUI by default, and headless subcommands.

Every subcommand shares its logic with the TUI (config, plugins, runs,
launch); this module only parses arguments and prints. Errors a user can
cause print one line on stderr and exit with status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import errno
import functools
import math
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from workbench import __version__, config, launch, queue, runs
from workbench.config import Config, ConfigError
from workbench.metrics import Metric
from workbench.present import (
    default_models,
    event_line,
    fmt_duration,
    fmt_metric,
    fmt_num,
    fmt_rate,
    model_label,
    state_text,
    table,
)
from workbench.runs import RunError
from workbench.runview import RunView, experiment_results, view
from workbench.summary import WINDOW
from workbench.terminal import one_line, printable

__all__ = ["fmt_duration", "fmt_num", "fmt_rate", "main", "state_text", "table"]

EXIT_USAGE = 2
EXIT_ENVIRONMENT = 1  # the machine, not the command line: a full disk, a permission
EXIT_PIPE = 141  # what a shell reports for a writer killed by SIGPIPE
EXIT_INTERRUPTED = 130


class Context:
    """What every command needs: the config path, runs root and plugins folder, loaded lazily."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.config_path = Path(args.config)
        self._config: Config | None = None
        self._registry = None

    @property
    def config(self) -> Config:
        if self._config is None:
            self._config = config.load(self.config_path)
        return self._config

    def try_config(self) -> Config | None:
        try:
            return self.config
        except ConfigError:
            return None

    @property
    def plugins_dir(self) -> Path | None:
        if self.args.plugins_dir:
            return Path(self.args.plugins_dir).resolve()
        cfg = self.try_config()
        return cfg.plugins_dir if cfg else None

    @property
    def root(self) -> Path:
        root = launch.runs_root(self.config_path, self.try_config(), self.args.runs_dir)
        if root.exists() and not root.is_dir():
            raise RunError(f"the runs folder {root} is a file, not a folder (see --runs-dir, runs_dir)")
        return root

    def max_parallel(self, fallback: int | None = None) -> int | None:
        """``--max-parallel`` (checked like the TOML key), else ``fallback``."""
        value = getattr(self.args, "max_parallel", None)
        if value is None:
            return fallback
        if value < 1:
            raise ConfigError(f"--max-parallel must be a whole number of runs, 1 or more (got {value})")
        return int(value)

    @property
    def registry(self):
        if self._registry is None:
            from workbench.plugins import load_plugins

            self._registry = load_plugins(self.plugins_dir)
        return self._registry

    def validated(self) -> Config:
        """The config, checked against the backends and evaluators the plugins provide."""
        cfg = self.config
        reg = self.registry
        try:
            config.check_plugins(cfg, reg.backends, reg.evaluators, reg.launchers)
        except ConfigError as exc:
            # an unknown name may be a plugin that failed to load: say so on the same line
            raise ConfigError(f"{exc}{reg.failure_note()}") from None
        return cfg


# --- commands --------------------------------------------------------------


def metric_cells(views: list[RunView]) -> tuple[list[str], list[list[str]]]:
    """A column per metric any of ``views`` has (best value, in its format): headers and cells."""
    names: dict[str, Any] = {}
    for v in views:
        for m in v.metrics:
            names.setdefault(m.name, m.metric)
    header = [metric.title for metric in names.values()]
    rows = []
    for v in views:
        row = []
        for name, metric in names.items():
            found = v.metric(name)
            row.append(fmt_metric(metric, found.best) if found else "-")
        rows.append(row)
    return header, rows


def cmd_list(ctx: Context) -> int:
    """Each experiment's latest run and state, beside its best result over all its runs."""
    cfg = ctx.config
    defaults = default_models(ctx.registry)
    base, bests = [], []
    for name, exp in cfg.experiments.items():
        history = runs.list_runs(ctx.root, name)
        run = history[-1] if history else None
        latest = view(run, defaults) if run else None
        base.append([name, exp.backend, model_label(exp.model or defaults.get(exp.backend), exp.backend),
                     str(exp.lora.r), str(exp.train.steps), run.ref if run else "-",
                     latest.state_text if latest else "-"])
        bests.append(experiment_results(history, latest))
    metrics: dict[str, Metric] = {}
    for found in bests:
        for name, result in found.items():
            metrics.setdefault(name, result.metric)
    rows = []
    for row, found in zip(base, bests, strict=True):
        cells = []
        for name, metric in metrics.items():
            best = found.get(name)
            if best is None:
                cells.append("-")
                continue
            older = best.run.ref != row[5]
            cells.append(fmt_metric(metric, best.value) + (f" (#{best.run.run_id})" if older else ""))
        rows.append(row + cells)
    header = [f"best {metric.title}" for metric in metrics.values()]
    print(table(rows, ["experiment", "backend", "model", "r", "steps", "latest run", "state", *header]))
    return 0


def cmd_run(ctx: Context) -> int:
    cfg = ctx.validated()
    names = list(cfg.experiments) if ctx.args.all else ctx.args.names
    if not names:
        raise ConfigError("name at least one experiment, or pass --all")
    for name in names:
        cfg.get(name)  # every name valid before anything starts
    started = []
    max_parallel = ctx.max_parallel(cfg.max_parallel)
    for name in names:
        queued = launch.start_experiment(cfg, name, ctx.root, ctx.plugins_dir, max_parallel=max_parallel)
        started += queued
        for run in queued:
            if run.status.get("job_id"):
                print(f"submitted {run.ref} to {run.status.get('launcher')}: job {run.status['job_id']}"
                      f"  (folder {run.path})")
            else:
                print(f"queued {run.ref}  (folder {run.path})")
        search = cfg.get(name).search
        if search is not None:
            print(f"study {name}: {len(queued)} trial(s) queued, {search.trials} in all "
                  f"(see: workbench results {name})")
    plugins_note(ctx)
    if not started:
        return 0
    if ctx.args.follow:
        return follow(started[-1]) if len(started) == 1 else max(follow(r) for r in started)
    print("follow with: workbench status " + started[-1].ref + "   or open the TUI: workbench")
    return 0


def cmd_status(ctx: Context) -> int:
    defaults = default_models(ctx.registry)
    if ctx.args.run:
        run = runs.resolve(ctx.root, ctx.args.run)
        print(describe(view(run, defaults)))
        return 0
    all_runs = runs.list_runs(ctx.root)
    if not all_runs:
        print(f"no runs yet in {ctx.root}")
        return 0
    views = [view(run, defaults) for run in all_runs]
    header, cells = metric_cells(views)
    rows = []
    for v, metric_row in zip(views, cells, strict=True):
        rows.append([v.ref, v.state_text, fmt_num(v.loss), *metric_row,
                     fmt_rate(v.timings.tokens_per_s), fmt_duration(v.timings.train_seconds),
                     f"{len(v.warnings)} warning(s)" if v.warnings else ""])
    print(table(rows, ["run", "state", "loss", *header, "tok/s", "train time", ""]))
    return 0


def describe(v: RunView) -> str:
    """``status RUN``: everything the run model knows about one run (text from files made printable)."""
    lines = [f"{v.ref}: {one_line(v.state_text)}"]
    for reason in v.damaged[1:] if v.damaged else []:
        lines.append(f"  damaged: {one_line(reason)}")
    own = v.backend and not v.model.endswith("(default)")
    lines.append(f"  model: {one_line(v.model)}" + (f" ({v.backend} backend)" if own else ""))
    if v.steps is not None:
        lines.append(f"  steps: {v.steps}" + (f"/{v.max_steps}" if v.max_steps else ""))
    if v.loss is not None:
        lines.append(f"  train loss: {v.loss:.4f}")
    for m in v.metrics:
        if m.best is None:
            lines.append(f"  {m.metric.title}: no value yet")
            continue
        at = f" (step {m.best_step})" if m.best_step is not None else ""
        best = "best" if m.metric.better else "last"
        final = f", final {fmt_metric(m.metric, m.final)}" if m.final is not None and m.metric.better else ""
        lines.append(f"  {one_line(m.metric.title)}: {best} {fmt_metric(m.metric, m.best)}{at}{final}")
    t = v.timings
    if t.train_seconds is not None:
        lines.append(f"  train time: {fmt_duration(t.train_seconds)}")
    if t.tokens_per_s:
        recent = (f", {fmt_rate(t.recent_tokens_per_s)} (last {WINDOW} steps)"
                  if t.recent_tokens_per_s and v.state == "running" else "")
        lines.append(f"  tokens/s: {fmt_rate(t.tokens_per_s)} (average){recent}")
    if v.checkpoints:
        lines.append(f"  checkpoints: {', '.join(c.name for c in v.checkpoints)}")
    for error in v.errors:
        lines.append(f"  {one_line(error)}" if error.startswith("hint: ") else f"  error: {one_line(error)}")
    for warning in v.warnings:
        lines.append(f"  warning: {one_line(warning)}")
    if v.status.raw.get("job_id"):
        lines.append(f"  {one_line(str(v.status.raw.get('launcher')))} job: "
                     f"{one_line(str(v.status.raw['job_id']))}")
    lines.append(f"  folder: {printable(str(v.path))}")
    if v.status.state == "failed":
        lines.append("  log tail:")
        lines += [f"    {one_line(ln)}" for ln in runs.tail_log(v.path, 10)]
    return "\n".join(lines)


def cmd_stop(ctx: Context) -> int:
    wait = ctx.args.wait
    if wait is not None and not (math.isfinite(wait) and wait > 0):
        raise ConfigError(f"--wait must be a number of seconds above 0 (got {wait:g})")
    cfg = ctx.try_config()
    if cfg is not None and ctx.args.run in cfg.experiments and cfg.experiments[ctx.args.run].search:
        from workbench import search

        done = search.stop(ctx.root, ctx.args.run)
        what = "; ".join(done) if done else "nothing was queued or running"
        print(f"study {ctx.args.run} stopped: {what} (`workbench run {ctx.args.run}` resumes it)")
        return 0
    run = runs.resolve(ctx.root, ctx.args.run)
    if run.state == "queued":
        queue.cancel(run)
        print(f"cancelled {run.ref}: it had not started")
        return 0
    launch.stop(run)
    print(f"stopping {run.ref}: it saves a checkpoint and exits")
    if ctx.args.wait:
        print(f"waiting up to {ctx.args.wait:g}s for {run.ref} to write its checkpoint and exit "
              "(Ctrl-C stops waiting, not the stop)", flush=True)
        status = launch.wait(run, timeout=ctx.args.wait)
        still = "" if status.get("state") in launch.TERMINAL else " (still stopping: check again later)"
        print(f"{run.ref}: {state_text(status)}{still}")
    return 0


def cmd_resume(ctx: Context) -> int:
    run = runs.resolve(ctx.root, ctx.args.run)
    checkpoint = runs.latest_checkpoint(run.path)  # the one the trainer resumes from
    run = launch.resume(run, max_parallel=ctx.max_parallel())
    print(f"resuming {run.ref} from {checkpoint.name if checkpoint else '?'}")
    return follow(run) if ctx.args.follow else 0


def cmd_queue(ctx: Context) -> int:
    if ctx.args.up or ctx.args.top:
        run = runs.resolve(ctx.root, ctx.args.up or ctx.args.top)
        pos = queue.move_up(ctx.root, run, to_top=bool(ctx.args.top))
        print(f"{run.ref} is now number {pos} in the queue")
        return 0
    if ctx.args.cancel:
        run = runs.resolve(ctx.root, ctx.args.cancel)
        queue.cancel(run)
        print(f"cancelled {run.ref}")
        return 0
    waiting = queue.queued(ctx.root)
    running = [r for r in runs.list_runs(ctx.root) if r.state == "running"]
    rows = [[r.ref, state_text(r.status), ",".join(r.status.get("gpus") or []) or "-"] for r in running]
    rows += [[r.ref, f"queued #{i}", "-"] for i, r in enumerate(waiting, start=1)]
    if not rows:
        print("the queue is empty and nothing is running")
        return 0
    print(table(rows, ["run", "state", "gpus"]))
    stalled = queue.stall_reason(ctx.root) if waiting else None
    if stalled:
        print(f"the queue is stalled: {one_line(stalled)}")
    return 0


def cmd_plugins(ctx: Context) -> int:
    reg = ctx.registry
    rows = []
    for kind in ("backends", "evaluators", "launchers"):
        for name, item in getattr(reg, kind).items():
            origin = reg.origin(kind, name)
            detail = item.description
            if kind == "backends":
                detail = "(found at run time)" if callable(item.default_model) else item.default_model
            rows.append([kind[:-1], name, origin.plugin if origin else "?", origin.source if origin else "?",
                         detail])
    print(table(rows, ["kind", "name", "plugin", "from", "default model / description"]))
    plugins_note(ctx)
    if reg.blocked:
        print(f"\nblocked by {'WORKBENCH_BLOCK_PLUGINS'}: {', '.join(reg.blocked)}")
    if reg.failures:
        print("\nfailed to load:")
        for failure in reg.failures:
            print(f"  {failure}")
        return 1
    return 0


def cmd_validate(ctx: Context) -> int:
    cfg = ctx.validated()
    print(f"{cfg.path}: {len(cfg.experiments)} experiments OK: {', '.join(cfg.experiments)}")
    plugins_note(ctx)
    return 0


def plugins_note(ctx: Context) -> None:
    """Name the plugins folder whose ``.py`` files this command ran (a TOML can set it)."""
    folder = ctx.plugins_dir
    if folder is not None and folder.is_dir():
        print(f"plugins loaded from {printable(str(folder))} (its .py files run on every command)")


def cmd_tui(ctx: Context) -> int:
    try:
        from workbench.app import run_app
    except ImportError:
        print("the TUI is not built yet; see `workbench --help` for the headless commands")
        return 0
    return run_app(ctx.config_path, runs_dir=ctx.args.runs_dir, plugins_dir=ctx.args.plugins_dir) or 0


# --- follow ---------------------------------------------------------------


def follow(run: runs.Run, out: Callable[[str], None] = print, poll: float = 0.5) -> int:
    """Print progress of ``run`` as events arrive, until it ends. Ctrl-C detaches, the run goes on."""
    from workbench.records import parse_status

    tail = runs.EventTail(run.path)

    def show(status: dict[str, Any]) -> None:
        st = parse_status(status)
        for event in tail.read():
            line = event_line(event, st.max_steps, st.metrics)
            if line:
                out(line)

    try:
        while True:
            show(run.status)
            status = run.refresh().status
            if status.get("state") in launch.TERMINAL:
                show(status)
                out(describe(view(run)))
                return 0 if status["state"] in ("finished", "stopped") else 1
            time.sleep(poll)
    except KeyboardInterrupt:
        out(f"\ndetached; {run.ref} keeps running (workbench stop {run.ref} to stop it)")
        return 0


def format_event(event: dict[str, Any], max_steps: Any = None) -> str | None:
    """One ``--follow`` line (kept for callers; see :func:`workbench.present.event_line`)."""
    return event_line(event, max_steps)


# --- argument parsing -----------------------------------------------------


@functools.lru_cache(maxsize=2)  # reusable: each parse_args makes a fresh Namespace
def build_parser(with_extras: bool = True) -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-c", "--config", default=argparse.SUPPRESS, metavar="PATH",
                        help="experiments file (default: ./experiments.toml)")
    common.add_argument("--runs-dir", default=argparse.SUPPRESS, metavar="PATH",
                        help="runs folder (default: the TOML's runs_dir, else runs/ beside it)")
    common.add_argument("--plugins-dir", default=argparse.SUPPRESS, metavar="PATH",
                        help="folder of plugin .py files (default: the TOML's plugins_dir)")

    parser = argparse.ArgumentParser(
        prog="workbench", parents=[common],
        description="LoRA fine-tuning experiments from experiments.toml. With no command: the TUI.",
    )
    parser.add_argument("--version", action="version", version=f"workbench {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("run", parents=[common], help="start runs, detached (they survive logout)")
    p.add_argument("names", nargs="*", metavar="EXPERIMENT")
    p.add_argument("--all", action="store_true", help="every experiment in the file")
    p.add_argument("-f", "--follow", action="store_true", help="stream progress until the run ends")
    p.add_argument("--max-parallel", type=int, metavar="N",
                   help="runs at once (default: one per GPU, or one on a CPU-only machine)")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("queue", parents=[common], help="running and queued runs; reorder or cancel")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--up", metavar="RUN", help="move a queued run one place up")
    group.add_argument("--top", metavar="RUN", help="move a queued run to the front")
    group.add_argument("--cancel", metavar="RUN", help="take a run out of the queue")
    p.set_defaults(func=cmd_queue)

    p = sub.add_parser("list", parents=[common], help="experiments and their latest run")
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("status", parents=[common], help="all runs, or one run in detail")
    p.add_argument("run", nargs="?", metavar="RUN", help="EXPERIMENT#N, EXPERIMENT (latest) or a run folder")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("stop", parents=[common], help="stop a run (it saves a checkpoint first)")
    p.add_argument("run", metavar="RUN")
    p.add_argument("--wait", type=float, nargs="?", const=120.0, default=None, metavar="SECONDS",
                   help="wait until it has stopped")
    p.set_defaults(func=cmd_stop)

    p = sub.add_parser("resume", parents=[common], help="continue a stopped run from its last checkpoint")
    p.add_argument("run", metavar="RUN")
    p.add_argument("-f", "--follow", action="store_true")
    p.add_argument("--max-parallel", type=int, metavar="N")
    p.set_defaults(func=cmd_resume)

    p = sub.add_parser("plugins", parents=[common], help="backends, evaluators and launchers, and where from")
    p.set_defaults(func=cmd_plugins)

    p = sub.add_parser("validate", parents=[common], help="check experiments.toml and exit")
    p.set_defaults(func=cmd_validate)

    if with_extras:
        from workbench import compare, manage, report, results, serve  # commands in their own modules

        for module in (results, report, compare, manage, serve):
            module.add_parser(sub, common)
    return parser


def main(argv: list[str] | None = None) -> int:
    from workbench import offline

    offline.apply()  # the CLI and TUI need no network; a hub run turns it on in its own process
    argv = sys.argv[1:] if argv is None else argv
    # Plain `workbench` opens the TUI: skip importing the results/report/compare commands
    # (~60 ms of its start-up) when no subcommand or help was asked for.
    valued = ("-c", "--config", "--runs-dir", "--plugins-dir")
    words = [a for i, a in enumerate(argv) if not a.startswith("-") and (i == 0 or argv[i - 1] not in valued)]
    opens_tui = not words and not any(a in ("-h", "--help") for a in argv)
    parser = build_parser(with_extras=not opens_tui)
    args = parser.parse_args(argv)
    for key, default in (("config", config.DEFAULT_CONFIG), ("runs_dir", None), ("plugins_dir", None)):
        if not hasattr(args, key):
            setattr(args, key, default)
    ctx = Context(args)
    func = getattr(args, "func", cmd_tui)
    try:
        if getattr(args, "command", None) in READS_RUNS:
            revive_queue(ctx)
        return func(ctx)
    except (ConfigError, RunError) as exc:
        message = str(exc)
        if isinstance(exc, ConfigError):
            from workbench.tomlpos import with_line

            message = with_line(message)  # "file:LINE: key.path: ..." where the key is found
        print(f"workbench: error: {one_line(message)}", file=sys.stderr)
        return EXIT_USAGE
    except BrokenPipeError:  # `workbench status | head -1`: the reader left, nothing to say
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # so the interpreter's final flush can't fail again
        return EXIT_PIPE
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except OSError as exc:  # a full disk, a folder we may not write: the system's words, one line
        print(f"workbench: error: {one_line(os_error_text(exc))}", file=sys.stderr)
        return EXIT_ENVIRONMENT


# Commands that look at runs: each restarts a queue whose scheduler died (run and resume
# start one anyway; the TUI does the same as it watches).
READS_RUNS = ("status", "list", "queue", "stop", "results", "report", "compare")


def revive_queue(ctx: Context) -> None:
    try:
        root = ctx.root
    except RunError:
        return  # the command itself reports it
    try:
        revived = queue.revive(root)
    except OSError as exc:
        print(f"workbench: queued runs have no scheduler and none could be started: "
              f"{one_line(os_error_text(exc))}", file=sys.stderr)
        return
    if revived:
        print(f"workbench: queued runs had no scheduler (killed, or the machine rebooted): "
              f"started one for {len(queue.queued(root))} queued", file=sys.stderr)


def os_error_text(exc: OSError) -> str:
    """``/runs/a/3/config.json: No space left on device``, with a hint for the usual causes."""
    where = f"{exc.filename}: " if exc.filename else ""
    text = f"{where}{exc.strerror or exc}"
    if exc.errno == errno.ENOSPC:
        text += " (free some space, or point --runs-dir at a disk with room)"
    return text


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
