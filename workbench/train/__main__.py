"""``python -m workbench.train RUN_DIR [--resume]``: the training process the launcher starts."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m workbench.train",
        description="Train one run folder (written by `workbench run`); progress lands in "
        "its events.jsonl and status.json.",
    )
    parser.add_argument("run_dir", type=Path, help="the run folder holding config.json")
    parser.add_argument("--resume", action="store_true",
                        help="continue from the folder's latest checkpoint")
    args = parser.parse_args(argv)
    if not args.run_dir.is_dir():
        parser.error(f"{args.run_dir} is not a folder")
    from workbench.train.signals import StopRequest

    stop = StopRequest()  # first: a SIGTERM from here on is a request, not death
    restore = stop.install()

    from workbench.train.sources import network_for_run

    network_for_run(args.run_dir)  # offline unless the run needs the hub, before heavy imports
    from workbench.processes import register_rank
    from workbench.train.ranks import rank
    from workbench.train.runner import run

    register_rank(args.run_dir, rank())  # `workbench stop` now signals this process
    try:
        return run(args.run_dir, resume=args.resume, stop=stop)
    finally:
        restore()


if __name__ == "__main__":
    sys.exit(main())
