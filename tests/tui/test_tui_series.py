"""Metric series built incrementally, the resume cut, and drawing-only downsampling."""

from __future__ import annotations

import math

from workbench import runs
from workbench.series import RunSeries, downsample


def test_downsample_keeps_ends_and_spikes() -> None:
    points = [(float(i), math.sin(i / 50)) for i in range(10_000)]
    points[5_000] = (5_000.0, 40.0)  # a loss spike
    thin = downsample(points, 100)
    assert len(thin) <= 2 * 100 + 2
    assert thin[0] == points[0] and thin[-1] == points[-1]
    assert (5_000.0, 40.0) in thin
    assert [x for x, _ in thin] == sorted(x for x, _ in thin)


def test_downsample_short_series_untouched() -> None:
    points = [(1.0, 2.0), (2.0, 3.0)]
    assert downsample(points, 50) == points


def test_resume_cut_matches_effective(tmp_path) -> None:
    for step in range(1, 31):
        runs.append_event(tmp_path, "train", step=step, loss=1.0 / step, time=float(step))
        if step % 10 == 0:
            runs.append_event(tmp_path, "eval", step=step, perplexity=10.0 - step / 10, bits_per_byte=1.0)
    runs.append_event(tmp_path, "resume", from_step=20)  # steps 21..30 were lost with the process
    for step in range(21, 26):
        runs.append_event(tmp_path, "train", step=step, loss=2.0 / step, time=100.0 + step)
    events = runs.read_events(tmp_path)
    series = RunSeries()
    # fed in uneven batches, as a tail delivers them
    series.ingest(events[:7])
    series.ingest(events[7:33])
    series.ingest(events[33:])
    kept = [(e["step"], e["loss"]) for e in runs.effective(events) if e["type"] == "train"]
    assert series.loss == kept
    assert [s for s, _ in series.perplexity] == [10, 20]
    assert series.step == 25
    assert series.steps_per_second() == 1.0  # only the post-resume events count


def test_latest_samples_are_the_last_checkpoints() -> None:
    series = RunSeries()
    series.ingest([{"type": "sample", "step": 10, "text": "a", "index": 0},
                   {"type": "sample", "step": 20, "text": "b", "index": 0},
                   {"type": "sample", "step": 20, "text": "c", "index": 1}])
    assert [s["text"] for s in series.latest_samples()] == ["b", "c"]
