"""Optuna studies over an experiment: ask for trials, queue them as runs, reconcile, importances.

Ask-and-tell across processes:

- ``workbench run lr-search`` (and ``r`` in the TUI) call
  :func:`workbench.launch.start_experiment`, which runs ``python -m
  workbench.search start ...``: this module, in its own short process, opens
  the study, *asks* it for as many trials as are missing and queues each as
  an ordinary run of the experiment (``lr-search#7``) whose ``config.json``
  holds the sampled values and a ``trial`` block (study, storage, number).
  Neither the TUI nor the CLI process imports Optuna.
- The training process (:mod:`workbench.train.trial`) *reports* the metric
  at every evaluation, asks ``should_prune`` and *tells* the end: finished
  with the final value, pruned, or failed.
- Storage: ``study.journal`` in the experiment's runs folder (Optuna's
  journal file storage: appends under a lock file, so trials ending at once
  lose nothing, and the lock works on network file systems where SQLite's
  ``fcntl`` locks don't), or the ``search.storage`` URL for a study shared
  by machines.

Optuna is imported inside functions only.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import sys
from pathlib import Path
from typing import Any, Literal

from workbench import runs
from workbench.schema import Experiment
from workbench.searchspec import Range, Search, apply, is_int
from workbench.studyview import JOURNAL, TRIAL

LOCK = ".study.lock"
Direction = Literal["minimize", "maximize"]


def storage_url(root: Path, experiment: str, search: Search) -> str:
    """Where the study lives: the ``search.storage`` URL, else ``journal:<runs>/<exp>/study.journal``."""
    if search.storage:
        return search.storage
    return f"journal:{runs.experiment_dir(root, experiment) / JOURNAL}"


def open_storage(url: str) -> Any:
    """An Optuna storage for ``url`` (``journal:PATH`` is the journal file storage)."""
    if url.startswith("journal:"):
        from optuna.storages import JournalStorage
        from optuna.storages.journal import JournalFileBackend

        path = Path(url[len("journal:"):])
        path.parent.mkdir(parents=True, exist_ok=True)
        return JournalStorage(JournalFileBackend(str(path)))
    from optuna.storages import RDBStorage

    return RDBStorage(url)  # sqlite:///..., postgresql://... (shared by several machines)


def pruner(search: Search, steps: int, eval_every: int) -> Any:
    import optuna

    if search.pruner == "median":
        return optuna.pruners.MedianPruner()
    if search.pruner == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=eval_every, max_resource=steps)
    return optuna.pruners.NopPruner()


def open_study(name: str, search: Search, storage: Any, direction: Direction, steps: int,
               eval_every: int) -> Any:
    """The study named after the experiment, created on first use (TPE sampler, seeded)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.create_study(
        study_name=name, storage=storage, direction=direction, load_if_exists=True,
        sampler=optuna.samplers.TPESampler(seed=search.seed),
        pruner=pruner(search, steps, eval_every),
    )


def direction_of(metric: Any) -> Direction:
    """Optuna's direction for a declared metric (``better`` is ``lower`` or ``higher``)."""
    return "maximize" if metric.better == "higher" else "minimize"


def sample(trial: Any, search: Search, values: dict[str, Any]) -> dict[str, Any]:
    """Ask ``trial`` for a value of every searched param (the dotted path is the param's name)."""
    out: dict[str, Any] = {}
    for path, spec in search.params.items():
        if isinstance(spec, Range):
            if is_int(values, path):
                out[path] = trial.suggest_int(path, int(spec.low), int(spec.high), log=spec.log,
                                              step=int(spec.step or 1))
            else:
                out[path] = trial.suggest_float(path, spec.low, spec.high, log=spec.log, step=spec.step)
        else:
            out[path] = trial.suggest_categorical(path, list(spec))
    return out


def trial_runs(root: Path, experiment: str) -> list[runs.Run]:
    """The runs of ``experiment`` that are trials of its study, oldest first."""
    return [r for r in runs.list_runs(root, experiment) if runs.read_config(r.path).get(TRIAL)]


def reconcile(study: Any, root: Path, experiment: str) -> list[str]:
    """Tell the study about trials whose process ended without telling it (crashed, killed).

    A run that reads failed (its process vanished, or died before it could
    tell) is recorded as failed; a finished one with its final value. Returns
    the refs told.
    """
    from optuna.trial import TrialState

    told = []
    by_number = {t.number: t for t in study.get_trials(deepcopy=False)}
    for run in trial_runs(root, experiment):
        block = runs.read_config(run.path)[TRIAL]
        trial = by_number.get(block.get("number"))
        if trial is None or trial.state != TrialState.RUNNING:
            continue
        status = run.refresh().status
        state = status.get("state")
        value = (status.get("final") or {}).get(block.get("metric"))
        if state == "failed" or (state == "finished" and not isinstance(value, (int, float))):
            study.tell(trial.number, state=TrialState.FAIL, skip_if_finished=True)
        elif state == "finished":
            study.tell(trial.number, value, skip_if_finished=True)
        elif state == "pruned":
            study.tell(trial.number, state=TrialState.PRUNED, skip_if_finished=True)
        else:
            continue
        told.append(run.ref)
    return told


