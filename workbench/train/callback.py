"""The TrainerCallback that turns the Trainer's progress into run-folder events.

It writes ``train`` events (with the tokens trained since the last log and
their rate), runs held-out evaluations every ``train.eval_every`` steps,
writes ``checkpoint`` events and samples at each checkpoint, keeps
``status.json`` current, and turns a stop request into "checkpoint now,
then stop".
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from workbench.train import divergence, ranks
from workbench.train.evaluation import Evaluations
from workbench.train.loss_scale import LossScaleWatch
from workbench.train.memory import PeakMemory
from workbench.train.signals import StopRequest


class EventCallback(TrainerCallback):
    """See the module docstring. ``stopped`` tells the caller a stop request ended training."""

    def __init__(self, run_dir: Path, experiment: Any, evaluations: Evaluations,
                 stop: StopRequest, cuda: bool = False, trial: Any = None) -> None:
        self.run_dir = run_dir
        self.exp = experiment
        self.evals = evaluations
        self.stop = stop
        self.cuda = cuda
        self.memory = PeakMemory.for_device(cuda)
        self.loss_scale = LossScaleWatch()  # the runner hands it fp16's grad scaler
        self.trial = trial  # a search trial's TrialReporter (rank 0), or None
        self.stopped = False
        self.prune_at: int | None = None  # the step whose evaluation the pruner cut the trial at
        self.pruned = False
        self.max_steps = experiment.train.steps
        self.pending_eval = False
        self.step_started = 0.0
        self.interval_seconds = 0.0  # step compute time since the last train event
        self.session_seconds = 0.0  # step compute time in this process
        self.session_tokens = 0
        self.session_start_tokens = 0
        self.tokens_logged = 0

    # --- timing and tokens -------------------------------------------------

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.tokens_logged = state.num_input_tokens_seen
        self.session_start_tokens = state.num_input_tokens_seen
        self.max_steps = state.max_steps or self.max_steps

    def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.step_started = time.perf_counter()

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        elapsed = time.perf_counter() - self.step_started
        self.interval_seconds += elapsed
        self.session_seconds += elapsed
        self.session_tokens = state.num_input_tokens_seen - self.session_start_tokens
        step = state.global_step
        self._watch_loss_scale(step)
        if ranks.agree(self.stop.requested or self.prune_at is not None):
            if ranks.agree(self.prune_at is not None):  # a second all-reduce only on the way out
                self.pruned = True
                control.should_training_stop = True
                return
            self.stopped = True
            control.should_save = True
            control.should_training_stop = True
            control.should_log = True
            return
        if step % self.exp.train.save_every == 0 or step >= self.max_steps:  # a save may follow
            divergence.check_weights(kwargs["model"], step, self.run_dir, self.exp.train.learning_rate)
        # The last step's evaluation is the final one, made after training.
        if step % self.exp.train.eval_every == 0 and step < self.max_steps:
            if control.should_log:
                self.pending_eval = True  # after this step's train event, in on_log
            else:
                self._evaluate(kwargs["model"], step)

    def _watch_loss_scale(self, step: int) -> None:
        skipped = self.loss_scale.observe(step)
        if skipped is None or not ranks.is_main():
            return
        ranks.event(self.run_dir, "status", state="running", step=step, message=skipped.message())
        ranks.status(self.run_dir, **self.loss_scale.fields())
        print(skipped.message(), flush=True)

    @property
    def tokens_per_s(self) -> float:
        """Trained tokens per second of step time in this process."""
        return self.session_tokens / self.session_seconds if self.session_seconds else 0.0

    # --- events --------------------------------------------------------------

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None,
               **kwargs: Any) -> None:
        logs = logs or {}
        if "loss" in logs:
            self._train_event(state, logs)
            divergence.check_loss(logs["loss"], state.global_step, self.run_dir,
                                  self.exp.train.learning_rate, fp16=bool(getattr(args, "fp16", False)))
        if self.pending_eval:
            self.pending_eval = False
            self._evaluate(kwargs["model"], state.global_step)

    def _train_event(self, state: Any, logs: dict[str, Any]) -> None:
        if not ranks.is_main():  # the logged loss is already averaged over every rank
            return
        step = state.global_step
        tokens = state.num_input_tokens_seen - self.tokens_logged
        self.tokens_logged = state.num_input_tokens_seen
        rate = tokens / self.interval_seconds if self.interval_seconds else 0.0
        self.interval_seconds = 0.0
        fields: dict[str, Any] = {
            "step": step, "loss": logs["loss"], "lr": logs.get("learning_rate"),
            "grad_norm": logs.get("grad_norm"), "tokens": tokens,
            "tokens_per_s": round(rate, 1), "epoch": state.epoch,
        }
        memory = self.memory.fields()
        fields.update(memory, **self.loss_scale.fields())
        ranks.event(self.run_dir, "train", **fields)
        ranks.status(self.run_dir, step=step, max_steps=self.max_steps,
                     tokens_per_s=fields["tokens_per_s"], loss=logs["loss"], **memory)
        lr = fields["lr"]
        grad = fields["grad_norm"]
        print(f"step {step}/{self.max_steps}  loss {logs['loss']:.4f}"
              + (f"  lr {lr:.2e}" if lr is not None else "")
              + (f"  grad_norm {grad:.3f}" if grad is not None else "")
              + f"  {rate:.0f} tok/s", flush=True)

    def _evaluate(self, model: Any, step: int) -> None:
        if not ranks.is_main():  # other ranks wait for rank 0 at the next all-reduce
            return
        with self.memory.evaluation():
            event = self.evals.evaluate(model, step)
        if event is None:
            return
        write_eval_status(self.run_dir, self.evals, event)
        print(eval_line(event, self.evals.declared), flush=True)
        if self.trial is not None and self.trial.should_prune(event):
            self.prune_at = step  # training stops at the next step end, on every rank
            print(f"pruned at step {step}: the study's pruner says this trial is behind", flush=True)

    def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if not ranks.is_main():
            return
        step = state.global_step
        name = f"checkpoint-{step}"
        path = Path(args.output_dir) / name
        ranks.event(self.run_dir, "checkpoint", step=step,
                    path=str(path.relative_to(self.run_dir)) if path.is_relative_to(
                        self.run_dir) else str(path))
        ranks.status(self.run_dir, last_checkpoint=step)
        print(f"checkpoint {name}", flush=True)
        # Stopping: leave fast. Last step: the final samples follow right after training.
        if not self.stopped and step < self.max_steps and ranks.is_main():
            with self.memory.evaluation():
                self.evals.samples(kwargs["model"], step, name)


def write_eval_status(run_dir: Path, evals: Evaluations, event: dict[str, Any]) -> None:
    """Put the latest evaluation, the best values so far and evaluator errors in ``status.json``."""
    last = {k: v for k, v in event.items() if k not in ("type", "time")}
    extra = {"evaluator_errors": evals.errors} if evals.errors else {}
    ranks.status(run_dir, last_eval=last,
                 **{f"best_{k}": v for k, v in evals.best.items()}, **extra)
    if ranks.is_main():  # keep the readers' summary warm: folds only the events since the last eval
        from workbench.summary import summarise

        summarise(run_dir)


def eval_line(event: dict[str, Any], declared: Any = ()) -> str:
    """The train.log line of an evaluation: every metric, declared ones in their format."""
    from workbench.present import eval_line as line

    return line(event, declared)
