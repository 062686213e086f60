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
    dataset = _load(source, split, subset)
    if column not in dataset.column_names:
        raise UserError(
            f"column {column!r} not found in {source} (split {split!r}); available columns: "
            f"{', '.join(dataset.column_names) or 'none'}",
            kind="data", hint="set data.column to one of the available columns",
        )
    texts = [t for t in dataset[column] if isinstance(t, str) and t.strip()]
    if not texts:
        raise UserError(f"split {split!r} of {source} has no non-blank rows in column {column!r}",
                        kind="data", hint="check data.source and the split")
    return texts


def split_files(folder: Path) -> dict[str, Path]:
    """``{split name: file}`` for the data files in ``folder`` (``train.jsonl`` -> ``train``)."""
    return {p.stem: p for p in sorted(folder.iterdir()) if p.suffix.lower() in BUILDERS}


def _load(source: str, split: str, subset: str | None) -> Any:
    import datasets

    datasets.disable_progress_bars()
    path = Path(source).expanduser()
    if path.is_file() or path.is_dir():
        builder, files = _local_files(path, split)
        args: tuple[Any, ...] = (builder,)
        kwargs: dict[str, Any] = {"data_files": {k: str(v) for k, v in files.items()}}
    elif source.startswith(("/", "./", "../", "~")) or Path(source).suffix.lower() in BUILDERS:
        raise UserError(f"data source not found: {path}", kind="data",
                        hint="set data.source to an existing file or folder, or a hub dataset id")
    else:
        args, kwargs = (source, subset), {}
    try:
        return datasets.load_dataset(*args, split=split, **kwargs)
    except ValueError as exc:
        message = first_line(exc)
        if "split" in message.lower() or "corresponds to no data" in message:
            raise UserError(f"{source}: bad split {split!r}: {message}", kind="data",
                            hint="use a split the source has, e.g. 'train' or 'train[:100]'") from exc
        raise
    except (ConnectionError, OSError) as exc:
        if path.exists():
            raise
        raise UserError(f"dataset {source!r} is not available: {first_line(exc)}",
                        kind="data", hint=DATA_HINT) from exc


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
