"""Run-management commands: ``archive``, ``delete``, ``note``, ``tag`` (see :mod:`workbench.runmeta`)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from workbench import runmeta, runs
from workbench.config import ConfigError


def cmd_archive(ctx: Any) -> int:
    run = runs.resolve(ctx.root, ctx.args.run)
    where = runmeta.archive(run)
    print(f"archived {run.ref}: moved to {where} (hidden from lists; move it back to restore it)")
    return 0


def cmd_delete(ctx: Any) -> int:
    run = runs.resolve(ctx.root, ctx.args.run)
    if not ctx.args.yes:
        if not sys.stdin.isatty():
            raise ConfigError(f"delete {run.ref}: pass --yes to delete without a question")
        answer = input(f"delete {run.ref} ({run.path}) for good? [y/N] ")
        if answer.strip().lower() not in ("y", "yes"):
            print("nothing deleted")
            return 1
    runmeta.delete(run)
    print(f"deleted {run.ref}")
    return 0


def cmd_note(ctx: Any) -> int:
    run = runs.resolve(ctx.root, ctx.args.run)
    meta = runmeta.set_note(run.path, " ".join(ctx.args.text))
    print(f"{run.ref}: note {meta.note!r}" if meta.note else f"{run.ref}: note cleared")
    return 0


def cmd_tag(ctx: Any) -> int:
    run = runs.resolve(ctx.root, ctx.args.run)
    try:
        meta = runmeta.set_tags(run.path, [] if ctx.args.remove else ctx.args.tags,
                                ctx.args.tags if ctx.args.remove else [])
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    print(f"{run.ref}: tags {' '.join(meta.tags) or '(none)'}")
    return 0


def add_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    """Add ``archive``, ``delete``, ``note`` and ``tag`` to the CLI's subcommands."""
    ref = "EXPERIMENT#N, EXPERIMENT (latest) or a run folder"
    p = sub.add_parser("archive", parents=[common],
                       help="hide a run from lists and results (moved to runs/EXP/.archive/, not lost)")
    p.add_argument("run", metavar="RUN", help=ref)
    p.set_defaults(func=cmd_archive)
    p = sub.add_parser("delete", parents=[common], help="delete a run's folder for good (asks first)")
    p.add_argument("run", metavar="RUN", help=ref)
    p.add_argument("-y", "--yes", action="store_true", help="do not ask")
    p.set_defaults(func=cmd_delete)
    p = sub.add_parser("note", parents=[common], help="set a run's note (no text: clear it)")
    p.add_argument("run", metavar="RUN", help=ref)
    p.add_argument("text", nargs="*", metavar="TEXT")
    p.set_defaults(func=cmd_note)
    p = sub.add_parser("tag", parents=[common], help="add tags to a run (--remove: take them off)")
    p.add_argument("run", metavar="RUN", help=ref)
    p.add_argument("tags", nargs="+", metavar="TAG")
    p.add_argument("--remove", action="store_true", help="remove these tags instead")
    p.set_defaults(func=cmd_tag)
