"""The training process's side of a search trial: report, ask whether to prune, tell the end.

A run whose ``config.json`` holds a ``trial`` block (written by
:mod:`workbench.search`) is one trial of an Optuna study. At every
evaluation the trainer reports the study's metric at that step and asks
``should_prune``; at the end it tells the study the final value (finished),
that the trial was pruned, or that it failed. Only rank 0 talks to the study.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from workbench import runs


class TrialReporter:
    """One trial of a study, opened from its run folder's ``trial`` block."""

    def __init__(self, run_dir: Path, block: dict[str, Any]) -> None:
        import optuna

        from workbench.schema import Experiment
        from workbench.search import open_storage, open_study

        experiment = Experiment.model_validate(runs.read_config(run_dir)["experiment"])
        if experiment.search is None:
            raise ValueError(f"{run_dir / runs.CONFIG}: a trial without its experiment's search table")
        self.metric: str = block["metric"]
        self.number: int = block["number"]
        storage = open_storage(block["storage"])
        self.study = open_study(block["study"], experiment.search, storage, block["direction"],
                                experiment.train.steps, experiment.train.eval_every)
        study_id = storage.get_study_id_from_name(block["study"])
        trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, self.number)
        self.trial = optuna.trial.Trial(self.study, trial_id)
        self.last_step: int | None = None

    def should_prune(self, event: dict[str, Any]) -> bool:
        """Report the evaluation's metric at its step; whether the pruner says stop here."""
        value = event.get(self.metric)
        step = event.get("step")
        if not isinstance(value, (int, float)) or not isinstance(step, int):
            return False
        if step == self.last_step:  # a resumed run re-evaluates its checkpoint's step
            return False
        self.last_step = step
        self.trial.report(float(value), step)
        return bool(self.trial.should_prune())

    def finished(self, final: dict[str, Any]) -> None:
        from optuna.trial import TrialState

        value = final.get(self.metric)
        if isinstance(value, (int, float)):
            self._tell(value)
        else:
            self._tell(None, TrialState.FAIL)

    def pruned(self) -> None:
        from optuna.trial import TrialState

        self._tell(None, TrialState.PRUNED)

    def failed(self) -> None:
        from optuna.trial import TrialState

        self._tell(None, TrialState.FAIL)

    def _tell(self, value: float | None, state: Any = None) -> None:
        try:
            self.study.tell(self.number, value, state=state, skip_if_finished=True)
        except Exception as exc:  # noqa: BLE001 - the run's own outcome stands; `run` reconciles later
            print(f"could not tell the study about trial {self.number}: {exc}", file=sys.stderr, flush=True)


def open_trial(run_dir: Path, config: dict[str, Any]) -> TrialReporter | None:
    """The run's trial, or ``None`` for an ordinary run."""
    from workbench.studyview import TRIAL

    block = config.get(TRIAL)
    return TrialReporter(run_dir, block) if isinstance(block, dict) else None
