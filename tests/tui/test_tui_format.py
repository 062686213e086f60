"""Text helpers of the widgets: state badges, ticks, names, config and diff text, progress."""

from __future__ import annotations

from pathlib import Path

from workbench import config
from workbench.widgets.details import config_text, diff_text
from workbench.widgets.experiments import shorten
from workbench.widgets.format import compact, log_ticks, nice_ticks, state_badge, stopping
from workbench.widgets.progress import Progress, bar


def test_state_badges() -> None:
    assert state_badge(None).plain == "·"
    assert state_badge({"state": "running", "step": 212, "max_steps": 500}).plain == "● 212/500"
    assert state_badge({"state": "running", "step": 212, "max_steps": 500}, short=True).plain == "● 212"
    assert state_badge({"state": "finished"}).plain == "✓ finished"  # the CLI's word
    assert state_badge({"state": "failed", "error_kind": "oom"}).plain == "✗ OOM"
    assert state_badge({"state": "failed", "error_kind": "vanished"}).plain == "✗ vanished"
    assert state_badge({"state": "failed"}).plain == "✗ error"
    assert state_badge({"state": "stopped", "cancelled": True}).plain == "■ cancelled"  # as the CLI says
    assert state_badge({"state": "stopped", "step": 13}).plain == "■ stopped 13"
    assert state_badge({"state": "stopped", "cancelled": True}).plain == "■ cancelled"
    assert state_badge({"state": "queued"}, position=2).plain == "◌ queued 2"


def test_stopping_ignores_a_request_older_than_the_resume() -> None:
    assert stopping({"state": "running", "stop_requested": 10.0, "launched": 5.0})
    assert not stopping({"state": "running", "stop_requested": 10.0, "launched": 20.0})
    assert not stopping({"state": "stopped", "stop_requested": 10.0})
    resumed = {"state": "running", "step": 3, "max_steps": 9, "stop_requested": 1.0, "launched": 2.0}
    badge = state_badge(resumed)
    assert badge.plain == "● 3/9"


def test_ticks_and_labels() -> None:
    assert nice_ticks(0, 500, 5) == [0, 100, 200, 300, 400, 500]
    assert nice_ticks(0.52, 3.0, 5) == [1.0, 1.5, 2.0, 2.5, 3.0]
    ticks = log_ticks(50, 30000)
    assert 2 <= len(ticks) <= 6 and all(50 <= t <= 30000 for t in ticks) and 1000 in ticks
    assert [compact(v) for v in (0.123, 4.5, 78.9, 420.0, 12_000.0, 5_600_000.0)] == \
        ["0.123", "4.5", "78.9", "420", "12k", "5.6M"]


def test_shorten_keeps_the_end() -> None:
    assert shorten("sweep-learning_rate0.001", 12) == "swe…ate0.001"
    assert shorten("alpha", 12) == "alpha"
    assert len(shorten("x" * 40, 15)) == 15


def test_diff_text_names_parent_and_changes() -> None:
    text = diff_text("ablation-a", "baseline", [("lora.r", 4, 8)]).plain
    assert "ablation-a extends baseline: only 1 setting differs" in text
    assert "lora.r  4  →  8" in text
    assert "extends nothing" in diff_text("baseline", None, None).plain
    matrix = diff_text("r-sweep-r8", "tiny", [("lora.r", 4, 8)], matrix_base="r-sweep").plain
    assert "one entry of the matrix 'r-sweep'" in matrix


def test_config_text_of_the_repo_experiments() -> None:
    cfg = config.load(Path(__file__).parents[2] / "experiments.toml")
    text = config_text(cfg.get("ablation-a").model_dump(mode="json"), "HuggingFaceTB/SmolLM-135M").plain
    assert 'backend = "smollm"' in text
    assert "model = (backend default: HuggingFaceTB/SmolLM-135M)" in text
    assert "[lora]" in text and "  r = 8" in text
    assert cfg.parent_name("r-sweep-r8") == "tiny"  # through the matrix table


def test_progress_bar() -> None:
    assert bar(0.5, 10) == "█████     "
    assert bar(1.0, 4) == "████"
    assert bar(0.0, 3) == "   "
    assert Progress(step=212, max_steps=500).fraction == 0.424
