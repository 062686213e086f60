"""Read ``experiments.toml``: strict validation, ``[defaults]``, ``extends`` and matrices.

Every mistake a user can make in the file ends in one :class:`ConfigError`
whose message names the file, the key path and, for a misspelling, the closest
valid name. The schema lives in :mod:`workbench.schema`.
"""

from __future__ import annotations

import copy
import difflib
import itertools
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from workbench.schema import NAME_RE, Experiment, split_range

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

DEFAULT_CONFIG = "experiments.toml"
TOP_LEVEL_KEYS = ("defaults", "experiments", "plugins_dir", "runs_dir", "max_parallel", "offline")
# Keys of an experiment table that steer loading rather than describe a run.
META_KEYS = ("extends", "matrix")


class ConfigError(Exception):
    """A user-fixable problem in the experiments file; ``str()`` is the one-line message."""


@dataclass
class Config:
    """The experiments file, resolved: every experiment fully specified, matrices expanded."""

    path: Path
    experiments: dict[str, Experiment]
    plugins_dir: Path | None = None
    runs_dir: Path | None = None
    max_parallel: int | None = None
    parents: dict[str, str | None] = field(default_factory=dict)
    offline: bool = False  # no hub access for any run, hub ids load only from the local cache

    def get(self, name: str) -> Experiment:
        try:
            return self.experiments[name]
        except KeyError:
            raise ConfigError(
                f"{self.path}: no experiment named {name!r}{suggest(name, self.experiments)}"
            ) from None

    def parent_name(self, name: str) -> str | None:
        """The experiment ``name`` extends; for a matrix entry, the one its matrix table extends."""
        parent, seen = self.parents.get(name), {name}
        while parent and parent not in self.experiments and parent not in seen:
            seen.add(parent)  # a matrix table is not an experiment itself: look past it
            parent = self.parents.get(parent)
        return parent if parent in self.experiments else None

    def parent_of(self, name: str) -> Experiment | None:
        """The experiment ``name`` extends (for a matrix entry, what its matrix table extends)."""
        parent = self.parent_name(name)
        return self.experiments.get(parent) if parent else None


