"""GPU check (issue 12): bf16 and fp16 training, memory peaks, and the worker's reproducibility.

Run by ``benchmarks/gpu_check.sh`` (rows ``CHECK<TAB>name<TAB>result<TAB>detail``).
On one GPU, in about two minutes, with a small Llama (random weights):

- ``bf16_run``: 40 steps at ``precision = "auto"`` on a bf16 GPU: every loss
  finite, the LoRA adapter saved in fp32; ``first_step_vs_steady`` (value): the
  first step's tokens/s against the median of the steady steps;
  ``train_vs_eval_peak_memory`` (value): the training peak and the evaluation
  peak, reported apart;
- ``fp16_run``: 40 steps at ``precision = "fp16"``: it finishes, no NaN loss,
  no "unscale FP16 gradients" error, and the grad scaler's skipped steps
  (``skipped_steps``, ``loss_scale``) as the run reports them;
- ``worker_matches_final_sample``: the generation worker's text for the run's
  final sample (same prompt, seed and settings) equals the run's own.

Without a CUDA GPU every row is ``skip`` and the exit code is 0.
"""

from __future__ import annotations

import math
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _issue12 import Project, experiment_toml, gpu_count, guarded, log, row, small_llama, try_on_cpu

STEPS = 40
NAMES = ("bf16_run", "first_step_vs_steady", "train_vs_eval_peak_memory", "fp16_run",
         "worker_matches_final_sample")


def finished(project: Project, name: str) -> dict[str, Any]:
    try:
        result = project.workbench("run", name, "--follow", timeout=200)
    finally:
        project.end_runs()  # a run --follow gave up on must not hold the GPU for the next
    status = project.status(name)
    if status.get("state") != "finished":
        raise RuntimeError(f"{name} ended {status.get('state')} ({result.returncode}): "
                           f"{status.get('error')} | {project.log_tail(name)}")
    return status


def adapter_dtypes(run_dir: Path) -> set[str]:
    from safetensors import safe_open

    with safe_open(str(run_dir / "adapter" / "adapter_model.safetensors"), "pt") as fh:
        return {str(fh.get_tensor(key).dtype).replace("torch.", "") for key in fh.keys()}


def check_bf16(project: Project) -> None:
    status = finished(project, "b")
    train = project.events("b", "train")
    losses = [e["loss"] for e in train]
    dtypes = adapter_dtypes(project.run_dir("b"))
    ok = (len(losses) == STEPS and all(isinstance(x, float) and math.isfinite(x) for x in losses)
          and dtypes == {"float32"})
    row("bf16_run", "ok" if ok else "FAIL",
        f"{len(losses)} train events, losses {losses[0]:.3f} -> "
        f"{losses[-1]:.3f}, adapter dtypes {sorted(dtypes)}; log: "
        f"{next((ln for ln in project.log_tail('b', 200).split(' | ') if 'loading' in ln), '')}")
    after_eval = {e["step"] + 1 for e in project.events("b", "eval")} | \
        {e["step"] + 1 for e in project.events("b", "checkpoint")}
    steady = [e["tokens_per_s"] for e in train if e["step"] > 5 and e["step"] not in after_eval]
    first = train[0]["tokens_per_s"]
    median = statistics.median(steady) if steady else float("nan")
    row("first_step_vs_steady", f"{first / median:.2f}x" if steady else "FAIL",
        f"step 1 {first:.0f} tokens/s, steady median {median:.0f} tokens/s ({len(steady)} steps)")
    train_peak, eval_peak = status.get("peak_mem_gb"), status.get("eval_peak_mem_gb")
    row("train_vs_eval_peak_memory",
        f"{train_peak} / {eval_peak} GB" if train_peak and eval_peak else "FAIL",
        f"training peak {train_peak} GB, evaluation peak {eval_peak} GB (torch allocator, reset "
        f"around each eval pass); train events carry them from step "
        f"{next((e['step'] for e in train if 'eval_peak_mem_gb' in e), None)}")


def check_fp16(project: Project) -> None:
    status = finished(project, "h")
    losses = [e["loss"] for e in project.events("h", "train")]
    log_text = (project.run_dir("h") / "train.log").read_text(errors="replace")
    unscale = "unscale" in log_text.lower() and "error" in log_text.lower()
    ok = len(losses) == STEPS and all(math.isfinite(x) for x in losses) and not unscale
    skips = [e["message"] for e in project.events("h", "status") if "skipped" in e.get("message", "")]
    row("fp16_run", "ok" if ok else "FAIL",
        f"{len(losses)} steps, losses {losses[0]:.3f} -> {losses[-1]:.3f}, skipped_steps "
        f"{status.get('skipped_steps', 0)}, loss_scale {status.get('loss_scale')}, "
        f"{len(skips)} skip events{'; UNSCALE ERROR in train.log' if unscale else ''}")


def check_worker(project: Project, name: str) -> None:
    from workbench.generate import client as gen

    final = [e for e in project.events(name, "sample") if e.get("checkpoint") == "final"]
    if not final:
        raise RuntimeError(f"run {name} wrote no final sample")
    sample = final[0]
    exp = project.status(name)
    client = gen.GenerationClient(env=project.env)
    try:
        from workbench import runs

        settings = runs.read_config(project.run_dir(name))["experiment"]["sampling"]
        result = client.generate([gen.run_pane("p", project.run_dir(name))], sample["prompt"],
                                 temperature=settings["temperature"], top_p=settings["top_p"],
                                 max_new_tokens=settings["max_new_tokens"],
                                 seed=sample["seed"]).results(timeout=200)["p"]
    finally:
        client.close()
    text = result.texts[0] if result.texts else None
    row("worker_matches_final_sample", "ok" if text == sample["text"] else "FAIL",
        f"run {name}, seed {sample['seed']}, {len(sample['text'])} chars; worker error {result.error!r}; "
        f"step {exp.get('step')}" + ("" if text == sample["text"] else
                                     f"; run {sample['text'][:60]!r} vs worker {str(text)[:60]!r}"))


def main() -> int:
    count = gpu_count()
    if count == 0 and not try_on_cpu():
        for name in NAMES:
            row(name, "skip", "no CUDA GPU")
        return 0
    import torch

    native_bf16 = count > 0 and torch.cuda.get_device_capability(0)[0] >= 8
    with tempfile.TemporaryDirectory(prefix="gpu-check-12-") as tmp:
        scratch = Path(tmp)
        model = small_llama(scratch / "model", *((64, 2) if not count else ()))
        common = {"train__steps": STEPS, "train__eval_every": 10, "train__save_every": 20,
                  "evaluators": ["perplexity", "samples"], "sampling__max_new_tokens": 24}
        project = Project(scratch / "p", [
            experiment_toml("b", model, **common),
            experiment_toml("h", model, train__precision="fp16" if count else "auto", **common),
        ])
        log(f"model ready; {count} GPU(s), native bf16: {native_bf16}")
        if native_bf16 or try_on_cpu():
            if guarded("bf16_run", lambda: check_bf16(project)):
                guarded("worker_matches_final_sample", lambda: check_worker(project, "b"))
            else:
                row("worker_matches_final_sample", "skip", "the bf16 run did not finish")
        else:
            for name in ("bf16_run", "first_step_vs_steady", "train_vs_eval_peak_memory"):
                row(name, "skip", "this GPU has no native bf16 (compute capability < 8.0)")
        if guarded("fp16_run", lambda: check_fp16(project)) and not (native_bf16 or try_on_cpu()):
            guarded("worker_matches_final_sample", lambda: check_worker(project, "h"))
        project.end_runs()
    return 0


if __name__ == "__main__":
    sys.exit(main())
