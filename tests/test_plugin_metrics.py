"""A third-party evaluator's metric on every CLI surface, through a real second distribution.

The fixture builds a small distribution (``workbench-greentext-plugin``) and
installs it with pip into a folder put on ``PYTHONPATH``: workbench finds it
through the ``workbench`` entry-point group like any installed plugin. Its
``greentext`` evaluator declares ``greentext-format`` (higher is better) and
returns 0.93 for LoRA r 4 and 0.41 otherwise; its ``flaky`` evaluator raises.
Two tiny runs are trained for real with ``workbench run a b --follow``.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from trained_runs import DATA, quiet_env

PLUGIN = '''
from workbench.api import Evaluator, Metric, hookimpl

GREENTEXT = Metric("greentext-format", "greentext fmt", better="higher", format=".2f")


def greentext(ctx):
    return {"greentext-format": 0.93 if ctx.experiment.lora.r == 4 else 0.41}


def flaky(ctx):
    raise RuntimeError("boom: the judge is unreachable")


@hookimpl
def register_evaluators(register):
    register(Evaluator(name="greentext", compute=greentext, metrics=(GREENTEXT,)))
    register(Evaluator(name="flaky", compute=flaky,
                       metrics=(Metric("judge", "judge", better="higher"),)))
'''

PYPROJECT = '''
[build-system]
requires = ["setuptools>=61"]
build-backend = "setuptools.build_meta"

[project]
name = "workbench-greentext-plugin"
version = "0.1"

[project.entry-points.workbench]
greentext = "wb_greentext"

[tool.setuptools]
py-modules = ["wb_greentext"]
'''

TOML = """
[defaults]
backend = "tiny"
model = "{model}"
prompts = [">be me\\n>"]
evaluators = ["perplexity", "bits_per_byte", "greentext", "flaky"]
[defaults.train]
steps = 4
batch_size = 8
max_length = 48
eval_every = 2
save_every = 4
[defaults.data]
source = "{data}"
column = "greentexts"
train_split = "train[:32]"
eval_split = "test[:8]"
[experiments.a]
lora.r = 4
[experiments.b]
lora.r = 8
"""


@pytest.fixture(scope="module")
def plugin_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The plugin distribution, installed by pip into its own site folder."""
    src = tmp_path_factory.mktemp("greentext-plugin")
    (src / "pyproject.toml").write_text(PYPROJECT)
    (src / "wb_greentext.py").write_text(textwrap.dedent(PLUGIN))
    site = tmp_path_factory.mktemp("site")
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index",
                    "--no-build-isolation", "--target", str(site), str(src)], check=True)
    assert list(site.glob("workbench_greentext_plugin-0.1.dist-info"))
    return site


class Study:
    def __init__(self, base: Path, env: dict[str, str], follow: str) -> None:
        self.base, self.env, self.follow = base, env, follow

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run([sys.executable, "-m", "workbench.cli", *args], cwd=self.base, env=self.env,
                              capture_output=True, text=True, timeout=300)
        if check:
            assert proc.returncode == 0, proc.stderr
        return proc


