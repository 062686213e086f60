"""The queue: ordering, parallel limits, GPU assignment, cancellation, failures, races.

Runs here use a real launcher plugin whose "training" is a small script that
records when it held which GPU and waits for a gate file, so the tests decide
when each run ends. Everything else (CLI, scheduler, spawning) is the real path.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from workbench import queue, runs

FAKE_TRAINER = '''
import json, os, sys, time
from pathlib import Path
from workbench import runs

run_dir = Path(sys.argv[1])
root = run_dir.parents[2]  # the project folder (runs/EXP/N)
gpu = os.environ.get("CUDA_VISIBLE_DEVICES", "")
start = time.time()
gate = root / "gate"
deadline = start + 60
while not (gate / f"{run_dir.parent.name}#{run_dir.name}").exists() and not (gate / "all").exists():
    if time.time() > deadline:
        break
    time.sleep(0.05)
with open(root / "timeline.jsonl", "a") as fh:
    fh.write(json.dumps({"run": f"{run_dir.parent.name}#{run_dir.name}", "gpu": gpu,
                         "start": start, "end": time.time()}) + "\\n")
if run_dir.parent.name.startswith("bad"):
    runs.write_status(run_dir, state="failed", error="RuntimeError: planned failure", ended=time.time())
    sys.exit(1)
runs.write_status(run_dir, state="finished", ended=time.time(), exit_code=0)
'''

LAUNCHER = '''
import sys
from workbench.api import Backend, Launcher, hookimpl

@hookimpl
def register_backends(register):
    register(Backend("fake", default_model="none", target_modules=("x",)))

@hookimpl
def register_launchers(register):
    register(Launcher("fake", lambda run_dir, dist: [sys.executable, {script!r}, run_dir]))
'''


@pytest.fixture
def project(tmp_path):
    (tmp_path / "fake_trainer.py").write_text(FAKE_TRAINER)
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "fake_launcher.py").write_text(LAUNCHER.format(script=str(tmp_path / "fake_trainer.py")))
    names = ["a", "b", "c", "d", "bad", "e"]
    experiments = "\n".join(f"[experiments.{n}]" for n in names)
    (tmp_path / "experiments.toml").write_text(textwrap.dedent("""
        plugins_dir = "plugins"
        [defaults]
        backend = "fake"
        launcher = "fake"
        evaluators = []
        [defaults.data]
        source = "x.jsonl"
        train_split = "train[:10]"
        eval_split = "train[10:20]"
    """) + experiments + "\n")
    (tmp_path / "gate").mkdir()
    return tmp_path


def workbench(project: Path, *args: str, gpus: str = "") -> subprocess.CompletedProcess:
    env = dict(os.environ, CUDA_VISIBLE_DEVICES=gpus, HF_HUB_OFFLINE="1")
    result = subprocess.run([sys.executable, "-m", "workbench.cli", *args], cwd=project, env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return result


def release(project: Path, ref: str) -> None:
    (project / "gate" / ref).touch()


def states(project: Path) -> dict[str, str]:
    return {r.ref: r.state for r in runs.list_runs(project / "runs")}


def wait_for(predicate, timeout: float = 30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting; last value {predicate()!r}")


def timeline(project: Path) -> list[dict]:
    path = project / "timeline.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_cpu_machine_runs_one_at_a_time_in_queue_order(project):
    workbench(project, "run", "a", "b", "c")
    wait_for(lambda: states(project) == {"a#1": "running", "b#1": "queued", "c#1": "queued"})
    assert [r.ref for r in queue.queued(project / "runs")] == ["b#1", "c#1"]
    assert "queued #1" in workbench(project, "queue").stdout
    for ref in ("a#1", "b#1", "c#1"):
        release(project, ref)
    wait_for(lambda: set(states(project).values()) == {"finished"})
    assert [e["run"] for e in timeline(project)] == ["a#1", "b#1", "c#1"]
    spans = timeline(project)
    assert all(x["end"] <= y["start"] + 0.5 for x, y in zip(spans, spans[1:], strict=False))


def test_max_parallel_overrides_the_cpu_limit(project):
    workbench(project, "run", "a", "b", "c", "--max-parallel", "2")
    wait_for(lambda: sorted(states(project).values()) == ["queued", "running", "running"])
    (project / "gate" / "all").touch()
    wait_for(lambda: set(states(project).values()) == {"finished"})


def test_max_parallel_from_the_toml(project):
    toml = project / "experiments.toml"
    toml.write_text("max_parallel = 2\n" + toml.read_text())
    workbench(project, "run", "a", "b", "c")
    wait_for(lambda: sorted(states(project).values()) == ["queued", "running", "running"])
    assert states(project)["c#1"] == "queued"
    (project / "gate" / "all").touch()
    wait_for(lambda: set(states(project).values()) == {"finished"})


def test_each_gpu_goes_to_one_run_at_a_time(project):
    workbench(project, "run", "a", "b", "c", gpus="0,1")
    wait_for(lambda: sorted(states(project).values()) == ["queued", "running", "running"])
    held = {r.ref: r.status["gpus"] for r in runs.list_runs(project / "runs") if r.state == "running"}
    assert sorted(held.values()) == [["0"], ["1"]]
    release(project, "a#1")
    wait_for(lambda: states(project)["c#1"] == "running")
    assert runs.resolve(project / "runs", "c#1").status["gpus"] == held["a#1"], "c gets the GPU a freed"
    (project / "gate" / "all").touch()
    wait_for(lambda: set(states(project).values()) == {"finished"})
    assert {e["run"]: e["gpu"] for e in timeline(project)}["c#1"] == held["a#1"][0]


def test_concurrent_enqueues_never_share_a_gpu(project):
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="0,1", HF_HUB_OFFLINE="1")
    procs = [subprocess.Popen([sys.executable, "-m", "workbench.cli", "run", *names], cwd=project, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for names in (["a", "b", "c"], ["d", "e", "a"])]
    for proc in procs:
        assert proc.wait(timeout=60) == 0
    assert len(states(project)) == 6
    (project / "gate" / "all").touch()
    wait_for(lambda: set(states(project).values()) == {"finished"}, timeout=60)
    spans = timeline(project)
    assert len(spans) == 6
    for gpu in ("0", "1"):
        mine = sorted((e for e in spans if e["gpu"] == gpu), key=lambda e: e["start"])
        for x, y in zip(mine, mine[1:], strict=False):
            assert x["end"] <= y["start"] + 0.2, f"GPU {gpu} shared by {x['run']} and {y['run']}"
    assert {e["gpu"] for e in spans} == {"0", "1"}


def test_a_failing_run_does_not_stop_the_queue(project):
    workbench(project, "run", "a", "bad", "b")
    (project / "gate" / "all").touch()
    wait_for(lambda: "queued" not in states(project).values() and "running" not in states(project).values())
    assert states(project) == {"a#1": "finished", "bad#1": "failed", "b#1": "finished"}


def test_cancel_and_move_up(project):
    workbench(project, "run", "a", "b", "c", "d")
    wait_for(lambda: states(project)["a#1"] == "running")
    workbench(project, "queue", "--top", "d#1")
    workbench(project, "stop", "b#1")  # stopping a queued run cancels it
    workbench(project, "queue", "--up", "c#1")
    assert [r.ref for r in queue.queued(project / "runs")] == ["c#1", "d#1"]
    assert runs.resolve(project / "runs", "b#1").status.get("cancelled") is True
    (project / "gate" / "all").touch()
    wait_for(lambda: "queued" not in states(project).values() and "running" not in states(project).values())
    assert [e["run"] for e in timeline(project)] == ["a#1", "c#1", "d#1"]
    assert states(project)["b#1"] == "stopped"


def test_the_queue_outlives_the_command_that_filled_it(project):
    workbench(project, "run", "a", "b")  # this process has exited when the queue moves on
    release(project, "a#1")
    wait_for(lambda: states(project)["b#1"] == "running")
    release(project, "b#1")
    wait_for(lambda: states(project)["b#1"] == "finished")


@pytest.mark.parametrize(("head", "running", "gpus", "expected"), [
    ({}, [], [], []),
    ({}, [{"gpus": []}], [], None),
    ({"max_parallel": 3}, [{}, {}], [], []),
    ({}, [{"gpus": ["0"]}], ["0", "1"], ["1"]),
    ({"gpus_needed": 2}, [{"gpus": ["0"]}], ["0", "1", "2"], ["1", "2"]),
    ({"gpus_needed": 2}, [{"gpus": ["0"]}], ["0", "1"], None),
    ({"max_parallel": 1}, [{"gpus": ["0"]}], ["0", "1"], None),
])
def test_plan(head, running, gpus, expected):
    assert queue.plan(head, running, gpus) == expected
