"""Pilot tests of the compare screen: choosing panes, real streamed generation, save/reopen, grid mode.

Generation is real: the App's generation worker process on the two tiny runs
of ``trained_runs`` (trained once per session, shared with test_generate.py),
one torch thread per process. The snapshots reopen a saved comparison of
hand-written runs instead: no live generation on a snapshot.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import pytest
from helpers import T0, gpu_runner, ready, screen_text, until
from textual.widgets import Input, OptionList

from workbench import comparisons, runs
from workbench.compare_model import printable
from workbench.messages import Generated
from workbench.screens.compare import CompareScreen
from workbench.screens.pick import PickScreen
from workbench.widgets.gen_pane import CURSOR, PaneSource, render_output

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: the shared trained runs
from trained_runs import quiet_env, trained_runs  # noqa: E402

GEN_TIMEOUT = 90.0


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_llama_dir):
    return trained_runs(tmp_path_factory, tiny_llama_dir)


@pytest.fixture(autouse=True)
def _one_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OMP_NUM_THREADS", "1")


def app_for(trained, tmp_path: Path, message_hook=None):
    from workbench.app import make_app

    root, _ = trained
    app = make_app(root.parent / "experiments.toml", runs_dir=root, poll_interval=0.1,
                   generation_env=quiet_env(tmp_path / "cache"))
    return app


async def open_compare(pilot, *experiments: str) -> CompareScreen:
    app = pilot.app
    await ready(pilot)
    await until(pilot, lambda: app.registry is not None, what="plugins")
    await until(pilot, lambda: all(app.runs_by_exp.get(e) for e in experiments), what="the runs")
    app.main.marks = set(experiments)
    await pilot.press("c")
    screen = await until(pilot, lambda: isinstance(app.screen, CompareScreen) and app.screen, what="compare")
    await until(pilot, lambda: len(screen.panes()) == max(2, len(experiments)), what="the panes")
    await pilot.pause()
    return screen


def labels(screen: CompareScreen) -> list[str]:
    return [p.source.label for p in screen.panes()]


def texts(screen: CompareScreen) -> list[list[str]]:
    return [list(p.output.texts) for p in screen.panes()]


async def generate(pilot, screen: CompareScreen, key: str = "g") -> None:
    seq = screen.request_seq
    await pilot.press(key)
    assert screen.request_seq == seq + 1, "generate started"  # a warm worker may already be done
    await until(pilot, lambda: not screen.generating, timeout=GEN_TIMEOUT, what="generation")
    await pilot.pause()


async def pick(pilot, label_start: str) -> None:
    """In the open PickScreen, choose the first entry whose label starts with ``label_start``."""
    modal = await until(pilot, lambda: isinstance(pilot.app.screen, PickScreen) and pilot.app.screen,
                        what="the picker")
    index = next(i for i, (label, _) in enumerate(modal.choices) if label.startswith(label_start))
    modal.query_one(OptionList).highlighted = index
    await pilot.press("enter")
    await until(pilot, lambda: not isinstance(pilot.app.screen, PickScreen), what="the picker to close")
    await pilot.pause()


# --- choosing panes -------------------------------------------------------------------------


async def test_choosing_panes_add_remove_and_cycle_checkpoints(trained, tmp_path) -> None:
    app = app_for(trained, tmp_path)
    async with app.run_test(size=(160, 48)) as pilot:
        screen = await open_compare(pilot, "a", "b")
        # the marked runs, each at its latest adapter; the TOML's sampling and prompt
        assert labels(screen) == ["a#1 · step 4 (final)", "b#1 · step 4 (final)"]
        assert screen.prompt == ">be me\n>"
        assert screen.query_one("#set-max_new_tokens", Input).value == "12"
        assert app.focused is screen.panes()[0]

        await pilot.press("k")  # final -> checkpoint-2 (wraps to the first)
        assert screen.panes()[0].source.checkpoint == "checkpoint-2"
        await pilot.press("k")
        assert labels(screen)[0] == "a#1 · step 4"  # checkpoint-4
        await pilot.press("k")
        assert labels(screen)[0] == "a#1 · step 4 (final)"

        await pilot.press("x")  # two panes: removing one is refused, with a notice
        await pilot.pause()
        assert len(screen.panes()) == 2
        assert any("at least 2 panes" in str(n.message) for n in app._notifications)
        await pilot.press("a")
        await pick(pilot, "base of tiny")
        assert len(screen.panes()) == 3
        screen.panes()[0].focus()
        await pilot.press("x")  # three panes: the focused one (a) goes
        await pilot.pause()
        assert labels(screen)[0] == "b#1 · step 4 (final)" and len(screen.panes()) == 2

        await pilot.press("a")
        await pick(pilot, "a#1")
        assert len(screen.panes()) == 3
        assert labels(screen)[0] == "b#1 · step 4 (final)"
        assert labels(screen)[1].startswith("tiny · ") and labels(screen)[1].endswith("base (untuned)")
        assert labels(screen)[2] == "a#1 · step 4 (final)"
        await pilot.press("a")
        await pick(pilot, "b#1")
        await pilot.press("a")  # a fifth pane is refused
        assert not isinstance(app.screen, PickScreen) and len(screen.panes()) == 4
        await pilot.press("escape")
        assert app.screen is app.main


# --- generating -------------------------------------------------------------------------------


async def test_generate_streams_and_reruns_alike_then_saves_and_reopens(trained, tmp_path) -> None:
    root, trained_by_name = trained
    streamed: list[dict] = []

    def hook(message) -> None:
        if isinstance(message, Generated) and "token" in message.reply:
            streamed.append(message.reply)

    app = app_for(trained, tmp_path)
    async with app.run_test(size=(160, 48), message_hook=hook) as pilot:
        screen = await open_compare(pilot, "a")  # one run: its untuned base next to it
        assert labels(screen)[1] == "a#1 · step 4 (final)" and "base (untuned)" in labels(screen)[0]

        await generate(pilot, screen)
        first = texts(screen)
        assert all(len(t) == 1 and t[0] for t in first), first
        assert first[0] != first[1], "the adapter changes the text"
        panes = {m["pane"] for m in streamed}
        assert len(panes) == 2 and len(streamed) >= 4, "streamed token by token in both panes"
        # same seed and settings as the training's own samples: the very same text
        final = [e["text"] for e in runs.read_events(trained_by_name["a"].path)
                 if e.get("type") == "sample" and e.get("checkpoint") == "final"]
        assert first[1][0] == final[0]
        shown = [render_output(p.output).plain for p in screen.panes()]
        assert shown == [printable(t[0]) for t in first] and not any(CURSOR in t for t in shown)

        await generate(pilot, screen)
        assert texts(screen) == first, "same seed and settings: the same text"

        await generate(pilot, screen, "r")  # regenerate: seed + 1
        assert screen.query_one("#set-seed", Input).value == "1235"
        second = texts(screen)
        assert second != first and all(t[0] for t in second)

        await pilot.press("n")  # 2 samples per pane
        await generate(pilot, screen)
        assert [len(t) for t in texts(screen)] == [2, 2]
        assert [t[0] for t in texts(screen)] == [t[0] for t in second]  # sample 1 keeps seed 1235
        assert "sample 2" in screen_text(app)

        await pilot.press("s")
        saved = await until(pilot, lambda: comparisons.list_saved(root), what="the saved file")
        comparison = saved[0]
        assert comparison.settings["seed"] == 1235 and comparison.settings["n"] == 2
        assert [p.texts for p in comparison.panes] == texts(screen)
        shown = texts(screen)

        await pilot.press("x", "x")  # two panes: each removal refused
        await pilot.pause()
        assert len(screen.panes()) == 2
        await pilot.press("l")
        await pick(pilot, comparison.title[:16])
        await until(pilot, lambda: len(screen.panes()) == 2, what="the reopened panes")
        assert texts(screen) == shown
        assert labels(screen)[1] == "a#1 · step 4 (final)"
        assert screen.n == 2 and screen.query_one("#set-seed", Input).value == "1235"
        # a reopened pane generates again, from its run
        await generate(pilot, screen)
        assert texts(screen) == shown


async def test_grid_mode_fills_cells_and_picks_a_checkpoint(trained, tmp_path) -> None:
    app = app_for(trained, tmp_path)
    async with app.run_test(size=(160, 48)) as pilot:
        screen = await open_compare(pilot, "a", "b")
        await pilot.press("m")
        await until(pilot, lambda: len(screen.grid_cells()) == 6, what="the grid")
        cells = screen.grid_cells()
        assert [c.source.checkpoint for c in cells[:3]] == ["checkpoint-2", "checkpoint-4", "final"]
        assert {c.source.run.ref for c in cells} == {"a#1", "b#1"}
        await generate(pilot, screen)
        assert all(c.output.texts and c.output.texts[0] for c in cells)
        # checkpoint-4 is the final adapter's step: the same weights, the same text
        assert cells[1].output.texts == cells[2].output.texts

        cells[0].focus()
        await pilot.press("enter")
        await pilot.pause()
        assert not screen.grid_mode
        assert screen.panes()[0].source.checkpoint == "checkpoint-2"
        assert screen.panes()[0].output.texts == cells[0].output.texts


async def test_errors_show_in_the_pane_not_as_a_crash(trained, tmp_path) -> None:
    killed: list[int] = []

    def hook(message) -> None:
        # the first streamed token of the long request: kill the worker mid-generation
        if isinstance(message, Generated) and "token" in message.reply and not killed and slow[0]:
            pid = app.generation_client().pid
            if pid:
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)

    slow = [False]
    app = app_for(trained, tmp_path)
    async with app.run_test(size=(160, 48), message_hook=hook) as pilot:
        screen = await open_compare(pilot, "a")
        screen.panes()[1].set_source(PaneSource(run=screen.panes()[1].source.run, checkpoint="checkpoint-99"))
        await generate(pilot, screen)
        base, missing = screen.panes()
        assert base.output.texts and base.output.error is None
        assert missing.output.error and "checkpoint-99" in missing.output.error
        assert "✗" in screen_text(app)

        screen.query_one("#set-max_new_tokens", Input).value = "400"
        slow[0] = True
        await generate(pilot, screen)
        assert killed
        assert any("generation worker stopped" in (p.output.error or "") for p in screen.panes())
        assert app.is_running
        screen.query_one("#set-max_new_tokens", Input).value = "4"
        await generate(pilot, screen)  # a fresh worker starts on the next press
        assert screen.panes()[0].output.texts and screen.panes()[0].output.error is None

        screen.query_one("#set-top_p", Input).value = "1.5"
        await pilot.press("g")
        assert not screen.generating and screen.query_one("#set-top_p", Input).has_class("-invalid")


# --- snapshots (a reopened comparison: no live generation) -----------------------------------------


@pytest.fixture
def saved_scene(workspace, monkeypatch):
    monkeypatch.chdir(workspace.path)
    alpha = workspace.make_run("alpha", "finished", steps=40)
    beta = workspace.make_run("beta", "finished", steps=40)
    panes = [
        comparisons.SavedPane(label="base", base={"backend": "testlm", "model": "test/TestLM-1M"},
                              texts=[">be a base model\n>say words in order"]),
        comparisons.SavedPane(label="alpha#1", run="alpha#1", run_dir=str(alpha), checkpoint="final",
                              texts=[">be alpha\n>trained for 40 steps\n>greentext flows"]),
        comparisons.SavedPane(label="beta#1", run="beta#1", run_dir=str(beta), checkpoint="final",
                              texts=[">be beta, rank 8\n>more words"], error=None),
    ]
    comparison = comparisons.Comparison(">be me\n>", {"temperature": 0.7, "top_p": 0.9, "max_new_tokens": 40,
                                                      "seed": 1234, "n": 1}, panes, time=T0)
    comparisons.save(workspace.root, comparison)
    return workspace


def reopened():
    async def run_before(pilot) -> None:
        app = pilot.app
        await ready(pilot)
        await until(pilot, lambda: app.registry is not None, what="plugins")
        await pilot.press("c")
        await until(pilot, lambda: isinstance(app.screen, CompareScreen), what="compare")
        await pilot.press("l", "enter")
        await until(pilot, lambda: len(app.screen.panes()) == 3, what="the reopened panes")
        await pilot.pause(0.2)
        app.clear_notifications()
        await pilot.pause()

    return run_before


def test_compare_80x24(saved_scene, snap_compare) -> None:
    from workbench.app import make_app

    app = make_app("experiments.toml", poll_interval=0.1, gpu_runner=gpu_runner())
    assert snap_compare(app, terminal_size=(80, 24), run_before=reopened())


def test_compare_160x48(saved_scene, snap_compare) -> None:
    from workbench.app import make_app

    app = make_app("experiments.toml", poll_interval=0.1, gpu_runner=gpu_runner())
    assert snap_compare(app, terminal_size=(160, 48), run_before=reopened())