@pytest.fixture(scope="module")
def study(tmp_path_factory, tiny_llama_dir, plugin_site) -> Study:
    base = tmp_path_factory.mktemp("study")
    (base / "experiments.toml").write_text(TOML.format(model=tiny_llama_dir, data=DATA))
    env = dict(quiet_env(base / "cache"), PYTHONPATH=str(plugin_site))
    proc = subprocess.run([sys.executable, "-m", "workbench.cli", "run", "a", "b", "--follow"], cwd=base,
                          env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return Study(base, env, proc.stdout)


def test_the_plugin_loads_from_its_distribution(study):
    out = study.cli("plugins", check=False).stdout
    assert re.search(r"evaluator\s+greentext\s+greentext\s+workbench-greentext-plugin 0.1", out)


def test_follow_and_train_log_show_the_metric(study):
    assert "greentext fmt 0.93" in study.follow
    assert "greentext fmt 0.41" in study.follow
    assert "evaluator 'flaky' failed" in study.follow
    log = (study.base / "runs" / "a" / "1" / "train.log").read_text()
    line = r"eval step 4  eval_loss \d+\.\d{4} .*held-out ppl \d+\.\d{3} .*greentext fmt 0\.93"
    assert re.search(line, log)


def test_status_shows_the_metric_and_the_evaluator_warning(study):
    out = study.cli("status", "a#1").stdout
    assert "greentext fmt: best 0.93 (step 2), final 0.93" in out
    assert "warning: evaluator 'flaky' failed at step 4: RuntimeError: boom: the judge is unreachable" in out
    table = study.cli("status").stdout
    assert "greentext fmt" in table.splitlines()[0]


def test_results_table_and_json_carry_every_metric(study):
    out = study.cli("results").stdout
    header = out.splitlines()[0]
    assert "greentext fmt" in header and "held-out ppl" in header
    assert "★ 0.93" in out  # higher is better: r=4's 0.93 is marked
    assert "a#1: warning: evaluator 'flaky' failed" in out
    rows = {r["run"]: r for r in json.loads(study.cli("results", "--json").stdout)}
    assert rows["a#1"]["metrics"]["greentext-format"]["best"] == 0.93
    assert rows["a#1"]["metrics"]["greentext-format"]["better"] == "higher"
    assert rows["b#1"]["greentext-format"] == 0.41
    assert "greentext-format" in rows["a#1"]["best"] and "greentext-format" not in rows["b#1"]["best"]
    assert any("flaky" in w for w in rows["a#1"]["warnings"])


def test_sorting_follows_the_declared_direction(study):
    rows = json.loads(study.cli("results", "--json", "--sort", "greentext-format").stdout)
    order = [r["run"] for r in rows]
    assert order == ["a#1", "b#1"]  # higher first
    rev = json.loads(study.cli("results", "--json", "--sort", "greentext-format", "--reverse").stdout)
    assert [r["run"] for r in rev] == ["b#1", "a#1"]
    bad = study.cli("results", "--sort", "nope", check=False)
    assert bad.returncode == 2 and "unknown column 'nope'" in bad.stderr and "greentext-format" in bad.stderr


def test_report_has_a_column_and_a_plot_per_metric(study, tmp_path):
    study.cli("report", "--no-generate", "-o", str(tmp_path / "rep"))
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "greentext fmt" in md and "**0.93**" in md
    assert "![greentext fmt](metric_greentext-format.png)" in md
    assert (tmp_path / "rep" / "metric_greentext-format.png").read_bytes().startswith(b"\x89PNG")
    assert "evaluator 'flaky' failed" in md


def _cells(line: str) -> list[str]:
    return re.split(r"\s{2,}", line.strip())


def test_status_and_results_agree_on_every_number(study):
    """Both tables come from one RunView: the same run shows the same numbers in both."""
    status = study.cli("status").stdout.splitlines()
    res = study.cli("results").stdout.splitlines()
    s_head, r_head = _cells(status[0]), _cells(res[0])
    shared = [h for h in s_head if h in r_head and h not in ("run", "state")]
    assert {"held-out ppl", "bits/byte", "greentext fmt", "tok/s", "train time"} <= set(shared)
    s_rows = {_cells(x)[0]: dict(zip(s_head, _cells(x), strict=False)) for x in status[1:]}
    r_rows = {}
    for line in res[1:]:
        cells = [c.replace("★ ", "") for c in _cells(line)]
        if cells[0] in s_rows:
            r_rows[cells[0]] = dict(zip(r_head, cells, strict=False))
    assert set(r_rows) == {"a#1", "b#1"}
    for run, row in r_rows.items():
        for h in shared:
            assert s_rows[run][h] == row[h], (run, h)
