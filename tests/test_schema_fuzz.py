"""Fuzzing the schema through ``workbench validate``: every field, a few hundred bad values each.

A seeded generator (no new dependency; a failure names the seed's value) writes a
real ``experiments.toml`` per value and runs the real command's ``main``
in-process (a subprocess per value would cost ~1 s x 10,000). Every bad value
must end in exit 2 with exactly one line on stderr naming the field, and no
traceback; values the schema accepts must keep their TOML type exactly (no
``"10"`` -> 10, no ``true`` -> 1) and be finite.
"""

from __future__ import annotations

import datetime
import math
import random
import re
import types
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import annotated_types
import pytest
from pydantic import BaseModel

from workbench import cli
from workbench.schema import LR_SCHEDULERS, Experiment

PER_FIELD = 200
BASE = """\
[defaults]
backend = "tiny"
[defaults.data]
source = "data.jsonl"
train_split = "train[:10]"
eval_split = "train[10:20]"
[experiments.a]
"""


# --- the schema's fields ------------------------------------------------------------


def fields(model: type[BaseModel] = Experiment, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """``(dotted key, FieldInfo)`` for every leaf field a TOML file can set."""
    for name, info in model.model_fields.items():
        if name == "name":
            continue
        if name == "search":  # a table with its own parser (searchspec): tests/test_search.py covers it
            continue
        sub = info.annotation
        if isinstance(sub, type) and issubclass(sub, BaseModel):
            yield from fields(sub, f"{prefix}{name}.")
        else:
            yield f"{prefix}{name}", info


def constraints(info: Any) -> dict[str, Any]:
    """Bounds, lengths and patterns of a field, from the field and its Annotated type."""
    found: dict[str, Any] = {}
    metadata = list(info.metadata)
    annotation = info.annotation
    union = typing.get_origin(annotation) in (typing.Union, types.UnionType)
    for arg in typing.get_args(annotation) if union else (annotation,):  # not a list's items
        for item in getattr(arg, "__metadata__", ()):
            metadata += list(getattr(item, "metadata", None) or [item])
    for item in metadata:
        for key in ("gt", "ge", "lt", "le", "min_length", "max_length", "pattern"):
            value = getattr(item, key, None)
            if value is not None:
                found[key] = value
        if isinstance(item, annotated_types.Interval):
            found.update({k: v for k, v in vars(item).items() if v is not None})
    return found


def base_kind(annotation: Any) -> str:
    """``int``, ``float``, ``bool``, ``str``, ``literal``, ``list`` or ``optional-…`` (for ``| None``)."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if type(None) in typing.get_args(annotation) and len(args) == 1:
        return "optional-" + base_kind(args[0])
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return base_kind(typing.get_args(annotation)[0])
    if origin is typing.Literal:
        return "literal"
    if origin is list:
        return "list"
    return {int: "int", float: "float", bool: "bool", str: "str"}[annotation]


# --- values ---------------------------------------------------------------------------


def random_text(rng: random.Random) -> str:
    alphabet = "abc XYZ_-.:[]%+/\\\"'\n\t\x1b\x07\x00é漢🙂" + "0123456789"
    return "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 12)))


def wrong_type_values(kind: str, rng: random.Random) -> list[Any]:
    """Values of the wrong TOML type for a field of ``kind``."""
    pool: list[Any] = [
        True, False, rng.randint(-10**6, 10**6), rng.uniform(-1e6, 1e6), random_text(rng) or "x",
        [rng.randint(0, 9)], {"k": 1}, datetime.date(2024, 1, 2), "10", "1e-3", "true", [],
    ]
    base = kind.removeprefix("optional-")
    if base == "int":
        return [v for v in pool if isinstance(v, bool) or not isinstance(v, int)] + [3.0, 2.5]
    if base == "float":
        return [v for v in pool if isinstance(v, bool) or not isinstance(v, (int, float))]
    if base == "bool":
        return [v for v in pool if not isinstance(v, bool)]
    if base in ("str", "literal"):
        return [v for v in pool if not isinstance(v, str)]
    if base == "list":
        return [v for v in pool if not isinstance(v, list)] + [[{"k": 1}], [True], [1.5]]
    raise AssertionError(kind)


def out_of_domain_values(key: str, kind: str, limits: dict[str, Any], rng: random.Random) -> list[Any]:
    """Values of the right type that the field's domain excludes."""
    base = kind.removeprefix("optional-")
    out: list[Any] = []
    if base in ("int", "float"):
        whole = base == "int"
        low = limits.get("gt", limits.get("ge"))
        high = limits.get("lt", limits.get("le"))
        if low is not None:
            edge = low if "gt" in limits else low - (1 if whole else 1e-9)
            out += [edge, edge - rng.randint(1, 10**6)]
        if high is not None:
            edge = high if "lt" in limits else high + (1 if whole else 1e-6)
            out += [edge, edge + rng.randint(1, 10**6)]
        if not whole:
            out += [math.inf, -math.inf, math.nan]
    elif base == "literal":
        word = rng.choice(["bogus", "Linear", "cosine ", "", "fp64", "wandbx"]) + random_text(rng)
        out.append(word)
    elif base == "str":
        if limits.get("min_length"):
            out.append("")
        if limits.get("pattern"):
            out += [s for s in ("has space[", "train[1:2", "[:3]", "a b", "x:y:z", "x:", "") if
                    not re.match(limits["pattern"], s)]
    elif base == "list":
        item_kind = str(typing.get_args(typing.get_args(kind_annotation(key))[0]))
        if limits.get("min_length"):
            out.append([])
        if "Literal" in item_kind:
            out.append(["bogus" + random_text(rng)])
        elif "str" in item_kind:
            out += [[1], [""] if "min_length" in item_kind or "MinLen" in item_kind else [7]]
    return out


def kind_annotation(key: str) -> Any:
    model: Any = Experiment
    *heads, leaf = key.split(".")
    for head in heads:
        model = model.model_fields[head].annotation
    annotation = model.model_fields[leaf].annotation
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    return args[0] if type(None) in typing.get_args(annotation) else annotation


def bad_values(key: str, info: Any, rng: random.Random, count: int) -> list[Any]:
    kind = base_kind(info.annotation)
    limits = constraints(info)
    values: list[Any] = []
    while len(values) < count:
        values += wrong_type_values(kind, rng)
        values += out_of_domain_values(key, kind, limits, rng)
    rng.shuffle(values)
    return values[:count]


def toml_string(text: str) -> str:
    """A TOML basic string: quotes, backslashes and control characters escaped."""
    out = []
    for char in text:
        if char in '"\\':
            out.append("\\" + char)
        elif ord(char) < 0x20 or ord(char) == 0x7F:
            out.append(f"\\u{ord(char):04x}")
        else:
            out.append(char)
    return '"' + "".join(out) + '"'


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, (int, datetime.date)):
        return str(value) if not isinstance(value, datetime.date) else value.isoformat()
    if isinstance(value, str):
        return toml_string(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {toml_value(v)}" for k, v in value.items()) + " }"
    raise AssertionError(value)


