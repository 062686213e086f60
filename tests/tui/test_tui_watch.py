"""The run-folder watcher: incremental, quiet when nothing changed, liveness, config reloads."""

from __future__ import annotations

import os
from pathlib import Path

from workbench import runs
from workbench.messages import ConfigChanged, LogChanged, RunsChanged, RunViews
from workbench.runview import LOSS
from workbench.watch import Watcher, stamp


def kinds(messages) -> list[type]:
    return [type(m) for m in messages]


def bump_mtime(path: Path) -> None:
    st = os.stat(path)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))


def test_nothing_changed_posts_nothing_and_rereads_nothing(workspace, monkeypatch) -> None:
    done = workspace.make_run("alpha", "finished", steps=20)
    live = workspace.make_run("beta", "running", steps=5)
    watcher = Watcher(workspace.toml, workspace.root, config_stamp=stamp(workspace.toml))
    watcher.want([done, live], live)
    first = watcher.poll()
    assert kinds(first) == [RunsChanged, RunViews, LogChanged]
    runs_msg = first[0]
    assert [r.ref for r in runs_msg.runs["alpha"]] == ["alpha#1"]
    views = first[1].views
    assert set(views) == {done, live} and len(views[done].series(LOSS)) == 20

    reads: list[Path] = []
    real = runs.read_status
    monkeypatch.setattr(runs, "read_status", lambda p: reads.append(Path(p)) or real(p))
    assert watcher.poll() == []
    assert reads == [live]  # the finished run's status is not re-read; the live one is (liveness)


def test_new_events_only_and_torn_line(workspace) -> None:
    run_dir = workspace.make_run("alpha", "running", steps=3, evals=0, samples=False)
    watcher = Watcher(workspace.toml, workspace.root, config_stamp=stamp(workspace.toml))
    watcher.want([run_dir], None)
    watcher.poll()
    runs.append_event(run_dir, "train", step=4, loss=1.0)
    with open(run_dir / runs.EVENTS, "ab") as fh:
        fh.write(b'{"type": "train", "step": 5, "lo')  # a writer mid-append
    (batch,) = [m for m in watcher.poll() if isinstance(m, RunViews)]
    assert [s for s, _ in batch.views[run_dir].series(LOSS)] == [1, 2, 3, 4]  # the torn line waits
    with open(run_dir / runs.EVENTS, "ab") as fh:
        fh.write(b'ss": 0.5}\n')
    (batch,) = [m for m in watcher.poll() if isinstance(m, RunViews)]
    assert batch.views[run_dir].series(LOSS)[-1] == (5, 0.5)


def test_vanished_process_noticed_without_a_status_write(workspace) -> None:
    proc = workspace.sleeper()
    run_dir = workspace.make_run("alpha", "running", steps=2, pid=proc.pid)
    watcher = Watcher(workspace.toml, workspace.root, config_stamp=stamp(workspace.toml))
    (msg, first_views) = watcher.poll()  # the runs, and the latest run's view
    assert msg.runs["alpha"][0].state == "running"
    assert first_views.views[run_dir].state == "running"
    proc.kill()
    proc.wait()
    (msg, views) = watcher.poll()
    status = msg.runs["alpha"][0].status
    assert status["state"] == "failed" and status["error"] == runs.VANISHED
    assert run_dir == msg.runs["alpha"][0].path
    assert views.views[run_dir].state == "failed"  # the view follows the status, unwritten as it is


def test_config_reload_on_mtime(workspace) -> None:
    watcher = Watcher(workspace.toml, workspace.root, config_stamp=stamp(workspace.toml))
    assert kinds(watcher.poll()) == [RunsChanged]  # no runs yet: said once
    assert watcher.poll() == []
    good = workspace.toml.read_text()
    workspace.toml.write_text(good + "\n[experiments.gamma]\nlora.alfa = 2\n")
    bump_mtime(workspace.toml)
    (msg,) = watcher.poll()
    assert isinstance(msg, ConfigChanged) and msg.config is None
    assert "experiments.gamma.lora.alfa" in msg.error and "did you mean 'alpha'" in msg.error
    workspace.toml.write_text(good)
    bump_mtime(workspace.toml)
    (msg,) = watcher.poll()
    assert msg.error is None and "alpha" in msg.config.experiments


def test_forget_posts_the_view_again(workspace) -> None:
    run_dir = workspace.make_run("alpha", "finished", steps=4, evals=0, samples=False)
    watcher = Watcher(workspace.toml, workspace.root, config_stamp=stamp(workspace.toml))
    watcher.want([run_dir], None)
    watcher.poll()
    assert watcher.poll() == []  # nothing changed: no view
    watcher.forget(run_dir)
    (batch,) = [m for m in watcher.poll() if isinstance(m, RunViews)]
    assert len(batch.views[run_dir].series(LOSS)) == 4


def test_a_poll_with_nothing_changed_reports_nothing(tmp_path) -> None:
    """Many finished runs, none changing: nothing to post (its cost: benchmarks/bench_responsiveness.py)."""
    root = tmp_path / "runs"
    for i in range(60):
        run_dir = runs.new_run_dir(root, f"exp{i % 20}")
        runs.write_status(run_dir, state="finished", step=10, max_steps=10)
    watcher = Watcher(tmp_path / "none.toml", root, config_stamp=None)
    assert watcher.poll() != []  # the first poll lists them
    assert watcher.poll() == []


def test_key_errors_name_their_line(tmp_path) -> None:
    from workbench.tomlpos import locate, with_line

    text = ('[defaults]\nbackend = "x"\n\n[defaults.lora]\nr = 4\n\n[experiments.a]\nlora.rank = 8\n'
            '[experiments.b]\nmatrix = { "lora.r" = [4, 8] }\n')
    assert locate(text, "experiments.a.lora.rank") == 8
    assert locate(text, "defaults.lora.r") == 5
    assert locate(text, "experiments.b.matrix.lora.r") == 10  # inside an inline table: its line
    assert locate(text, "nowhere.at.all") is None
    path = tmp_path / "experiments.toml"
    path.write_text(text)
    assert with_line(f"{path}: experiments.a.lora.rank: unknown key") == \
        f"{path}:8: experiments.a.lora.rank: unknown key"
    syntax = f"{path}:3:1: invalid TOML: Invalid value"
    assert with_line(syntax) == syntax
