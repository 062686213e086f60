"""The training process's life: status, plugins, training, final artefacts, failure.

``run(run_dir)`` reads ``config.json``, marks the run running, trains (or
resumes from the latest checkpoint), saves the adapter, evaluates and
samples one last time and marks the run finished. A stop request ends in
``stopped`` with a checkpoint; any exception ends in ``failed`` with a
one-line ``error``, an ``error_kind`` and often a ``hint``, the traceback
going to ``train.log``. The exit code is 0 unless the run failed.
"""

from __future__ import annotations

import os
import sys
import time
import traceback
import warnings
from pathlib import Path
from typing import Any

from workbench import runs
from workbench.train import ranks
from workbench.train.errors import UserError, describe
from workbench.train.signals import Interrupted, StopRequest


def run(run_dir: Path, resume: bool = False, stop: StopRequest | None = None) -> int:
    """Train the run in ``run_dir`` to the end; return the process exit code."""
    run_dir = Path(run_dir).resolve()
    stop = stop or StopRequest()
    now = time.time()
    config = runs.read_config(run_dir)
    if ranks.is_main():
        runs.reserve_space(run_dir)  # so a full disk can still be reported (see runs.RESERVE)
    max_steps = config.get("experiment", {}).get("train", {}).get("steps")
    ranks.status(
        run_dir, state="running", pid=os.getpid(), pid_start=runs.process_start_time(os.getpid()),
        **({"resumed": now} if resume else {"started": now, "step": 0}), max_steps=max_steps,
        error=None, error_kind=None, hint=None, exit_code=None, ended=None,
        world_size=ranks.world_size(),
    )
    ranks.event(run_dir, "status", state="running",
                message=f"{'resumed' if resume else 'started'} (pid {os.getpid()})")
    session: Session | None = None
    try:
        session = Session(run_dir, config, stop)
        session.train(resume)
    except Interrupted as exc:
        end_run(run_dir, session, "stopped", str(exc))
    except (Exception, KeyboardInterrupt) as exc:
        failure = describe(exc, run_dir)
        if not isinstance(exc, UserError):  # a user's mistake gets its message, not a traceback
            traceback.print_exc()
        if session is not None and session.trial is not None:
            session.trial.failed()  # the study records it and the search goes on
        end_run(run_dir, session, "failed", failure.error, code=1, error=failure.error,
                error_kind=failure.kind, hint=failure.hint)
        return 1
    return 0


def end_run(run_dir: Path, session: Session | None, state: str, message: str, code: int = 0,
            **fields: Any) -> None:
    """Write the final status and ``status`` event, then call the ``post_train`` hooks."""
    ranks.status(run_dir, state=state, ended=time.time(), exit_code=code, **fields)
    try:
        ranks.event(run_dir, "status", state=state, message=message,
                    **({"step": fields["step"]} if "step" in fields else {}))
        print(f"{state}: {message}" + (f"\nhint: {fields['hint']}" if fields.get("hint") else ""),
              file=sys.stderr if state == "failed" else sys.stdout, flush=True)
    except OSError:  # a full disk: status.json already holds the outcome
        pass
    if ranks.is_main():
        runs.release_space(run_dir)
        from workbench.summary import summarise

        summarise(run_dir)  # readers find the run's summary warm; best effort on a full disk
    if session is not None:
        session.post_train(state)


