"""The TUI keeps out of Textual's way: no attribute of ours shadows the framework's, and app-wide
changes reach the screens through the App's Signals (the App never calls into a screen)."""

from __future__ import annotations

import inspect
import sys
import types

import textual
from helpers import ready, until
from textual.dom import DOMNode

from workbench.compare_model import default_sampling
from workbench.screens.compare import CompareScreen
from workbench.screens.results import ResultsScreen
from workbench.widgets.experiments import ExperimentsTable


def shadowed(node: DOMNode) -> list[str]:
    """Instance attributes of ``node`` that hide a method or property of a Textual base class."""
    found = []
    for name, value in vars(node).items():
        for klass in type(node).__mro__:
            if not klass.__module__.startswith("textual"):
                continue
            base = klass.__dict__.get(name)
            if (inspect.isfunction(base) or isinstance(base, property)) and not callable(value):
                found.append(f"{type(node).__name__}.{name} hides {klass.__name__}.{name}")
    return found


class FakeDevtools:
    """Just enough of textual-dev's client for ``App._log`` to deliver to it."""

    is_connected = True
    verbose = False

    def __init__(self) -> None:
        self.lines: list[str] = []

    def log(self, log, group, verbosity) -> None:  # noqa: ARG002 - the client's signature
        self.lines.append(str(log.objects_or_string))


async def test_textual_log_and_recompose_work_in_our_app_and_screens(workspace, monkeypatch) -> None:
    # textual.log() calls App._log; with devtools attached that must be Textual's method, not our data
    client = types.ModuleType("textual_dev.client")
    client.DevtoolsLog = lambda objects, caller: types.SimpleNamespace(objects_or_string=objects)
    monkeypatch.setitem(sys.modules, "textual_dev", types.ModuleType("textual_dev"))
    monkeypatch.setitem(sys.modules, "textual_dev.client", client)
    app = workspace.app()
    async with app.run_test(size=(100, 30)) as pilot:
        await ready(pilot)
        devtools = FakeDevtools()
        app.devtools = devtools  # type: ignore[assignment]
        textual.log("hello from a worker")
        app.log("hello from the app")
        assert any("hello from a worker" in line for line in devtools.lines)
        app.devtools = None
        screen = CompareScreen([], [">be me"], default_sampling(None))
        await app.push_screen(screen)
        await until(pilot, lambda: app.screen is screen, what="compare screen")
        await pilot.pause()
        await screen.recompose()  # Widget.batch() inside must still be Textual's
        assert screen.query_one("#prompt").text == ">be me"
        nodes = (app, *app.screen_stack, *app.main.walk_children(), *screen.walk_children())
        assert [p for node in nodes for p in shadowed(node)] == []


async def test_results_screen_follows_runs_through_the_signal(workspace) -> None:
    workspace.make_run("alpha", "finished", steps=40)
    app = workspace.app()
    async with app.run_test(size=(120, 30)) as pilot:
        await ready(pilot)
        await pilot.press("t")
        screen = await until(pilot, lambda: isinstance(app.screen, ResultsScreen) and app.screen,
                             what="results")
        assert screen.sorted_runs() == ["alpha#1"]
        workspace.make_run("beta", "finished", steps=40)  # a new run on disk: the watcher sees it
        await until(pilot, lambda: screen.sorted_runs() and len(screen.sorted_runs()) == 2,
                    what="the new run in the results")
        await pilot.press("escape")
        await until(pilot, lambda: app.screen is app.main, what="main screen")
        workspace.make_run("alpha", "failed", steps=12, error="CUDA out of memory", error_kind="oom")
        table = app.main.query_one(ExperimentsTable)
        await until(pilot, lambda: "OOM" in str(table.get_cell("alpha", "state")), what="main screen follows")
