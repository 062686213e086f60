"""`workbench stop` through the real command, for every launcher, with real processes.

Each run trains a tiny model on the CPU until it has taken a few steps; the stop
must reach the trainer (every rank), end the run ``stopped`` with a checkpoint at
the stop step, and leave no process of the run behind, whatever the launcher
does with a SIGTERM of its own (single-process ``accelerate launch`` dies and
leaves its child training; torchrun forwards it with a SIGKILL deadline).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from workbench import processes, runs

SAMPLE_DIR = Path(__file__).resolve().parents[1] / "workbench" / "data" / "greentext"

SLOW_START_LAUNCHER = '''
import sys
from workbench.api import Launcher, hookimpl

@hookimpl
def register_launchers(register):
    # a launcher that takes its time before the trainer installs its SIGTERM handler
    register(Launcher("slowstart", lambda run_dir, dist: [
        "/bin/sh", "-c", 'sleep 30; exec "$0" -m workbench.train "$1"', sys.executable, run_dir]))
'''

SLOW_SAMPLES_EVALUATOR = '''
import time
from workbench.api import Evaluator, hookimpl

def slow(ctx):
    if ctx.checkpoint != "final":
        time.sleep(40)  # longer than torchrun's default 30 s shutdown timeout
    return [{"prompt": "p", "text": "slow sample"}]

@hookimpl
def register_evaluators(register):
    register(Evaluator(name="slow_samples", compute=slow, when="samples"))
'''


def project(tmp_path: Path, tiny_llama_dir: Path, launcher: str, nproc: int,
            evaluators: str = "[]", save_every: int = 1000) -> Path:
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "slowstart.py").write_text(SLOW_START_LAUNCHER)
    (plugins / "slow_samples.py").write_text(SLOW_SAMPLES_EVALUATOR)
    (tmp_path / "experiments.toml").write_text(f"""
