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
from workbench.train.errors import UserError, describe
from workbench.train.signals import Interrupted, StopRequest


def run(run_dir: Path, resume: bool = False, stop: StopRequest | None = None) -> int:
    """Train the run in ``run_dir`` to the end; return the process exit code."""
    run_dir = Path(run_dir).resolve()
    stop = stop or StopRequest()
    now = time.time()
    config = runs.read_config(run_dir)
    max_steps = config.get("experiment", {}).get("train", {}).get("steps")
    runs.write_status(
        run_dir, state="running", pid=os.getpid(), pid_start=runs.process_start_time(os.getpid()),
        **({"resumed": now} if resume else {"started": now, "step": 0}), max_steps=max_steps,
        error=None, error_kind=None, hint=None, exit_code=None, ended=None,
    )
    runs.append_event(run_dir, "status", state="running",
                      message=f"{'resumed' if resume else 'started'} (pid {os.getpid()})")
    session: Session | None = None
    try:
        session = Session(run_dir, config, stop)
        state = session.train(resume)
    except (Exception, KeyboardInterrupt, Interrupted) as exc:
        traceback.print_exc()
        if isinstance(exc, Interrupted):
            _end(run_dir, session, "stopped", 0, message=str(exc))
            return 0
        failure = describe(exc)
        print(f"failed: {failure.error}", file=sys.stderr, flush=True)
        _end(run_dir, session, "failed", 1, message=failure.error, error=failure.error,
             error_kind=failure.kind, hint=failure.hint)
        return 1
    return 0 if state in ("finished", "stopped") else 1


