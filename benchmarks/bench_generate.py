"""Generation tokens per second of the compare worker against plain ``model.generate``.

Run it from the repository root::

    .venv/bin/python benchmarks/bench_generate.py                  # SmolLM2-135M from the GGUF
    .venv/bin/python benchmarks/bench_generate.py --model tiny     # smoke check

``worker``
    the path ``workbench compare`` takes: a real generation worker process
    (``workbench.generate.client.GenerationClient``), the base model as a
    pane, the request's wall time from submitting to its ``done`` message,
    streamed pieces coalesced at most every 30 ms (``COALESCE_S``).
``generate``
    ``model.generate`` in this process on the same model folder, no streamer.

Both decode greedily (temperature 0) from the same prompt, so they produce the
same tokens; the token count is the plain path's. Each path runs ``--repeat``
times, interleaved, after one unmeasured warmup request, and the best is kept.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
PROMPT = ">be me\n>"
BACKENDS = {"smollm2": "smollm2-gguf", "tiny": "tiny"}


def worker_run(client: Any, backend: str, max_new_tokens: int, source: str | None = None
               ) -> dict[str, Any]:
    """One greedy request through the worker: wall seconds, text and streamed messages."""
    from workbench.generate import client as gen

    t0 = time.perf_counter()
    request = client.generate([gen.base_pane("p", backend, source)], PROMPT, temperature=0.0,
                              max_new_tokens=max_new_tokens, seed=1234)
    pieces, text, error = 0, None, None
    for message in request:
        if "token" in message:
            pieces += 1
        elif message.get("done"):
            text = message["text"]
            seconds = time.perf_counter() - t0
        elif message.get("error"):
            error = message["error"]
    if text is None:
        raise RuntimeError(f"worker request failed: {error}")
    return {"seconds": seconds, "text": text, "messages": pieces}


def plain_run(model: Any, tokenizer: Any, max_new_tokens: int) -> dict[str, Any]:
    """One greedy ``model.generate`` in this process."""
    import torch

    enc = tokenizer(PROMPT, return_tensors="pt").to(model.device)
    t0 = time.perf_counter()
    with torch.no_grad():
        out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False,
                             pad_token_id=tokenizer.pad_token_id)
    if model.device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    new = out[0, enc["input_ids"].shape[1]:]
    return {"seconds": seconds, "tokens": int(new.numel()),
            "text": tokenizer.decode(new, skip_special_tokens=True)}


def measure(model: str = "tiny", max_new_tokens: int = 64, repeat: int = 3) -> dict[str, Any]:
    """Both paths, interleaved, best of ``repeat``: ``{"worker": {...}, "generate": {...}, "ratio"}``.

    ``model``: ``tiny``, ``smollm2``, or a local model folder (loaded by the
    ``smollm`` backend, which takes any Llama-shaped folder).
    """
    import torch
    from bench_train import model_dir
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from workbench.generate.client import GenerationClient

    source = None if model in BACKENDS else str(Path(model).resolve())
    folder = Path(source) if source else model_dir(model)
    backend = BACKENDS.get(model, "smollm")
    cuda = torch.cuda.is_available()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    dtype = torch.bfloat16 if cuda and torch.cuda.is_bf16_supported() else torch.float32
    plain_model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype).to("cuda" if cuda else "cpu")
    plain_model.eval()
    env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    with GenerationClient(env=env) as client:
        worker_run(client, backend, 4, source)  # loads the model: not measured
        plain_run(plain_model, tokenizer, 4)
        runs: dict[str, list[dict[str, Any]]] = {"worker": [], "generate": []}
        for _ in range(repeat):
            runs["worker"].append(worker_run(client, backend, max_new_tokens, source))
            runs["generate"].append(plain_run(plain_model, tokenizer, max_new_tokens))
    tokens = runs["generate"][0]["tokens"]
    out: dict[str, Any] = {"model": model, "device": "cuda" if cuda else "cpu", "tokens": tokens}
    for name, group in runs.items():
        fastest = min(group, key=lambda r: r["seconds"])
        out[name] = {**fastest, "tokens_per_s": tokens / fastest["seconds"]}
    out["same_text"] = out["worker"]["text"] == out["generate"]["text"]
    out["ratio"] = out["worker"]["tokens_per_s"] / out["generate"]["tokens_per_s"]
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", choices=sorted(BACKENDS), default="smollm2")
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--repeat", type=int, default=3)
    args = p.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    r = measure(args.model, args.max_new_tokens, args.repeat)
    print(f"model {args.model} on {r['device']}, greedy, {r['tokens']} new tokens, "
          f"best of {args.repeat}, load average {os.getloadavg()[0]:.2f}\n")
    print(f"{'path':<22}{'seconds':>9}{'tokens/s':>10}{'messages':>10}")
    print(f"{'compare worker':<22}{r['worker']['seconds']:>9.2f}{r['worker']['tokens_per_s']:>10.1f}"
          f"{r['worker']['messages']:>10}")
    print(f"{'model.generate':<22}{r['generate']['seconds']:>9.2f}{r['generate']['tokens_per_s']:>10.1f}"
          f"{'-':>10}")
    print(f"\nworker vs model.generate: {r['ratio']:.2f}x"
          + ("" if r["same_text"] else " (warning: the texts differ)"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
