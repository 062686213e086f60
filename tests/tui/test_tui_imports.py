"""The TUI process never imports the training stack, even after showing a run."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

from helpers import HERE

HEAVY = ("torch", "transformers", "peft", "trl", "datasets")

SCRIPT = textwrap.dedent("""
    import asyncio, json, sys
    sys.path.insert(0, {here!r})
    from helpers import until, ready
    from workbench.app import make_app

    async def main():
        app = make_app({toml!r}, poll_interval=0.1)
        async with app.run_test(size=(120, 40)) as pilot:
            await ready(pilot)
            await until(pilot, lambda: app.registry is not None, what="plugins")
            loss = app.main.query_one("#loss-chart")
            await until(pilot, lambda: loss.curves and len(loss.curves[0].points) == 20, what="a run shown")
            for key in ("4", "5", "p", "escape", "question_mark", "escape", "c", "escape", "t", "escape"):
                await pilot.press(key)
            failures = [str(f) for f in app.registry.failures]
        print(json.dumps({{"heavy": [m for m in {heavy!r} if m in sys.modules], "failures": failures,
                          "backends": sorted(app.registry.backends)}}))

    asyncio.run(main())
""")


def test_app_never_imports_the_training_stack(workspace) -> None:
    workspace.make_run("alpha", "finished", steps=20)
    script = SCRIPT.format(here=str(HERE), toml=str(workspace.toml), heavy=HEAVY)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                          cwd=workspace.path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert "testlm" in result["backends"]  # every plugin loaded, built-ins included
    assert result["heavy"] == [], f"the TUI imported {result['heavy']}"
