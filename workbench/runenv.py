"""A run's environment is the one of the command that queued it.

A queued run is started later by the scheduler, a process that may have
been started by an earlier command with other variables. So ``workbench
run`` and ``resume`` (and the TUI) record their environment in the run
folder (``env.json``, readable by its owner only) and the scheduler starts
the run with it: ``WORKBENCH_BLOCK_PLUGINS``, ``WORKBENCH_CACHE``,
``HF_HUB_OFFLINE``, ``PATH``, ``PYTHONPATH`` or a plugin's own variables
reach the run as they were when it was queued.

Not recorded (the scheduler's value is used instead), and why:

- names that look like secrets (``*TOKEN*``, ``*SECRET*``, ``*PASSWORD*``,
  ``*CREDENTIAL*``, ``*_KEY``): a run folder is copied and shared, a secret
  must not land in it; ``HF_TOKEN`` and the like come from the scheduler's
  environment or the library's own token file;
- ``CUDA_VISIBLE_DEVICES``: the scheduler assigns GPUs;
- what belongs to the terminal session and is stale once it ends
  (``DISPLAY``, ``SSH_*``, ``TERM``, ``TMUX*``, ``PWD``, ``SHLVL``, ...).

Standard library only.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from pathlib import Path

ENV_FILE = "env.json"
SECRET_RE = re.compile(r"TOKEN|SECRET|PASSW(OR)?D|CREDENTIAL|_KEY$|^KEY$|API_?KEY", re.IGNORECASE)
SCHEDULER_OWNED = frozenset({"CUDA_VISIBLE_DEVICES"})
SESSION = frozenset({
    "DISPLAY", "WAYLAND_DISPLAY", "TERM", "TERM_PROGRAM", "TERM_PROGRAM_VERSION", "COLORTERM",
    "TMUX", "TMUX_PANE", "STY", "WINDOW", "WINDOWID", "COLUMNS", "LINES", "PWD", "OLDPWD",
    "SHLVL", "_", "PS1", "PROMPT_COMMAND", "LS_COLORS", "DBUS_SESSION_BUS_ADDRESS",
    "XDG_SESSION_ID", "XDG_SESSION_TYPE", "XDG_VTNR", "WORKBENCH_TUI",
})


def recorded(name: str) -> bool:
    """Whether ``name`` is recorded at enqueue time (see the module docstring)."""
    return not (name in SCHEDULER_OWNED or name in SESSION or name.startswith("SSH_")
                or SECRET_RE.search(name))


def record(run_dir: Path, environ: Mapping[str, str] | None = None) -> None:
    """Write the recordable part of ``environ`` (default: this process's) to ``run_dir/env.json``."""
    environ = os.environ if environ is None else environ
    env = {k: v for k, v in environ.items() if recorded(k)}
    path = Path(run_dir) / ENV_FILE
    tmp = path.with_name(f".{ENV_FILE}.{os.getpid()}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump(env, fh, indent=1, sort_keys=True)
        os.replace(tmp, path)
    except OSError as exc:  # a full disk: say which file, leave no temp file
        tmp.unlink(missing_ok=True)
        raise OSError(exc.errno, exc.strerror, str(path)) from None


def for_run(run_dir: Path, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment to start ``run_dir`` with: its recorded one, plus ``base``'s unrecorded names.

    A run folder without ``env.json`` (queued by an older workbench) gets ``base`` as it is.
    """
    base = os.environ if base is None else base
    try:
        saved = json.loads((Path(run_dir) / ENV_FILE).read_text())
    except (OSError, ValueError):
        return dict(base)
    if not isinstance(saved, dict):
        return dict(base)
    env = {k: v for k, v in base.items() if not recorded(k)}
    env.update({str(k): str(v) for k, v in saved.items() if recorded(str(k))})
    return env
