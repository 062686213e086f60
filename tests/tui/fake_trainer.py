"""A stand-in for ``python -m workbench.train RUN_DIR [--resume]`` for TUI tests.

Started by a real launcher plugin through the real queue and ``launch.spawn``,
it writes events and status with the engine's own writer (``runs.append_event``,
``runs.write_status``) in the shapes the trainer writes them, at a pace the
test sets: ``FAKE_STEP_S`` seconds a step (default 0.02). SIGTERM makes it save
a checkpoint and stop, as the real trainer does; ``--resume`` continues from the
latest checkpoint. ``FAKE_FAIL_AT=N`` fails at step N with an OOM-like error.
"""

from __future__ import annotations

import math
import os
import signal
import sys
import time
from pathlib import Path

from workbench import launch, runs


def main() -> int:
    run_dir = Path(sys.argv[1])
    resume = "--resume" in sys.argv
    exp = runs.read_config(run_dir)["experiment"]
    train = exp["train"]
    total, eval_every, save_every = train["steps"], train["eval_every"], train["save_every"]
    delay = float(os.environ.get("FAKE_STEP_S", "0.02"))
    fail_at = int(os.environ.get("FAKE_FAIL_AT", "0"))
    rank = exp["lora"]["r"]
    stop = {"asked": False}

    def on_term(signum, frame):  # noqa: ARG001
        stop["asked"] = True

    signal.signal(signal.SIGTERM, on_term)
    start = 0
    if resume:
        ckpt = launch.latest_checkpoint(run_dir)
        start = int(ckpt.name.split("-")[-1]) if ckpt else 0
        runs.append_event(run_dir, "resume", from_step=start)
        print(f"resuming from step {start}", flush=True)
    runs.write_status(run_dir, started=time.time(), max_steps=total, step=start)
    print(f"fake training {total} steps", flush=True)
    best = None

    def save(step: int) -> None:
        path = run_dir / runs.CHECKPOINTS / f"checkpoint-{step}"
        path.mkdir(parents=True, exist_ok=True)
        for name in ("adapter_config.json", "adapter_model.safetensors", "trainer_state.json"):
            (path / name).write_text("{}")  # what makes a checkpoint complete (runs.checkpoints)
        runs.append_event(run_dir, "checkpoint", step=step, path=str(path))
        runs.append_event(run_dir, "sample", step=step, checkpoint=str(path), prompt=">be me\n>",
                          text=f"fake sample at step {step}", index=0, seed=1234)

    for step in range(start + 1, total + 1):
        loss = 3.0 / (1 + step / (10 * rank)) + 0.2
        runs.append_event(run_dir, "train", step=step, loss=loss, lr=1e-3, grad_norm=1.0,
                          tokens=step * 256, tokens_per_s=2048.0, epoch=step / total)
        print(f"step {step} loss {loss:.4f}", flush=True)
        if fail_at and step == fail_at:
            print("Traceback (most recent call last):\nRuntimeError: CUDA out of memory", flush=True)
            runs.write_status(run_dir, state="failed", error="CUDA out of memory (fake)", error_kind="oom",
                              hint="lower train.batch_size", ended=time.time(), exit_code=1)
            return 1
        if step % eval_every == 0:
            ppl = math.exp(loss)
            best = ppl if best is None else min(best, ppl)
            runs.append_event(run_dir, "eval", step=step, eval_loss=loss, perplexity=ppl,
                              bits_per_byte=loss / math.log(2) / 4)
        stopping = stop["asked"]  # read once: a signal between two reads would skip the checkpoint
        if step % save_every == 0 or stopping:
            save(step)
        runs.write_status(run_dir, step=step, loss=loss, tokens_per_s=2048.0, best_perplexity=best,
                          best_bits_per_byte=None if best is None else math.log2(best) / 4)
        if stopping:
            runs.write_status(run_dir, state="stopped", ended=time.time(), exit_code=0)
            runs.append_event(run_dir, "status", state="stopped", message=f"stopped at step {step}")
            print(f"stopped at step {step}", flush=True)
            return 0
        time.sleep(delay)
    runs.write_status(run_dir, state="finished", ended=time.time(), exit_code=0)
    runs.append_event(run_dir, "status", state="finished", message=f"finished {total} steps")
    return 0


if __name__ == "__main__":
    sys.exit(main())
