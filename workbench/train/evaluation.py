"""Held-out loss, seeded generation, and running the experiment's evaluators.

One forward pass over the held-out texts per evaluation feeds every
``eval`` evaluator: :meth:`Evaluations.evaluate` hands them an
:class:`~workbench.api.EvalContext` whose ``heldout_loss()`` computes
``{"nll": summed nats, "tokens": predicted tokens, "bytes": UTF-8 bytes}``
once and caches it.

How a held-out text is scored: the sequence is a context token (BOS, or EOS
for tokenizers without one), the text's tokens, then EOS, exactly as
training appends EOS. Every text token and the EOS are predicted, so every
byte of the text is counted; the EOS adds a token but 0 bytes, so
bits per byte stays a property of the text alone and comparable across
tokenizers. Sequences are cut to ``train.max_length`` tokens like training
ones; a cut text counts only the bytes its kept tokens cover.
"""

from __future__ import annotations

import contextlib
import random
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from workbench.api import EvalContext, Evaluator, Metric
from workbench.metrics import RESERVED as RESERVED_METRICS
from workbench.train import ranks
from workbench.train.batching import Batching
from workbench.train.errors import first_line

RESERVED = ("type", "time", "step", "checkpoint")  # event fields the engine owns


@contextlib.contextmanager
def rng_preserved() -> Iterator[None]:
    """Run a block (seeded sampling) without disturbing the training's random streams."""
    import numpy as np
    import torch

    py_state, np_state = random.getstate(), np.random.get_state()
    with torch.random.fork_rng(devices=range(torch.cuda.device_count())):
        try:
            yield
        finally:
            random.setstate(py_state)
            np.random.set_state(np_state)


@contextlib.contextmanager
def eval_mode(model: Any) -> Iterator[None]:
    """Dropout off and no gradients for the block; the model's mode is restored after."""
    import torch

    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        if was_training:
            model.train()


def encode_heldout(tokenizer: Any, texts: list[str], max_length: int) -> list[tuple[list[int], int]]:
    """``(token ids, UTF-8 bytes scored)`` for each text: context + text + EOS, cut to ``max_length``."""
    context = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    eos = tokenizer.eos_token_id
    fast = bool(getattr(tokenizer, "is_fast", False))
    enc = tokenizer(texts, add_special_tokens=False, return_offsets_mapping=fast)
    out = []
    for i, text in enumerate(texts):
        text_ids = list(enc["input_ids"][i])
        keep = min(len(text_ids), max(max_length - 1, 1))  # room for the context token
        ids = [context, *text_ids[:keep]]
        if keep == len(text_ids):
            nbytes = len(text.encode("utf-8"))
            if len(ids) < max_length:
                ids.append(eos)
        elif fast:
            nbytes = len(text[: enc["offset_mapping"][i][keep - 1][1]].encode("utf-8"))
        else:
            nbytes = len(tokenizer.decode(text_ids[:keep]).encode("utf-8"))
        out.append((ids, nbytes))
    return out


def heldout_loss(model: Any, tokenizer: Any, texts: list[str], max_length: int,
                 batch_size: int, autocast: Callable[[], Any] = contextlib.nullcontext,
                 batching: Batching = "padding_free") -> dict[str, float]:
    """Summed NLL (nats), predicted tokens and scored bytes over ``texts``, in batches.

    ``batching`` as in training (see :mod:`workbench.train.batching`): by
    default each batch's rows are packed into one, so no compute goes to
    padding; the sums are the same either way. One device sync per pass.
    """
    import torch
    import torch.nn.functional as F

    from workbench.train.batching import eval_batches, forward

    encoded = encode_heldout(tokenizer, texts, max_length)
    device = next(model.parameters()).device
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    rows = [ids for ids, _ in encoded]
    labels = [[-100, *ids[1:]] for ids in rows]  # the context token is never predicted
    nll = torch.zeros((), dtype=torch.float64, device=device)
    tokens = 0
    with eval_mode(model):
        for batch in eval_batches(rows, labels, batch_size, batching, pad):
            targets = batch["labels"][:, 1:].reshape(-1)
            tokens += int((targets != -100).sum())  # counted on the host, before the copy
            batch = {k: v.to(device, non_blocking=True) if hasattr(v, "to") else v
                     for k, v in batch.items()}
            with autocast():
                logits = forward(model, batch).logits
            nll += F.cross_entropy(logits[:, :-1].float().reshape(-1, logits.size(-1)),
                                   batch["labels"][:, 1:].reshape(-1), ignore_index=-100,
                                   reduction="sum")
    return {"nll": float(nll.item()), "tokens": tokens, "bytes": sum(n for _, n in encoded)}


def generate(model: Any, tokenizer: Any, prompt: str, *, seed: int, temperature: float,
             top_p: float, max_new_tokens: int,
             autocast: Callable[[], Any] = contextlib.nullcontext) -> str:
    """Continue ``prompt``; the same seed and weights give the same text."""
    from transformers import set_seed

    device = next(model.parameters()).device
    enc = tokenizer(prompt, return_tensors="pt").to(device)
    sampling: dict[str, Any] = (
        {"do_sample": True, "temperature": temperature, "top_p": top_p}
        if temperature > 0 else {"do_sample": False}
    )
    with rng_preserved(), eval_mode(model), autocast():
        set_seed(seed)
        out = model.generate(
            **enc, max_new_tokens=max_new_tokens, pad_token_id=tokenizer.pad_token_id,
            **sampling,
        )
    new = out[0, enc["input_ids"].shape[1]:]
    return tokenizer.decode(new, skip_special_tokens=True)


