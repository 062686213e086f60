"""The training benchmark (``benchmarks/bench_train.py``): its arithmetic, and a tiny end-to-end run."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_train.py"


def load_bench():
    spec = importlib.util.spec_from_file_location("bench_train", SCRIPT)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_train"] = module
    spec.loader.exec_module(module)
    return module


def test_rate_excludes_warmup_steps(tmp_path: Path) -> None:
    bench = load_bench()
    events = tmp_path / "events.jsonl"
    lines = [{"type": "status", "time": 0.0, "state": "running"}]
    # step k ends at 10 + k seconds with 100 * k tokens; step 1 is warmup
    lines += [{"type": "train", "time": 10.0 + k, "step": k, "tokens": 100 * k, "tokens_per_s": 1.0}
              for k in (1, 2, 3)]
    events.write_text("\n".join(json.dumps(e) for e in lines) + "\n{\"type\": \"tra")  # torn last line
    result = bench.result_from_events(events, warmup=1)
    assert result.measured_steps == 2
    assert result.tokens == 500
    assert result.seconds == pytest.approx(2.0)
    assert result.tokens_per_s == pytest.approx(250.0)
    minimal = bench.Result("minimal", 1, step_end=[0.0, 1.0, 2.0], step_tokens=[9, 500, 500])
    assert bench.ratios([result, minimal])["workbench/minimal"] == pytest.approx(0.5)


def test_padding_share_and_compute_floor(tmp_path: Path) -> None:
    bench = load_bench()
    minimal = bench.Result("minimal", 1, step_end=[0.0, 1.0, 2.0], step_tokens=[9, 60, 90],
                           step_computed=[12, 100, 100])
    assert minimal.padding == pytest.approx(1 - 150 / 200)  # warmup step left out
    assert bench.Result("workbench", 1, step_end=[0.0, 1.0], step_tokens=[1, 2]).padding is None
    # a safetensors file whose header holds a 3x4 and a 5-element tensor: 17 parameters
    header = json.dumps({"a": {"dtype": "F32", "shape": [3, 4], "data_offsets": [0, 48]},
                         "b": {"dtype": "F32", "shape": [5], "data_offsets": [48, 68]},
                         "__metadata__": {}}).encode()
    (tmp_path / "model.safetensors").write_bytes(len(header).to_bytes(8, "little") + header + bytes(68))
    assert bench.model_params(tmp_path) == 17
    assert bench.flop_per_token(135_000_000) == pytest.approx(0.54e9)
    assert bench.matmul_gflops(n=64, repeats=1) > 0


def test_missing_train_event_is_an_error(tmp_path: Path) -> None:
    bench = load_bench()
    events = tmp_path / "events.jsonl"
    events.write_text("\n".join(json.dumps({"type": "train", "time": float(k), "step": k, "tokens": 1})
                                for k in (1, 3)) + "\n")
    with pytest.raises(RuntimeError, match="every step"):
        bench.result_from_events(events, warmup=1)


@pytest.mark.slow
@pytest.mark.benchmark
def test_tiny_benchmark_end_to_end(tmp_path: Path) -> None:
    """All three trainers on the tiny model, 1 warmup + 2 measured steps: same batches, a table, a JSON."""
    env = dict(os.environ, HF_HUB_OFFLINE="1", WORKBENCH_CACHE=str(tmp_path / "cache"))
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--model", "tiny", "--steps", "2", "--warmup", "1",
         "--results-dir", str(tmp_path / "results")],
        env=env, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "workbench vs minimal loop:" in proc.stdout
    assert "workbench vs TRL defaults:" in proc.stdout
    (path,) = (tmp_path / "results").glob("*.json")
    data = json.loads(path.read_text())
    best = {r["name"]: r for r in data["best"]}
    assert set(best) == {"workbench", "minimal", "trl-defaults"}
    for r in best.values():
        assert r["steps"] == 2 and r["tokens"] > 0 and r["tokens_per_s"] > 0
    # the same seed and data give every trainer the very same batches
    assert len({tuple(r["step_tokens"]) for r in best.values()}) == 1, best