def _end(run_dir: Path, session: Session | None, state: str, code: int, message: str,
         **fields: Any) -> None:
    runs.write_status(run_dir, state=state, ended=time.time(), exit_code=code, **fields)
    runs.append_event(run_dir, "status", state=state, message=message)
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
        self.registry: Any = None
        self.registry = self._load_plugins(config.get("plugins_dir"))

    def _load_plugins(self, plugins_dir: str | None) -> Any:
        from workbench.plugins import load_plugins

        reg = load_plugins(plugins_dir)
        if reg.failures:
            problems = [f"{f.plugin}: {f.error}" for f in reg.failures]
            runs.write_status(self.run_dir, plugin_failures=problems)
            runs.append_event(self.run_dir, "status", state="running",
                              message="some plugins failed to load: " + "; ".join(problems))
            print("plugin failures:\n  " + "\n  ".join(problems), file=sys.stderr, flush=True)
        return reg

    def _lookup(self) -> tuple[Any, list[Any]]:
        reg, exp = self.registry, self.exp
        failed = f" (failed plugins: {', '.join(f.plugin for f in reg.failures)})" \
            if reg.failures else ""
        if exp.backend not in reg.backends:
            raise UserError(f"unknown backend {exp.backend!r}; known: "
                            f"{', '.join(sorted(reg.backends)) or 'none'}{failed}", kind="config")
        unknown = [e for e in exp.evaluators if e not in reg.evaluators]
        if unknown:
            raise UserError(f"unknown evaluator(s) {', '.join(unknown)}; known: "
                            f"{', '.join(sorted(reg.evaluators)) or 'none'}{failed}", kind="config")
        return reg.backends[exp.backend], [reg.evaluators[e] for e in exp.evaluators]

    def post_train(self, state: str) -> None:
        if self.registry is None:
            return
        try:
            self.registry.pm.hook.post_train(experiment=self.exp, run_dir=str(self.run_dir),
                                             state=state)
        except Exception:  # noqa: BLE001 - a plugin's cleanup must not change the outcome
            print("post_train hook failed:", file=sys.stderr)
            traceback.print_exc()

    def train(self, resume: bool) -> str:
        """Train to the end (or to a stop request); return the final state."""
        from workbench.train import data
        from workbench.train import trainer as build
        from workbench.train.callback import EventCallback, eval_line, write_eval_status
        from workbench.train.evaluation import Evaluations

        _quiet_libraries()
        exp, run_dir = self.exp, self.run_dir
        backend, evaluators = self._lookup()
        checkpoint = None
        if resume:
            found = build.latest_checkpoint(run_dir)
            if found is None:
                raise UserError(f"nothing to resume: no checkpoint in {run_dir / runs.CHECKPOINTS}",
                                kind="error", hint="start a new run instead")
            checkpoint, from_step = found
            runs.append_event(run_dir, "resume", from_step=from_step, checkpoint=checkpoint.name)
            runs.write_status(run_dir, step=from_step)
            print(f"resuming from {checkpoint.name}", flush=True)

        hardware = build.detect_hardware(exp.train.precision)
        train_texts, eval_texts = data.load_texts(exp.data)
        print(f"data: {len(train_texts)} training texts, {len(eval_texts)} held out", flush=True)
        self.registry.pm.hook.pre_model_load(experiment=exp)
        model, tokenizer = build.load_model(backend, exp, hardware)
        model = build.attach_lora(model, exp, backend)
        self.registry.pm.hook.post_lora_load(experiment=exp, model=model)

        evals = Evaluations(run_dir, exp, evaluators, tokenizer, eval_texts, hardware.autocast)
        if resume:  # the best values so far survive the restart
            status = runs.read_status(run_dir)
            evals.best = {k: status[f"best_{k}"] for k in ("perplexity", "bits_per_byte")
                          if isinstance(status.get(f"best_{k}"), (int, float))}
        callback = EventCallback(run_dir, exp, evals, self.stop, cuda=hardware.cuda)
        args = build.sft_config(exp, run_dir, hardware)
        sft = build.build_trainer(model, tokenizer, train_texts, args, [callback])
        if self.stop.requested:  # asked to stop while loading: nothing trained, nothing to save
            runs.write_status(run_dir, state="stopped", ended=time.time(), exit_code=0)
            runs.append_event(run_dir, "status", state="stopped", message="stopped before training")
            self.post_train("stopped")
            return "stopped"

        t0 = time.time()
        sft.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
        train_seconds = time.time() - t0
        step = sft.state.global_step
        summary = {"step": step, "train_seconds": round(train_seconds, 2),
                   "tokens_per_s": round(callback.tokens_per_s, 1),
                   "tokens": sft.state.num_input_tokens_seen}

        if callback.stopped:
            runs.write_status(run_dir, state="stopped", ended=time.time(), exit_code=0, **summary)
            runs.append_event(run_dir, "status", state="stopped", step=step,
                              message=f"stopped at step {step} with a checkpoint")
            print(f"stopped at step {step}", flush=True)
            self.post_train("stopped")
            return "stopped"

        adapter = run_dir / runs.ADAPTER
        sft.model.save_pretrained(adapter)
        tokenizer.save_pretrained(adapter)
        final = evals.evaluate(sft.model, step)
        if final is not None:
            write_eval_status(run_dir, evals, final)
            print(eval_line(final), flush=True)
        evals.samples(sft.model, step, "final")
        final_metrics = {k: v for k, v in (final or {}).items() if k not in ("type", "time")}
        runs.write_status(run_dir, state="finished", ended=time.time(), exit_code=0,
                          adapter=str(adapter), final=final_metrics, **summary)
        runs.append_event(run_dir, "status", state="finished", step=step,
                          message=f"finished {step} steps in {train_seconds:.0f}s")
        print(f"finished: {step} steps, {callback.tokens_per_s:.0f} tok/s", flush=True)
        self.post_train("finished")
        return "finished"


def _quiet_libraries() -> None:
    """No progress bars in train.log: ``tail`` should show one line per step."""
    import datasets
    import transformers

    datasets.disable_progress_bars()
    transformers.utils.logging.disable_progress_bar()
    # peft asks transformers 5 for a renamed attribute on every LoRA attach; nothing to act on.
    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.* is deprecated",
                            category=FutureWarning)
