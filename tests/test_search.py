"""Optuna studies: validation, the study storage under concurrent writers, and real studies
on the tiny model through the real queue (``workbench run`` -> scheduler -> trainer).

The end-to-end studies are ``slow`` (each trial is a training process, ~5 s of imports on
an idle machine): `.ci/run` runs them with ``--runslow``.
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

from workbench import config, runs, search
from workbench.searchspec import Search
from workbench.studyview import study_view

SAMPLE_DIR = Path(__file__).resolve().parents[1] / "workbench" / "data" / "greentext"
TIMEOUT = 900

BASE = f"""
[experiments.base]
backend = "tiny"
evaluators = ["perplexity"]
data.source = "{SAMPLE_DIR}"
data.column = "greentexts"
data.train_split = "train"
data.eval_split = "test"
train.steps = 4
train.eval_every = 1
train.save_every = 100
train.batch_size = 8
train.max_length = 48
"""


def env() -> dict[str, str]:
    # One torch thread: on a busy 2-core machine two per process make the tiny model ~10x slower.
    return dict(os.environ, HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")


def workbench(project: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "workbench.cli", *args], cwd=project, env=env(),
                          capture_output=True, text=True, timeout=120)


def write_project(folder: Path, search_toml: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "experiments.toml").write_text(BASE + textwrap.dedent(search_toml))
    return folder


def wait_until_done(project: Path, experiment: str, count: int) -> list[runs.Run]:
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        trials = search.trial_runs(project / "runs", experiment)
        if len(trials) >= count and all(r.state in ("finished", "failed", "pruned") for r in trials):
            return trials
        time.sleep(1)
    raise AssertionError(f"study not done in {TIMEOUT}s: "
                         f"{[(r.ref, r.state) for r in search.trial_runs(project / 'runs', experiment)]}")


def load_study(project: Path, experiment: str):
    import optuna

    url = search.storage_url(project / "runs", experiment, Search(trials=1, params={"lora.r": [4]}))
    return optuna.load_study(study_name=experiment, storage=search.open_storage(url))


# --- validation -----------------------------------------------------------------------------

VALID = """
[experiments.s]
extends = "base"
[experiments.s.search]
trials = 3
{search}
"""


@pytest.mark.parametrize("search_lines, expected", [
    ('params."train.lerning_rate" = { low = 1e-5, high = 1e-2 }',
     'search.params."train.lerning_rate": unknown setting'),
    ('params."train.learning_rate" = { low = 1e-2, high = 1e-5 }', "low (0.01) is above high (1e-05)"),
    ('params."train.learning_rate" = { low = 1e-3, high = 1e-3 }', "empty range"),
    ('params."lora.r" = []', 'params."lora.r": empty list of choices'),
    ('params."train.learning_rate" = { low = 0, high = 1e-2, log = true }', "log = true needs low above 0"),
    ('params."train.lr_scheduler" = { low = 1, high = 3 }', "not a number: give a list of choices"),
    ('params."lora.r" = { low = 2.5, high = 8 }', "whole number"),
    ('params."lora" = [4, 8]', "is a table"),
    ('params."lora.r" = [4, 8]\npruner = "smart"', "search.pruner"),
    ("", "search.params: required"),
])
def test_bad_search_tables_are_one_line_naming_the_key(search_lines, expected):
    with pytest.raises(config.ConfigError) as err:
        config.loads(BASE + VALID.format(search=search_lines), "/x/experiments.toml")
    message = str(err.value)
    assert expected in message and "\n" not in message
    assert message.startswith("/x/experiments.toml: experiments.s.search")


def test_search_and_matrix_are_refused():
    toml = BASE + VALID.format(search='params."lora.r" = [4, 8]') + textwrap.dedent("""
        [experiments.grid]
        extends = "s"
        matrix = { "lora.alpha" = [8, 16] }
    """)
    with pytest.raises(config.ConfigError, match="experiments.grid: search and matrix can't be combined"):
        config.loads(toml, "/x/experiments.toml")


def test_a_valid_search_table(tmp_path):
    toml = BASE + VALID.format(search=textwrap.dedent("""
        metric = "perplexity"
        seed = 7
        params."train.learning_rate" = { low = 1e-5, high = 1e-2, log = true }
        params."lora.r" = [4, 8, 16]
        params."lora.alpha" = { low = 8, high = 64, step = 8 }
    """))
    exp = config.loads(toml, tmp_path / "experiments.toml").get("s")
    assert exp.search is not None and exp.search.trials == 3 and exp.search.pruner == "median"
    assert set(exp.search.params) == {"train.learning_rate", "lora.r", "lora.alpha"}


@pytest.mark.parametrize("search_lines, expected", [
    ('metric = "bits_per_byte"\nparams."lora.r" = [4, 8]',
     "search.metric: 'bits_per_byte' is not an eval metric of this experiment's evaluators"),
    ('params."lora.rank" = [4, 8]', 'search.params."lora.rank": unknown setting'),
])
def test_cli_rejects_a_bad_study_with_one_line_and_exit_2(tmp_path, search_lines, expected):
    project = write_project(tmp_path, VALID.format(search=search_lines))
    done = workbench(project, "run", "s")
    assert done.returncode == 2, done.stderr
    assert expected in done.stderr and len(done.stderr.strip().splitlines()) == 1
    assert not (project / "runs").exists()


def test_neither_cli_nor_tui_imports_optuna():
    code = ("import sys, workbench.app, workbench.cli, workbench.launch, workbench.results, "
            "workbench.report, workbench.search, workbench.studyview, workbench.screens.study; "
            "print('optuna' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env(), check=True)
    assert out.stdout.strip() == "False"


# --- the study storage -----------------------------------------------------------------------

WRITER = """
import sys, time
from pathlib import Path
from workbench import search
from workbench.searchspec import Search
url, go, n = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3])
spec = Search(trials=1, params={"lora.r": [4]})
study = search.open_study("s", spec, search.open_storage(url), "minimize", 10, 1)
while not go.exists():
    time.sleep(0.01)
