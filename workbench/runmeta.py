"""What a user says about a run (a note, tags) and what they do with it (archive, delete).

- **Notes and tags** live in the run's folder, in ``meta.json``
  (``{"note": "...", "tags": ["..."]}``), written atomically beside
  ``status.json`` and never inside it: the run's own record is the trainer's.
- **Archive** moves the run folder to ``runs/<experiment>/.archive/<N>``: hidden
  from every listing (they read numbered folders only), nothing lost; moving
  it back restores it. Its number stays taken, so a new run never reuses it.
- **Delete** removes the run folder for good.

A running or queued run is refused both: stop it (or take it out of the
queue) first. Standard library only: the TUI imports it.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from workbench import runs

META = "meta.json"
ARCHIVE = ".archive"
BUSY = ("running", "queued")


@dataclass(frozen=True)
class RunMeta:
    """A run's note and tags (empty when it has none)."""

    note: str = ""
    tags: tuple[str, ...] = field(default_factory=tuple)

    def matches(self, text: str) -> bool:
        """``text`` (lower case) is in the note or one of the tags."""
        return text in self.note.lower() or any(text in t.lower() for t in self.tags)


def read_meta(run_dir: Path) -> RunMeta:
    """The run's note and tags; an empty :class:`RunMeta` when there are none or the file is unreadable."""
    try:
        raw = json.loads((Path(run_dir) / META).read_text())
    except (OSError, ValueError):
        return RunMeta()
    if not isinstance(raw, dict):
        return RunMeta()
    note = raw.get("note")
    tags = raw.get("tags")
    return RunMeta(note if isinstance(note, str) else "",
                   tuple(t for t in tags if isinstance(t, str)) if isinstance(tags, list) else ())


def write_meta(run_dir: Path, meta: RunMeta) -> RunMeta:
    """Write ``meta`` atomically (temp file, then rename)."""
    run_dir = Path(run_dir)
    tmp = run_dir / f".{META}.{os.getpid()}.tmp"
    tmp.write_text(json.dumps({"note": meta.note, "tags": list(meta.tags)}, indent=1))
    os.replace(tmp, run_dir / META)
    return meta


def set_note(run_dir: Path, text: str) -> RunMeta:
    """Replace the run's note (an empty text clears it)."""
    return write_meta(run_dir, RunMeta(text.strip(), read_meta(run_dir).tags))


def set_tags(run_dir: Path, add: Sequence[str] = (), remove: Sequence[str] = ()) -> RunMeta:
    """Add and remove tags (kept in the order first added, no duplicates)."""
    for tag in add:
        if not tag.strip() or any(c.isspace() for c in tag):
            raise ValueError(f"tag {tag!r}: a tag is one word (no spaces)")
    old = read_meta(run_dir)
    tags = [t for t in dict.fromkeys([*old.tags, *add]) if t not in set(remove)]
    return write_meta(run_dir, RunMeta(old.note, tuple(tags)))


def _refuse_busy(run: runs.Run, what: str) -> None:
    if run.state in BUSY:
        how = "take it out of the queue" if run.state == "queued" else "stop it"
        raise runs.RunError(f"{run.ref} is {run.state}: {how} before you {what} it")


def archive(run: runs.Run) -> Path:
    """Move ``run``'s folder under its experiment's ``.archive`` folder; returns where it went."""
    _refuse_busy(run, "archive")
    target = run.path.parent / ARCHIVE / run.path.name
    target.parent.mkdir(exist_ok=True)
    if target.exists():
        raise runs.RunError(f"{target} already exists: move it away first")
    os.replace(run.path, target)
    return target


def delete(run: runs.Run) -> None:
    """Remove ``run``'s folder for good."""
    _refuse_busy(run, "delete")
    shutil.rmtree(run.path)

