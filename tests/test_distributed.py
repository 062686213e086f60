"""Real two-process runs on the CPU (gloo), torchrun and accelerate: one event stream, same loss.

The global batch is ``batch_size x processes x gradient_accumulation``. The
DDP runs (2 processes x batch 4, launched by torchrun and by accelerate), an
accumulating run (1 process x batch 4 x 2 micro-batches) and a single-process
run of batch 8 all see the same rows in the same order, so their loss curves
agree up to floating-point reduction order.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from workbench import runs

SAMPLE_DIR = Path(__file__).resolve().parents[1] / "workbench" / "data" / "greentext"
STEPS = 8


def test_two_processes_and_accumulation_match_one_process_of_the_same_global_batch(tmp_path, tiny_llama_dir):
    (tmp_path / "experiments.toml").write_text(f"""
[defaults]
backend = "smollm"
model = "{tiny_llama_dir}"
evaluators = ["perplexity"]
lora.dropout = 0.0
train.steps = {STEPS}
train.learning_rate = 1e-2
train.max_length = 64
train.eval_every = {STEPS}
train.save_every = 100
data.source = "{SAMPLE_DIR}"
data.column = "greentexts"
data.train_split = "train"
data.eval_split = "test"

[experiments.single]
train.batch_size = 8

[experiments.ddp]
launcher = "torchrun"
distributed.nproc_per_node = 2
train.batch_size = 4

[experiments.accel]
launcher = "accelerate"
distributed.nproc_per_node = 2
train.batch_size = 4

[experiments.accum]
train.batch_size = 4
train.gradient_accumulation = 2
""")
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="")
    names = ("single", "ddp", "accel", "accum")
    result = subprocess.run([sys.executable, "-m", "workbench.cli", "run", *names, "--follow"],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=560)
    root = tmp_path / "runs"
    single, ddp, accel, accum = (runs.resolve(root, f"{name}#1") for name in names)
    logs = "\n".join(line for run in (ddp, accel, accum) for line in runs.tail_log(run.path, 30))
    assert result.returncode == 0, result.stdout + result.stderr + logs
    assert [r.state for r in (single, ddp, accel, accum)] == ["finished"] * 4

    def losses(run):
        return {e["step"]: e["loss"] for e in runs.read_events(run.path) if e["type"] == "train"}

    for run in (ddp, accel):
        events = runs.read_events(run.path)
        train_steps = [e["step"] for e in events if e["type"] == "train"]
        assert train_steps == list(range(1, STEPS + 1)), f"{run.ref}: rank 0 alone writes, each step once"
        assert sum(1 for e in events if e["type"] == "status" and e["state"] == "finished") == 1
        assert (run.path / runs.ADAPTER / "adapter_config.json").is_file()
        assert run.status["world_size"] == 2, run.ref
        assert (run.path / runs.LOG).read_text().count("loading ") == 2, f"{run.ref}: two ranks loaded"
    assert single.status["world_size"] == 1 and accum.status["world_size"] == 1

    one = losses(single)
    for run in (ddp, accel, accum):  # the same global batch of 8, the same rows: the same losses
        two = losses(run)
        assert one.keys() == two.keys()
        for step in one:
            assert abs(one[step] - two[step]) <= 0.02 * abs(one[step]), (run.ref, step, one[step], two[step])
        assert two[STEPS] < two[1], f"{run.ref} learns"


def test_stopping_a_torchrun_run_stops_every_rank_with_a_checkpoint(tmp_path, tiny_llama_dir):
    (tmp_path / "experiments.toml").write_text(f"""
[experiments.ddp]
backend = "smollm"
model = "{tiny_llama_dir}"
evaluators = []
launcher = "torchrun"
distributed.nproc_per_node = 2
train.steps = 5000
train.batch_size = 2
train.max_length = 32
train.save_every = 1000
data.source = "{SAMPLE_DIR}"
data.column = "greentexts"
data.train_split = "train"
data.eval_split = "test"
""")
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="")

    def workbench(*args):
        return subprocess.run([sys.executable, "-m", "workbench.cli", *args], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=120)

    assert workbench("run", "ddp").returncode == 0
    run = runs.resolve(tmp_path / "runs", "ddp#1")
    deadline = time.monotonic() + 120
    while (run.refresh().status.get("step") or 0) < 3:
        assert run.state in ("queued", "running") and time.monotonic() < deadline, runs.tail_log(run.path)
        time.sleep(0.1)
    leader = run.status["pgid"]
    result = workbench("stop", "ddp#1", "--wait", "120")
    assert result.returncode == 0, result.stderr
    assert run.refresh().state == "stopped", runs.tail_log(run.path, 30)
    step = run.status["step"]
    assert (run.path / runs.CHECKPOINTS / f"checkpoint-{step}").is_dir(), "checkpoint at the stop step"
    deadline = time.monotonic() + 30
    while _group_alive(leader):
        assert time.monotonic() < deadline, "a rank outlived the stop"
        time.sleep(0.1)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True
