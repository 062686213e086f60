"""A study as readers see it, from its trial run folders alone (standard library only).

Each trial run's ``config.json`` holds its ``trial`` block (number, metric,
direction, sampled params) and its ``status.json`` the outcome, so the CLI's
``results``, the report and the TUI's study view need neither Optuna nor the
study's storage: the run folders are the summary. A trial's value is the
final evaluation's metric for a finished trial (what the study was told),
the last reported one for a pruned trial.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from workbench import runs
from workbench.metrics import BUILTIN, Metric
from workbench.present import state_word
from workbench.records import number, parse_status

TRIAL = "trial"  # the config.json block of a trial run
JOURNAL = "study.journal"  # the study's default storage, in the experiment's runs folder


@dataclass(frozen=True)
class TrialRow:
    """One trial: its run, sampled values, state (with the pruned step) and value."""

    ref: str
    number: int
    params: dict[str, Any]
    state: str
    value: float | None
    pruned_step: int | None = None
    best: bool = False

    @property
    def state_text(self) -> str:
        if self.state == "pruned" and self.pruned_step is not None:
            return f"pruned at step {self.pruned_step}"
        return self.state

    def to_json(self) -> dict[str, Any]:
        return {"run": self.ref, "trial": self.number, "params": self.params, "state": self.state,
                "pruned_step": self.pruned_step, "value": self.value, "best": self.best}


@dataclass(frozen=True)
class StudyView:
    """Every trial of one experiment's study, best marked by the metric's declared direction."""

    experiment: str
    metric: Metric
    params: list[str]
    log_params: frozenset[str] = frozenset()
    trials: list[TrialRow] = field(default_factory=list)

    @property
    def best(self) -> TrialRow | None:
        return next((t for t in self.trials if t.best), None)

    def best_so_far(self) -> list[tuple[int, float]]:
        """``(trial number, best finished value up to it)`` for each finished trial, in trial order."""
        out: list[tuple[int, float]] = []
        best: float | None = None
        for t in sorted(self.trials, key=lambda t: t.number):
            if t.state != "finished" or t.value is None:
                continue
            best = t.value if best is None or self.metric.is_better(t.value, best) else best
            out.append((t.number, best))
        return out

    def points(self, param: str) -> list[tuple[Any, float]]:
        """``(sampled value, metric)`` of every finished trial, for the scatter of ``param``."""
        return [(t.params[param], t.value) for t in self.trials
                if t.state == "finished" and t.value is not None and param in t.params]

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for t in self.trials:
            out[t.state] = out.get(t.state, 0) + 1
        return out

    def to_json(self) -> dict[str, Any]:
        return {"experiment": self.experiment, "metric": self.metric.name,
                "direction": self.metric.better, "params": self.params,
                "best": self.best.to_json() if self.best else None,
                "trials": [t.to_json() for t in self.trials]}


def study_view(root: Path, experiment: str) -> StudyView | None:
    """The study of ``experiment`` read from its trial runs; ``None`` when it has none."""
    rows: list[TrialRow] = []
    metric: Metric | None = None
    params: list[str] = []
    logs: set[str] = set()
    for run in runs.list_runs(root, experiment):
        cfg = runs.read_config(run.path)
        block = cfg.get(TRIAL)
        if not isinstance(block, dict) or not isinstance(block.get("number"), int):
            continue
        status = parse_status(run.status)
        name = str(block.get("metric"))
        if metric is None:
            metric = _metric(name, block.get("direction"), status.metrics)
            search = (cfg.get("experiment") or {}).get("search") or {}
            for path, spec in (search.get("params") or {}).items():
                params.append(path)
                if isinstance(spec, dict) and spec.get("log"):
                    logs.add(path)
        raw = run.status
        if status.state == "finished":
            value = number((raw.get("final") or {}).get(name))
        else:
            value = number((raw.get("last_eval") or {}).get(name))
        rows.append(TrialRow(run.ref, block["number"], dict(block.get("params") or {}), state_word(status),
                             value, status.pruned_step))
    if metric is None:
        return None
    finished = [t for t in rows if t.state == "finished" and t.value is not None]
    best_value = metric.best(t.value for t in finished if t.value is not None)
    best_ref = next((t.ref for t in finished if t.value == best_value), None)
    rows = [TrialRow(t.ref, t.number, t.params, t.state, t.value, t.pruned_step, t.ref == best_ref)
            for t in rows]
    return StudyView(experiment, metric, params, frozenset(logs), rows)


def _metric(name: str, direction: Any, declared: tuple[Metric, ...]) -> Metric:
    for m in declared:
        if m.name == name:
            return m
    if name in BUILTIN:
        return BUILTIN[name]
    return Metric(name, better="higher" if direction == "maximize" else "lower")


def is_study(root: Path, experiment: str) -> bool:
    """Whether ``experiment`` has a study in ``root`` (its storage file, or any trial run)."""
    try:
        folder = runs.experiment_dir(root, experiment)
    except runs.RunError:
        return False
    return (folder / JOURNAL).exists() or study_view(root, experiment) is not None


def fmt_param(value: Any) -> str:
    """A sampled value: floats in 3 significant digits (``0.000123``, ``1.2e-05``)."""
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


def trials_table(study: StudyView, star: str = "*") -> tuple[list[str], list[list[str]]]:
    """Header and rows of the trials table (trial order), the best value marked with ``star``."""
    header = ["run", "trial", *study.params, "state", study.metric.title]
    rows = []
    for t in sorted(study.trials, key=lambda t: t.number):
        value = study.metric.fmt(t.value) if t.value is not None else "-"
        rows.append([t.ref, str(t.number), *(fmt_param(t.params.get(p, "-")) for p in study.params),
                     t.state_text, value + (star if t.best else "")])
    return header, rows
