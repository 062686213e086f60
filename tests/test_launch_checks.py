"""Distributed settings that could never run are refused up front, through the real command."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from workbench import queue, runs

NOOP_LAUNCHER = '''
import sys
from workbench.api import Launcher, hookimpl

@hookimpl
def register_launchers(register):
    register(Launcher("noop", lambda run_dir, dist: [sys.executable, "-c", "pass", run_dir]))
'''


def write(tmp_path: Path, launcher: str, nproc: int) -> None:
    (tmp_path / "plugins").mkdir(exist_ok=True)
    (tmp_path / "plugins" / "noop.py").write_text(NOOP_LAUNCHER)
    (tmp_path / "experiments.toml").write_text(f"""
plugins_dir = "plugins"
[experiments.a]
backend = "smollm"
data.source = "x.jsonl"
launcher = "{launcher}"
distributed.nproc_per_node = {nproc}
""")


def workbench(cwd: Path, *args: str, gpus: str = "") -> subprocess.CompletedProcess:
    env = dict(os.environ, HF_HUB_OFFLINE="1", CUDA_VISIBLE_DEVICES=gpus)
    return subprocess.run([sys.executable, "-m", "workbench.cli", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=60)


def test_python_launcher_with_two_processes_is_refused_at_validation(tmp_path):
    write(tmp_path, "python", 2)
    for command in (["validate"], ["run", "a"]):
        result = workbench(tmp_path, *command)
        assert result.returncode == 2, result.stdout + result.stderr
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and "distributed" in lines[0] and "torchrun" in lines[0], lines
    assert not (tmp_path / "runs").exists()
    write(tmp_path, "torchrun", 2)
    assert workbench(tmp_path, "validate").returncode == 0


def test_more_processes_than_gpus_is_refused_at_enqueue(tmp_path):
    write(tmp_path, "noop", 2)
    result = workbench(tmp_path, "run", "a", gpus="0")
    assert result.returncode == 2
    assert "nproc_per_node = 2" in result.stderr and "1 GPU" in result.stderr
    assert not list((tmp_path / "runs").glob("a/*")), "nothing queued, no folder left"
    result = workbench(tmp_path, "run", "a", gpus="0,1")
    assert result.returncode == 0, result.stderr
    assert runs.resolve(tmp_path / "runs", "a#1").status["gpus_needed"] == 2
    result = workbench(tmp_path, "run", "a", gpus="")  # no GPU: every rank on the CPU
    assert result.returncode == 0, result.stderr


def test_a_queued_run_that_can_no_longer_fit_fails_instead_of_waiting(tmp_path):
    run_dir = tmp_path / "x" / "1"
    run_dir.mkdir(parents=True)
    runs.write_status(run_dir, state="queued", experiment="x", run_id="1")
    queue.enqueue(run_dir, gpus_needed=4)
    assert queue.step(tmp_path, ["0", "1"]) is False
    status = runs.read_status(run_dir)
    assert status["state"] == "failed" and status["error"] == "needs 4 GPUs; this machine has 2"