plugins_dir = "plugins"
[experiments.x]
backend = "smollm"
model = "{tiny_llama_dir}"
evaluators = {evaluators}
launcher = "{launcher}"
distributed.nproc_per_node = {nproc}
train.steps = 5000
train.batch_size = 2
train.max_length = 32
train.save_every = {save_every}
data.source = "{SAMPLE_DIR}"
data.column = "greentexts"
data.train_split = "train"
data.eval_split = "test"
""")
    return tmp_path


def workbench(cwd: Path, *args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="")
    return subprocess.run([sys.executable, "-m", "workbench.cli", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


def wait_until(predicate, timeout: float, why) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, why()
        time.sleep(0.05)


@pytest.mark.slow  # multi-process launchers on the CPU: minutes; .ci/run runs it
@pytest.mark.parametrize(("launcher", "nproc"), [
    ("python", 1), ("torchrun", 1), ("torchrun", 2), ("accelerate", 1), ("accelerate", 2),
])
def test_stop_reaches_every_trainer_and_leaves_no_process(tmp_path, tiny_llama_dir, launcher, nproc):
    cwd = project(tmp_path, tiny_llama_dir, launcher, nproc)
    assert workbench(cwd, "run", "x").returncode == 0
    run = runs.resolve(cwd / "runs", "x#1")
    wait_until(lambda: (run.refresh().status.get("step") or 0) >= 2, 240,
               lambda: f"{run.state}: " + "\n".join(runs.tail_log(run.path, 30)))
    procs = processes.of_run(run.path, run.status)
    try:
        assert len(processes.ready_ranks(run.path)) == nproc, "every rank registered itself"
        result = workbench(cwd, "stop", "x#1", "--wait", "200")
        assert result.returncode == 0, result.stderr
        status = run.refresh().status
        assert status["state"] == "stopped", "\n".join(runs.tail_log(run.path, 30))
        assert (run.path / runs.CHECKPOINTS / f"checkpoint-{status['step']}").is_dir()
        assert processes.wait_gone(procs, 30), f"left behind: {[p for p in procs if p.alive()]}"
    finally:  # a failing stop must not leave a trainer running on the machine
        processes.end_all(procs, grace=5)
    stopped = [e for e in runs.read_events(run.path) if e["type"] == "status"
               and e["state"] == "stopped"]
    assert len(stopped) == 1 and "checkpoint" in stopped[0]["message"]


@pytest.mark.slow  # multi-process launchers on the CPU: minutes; .ci/run runs it
def test_torchrun_signalled_itself_gives_a_slow_checkpoint_time_to_finish(tmp_path, tiny_llama_dir):
    """The agent forwards a SIGTERM, then SIGKILLs its ranks after the shutdown timeout.

    A rank busy sampling at a checkpoint for 40 s (past torchrun's default 30 s)
    still stops with a checkpoint: runs start with a longer timeout.
    """
    cwd = project(tmp_path, tiny_llama_dir, "torchrun", 1, evaluators='["slow_samples"]',
                  save_every=3)
    assert workbench(cwd, "run", "x").returncode == 0
    run = runs.resolve(cwd / "runs", "x#1")
    wait_until(lambda: any(e["type"] == "checkpoint" for e in runs.read_events(run.path)), 240,
               lambda: f"{run.state}: " + "\n".join(runs.tail_log(run.path, 30)))
    status = run.refresh().status
    procs = processes.of_run(run.path, status)
    try:
        agent = processes.verified_leader(run.path, status)
        assert agent is not None and agent.pid not in [r.pid for r in processes.ready_ranks(run.path)]
        environ = Path(f"/proc/{agent.pid}/environ").read_bytes().split(b"\0")
        assert b"TORCH_ELASTIC_SHUTDOWN_TIMEOUT=300" in environ
        os.kill(agent.pid, signal.SIGTERM)  # as a batch system would, while rank 0 samples
        wait_until(lambda: run.refresh().state != "running", 120, lambda: run.state)
        status = run.status
        assert status["state"] == "stopped", (status, runs.tail_log(run.path, 20))
        assert (run.path / runs.CHECKPOINTS / f"checkpoint-{status['step']}").is_dir()
        assert processes.wait_gone(procs, 30)
    finally:
        processes.end_all(procs, grace=5)


def test_stop_before_the_trainer_can_take_it_reads_stopped(tmp_path, tiny_llama_dir):
    """A SIGTERM before the trainer's handler is installed would kill it without a word."""
    cwd = project(tmp_path, tiny_llama_dir, "slowstart", 1)
    assert workbench(cwd, "run", "x").returncode == 0
    run = runs.resolve(cwd / "runs", "x#1")
    wait_until(lambda: run.refresh().state == "running", 60, lambda: run.state)
    procs = processes.of_run(run.path, run.status)
    assert procs and not processes.ready_ranks(run.path)

    result = workbench(cwd, "stop", "x#1", "--wait", "30")
    assert result.returncode == 0, result.stderr
    status = run.refresh().status
    assert status["state"] == "stopped", status
    assert processes.wait_gone(procs, 10)
    events = [e for e in runs.read_events(run.path) if e["type"] == "status"]
    assert events[-1]["state"] == "stopped" and "starting" in events[-1]["message"]


def test_stop_never_signals_a_group_it_cannot_verify_as_the_runs(tmp_path, tiny_llama_dir):
    """A status.json whose pgid names an unrelated live group: that group is left alone."""
    cwd = project(tmp_path, tiny_llama_dir, "slowstart", 1)
    assert workbench(cwd, "run", "x").returncode == 0
    run = runs.resolve(cwd / "runs", "x#1")
    wait_until(lambda: run.refresh().state == "running", 60, lambda: run.state)
    own = processes.of_run(run.path, run.status)
    stranger = subprocess.Popen(["sleep", "60"], start_new_session=True)
    try:
        runs.write_status(run.path, pgid=stranger.pid)  # the launcher's start time stays
        result = workbench(cwd, "stop", "x#1")
        assert result.returncode != 0 and "gone" in result.stderr
        time.sleep(0.5)
        assert stranger.poll() is None, "an unrelated process group was signalled"
        assert all(p.alive() for p in own)
    finally:
        stranger.kill()
        stranger.wait()
        processes.end_all(own, grace=1)


def test_only_the_runs_own_launcher_is_its_leader(tmp_path):
    run_dir = tmp_path / "runs" / "x" / "1"
    run_dir.mkdir(parents=True)
    own = subprocess.Popen(["/bin/sh", "-c", "sleep 60", str(run_dir)], start_new_session=True)
    time.sleep(0.05)  # start times tick every 10 ms: the stranger must not share the launcher's tick
    other = subprocess.Popen(["sleep", "60"], start_new_session=True)
    try:
        start = runs.process_start_time(own.pid)
        assert processes.verified_leader(run_dir, {"pgid": own.pid, "pgid_start": start}) == \
            processes.Proc(own.pid, start)
        assert processes.verified_leader(run_dir, {"pgid": own.pid, "pgid_start": "1"}) is None, \
            "a reused pid (another start time) is someone else"
        assert processes.verified_leader(run_dir, {"pgid": own.pid}) is None, "no start time"
        assert processes.verified_leader(run_dir, {
            "pgid": other.pid, "pgid_start": start}) is None, "another process group"
        assert processes.verified_leader(run_dir, {
            "pid": own.pid, "pgid": own.pid, "pid_start": start}) is not None, \
            "a run whose launcher is its trainer: the trainer's start time"
        assert processes.send([processes.Proc(other.pid, "1")], signal.SIGTERM) == 0
        assert other.poll() is None
    finally:
        for proc in (own, other):
            proc.kill()
            proc.wait()
