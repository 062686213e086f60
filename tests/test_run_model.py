"""The run model: typed status and events, damaged folders, checkpoints, the summary, the run's env.

Hand-written run folders read through the real commands (``python -m
workbench.cli``); the environment test starts a real scheduler and runs a
launcher plugin that records the environment it was started with.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from workbench import cli as workbench_cli
from workbench import queue, runenv, runs, summary
from workbench.records import parse_event, parse_status
from workbench.runview import view

TOML = """
[defaults]
backend = "tiny"
[defaults.data]
source = "x.jsonl"
[experiments.good]
[experiments.startx]
[experiments.bestx]
[experiments.resumex]
[experiments.nostatus]
[experiments.badjson]
"""


def cli(base: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "workbench.cli", *args], cwd=base, capture_output=True,
                          text=True, timeout=120, env=env)


def make_run(root: Path, exp: str, status: dict | None = None, events: list[dict] = (),
             raw_status: str | None = None) -> Path:
    path = root / exp / "1"
    path.mkdir(parents=True)
    (path / runs.CONFIG).write_text(json.dumps({"experiment": {"name": exp, "backend": "tiny",
                                                               "lora": {"r": 4}}}))
    if raw_status is not None:
        (path / runs.STATUS).write_text(raw_status)
    elif status is not None:
        (path / runs.STATUS).write_text(json.dumps(status))
    with open(path / runs.EVENTS, "w") as fh:
        for event in events:
            fh.write(json.dumps({"time": 1000.0, **event}) + "\n")
    return path


GOOD_EVENTS = [{"type": "train", "step": 1, "loss": 2.5, "tokens": 100, "tokens_per_s": 50.0},
               {"type": "eval", "step": 1, "perplexity": 9.5, "bits_per_byte": 1.25}]


@pytest.fixture
def damaged(tmp_path: Path) -> Path:
    (tmp_path / "experiments.toml").write_text(TOML)
    root = tmp_path / "runs"
    ok = {"state": "finished", "started": 990.0, "ended": 1000.0, "step": 1, "max_steps": 1}
    make_run(root, "good", ok, GOOD_EVENTS)
    make_run(root, "startx", {**ok, "started": "x"}, GOOD_EVENTS)
    make_run(root, "bestx", {**ok, "best_perplexity": "1.2"}, GOOD_EVENTS)
    make_run(root, "resumex", ok, [*GOOD_EVENTS, {"type": "resume", "from_step": "zz"}])
    make_run(root, "nostatus", None, GOOD_EVENTS)
    make_run(root, "badjson", raw_status='{"state": "finis', events=GOOD_EVENTS)
    return tmp_path


REASONS = {
    "startx#1": "damaged: started is 'x', not a number",
    "bestx#1": "damaged: best_perplexity is '1.2', not a number",
    "resumex#1": "damaged: events.jsonl line 3: resume event: from_step 'zz' is not a whole number",
    "nostatus#1": "damaged: no status.json",
    "badjson#1": "damaged: status.json is not valid JSON",
}


@pytest.mark.parametrize("command", [["status"], ["results"], ["list"]])
def test_a_malformed_run_folder_is_shown_damaged_and_the_rest_list(damaged, command):
    proc = cli(damaged, *command)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = proc.stdout.splitlines()
    for ref, reason in REASONS.items():
        line = next(x for x in lines if x.startswith(ref) or f" {ref} " in x)
        assert reason in line, (ref, line)
    good = next(x for x in lines if "good#1" in x)
    assert "finished" in good and "9.5" in good


def test_status_of_a_damaged_run_and_the_report_go_on(damaged, tmp_path):
    proc = cli(damaged, "status", "resumex#1")
    assert proc.returncode == 0 and "resumex#1: damaged: events.jsonl line 3" in proc.stdout
    proc = cli(damaged, "report", "--no-generate", "-o", str(tmp_path / "rep"),
               "good#1", "startx#1", "resumex#1", "nostatus#1")
    assert proc.returncode == 0, proc.stderr
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "resumex#1: damaged: events.jsonl line 3" in md


def test_typed_records_name_what_is_wrong():
    st = parse_status({"state": "running", "step": "4", "pid": 12, "best_bits_per_byte": 1.5})
    assert st.state == "running" and st.step is None and st.pid == 12 and st.best == {"bits_per_byte": 1.5}
    assert st.damaged == ("step is '4', not a whole number",)
    assert parse_status({"state": "exploded"}).state == "damaged"
    bad_loss = parse_event({"type": "train", "step": 3, "loss": "low"})
    assert bad_loss == (None, "train event: loss 'low' is not a number")
    assert parse_event({"type": "resume", "from_step": 2})[1] is None
    assert parse_event({"type": "custom", "anything": [1]})[1] is None  # unknown types pass


# --- checkpoints and resume (issue 9 item 4) -------------------------------------------------


def checkpoint(run_dir: Path, step: int, complete: bool = True) -> Path:
    path = run_dir / runs.CHECKPOINTS / f"checkpoint-{step}"
    path.mkdir(parents=True)
    (path / "adapter_model.safetensors").write_bytes(b"weights")
    if complete:
        (path / "adapter_config.json").write_text("{}")
        (path / "trainer_state.json").write_text("{}")
    return path


def stopped_run(tmp_path: Path) -> Path:
    (tmp_path / "experiments.toml").write_text(TOML)
    return make_run(tmp_path / "runs", "good", {"state": "stopped", "step": 6, "max_steps": 8,
                                                "error": "the original error"}, GOOD_EVENTS)


def test_one_definition_of_a_complete_checkpoint(tmp_path):
    from workbench.generate import client
    from workbench.train import trainer

    run_dir = stopped_run(tmp_path)
    checkpoint(run_dir, 2)
    checkpoint(run_dir, 4)
    checkpoint(run_dir, 6, complete=False)  # the save was cut short
    assert [c.name for c in runs.checkpoints(run_dir)] == ["checkpoint-2", "checkpoint-4"]
    assert trainer.latest_checkpoint(run_dir) == (run_dir / "checkpoints" / "checkpoint-4", 4)
    assert client.checkpoints(run_dir) == ["checkpoint-2", "checkpoint-4"]
    assert [c.name for c in view(runs.resolve(tmp_path / "runs", "good#1")).checkpoints] == \
        ["checkpoint-2", "checkpoint-4"]


def test_resume_refuses_without_a_complete_checkpoint_and_changes_nothing(tmp_path):
    run_dir = stopped_run(tmp_path)
    checkpoint(run_dir, 6, complete=False)
    before = {p.relative_to(run_dir): p.read_bytes() for p in run_dir.rglob("*") if p.is_file()}
    proc = cli(tmp_path, "resume", "good#1")
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "no checkpoint to resume from" in proc.stderr
    after = {p.relative_to(run_dir): p.read_bytes() for p in run_dir.rglob("*") if p.is_file()}
    assert after == before
    assert not (tmp_path / "runs" / queue.LOCK).exists()  # no scheduler was started


# --- the summary -----------------------------------------------------------------------------


def test_the_summary_folds_only_what_was_appended(tmp_path):
    run_dir = tmp_path / "r"
    run_dir.mkdir()
    for step in range(1, 301):
        runs.append_event(run_dir, "train", step=step, loss=1.0 / step, tokens=10, tokens_per_s=100.0)
    first = summary.summarise(run_dir)
    assert first.max_step == 300 and (run_dir / summary.SUMMARY).is_file()
    runs.append_event(run_dir, "resume", from_step=100)
    for step in range(101, 151):
        runs.append_event(run_dir, "train", step=step, loss=5.0, tokens=10, tokens_per_s=100.0)
    with open(run_dir / runs.EVENTS, "a") as fh:
        fh.write('{"type": "train", "step": 151, "lo')  # a writer mid-append
    grown = summary.summarise(run_dir)
    full = summary.fold_events(runs.read_events(run_dir))
    assert grown.to_json()["loss"] == full.to_json()["loss"]
    assert grown.max_step == full.max_step == 150
    assert grown.train_tokens == 3500  # lost work took time and tokens too
    assert max(s for s, _ in grown.loss.points()) == 150


def test_a_replaced_log_rebuilds_the_summary(tmp_path):
    run_dir = tmp_path / "r"
    run_dir.mkdir()
    runs.append_event(run_dir, "train", step=1, loss=1.0)
    runs.append_event(run_dir, "train", step=2, loss=1.0)
    summary.summarise(run_dir)
    (run_dir / runs.EVENTS).unlink()
    runs.append_event(run_dir, "train", step=7, loss=3.0)
    assert summary.summarise(run_dir).max_step == 7


def test_lr_and_grad_norm_series_are_kept_bounded_and_an_old_summary_rebuilds(tmp_path):
    run_dir = tmp_path / "r"
    run_dir.mkdir()
    for step in range(1, 5001):
        runs.append_event(run_dir, "train", step=step, loss=1.0, lr=1e-3 * (1 - step / 5000),
                          grad_norm=9.0 if step == 4321 else 0.5, tokens=10, tokens_per_s=100.0)
    folded = summary.summarise(run_dir)
    lr, grad = folded.lr.points(), folded.grad_norm.points()
    assert lr[-1] == (5000.0, 0.0) and lr[0] == (1.0, pytest.approx(1e-3 * (1 - 1 / 5000)))
    assert len(grad) <= 2 * folded.grad_norm.cap + 1 and (4321.0, 9.0) in grad  # bounded, the spike kept
    # a summary cached by the previous format (no lr/grad_norm series) is rebuilt, not trusted
    cache = json.loads((run_dir / summary.SUMMARY).read_text())
    old = {k: v for k, v in cache.items() if k not in ("lr", "grad_norm", "recent")} | {"version": 1}
    (run_dir / summary.SUMMARY).write_text(json.dumps(old))
    runs.append_event(run_dir, "train", step=5001, loss=1.0, lr=2e-4, grad_norm=0.25)
    again = summary.summarise(run_dir)
    assert again.lr.points()[-1] == (5001.0, 2e-4) and again.lr.count == 5001
    assert json.loads((run_dir / summary.SUMMARY).read_text())["version"] == summary.VERSION


def test_recent_tokens_per_s_is_the_last_steps_rate_next_to_the_whole_run_average(tmp_path, capsys):
    run_dir = tmp_path / "runs" / "fast" / "1"
    run_dir.mkdir(parents=True)
    (run_dir / runs.CONFIG).write_text(json.dumps({"experiment": {"name": "fast", "backend": "tiny"}}))
    for step in range(1, 101):  # 100 slow steps, then WINDOW fast ones
        runs.append_event(run_dir, "train", step=step, loss=1.0, tokens=100, tokens_per_s=500.0)
    for step in range(101, 101 + summary.WINDOW):
        runs.append_event(run_dir, "train", step=step, loss=1.0, tokens=100, tokens_per_s=4000.0)
    proc = subprocess.Popen(["sleep", "30"], start_new_session=True)  # the run's live process
    try:
        runs.write_status(run_dir, state="running", step=100 + summary.WINDOW, pid=proc.pid,
                          pid_start=runs.process_start_time(proc.pid))
        timings = view(runs.resolve(tmp_path / "runs", "fast#1")).timings
        assert timings.recent_tokens_per_s == pytest.approx(4000.0)
        assert timings.tokens_per_s == pytest.approx(120 * 100 / (100 * 0.2 + 20 * 0.025))  # whole run
        assert workbench_cli.main(["-c", str(tmp_path / "none.toml"), "--runs-dir", str(tmp_path / "runs"),
                         "status", "fast#1"]) == 0
        assert "tokens/s: 585 (average), 4.0k (last 20 steps)" in capsys.readouterr().out
    finally:
        proc.kill()
        proc.wait()


def test_long_series_stay_bounded_and_keep_spikes():
    s = summary.StreamSeries(cap=100)
    for step in range(1, 200_001):
        s.add(float(step), 1000.0 if step == 123_457 else 1.0)
    points = s.points()
    assert len(points) <= 2 * 100 + 1
    assert (123_457.0, 1000.0) in points and points[-1] == (200_000.0, 1.0)


# --- a run's environment is the one of the command that queued it ----------------------------


ENV_LAUNCHER = '''
import sys
from workbench.api import Launcher, hookimpl

CODE = ("import json, os, sys, time; time.sleep(float(os.environ.get('HOLD_S', '0'))); "
        "json.dump(dict(os.environ), open(os.path.join(sys.argv[1], 'seen_env.json'), 'w'))")


@hookimpl
def register_launchers(register):
    register(Launcher(name="envdump",
                      command=lambda run_dir, settings: [sys.executable, "-c", CODE, run_dir]))
'''

ENV_TOML = """
plugins_dir = "plugins"
[defaults]
backend = "tiny"
launcher = "envdump"
[defaults.data]
source = "x.jsonl"
[experiments.hold]
[experiments.hold2]
[experiments.probe]
"""


def _schedulers(root: Path) -> list[int]:
    """Pids of live scheduler processes for ``root`` (read from /proc: probing the lock would race)."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"workbench.queue" in argv and str(root).encode() in argv and runs.is_alive(int(proc.name)):
            found.append(int(proc.name))
    return found


