"""experiments.toml: defaults, extends, matrices, and one clear message per mistake."""

from __future__ import annotations

from pathlib import Path

import pytest

from workbench import config
from workbench.config import ConfigError

ROOT = Path(__file__).resolve().parents[1]

BASE = """
[defaults]
backend = "smollm"
[defaults.data]
source = "data.jsonl"
column = "text"
train_split = "train[:100]"
eval_split = "train[100:150]"
"""


def load(text: str, tmp_path: Path) -> config.Config:
    path = tmp_path / "experiments.toml"
    path.write_text(text)
    return config.load(path)


def error(text: str, tmp_path: Path) -> str:
    with pytest.raises(ConfigError) as exc:
        load(text, tmp_path)
    message = str(exc.value)
    assert "\n" not in message, "errors are one line"
    assert str(tmp_path / "experiments.toml") in message, "errors name the file"
    return message


def test_shipped_study_reproduces_the_seed_settings():
    cfg = config.load(ROOT / "experiments.toml")
    base = cfg.get("baseline")
    assert (base.backend, base.lora.r, base.lora.dropout) == ("smollm", 4, 0.05)
    assert (base.train.steps, base.train.batch_size, base.train.learning_rate) == (500, 4, 2e-4)
    assert (base.data.source, base.data.column) == ("maxmyn/wholesome_greentext_110k", "greentexts")
    assert (base.sampling.temperature, base.sampling.top_p) == (0.7, 0.9)
    assert base.prompts[0].startswith(">Imagine being able to fly\n")
    assert cfg.get("ablation-b").backend == "gpt2"
    alphas = {cfg.get(n).lora.alpha for n in ("baseline", "ablation-a", "ablation-b")}
    assert len(alphas) == 1, "one fixed lora_alpha for all three"


@pytest.mark.parametrize("name", ["ablation-a", "ablation-b"])
def test_each_shipped_ablation_changes_exactly_one_thing(name):
    cfg = config.load(ROOT / "experiments.toml")
    changes = config.diff(cfg.parent_of(name), cfg.get(name))
    assert len(changes) == 1, changes


def test_shipped_held_out_slices_are_disjoint_from_training():
    cfg = config.load(ROOT / "experiments.toml")
    for exp in cfg.experiments.values():
        assert config.disjoint_problem(exp) is None
        assert exp.data.train_split != exp.data.eval_split


def test_shipped_offline_experiments_use_the_bundled_sample():
    cfg = config.load(ROOT / "experiments.toml")
    for name in ("tiny", "offline-smollm2"):
        source = Path(cfg.get(name).data.source)
        assert (source / "train.jsonl").is_file() and (source / "test.jsonl").is_file()
    rows = (ROOT / "workbench/data/greentext/train.jsonl").read_text().splitlines()
    held = (ROOT / "workbench/data/greentext/test.jsonl").read_text().splitlines()
    assert len(rows) + len(held) >= 150
    assert not set(rows) & set(held)


def test_defaults_extends_and_overrides(tmp_path):
    cfg = load(BASE + """
[defaults.lora]
r = 4
[experiments.a]
train.steps = 10
[experiments.b]
extends = "a"
lora.r = 8
""", tmp_path)
    a, b = cfg.get("a"), cfg.get("b")
    assert (a.lora.r, a.train.steps) == (4, 10)
    assert (b.lora.r, b.train.steps) == (8, 10)
    assert cfg.parent_of("b") == a
    assert config.diff(a, b) == [("lora.r", 4, 8)]


def test_matrix_expands_with_stable_names(tmp_path):
    cfg = load(BASE + """
[experiments.sweep]
matrix = { "lora.r" = [4, 8], "train.learning_rate" = [1e-4, 2e-4] }
""", tmp_path)
    assert list(cfg.experiments) == [
        "sweep-r4-learning_rate0.0001", "sweep-r4-learning_rate0.0002",
        "sweep-r8-learning_rate0.0001", "sweep-r8-learning_rate0.0002",
    ]
    assert cfg.get("sweep-r8-learning_rate0.0002").lora.r == 8
    assert cfg.parents["sweep-r4-learning_rate0.0001"] == "sweep"


def test_relative_local_paths_resolve_against_the_toml(tmp_path):
    (tmp_path / "data.jsonl").write_text('{"text": "x"}\n')
    cfg = load(BASE + "[experiments.a]\n", tmp_path)
    assert cfg.get("a").data.source == str(tmp_path / "data.jsonl")


