"""A minimal offline project (the tiny backend on the bundled data) and the real CLI, for CLI tests."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

TINY_TOML = """\
[defaults]
backend = "tiny"
[defaults.data]
source = "bundled:greentext"
[experiments.tiny]
"""


def workbench(cwd: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """``workbench ARGS`` as a user runs it, in ``cwd``, output captured."""
    return subprocess.run([sys.executable, "-m", "workbench.cli", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=timeout, stdin=subprocess.DEVNULL)
