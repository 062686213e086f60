"""How rows become batches: padding-free (the default), length-grouped, or padded.

``padding_free``
    a batch's rows concatenated into one row, ``position_ids`` restarting at 0
    for each, no ``attention_mask`` and no KV cache: transformers then builds a
    block-diagonal causal mask from the packed ``position_ids``, so no compute
    goes to padding and the random batch composition of the study is kept.
    The collator is TRL's (``DataCollatorForLanguageModeling(padding_free=True)``).
``grouped``
    padded batches drawn by transformers' ``LengthGroupedSampler``: rows of
    similar length share a batch, so little is padded, but which rows train
    together changes.
``padded``
    the plain way: random batches padded to their longest row.

Packed ``position_ids`` are only honoured by some models and transformers
versions (a model that ignores them silently attends across the rows of a
batch). :func:`resolve` therefore checks the loaded model: the logits of two
short rows, packed, must equal their logits one row at a time, or the run
falls back to ``grouped`` and says why in ``train.log``.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from typing import Any, Literal

Batching = Literal["padding_free", "grouped", "padded"]
BATCHINGS: tuple[Batching, ...] = ("padding_free", "grouped", "padded")
FALLBACK: Batching = "grouped"
# Largest |packed - one-at-a-time| logit difference accepted, relative to the logits' scale:
# fp32 agrees to ~1e-6; half precision rounds to ~1e-2. Attending across rows moves logits by O(1).
PROBE_TOLERANCE = {"fp32": 1e-4, "half": 3e-2}


def collator(batching: Batching, pad_token_id: int) -> Any:
    """TRL's language-modelling collator, padding-free or padding each batch to its longest row."""
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    return DataCollatorForLanguageModeling(pad_token_id=pad_token_id,
                                           padding_free=batching == "padding_free")


def sampling_strategy(batching: Batching) -> str:
    """``TrainingArguments.train_sampling_strategy`` for a batching."""
    return "group_by_length" if batching == "grouped" else "random"


def real_tokens(batch: dict[str, Any]) -> Any:
    """Non-padding tokens of a collated batch: a Python int for a packed one (no device sync)."""
    if "attention_mask" in batch:
        return batch["attention_mask"].sum()
    return int(batch["input_ids"].numel())  # a packed row holds no padding


def forward(model: Any, batch: dict[str, Any]) -> Any:
    """The model's output for a collated batch; never with a KV cache (it breaks packing)."""
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    return model(**inputs, use_cache=False)


def probe(model: Any, pad_token_id: int) -> str | None:
    """Why packed rows are not exact for ``model`` (None when they are): a check on two short rows.

    Rows of 5 and 3 tokens are run packed and one at a time, dropout off, no
    gradients; the packed logits must match within :data:`PROBE_TOLERANCE`.
    """
    import torch

    from workbench.train.evaluation import eval_mode

    vocab = int(model.get_output_embeddings().weight.shape[0])
    rows = [[(7 * i + 3) % vocab for i in range(5)], [(11 * i + 5) % vocab for i in range(3)]]
    packed = collator("padding_free", pad_token_id)([{"input_ids": r} for r in rows])
    device = next(model.parameters()).device
    half = next(model.parameters()).dtype in (torch.float16, torch.bfloat16)
    try:
        with eval_mode(model):
            together = forward(model, _to(packed, device)).logits[0].float()
            alone = torch.cat([
                forward(model, {"input_ids": torch.tensor([r], device=device)}).logits[0].float()
                for r in rows])
    except Exception as exc:  # noqa: BLE001 - any failure means: don't pack
        return f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}".rstrip(": ")
    diff = float((together - alone).abs().max())
    scale = 1.0 + float(alone.abs().max())
    if diff > PROBE_TOLERANCE["half" if half else "fp32"] * scale:
        return (f"packed rows attend across each other in this model/transformers "
                f"(logits differ by {diff:.3g})")
    return None


def resolve(requested: Batching, model: Any, pad_token_id: int) -> tuple[Batching, str | None]:
    """The batching to use and a note for ``train.log`` when it is not the one requested."""
    if requested != "padding_free":
        return requested, None
    problem = probe(model, pad_token_id)
    if problem is None:
        return "padding_free", None
    return FALLBACK, (f"batching: padding-free batches are not exact here ({problem}); "
                      f"using {FALLBACK!r} batches instead")


def announce(batching: Batching, note: str | None) -> None:
    """One line in ``train.log`` naming the batching (and the reason for a fallback)."""
    print(note or f"batching: {batching}", file=sys.stderr if note else sys.stdout, flush=True)


def eval_batches(rows: list[list[int]], labels: list[list[int]], batch_size: int,
                 batching: Batching, pad_token_id: int) -> Iterator[dict[str, Any]]:
    """Collated held-out batches of ``rows`` (their ``labels`` -100 where nothing is predicted).

    The summed loss does not depend on which rows share a batch, so ``grouped``
    and ``padding_free`` both sort the rows by length first: packed batches of
    similar length waste nothing either way, and padded ones pad little.
    """
    order = list(range(len(rows)))
    if batching != "padded":
        order.sort(key=lambda i: len(rows[i]))
    collate = collator(batching, pad_token_id)
    for start in range(0, len(order), batch_size):
        chunk = order[start:start + batch_size]
        yield collate([{"input_ids": rows[i], "labels": labels[i]} for i in chunk])


def _to(batch: dict[str, Any], device: Any) -> dict[str, Any]:
    return {k: v.to(device) if hasattr(v, "to") else v for k, v in batch.items()}
