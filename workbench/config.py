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

from workbench import searchspec
from workbench.schema import NAME_MAX, NAME_RE, RDZV_RE, SPLIT_RE, Experiment, split_range

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

DEFAULT_CONFIG = "experiments.toml"
TOP_LEVEL_KEYS = ("defaults", "experiments", "plugins_dir", "runs_dir", "max_parallel", "offline")
# Keys of an experiment table that steer loading rather than describe a run.
META_KEYS = ("extends", "matrix")
# A matrix beyond this many experiments is a mistake (or a job for a search), not a grid.
MATRIX_MAX = 1000
MATRIX_FILE_MAX = 10 * MATRIX_MAX


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
    except RecursionError:
        raise ConfigError(f"{path}: invalid TOML: arrays or tables nested too deeply") from None
    try:
        return _Resolver(path, raw).resolve()
    except RecursionError:
        raise ConfigError(f"{path}: values nested too deeply") from None


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
            if len(name) > NAME_MAX:
                raise self.fail(where[:60] + "…", f"experiment names become folder names: at most "
                                f"{NAME_MAX} characters (this one has {len(name)})")
            if not isinstance(table, dict):
                raise self.fail(where, "must be a table")
            try:
                check_keys(table, Experiment, where, extra=META_KEYS)
            except ConfigError as exc:
                raise ConfigError(f"{self.path}: {exc}") from None
            parent = table.get("extends")
            if parent is not None and not isinstance(parent, str):
                raise self.fail(f"{where}.extends", "must be the name of another experiment")
            if parent is not None and parent not in tables:
                raise self.fail(
                    f"{where}.extends", f"unknown experiment {parent!r}{suggest(parent, tables)}"
                )

        merged: dict[str, dict[str, Any]] = {}
        for name in tables:
            self._merged(name, tables, defaults, merged)
        self._check_matrix_sizes(tables)

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
        self, name: str, tables: dict[str, Any], defaults: dict[str, Any],
        done: dict[str, dict[str, Any]],
    ) -> dict[str, Any]:
        """``name``'s table over its ancestors' over ``[defaults]``, memoised in ``done``.

        A loop, not recursion: a chain of thousands of ``extends`` is merged once per table.
        """
        chain: list[str] = []
        current: str | None = name
        while current is not None and current not in done:
            if current in chain:
                cycle = " -> ".join([*chain[chain.index(current):], current])
                raise self.fail(f"experiments.{chain[-1]}.extends", f"extends cycle: {cycle}")
            chain.append(current)
            current = tables[current].get("extends")
        base = done[current] if current is not None else defaults
        for link in reversed(chain):
            own = {k: v for k, v in tables[link].items() if k not in META_KEYS}
            base = done[link] = _deep_merge(base, own)
        return done[name]

    def _check_matrix_sizes(self, tables: dict[str, Any]) -> None:
        """Refuse a matrix over :data:`MATRIX_MAX` experiments, or all over :data:`MATRIX_FILE_MAX`."""
        total = 0
        for name, table in tables.items():
            matrix = table.get("matrix")
            if not isinstance(matrix, dict):
                continue
            size = 1
            for values in matrix.values():
                size *= len(values) if isinstance(values, list) else 1
            total += size
            if size > MATRIX_MAX or total > MATRIX_FILE_MAX:
                what = (f"this matrix gives {size} experiments; at most {MATRIX_MAX}"
                        if size > MATRIX_MAX else
                        f"the file's matrices give {total} or more experiments; at most {MATRIX_FILE_MAX}")
                raise self.fail(f"experiments.{name}.matrix", f"{what} (split it, or use a search)")

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
        if values.get("search") is not None:
            values["search"] = self._search(values["search"], origin, tables)
        try:
            exp = Experiment.model_validate(values)
        except ValidationError as exc:
            err = exc.errors()[0]
            keys = [str(p) for p in err["loc"] if not isinstance(p, int)]
            where = self._origin(origin, keys, tables)
            if keys == ["name"]:  # only a matrix makes a name the tables didn't have
                raise self.fail(f"experiments.{origin}.matrix", f"generated name {name[:40]!r}… "
                                f"is too long for a folder name (at most {NAME_MAX} characters)") from None
            raise self.fail(where + _loc_text(err["loc"]), _message(err)) from None
        if exp.search is not None:
            found = searchspec.problem(exp.search, exp.model_dump())
            if found:
                where = self._origin(origin, ["search"], tables)
                raise self.fail(f"{where}.search.{found[0]}", found[1])
        return self._absolute_paths(exp, origin)

    def _search(self, raw: Any, origin: str, tables: dict[str, Any]) -> searchspec.Search:
        """The experiment's ``search`` table, validated on its own (one line per mistake)."""
        where = self._origin(origin, ["search"], tables)
        if tables.get(origin, {}).get("matrix") is not None:
            raise self.fail(f"experiments.{origin}", "search and matrix can't be combined: "
                            "a study samples its own values (drop one of them)")
        try:
            return searchspec.parse(raw)
        except searchspec.SearchError as exc:
            raise self.fail(f"{where}.search.{exc.key}", exc.message) from None

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


