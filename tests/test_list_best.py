"""``workbench list``: the latest run's state beside the experiment's best result over all its runs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from cli_project import TINY_TOML

from workbench import runs


def test_list_keeps_an_older_runs_result_when_the_latest_was_stopped(tmp_path: Path) -> None:
    (tmp_path / "experiments.toml").write_text(TINY_TOML)
    root = tmp_path / "runs"
    for run_id, fields in (("1", {"state": "failed", "best_perplexity": 301.5}),
                           ("2", {"state": "finished", "best_perplexity": 263.64, "best_bits_per_byte": 1.9}),
                           ("3", {"state": "stopped", "step": 3})):
        path = root / "tiny" / run_id
        path.mkdir(parents=True)
        (path / runs.CONFIG).write_text('{"experiment": {"name": "tiny", "backend": "tiny"}}')
        runs.write_status(path, max_steps=10, **fields)
    proc = subprocess.run([sys.executable, "-m", "workbench.cli", "list"], cwd=tmp_path, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    header, row = proc.stdout.splitlines()[:2]
    assert "best held-out ppl" in header and "best bits/byte" in header
    assert "tiny#3" in row and "stopped" in row
    assert "263.640 (#2)" in row and "1.9000 (#2)" in row  # not the failed run's worse 301.5


def test_report_notes_a_run_with_no_samples_yet(tmp_path: Path) -> None:
    toml = TINY_TOML.replace("[defaults]\n", '[defaults]\nprompts = [">be me"]\n')
    (tmp_path / "experiments.toml").write_text(toml)
    root = tmp_path / "runs"
    for run_id, sampled in (("1", True), ("2", False)):
        path = root / "tiny" / run_id
        path.mkdir(parents=True)
        (path / runs.CONFIG).write_text(
            '{"experiment": {"name": "tiny", "backend": "tiny", "prompts": [">be me"]}}')
        runs.write_status(path, state="finished" if sampled else "stopped", step=4, max_steps=10)
        if sampled:
            runs.append_event(path, "sample", step=4, prompt=">be me", checkpoint="final", text="hello",
                              index=0, seed=1234)
    proc = subprocess.run([sys.executable, "-m", "workbench.cli", "report", "tiny#1", "tiny#2",
                           "--no-generate", "-o", str(tmp_path / "out")], cwd=tmp_path, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    text = (tmp_path / "out" / "report.md").read_text()
    samples = text[text.index("## Samples"):]
    assert "**tiny#1 · step 4**" in samples and "hello" in samples
    assert "**tiny#2**\n\n*no samples yet" in samples
