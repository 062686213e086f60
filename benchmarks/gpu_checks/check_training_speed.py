"""GPU check (issue 11): precision, a 500-step study-shaped run, the minimal loop, generation speed.

Run by ``benchmarks/gpu_check.sh`` (rows ``CHECK<TAB>name<TAB>result<TAB>detail``
on stdout, the log on stderr). On one GPU, in about three minutes:

- the precision ``train.precision = "auto"`` picks (bf16 where supported);
- a 500-step study-shaped run through ``workbench run`` (batch 4, the
  benchmark set of 17-159-token texts, evaluations every 50 steps, checkpoints
  and samples every 100) on a SmolLM-135M-shaped Llama with random weights
  (no hub here): wall time, trained tokens/s (steps right after an evaluation
  or checkpoint left out), and peak GPU memory;
- the minimal PyTorch + PEFT loop (``bench_train.run_minimal``, padded,
  same precision) for 500 steps on the same GPU, and the ratio;
- the ``nvidia-smi`` parser (``workbench.gpus``) on this machine's real output;
- the queue's ``CUDA_VISIBLE_DEVICES`` assignment (the run's ``gpus``);
- ``workbench compare``'s generation worker tokens/s against ``model.generate``.

Without a CUDA GPU every row is ``skip`` and the exit code is 0. ``--dry-run``
runs the same code on the CPU with a 2-layer model of the same width pattern
and 4 steps, to test the check itself where no GPU is at hand (its figures
mean nothing).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent.parent
ROOT = BENCH.parent
sys.path.insert(0, str(BENCH))
STEPS, EVAL_EVERY, SAVE_EVERY, WARMUP = 500, 50, 100, 10
DRY = False  # --dry-run: on the CPU, tiny, a few steps
NAMES = ("precision", "study_run_wall", "study_run_tokens_per_s", "minimal_loop_tokens_per_s",
         "vs_minimal_loop", "peak_memory", "nvidia_smi_parser", "queue_cuda_visible_devices",
         "compare_generation")
# SmolLM-135M's shape (HuggingFaceTB/SmolLM-135M config.json)
SMOLLM_135M = {"hidden_size": 576, "intermediate_size": 1536, "num_hidden_layers": 30,
               "num_attention_heads": 9, "num_key_value_heads": 3, "vocab_size": 49152,
               "max_position_embeddings": 2048, "rope_theta": 10000.0, "tie_word_embeddings": True,
               "rms_norm_eps": 1e-5}


def row(name: str, result: str, detail: str = "") -> None:
    print(f"CHECK\t{name}\t{result}\t{detail}".replace("\n", " "), flush=True)


def log(message: str) -> None:
    print(f"check_training_speed: {message}", file=sys.stderr, flush=True)


def smollm_shaped(folder: Path) -> Path:
    """A SmolLM-135M-shaped Llama with random weights and a BPE tokenizer trained on the sample."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from workbench.train.tiny import build_tokenizer

    texts = [json.loads(line)["greentexts"] for line in
             (ROOT / "workbench" / "data" / "greentext" / "train.jsonl").read_text().splitlines()
             if line.strip()]
    tokenizer = build_tokenizer(texts)
    shape = {**SMOLLM_135M, "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
             "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": len(tokenizer)
             } if DRY else SMOLLM_135M
    config = LlamaConfig(**shape, bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def study_toml(model: Path) -> str:
    data = BENCH / "data" / "spread"
    return f"""
[experiments.study]
backend = "smollm"
model = {json.dumps(str(model))}
prompts = [">be me\\\\n>"]

[experiments.study.lora]
r = 4
target_modules = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]

[experiments.study.train]
steps = {STEPS}
batch_size = 4
max_length = 256
eval_every = {EVAL_EVERY}
save_every = {SAVE_EVERY}
logging_every = 1

[experiments.study.data]
source = {json.dumps(str(data))}
column = "greentexts"
train_split = "train"
eval_split = "test"
"""


def workbench_run(scratch: Path, model: Path) -> dict[str, Any]:
    """``workbench run study --follow``; its status, train events and wall time."""
    toml = scratch / "experiments.toml"
    toml.write_text(study_toml(model))
    exe = Path(sys.executable).with_name("workbench")
    cli = [str(exe)] if exe.exists() else [sys.executable, "-m", "workbench.cli"]
    t0 = time.time()
    run_dir = scratch / "runs" / "study" / "1"
    try:
        proc = subprocess.run([*cli, "run", "study", "--follow", "-c", str(toml), "--runs-dir",
                               str(scratch / "runs")], cwd=scratch, capture_output=True, text=True,
                              timeout=600 if DRY else 180)
    except subprocess.TimeoutExpired:
        stop = subprocess.run([*cli, "stop", "study/1", "-c", str(toml), "--runs-dir", str(scratch / "runs")],
                              cwd=scratch, capture_output=True, text=True, timeout=60)
        raise RuntimeError(f"workbench run took over {600 if DRY else 180} s; stopped it "
                           f"({stop.stdout.strip() or stop.stderr.strip()})") from None
    wall = time.time() - t0
    status = json.loads((run_dir / "status.json").read_text()) if run_dir.exists() else {}
    if proc.returncode != 0 or status.get("state") != "finished":
        tail = (run_dir / "train.log").read_text(errors="replace")[-1500:] if run_dir.exists() else ""
        raise RuntimeError(f"workbench run ended {status.get('state')} ({proc.returncode}): "
                           f"{proc.stderr[-500:]} {tail}")
    events = [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines()
              if line.strip()]
    log_text = (run_dir / "train.log").read_text(errors="replace")
    return {"status": status, "events": events, "wall": wall, "log": log_text}


def train_rate(events: list[dict[str, Any]], warmup: int) -> float:
    """Tokens/s over the train events' wall clock, leaving out the warmup and every step that
    follows an evaluation or a checkpoint (their time is not training)."""
    train = sorted((e for e in events if e.get("type") == "train"), key=lambda e: e["step"])
    tokens = seconds = 0.0
    for prev, cur in zip(train, train[1:], strict=False):
        if cur["step"] <= warmup or prev["step"] % EVAL_EVERY == 0 or prev["step"] % SAVE_EVERY == 0:
            continue
        tokens += cur["tokens"]
        seconds += cur["time"] - prev["time"]
    return tokens / seconds if seconds else float("nan")


def main(argv: list[str]) -> int:
    global STEPS, EVAL_EVERY, SAVE_EVERY, WARMUP, DRY
    if "--dry-run" in argv:
        DRY, STEPS, EVAL_EVERY, SAVE_EVERY, WARMUP = True, 4, 2, 2, 1
    try:
        import torch
    except ImportError as exc:
        for name in NAMES:
            row(name, "skip", f"no torch: {exc}")
        return 0
    if not torch.cuda.is_available() and not DRY:
        why = (f"no CUDA GPU (torch {torch.__version__}, CUDA_VISIBLE_DEVICES="
               f"{os.environ.get('CUDA_VISIBLE_DEVICES', 'unset')})")
        for name in NAMES:
            row(name, "skip", why)
        return 0

    from workbench.train.trainer import detect_hardware

    hardware = detect_hardware("auto")
    cuda = torch.cuda.is_available()
    want = ("bf16" if torch.cuda.is_bf16_supported() else "fp16") if cuda else "fp32"
    row("precision", "ok" if hardware.precision == want else "FAIL",
        f"{hardware.precision} on {torch.cuda.get_device_name(0) if cuda else 'the CPU'}")

    scratch = Path(tempfile.mkdtemp(prefix="gpu-check-"))
    os.environ.setdefault("WORKBENCH_CACHE", str(scratch / "cache"))
    model = smollm_shaped(scratch / "smollm-135m-shaped")
    log(f"model {model}")

    run: dict[str, Any] | None = None
    try:
        run = workbench_run(scratch, model)
        status = run["status"]
        train_seconds = status.get("train_seconds")
        used = next((ln.split(": ", 1)[1] for ln in run["log"].splitlines()
                     if ln.startswith("batching")), "?")
        row("study_run_wall", "value", f"{run['wall']:.1f} s for {STEPS} steps through `workbench run` "
            f"(training {train_seconds} s; batching {used})")
        rate = train_rate(run["events"], WARMUP)
        row("study_run_tokens_per_s", "value", f"{rate:.0f} trained tokens/s (status: "
            f"{status.get('tokens_per_s')})")
    except Exception as exc:  # noqa: BLE001 - a row, not a traceback
        row("study_run_wall", "FAIL", str(exc)[:300])
        rate = float("nan")

    try:
        from bench_train import Settings, run_minimal

        s = Settings(model_dir=str(model), data=str(BENCH / "data" / "spread" / "train.jsonl"),
                     steps=STEPS, warmup=WARMUP, max_length=256, device="cuda" if cuda else "cpu")
        minimal = run_minimal(s)
        row("minimal_loop_tokens_per_s", "value",
            f"{minimal.tokens_per_s:.0f} tokens/s, {minimal.seconds:.1f} s for {minimal.measured_steps} "
            f"steps, padding {minimal.padding:.0%}")
        ratio = rate / minimal.tokens_per_s
        row("vs_minimal_loop", "ok" if ratio >= 1.0 else "FAIL", f"{ratio:.2f}x the minimal loop")
    except Exception as exc:  # noqa: BLE001
        row("minimal_loop_tokens_per_s", "FAIL", str(exc)[:300])

    if run is not None:
        peaks = [e["peak_mem_gb"] for e in run["events"]
                 if isinstance(e.get("peak_mem_gb"), (int, float))]
        total = torch.cuda.get_device_properties(0).total_memory / 1e9 if cuda else 0
        if not cuda:
            row("peak_memory", "skip", "dry run on the CPU")
        elif peaks:
            row("peak_memory", "value", f"{max(peaks):.2f} GB of {total:.0f} GB (train events)")
        else:
            row("peak_memory", "FAIL", "no peak_mem_gb in the train events")
        gpus = run["status"].get("gpus")
        row("queue_cuda_visible_devices", "ok" if (gpus and len(gpus) == 1) or not cuda else "FAIL",
            f"the run was given CUDA_VISIBLE_DEVICES={','.join(map(str, gpus or [])) or 'none'}")

    try:
        from workbench import gpus as gpu_info

        found = gpu_info.query()
        ok = len(found) == torch.cuda.device_count() and all(g.name for g in found)
        row("nvidia_smi_parser", "ok" if ok else "FAIL",
            f"{len(found)} GPU(s) parsed, torch sees {torch.cuda.device_count()}: "
            + "; ".join(f"{g.name}" for g in found))
    except Exception as exc:  # noqa: BLE001
        row("nvidia_smi_parser", "FAIL", f"{type(exc).__name__}: {exc}"[:300])

    try:
        from bench_generate import measure

        gen = measure(str(model), max_new_tokens=8 if DRY else 64, repeat=1 if DRY else 3)
        row("compare_generation", "value",
            f"worker {gen['worker']['tokens_per_s']:.0f} tokens/s in {gen['worker']['messages']} "
            f"messages, model.generate {gen['generate']['tokens_per_s']:.0f}: {gen['ratio']:.2f}x")
    except Exception as exc:  # noqa: BLE001
        row("compare_generation", "FAIL", f"{type(exc).__name__}: {exc}"[:300])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
