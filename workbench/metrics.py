"""Declared metrics: what an evaluator emits, how to label it, which way is better.

An evaluator declares each metric it puts in ``eval`` events with a
:class:`Metric` (re-exported by :mod:`workbench.api` for plugin authors).
The training process records the declarations of the run's evaluators in
``status.json`` (``metrics``), so a run folder describes its own metrics and
every reader (CLI, TUI, report) shows them without loading plugins. A value
found in an ``eval`` event that nobody declared is still shown, under its own
name, with no best mark. Standard library only.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any, Literal

Better = Literal["lower", "higher"]

#: Fields of ``eval`` events the engine owns; an evaluator may not emit a metric by these names.
ENGINE_EVAL_FIELDS = ("type", "time", "step", "checkpoint", "errors", "eval_loss", "tokens", "bytes")
#: Fields of ``train`` events (the engine's own measurements).
TRAIN_FIELDS = ("loss", "lr", "grad_norm", "tokens", "tokens_per_s", "epoch", "peak_mem_gb")
#: Metric names a plugin must not declare or emit: the engine's event fields.
RESERVED = tuple(dict.fromkeys((*ENGINE_EVAL_FIELDS, *TRAIN_FIELDS)))


@dataclass(frozen=True)
class Metric:
    """One metric an evaluator emits.

    ``name`` is the key in the evaluator's returned dict (and in ``eval``
    events); ``label`` the short column / axis title (default: the name);
    ``better`` is ``"lower"``, ``"higher"`` or ``None`` (no best mark, no
    "best" value: the final one counts); ``format`` a :func:`format` spec for
    its values, e.g. ``".3f"`` or ``".1%"``.
    """

    name: str
    label: str = ""
    better: Better | None = "lower"
    format: str = ".4f"

    @property
    def title(self) -> str:
        return self.label or self.name

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Any) -> Metric | None:
        """A declaration read back from ``status.json``; ``None`` when malformed."""
        if not isinstance(data, Mapping) or not isinstance(data.get("name"), str) or not data["name"]:
            return None
        better = data.get("better")
        fmt = data.get("format")
        label = data.get("label")
        return cls(
            name=data["name"],
            label=label if isinstance(label, str) else "",
            better=better if better in ("lower", "higher") else None,
            format=fmt if isinstance(fmt, str) and _valid_format(fmt) else ".4g",
        )

    def fmt(self, value: float | None) -> str:
        """``value`` in this metric's format; ``-`` when unknown."""
        if value is None:
            return "-"
        if isinstance(value, float) and not math.isfinite(value):
            return str(value)
        try:
            return format(value, self.format)
        except (ValueError, TypeError):
            return format(value, ".4g")

    def is_better(self, a: float, b: float) -> bool:
        """``a`` beats ``b`` in this metric's direction (never, without a direction)."""
        if self.better == "lower":
            return a < b
        if self.better == "higher":
            return a > b
        return False

    def best(self, values: Iterable[float]) -> float | None:
        """The best of ``values`` (the last one for a metric with no direction)."""
        values = list(values)
        if not values:
            return None
        if self.better == "lower":
            return min(values)
        if self.better == "higher":
            return max(values)
        return values[-1]


def _valid_format(spec: str) -> bool:
    try:
        format(1.5, spec)
    except (ValueError, TypeError):
        return False
    return True


PERPLEXITY = Metric("perplexity", "held-out ppl", "lower", ".3f")
BITS_PER_BYTE = Metric("bits_per_byte", "bits/byte", "lower", ".4f")
#: The built-in evaluators' metrics: how runs written before declarations existed are read.
BUILTIN = {m.name: m for m in (PERPLEXITY, BITS_PER_BYTE)}


def undeclared(name: str) -> Metric:
    """How a value nobody declared is shown: its own name, no direction."""
    return BUILTIN.get(name) or Metric(name, name, None, ".4g")


def declarations(raw: Any) -> tuple[list[Metric], list[str]]:
    """Metrics declared in a status's ``metrics`` list, and a reason per malformed entry."""
    if raw is None:
        return [], []
    if not isinstance(raw, list):
        return [], [f"metrics is {type(raw).__name__}, not a list"]
    out: list[Metric] = []
    problems = []
    for i, item in enumerate(raw):
        metric = Metric.from_json(item)
        if metric is None:
            problems.append(f"metrics[{i}] is not a metric declaration")
        elif metric.name not in {m.name for m in out}:
            out.append(metric)
    return out, problems


def check_declared(evaluator: str, metrics: Iterable[Metric]) -> list[str]:
    """Problems with an evaluator's declarations (reserved names, duplicates, bad formats)."""
    problems = []
    seen: set[str] = set()
    for m in metrics:
        if m.name in RESERVED:
            problems.append(f"evaluator {evaluator!r} declares reserved metric name {m.name!r}")
        if m.name in seen:
            problems.append(f"evaluator {evaluator!r} declares metric {m.name!r} twice")
        if m.better not in ("lower", "higher", None):
            problems.append(f"evaluator {evaluator!r}: metric {m.name!r} better must be "
                            "'lower', 'higher' or None")
        if not _valid_format(m.format):
            problems.append(f"evaluator {evaluator!r}: metric {m.name!r} has a bad format {m.format!r}")
        seen.add(m.name)
    return problems
