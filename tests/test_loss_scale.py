"""fp16 skipped steps counted from a real grad scaler (torch's CPU GradScaler works the same)."""

from __future__ import annotations

import torch

from workbench.train.loss_scale import LossScaleWatch


def test_each_overflow_is_one_skipped_step_and_the_weights_stay_put():
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)
    weight = torch.nn.Parameter(torch.ones(3))
    optimizer = torch.optim.SGD([weight], lr=0.1)
    watch = LossScaleWatch(scaler)
    reports = []
    for step, factor in enumerate([1.0, float("inf"), 1.0, float("nan"), 1.0], start=1):
        optimizer.zero_grad()
        scaler.scale((weight * factor).sum()).backward()
        before = weight.detach().clone()
        scaler.step(optimizer)
        scaler.update()
        skipped = watch.observe(step)
        reports.append(skipped)
        assert torch.equal(weight.detach(), before) == (skipped is not None)
    assert [r.step for r in reports if r] == [2, 4]
    assert (reports[1].scale_before, reports[1].scale_after) == (1024.0, 512.0)
    assert "step 4 skipped" in reports[3].message() and "2 skipped so far" in reports[3].message()
    assert watch.fields() == {"loss_scale": 256.0, "skipped_steps": 2}


def test_no_scaler_no_report():
    watch = LossScaleWatch(None)
    assert watch.observe(1) is None and watch.fields() == {} and not watch.active
    disabled = LossScaleWatch(torch.amp.GradScaler("cpu", enabled=False))
    assert disabled.observe(1) is None and disabled.fields() == {}


def test_the_run_panel_says_how_many_steps_fp16_skipped(tmp_path):
    from workbench.runs import Run
    from workbench.widgets.run_panel import banner_text

    status = {"state": "running", "step": 50, "skipped_steps": 3, "loss_scale": 8192.0}
    text = banner_text(Run("x", "1", tmp_path, status), None, [])
    assert text is not None and "3 steps skipped" in text.plain and "8192" in text.plain
    assert banner_text(Run("x", "1", tmp_path, {"state": "running", "step": 50}), None, []) is None
