"""The training process's parts in isolation: error summaries, precision, settings, scoring."""

from __future__ import annotations

from pathlib import Path

import pytest

from workbench.config import loads
from workbench.train.errors import UserError, describe
from workbench.train.trainer import Hardware, choose_precision, sft_config


def test_oom_is_classified_with_a_hint() -> None:
    import torch

    failure = describe(torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB\nmore"))
    assert failure.kind == "oom"
    assert failure.error == "OutOfMemoryError: CUDA out of memory. Tried to allocate 2 GiB"
    assert "train.batch_size" in failure.hint and "gradient_checkpointing" in failure.hint
    assert describe(RuntimeError("MPS backend out of memory")).kind == "oom"


def test_other_errors_are_one_line() -> None:
    failure = describe(ValueError("first line\nsecond line"))
    assert (failure.error, failure.kind) == ("ValueError: first line", "error")
    user = describe(UserError("column 'x' not found", kind="data", hint="set data.column"))
    assert (user.error, user.kind, user.hint) == ("column 'x' not found", "data", "set data.column")


@pytest.mark.parametrize(("requested", "cuda", "bf16", "expected"), [
    ("auto", False, False, "fp32"),
    ("auto", True, True, "bf16"),
    ("auto", True, False, "fp16"),
    ("fp32", True, True, "fp32"),
    ("bf16", False, False, "bf16"),
])
def test_precision_follows_the_hardware(requested: str, cuda: bool, bf16: bool,
                                        expected: str) -> None:
    assert choose_precision(requested, cuda, bf16) == expected


def test_impossible_precision_is_a_user_error() -> None:
    with pytest.raises(UserError, match="fp16"):
        choose_precision("fp16", cuda=False, bf16_supported=False)
    with pytest.raises(UserError, match="bf16"):
        choose_precision("bf16", cuda=True, bf16_supported=False)


def experiment(*lines: str):
    toml = "\n".join(["[experiments.t]", 'backend = "tiny"', 'data.source = "x/y"', *lines])
    return loads(toml).get("t")


def test_sft_config_on_cpu_overrides_trl_defaults(tmp_path: Path) -> None:
    exp = experiment("train.steps = 7", "train.save_every = 3", "train.logging_every = 2",
                     "train.max_length = 33")
    args = sft_config(exp, tmp_path, Hardware(cuda=False, precision="fp32"))
    assert (args.bf16, args.fp16, args.gradient_checkpointing) == (False, False, False)
    assert args.use_cpu and args.report_to in ([], "none", ["none"])
    assert (args.max_steps, args.save_steps, args.logging_steps) == (7, 3, 2)
    assert args.max_length == 33 and not args.packing and args.pad_to_multiple_of is None
    assert args.output_dir == str(tmp_path / "checkpoints")


def test_gradient_checkpointing_only_when_asked(tmp_path: Path) -> None:
    exp = experiment("train.gradient_checkpointing = true")
    args = sft_config(exp, tmp_path, Hardware(cuda=False, precision="fp32"))
    assert args.gradient_checkpointing


def test_heldout_scoring_counts_every_text_byte_and_eos(tiny_llama_dir: Path) -> None:
    from transformers import AutoTokenizer

    from workbench.train.evaluation import encode_heldout

    tok = AutoTokenizer.from_pretrained(tiny_llama_dir)
    text = ">be me\n>café"
    [(ids, nbytes)] = encode_heldout(tok, [text], max_length=64)
    assert ids[0] == tok.bos_token_id and ids[-1] == tok.eos_token_id
    assert tok.decode(ids[1:-1]) == text
    assert nbytes == len(text.encode("utf-8"))  # é is 2 bytes; EOS adds none
    [(cut, cut_bytes)] = encode_heldout(tok, [text], max_length=4)
    assert len(cut) == 4 and cut[-1] != tok.eos_token_id
    assert cut_bytes == len(tok.decode(cut[1:]).encode("utf-8")) < nbytes


def test_samples_are_reproducible_for_a_seed(tiny_llama_dir: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from workbench.train.evaluation import generate

    tok = AutoTokenizer.from_pretrained(tiny_llama_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir)
    kw = {"temperature": 1.0, "top_p": 1.0, "max_new_tokens": 8}
    torch.manual_seed(0)
    before = torch.rand(1)
    torch.manual_seed(0)
    a = generate(model, tok, ">be me\n>", seed=5, **kw)
    after = torch.rand(1)
    assert after == before  # sampling leaves the training's random stream alone
    assert generate(model, tok, ">be me\n>", seed=5, **kw) == a
    assert generate(model, tok, ">be me\n>", seed=6, **kw) != a


def test_cpu_training_loss_is_the_model_s_own_and_trl_s(tiny_llama_dir: Path, tmp_path: Path) -> None:
    """``WorkbenchSFTTrainer.compute_loss`` (CPU path) reports what the model and TRL would."""
    import json

    import torch
    from trl import SFTTrainer

    from workbench.plugins import load_plugins
    from workbench.train.trainer import attach_lora, build_trainer, load_model

    exp = loads("\n".join(["[experiments.t]", 'backend = "tiny"', f'model = "{tiny_llama_dir}"',
                           'data.source = "x/y"', "lora.dropout = 0.0", "train.batch_size = 4",
                           "train.max_length = 48"])).get("t")
    backend = load_plugins(None).backends["tiny"]
    hardware = Hardware(cuda=False, precision="fp32")
    model, tokenizer = load_model(backend, exp, hardware)
    model = attach_lora(model, exp, backend)
    data = Path(__file__).resolve().parents[1] / "workbench" / "data" / "greentext" / "train.jsonl"
    texts = [json.loads(line)["greentexts"] for line in data.read_text(encoding="utf-8").splitlines()[:16]]
    trainer = build_trainer(model, tokenizer, texts, sft_config(exp, tmp_path, hardware), [],
                            batching="padded")  # a padded batch: attention_mask below
    batch = next(iter(trainer.get_train_dataloader()))
    labels = batch["labels"]
    assert (labels != -100).sum() > 20, "a batch with real text"
    trainer.model.train()
    with torch.no_grad():
        own = trainer.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                            labels=labels).loss.item()
        reported = trainer.compute_loss(trainer.model, dict(batch)).item()
        trl = SFTTrainer.compute_loss(trainer, trainer.model, dict(batch)).item()
        # As the Trainer calls it, with the batch's count of predicted tokens:
        items = int((labels[:, 1:] != -100).sum())
        counted = trainer.compute_loss(trainer.model, dict(batch), num_items_in_batch=items).item()
    assert 1.0 < own < 20.0
    assert reported == pytest.approx(own, rel=1e-5)
    assert trl == pytest.approx(own, rel=1e-4)
    assert counted == pytest.approx(own, rel=1e-5)