def _wait(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def test_a_queued_run_gets_the_environment_of_the_command_that_queued_it(tmp_path):
    (tmp_path / "plugins").mkdir()
    (tmp_path / "plugins" / "envdump.py").write_text(ENV_LAUNCHER)
    (tmp_path / "experiments.toml").write_text(ENV_TOML)
    root = tmp_path / "runs"
    env = {k: v for k, v in os.environ.items() if not k.startswith("WORKBENCH_")}
    # hold runs 8 s while hold2 waits for the slot: the scheduler stays alive meanwhile
    first = cli(tmp_path, "run", "hold", "hold2", env=dict(env, HOLD_S="8"))
    assert first.returncode == 0, first.stderr
    _wait(lambda: runs.read_status(root / "hold" / "1").get("state") == "running", 20, "hold running")
    # `run hold hold2` may start a twin scheduler that exits at once when it finds the lock taken
    _wait(lambda: len(_schedulers(root)) == 1, 10, "one scheduler")
    scheduler = _schedulers(root)
    second = cli(tmp_path, "run", "probe", env=dict(
        env, HOLD_S="0", WORKBENCH_BLOCK_PLUGINS="someone-elses-plugin", GREENTEXT_JUDGE_URL="http://judge",
        HF_TOKEN="hf_secret"))
    assert second.returncode == 0, second.stderr
    assert _schedulers(root) == scheduler  # the first command's scheduler will start the probe
    seen_file = root / "probe" / "1" / "seen_env.json"
    _wait(seen_file.is_file, 60, "the probe run to start")
    _wait(lambda: seen_file.stat().st_size > 0, 5, "the env dump")
    time.sleep(0.2)
    seen = json.loads(seen_file.read_text())
    assert seen["WORKBENCH_BLOCK_PLUGINS"] == "someone-elses-plugin"
    assert seen["GREENTEXT_JUDGE_URL"] == "http://judge"
    assert seen["HOLD_S"] == "0"  # the queuing command's value, not the scheduler's 6
    recorded = (root / "probe" / "1" / runenv.ENV_FILE)
    assert "hf_secret" not in recorded.read_text()  # secrets are never written to the run folder
    assert recorded.stat().st_mode & 0o077 == 0


# --- declared metrics and agreement on hand-written runs --------------------------------------

DECLARED = [{"name": "perplexity", "label": "held-out ppl", "better": "lower", "format": ".3f"},
            {"name": "greentext-format", "label": "greentext fmt", "better": "higher", "format": ".2f"}]


@pytest.fixture
def declared_runs(tmp_path: Path) -> Path:
    root = tmp_path / "runs"
    for exp, value, ppl in (("hi", 0.93, 9.0), ("lo", 0.41, 8.0)):
        events = [{"type": "train", "time": 1000.0, "step": 1, "loss": 2.0, "tokens": 100,
                   "tokens_per_s": 50.0},
                  {"type": "eval", "time": 1001.0, "step": 1, "perplexity": ppl, "greentext-format": value},
                  {"type": "resume", "time": 5000.0, "from_step": 1},  # a long gap: not training time
                  {"type": "train", "time": 5002.0, "step": 2, "loss": 1.0, "tokens": 300,
                   "tokens_per_s": 100.0}]
        make_run(root, exp, {"state": "finished", "started": 990.0, "ended": 5002.0, "step": 2,
                             "max_steps": 2, "metrics": DECLARED, "tokens_per_s": 100.0}, events)
    return tmp_path


def test_sorting_and_best_marks_follow_the_declared_direction(declared_runs):
    from workbench import results

    rows = results.collect(declared_runs / "runs")
    assert [r["run"] for r in results.sort_rows(rows, "greentext-format")] == ["hi#1", "lo#1"]
    assert [r["run"] for r in results.sort_rows(rows, "ppl")] == ["lo#1", "hi#1"]
    best = {r["run"]: r.best for r in rows}
    assert "greentext-format" in best["hi#1"] and "ppl" in best["lo#1"]
    assert results.cell(next(r for r in rows if r["run"] == "hi#1"), "greentext-format") == "★ 0.93"


def test_status_and_results_agree_on_a_resumed_run(declared_runs):
    status = cli(declared_runs, "status").stdout.splitlines()
    res = cli(declared_runs, "results").stdout.splitlines()
    split = __import__("re").compile(r"\s{2,}").split
    s_head, r_head = split(status[0].strip()), split(res[0].strip())
    s_rows = {split(x.strip())[0]: dict(zip(s_head, split(x.strip()), strict=False)) for x in status[1:]}
    r_rows = {split(x.strip())[0]: dict(zip(r_head, [c.replace("★ ", "") for c in split(x.strip())],
                                            strict=False)) for x in res[1:]}
    for run in ("hi#1", "lo#1"):
        for h in ("held-out ppl", "greentext fmt", "tok/s", "train time"):
            assert s_rows[run][h] == r_rows[run][h], (run, h)
    # 13 s of training (990-1001 and 5000-5002), not the 67 min from start to end
    assert s_rows["hi#1"]["train time"] == "13s"
    assert s_rows["hi#1"]["tok/s"] == "80"  # 400 tokens over 5 s of steps, not the last step's 100


# --- plugin API: validation names the plugin that failed, reserved names are refused ------------


def test_validation_names_the_plugin_that_failed_to_load(tmp_path):
    (tmp_path / "plugins").mkdir()
    (tmp_path / "plugins" / "qwen.py").write_text("import not_installed_anywhere\n")
    (tmp_path / "experiments.toml").write_text(
        'plugins_dir = "plugins"\n[defaults]\nbackend = "qwen"\n[defaults.data]\nsource = "x.jsonl"\n'
        "[experiments.a]\n")
    proc = cli(tmp_path, "validate")
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1
    assert "unknown backend 'qwen'" in proc.stderr
    assert "— plugin 'qwen' failed to load: ModuleNotFoundError: No module named 'not_installed_anywhere'" \
        in proc.stderr


def test_reserved_metric_names_and_taken_plugin_names_are_refused(tmp_path):
    from workbench.plugins import load_plugins

    (tmp_path / "sneaky.py").write_text(
        "from workbench.api import Evaluator, Metric, hookimpl\n"
        "@hookimpl\n"
        "def register_evaluators(register):\n"
        "    register(Evaluator(name='sneaky', compute=lambda ctx: {}, metrics=(Metric('loss'),)))\n")
    (tmp_path / "evaluators.py").write_text("x = 1\n")  # the built-in entry point's name
    reg = load_plugins(tmp_path)
    assert "sneaky" not in reg.evaluators
    failures = {f.plugin: f.error for f in reg.failures}
    assert "declares reserved metric name 'loss'" in failures["sneaky"]
    assert "the plugin name 'evaluators' is already taken" in failures["evaluators"]
    assert "perplexity" in reg.evaluators  # the built-ins still load


def test_views_are_rebuilt_only_when_the_run_changed(tmp_path):
    from workbench.runview import Views

    run_dir = make_run(tmp_path / "runs", "good", {"state": "finished", "step": 1}, GOOD_EVENTS)
    views = Views()
    first = views.get(runs.resolve(tmp_path / "runs", "good#1"))
    assert views.get(runs.resolve(tmp_path / "runs", "good#1")) is first
    runs.append_event(run_dir, "eval", step=2, perplexity=4.0)
    again = views.get(runs.resolve(tmp_path / "runs", "good#1"))
    assert again is not first and again.metric("perplexity").best == 4.0
