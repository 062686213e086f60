"""A real two-process torchrun run on the CPU (gloo): one coherent event stream, same loss.

The DDP run (2 processes x batch 4) and a single-process run of the same
global batch (1 x batch 8) see the same rows in the same order, so their
loss curves agree up to floating-point reduction order.
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


def test_torchrun_two_processes_match_one_process(tmp_path, tiny_llama_dir):
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
""")
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="")
    result = subprocess.run([sys.executable, "-m", "workbench.cli", "run", "single", "ddp", "--follow"],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=400)
    root = tmp_path / "runs"
    single, ddp = runs.resolve(root, "single#1"), runs.resolve(root, "ddp#1")
    assert result.returncode == 0, result.stdout + result.stderr + "\n".join(runs.tail_log(ddp.path, 40))
    assert (single.state, ddp.state) == ("finished", "finished")

    def losses(run):
        return {e["step"]: e["loss"] for e in runs.read_events(run.path) if e["type"] == "train"}

    ddp_events = runs.read_events(ddp.path)
    train_steps = [e["step"] for e in ddp_events if e["type"] == "train"]
    assert train_steps == list(range(1, STEPS + 1)), "rank 0 alone writes: each step once"
    assert sum(1 for e in ddp_events if e["type"] == "status" and e["state"] == "finished") == 1
    assert (ddp.path / runs.ADAPTER / "adapter_config.json").is_file()
    assert ddp.status["world_size"] == 2 and single.status["world_size"] == 1
    assert (ddp.path / runs.LOG).read_text().count("loading ") == 2, "two ranks loaded the model"

    one, two = losses(single), losses(ddp)
    assert one.keys() == two.keys()
    for step in one:
        assert abs(one[step] - two[step]) <= 0.02 * abs(one[step]), (step, one[step], two[step])
    assert two[STEPS] < two[1], "the DDP run learns"


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
