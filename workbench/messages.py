"""Messages the App's background workers post to the UI thread.

Small dataclasses: the watcher and the GPU poller build them in their
threads and only ``post_message`` crosses over. Snapshots that a newer one
makes obsolete say so with ``can_replace``, so a busy UI never works through
a backlog of stale states.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from textual.message import Message

if TYPE_CHECKING:
    from workbench.config import Config
    from workbench.gpus import Gpu
    from workbench.plugins import Registry
    from workbench.runs import Run
    from workbench.runview import RunView


@dataclass
class ConfigChanged(Message):
    """The experiments file was (re)read: a config, or the error that stops it loading."""

    config: Config | None
    error: str | None
    root: Path

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, ConfigChanged)


@dataclass
class RunsChanged(Message):
    """The runs on disk, per experiment, oldest first, with liveness applied."""

    runs: dict[str, list[Run]]

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, RunsChanged)


@dataclass
class RunViews(Message):
    """Fresh read models of the watched runs whose folders changed: ``{run folder: view}``."""

    views: dict[Path, RunView]

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, RunViews) and set(message.views) <= set(self.views)


@dataclass
class LogChanged(Message):
    """The tail of a run's ``train.log`` changed."""

    path: Path
    lines: list[str]

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, LogChanged) and message.path == self.path


@dataclass
class GpusChanged(Message):
    """A fresh reading of the GPUs (empty on a machine without them)."""

    gpus: list[Gpu] = field(default_factory=list)

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, GpusChanged)


@dataclass
class PluginsLoaded(Message):
    """The plugin registry finished loading (failures are inside it, never raised)."""

    registry: Registry


@dataclass
class Notice(Message):
    """Something a worker wants the user to know: a started run, a refused stop."""

    text: str
    severity: str = "information"
    title: str = ""


@dataclass
class Generated(Message):
    """One reply of the generation worker for the compare screen (``token``, ``done``, ``error``...).

    ``seq`` tells which generate press it answers, so replies of a request
    that a newer one replaced are dropped.
    """

    seq: int
    reply: dict[str, Any]


@dataclass
class GenerationEnded(Message):
    """A generate request finished (``error``: why it could not run at all)."""

    seq: int
    error: str | None = None


@dataclass
class ReportWritten(Message):
    """``workbench report`` from the results screen finished: its path, or the error."""

    path: Path | None
    error: str | None = None
