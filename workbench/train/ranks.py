"""Which process of a (possibly multi-process) run this is, and rank-0-only reporting.

Under ``torchrun`` or ``accelerate launch`` every rank runs the same trainer;
only rank 0 writes events and status, so a multi-process run has one
coherent event stream. Single-process runs are rank 0.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from workbench import runs


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def local_rank() -> int:
    """This process's index on its node (its GPU among the visible ones)."""
    return int(os.environ.get("LOCAL_RANK", "0"))


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_main() -> bool:
    return rank() == 0


def event(run_dir: Path, type: str, **fields: Any) -> dict[str, Any] | None:  # noqa: A002
    """``runs.append_event`` on rank 0; nothing elsewhere."""
    return runs.append_event(run_dir, type, **fields) if is_main() else None


def status(run_dir: Path, **fields: Any) -> dict[str, Any]:
    """``runs.write_status`` on rank 0; nothing elsewhere."""
    return runs.write_status(run_dir, **fields) if is_main() else {}


def agree(flag: bool) -> bool:
    """True on every rank if it is true on any (a stop signal may reach ranks a step apart).

    Without this, one rank could stop while another starts the next step and
    waits forever in its gradient all-reduce.
    """
    if world_size() <= 1:
        return flag
    import torch
    import torch.distributed as dist

    if not dist.is_available() or not dist.is_initialized():
        return flag
    value = torch.tensor([1 if flag else 0], device="cuda" if torch.cuda.is_available() and
                         dist.get_backend() == "nccl" else "cpu")
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())
