"""The run-folder watcher: one :meth:`Watcher.poll` turns what changed on disk into Messages.

The App calls :meth:`~Watcher.poll` from a thread worker every half second.
Each poll checks, cheaply and in this order:

- the experiments file's mtime (reload, or the error, when it changes);
- the runs folder: one ``stat`` per experiment folder and per ``status.json``;
  a status is re-read only when its file changed or its run is active (so a
  process that vanishes is noticed even though nobody rewrote the file);
- the runs on screen and each experiment's latest run: their
  :class:`~workbench.runview.RunView`, rebuilt when their ``events.jsonl`` or
  their status (liveness included) changed (a ``stat`` when nothing did). A
  view folds only the events appended since the last read
  (:mod:`workbench.summary`), so a long run costs what its new lines cost;
- the tail of the shown run's ``train.log`` when its size or mtime moved.

Nothing is posted when nothing changed. The watcher never writes to a run.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from textual.message import Message

from workbench import config as config_mod
from workbench import launch, runs
from workbench.config import Config, ConfigError
from workbench.messages import ConfigChanged, LogChanged, RunsChanged, RunViews
from workbench.runview import RunView, Views
from workbench.schema import NAME_RE
from workbench.tomlpos import with_line

LOG_LINES = 200
Stamp = tuple[int, int, int] | None


def stamp(path: Path) -> Stamp:
    """``(inode, mtime_ns, size)`` of ``path``, or ``None`` when it does not exist.

    The inode catches editors that save by writing a new file and renaming it.
    """
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_ino, st.st_mtime_ns, st.st_size)


def load_config(path: Path, runs_dir: str | Path | None) -> tuple[Config | None, str | None, Path]:
    """Read the experiments file: ``(config, None, root)`` or ``(None, message, root)``."""
    try:
        cfg = config_mod.load(path)
    except ConfigError as exc:  # name the line too: validation errors come with the key path only
        return None, with_line(str(exc)), launch.runs_root(path, None, runs_dir)
    except Exception as exc:  # noqa: BLE001 - a bug in the loader must not kill the TUI
        return None, f"{path}: {type(exc).__name__}: {exc}", launch.runs_root(path, None, runs_dir)
    return cfg, None, launch.runs_root(path, cfg, runs_dir)


class Watcher:
    """Polls one runs folder and one experiments file; thread-safe :meth:`want`."""

    def __init__(self, config_path: Path, root: Path, runs_dir: str | Path | None = None,
                 config_stamp: Stamp = None, log_lines: int = LOG_LINES) -> None:
        self.config_path = Path(config_path)
        self.root = Path(root)
        self.runs_dir = runs_dir
        self.log_lines = log_lines
        self._config_stamp = config_stamp
        self._lock = threading.Lock()
        self._wanted: tuple[Path, ...] = ()
        self._forget: set[Path] = set()
        self._log_path: Path | None = None
        self._views = Views()  # rebuilds a run's view only when its folder or status changed
        self._posted: dict[Path, RunView] = {}  # the view last posted per run folder
        self._dirs: dict[Path, tuple[Stamp, list[str]]] = {}
        self._status: dict[Path, tuple[Stamp, dict[str, Any]]] = {}
        self._last_runs: dict[Path, dict[str, Any]] | None = None
        self._latest: tuple[Path, ...] = ()  # each experiment's newest run
        self._statuses: dict[Path, dict[str, Any]] = {}  # this poll's statuses, liveness applied
        self._shown_log: tuple[Path | None, Stamp] = (None, None)

    # --- called from the UI thread -------------------------------------------

    def want(self, paths: Iterable[Path], log_path: Path | None) -> None:
        """Follow the events of ``paths`` and the log of ``log_path`` from the next poll on."""
        with self._lock:
            self._wanted = tuple(dict.fromkeys(Path(p) for p in paths))
            self._log_path = Path(log_path) if log_path else None

    def forget(self, path: Path) -> None:
        """Build ``path``'s view again at the next poll, and post it even if nothing changed."""
        with self._lock:
            self._forget.add(Path(path))

    # --- called from the worker thread ---------------------------------------

    def poll(self, views: bool = True) -> list[Message]:
        """Everything that changed since the last poll, as Messages (``[]`` when nothing did).

        ``views=False`` skips the run views (and the log): the App's first, synchronous poll,
        which must not fold a long run's events before the first frame.
        """
        out: list[Message] = []
        changed = self._poll_config()
        if changed is not None:
            out.append(changed)
        polls = (self._poll_runs, self._poll_views, self._poll_log) if views else (self._poll_runs,)
        for poll in polls:
            message = poll()
            if message is not None:
                out.append(message)
        return out

    def _poll_config(self) -> ConfigChanged | None:
        now = stamp(self.config_path)
        if now == self._config_stamp:
            return None
        self._config_stamp = now
        cfg, error, root = load_config(self.config_path, self.runs_dir)
        if root != self.root:
            self.root = root
            self._dirs.clear()
            self._status.clear()
            self._last_runs = None
        return ConfigChanged(cfg, error, root)

    def _poll_runs(self) -> RunsChanged | None:
        found: dict[str, list[runs.Run]] = {}
        snapshot: dict[Path, dict[str, Any]] = {}
        try:
            entries = sorted(os.scandir(self.root), key=lambda e: e.name)
        except OSError:
            entries = []
        seen: set[Path] = set()
        for entry in entries:
            if not entry.is_dir() or not NAME_RE.match(entry.name):
                continue
            exp_dir = Path(entry.path)
            ids = self._run_ids(exp_dir)
            for run_id in ids:
                run_dir = exp_dir / run_id
                seen.add(run_dir)
                status = self._read_status(run_dir)
                snapshot[run_dir] = status
                found.setdefault(entry.name, []).append(runs.Run(entry.name, run_id, run_dir, status))
        for gone in set(self._status) - seen:
            del self._status[gone]
        self._latest = tuple(found_runs[-1].path for found_runs in found.values() if found_runs)
        self._statuses = snapshot
        if snapshot == self._last_runs:
            return None
        self._last_runs = snapshot
        return RunsChanged(found)

    def _run_ids(self, exp_dir: Path) -> list[str]:
        now = stamp(exp_dir)
        cached = self._dirs.get(exp_dir)
        if cached is not None and cached[0] == now:
            return cached[1]
        try:
            ids = sorted((p.name for p in exp_dir.iterdir() if p.name.isdigit() and p.is_dir()), key=int)
        except OSError:
            ids = []
        self._dirs[exp_dir] = (now, ids)
        return ids

    def _read_status(self, run_dir: Path) -> dict[str, Any]:
        now = stamp(run_dir / runs.STATUS)
        cached = self._status.get(run_dir)
        if cached is not None and cached[0] == now and cached[1].get("state") not in runs.ACTIVE:
            return cached[1]
        status = runs.read_status(run_dir)
        if cached is not None and cached[1] == status:
            status = cached[1]  # keep the identical object: cheap equality next time
        self._status[run_dir] = (now, status)
        return status

    def _poll_views(self) -> RunViews | None:
        with self._lock:
            wanted, forget = tuple(dict.fromkeys((*self._wanted, *self._latest))), self._forget
            self._forget = set()
        self._views.forget(wanted)
        for path in [p for p in self._posted if p not in wanted]:
            del self._posted[path]
        changed: dict[Path, RunView] = {}
        for path in wanted:
            status = self._statuses.get(path)  # a vanished process changes it without a write
            if status is None:
                status = self._read_status(path)
            found = self._views.get(runs.Run(path.parent.name, path.name, path, status))
            if found is self._posted.get(path) and path not in forget:
                continue
            self._posted[path] = changed[path] = found
        return RunViews(changed) if changed else None

    def _poll_log(self) -> LogChanged | None:
        with self._lock:
            path = self._log_path
        if path is None:
            self._shown_log = (None, None)
            return None
        now = stamp(path / runs.LOG)
        if (path, now) == self._shown_log:
            return None
        self._shown_log = (path, now)
        return LogChanged(path, runs.tail_log(path, self.log_lines) if now else [])
