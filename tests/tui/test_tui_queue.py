"""The queue through the TUI: queued runs show their position, and closing and reopening
the TUI while runs wait changes nothing about the queue (it lives in its own process)."""

from __future__ import annotations

from helpers import ready, screen_text, state_of, until

from workbench import launch, queue, runs


async def test_queue_survives_a_tui_restart(workspace, monkeypatch) -> None:
    monkeypatch.setenv("FAKE_STEP_S", "0.03")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")  # a CPU-only machine: one run at a time
    workspace.toml.write_text(workspace.toml.read_text().replace("steps = 40", "steps = 150"))
    app = workspace.app()
    async with app.run_test(size=(120, 40)) as pilot:
        await ready(pilot)
        await pilot.press("space", "space", "r")  # mark alpha and beta, run them
        await until(pilot, lambda: (state_of(app, "alpha"), state_of(app, "beta")) == ("running", "queued"),
                    timeout=15, what="alpha running, beta queued")
        assert "queued 1" in screen_text(app)
    # the TUI is gone; the queue is not
    beta = runs.resolve(workspace.root, "beta#1")
    assert beta.state == "queued" and queue.position(workspace.root, beta) == 1
    again = workspace.app()
    async with again.run_test(size=(120, 40)) as pilot:
        await ready(pilot)
        assert state_of(again, "beta") in ("queued", "running")
        await until(pilot, lambda: state_of(again, "alpha") == "finished", timeout=30, what="alpha done")
        await until(pilot, lambda: state_of(again, "beta") in ("running", "finished"), timeout=15,
                    what="beta started by the queue while the new TUI watched")
    launch.wait(runs.resolve(workspace.root, "beta#1"), timeout=30)
    assert runs.resolve(workspace.root, "beta#1").state == "finished"
