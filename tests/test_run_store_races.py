"""The run store under real concurrency: several processes writing one run folder at once.

A launcher, the trainer and a ``workbench stop`` all write ``status.json``;
the TUI and ``workbench status`` read it at any moment; ranks and plugins
append to ``events.jsonl``. Each test starts real processes that hammer the
store together (released by one gate file, so they overlap) and checks what a
reader would notice: a torn or empty status, a field that went back in time, a
lost or broken event line. Zombies are real ones, too.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from workbench import runs

WRITERS = 4

STATUS_WRITER = """
import os, sys, time
from pathlib import Path
from workbench import runs
run_dir, me, count = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
(run_dir / ("ready-" + me)).touch()
while not (run_dir / "go").exists():
    time.sleep(0.001)
for n in range(1, count + 1):
    runs.write_status(run_dir, **{me: n, "note_" + me: "x" * 200})
"""

EVENT_WRITER = """
import sys, time
from pathlib import Path
from workbench import runs
run_dir, me, count = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
(run_dir / ("ready-" + me)).touch()
while not (run_dir / "go").exists():
    time.sleep(0.001)
for n in range(count):
    runs.append_event(run_dir, "train", writer=me, n=n, text="y" * 3000)
"""


def start_writers(run_dir: Path, script: str, count: int) -> list[subprocess.Popen]:
    procs = [subprocess.Popen([sys.executable, "-c", script, str(run_dir), f"w{i}", str(count)])
             for i in range(WRITERS)]
    deadline = time.monotonic() + 60
    while not all((run_dir / f"ready-w{i}").exists() for i in range(WRITERS)):
        assert time.monotonic() < deadline, "writers never started"
        time.sleep(0.01)
    (run_dir / "go").touch()  # all at once
    return procs


def test_status_readers_never_see_a_torn_file_and_writers_lose_no_field(tmp_path: Path) -> None:
    """Temp file + rename (no torn read) and the lock around read-merge-write (no lost field)."""
    count = 150
    runs.write_status(tmp_path, state="running")
    procs = start_writers(tmp_path, STATUS_WRITER, count)
    path = tmp_path / runs.STATUS
    seen: dict[str, int] = {}
    reads = 0
    while any(p.poll() is None for p in procs):
        text = path.read_text()  # the raw file, as any reader opens it
        reads += 1
        data = json.loads(text)  # never empty, never half-written
        assert data["state"] == "running", text[:200]
        for i in range(WRITERS):
            key = f"w{i}"
            if key in data:
                assert data[key] >= seen.get(key, 0), f"{key} went back: a writer lost another's write"
                seen[key] = data[key]
    assert all(p.wait() == 0 for p in procs)
    final = json.loads(path.read_text())
    assert {f"w{i}": final.get(f"w{i}") for i in range(WRITERS)} == {f"w{i}": count for i in range(WRITERS)}
    assert reads > 50, "the reader overlapped the writers"
    assert not [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_concurrent_event_appends_keep_every_line_whole(tmp_path: Path) -> None:
    """One ``write`` on an ``O_APPEND`` file per event: lines never interleave or overwrite."""
    count = 300
    procs = start_writers(tmp_path, EVENT_WRITER, count)
    assert all(p.wait(timeout=120) == 0 for p in procs)
    lines = (tmp_path / runs.EVENTS).read_bytes().split(b"\n")
    assert lines[-1] == b""
    parsed = [json.loads(line) for line in lines[:-1]]  # every line is one whole event
    got = sorted((e["writer"], e["n"]) for e in parsed)
    assert got == sorted((f"w{i}", n) for i in range(WRITERS) for n in range(count)), "none lost"
    assert len(runs.read_events(tmp_path)) == WRITERS * count


def _wait_zombie(pid: int) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        if state == "Z":
            return
        time.sleep(0.01)
    raise AssertionError(f"{pid} never became a zombie")


def test_a_zombie_process_reads_as_vanished(tmp_path: Path) -> None:
    """A run whose process exited but was never reaped (its parent is busy) is not alive."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    start = runs.process_start_time(proc.pid)
    assert start is not None
    runs.write_status(tmp_path, state="running", pid=proc.pid, pid_start=start)
    try:
        _wait_zombie(proc.pid)  # exited, not yet waited for: /proc still lists it
        assert not runs.is_alive(proc.pid, start)
        status = runs.read_status(tmp_path)
        assert (status["state"], status["error"]) == ("failed", runs.VANISHED)
    finally:
        proc.wait()
