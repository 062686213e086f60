"""The run store: unique folders, incremental event reading, atomic status, liveness."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading

import pytest

from workbench import runs
from workbench.runs import RunError


def test_two_runs_of_one_experiment_never_share_a_folder(tmp_path):
    made: list = []
    threads = [threading.Thread(target=lambda: made.append(runs.new_run_dir(tmp_path, "exp")))
               for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len({p.name for p in made}) == 16
    assert sorted(int(p.name) for p in made) == list(range(1, 17))


@pytest.mark.parametrize("name", ["..", "../x", "a/b", "/abs", "", ".hidden"])
def test_experiment_names_cannot_escape_the_runs_folder(tmp_path, name):
    with pytest.raises(RunError):
        runs.new_run_dir(tmp_path / "runs", name)
    assert not (tmp_path / "x").exists()


def test_resolve_refs(tmp_path):
    for _ in range(3):
        d = runs.new_run_dir(tmp_path, "exp")
        runs.write_status(d, state="finished")
    assert runs.resolve(tmp_path, "exp#2").path == tmp_path / "exp" / "2"
    assert runs.resolve(tmp_path, "exp").run_id == "3"
    assert runs.resolve(tmp_path, str(tmp_path / "exp" / "1")).ref == "exp#1"
    with pytest.raises(RunError, match="no run 'exp#9'"):
        runs.resolve(tmp_path, "exp#9")
    with pytest.raises(RunError):
        runs.resolve(tmp_path, "../../etc#1")


def test_event_tail_is_incremental_and_tolerates_a_torn_line(tmp_path):
    tail = runs.EventTail(tmp_path)
    assert tail.read() == []
    runs.append_event(tmp_path, "train", step=1, loss=3.0)
    runs.append_event(tmp_path, "train", step=2, loss=2.5)
    assert [e["step"] for e in tail.read()] == [1, 2]
    assert tail.read() == []  # nothing new, nothing returned
    with open(tmp_path / runs.EVENTS, "ab") as fh:  # a writer caught mid-line
        fh.write(b'{"type": "train", "step": 3, "lo')
    assert tail.read() == []
    with open(tmp_path / runs.EVENTS, "ab") as fh:
        fh.write(b'ss": 2.0}\n')
    assert [(e["step"], e["loss"]) for e in tail.read()] == [(3, 2.0)]


def test_reader_ignores_unknown_fields_and_garbage(tmp_path):
    (tmp_path / runs.EVENTS).write_text('not json\n{"type": "eval", "step": 5, "future": 1}\n[1]\n')
    assert runs.read_events(tmp_path) == [{"type": "eval", "step": 5, "future": 1}]


def test_resume_drops_steps_lost_with_the_process(tmp_path):
    for step in (1, 2, 3, 4):
        runs.append_event(tmp_path, "train", step=step)
    runs.append_event(tmp_path, "resume", from_step=2)
    for step in (3, 4, 5):
        runs.append_event(tmp_path, "train", step=step)
    steps = [e["step"] for e in runs.effective(runs.read_events(tmp_path)) if e["type"] == "train"]
    assert steps == [1, 2, 3, 4, 5]


def test_status_is_merged_and_written_atomically(tmp_path):
    runs.write_status(tmp_path, state="running", step=1)
    runs.write_status(tmp_path, step=2)
    data = json.loads((tmp_path / runs.STATUS).read_text())
    assert (data["state"], data["step"]) == ("running", 2)
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []
    runs.write_status(tmp_path, only_if=("queued",), state="stopped")
    assert json.loads((tmp_path / runs.STATUS).read_text())["state"] == "running"


def test_a_killed_process_reads_as_failed_vanished(tmp_path):
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    runs.write_status(tmp_path, state="running", pid=proc.pid, pid_start=runs.process_start_time(proc.pid))
    assert runs.read_status(tmp_path)["state"] == "running"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    status = runs.read_status(tmp_path)
    assert status["state"] == "failed" and status["error"] == runs.VANISHED


def test_a_reused_pid_is_not_mistaken_for_the_run(tmp_path):
    runs.write_status(tmp_path, state="running", pid=os.getpid(), pid_start="1")
    assert runs.read_status(tmp_path)["state"] == "failed"


def test_log_tail_keeps_the_last_state_of_progress_lines(tmp_path):
    (tmp_path / runs.LOG).write_text("a\nb\n 10%\r 50%\r100%\n")
    assert runs.tail_log(tmp_path, 2) == ["b", "100%"]
