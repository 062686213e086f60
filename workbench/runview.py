"""The read model of a run: what every surface shows, derived once from its folder.

:func:`view` turns a :class:`~workbench.runs.Run` into a :class:`RunView`:
its state, model label, steps, the best and final value of every metric
(declared ones in their order, then any other a run reported), the timings
(start, training time without resume gaps, average tokens/s), complete
checkpoints, errors, warnings (evaluators that raised, plugins that failed
to load) and what is damaged in the folder. CLI commands, the TUI and the
report render views; none re-derives them from raw files. Reading costs a
``stat`` and a small JSON file per run once the summary is warm (see
:mod:`workbench.summary`). Standard library only.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from workbench import runs
from workbench.metrics import BUILTIN, Metric, undeclared
from workbench.present import model_label, state_text, state_word
from workbench.records import DAMAGED, EvaluatorError, Status, number, parse_status
from workbench.series import downsample
from workbench.summary import Point, Summary, summarise

LOSS = "loss"  # the training loss series name for :meth:`RunView.series`
LR = "lr"  # the learning rate logged with each train event
GRAD_NORM = "grad_norm"  # the gradient norm logged with each train event
TRAIN_SERIES = (LOSS, LR, GRAD_NORM)  # series of train events (the rest are evaluation metrics)


@dataclass(frozen=True)
class Timings:
    """When the run started, and how long and how fast it trained.

    ``started``: the first process's start (else when it was launched or
    created). ``train_seconds``: wall time in training processes, summed
    over them, the gaps between a stop and a resume excluded.
    ``tokens_per_s``: trained tokens over step time, averaged over every
    measured step (not the last one's rate). ``recent_tokens_per_s``: the
    same over the last :data:`~workbench.summary.WINDOW` measured steps (what
    a running run does now; the progress line shows it).
    """

    started: float | None = None
    ended: float | None = None
    train_seconds: float | None = None
    tokens_per_s: float | None = None
    recent_tokens_per_s: float | None = None


@dataclass(frozen=True)
class MetricResult:
    """One metric of a run: its best value (by its direction) and step, and the final value."""

    metric: Metric
    best: float | None
    best_step: int | None
    final: float | None

    @property
    def name(self) -> str:
        return self.metric.name


@dataclass
class RunView:
    """See the module docstring. Build with :func:`view`."""

    run: runs.Run
    status: Status
    experiment: dict[str, Any]
    model: str
    steps: int | None
    max_steps: int | None
    loss: float | None
    metrics: list[MetricResult]
    timings: Timings
    checkpoints: list[runs.Checkpoint]
    errors: list[str]
    warnings: list[str]
    damaged: list[str]
    summary: Summary = field(repr=False)

    @property
    def ref(self) -> str:
        return self.run.ref

    @property
    def path(self) -> Path:
        return self.run.path

    @property
    def state(self) -> str:
        """The state word (``cancelled`` for a run taken out of the queue; ``damaged``)."""
        return state_word(self.status)

    @property
    def state_text(self) -> str:
        """The state with its detail, e.g. ``running 3/10`` or ``damaged: <reason>``."""
        return state_text(self.status, self.damaged[len(self.status.damaged):])

    @property
    def backend(self) -> str | None:
        b = self.experiment.get("backend")
        return b if isinstance(b, str) else None

    @property
    def lora_r(self) -> int | None:
        lora = self.experiment.get("lora")
        r = lora.get("r") if isinstance(lora, dict) else None
        return r if isinstance(r, int) and not isinstance(r, bool) else None

    def metric(self, name: str) -> MetricResult | None:
        return next((m for m in self.metrics if m.name == name), None)

    def declared(self) -> dict[str, Metric]:
        return {m.name: m.metric for m in self.metrics}

    def series(self, name: str, buckets: int | None = None) -> list[Point]:
        """``(step, value)`` points of ``loss``, ``lr``, ``grad_norm`` or a metric, thinned to about
        ``2 * buckets``.

        The train series are kept downsampled as events arrive (at most about
        a thousand points however long the run); ``buckets`` thins further
        for drawing.
        """
        points = (getattr(self.summary, name).points() if name in TRAIN_SERIES
                  else self.summary.metric_series(name))
        return downsample(points, buckets) if buckets else points

    def samples(self) -> tuple[int | None, list[dict[str, Any]]]:
        """The samples of the last sampled step (the ``final`` ones when there are both)."""
        found = self.summary.samples
        if not found:
            return None, []
        last = max((s.get("step") or 0) for s in found)
        at_last = [s for s in found if (s.get("step") or 0) == last]
        if any(s.get("checkpoint") == "final" for s in at_last):
            at_last = [s for s in at_last if s.get("checkpoint") == "final"]
        return last, sorted(at_last, key=lambda s: s.get("index") or 0)


def _metrics(status: Status, summary: Summary) -> list[MetricResult]:
    declared: dict[str, Metric] = {m.name: m for m in status.metrics}
    names = list(declared)
    for name in summary.metric_names() + list(status.best):
        if name not in declared:
            declared[name] = BUILTIN.get(name) or undeclared(name)
            names.append(name)
    out = []
    for name in dict.fromkeys(names):
        metric = declared[name]
        points = summary.metric_series(name)
        if points:
            best_pt = points[0]  # the first step that reached the best value
            for p in points:
                if metric.is_better(p[1], best_pt[1]):
                    best_pt = p
            if metric.better is None:
                best_pt = points[-1]
            out.append(MetricResult(metric, best_pt[1], int(best_pt[0]), points[-1][1]))
        elif name in status.best:
            out.append(MetricResult(metric, status.best[name], None, None))
        elif name in declared and status.metrics:
            out.append(MetricResult(metric, None, None, None))
    return out


def _timings(status: Status, summary: Summary) -> Timings:
    started = status.started or status.launched or status.created
    if not summary.is_resumed and status.train_seconds is not None:
        seconds: float | None = status.train_seconds
    else:
        total = 0.0
        for i, session in enumerate(summary.sessions):
            if not session:
                continue
            lo, hi = session
            if i == 0 and status.started is not None:
                lo = min(lo, status.started)
            total += max(0.0, hi - lo)
        seconds = total if total > 0 else None
    rate = (summary.train_tokens / summary.train_seconds if summary.train_seconds > 0
            else status.tokens_per_s)
    return Timings(started, status.ended, seconds, rate, summary.recent_tokens_per_s)


def _warnings(status: Status, summary: Summary) -> list[str]:
    errors: dict[str, EvaluatorError] = {}
    for name, info in summary.eval_errors.items():
        errors[name] = EvaluatorError(name, str(info.get("error")), info.get("step"))
    for err in status.evaluator_errors:
        errors[err.evaluator] = err
    out = [str(e) for e in errors.values()]
    out += [f"plugin failed to load: {f}" for f in status.plugin_failures]
    return out


def _typed(run: runs.Run) -> Status:
    raw = dict(run.status)
    problem = raw.pop(runs.STATUS_PROBLEM, None)
    return parse_status(raw, problem)


def view(run: runs.Run, default_models: Mapping[str, str] | None = None) -> RunView:
    """The read model of ``run`` (its ``status`` as already read, liveness applied)."""
    status = _typed(run)
    config = runs.read_config(run.path)
    found = config.get("experiment")
    experiment: dict[str, Any] = found if isinstance(found, dict) else {}
    summary = summarise(run.path)
    damaged = [*status.damaged]
    if summary.malformed:
        more = summary.malformed - len(summary.damage)
        damaged += summary.damage + ([f"{more} more malformed event lines"] if more > 0 else [])
    if not experiment and status.state != DAMAGED:
        damaged.append("config.json is missing or unreadable")
    backend = experiment.get("backend") if isinstance(experiment.get("backend"), str) else None
    source = experiment.get("model") if isinstance(experiment.get("model"), str) else None
    if not source and backend and default_models and isinstance(default_models.get(backend), str):
        source = default_models[backend]
    found_train = experiment.get("train")
    train: dict[str, Any] = found_train if isinstance(found_train, dict) else {}
    max_steps = status.max_steps
    if max_steps is None and isinstance(train.get("steps"), int):
        max_steps = train["steps"]
    steps = summary.max_step
    if status.step is not None and (steps is None or status.step > steps):
        steps = status.step
    if status.state == "queued" and not steps:
        steps = None
    last_loss = number((summary.last_train or {}).get("loss"))
    errors = [e for e in (status.error, f"hint: {status.hint}" if status.hint else None) if e]
    return RunView(
        run=run, status=status, experiment=experiment, model=model_label(source, backend),
        steps=steps, max_steps=max_steps, loss=last_loss if last_loss is not None else status.loss,
        metrics=_metrics(status, summary), timings=_timings(status, summary),
        checkpoints=runs.checkpoints(run.path), errors=errors, warnings=_warnings(status, summary),
        damaged=damaged, summary=summary,
    )


def views(selected: Iterable[runs.Run], default_models: Mapping[str, str] | None = None) -> list[RunView]:
    return [view(run, default_models) for run in selected]


def best_run(candidates: Iterable[RunView], metric: str) -> RunView | None:
    """The run with the best value of ``metric`` (by its declared direction), e.g. an experiment's best."""
    best: tuple[RunView, MetricResult] | None = None
    for v in candidates:
        m = v.metric(metric)
        if m is None or m.best is None:
            continue
        if best is None or m.metric.is_better(m.best, best[1].best):  # type: ignore[arg-type]
            best = (v, m)
    return best[0] if best else None


@dataclass(frozen=True)
class BestResult:
    """An experiment's best value of one metric, and the run that reached it."""

    metric: Metric
    run: runs.Run
    value: float


def experiment_bests(history: Iterable[runs.Run]) -> dict[str, BestResult]:
    """Each metric's best recorded value over an experiment's runs, from their statuses alone.

    Every run counts, whatever its state: a stopped or cancelled latest run
    does not hide an earlier run's result. The direction is the metric's
    declared one (a run's own declaration, else the built-in's; an undeclared
    metric keeps its first value).
    """
    found: dict[str, BestResult] = {}
    for run in history:
        st = _typed(run)
        declared = {m.name: m for m in st.metrics}
        for name, value in st.best.items():
            metric = declared.get(name) or (found[name].metric if name in found else undeclared(name))
            if name not in found or metric.is_better(value, found[name].value):
                found[name] = BestResult(metric, run, value)
    return found


def experiment_results(history: list[runs.Run], latest: RunView | None) -> dict[str, BestResult]:
    """:func:`experiment_bests`, the latest run's view counted too (its events may be ahead of its status)."""
    found = experiment_bests(history)
    if latest is None or not history or latest.path != history[-1].path:
        return found
    for m in latest.metrics:
        if m.best is None:
            continue
        old = found.get(m.name)
        if old is None or old.run.path == latest.path or m.metric.is_better(m.best, old.value):
            found[m.name] = BestResult(m.metric, latest.run, m.best)
    return found


def _stamp(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_mtime_ns, st.st_size


class Views:
    """Views of many runs, rebuilt only for runs whose folder changed (for a UI that polls).

    A run's view is reused while its status (as read, liveness applied),
    ``events.jsonl``, ``config.json`` and ``checkpoints/`` are unchanged, so
    polling a table of runs costs a few ``stat`` calls per run.
    """

    def __init__(self, default_models: Mapping[str, str] | None = None) -> None:
        self.default_models = default_models
        self._cache: dict[Path, tuple[Any, RunView]] = {}

    def get(self, run: runs.Run) -> RunView:
        key = (run.status, _stamp(run.path / runs.EVENTS), _stamp(run.path / runs.CONFIG),
               _stamp(run.path / runs.CHECKPOINTS))
        cached = self._cache.get(run.path)
        if cached is not None and cached[0] == key:
            cached[1].run = run
            return cached[1]
        fresh = view(run, self.default_models)
        self._cache[run.path] = (key, fresh)
        return fresh

    def forget(self, keep: Iterable[Path]) -> None:
        """Drop the views of runs not in ``keep`` (deleted folders)."""
        wanted = set(keep)
        for path in [p for p in self._cache if p not in wanted]:
            del self._cache[path]