def start(cfg: Any, name: str, root: Path, plugins_dir: Path | None = None,
          max_parallel: int | None = None) -> list[runs.Run]:
    """Start or resume the study of experiment ``name``: queue trials until it holds ``trials``.

    Stopped trials continue from their checkpoint (or start over when they
    had none, as a trial cancelled while queued does); then as many new trials as are missing are
    asked for and queued. One command at a time per study (a file lock), so
    two at once never overshoot ``trials``.
    """
    from workbench import launch, queue
    from workbench.plugins import load_plugins
    from workbench.searchspec import declared_metrics

    exp = cfg.get(name)
    search = exp.search
    if search is None:
        raise runs.RunError(f"{name} has no [experiments.{name}.search] table")
    registry = load_plugins(plugins_dir)
    declared = declared_metrics([registry.evaluators[e] for e in exp.evaluators
                                 if e in registry.evaluators])
    if search.metric not in declared:
        raise runs.RunError(f"experiments.{name}.search.metric: {search.metric!r} is not declared "
                            f"by this experiment's evaluators (declared: {', '.join(declared) or 'none'})")
    direction = direction_of(declared[search.metric])
    url = storage_url(root, name, search)
    folder = runs.experiment_dir(root, name)
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / LOCK, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        study = open_study(name, search, open_storage(url), direction, exp.train.steps, exp.train.eval_every)
        reconcile(study, root, name)
        queued: list[runs.Run] = []
        for run in trial_runs(root, name):
            status = run.refresh().status
            if status.get("state") != "stopped":
                continue
            if runs.latest_checkpoint(run.path) is not None:
                queued.append(launch.resume(run, max_parallel=max_parallel))
            else:  # cancelled while queued, or stopped before its first checkpoint: from the start
                runs.write_status(run.path, state="queued", cancelled=None, ended=None, message=None)
                queue.enqueue(run.path, gpus_needed=exp.distributed.nproc_per_node,
                              max_parallel=max_parallel)
                queued.append(run.refresh())
        values = exp.model_dump(mode="json")
        for _ in range(max(0, search.trials - len(study.trials))):
            trial = study.ask()
            params = sample(trial, search, values)
            trial_exp = Experiment.model_validate(apply(values, params))
            block = {"study": name, "storage": url, "number": trial.number, "metric": search.metric,
                     "direction": direction, "params": params}
            run = launch.start(cfg, name, root, plugins_dir, max_parallel=max_parallel,
                               experiment=trial_exp, extra={TRIAL: block})
            trial.set_user_attr("run", run.ref)
            queued.append(run)
    queue.ensure_scheduler(root)
    return queued


def stop(root: Path, experiment: str) -> list[str]:
    """Stop the study: cancel its queued trials, stop running ones (each saves a checkpoint).

    Every trial is asked for when the study is started, so nothing new comes
    after this; ``workbench run`` resumes the study.
    """
    from workbench import launch, queue

    done = []
    for run in trial_runs(root, experiment):
        state = run.refresh().state
        try:
            if state == "queued":
                queue.cancel(run)
                done.append(f"cancelled {run.ref}")
            elif state == "running":
                launch.stop(run)
                done.append(f"stopping {run.ref}")
        except runs.RunError:  # it ended meanwhile
            continue
    return done


def importances(root: Path, experiment: str) -> dict[str, float]:
    """Optuna's parameter importances (fANOVA) over the finished trials; empty when too few."""
    import optuna
    from optuna.trial import TrialState

    trials = trial_runs(root, experiment)
    if not trials:
        return {}
    block = runs.read_config(trials[-1].path)[TRIAL]
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.load_study(study_name=block["study"], storage=open_storage(block["storage"]))
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if len(complete) < MIN_FOR_IMPORTANCE or len({json.dumps(t.params, sort_keys=True)
                                                   for t in complete}) < 2:
        return {}
    try:
        return dict(optuna.importance.get_param_importances(study))
    except (RuntimeError, ValueError):  # e.g. every finished trial sampled the same value
        return {}


#: Finished trials needed before the report shows parameter importances.
MIN_FOR_IMPORTANCE = 4


def main(argv: list[str] | None = None) -> int:
    """``python -m workbench.search start CONFIG NAME RUNS``: what the launcher runs."""
    from workbench import config

    parser = argparse.ArgumentParser(prog="python -m workbench.search")
    parser.add_argument("action", choices=("start",))
    parser.add_argument("config")
    parser.add_argument("name")
    parser.add_argument("root")
    parser.add_argument("--plugins-dir")
    parser.add_argument("--max-parallel", type=int)
    args = parser.parse_args(argv)
    try:
        cfg = config.load(args.config)
        started = start(cfg, args.name, Path(args.root), Path(args.plugins_dir) if args.plugins_dir
                        else None, args.max_parallel)
    except (config.ConfigError, runs.RunError) as exc:
        print(str(exc), file=sys.stderr)
        return 2
    for run in started:
        print(json.dumps({"experiment": run.experiment, "run_id": run.run_id, "path": str(run.path)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