for i in range(n):
    trial = study.ask()
    for step in range(1, 4):
        trial.report(float(i + step), step)
    study.tell(trial, float(i))
"""


def test_two_trials_writing_to_the_study_at_once_lose_nothing(tmp_path):
    url = f"journal:{tmp_path / 'study.journal'}"
    go = tmp_path / "go"
    n = 40
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, url, str(go), str(n)], env=env())
             for _ in range(2)]
    time.sleep(3)  # both have imported optuna and opened the study
    go.touch()
    assert [p.wait(timeout=240) for p in procs] == [0, 0]
    import optuna

    study = optuna.load_study(study_name="s", storage=search.open_storage(url))
    trials = study.get_trials()
    assert len(trials) == 2 * n
    assert len({t.number for t in trials}) == 2 * n
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    assert all(len(t.intermediate_values) == 3 for t in trials)


def test_a_trial_whose_process_vanished_is_told_failed(tmp_path):
    import optuna

    root = tmp_path / "runs"
    spec = Search(trials=1, params={"lora.r": [4, 8]})
    url = search.storage_url(root, "s", spec)
    study = search.open_study("s", spec, search.open_storage(url), "minimize", 10, 1)
    trial = study.ask()
    run_dir = runs.new_run_dir(root, "s")
    block = {"number": trial.number, "metric": "perplexity"}
    (run_dir / runs.CONFIG).write_text(json.dumps({"trial": block}))
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    runs.write_status(run_dir, state="running", pid=dead.pid, pid_start="1")  # killed without a word
    assert search.reconcile(study, root, "s") == ["s#1"]
    assert study.get_trials()[0].state == optuna.trial.TrialState.FAIL


# --- real studies through the queue -------------------------------------------------------------

STUDY = """
[experiments.lr-search]
extends = "base"
[experiments.lr-search.search]
trials = {trials}
metric = "perplexity"
pruner = "median"
seed = 4  # the first 5 trials' median lr is ~3e-2, three of the next 5 sample ~1e-5: behind, pruned
params."train.learning_rate" = {{ low = 1e-5, high = 1e-1, log = true }}
params."lora.r" = [4, 8]
"""


@pytest.fixture(scope="module")
def study10(tmp_path_factory):
    project = write_project(tmp_path_factory.mktemp("study"), STUDY.format(trials=10))
    done = workbench(project, "run", "lr-search")
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("queued lr-search#") == 10
    wait_until_done(project, "lr-search", 10)
    return project


@pytest.mark.slow
def test_median_pruner_prunes_some_trials_and_the_rest_finish(study10):
    import optuna

    trials = search.trial_runs(study10 / "runs", "lr-search")
    states = [r.state for r in trials]
    assert len(trials) == 10
    assert states.count("pruned") >= 1, states
    assert states.count("finished") == 10 - states.count("pruned"), states
    study = load_study(study10, "lr-search")
    by_number = {t.number: t for t in study.get_trials()}
    for run in trials:
        block = runs.read_config(run.path)["trial"]
        trial = by_number[block["number"]]
        assert run.status["trial"] == block["number"]
        for path, value in block["params"].items():  # the sampled values are the run's config
            head, key = path.split(".")
            assert runs.read_config(run.path)["experiment"][head][key] == value == trial.params[path]
        if run.state == "pruned":
            assert trial.state == optuna.trial.TrialState.PRUNED
            step = run.status["pruned_step"]
            assert step in trial.intermediate_values and run.status["step"] < 4
        else:
            assert trial.state == optuna.trial.TrialState.COMPLETE
            assert trial.value == run.status["final"]["perplexity"]
    shown = workbench(study10, "results", "lr-search")
    pruned = next(r for r in trials if r.state == "pruned")
    assert f"pruned at step {pruned.status['pruned_step']}" in shown.stdout
    assert "failed" not in shown.stdout


@pytest.mark.slow
def test_the_studys_best_value_is_the_best_finished_runs_metric(study10):
    trials = search.trial_runs(study10 / "runs", "lr-search")
    finished = [r for r in trials if r.state == "finished"]
    best_run = min(finished, key=lambda r: r.status["final"]["perplexity"])
    study = load_study(study10, "lr-search")
    assert study.best_value == best_run.status["final"]["perplexity"]
    assert study.best_trial.user_attrs["run"] == best_run.ref
    shown = json.loads(workbench(study10, "results", "lr-search", "--json").stdout)
    assert shown["best"]["run"] == best_run.ref and shown["best"]["value"] == study.best_value
    assert [t["run"] for t in shown["trials"] if t["best"]] == [best_run.ref]
    view = study_view(study10 / "runs", "lr-search")
    assert view is not None and view.best_so_far()[-1][1] == study.best_value


@pytest.mark.slow
def test_report_adds_the_trials_table_plots_and_importances(study10, tmp_path):
    done = workbench(study10, "report", "lr-search", "--no-generate", "-o", str(tmp_path / "rep"))
    assert done.returncode == 0, done.stderr
    text = (tmp_path / "rep" / "report.md").read_text()
    assert "## Study lr-search" in text and "pruned at step" in text
    for png in ("study_best_so_far.png", "study_param_train_learning_rate.png", "study_param_lora_r.png"):
        assert (tmp_path / "rep" / png).stat().st_size > 1000 and f"]({png})" in text
    assert "### Parameter importances" in text and "| train.learning_rate |" in text


@pytest.mark.slow
def test_raising_trials_adds_only_the_missing_ones(study10):
    toml = study10 / "experiments.toml"
    toml.write_text(toml.read_text().replace("trials = 10", "trials = 12"))
    done = workbench(study10, "run", "lr-search")
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("queued lr-search#") == 2
    assert "queued lr-search#11" in done.stdout and "queued lr-search#12" in done.stdout
    trials = wait_until_done(study10, "lr-search", 12)
    assert len(trials) == 12 and len(load_study(study10, "lr-search").get_trials()) == 12
    again = workbench(study10, "run", "lr-search")  # nothing missing: nothing added
    assert again.returncode == 0 and "queued" not in again.stdout.replace("0 trial(s) queued", "")


CRASH = """
[experiments.crashy]
extends = "base"
[experiments.crashy.search]
trials = 3
pruner = "none"
seed = 7
params."data.column" = ["greentexts", "no-such-column"]
"""


@pytest.mark.slow
def test_a_crashing_trial_is_recorded_failed_and_the_study_goes_on(tmp_path):
    import optuna

    project = write_project(tmp_path, CRASH)
    assert workbench(project, "run", "crashy").returncode == 0
    trials = wait_until_done(project, "crashy", 3)
    columns = [runs.read_config(r.path)["trial"]["params"]["data.column"] for r in trials]
    assert columns[0] == "no-such-column" and "greentexts" in columns[1:]  # the seed's order
    study = {t.number: t for t in load_study(project, "crashy").get_trials()}
    for run, column in zip(trials, columns, strict=True):
        trial = study[runs.read_config(run.path)["trial"]["number"]]
        if column == "no-such-column":
            assert run.state == "failed"
            assert trial.state == optuna.trial.TrialState.FAIL
        else:
            assert run.state == "finished"
            assert trial.state == optuna.trial.TrialState.COMPLETE
    shown = workbench(project, "results", "crashy").stdout
    assert "failed" in shown and "finished" in shown


def test_pruned_is_a_state_of_its_own_with_its_step():
    from workbench.present import state_text, state_word
    from workbench.widgets.format import state_badge

    status = {"state": "pruned", "pruned_step": 40, "step": 41, "max_steps": 100}
    assert state_text(status) == "pruned at step 40" and state_word(status) == "pruned"
    assert str(state_badge(status)) == "✂ pruned 40"
