"""Padding-free batches are exact: same per-token loss and gradients as the padded batch.

On the tiny Llama and the tiny GPT-2, with a LoRA adapter attached as in
training, a batch of four sample texts of different lengths is run padded
(``attention_mask``) and padding-free (one packed row, ``position_ids``
restarting per text); each predicted token's loss and every LoRA gradient
must agree. A transformers without packed-sequence masks is simulated by
switching its detection off: the probe must notice and the run fall back.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import sample_texts
from workbench.train import batching


def lora_model(model_dir: Path, attn: str = "sdpa"):
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32, attn_implementation=attn)
    gpt2 = model.config.model_type == "gpt2"
    targets = ["c_attn", "c_proj", "c_fc"] if gpt2 else ["q_proj", "k_proj", "v_proj", "o_proj",
                                                          "gate_proj", "up_proj", "down_proj"]
    torch.manual_seed(0)
    model = get_peft_model(model, LoraConfig(r=4, lora_alpha=16, lora_dropout=0.0, target_modules=targets,
                                             fan_in_fan_out=gpt2, init_lora_weights=False,
                                             task_type="CAUSAL_LM"))
    return model, tokenizer


def rows(tokenizer, count: int = 4) -> list[list[int]]:
    """``count`` sample texts of clearly different lengths, EOS appended as in training."""
    texts = sorted(sample_texts(), key=len)
    picked = [texts[i * (len(texts) - 1) // (count - 1)] for i in range(count)]
    out = [tokenizer(t)["input_ids"] + [tokenizer.eos_token_id] for t in picked]
    assert len({len(r) for r in out}) == count  # really different lengths: padding in play
    return out


def token_losses_and_grads(model, batch) -> tuple[list, dict]:
    """Per predicted token, in text order, its loss; and every trainable parameter's gradient."""
    import torch
    import torch.nn.functional as F

    model.zero_grad(set_to_none=True)
    logits = batching.forward(model, batch).logits
    labels = batch["labels"]
    per_token = F.cross_entropy(logits[:, :-1].reshape(-1, logits.size(-1)), labels[:, 1:].reshape(-1),
                                ignore_index=-100, reduction="none")
    kept = per_token[labels[:, 1:].reshape(-1) != -100]
    kept.mean().backward()
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    assert grads and all(torch.count_nonzero(g) for g in grads.values())
    return kept.detach(), grads


@pytest.mark.parametrize("kind", ["llama", "gpt2"])
@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_padding_free_batch_matches_the_padded_batch(kind: str, attn: str, tiny_llama_dir: Path,
                                                     tiny_gpt2_dir: Path) -> None:
    import torch

    model, tokenizer = lora_model(tiny_llama_dir if kind == "llama" else tiny_gpt2_dir, attn)
    model.eval()  # dropout off (GPT-2 has some): both passes must see the same network; grads still flow
    examples = [{"input_ids": r} for r in rows(tokenizer)]
    padded = batching.collator("padded", tokenizer.pad_token_id)(examples)
    packed = batching.collator("padding_free", tokenizer.pad_token_id)(examples)
    assert "attention_mask" in padded and "attention_mask" not in packed
    assert packed["input_ids"].shape == (1, sum(len(e["input_ids"]) for e in examples))
    assert int(padded["attention_mask"].sum()) < padded["input_ids"].numel()  # it did pad

    loss_padded, grads_padded = token_losses_and_grads(model, padded)
    loss_packed, grads_packed = token_losses_and_grads(model, packed)
    assert loss_packed.shape == loss_padded.shape
    torch.testing.assert_close(loss_packed, loss_padded, rtol=1e-5, atol=1e-5)
    for name, grad in grads_padded.items():
        torch.testing.assert_close(grads_packed[name], grad, rtol=1e-4, atol=1e-6, msg=name)
    assert batching.probe(model, tokenizer.pad_token_id) is None
    assert batching.resolve("padding_free", model, tokenizer.pad_token_id) == ("padding_free", None)


def test_without_packed_masks_the_probe_falls_back(tiny_llama_dir: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """A transformers that ignores packed position_ids (older ones) must not train packed."""
    from transformers import masking_utils

    model, tokenizer = lora_model(tiny_llama_dir)
    monkeypatch.setattr(masking_utils, "find_packed_sequence_indices", lambda position_ids: None)
    problem = batching.probe(model, tokenizer.pad_token_id)
    assert problem is not None and "attend across" in problem
    chosen, note = batching.resolve("padding_free", model, tokenizer.pad_token_id)
    assert chosen == "grouped" and note and "grouped" in note


def test_packed_tokens_are_counted_without_touching_the_values(tiny_llama_dir: Path) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_llama_dir)
    examples = [{"input_ids": r} for r in rows(tokenizer)]
    real = sum(len(e["input_ids"]) for e in examples)
    packed = batching.collator("padding_free", tokenizer.pad_token_id)(examples)
    padded = batching.collator("padded", tokenizer.pad_token_id)(examples)
    assert batching.real_tokens(packed) == real and isinstance(batching.real_tokens(packed), int)
    assert int(batching.real_tokens(padded)) == real


@pytest.mark.parametrize("kind", ["llama", "gpt2"])
def test_heldout_pass_gives_the_same_sums_in_every_batching(kind: str, tiny_llama_dir: Path,
                                                            tiny_gpt2_dir: Path) -> None:
    from workbench.train.evaluation import heldout_loss

    model, tokenizer = lora_model(tiny_llama_dir if kind == "llama" else tiny_gpt2_dir)
    texts = sample_texts()[:11]  # 11 rows at 4 a batch: a short last batch too
    sums = {mode: heldout_loss(model, tokenizer, texts, max_length=64, batch_size=4, batching=mode)
            for mode in batching.BATCHINGS}
    padded = sums["padded"]
    for mode, result in sums.items():
        assert (result["tokens"], result["bytes"]) == (padded["tokens"], padded["bytes"]), mode
        assert result["nll"] == pytest.approx(padded["nll"], rel=1e-5), mode


FALLBACK_PLUGIN = '''
from workbench.api import hookimpl

@hookimpl
def post_lora_load(experiment, model):
    # what an older transformers does: no block-diagonal mask from packed position_ids
    from transformers import masking_utils
    masking_utils.find_packed_sequence_indices = lambda position_ids: None
'''


def test_a_run_without_packed_masks_falls_back_and_says_so_in_train_log(tiny_llama_dir: Path,
                                                                        tmp_path: Path) -> None:
    from tests.test_train import events, new_run, train
    from workbench import runs

    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "old_transformers.py").write_text(FALLBACK_PLUGIN)
    run_dir = new_run(tmp_path, tiny_llama_dir, "train.steps = 2", "train.eval_every = 1",
                      "train.save_every = 100", plugins_dir=plugins)
    assert train(run_dir) == 0
    log = (run_dir / runs.LOG).read_text()
    assert "padding-free batches are not exact here" in log and "using 'grouped' batches" in log
    assert runs.read_status(run_dir)["state"] == "finished"
    assert [e["step"] for e in events(run_dir, "train")] == [1, 2]
