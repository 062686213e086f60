"""End to end: ``python -m workbench.train RUN_DIR`` on tiny models, as a user runs it.

Each subprocess costs ~5 s of imports on two cores, so a single finished run
(module fixture) feeds most assertions. The failure cases run the same
``runner.run`` in-process: they end before any training.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from workbench import config, runs
from workbench.train.runner import run as run_in_process

SAMPLE_DIR = Path(__file__).resolve().parents[1] / "workbench" / "data" / "greentext"

TIMEOUT = 180
PROMPT = ">be me\\n>"


def new_run(root: Path, model: Path | str | None, *settings: str, backend: str = "tiny",
            plugins_dir: Path | None = None) -> Path:
    """A run folder with config.json, as the launcher writes it, for one small experiment.

    ``settings`` are TOML lines (``"train.steps = 5"``) that replace the defaults here.
    """
    values = {
        "backend": f'"{backend}"',
        "model": f'"{model}"' if model else None,
        "prompts": f'["{PROMPT}"]',
        "train.batch_size": "8",
        "train.learning_rate": "1e-2",
        "train.max_length": "64",
        "sampling.max_new_tokens": "12",
        "data.source": f'"{SAMPLE_DIR}"',
        "data.column": '"greentexts"',
        "data.train_split": '"train"',
        "data.eval_split": '"test"',
    }
    values.update(line.split(" = ", 1) for line in settings)
    toml = "[experiments.t]\n" + "\n".join(f"{k} = {v}" for k, v in values.items() if v)
    cfg = config.loads(toml, root / "experiments.toml")
    run_dir = runs.new_run_dir(root / "runs", "t")
    payload = {"experiment": cfg.get("t").model_dump(mode="json"),
               "plugins_dir": str(plugins_dir) if plugins_dir else None,
               "config_path": str(root / "experiments.toml")}
    (run_dir / runs.CONFIG).write_text(json.dumps(payload))
    return run_dir


def command(run_dir: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "workbench.train", str(run_dir), *args]


def env() -> dict[str, str]:
    # One torch thread: on a busy 2-core machine two per process make the tiny model ~10x slower.
    return dict(os.environ, HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")


def train(run_dir: Path, *args: str) -> int:
    with open(run_dir / runs.LOG, "ab") as log:
        return subprocess.run(command(run_dir, *args), stdout=log, stderr=subprocess.STDOUT,
                              env=env(), timeout=TIMEOUT).returncode


def events(run_dir: Path, kind: str) -> list[dict]:
    return [e for e in runs.read_events(run_dir) if e["type"] == kind]


# --- one real run, many checks ---------------------------------------------

STEPS = 40
RUN_SETTINGS = (f"train.steps = {STEPS}", "train.eval_every = 10", "train.save_every = 20",
                "sampling.num_samples = 2")


@pytest.fixture(scope="module")
def finished(tiny_llama_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    run_dir = new_run(tmp_path_factory.mktemp("finished"), tiny_llama_dir, *RUN_SETTINGS)
    code = train(run_dir)
    assert code == 0, (run_dir / runs.LOG).read_text()[-3000:]
    return run_dir


def test_run_finishes_with_status_adapter_and_log(finished: Path) -> None:
    status = runs.read_status(finished)
    assert status["state"] == "finished"
    assert status["exit_code"] == 0 and status["step"] == STEPS
    assert status["tokens_per_s"] > 0 and status["train_seconds"] > 0
    assert status["final"]["step"] == STEPS
    adapter = finished / runs.ADAPTER
    assert (adapter / "adapter_model.safetensors").is_file()
    assert (adapter / "adapter_config.json").is_file()
    assert (adapter / "tokenizer.json").is_file()
    assert f"step {STEPS}/{STEPS}" in (finished / runs.LOG).read_text()
    assert events(finished, "status")[-1]["state"] == "finished"


def test_train_events_cover_every_step_and_loss_goes_down(finished: Path) -> None:
    train_events = events(finished, "train")
    assert [e["step"] for e in train_events] == list(range(1, STEPS + 1))
    first = sum(e["loss"] for e in train_events[:3]) / 3
    last = sum(e["loss"] for e in train_events[-5:]) / 5
    assert last < first - 0.05, (first, last)
    for e in train_events:
        assert e["tokens"] > 0 and e["tokens_per_s"] > 0
        assert e["lr"] > 0 and e["grad_norm"] >= 0 and e["epoch"] > 0


def test_eval_events_have_finite_perplexity_and_bits_per_byte(finished: Path) -> None:
    evals = events(finished, "eval")
    assert [e["step"] for e in evals] == [10, 20, 30, 40]
    for e in evals:
        assert math.isfinite(e["perplexity"]) and e["perplexity"] > 1
        assert e["perplexity"] == pytest.approx(math.exp(e["eval_loss"]))
        assert e["bits_per_byte"] > 0
        assert e["bits_per_byte"] == pytest.approx(
            e["eval_loss"] * e["tokens"] / (math.log(2) * e["bytes"]))
    assert evals[-1]["eval_loss"] < evals[0]["eval_loss"]
    held_out = (SAMPLE_DIR / "test.jsonl").read_text(encoding="utf-8").splitlines()
    text_bytes = sum(len(json.loads(line)["greentexts"].encode()) for line in held_out if line)
    assert evals[-1]["bytes"] <= text_bytes  # texts longer than max_length count what is kept
    status = runs.read_status(finished)
    assert status["best_perplexity"] == min(e["perplexity"] for e in evals)
    assert status["last_eval"]["step"] == STEPS


def test_training_and_evaluation_peak_memory_are_reported_apart(finished: Path) -> None:
    train_events = events(finished, "train")
    assert all(e["peak_mem_gb"] > 0 for e in train_events), "the CPU's resident peak"
    assert "eval_peak_mem_gb" not in train_events[0] and "eval_peak_mem_gb" in train_events[10]
    status = runs.read_status(finished)
    assert status["peak_mem_gb"] > 0 and status["eval_peak_mem_gb"] > 0


def test_checkpoints_and_samples(finished: Path) -> None:
    checkpoints = events(finished, "checkpoint")
    assert [c["step"] for c in checkpoints] == [20, 40]
    assert all((finished / c["path"]).is_dir() for c in checkpoints)
    samples = events(finished, "sample")
    assert [(s["checkpoint"], s["index"], s["seed"]) for s in samples] == [
        ("checkpoint-20", 0, 1234), ("checkpoint-20", 1, 1235), ("final", 0, 1234), ("final", 1, 1235)
    ], "sampling.num_samples texts at each checkpoint, sample i seeded with seed + i"
    for s in samples:
        assert s["prompt"] == ">be me\n>" and s["text"].strip(), "a real continuation"
    assert samples[0]["text"] != samples[1]["text"], "two seeds, two texts"


def test_same_seed_gives_the_same_samples(finished: Path, tiny_llama_dir: Path,
                                          tmp_path: Path) -> None:
    again = new_run(tmp_path, tiny_llama_dir, *RUN_SETTINGS)
    assert train(again) == 0
    texts = [(s["checkpoint"], s["text"]) for s in events(again, "sample")]
    assert texts == [(s["checkpoint"], s["text"]) for s in events(finished, "sample")]


# --- stop and resume (stopping and resuming through the CLI: test_resume_e2e.py) ---


def test_resume_without_checkpoint_fails_clearly(tiny_llama_dir: Path, tmp_path: Path) -> None:
    run_dir = new_run(tmp_path, tiny_llama_dir, "train.steps = 5")
    assert run_in_process(run_dir, resume=True) == 1
    status = runs.read_status(run_dir)
    assert status["state"] == "failed" and status["exit_code"] == 1
    assert "no checkpoint" in status["error"]


# --- failures a user can cause -----------------------------------------------


def test_missing_column_names_the_column_and_the_ones_there(tiny_llama_dir: Path,
                                                            tmp_path: Path) -> None:
    run_dir = new_run(tmp_path, tiny_llama_dir, 'data.column = "body"')
    assert run_in_process(run_dir) == 1
    status = runs.read_status(run_dir)
    assert status["state"] == "failed" and status["error_kind"] == "data"
    assert "'body'" in status["error"] and "greentexts" in status["error"]
    assert "\n" not in status["error"]
    assert events(run_dir, "status")[-1]["state"] == "failed"


def test_hub_model_offline_says_how_to_get_it(tmp_path: Path) -> None:
    run_dir = new_run(tmp_path, None, backend="smollm")
    assert run_in_process(run_dir) == 1
    status = runs.read_status(run_dir)
    assert status["error_kind"] == "model_unavailable"
    assert "HuggingFaceTB/SmolLM-135M" in status["error"]
    assert "hf download" in status["hint"]


CRASHING_PLUGIN = '''
from pathlib import Path
from workbench.api import hookimpl

@hookimpl
def post_lora_load(experiment, model):
    raise RuntimeError("boom from a plugin")

@hookimpl
def post_train(experiment, run_dir, state):
    (Path(run_dir) / "post_train.txt").write_text(state)
'''


def test_crash_ends_failed_with_a_one_line_error(tiny_llama_dir: Path, tmp_path: Path) -> None:
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "crash.py").write_text(CRASHING_PLUGIN)
    run_dir = new_run(tmp_path, tiny_llama_dir, plugins_dir=plugins)
    assert run_in_process(run_dir) == 1
    status = runs.read_status(run_dir)
    assert status["state"] == "failed" and status["exit_code"] == 1
    assert status["error"] == "RuntimeError: boom from a plugin"
    assert status["error_kind"] == "error"
    assert (run_dir / "post_train.txt").read_text() == "failed"


@pytest.fixture
def one_thread():
    """One torch thread for in-process training (see env())."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_gpt2_shaped_model_trains_with_conv1d_lora(tiny_gpt2_dir: Path, tmp_path: Path,
                                                   one_thread: None) -> None:
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "broken.py").write_text("import not_a_module_anywhere\n")
    run_dir = new_run(tmp_path, tiny_gpt2_dir, "train.steps = 4", "train.eval_every = 2",
                      "train.save_every = 100", "train.gradient_accumulation = 2", backend="gpt2",
                      plugins_dir=plugins)
    assert run_in_process(run_dir) == 0
    status = runs.read_status(run_dir)
    assert status["state"] == "finished"  # a broken plugin is reported, not fatal
    assert status["plugin_failures"] == [
        "broken: ModuleNotFoundError: No module named 'not_a_module_anywhere'"]
    assert any("broken" in e["message"] for e in events(run_dir, "status"))
    train_events = events(run_dir, "train")
    assert [e["step"] for e in train_events] == [1, 2, 3, 4]
    # The global batch is batch_size x gradient_accumulation: 16 of the 130 texts per step.
    n_train = len((SAMPLE_DIR / "train.jsonl").read_text().splitlines())
    for e in train_events:
        assert e["epoch"] == pytest.approx(e["step"] * 8 * 2 / n_train, rel=0.15)
    assert events(run_dir, "eval")[-1]["bits_per_byte"] > 0
    adapter_config = json.loads((run_dir / runs.ADAPTER / "adapter_config.json").read_text())
    assert adapter_config["fan_in_fan_out"] is True
    assert set(adapter_config["target_modules"]) == {"c_attn", "c_proj", "c_fc"}
