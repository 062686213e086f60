"""Helpers for the TUI tests: wait for the app, read the screen, replay nvidia-smi."""

from __future__ import annotations

import io
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.console import Console
from textual.pilot import Pilot

HERE = Path(__file__).parent
DATA = HERE / "data"
T0 = 1_700_000_000.0  # fixed event and status times, for deterministic screens
NOW = T0 + 300.0


async def until(pilot: Pilot, predicate: Callable[[], Any], timeout: float = 10.0, what: str = "") -> Any:
    """Let the app run until ``predicate()`` is truthy; fail with ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or predicate}")
        await pilot.pause(0.05)


async def ready(pilot: Pilot) -> None:
    """Wait until the main screen has drawn its run panel the first time."""
    await until(pilot, lambda: pilot.app.main.ready, timeout=30, what="the main screen")  # a hang guard


def screen_text(app) -> str:
    """What the terminal shows, as plain text (the same render a screenshot uses)."""
    width, height = app.size
    console = Console(width=width, height=height, file=io.StringIO(), force_terminal=True,
                      color_system="truecolor", record=True, legacy_windows=False)
    console.print(app.screen._compositor.render_update(full=True, screen_stack=app._background_screens))
    return console.export_text()


def gpu_runner(gpus: str = "nvidia_smi_gpus.csv", apps: str = "nvidia_smi_apps.csv",
               pid_map: dict[str, int] | None = None) -> Callable[[list[str]], str]:
    """An nvidia-smi stand-in replaying captured output; ``pid_map`` rewrites app pids."""

    def run(cmd: list[str]) -> str:
        name = gpus if any(a.startswith("--query-gpu") for a in cmd) else apps
        text = (DATA / name).read_text()
        for old, new in (pid_map or {}).items():
            text = text.replace(old, str(new))
        return text

    return run


def state_of(app, name: str) -> str | None:
    """The state of the latest run of experiment ``name`` as the app sees it."""
    found = app.runs_by_exp.get(name) or []
    return found[-1].state if found else None
