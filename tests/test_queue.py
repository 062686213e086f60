"""The queue: ordering, parallel limits, GPU assignment, cancellation, failures, races.

Runs here use a real launcher plugin whose "training" is a small script that
records when it held which GPU and waits for a gate file, so the tests decide
when each run ends. Everything else (CLI, scheduler, spawning) is the real path.
"""

from __future__ import annotations

import json
import os
import signal
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
                         "start": start, "end": time.time(), "resume": "--resume" in sys.argv}) + "\\n")
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


# --- the commands around the queue -------------------------------------------------


def test_run_all_queues_every_experiment_in_file_order(project):
    out = workbench(project, "run", "--all").stdout
    assert [line.split()[1] for line in out.splitlines() if line.startswith("queued")] == [
        "a#1", "b#1", "c#1", "d#1", "bad#1", "e#1"]
    (project / "gate" / "all").touch()
    wait_for(lambda: "queued" not in states(project).values() and "running" not in states(project).values())
    assert [e["run"] for e in timeline(project)] == ["a#1", "b#1", "c#1", "d#1", "bad#1", "e#1"]


def test_list_shows_each_experiment_and_its_latest_run(project):
    workbench(project, "run", "a", "bad")
    (project / "gate" / "all").touch()
    wait_for(lambda: states(project) == {"a#1": "finished", "bad#1": "failed"})
    runs.write_status(project / "runs" / "a" / "1", best_perplexity=12.3456, best_bits_per_byte=1.5)
    lines = workbench(project, "list").stdout.splitlines()
    assert lines[0].split() == ["experiment", "backend", "model", "r", "steps", "latest", "run", "state",
                                "best", "held-out", "ppl", "best", "bits/byte"]
    rows = {line.split()[0]: line.split() for line in lines[1:]}
    assert list(rows) == ["a", "b", "c", "d", "bad", "e"]
    assert rows["a"] == ["a", "fake", "none", "8", "500", "a#1", "finished", "12.346", "1.5000"]
    assert rows["bad"][5:8] == ["bad#1", "failed", "(error)"]
    assert rows["b"][5:] == ["-", "-", "-", "-"]


def test_status_of_a_failed_run_shows_its_error_and_log(project):
    workbench(project, "run", "bad")
    (project / "gate" / "all").touch()
    wait_for(lambda: states(project) == {"bad#1": "failed"})
    (project / "runs" / "bad" / "1" / runs.LOG).write_text("loading\nRuntimeError: planned failure\n")
    out = workbench(project, "status", "bad#1").stdout
    assert out.splitlines()[0] == "bad#1: failed (error)"
    assert "  error: RuntimeError: planned failure" in out
    assert out.rstrip().endswith("log tail:\n    loading\n    RuntimeError: planned failure")


def kill_run(project: Path, ref: str) -> None:
    run = runs.resolve(project / "runs", ref)
    os.killpg(run.status["pgid"], signal.SIGKILL)
    wait_for(lambda: run.refresh().state == "failed")


def test_a_vanished_run_says_so_and_resumes_from_its_checkpoint(project):
    workbench(project, "run", "a")
    wait_for(lambda: states(project) == {"a#1": "running"})
    run_dir = project / "runs" / "a" / "1"
    saved = run_dir / runs.CHECKPOINTS / "checkpoint-2"  # what the trainer saved before: complete
    saved.mkdir(parents=True)
    for name in (*runs.CHECKPOINT_FILES, runs.ADAPTER_WEIGHTS[0]):
        (saved / name).write_text("{}")
    kill_run(project, "a#1")  # the machine rebooted, or the OOM killer came
    out = workbench(project, "status", "a#1").stdout
    assert out.splitlines()[0] == "a#1: failed (vanished)"
    assert "  error: process vanished" in out and "workbench resume" in out
    assert "resuming a#1 from checkpoint-2" in workbench(project, "resume", "a#1").stdout
    release(project, "a#1")
    wait_for(lambda: states(project) == {"a#1": "finished"})
    assert [(e["run"], e["resume"]) for e in timeline(project)] == [("a#1", True)]


def test_resume_refuses_a_run_that_never_checkpointed(project):
    workbench(project, "run", "a")
    wait_for(lambda: states(project) == {"a#1": "running"})
    kill_run(project, "a#1")
    result = subprocess.run([sys.executable, "-m", "workbench.cli", "resume", "a#1"], cwd=project,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert result.stderr.strip() == ("workbench: error: a#1 has no checkpoint to resume from (a complete "
                                     "one holds trainer_state.json and the adapter); start a new run instead")
    assert states(project) == {"a#1": "failed"}


def test_ctrl_c_detaches_follow_and_the_run_goes_on(project):
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="", HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1")
    # As from a terminal: Ctrl-C's default action, even when this test runs where SIGINT is ignored
    # (a background job), in which case Python would not turn it into KeyboardInterrupt.
    follower = subprocess.Popen([sys.executable, "-m", "workbench.cli", "run", "a", "--follow"], cwd=project,
                                env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        assert follower.stdout.readline().startswith("queued a#1")
        wait_for(lambda: states(project) == {"a#1": "running"})
        follower.send_signal(signal.SIGINT)  # Ctrl-C in the terminal that follows it
        out, err = follower.communicate(timeout=30)
    finally:
        if follower.poll() is None:
            follower.kill()
    assert follower.returncode == 0, err
    assert "detached; a#1 keeps running (workbench stop a#1 to stop it)" in out
    assert "Traceback" not in err
    run = runs.resolve(project / "runs", "a#1")
    assert run.state == "running" and runs.is_alive(run.status["pid"], run.status["pid_start"])
    release(project, "a#1")
    wait_for(lambda: states(project) == {"a#1": "finished"})
