"""Bad input through the real command: one line on stderr, exit 2, no traceback, nothing lost."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

GOOD = """
[defaults]
backend = "tiny"
[defaults.data]
source = "data.jsonl"
column = "text"
train_split = "train[:10]"
eval_split = "train[10:20]"
[experiments.a]
"""


def workbench(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    return subprocess.run([sys.executable, "-m", "workbench.cli", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=60)


def check_error(result: subprocess.CompletedProcess, *needles: str) -> None:
    assert result.returncode == 2, result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    for needle in needles:
        assert needle in lines[0]


@pytest.mark.parametrize(("toml", "needles"), [
    ("[experiments.a\n", ("experiments.toml:1:", "invalid TOML")),
    (GOOD + "lora.alhpa = 3\n", ("experiments.a.lora.alhpa", "unknown key", "did you mean 'alpha'")),
    (GOOD + "train.steps = -1\n", ("experiments.a.train.steps", "greater than 0")),
    (GOOD + 'backend = "gtp2"\n', ("experiments.a.backend", "unknown backend 'gtp2'", "did you mean 'gpt2'")),
    (GOOD + 'evaluators = ["bpb"]\n', ("experiments.a.evaluators[0]", "unknown evaluator 'bpb'")),
    (GOOD + 'extends = "b"\n[experiments.b]\nextends = "a"\n', ("extends cycle",)),
])
def test_bad_toml_is_one_clear_line(tmp_path, toml, needles):
    (tmp_path / "experiments.toml").write_text(toml)
    (tmp_path / "runs" / "a" / "1").mkdir(parents=True)
    keep = tmp_path / "runs" / "a" / "1" / "status.json"
    keep.write_text('{"state": "finished"}')
    check_error(workbench("run", "a", cwd=tmp_path), *needles)
    assert keep.read_text() == '{"state": "finished"}', "nothing already on disk is lost"
    assert sorted(p.name for p in (tmp_path / "runs" / "a").iterdir()) == ["1"], "no run was started"


def test_unknown_experiment(tmp_path):
    (tmp_path / "experiments.toml").write_text(GOOD)
    check_error(workbench("run", "b", cwd=tmp_path), "no experiment named 'b'")


def test_unknown_run(tmp_path):
    (tmp_path / "experiments.toml").write_text(GOOD)
    check_error(workbench("status", "a#7", cwd=tmp_path), "no run 'a#7'")
    check_error(workbench("stop", "../../x#1", cwd=tmp_path))


def test_config_flag_and_missing_file(tmp_path):
    check_error(workbench("list", "-c", str(tmp_path / "nope.toml"), cwd=tmp_path), "file not found")


def test_plugins_command_lists_provenance_and_failures(tmp_path):
    (tmp_path / "experiments.toml").write_text(GOOD)
    (tmp_path / "p").mkdir()
    (tmp_path / "p" / "broken.py").write_text("import no_such_module\n")
    result = workbench("plugins", "--plugins-dir", str(tmp_path / "p"), cwd=tmp_path)
    assert result.returncode == 1
    assert "smollm" in result.stdout and "workbench 0.1.0" in result.stdout
    assert "broken" in result.stdout and "ModuleNotFoundError" in result.stdout


def test_validate_says_ok_or_names_the_problem(tmp_path):
    (tmp_path / "experiments.toml").write_text(GOOD + "[experiments.b]\nextends = \"a\"\nlora.r = 16\n")
    result = workbench("validate", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "experiments.toml: 2 experiments OK: a, b"
    (tmp_path / "experiments.toml").write_text(GOOD + 'evaluators = ["perplexity", "bpb"]\n')
    check_error(workbench("validate", cwd=tmp_path), "experiments.a.evaluators[1]", "unknown evaluator 'bpb'")
    assert not (tmp_path / "runs").exists(), "validating starts nothing"