def test_malformed_toml_names_file_line_and_column(tmp_path):
    message = error("[experiments.a]\nbackend = \n", tmp_path)
    assert ":2:" in message and "invalid TOML" in message


def test_unknown_key_suggests_the_closest(tmp_path):
    message = error(BASE + "[experiments.a]\ntrain.save_evry = 8\n", tmp_path)
    assert "experiments.a.train.save_evry" in message and "unknown key" in message
    assert message.endswith("(did you mean 'save_every'?)"), message  # not eval_every


def test_unknown_key_with_nothing_close_suggests_nothing(tmp_path):
    message = error(BASE + "[experiments.a]\nlora.rank = 8\n", tmp_path)
    assert "experiments.a.lora.rank" in message and "unknown key" in message
    assert "did you mean" not in message


def test_misspelt_top_level_key(tmp_path):
    message = error("experimnets = 3\n" + BASE + "[experiments.a]\n", tmp_path)
    assert "experimnets: unknown top-level key" in message and "did you mean 'experiments'" in message


def test_max_parallel_from_the_file(tmp_path):
    assert load("max_parallel = 3\n" + BASE + "[experiments.a]\n", tmp_path).max_parallel == 3
    assert load(BASE + "[experiments.a]\n", tmp_path).max_parallel is None
    assert "max_parallel" in error("max_parallel = 0\n" + BASE + "[experiments.a]\n", tmp_path)


def test_misspelt_key_gets_did_you_mean(tmp_path):
    message = error(BASE + "[experiments.a]\ntrain.setps = 8\n", tmp_path)
    assert "experiments.a.train.setps" in message and "did you mean 'steps'" in message


def test_unknown_key_in_defaults(tmp_path):
    message = error(BASE + "[defaults.sampling]\ntemprature = 1.0\n[experiments.a]\n", tmp_path)
    assert "defaults.sampling.temprature" in message and "'temperature'" in message


def test_wrong_type(tmp_path):
    message = error(BASE + '[experiments.a]\ntrain.steps = "many"\n', tmp_path)
    assert "experiments.a.train.steps" in message and "whole number" in message


def test_negative_step_count(tmp_path):
    message = error(BASE + "[experiments.a]\ntrain.steps = -5\n", tmp_path)
    assert "experiments.a.train.steps" in message and "greater than 0" in message


def test_bad_value_inherited_from_defaults_points_at_defaults(tmp_path):
    message = error(BASE + "[defaults.train]\nsteps = 0\n[experiments.a]\n", tmp_path)
    assert "defaults.train.steps" in message


def test_extends_cycle(tmp_path):
    message = error(BASE + '[experiments.a]\nextends = "b"\n[experiments.b]\nextends = "a"\n', tmp_path)
    assert "extends cycle" in message and ("a -> b -> a" in message or "b -> a -> b" in message)


def test_extends_unknown_experiment(tmp_path):
    message = error(BASE + '[experiments.baseline]\n[experiments.a]\nextends = "baselin"\n', tmp_path)
    assert "experiments.a.extends" in message and "did you mean 'baseline'" in message


def test_overlapping_held_out_split_is_rejected(tmp_path):
    message = error(BASE + '[experiments.a]\ndata.eval_split = "train[50:120]"\n', tmp_path)
    assert "data.eval_split" in message and "overlap" in message


def test_unknown_matrix_key(tmp_path):
    message = error(BASE + '[experiments.a]\nmatrix = { "lora.rr" = [1, 2] }\n', tmp_path)
    assert "experiments.a.matrix.lora.rr" in message and "did you mean 'r'" in message


def test_bad_experiment_name(tmp_path):
    message = error(BASE + '[experiments."../escape"]\n', tmp_path)
    assert "letters, digits" in message


def test_unknown_backend_and_evaluator(tmp_path):
    cfg = load(BASE + '[experiments.a]\nbackend = "smolm"\n', tmp_path)
    expected = r"experiments.a.backend: unknown backend 'smolm' \(did you mean 'smollm'"
    with pytest.raises(ConfigError, match=expected):
        config.check_plugins(cfg, {"smollm", "gpt2"}, {"perplexity"})
    cfg = load(BASE + '[experiments.a]\nevaluators = ["perplexty"]\n', tmp_path)
    with pytest.raises(ConfigError, match=r"evaluators\[0\]: unknown evaluator 'perplexty' \(did you mean"):
        config.check_plugins(cfg, {"smollm"}, {"perplexity"})


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="file not found"):
        config.load(tmp_path / "nope.toml")
