"""Built-in evaluators: perplexity, bits per byte, and seeded samples.

Perplexity and bits per byte share one forward pass over the held-out texts
per evaluation (``EvalContext.heldout_loss()``, computed once and cached).
Bits per byte divides the total NLL by the texts' UTF-8 bytes, so unlike
perplexity it can be compared across tokenizers (GPT-2 vs SmolLM). How
texts are scored (context token, EOS counted as 0 bytes) is described in
:mod:`workbench.train.evaluation`.
"""

from __future__ import annotations

import math
from typing import Any

from workbench.api import EvalContext, Evaluator, Metric, hookimpl

PERPLEXITY = Metric("perplexity", "held-out ppl", better="lower", format=".3f")
BITS_PER_BYTE = Metric("bits_per_byte", "bits/byte", better="lower", format=".4f")


def perplexity(ctx: EvalContext) -> dict[str, float]:
    """exp(mean NLL per predicted token) on the held-out texts."""
    h = ctx.heldout_loss()
    mean = h["nll"] / max(h["tokens"], 1)
    return {"perplexity": math.exp(mean) if mean < 700 else math.inf}


def bits_per_byte(ctx: EvalContext) -> dict[str, float]:
    """Total NLL in bits over the held-out texts' UTF-8 bytes."""
    h = ctx.heldout_loss()
    return {"bits_per_byte": h["nll"] / (math.log(2) * max(h["bytes"], 1))}


def samples(ctx: EvalContext) -> list[dict[str, Any]]:
    """``num_samples`` continuations of each prompt; sample ``i`` is seeded with seed + i."""
    s = ctx.experiment.sampling
    out = []
    for prompt in ctx.prompts:
        for index in range(s.num_samples):
            seed = s.seed + index
            text = ctx.generate([prompt], seed=seed)[0]
            out.append({"prompt": prompt, "text": text, "index": index, "seed": seed})
    return out


@hookimpl
def register_evaluators(register: Any) -> None:
    register(Evaluator(
        name="perplexity", compute=perplexity, when="eval", metrics=(PERPLEXITY,),
        description="exp of the mean token NLL on the held-out texts (lower is better)",
    ))
    register(Evaluator(
        name="bits_per_byte", compute=bits_per_byte, when="eval", metrics=(BITS_PER_BYTE,),
        description="held-out NLL in bits per UTF-8 byte; tokenizer-independent (lower is better)",
    ))
    register(Evaluator(
        name="samples", compute=samples, when="samples",
        description="seeded continuations of the experiment's prompts, at checkpoints and the end",
    ))
