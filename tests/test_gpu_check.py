"""``benchmarks/gpu_check.sh`` on this CPU-only machine: it finishes quickly with a clear "no GPU"."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.sh"


def gpu_check(**env: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True, timeout=240,
                          env={**os.environ, "PYTHON": sys.executable, "CUDA_VISIBLE_DEVICES": "",
                               **env})


def test_without_a_gpu_every_check_skips_and_the_result_says_no_gpu() -> None:
    proc = gpu_check()
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    assert lines[-1].startswith("result: no GPU on this machine"), proc.stdout
    table = [line.split() for line in lines if line.startswith(("precision", "study_run", "compare"))]
    assert {row[0] for row in table} >= {"precision", "study_run_wall", "compare_generation"}
    assert all(row[1] == "skip" for row in table), proc.stdout
    assert "FAIL" not in proc.stdout


@pytest.mark.parametrize(("body", "shown"), [
    ("import sys; print('CHECK\\tbroken\\tFAIL\\tit broke'); sys.exit(0)", "it broke"),
    ("raise SystemExit(3)", "exit 3"),
])
def test_a_failing_check_fails_the_run_in_the_table(tmp_path: Path, body: str, shown: str) -> None:
    (tmp_path / "check_ok.py").write_text("print('CHECK\\tfine\\tok\\tall good')\n")
    (tmp_path / "check_bad.py").write_text(body + "\n")
    proc = gpu_check(GPU_CHECKS_DIR=str(tmp_path))
    assert proc.returncode == 1
    assert "all good" in proc.stdout and shown in proc.stdout
    assert "result: 1 of 2 checks FAILED" in proc.stdout


def test_study_rate_leaves_out_warmup_and_the_steps_after_evaluations_and_checkpoints() -> None:
    import importlib.util

    path = SCRIPT.parent / "gpu_checks" / "check_training_speed.py"
    spec = importlib.util.spec_from_file_location("check_training_speed", path)
    assert spec and spec.loader
    check = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(check)
    # steps 1..120, one second and 100 tokens each, but 50 s more after each eval/checkpoint step
    events, now = [], 0.0
    for step in range(1, 121):
        now += 1.0 + (50.0 if (step - 1) and (step - 1) % 50 == 0 else 0.0)
        events.append({"type": "train", "step": step, "time": now, "tokens": 100})
    assert check.train_rate(events, warmup=10) == pytest.approx(100.0)
