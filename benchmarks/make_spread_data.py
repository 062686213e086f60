"""Build ``benchmarks/data/spread/``: greentexts whose lengths spread like the study's.

The bundled sample's rows are short (18-39 SmolLM2 tokens, ~27 on average),
so a padded batch of them wastes little, unlike the study's dataset (3-12
line greentexts, about 15 to 150 tokens, ~37% of a batch of 4 padding). This
script joins consecutive lines of the bundled sample into 160 training and 40
held-out texts of 3 to 20 lines each (uniform, seeded), which gives 17 to 159 SmolLM2
tokens (median 74) and 34% padding at batch 4. The output is committed; rerunning rewrites the same files::

    .venv/bin/python benchmarks/make_spread_data.py
"""

from __future__ import annotations

import json
import random
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SOURCE = ROOT / "workbench" / "data" / "greentext"
OUT = ROOT / "benchmarks" / "data" / "spread"
COLUMN = "greentexts"
SIZES = {"train": 160, "test": 40}
MIN_LINES, MAX_LINES = 3, 20
SEED = 11


def lines() -> list[str]:
    """Every line of the bundled sample, train then test, in file order."""
    out = []
    for split in ("train", "test"):
        for row in (SOURCE / f"{split}.jsonl").read_text(encoding="utf-8").splitlines():
            if row.strip():
                out.extend(line for line in json.loads(row)[COLUMN].splitlines() if line.strip())
    return out


def build() -> dict[str, list[str]]:
    pool, rng, at = lines(), random.Random(SEED), 0
    texts: dict[str, list[str]] = {}
    for split, count in SIZES.items():
        texts[split] = []
        for _ in range(count):
            n = rng.randint(MIN_LINES, MAX_LINES)
            texts[split].append("\n".join(pool[(at + i) % len(pool)] for i in range(n)))
            at += n
    return texts


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    for split, texts in build().items():
        (OUT / f"{split}.jsonl").write_text(
            "".join(json.dumps({COLUMN: t}, ensure_ascii=False) + "\n" for t in texts), encoding="utf-8")
        print(f"wrote {OUT / f'{split}.jsonl'}: {len(texts)} texts")


if __name__ == "__main__":
    main()