class Evaluations:
    """Runs the experiment's evaluators and writes their ``eval`` and ``sample`` events."""

    def __init__(self, run_dir: Path, experiment: Any, evaluators: list[Evaluator],
                 tokenizer: Any, eval_texts: list[str],
                 autocast: Callable[[], Any] = contextlib.nullcontext,
                 batching: Batching = "padding_free") -> None:
        self.run_dir = run_dir
        self.batching = batching
        self.experiment = experiment
        self.tokenizer = tokenizer
        self.eval_texts = eval_texts
        self.autocast = autocast
        self.metric_evaluators = [e for e in evaluators if e.when == "eval"]
        self.sample_evaluators = [e for e in evaluators if e.when == "samples"]
        self.declared: list[Metric] = [m for e in self.metric_evaluators for m in e.metrics]
        self.best: dict[str, float] = {}
        self.errors: dict[str, dict[str, Any]] = {}  # evaluator -> {"step", "error"}: status warnings

    def _context(self, model: Any, step: int, checkpoint: str | None) -> tuple[EvalContext, dict]:
        exp, cache = self.experiment, {}

        def heldout() -> dict[str, float]:
            if "result" not in cache:
                cache["result"] = heldout_loss(
                    model, self.tokenizer, self.eval_texts, exp.train.max_length,
                    exp.train.eval_batch_size, self.autocast, self.batching,
                )
            return cache["result"]

        def gen(prompts: list[str], seed: int, *, temperature: float | None = None,
                top_p: float | None = None, max_new_tokens: int | None = None) -> list[str]:
            s = exp.sampling
            return [generate(model, self.tokenizer, p, seed=seed, autocast=self.autocast,
                             temperature=s.temperature if temperature is None else temperature,
                             top_p=s.top_p if top_p is None else top_p,
                             max_new_tokens=s.max_new_tokens if max_new_tokens is None
                             else max_new_tokens)
                    for p in prompts]

        ctx = EvalContext(
            model=model, tokenizer=self.tokenizer, experiment=exp, step=step,
            eval_texts=self.eval_texts, prompts=list(exp.prompts), checkpoint=checkpoint,
            heldout_loss=heldout, generate=gen,
        )
        return ctx, cache

    def evaluate(self, model: Any, step: int) -> dict[str, Any] | None:
        """Run the ``eval`` evaluators; append and return the ``eval`` event (None if none ran)."""
        if not self.metric_evaluators:
            return None
        ctx, cache = self._context(model, step, None)
        metrics: dict[str, Any] = {}
        errors: dict[str, str] = {}
        for ev in self.metric_evaluators:
            try:
                metrics.update(ev.compute(ctx) or {})
            except Exception as exc:  # noqa: BLE001 - one broken evaluator must not end training
                errors[ev.name] = f"{type(exc).__name__}: {first_line(exc)}"
                self.errors[ev.name] = {"step": step, "error": errors[ev.name]}
                print(f"evaluator {ev.name!r} failed at step {step}: {errors[ev.name]}",
                      file=sys.stderr, flush=True)
        base: dict[str, Any] = {}
        if "result" in cache:
            h = cache["result"]
            base = {"eval_loss": h["nll"] / max(h["tokens"], 1),
                    "tokens": h["tokens"], "bytes": h["bytes"]}
        # an evaluator can't overwrite what the engine measures (see workbench.api.RESERVED_METRICS)
        fields = {**base, **{k: v for k, v in metrics.items() if k not in RESERVED_METRICS}}
        if errors:
            fields["errors"] = errors
        for metric in self.declared:
            value = fields.get(metric.name)
            if metric.better is None or isinstance(value, bool) or not isinstance(value, (int, float)):
                continue
            if metric.name not in self.best or metric.is_better(float(value), self.best[metric.name]):
                self.best[metric.name] = float(value)
        return ranks.event(self.run_dir, "eval", step=step, **fields)

    def samples(self, model: Any, step: int, checkpoint: str) -> list[dict[str, Any]]:
        """Run the ``samples`` evaluators; append and return one ``sample`` event per text."""
        events = []
        for ev in self.sample_evaluators:
            ctx, _ = self._context(model, step, checkpoint)
            try:
                produced = ev.compute(ctx) or []
            except Exception as exc:  # noqa: BLE001
                error = f"{type(exc).__name__}: {first_line(exc)}"
                msg = f"evaluator {ev.name!r} failed: {error}"
                print(msg, file=sys.stderr, flush=True)
                ranks.event(self.run_dir, "status", state="running", message=msg, step=step)
                self.errors[ev.name] = {"step": step, "error": error}
                ranks.status(self.run_dir, evaluator_errors=self.errors)
                continue
            for item in produced:
                item = {k: v for k, v in item.items() if k not in RESERVED}
                event = ranks.event(self.run_dir, "sample", step=step, checkpoint=checkpoint, **item)
                if event is not None:  # None on ranks other than 0
                    events.append(event)
        return events
