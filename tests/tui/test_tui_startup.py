"""`workbench` with no arguments starts and paints the experiments table, headless.

It runs ``startup_probe.py`` (the probe behind the first-paint and idle-CPU
figures of ``benchmarks/bench_responsiveness.py``, where speed is measured):
here only that the real command paints a filled table and exits cleanly.
"""

from __future__ import annotations

import re
import subprocess
import sys

from helpers import HERE


def test_first_paint_shows_every_experiment(workspace) -> None:
    workspace.make_run("alpha", "finished", steps=40)
    proc = subprocess.run([sys.executable, str(HERE / "startup_probe.py"), "--headless"],
                          capture_output=True, text=True, timeout=120, cwd=workspace.path)
    assert proc.returncode == 0, proc.stdout + proc.stderr[-2000:]
    found = re.search(r"first paint with (\d+) experiments after ([\d.]+)s", proc.stdout)
    assert found, proc.stdout + proc.stderr[-2000:]
    assert found.group(1) == "4"
