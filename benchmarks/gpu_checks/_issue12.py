"""Helpers for the issue-12 GPU checks (precision, launchers, stops): real runs through the CLI.

Not a check itself (the runner only runs ``check_*.py``). Every run is a real
``workbench run`` in a scratch folder, on a small Llama with random weights and
a BPE tokenizer trained on the bundled sample (no model hub here).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "workbench" / "data" / "greentext"
PROMPT = ">be me\\n>"


def row(name: str, result: str, detail: str = "") -> None:
    """One result row for ``benchmarks/gpu_check.sh``."""
    print(f"CHECK\t{name}\t{result}\t{detail}".replace("\n", " "), flush=True)


def log(message: str) -> None:
    print(f"issue12: {message}", file=sys.stderr, flush=True)


def gpu_count() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def try_on_cpu() -> bool:
    """``ISSUE12_CHECK_ON_CPU=1``: run the run-based checks on a CPU, to try the script itself."""
    return os.environ.get("ISSUE12_CHECK_ON_CPU") == "1"


def small_llama(folder: Path, hidden: int = 512, layers: int = 8) -> Path:
    """A small Llama (about 25M parameters) saved with its tokenizer, random weights, seeded."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from workbench.train.tiny import build_tokenizer

    texts = [json.loads(line)["greentexts"] for line in
             (SAMPLE / "train.jsonl").read_text().splitlines() if line.strip()]
    tokenizer = build_tokenizer(texts)
    config = LlamaConfig(hidden_size=hidden, intermediate_size=hidden * 3, num_hidden_layers=layers,
                         num_attention_heads=8, num_key_value_heads=4, vocab_size=len(tokenizer),
                         max_position_embeddings=512, bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def experiment_toml(name: str, model: Path, **settings: Any) -> str:
    """One experiment table; ``settings`` are dotted keys (``train__steps=40`` -> train.steps)."""
    values: dict[str, Any] = {
        "backend": "smollm", "model": str(model), "prompts": [PROMPT],
        "data.source": str(SAMPLE), "data.column": "greentexts",
        "data.train_split": "train", "data.eval_split": "test",
        "train.batch_size": 8, "train.max_length": 128, "train.logging_every": 1,
    }
    values.update({k.replace("__", "."): v for k, v in settings.items()})
    return f"[experiments.{name}]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in values.items())


class Project:
    """A scratch folder with an experiments.toml and the ``workbench`` command run in it."""

    def __init__(self, folder: Path, tables: list[str]) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "experiments.toml").write_text("\n".join(tables))
        self.env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")

    def workbench(self, *args: str, timeout: float = 240, env: dict[str, str] | None = None
                  ) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "workbench.cli", *args], cwd=self.folder,
                              env={**self.env, **(env or {})}, capture_output=True, text=True,
                              timeout=timeout)

    def run_dir(self, name: str, number: int = 1) -> Path:
        return self.folder / "runs" / name / str(number)

    def status(self, name: str) -> dict[str, Any]:
        from workbench import runs

        return runs.read_status(self.run_dir(name))

    def events(self, name: str, kind: str | None = None) -> list[dict[str, Any]]:
        from workbench import runs

        return [e for e in runs.read_events(self.run_dir(name)) if kind in (None, e.get("type"))]

    def end_runs(self) -> None:
        """Leave no process behind (a check that failed half-way may leave a run going)."""
        from workbench import processes, runs

        for run in runs.list_runs(self.folder / "runs"):
            processes.end_all(processes.of_run(run.path, run.status), grace=10)

    def log_tail(self, name: str, lines: int = 15) -> str:
        from workbench import runs

        return " | ".join(runs.tail_log(self.run_dir(name), lines))


def wait_for(predicate: Callable[[], Any], timeout: float, poll: float = 0.1) -> Any:
    """The first truthy value of ``predicate()``, or ``None`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(poll)
    return None


def guarded(name: str, check: Callable[[], None]) -> bool:
    """Run one check; an exception becomes a FAIL row instead of ending the file."""
    try:
        check()
        return True
    except Exception as exc:  # noqa: BLE001 - every check reports, whatever broke
        row(name, "FAIL", f"{type(exc).__name__}: {str(exc)[:300]}")
        return False
