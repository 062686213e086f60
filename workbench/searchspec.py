"""``[experiments.X.search]``: what an Optuna study over an experiment searches.

A self-contained pydantic model plus the checks that need the experiment
schema (which dotted paths exist, which hold numbers). Standard library and
pydantic only: Optuna itself is imported by :mod:`workbench.search`, and only
when a study is started or reported on.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

PRUNERS = ("none", "median", "hyperband")
Choice = bool | int | float | str


class Range(BaseModel):
    """A numeric range: ``{ low = 1e-5, high = 1e-2, log = true }``, ``{ low = 8, high = 64, step = 8 }``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    low: float
    high: float
    log: bool = False
    step: float | None = Field(None, gt=0)

    @model_validator(mode="after")
    def _sensible(self) -> Range:
        if self.low > self.high:
            raise ValueError(f"low ({self.low:g}) is above high ({self.high:g})")
        if self.low == self.high:
            raise ValueError(f"empty range: low and high are both {self.low:g}")
        if self.log and self.low <= 0:
            raise ValueError(f"log = true needs low above 0 (got {self.low:g})")
        if self.log and self.step is not None:
            raise ValueError("log = true and step can't be combined (Optuna samples one or the other)")
        return self


class Search(BaseModel):
    """An Optuna study over one experiment: ``trials`` runs, each with sampled ``params``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    trials: int = Field(gt=0, description="how many trials the study holds when complete")
    metric: str = Field("perplexity", description="a declared eval metric; its direction is declared too")
    pruner: Literal["none", "median", "hyperband"] = "median"
    seed: int | None = Field(None, description="the TPE sampler's seed")
    params: dict[str, Range | list[Choice]] = Field(
        description='dotted path -> { low, high, log, step } or a list of choices'
    )
    storage: str | None = Field(None, description="an Optuna storage URL shared across machines; "
                                "default: study.journal in the experiment's runs folder")

    @model_validator(mode="after")
    def _some_params(self) -> Search:
        if not self.params:
            raise ValueError('params: name at least one, e.g. params."train.learning_rate" = '
                             "{ low = 1e-5, high = 1e-2, log = true }")
        for path, spec in self.params.items():
            if isinstance(spec, list) and not spec:
                raise ValueError(f"params.{path}: empty list of choices")
        return self


def leaf(values: dict[str, Any], dotted: str) -> Any:
    """The value at ``dotted`` in a nested dict (``KeyError`` when the path does not exist)."""
    node: Any = values
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            raise KeyError(dotted)
        node = node[part]
    return node


def apply(values: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
    """A copy of an experiment's dumped ``values`` with each dotted ``params`` path set."""
    import copy

    out = copy.deepcopy(values)
    for dotted, value in params.items():
        *heads, last = dotted.split(".")
        node = out
        for head in heads:
            node = node.setdefault(head, {})
        node[last] = value
    return out


def problem(search: Search, values: dict[str, Any]) -> tuple[str, str] | None:
    """``(key under search, message)`` for the first param that does not fit the experiment.

    ``values`` is the experiment's ``model_dump()``: a path must name a setting
    that exists and holds a number (for a range) or a plain value (for choices).
    """
    for path, spec in search.params.items():
        key = f'params."{path}"'
        if path.split(".")[0] in ("name", "search", "description"):
            return key, "can't be searched"
        try:
            current = leaf(values, path)
        except KeyError:
            return key, "unknown setting (use a dotted path such as train.learning_rate or lora.r)"
        if isinstance(current, dict):
            return key, "is a table; name one of its settings"
        if isinstance(spec, Range):
            if isinstance(current, bool) or not isinstance(current, (int, float)):
                return key, f"holds {current!r}, not a number: give a list of choices instead"
            if isinstance(current, int) and not all(float(v).is_integer()
                                                    for v in (spec.low, spec.high, spec.step or 1)):
                return key, "is a whole number: low, high and step must be whole numbers"
    return None


def is_int(values: dict[str, Any], dotted: str) -> bool:
    """Whether the setting at ``dotted`` holds a whole number (sampled with ``suggest_int``)."""
    current = leaf(values, dotted)
    return isinstance(current, int) and not isinstance(current, bool)


class SearchError(ValueError):
    """A problem in a ``search`` table: ``key`` (under ``search``) and a one-line ``message``."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"{key}: {message}")
        self.key = key
        self.message = message


def parse(raw: Any) -> Search:
    """Validate a ``search`` table into :class:`Search`, or raise :class:`SearchError`.

    Each param is checked on its own first, so the message names the param and
    what is wrong with it rather than every branch of a union.
    """
    from pydantic import ValidationError

    if not isinstance(raw, dict):
        raise SearchError("search", "must be a table ([experiments.NAME.search])")
    params = raw.get("params")
    if isinstance(params, dict):
        for path, spec in params.items():
            key = f'params."{path}"'
            if isinstance(spec, dict):
                try:
                    Range.model_validate(spec)
                except ValidationError as exc:
                    raise SearchError(key, _first(exc)) from None
            elif isinstance(spec, list):
                if not spec:
                    raise SearchError(key, "empty list of choices")
                if any(isinstance(v, (dict, list)) for v in spec):
                    raise SearchError(key, "choices must be plain values (numbers, strings, booleans)")
            else:
                raise SearchError(key, "must be { low = .., high = .. } (log, step optional) "
                                  "or a list of choices")
    try:
        return Search.model_validate(raw)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = [str(p) for p in err["loc"] if not str(p).startswith(("Range", "list["))]
        if err["type"] == "missing":
            msg = "required"
        elif err["type"] == "extra_forbidden":
            msg = "unknown key (known: trials, metric, pruner, seed, params, storage)"
        else:
            msg = str(err["msg"]).removeprefix("Value error, ")
        raise SearchError(".".join(loc) or "search", msg) from None


def _first(exc: Any) -> str:
    err = exc.errors()[0]
    loc = [str(p) for p in err["loc"]]
    msg = "unknown key" if err["type"] == "extra_forbidden" else str(err["msg"]).removeprefix("Value error, ")
    return f"{'.'.join(loc)}: {msg}" if loc else msg


def declared_metrics(evaluators: list[Any]) -> dict[str, Any]:
    """Name -> :class:`workbench.metrics.Metric` for every metric these evaluators declare.

    Only metrics with a direction count: a study needs to know which way is better.
    """
    out: dict[str, Any] = {}
    for evaluator in evaluators:
        for metric in getattr(evaluator, "metrics", ()) or ():
            if metric.better in ("lower", "higher"):
                out[metric.name] = metric
    return out
