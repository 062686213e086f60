"""Tiny random-initialised models that train in seconds on a CPU.

:func:`build_tiny_model` trains a small byte-level BPE tokenizer on some
texts and saves it with a Llama- or GPT-2-shaped model of a few hundred
thousand parameters: the offline ``tiny`` backend and the end-to-end tests
use them. Same texts and seed, same files.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from transformers import PreTrainedModel

VOCAB_SIZE = 512
BOS, EOS, PAD = "<s>", "</s>", "<pad>"
HIDDEN, LAYERS, HEADS, INTERMEDIATE = 64, 2, 4, 128
MAX_POSITIONS = 512
# Wider than transformers' 0.02: with frozen, tied embeddings that small, no LoRA update
# can make the logits peaked, and 60 steps on the sample moved the loss 6.25 -> 6.07.
# At 0.1 the same run goes 6.64 -> 5.52 (held-out 5.58 -> 5.44): a curve worth watching.
INIT_RANGE = 0.1


def build_tokenizer(texts: list[str], vocab_size: int = VOCAB_SIZE):
    """A byte-level BPE tokenizer trained on ``texts`` that puts BOS before every text."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[PAD, BOS, EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    # BOS first, like Llama's tokenizer: the model always has a context token.
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B", special_tokens=[(BOS, tok.token_to_id(BOS))]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=BOS, eos_token=EOS, pad_token=PAD,
        model_max_length=MAX_POSITIONS,
    )


def tiny_model(kind: Literal["llama", "gpt2"], ids: dict[str, Any]) -> PreTrainedModel:
    """A random ``kind`` model of the tiny size, with the tokenizer's ``ids`` (vocab size, special ids)."""
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

    if kind == "llama":
        return LlamaForCausalLM(LlamaConfig(
            hidden_size=HIDDEN, num_hidden_layers=LAYERS, num_attention_heads=HEADS,
            num_key_value_heads=HEADS, intermediate_size=INTERMEDIATE,
            max_position_embeddings=MAX_POSITIONS, tie_word_embeddings=True,
            initializer_range=INIT_RANGE, **ids,
        ))
    if kind == "gpt2":
        return GPT2LMHeadModel(GPT2Config(n_embd=HIDDEN, n_layer=LAYERS, n_head=HEADS,
                                          n_positions=MAX_POSITIONS, initializer_range=INIT_RANGE, **ids))
    raise ValueError(f"unknown tiny model kind {kind!r} (use 'llama' or 'gpt2')")


def build_tiny_model(
    kind: Literal["llama", "gpt2"], out_dir: str | Path, texts: list[str], seed: int = 0
) -> Path:
    """Save a tokenizer trained on ``texts`` and a random ``kind`` model to ``out_dir``."""
    import torch

    if kind not in ("llama", "gpt2"):
        raise ValueError(f"unknown tiny model kind {kind!r} (use 'llama' or 'gpt2')")
    out = Path(out_dir)
    tokenizer = build_tokenizer(texts)
    ids = {
        "vocab_size": len(tokenizer),
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
    }
    with torch.random.fork_rng():  # leave the caller's RNG as it was
        torch.manual_seed(seed)
        model = tiny_model(kind, ids)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out
