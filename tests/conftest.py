"""Shared fixtures: no hub access anywhere, and tiny models built once per session."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

# Before any test imports huggingface_hub or datasets, which read it once at import.
os.environ["HF_HUB_OFFLINE"] = "1"

SAMPLE_DIR = Path(__file__).resolve().parents[1] / "workbench" / "data" / "greentext"


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """Nothing reaches a model hub in tests."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def sample_texts() -> list[str]:
    lines = (SAMPLE_DIR / "train.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line)["greentexts"] for line in lines if line.strip()]


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random Llama with a BPE tokenizer trained on the sample data."""
    from workbench.train.tiny import build_tiny_model

    return build_tiny_model("llama", tmp_path_factory.mktemp("tiny-llama"), sample_texts())


@pytest.fixture(scope="session")
def tiny_gpt2_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random GPT-2 (Conv1D layers) with the same kind of tokenizer."""
    from workbench.train.tiny import build_tiny_model

    return build_tiny_model("gpt2", tmp_path_factory.mktemp("tiny-gpt2"), sample_texts())


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--runslow", action="store_true", help="run tests marked slow (real models)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """``@pytest.mark.slow`` tests run only with --runslow or WORKBENCH_SLOW=1."""
    if config.getoption("--runslow") or os.environ.get("WORKBENCH_SLOW") == "1":
        return
    skip = pytest.mark.skip(reason="slow: opt in with --runslow or WORKBENCH_SLOW=1")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)
