"""Training and held-out texts: a hub dataset, a local file, or a folder of split files.

``data.source`` is a hub dataset id (``subset`` picks its configuration), a
JSONL/JSON/CSV/Parquet file (its rows are the split ``train``), or a folder
whose files are named by split (``train.jsonl``, ``test.jsonl`` ...).
``train_split`` and ``eval_split`` use the datasets split syntax, slices
included (``train[:100]``, ``train[100000:100200]``, ``test``); held-out rows
come from ``eval_source`` when set. Blank rows are dropped. Every mistake a
user can make here ends in a :class:`UserError` naming the thing to fix.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from workbench.train.errors import UserError, first_line

BUILDERS = {".jsonl": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet"}
DATA_HINT = (
    "run once with network access to cache it, or point data.source at a local "
    "JSONL/JSON/CSV/Parquet file or a folder of split files"
)
_SPLIT_NAMES = re.compile(r"(\w[\w.-]*)\s*(?:\[[^\]]*\])?")


def load_texts(data: Any) -> tuple[list[str], list[str]]:
    """``(training texts, held-out texts)`` for an experiment's ``data`` settings."""
    train = load_split(data.source, data.train_split, data.column, data.subset)
    eval_source = data.eval_source or data.source
    subset = data.subset if eval_source == data.source else None
    held_out = load_split(eval_source, data.eval_split, data.column, subset)
    return train, held_out


def load_split(source: str, split: str, column: str, subset: str | None = None) -> list[str]:
    """The non-blank strings of ``column`` in ``split`` of ``source``."""
    dataset, files = _load(source, split, subset)
    if column not in dataset.column_names:
        raise UserError(
            f"column {column!r} not found in {source} (split {split!r}); available columns: "
            f"{', '.join(dataset.column_names) or 'none'}",
            kind="data", hint="set data.column to one of the available columns",
        )
    try:  # pyarrow's JSON reader checks UTF-8 only when a row is read
        texts = [t for t in dataset[column] if isinstance(t, str) and t.strip()]
    except UnicodeDecodeError as exc:
        raise _unreadable(files, exc) from exc
    if not texts:
        raise UserError(f"split {split!r} of {source} has no non-blank rows in column {column!r}",
                        kind="data", hint="check data.source and the split")
    return texts


def split_files(folder: Path) -> dict[str, Path]:
    """``{split name: file}`` for the data files in ``folder`` (``train.jsonl`` -> ``train``)."""
    return {p.stem: p for p in sorted(folder.iterdir()) if p.suffix.lower() in BUILDERS}


def _load(source: str, split: str, subset: str | None) -> tuple[Any, dict[str, Path]]:
    """The ``datasets`` split, and the local files it came from (none for a hub dataset)."""
    import datasets

    datasets.disable_progress_bars()
    path = Path(source).expanduser()
    files: dict[str, Path] = {}
    if path.is_file() or path.is_dir():
        builder, files = _local_files(path, split)
        for file in files.values():
            if file.stat().st_size == 0:
                raise UserError(f"{file}: the file is empty (0 bytes)", kind="data",
                                hint="point data.source at a file with rows")
        args: tuple[Any, ...] = (builder,)
        kwargs: dict[str, Any] = {"data_files": {k: str(v) for k, v in files.items()}}
    elif source.startswith(("/", "./", "../", "~")) or Path(source).suffix.lower() in BUILDERS:
        raise UserError(f"data source not found: {path}", kind="data",
                        hint="set data.source to an existing file or folder, or a hub dataset id")
    else:
        args, kwargs = (source, subset), {}
    try:
        return datasets.load_dataset(*args, split=split, **kwargs), files
    except ValueError as exc:
        message = first_line(exc)
        if "split" in message.lower() or "corresponds to no data" in message:
            raise UserError(f"{source}: bad split {split!r}: {message}", kind="data",
                            hint="use a split the source has, e.g. 'train' or 'train[:100]'") from exc
        if files:
            raise _unreadable(files, exc) from exc
        raise
    except (ConnectionError, OSError) as exc:
        if files:
            raise _unreadable(files, exc) from exc
        if path.exists():
            raise
        raise UserError(f"dataset {source!r} is not available: {first_line(exc)}",
                        kind="data", hint=DATA_HINT) from exc
    except Exception as exc:  # noqa: BLE001 - datasets wraps a bad file in many exception types
        if files:
            raise _unreadable(files, exc) from exc
        raise


