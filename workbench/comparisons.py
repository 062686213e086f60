"""Saved comparisons: a prompt, its sampling settings and what each pane generated.

Each one is a JSON file in ``<runs>/.comparisons/<timestamp>.json`` (the
runs folder's listing ignores it: its name is not a number), written
atomically, so the compare screen and ``workbench compare --save`` can keep
them and the TUI can list and reopen them later. Standard library only.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

FOLDER = ".comparisons"
VERSION = 1


@dataclass
class SavedPane:
    """One pane of a comparison: a run's adapter (``run`` + ``checkpoint``) or a base model."""

    label: str
    texts: list[str] = field(default_factory=list)
    run: str | None = None  # EXPERIMENT#N
    run_dir: str | None = None
    checkpoint: str | None = None  # "final" or "checkpoint-N"
    base: dict[str, Any] | None = None  # {"backend": ..., "model": ...}
    error: str | None = None

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SavedPane:
        known = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        known.setdefault("label", data.get("run") or "base")
        return cls(**known)


@dataclass
class Comparison:
    """A saved comparison; ``path`` is set once it is on disk."""

    prompt: str
    settings: dict[str, Any]
    panes: list[SavedPane]
    time: float = field(default_factory=time.time)
    path: Path | None = None

    @property
    def title(self) -> str:
        """A one-line summary for a list: when, the prompt's first line, the pane labels."""
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(self.time))
        first = self.prompt.strip().splitlines()[0] if self.prompt.strip() else ""
        return f"{when}  {first[:40]!r}  " + ", ".join(p.label for p in self.panes)

    def to_dict(self) -> dict[str, Any]:
        return {"version": VERSION, "time": self.time, "prompt": self.prompt,
                "settings": dict(self.settings), "panes": [asdict(p) for p in self.panes]}

    @classmethod
    def from_dict(cls, data: dict[str, Any], path: Path | None = None) -> Comparison:
        return cls(
            prompt=str(data.get("prompt", "")), settings=dict(data.get("settings") or {}),
            panes=[SavedPane.from_dict(p) for p in data.get("panes") or [] if isinstance(p, dict)],
            time=float(data.get("time") or 0.0), path=path,
        )


def folder(root: Path) -> Path:
    return Path(root) / FOLDER


def save(root: Path, comparison: Comparison) -> Path:
    """Write ``comparison`` under ``root``; returns its new file, never overwriting another."""
    target_dir = folder(root)
    target_dir.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(comparison.time))
    data = json.dumps(comparison.to_dict(), indent=1, ensure_ascii=False)
    tmp = target_dir / f".{stamp}.{os.getpid()}.tmp"
    tmp.write_text(data, encoding="utf-8")
    n = 1
    while True:
        path = target_dir / (f"{stamp}.json" if n == 1 else f"{stamp}-{n}.json")
        try:
            os.link(tmp, path)  # fails if the name is taken: two saves in one second both survive
            break
        except FileExistsError:
            n += 1
    tmp.unlink()
    comparison.path = path
    return path


def load(path: str | Path) -> Comparison:
    """Read one saved comparison; ``ValueError`` when the file is not one."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path}: not a saved comparison ({exc})") from None
    if not isinstance(data, dict) or "prompt" not in data:
        raise ValueError(f"{path}: not a saved comparison")
    return Comparison.from_dict(data, path)


def list_saved(root: Path) -> list[Comparison]:
    """Every readable saved comparison under ``root``, newest first."""
    found = []
    target_dir = folder(root)
    if not target_dir.is_dir():
        return []
    for path in target_dir.glob("*.json"):
        try:
            found.append(load(path))
        except ValueError:
            continue
    return sorted(found, key=lambda c: (c.time, c.path.name if c.path else ""), reverse=True)
