"""Time from process start to the first painted frame with the experiments table filled.

Usage: ``python tests/tui/startup_probe.py [--t0 EPOCH] [--headless] [--idle S] [--out FILE] [ARGS...]``

It runs the real ``workbench`` command line (``workbench.cli.main``) and, once
the main screen has filled the table and the next refresh has been drawn,
prints the seconds since ``--t0`` (the caller's clock before it started this
process; by default this process's own start time from ``/proc``) and exits.
"""

from __future__ import annotations

import os
import sys
import time


def process_start() -> float:
    """This process's start time (epoch seconds), from /proc, about 10 ms resolution."""
    ticks = os.sysconf("SC_CLK_TCK")
    with open("/proc/self/stat") as fh:
        stat = fh.read()
    started_after_boot = int(stat[stat.rfind(")") + 2:].split()[19]) / ticks
    with open("/proc/uptime") as fh:
        uptime = float(fh.read().split()[0])
    return time.time() - (uptime - started_after_boot)


def main() -> int:
    args = sys.argv[1:]
    t0 = process_start()
    if "--t0" in args:
        i = args.index("--t0")
        t0 = float(args[i + 1])
        del args[i:i + 2]
    headless = "--headless" in args
    if headless:
        args.remove("--headless")
    out = None
    if "--out" in args:  # in a real terminal stdout is the screen: write the figures here instead
        i = args.index("--out")
        out = args[i + 1]
        del args[i:i + 2]
    idle = 0.0
    if "--idle" in args:  # then stay open this long and report the CPU it used meanwhile
        i = args.index("--idle")
        idle = float(args[i + 1])
        del args[i:i + 2]

    from workbench import app as app_module
    from workbench import cli

    original = app_module.MainScreen.on_mount
    result: list[tuple[float, int]] = []
    idle_cpu: list[float] = []

    def on_mount(screen) -> None:
        def painted() -> None:
            result.append((time.time() - t0, screen.table.row_count))
            if not idle:
                screen.app.exit()
                return
            def measure() -> None:  # after a second to settle (panel drawn, plugins loaded)
                cpu_before = time.process_time()

                def idle_done() -> None:
                    idle_cpu.append(time.process_time() - cpu_before)
                    screen.app.exit()

                screen.set_timer(idle, idle_done)

            screen.set_timer(1.0, measure)

        screen.call_after_refresh(painted)  # before the screen's own after-refresh work
        original(screen)

    app_module.MainScreen.on_mount = on_mount
    if headless:
        original_run = app_module.WorkbenchApp.run
        app_module.WorkbenchApp.run = lambda self, **kw: original_run(self, headless=True, **kw)
    code = cli.main(args)
    lines = [f"first paint with {rows} experiments after {elapsed:.3f}s" for elapsed, rows in result]
    lines += [f"cpu while idle for {idle:g}s (from 1s after the first paint): {cpu:.3f}s" for cpu in idle_cpu]
    if out:
        with open(out, "a") as fh:
            fh.write("".join(line + "\n" for line in lines))
    else:
        print("\n".join(lines))
    return code if result else 1


if __name__ == "__main__":
    sys.exit(main())