def _loc_text(loc: tuple[Any, ...]) -> str:
    """``("lora", "target_modules", 0)`` -> ``.lora.target_modules[0]``."""
    return "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc)


_TYPE_WORDS = {
    "int_type": "a whole number", "int_from_float": "a whole number", "float_type": "a number",
    "string_type": "a string", "bool_type": "true or false", "list_type": "a list",
    "model_type": "a table", "dict_type": "a table",
}


_PATTERN_WORDS = {
    SPLIT_RE.pattern: "use a split name with an optional slice: 'train', 'train[:100]', "
    "'train[10%:20%]', 'train+test'",
    RDZV_RE.pattern: "use host:port",
    NAME_RE.pattern: "use letters, digits, '.', '_' and '-' only",
}


def _message(err: Any) -> str:
    """One line for a pydantic error, in the words of a TOML file, with the offending value."""
    kind, value = err["type"], err.get("input")
    if kind == "missing":
        return "required but not set (here or in [defaults])"
    got = f" (got {_toml_repr(value)})"
    if kind in _TYPE_WORDS:
        return f"must be {_TYPE_WORDS[kind]}{got}"
    if kind == "finite_number":
        return f"must be a finite number{got}"
    if kind in ("string_too_short", "too_short"):
        return f"must not be empty{got} (leave it out for the default)"
    if kind == "literal_error":
        return f"must be one of {err['ctx']['expected']}{got}{suggest(value, _choices(err))}"
    if kind == "string_pattern_mismatch":
        return f"not a valid value{got}: {_PATTERN_WORDS.get(str(err['ctx']['pattern']), err['msg'])}"
    if kind in _BOUND_WORDS:
        (bound,) = err["ctx"].values()
        return f"must be {_BOUND_WORDS[kind]} {bound:g}{got}"
    if kind == "value_error":  # a check across fields: its message names them
        return str(err["msg"]).removeprefix("Value error, ")
    msg = str(err["msg"])
    return f"{msg[0].lower()}{msg[1:]}{got}" if msg else f"invalid value{got}"


_BOUND_WORDS = {"greater_than": "greater than", "greater_than_equal": "at least",
                "less_than": "less than", "less_than_equal": "at most"}


def _choices(err: Any) -> list[str]:
    return re.findall(r"'([^']*)'", str(err.get("ctx", {}).get("expected", "")))


def _toml_repr(value: Any, limit: int = 60) -> str:
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, float):
        text = {"inf": "inf", "-inf": "-inf", "nan": "nan"}.get(str(value), repr(value))
    elif isinstance(value, str):
        text = repr(value)
    elif isinstance(value, dict):
        text = "a table"
    elif isinstance(value, list):
        text = "an empty list" if not value else f"a list of {len(value)}"
    else:
        text = str(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


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
        if exp.search is not None:
            declared = searchspec.declared_metrics([evaluators[ev] for ev in exp.evaluators])
            if exp.search.metric not in declared:
                raise ConfigError(
                    f"{config.path}: experiments.{name}.search.metric: {exp.search.metric!r} is not "
                    f"an eval metric of this experiment's evaluators{suggest(exp.search.metric, declared)}"
                    f" (declared: {', '.join(declared) or 'none'})"
                )
