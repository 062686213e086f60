"""A run's process group in miniature: a leader (the launcher) and one more member (a rank).

``python group_leader.py OUT`` starts a child in its own process group and
writes ``OUT/ready``. Each SIGTERM the leader gets adds a line to
``OUT/leader-term``; the leader then asks the child (with a real-time signal,
handled after any SIGTERM already delivered) to write in ``OUT/child-report``
the signals it got: ``TERM`` if the stop reached the whole group, ``none`` if
it reached the leader only. Then both exit.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

CHILD = """
import signal, sys, time
from pathlib import Path
out = Path(sys.argv[1])
got = []
signal.signal(signal.SIGTERM, lambda *_: got.append("TERM"))
signal.signal(signal.SIGRTMIN, lambda *_: (out / "child-report").write_text(",".join(got) or "none"))
(out / "child-ready").touch()
while True:
    time.sleep(0.05)
"""


def wait_for(path: Path, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists() and time.monotonic() < deadline:
        time.sleep(0.01)


def main(out: Path) -> None:
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(out)])

    def on_term(signum: int, frame: object) -> None:
        with open(out / "leader-term", "a") as fh:
            fh.write("TERM\n")
        os.kill(child.pid, signal.SIGRTMIN)
        wait_for(out / "child-report")
        child.kill()
        child.wait()
        sys.exit(0)

    signal.signal(signal.SIGTERM, on_term)
    wait_for(out / "child-ready")
    (out / "ready").touch()
    while True:
        time.sleep(0.05)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
