"""Stop and resume as a user does it: ``workbench run``, ``stop``, ``resume``, real trainer, tiny model.

The path under test is the whole one: the CLI queues the run, the scheduler
spawns ``python -m workbench.train`` detached, ``workbench stop`` sends the
SIGTERM, the trainer checkpoints and exits, ``workbench resume`` queues it
again and the scheduler restarts the trainer with ``--resume`` in the same
folder.

A plugin evaluator makes the run deterministic on a busy machine: at step 5 it
waits at a gate until the test has asked the run to stop (so the stop lands
at step 6, every time), and its held-out "perplexity" gets worse with every
step, so the best value is one made *before* the stop: a resume that forgot
the best values so far would show a later, worse one. The same plugin's
``pre_model_load`` hook leaves a line in ``train.log`` in each process.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from workbench import runs

DATA = Path(__file__).resolve().parents[1] / "workbench" / "data" / "greentext"
STEPS = 12
TIMEOUT = 240

PLUGIN = '''
import time
from pathlib import Path

from workbench.api import Evaluator, Metric, hookimpl

HERE = Path(__file__).parent


def worsening(ctx):
    if ctx.step == 5:  # wait here until the test has asked for the stop
        (HERE / "at_gate").touch()
        deadline = time.time() + 240
        while not (HERE / "gate").exists() and time.time() < deadline:
            time.sleep(0.05)
    return {"perplexity": 10.0 + ctx.step, "bits_per_byte": 1.0 + ctx.step / 100}


@hookimpl
def register_evaluators(register):
    register(Evaluator("worsening", worsening, description="gets worse every step",
                       metrics=(Metric("perplexity", better="lower"),
                                Metric("bits_per_byte", better="lower"))))


@hookimpl
def pre_model_load(experiment):
    print(f"pre_model_load hook: {experiment.name}", flush=True)
'''


@pytest.fixture
def project(tmp_path: Path, tiny_llama_dir: Path):
    (tmp_path / "plugins").mkdir()
    (tmp_path / "plugins" / "worsening.py").write_text(PLUGIN)
    (tmp_path / "experiments.toml").write_text(f"""
plugins_dir = "plugins"
[experiments.t]
backend = "tiny"
model = "{tiny_llama_dir}"
evaluators = ["worsening"]
train.steps = {STEPS}
train.batch_size = 4
train.max_length = 48
train.eval_every = 5
train.save_every = 1000
data.source = "{DATA}"
data.column = "greentexts"
data.train_split = "train[:64]"
data.eval_split = "test[:8]"
""")
    yield tmp_path
    for run in runs.list_runs(tmp_path / "runs"):  # leave no trainer behind on a failure
        pid = run.status.get("pgid")
        if run.state == "running" and isinstance(pid, int):
            try:
                os.killpg(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def workbench(project: Path, *args: str) -> str:
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="")
    result = subprocess.run([sys.executable, "-m", "workbench.cli", *args], cwd=project, env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return result.stdout


def wait_for(predicate, what: str, run_dir: Path) -> None:
    deadline = time.monotonic() + TIMEOUT
    while not predicate():
        assert time.monotonic() < deadline, f"{what}:\n" + "\n".join(runs.tail_log(run_dir, 30))
        time.sleep(0.1)


def test_workbench_resume_continues_the_real_run_and_keeps_the_best(project: Path) -> None:
    assert "queued t#1" in workbench(project, "run", "t")
    run_dir = project / "runs" / "t" / "1"
    wait_for(lambda: (project / "plugins" / "at_gate").exists(), "the step-5 evaluation", run_dir)
    assert runs.read_status(run_dir)["state"] == "running"
    assert "stopping t#1" in workbench(project, "stop", "t#1")
    (project / "plugins" / "gate").touch()
    wait_for(lambda: runs.read_status(run_dir)["state"] != "running", "the stop", run_dir)

    status = runs.read_status(run_dir)
    assert (status["state"], status["step"]) == ("stopped", 6), runs.tail_log(run_dir, 30)
    assert (run_dir / runs.CHECKPOINTS / "checkpoint-6").is_dir()
    assert status["best_perplexity"] == 15.0

    assert "resuming t#1 from checkpoint-6" in workbench(project, "resume", "t#1")
    wait_for(lambda: runs.read_status(run_dir)["state"] not in ("queued", "running"), "the resumed run",
             run_dir)
    status = runs.read_status(run_dir)
    assert (status["state"], status["step"]) == ("finished", STEPS), runs.tail_log(run_dir, 30)

    events = runs.read_events(run_dir)
    assert [e["step"] for e in events if e["type"] == "train"] == list(range(1, STEPS + 1)), \
        "every step exactly once"
    assert [e["from_step"] for e in events if e["type"] == "resume"] == [6]
    assert [e["step"] for e in events if e["type"] == "checkpoint"] == [6, STEPS]
    assert [e["step"] for e in events if e["type"] == "eval"] == [5, 10, STEPS]
    # The best values were made before the stop; the resumed process kept them.
    assert (status["best_perplexity"], status["best_bits_per_byte"]) == (15.0, 1.05)
    assert status["last_eval"]["perplexity"] == 10.0 + STEPS
    assert (run_dir / runs.ADAPTER / "adapter_model.safetensors").is_file()

    log = (run_dir / runs.LOG).read_text()
    marks = re.findall(r"pre_model_load hook: t|loading ", log)
    assert marks == ["pre_model_load hook: t", "loading "] * 2, "in each process, before the model loads"