class Session:
    """One process's worth of training for a run folder."""

    def __init__(self, run_dir: Path, config: dict[str, Any], stop: StopRequest) -> None:
        from workbench.schema import Experiment

        if not config.get("experiment"):
            raise UserError(f"{run_dir / runs.CONFIG} is missing or unreadable", kind="config",
                            hint="start runs with `workbench run`, which writes it")
        self.run_dir = run_dir
        self.stop = stop
        self.exp = Experiment.model_validate(config["experiment"])
        self.registry = self._load_plugins(config.get("plugins_dir"))
        self.trial: Any = None
        if ranks.is_main() and config.get("trial"):  # a search trial: rank 0 talks to the study
            from workbench.train.trial import open_trial

            self.trial = open_trial(run_dir, config)
        from workbench.train.sources import preflight

        try:
            preflight(config)  # a hub model or dataset that can't load fails before torch does
        except Exception:
            if self.trial is not None:  # no session to fail later: tell the study now
                self.trial.failed()
            raise

    def _load_plugins(self, plugins_dir: str | None) -> Any:
        from workbench.plugins import load_plugins

        reg = load_plugins(plugins_dir)
        if reg.failures:
            problems = [f"{f.plugin}: {f.error}" for f in reg.failures]
            ranks.status(self.run_dir, plugin_failures=problems)
            ranks.event(self.run_dir, "status", state="running",
                        message="some plugins failed to load: " + "; ".join(problems))
            print("plugin failures:\n  " + "\n  ".join(problems), file=sys.stderr, flush=True)
        return reg

    def _lookup(self) -> tuple[Any, list[Any]]:
        """The experiment's backend and evaluators, or a UserError naming what is unknown."""
        reg, exp = self.registry, self.exp
        failed = reg.failure_note()
        if exp.backend not in reg.backends:
            raise UserError(f"unknown backend {exp.backend!r}; known: "
                            f"{', '.join(sorted(reg.backends)) or 'none'}{failed}", kind="config")
        unknown = [e for e in exp.evaluators if e not in reg.evaluators]
        if unknown:
            raise UserError(f"unknown evaluator(s) {', '.join(unknown)}; known: "
                            f"{', '.join(sorted(reg.evaluators)) or 'none'}{failed}", kind="config")
        return reg.backends[exp.backend], [reg.evaluators[e] for e in exp.evaluators]

    def post_train(self, state: str) -> None:
        try:
            self.registry.pm.hook.post_train(experiment=self.exp, run_dir=str(self.run_dir),
                                             state=state)
        except Exception:  # noqa: BLE001 - a plugin's cleanup must not change the outcome
            print("post_train hook failed:", file=sys.stderr)
            traceback.print_exc()

    def _resume_point(self) -> Path:
        """The latest complete checkpoint, announced with a ``resume`` event; a UserError if none."""
        found = runs.latest_checkpoint(self.run_dir)
        if found is None:
            raise UserError(f"nothing to resume: no checkpoint in {self.run_dir / runs.CHECKPOINTS} "
                            "(a complete one holds trainer_state.json and the adapter)",
                            hint="start a new run instead")
        ranks.event(self.run_dir, "resume", from_step=found.step, checkpoint=found.name)
        ranks.status(self.run_dir, step=found.step)
        print(f"resuming from {found.name}", flush=True)
        return found.path

    def train(self, resume: bool) -> None:
        """Train to the end (or to a stop request) and write the run's final state."""
        from workbench.train import batching, data
        from workbench.train import trainer as build
        from workbench.train.callback import EventCallback
        from workbench.train.evaluation import Evaluations
        from workbench.train.loss_scale import LossScaleWatch

        _quiet_libraries()
        exp, run_dir = self.exp, self.run_dir
        backend, evaluators = self._lookup()
        checkpoint = self._resume_point() if resume else None

        hardware = build.detect_hardware(exp.train.precision)
        train_texts, eval_texts = data.load_texts(exp.data)
        print(f"data: {len(train_texts)} training texts, {len(eval_texts)} held out", flush=True)
        self.registry.pm.hook.pre_model_load(experiment=exp)
        model, tokenizer = build.load_model(backend, exp, hardware)
        model = build.attach_lora(model, exp, backend)
        self.registry.pm.hook.post_lora_load(experiment=exp, model=model)
        mode, note = batching.resolve(exp.train.batching, model, tokenizer.pad_token_id)
        batching.announce(mode, note)

        evals = Evaluations(run_dir, exp, evaluators, tokenizer, eval_texts, hardware.autocast,
                            batching=mode)
        # the run folder declares its metrics, so readers need no plugins to show them
        ranks.status(run_dir, metrics=[m.to_json() for m in evals.declared])
        if resume:  # the best values so far survive the restart
            status = runs.read_status(run_dir)
            evals.best = {m.name: status[f"best_{m.name}"] for m in evals.declared
                          if isinstance(status.get(f"best_{m.name}"), (int, float))}
        callback = EventCallback(run_dir, exp, evals, self.stop, cuda=hardware.cuda, trial=self.trial)
        sft = build.build_trainer(model, tokenizer, train_texts,
                                  build.sft_config(exp, run_dir, hardware, mode), [callback],
                                  batching=mode)
        callback.loss_scale = LossScaleWatch(getattr(sft.accelerator, "scaler", None))
        if self.stop.requested:  # asked to stop while loading: nothing trained, nothing to save
            end_run(run_dir, self, "stopped", "stopped before training")
            return

        t0 = time.time()
        sft.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
        step = sft.state.global_step
        summary = {"step": step, "train_seconds": round(time.time() - t0, 2),
                   "tokens_per_s": round(callback.tokens_per_s, 1),
                   "tokens": sft.state.num_input_tokens_seen}
        if callback.pruned:
            at = callback.prune_at if callback.prune_at is not None else step
            if self.trial is not None:
                self.trial.pruned()
            end_run(run_dir, self, "pruned", f"pruned at step {at}", pruned_step=at, **summary)
            return
        if callback.stopped:
            end_run(run_dir, self, "stopped", f"stopped at step {step} with a checkpoint",
                    **summary)
            return
        self._finish(sft.model, tokenizer, evals, summary, callback.memory)

    def _finish(self, model: Any, tokenizer: Any, evals: Any, summary: dict[str, Any],
                memory: Any) -> None:
        """Save the adapter, evaluate and sample one last time, mark the run finished."""
        from workbench.train.callback import eval_line, write_eval_status

        run_dir, step = self.run_dir, summary["step"]
        if not ranks.is_main():  # rank 0 saves, evaluates and reports for the whole run
            return
        adapter = run_dir / runs.ADAPTER
        model.save_pretrained(adapter)
        tokenizer.save_pretrained(adapter)
        training = memory.fields()  # before the final evaluation adds to the eval peak
        with memory.evaluation():
            final = evals.evaluate(model, step)
            if final is not None:
                write_eval_status(run_dir, evals, final)
                print(eval_line(final, evals.declared), flush=True)
            evals.samples(model, step, "final")
        summary = {**summary, **training, **{k: v for k, v in memory.fields().items()
                                             if k.startswith("eval_")}}
        metrics = {k: v for k, v in (final or {}).items() if k not in ("type", "time")}
        if self.trial is not None:  # told before `finished` is written: a reader never sees it ahead
            self.trial.finished(metrics)
        end_run(run_dir, self, "finished",
                f"{step} steps in {summary['train_seconds']:.0f}s, "
                f"{summary['tokens_per_s']:.0f} tokens/s",
                adapter=str(adapter), final=metrics, **summary)


def _quiet_libraries() -> None:
    """No progress bars in train.log: ``tail`` should show one line per step."""
    import datasets
    import transformers

    datasets.disable_progress_bars()
    transformers.utils.logging.disable_progress_bar()
    # peft asks transformers 5 for a renamed attribute on every LoRA attach; nothing to act on.
    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.* is deprecated",
                            category=FutureWarning)
