"""``workbench serve``: the same TUI in a browser tab, through textual-serve (an optional extra).

Each browser tab runs its own ``workbench`` process on this machine (the
server starts one per connection), reading the same experiments file and
runs folder as the terminal TUI does; nothing is shared but the folders.
Install with ``pip install 'workbench[serve]'``.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from typing import Any

from workbench.config import ConfigError


def tui_command(ctx: Any) -> str:
    """The shell command each browser session runs: this Python's ``workbench`` with the same options."""
    args = ctx.args
    parts = [sys.executable, "-m", "workbench.cli", "-c", str(ctx.config_path.resolve())]
    if args.runs_dir:
        parts += ["--runs-dir", str(args.runs_dir)]
    if args.plugins_dir:
        parts += ["--plugins-dir", str(args.plugins_dir)]
    return shlex.join(parts)


def cmd_serve(ctx: Any) -> int:
    try:
        from textual_serve.server import Server  # type: ignore[import-not-found, unused-ignore]
    except ImportError:
        raise ConfigError("workbench serve needs textual-serve: pip install 'workbench[serve]'") from None
    args = ctx.args
    print(f"serving the workbench TUI on http://{args.host}:{args.port} (Ctrl-C stops; runs keep going)",
          flush=True)
    Server(tui_command(ctx), host=args.host, port=args.port, title="workbench").serve()
    return 0


def add_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    """Add ``serve`` to the CLI's subcommands."""
    p = sub.add_parser("serve", parents=[common],
                       help="the TUI in a browser tab (needs the serve extra: textual-serve)")
    p.add_argument("--host", default="localhost", help="address to listen on (default: localhost only)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    p.set_defaults(func=cmd_serve)