def suggest(word: str, choices: Any) -> str:
    """`` (did you mean 'x'?)`` for the closest of ``choices``, or an empty string."""
    close = difflib.get_close_matches(str(word), [str(c) for c in choices], n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def load(path: str | Path = DEFAULT_CONFIG) -> Config:
    """Read and validate an experiments file; raise :class:`ConfigError` on any problem."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(
            f"{path}: file not found (pass -c PATH, or create {DEFAULT_CONFIG})"
        ) from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    return loads(text, path)


def loads(text: str, path: str | Path = DEFAULT_CONFIG) -> Config:
    """Validate TOML ``text`` as if read from ``path`` (relative paths resolve against it)."""
    path = Path(path)
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(_toml_error(path, exc)) from None
    return _Resolver(path, raw).resolve()


def _toml_error(path: Path, exc: Exception) -> str:
    msg = str(exc)
    line = getattr(exc, "lineno", None)
    col = getattr(exc, "colno", None)
    found = re.search(r"\(at line (\d+), column (\d+)\)", msg)
    if found:
        line, col = int(found.group(1)), int(found.group(2))
        msg = msg[: found.start()].strip()
    elif line is None:
        line = col = "?"
    msg = getattr(exc, "msg", msg) or msg
    return f"{path}:{line}:{col}: invalid TOML: {msg}"


def _deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _model_fields(model: type[BaseModel]) -> dict[str, Any]:
    return dict(model.model_fields)


def _submodel(annotation: Any) -> type[BaseModel] | None:
    return annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None


def check_keys(table: dict[str, Any], model: type[BaseModel], where: str, extra: tuple = ()) -> None:
    """Reject unknown keys in ``table`` (recursively) naming ``where`` and a suggestion."""
    fields = _model_fields(model)
    for key, value in table.items():
        if key in extra:
            continue
        if key not in fields or key == "name":
            valid = [f for f in fields if f != "name"] + list(extra)
            raise ConfigError(f"{where}.{key}: unknown key{suggest(key, valid)}")
        sub = _submodel(fields[key].annotation)
        if sub is not None and isinstance(value, dict):
            check_keys(value, sub, f"{where}.{key}")


def _format_value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


class _Resolver:
    def __init__(self, path: Path, raw: dict[str, Any]) -> None:
        self.path = path
        self.raw = raw
        self.base_dir = path.resolve().parent

    def fail(self, key_path: str, message: str) -> ConfigError:
        return ConfigError(f"{self.path}: {key_path}: {message}")

    def resolve(self) -> Config:
        raw = self.raw
        for key in raw:
            if key not in TOP_LEVEL_KEYS:
                raise self.fail(key, f"unknown top-level key{suggest(key, TOP_LEVEL_KEYS)}")
        defaults = raw.get("defaults", {})
        tables = raw.get("experiments", {})
        if not isinstance(defaults, dict):
            raise self.fail("defaults", "must be a table")
        if not isinstance(tables, dict):
            raise self.fail("experiments", "must be a table of [experiments.NAME] tables")
        if not tables:
            raise self.fail("experiments", "no experiments defined (add an [experiments.NAME] table)")
        try:
            check_keys(defaults, Experiment, "defaults")
        except ConfigError as exc:
            raise ConfigError(f"{self.path}: {exc}") from None
        for name, table in tables.items():
            where = f"experiments.{name}"
            if not NAME_RE.match(name):
                raise self.fail(
                    where, "experiment names may use letters, digits, '.', '_' and '-' only"
                )
            if not isinstance(table, dict):
                raise self.fail(where, "must be a table")
            try:
                check_keys(table, Experiment, where, extra=META_KEYS)
            except ConfigError as exc:
                raise ConfigError(f"{self.path}: {exc}") from None
            parent = table.get("extends")
            if parent is not None and parent not in tables:
                raise self.fail(
                    f"{where}.extends", f"unknown experiment {parent!r}{suggest(parent, tables)}"
                )

        merged: dict[str, dict[str, Any]] = {}
        for name in tables:
            merged[name] = self._merged(name, tables, defaults, [])

        experiments: dict[str, Experiment] = {}
        parents: dict[str, str | None] = {}
        for name, table in tables.items():
            for exp_name, values, origin in self._expand(name, table, merged[name]):
                if exp_name in experiments or (exp_name != name and exp_name in tables):
                    raise self.fail(
                        f"experiments.{name}.matrix",
                        f"generated name {exp_name!r} clashes with another experiment",
                    )
                experiments[exp_name] = self._validate(exp_name, values, origin, tables)
                parents[exp_name] = name if exp_name != name else table.get("extends")
            if table.get("matrix") is not None:  # lets parent_name() see past the matrix table
                parents[name] = table.get("extends")
        plugins_dir = raw.get("plugins_dir")
        runs_dir = raw.get("runs_dir")
        for key, value in (("plugins_dir", plugins_dir), ("runs_dir", runs_dir)):
            if value is not None and not isinstance(value, str):
                raise self.fail(key, "must be a string path")
        max_parallel = raw.get("max_parallel")
        if max_parallel is not None and (type(max_parallel) is not int or max_parallel < 1):
            raise self.fail("max_parallel", "must be a whole number of runs, 1 or more")
        if not isinstance(raw.get("offline", False), bool):
            raise self.fail("offline", "must be true or false")
        return Config(
            offline=raw.get("offline", False),
            path=self.path,
            max_parallel=max_parallel,
            experiments=experiments,
            plugins_dir=self._local_path(plugins_dir) if plugins_dir else None,
            runs_dir=self._local_path(runs_dir) if runs_dir else None,
            parents=parents,
        )

    def _local_path(self, value: str) -> Path:
        p = Path(value).expanduser()
        return p if p.is_absolute() else self.base_dir / p

    def _merged(
        self, name: str, tables: dict[str, Any], defaults: dict[str, Any], chain: list[str]
    ) -> dict[str, Any]:
        if name in chain:
            cycle = " -> ".join([*chain[chain.index(name):], name])
            raise self.fail(f"experiments.{chain[-1]}.extends", f"extends cycle: {cycle}")
        table = tables[name]
        parent = table.get("extends")
        own = {k: v for k, v in table.items() if k not in META_KEYS}
        base = self._merged(parent, tables, defaults, [*chain, name]) if parent else defaults
        return _deep_merge(base, own)

    def _expand(self, name: str, table: dict[str, Any], values: dict[str, Any]):
        matrix = table.get("matrix")
        if matrix is None:
            yield name, values, name
            return
        where = f"experiments.{name}.matrix"
        if not isinstance(matrix, dict) or not matrix:
            raise self.fail(where, 'must be a table of key = [values], e.g. { "lora.r" = [4, 8] }')
        keys = list(matrix)
        for key in keys:
            if not isinstance(matrix[key], list) or not matrix[key]:
                raise self.fail(f"{where}.{key}", "must be a non-empty list of values")
            self._check_dotted(key, f"{where}")
        for combo in itertools.product(*(matrix[k] for k in keys)):
            expanded = copy.deepcopy(values)
            parts = []
            for key, value in zip(keys, combo, strict=True):
                node = expanded
                *heads, leaf = key.split(".")
                for head in heads:
                    node = node.setdefault(head, {})
                node[leaf] = value
                parts.append(f"{leaf}{_format_value(value)}")
            suffix = re.sub(r"[^A-Za-z0-9._-]+", "_", "-".join(parts))
            yield f"{name}-{suffix}", expanded, name

    def _check_dotted(self, dotted: str, where: str) -> None:
        model: type[BaseModel] | None = Experiment
        for part in dotted.split("."):
            fields = _model_fields(model) if model else {}
            if part not in fields or part == "name":
                raise self.fail(f"{where}.{dotted}", f"unknown key{suggest(part, fields)}")
            model = _submodel(fields[part].annotation)

    def _validate(
        self, name: str, values: dict[str, Any], origin: str, tables: dict[str, Any]
    ) -> Experiment:
        values = dict(values, name=name)
        try:
            exp = Experiment.model_validate(values)
        except ValidationError as exc:
            err = exc.errors()[0]
            loc = [str(p) for p in err["loc"]]
            where = self._origin(origin, loc, tables)
            msg = err["msg"]
            if err["type"] == "missing":
                msg = "required but not set (here or in [defaults])"
            raise self.fail(".".join([where, *loc]), msg) from None
        return self._absolute_paths(exp, origin)

    def _origin(self, name: str, loc: list[str], tables: dict[str, Any]) -> str:
        """The table a failing value came from: the experiment, an ancestor, or defaults."""
        seen: list[str] = []
        current: str | None = name
        while current and current not in seen:
            seen.append(current)
            node: Any = tables[current]
            if node.get("matrix") and ".".join(loc) in node["matrix"]:
                return f"experiments.{current}.matrix"
            for part in loc:
                node = node.get(part) if isinstance(node, dict) else None
            if node is not None:
                return f"experiments.{current}"
            current = tables[current].get("extends")
        return "defaults" if _has_path(self.raw.get("defaults", {}), loc) else f"experiments.{name}"

    def _absolute_paths(self, exp: Experiment, origin: str) -> Experiment:
        """Make relative model and data paths absolute against the TOML file's folder."""
        updates: dict[str, Any] = {}
        if exp.model and _looks_local(exp.model, self.base_dir):
            updates["model"] = str(self._local_path(exp.model))
        data = exp.data
        if _looks_local(data.source, self.base_dir):
            data = data.model_copy(update={"source": str(self._local_path(data.source))})
        updates["data"] = data
        exp = exp.model_copy(update=updates)
        problem = disjoint_problem(exp)
        if problem:
            raise self.fail(f"experiments.{origin}.data.eval_split", problem)
        return exp


def _has_path(table: dict[str, Any], loc: list[str]) -> bool:
    node: Any = table
    for part in loc:
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


def _looks_local(value: str, base_dir: Path) -> bool:
    if value.startswith(("./", "../", "/", "~")) or value.endswith(".gguf"):
        return True
    return (base_dir / value).exists()


def disjoint_problem(exp: Experiment) -> str | None:
    """Why the held-out rows overlap the training rows, or ``None`` when they are disjoint."""
    data = exp.data
    if data.eval_source not in (None, data.source):
        return None
    train, held = split_range(data.train_split), split_range(data.eval_split)
    if train is None or held is None or train[0] != held[0]:
        return None
    (_, t0, t1, tunit), (_, h0, h1, hunit) = train, held
    if tunit != hunit:
        return None
    if max(t0, h0) < min(t1, h1):
        return (
            f"held-out rows {data.eval_split!r} overlap training rows {data.train_split!r}; "
            "perplexity on training rows says nothing about generalisation"
        )
    return None


def diff(a: Experiment, b: Experiment) -> list[tuple[str, Any, Any]]:
    """``(key path, value in a, value in b)`` for every setting that differs, names excluded."""
    out: list[tuple[str, Any, Any]] = []

    def walk(x: Any, y: Any, prefix: str) -> None:
        if isinstance(x, dict) and isinstance(y, dict):
            for key in dict.fromkeys([*x, *y]):
                walk(x.get(key), y.get(key), f"{prefix}.{key}" if prefix else key)
        elif x != y:
            out.append((prefix, x, y))

    skip = {"name", "description"}
    walk(
        {k: v for k, v in a.model_dump().items() if k not in skip},
        {k: v for k, v in b.model_dump().items() if k not in skip},
        "",
    )
    return out


def check_plugins(config: Config, backends: Any, evaluators: Any, launchers: Any = None) -> None:
    """Reject experiments naming a backend, evaluator or launcher no loaded plugin provides."""
    for name, exp in config.experiments.items():
        if launchers is not None and exp.launcher not in launchers:
            raise ConfigError(
                f"{config.path}: experiments.{name}.launcher: unknown launcher {exp.launcher!r}"
                f"{suggest(exp.launcher, launchers)} (known: {', '.join(sorted(launchers))})"
            )
        if exp.backend not in backends:
            raise ConfigError(
                f"{config.path}: experiments.{name}.backend: unknown backend {exp.backend!r}"
                f"{suggest(exp.backend, backends)} (known: {', '.join(sorted(backends))})"
            )
        for i, ev in enumerate(exp.evaluators):
            if ev not in evaluators:
                raise ConfigError(
                    f"{config.path}: experiments.{name}.evaluators[{i}]: unknown evaluator {ev!r}"
                    f"{suggest(ev, evaluators)} (known: {', '.join(sorted(evaluators))})"
                )