def _unreadable(files: dict[str, Path], exc: BaseException) -> UserError:
    """A ``data`` error naming the file, the line and what is wrong with it.

    Called only after datasets failed, so a good file is never read twice.
    """
    for file in files.values():
        problem = file_problem(file)
        if problem:
            return UserError(problem, kind="data", hint="fix or replace the file")
    cause = exc
    while cause.__cause__ is not None or cause.__context__ is not None:  # the reader's own words
        cause = cause.__cause__ or cause.__context__  # type: ignore[assignment]
    names = ", ".join(str(f) for f in files.values())
    return UserError(f"{names}: cannot be read: {type(cause).__name__}: {first_line(cause)}",
                     kind="data", hint="check the file's format matches its extension")


def file_problem(file: Path) -> str | None:
    """What makes ``file`` unreadable (``"FILE:LINE: not UTF-8 ..."``), or ``None`` if nothing found."""
    suffix = file.suffix.lower()
    if suffix == ".parquet":
        with open(file, "rb") as fh:
            head = fh.read(4)
            fh.seek(-4, 2)
            tail = fh.read(4)
        if head != b"PAR1" or tail != b"PAR1":
            return f"{file}: not a Parquet file (it lacks the PAR1 markers)"
        return None
    json_lines = suffix == ".jsonl" or (suffix == ".json" and not _whole_json(file))
    with open(file, "rb") as fh:
        for number, raw in enumerate(fh, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as err:
                return (f"{file}:{number}: not UTF-8 text (byte 0x{raw[err.start]:02x} at "
                        f"column {err.start + 1}); save the file as UTF-8")
            if "\x00" in line:
                return f"{file}:{number}: binary data (a NUL byte), not text"
            if not json_lines or not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                return f"{file}:{number}: not a JSON object: {err.msg} at column {err.colno}"
            if not isinstance(row, dict):
                return f"{file}:{number}: a JSON {type(row).__name__}, not an object with named columns"
    return None


def _whole_json(file: Path) -> bool:
    """True when ``file`` parses as one JSON document (a list of rows, or a table)."""
    try:
        with open(file, encoding="utf-8") as fh:
            json.load(fh)
    except (ValueError, UnicodeDecodeError):
        return False
    return True


def _local_files(path: Path, split: str) -> tuple[str, dict[str, Path]]:
    """The datasets builder and ``{split: file}`` for a local file or folder."""
    if path.is_file():
        builder = BUILDERS.get(path.suffix.lower())
        if builder is None:
            raise UserError(f"{path}: unsupported file type {path.suffix!r}", kind="data",
                            hint=f"use one of {', '.join(BUILDERS)}")
        return builder, {"train": path}
    files = split_files(path)
    if not files:
        raise UserError(f"{path} holds no data files named by split (e.g. train.jsonl)",
                        kind="data", hint=f"add train/test files ending in {', '.join(BUILDERS)}")
    wanted = _SPLIT_NAMES.findall(split) or [split]
    missing = [name for name in wanted if name not in files]
    if missing:
        raise UserError(
            f"{path}: no split {missing[0]!r} (files give: {', '.join(files)})", kind="data",
            hint="name the files by split (train.jsonl, test.jsonl) or fix the split",
        )
    builders = {BUILDERS[files[name].suffix.lower()] for name in wanted}
    if len(builders) > 1:
        raise UserError(f"{path}: splits {', '.join(wanted)} mix file types", kind="data")
    return builders.pop(), {name: files[name] for name in wanted}