# --- the command ------------------------------------------------------------------------


def validate(tmp_path: Path, line: str, capsys: pytest.CaptureFixture) -> tuple[int, str]:
    path = tmp_path / "experiments.toml"
    path.write_text(BASE + line + "\n", encoding="utf-8")
    code = cli.main(["validate", "-c", str(path), "--runs-dir", str(tmp_path / "runs")])
    return code, capsys.readouterr().err


FIELDS = list(fields())


def test_every_field_is_covered() -> None:
    keys = {key for key, _ in FIELDS}
    assert {"train.steps", "train.learning_rate", "train.lr_scheduler", "lora.target_modules",
            "sampling.temperature", "distributed.node_rank", "data.train_split", "evaluators"} <= keys
    assert len(keys) >= 40


@pytest.mark.parametrize(("key", "info"), FIELDS, ids=[key for key, _ in FIELDS])
def test_bad_values_are_one_line_exit_2(key: str, info: Any, tmp_path: Path,
                                       capsys: pytest.CaptureFixture) -> None:
    rng = random.Random(f"workbench-fuzz-{key}")
    for value in bad_values(key, info, rng, PER_FIELD):
        line = f"{key} = {toml_value(value)}"
        code, err = validate(tmp_path, line, capsys)
        lines = err.strip().splitlines()
        assert code == 2, f"{line!r} was accepted"
        assert len(lines) == 1 and "Traceback" not in err, f"{line!r}: {err!r}"
        assert "\x1b" not in err and "\x00" not in err, f"{line!r}: raw control characters: {err!r}"
        leaf = key.rsplit(".", 1)[-1]
        assert leaf in lines[0], f"{line!r}: the message does not name the field: {lines[0]}"


@pytest.mark.parametrize(("key", "info"), FIELDS, ids=[key for key, _ in FIELDS])
def test_accepted_values_keep_their_type(key: str, info: Any, tmp_path: Path,
                                        capsys: pytest.CaptureFixture) -> None:
    """Random values of any type: rejected in one line, or accepted exactly as written."""
    rng = random.Random(f"workbench-any-{key}")
    pool: list[Any] = [rng.choice([True, 0, 1, 7, -3, 2**40, 0.5, 1.0, 1e-300, "", "x", "train",
                                   "linear", "fp32", "tensorboard", "perplexity", [], ["q_proj"],
                                   ["x", 1], "h:1"]) for _ in range(40)]
    for value in pool:
        code, err = validate(tmp_path, f"{key} = {toml_value(value)}", capsys)
        assert "Traceback" not in err and len(err.strip().splitlines()) <= 1, err
        if code != 0:
            assert code == 2, err
            continue
        from workbench import config

        exp = config.load(tmp_path / "experiments.toml").get("a")
        node: Any = exp
        for part in key.split("."):
            node = getattr(node, part)
        if isinstance(value, bool) or isinstance(node, bool):
            assert node is value, f"{key} = {value!r} became {node!r}"
        elif isinstance(value, float) or isinstance(node, float):
            assert isinstance(value, (int, float)) and float(node) == value and math.isfinite(node)
        elif isinstance(value, int):
            assert type(node) is int and node == value, f"{key} = {value!r} became {node!r}"
        elif isinstance(value, str) and key not in ("model", "data.source", "data.eval_source"):
            assert node == value, f"{key} = {value!r} became {node!r}"  # paths are made absolute


def test_lr_schedulers_match_the_installed_transformers() -> None:
    """The checked list is transformers' SchedulerType, less those needing lr_scheduler_kwargs."""
    import torch
    from transformers import SchedulerType, get_scheduler

    needing_kwargs = set()
    for name in SchedulerType:
        optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
        try:
            get_scheduler(name.value, optimizer, num_warmup_steps=1, num_training_steps=10)
        except (TypeError, ValueError):
            needing_kwargs.add(name.value)
    assert set(LR_SCHEDULERS) == {s.value for s in SchedulerType} - needing_kwargs
