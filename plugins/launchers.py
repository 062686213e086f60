"""Built-in launchers: how the training process is started.

``python`` runs one process; ``torchrun`` and ``accelerate`` start
``distributed.nproc_per_node`` processes per node (and join a multi-node
rendezvous at ``distributed.rdzv_endpoint``). Every process runs
``workbench.train``; only rank 0 writes events and status. All of them share
the launcher's session, so ``workbench stop`` reaches every rank.
"""

from __future__ import annotations

import sys
from typing import Any

from workbench.api import Launcher, hookimpl

TRAIN = ["-m", "workbench.train"]


def python_command(run_dir: str, dist: dict[str, Any]) -> list[str]:
    return [sys.executable, *TRAIN, run_dir]


def torchrun_command(run_dir: str, dist: dict[str, Any]) -> list[str]:
    nnodes = int(dist.get("nnodes", 1))
    argv = [sys.executable, "-m", "torch.distributed.run",
            f"--nproc-per-node={int(dist.get('nproc_per_node', 1))}", f"--nnodes={nnodes}"]
    if nnodes > 1:
        if not dist.get("rdzv_endpoint"):
            raise ValueError("distributed.rdzv_endpoint (host:port) is required when nnodes > 1")
        argv += [f"--node-rank={int(dist.get('node_rank', 0))}", "--rdzv-backend=c10d",
                 f"--rdzv-endpoint={dist['rdzv_endpoint']}"]
    else:
        argv.append("--standalone")
    return [*argv, *TRAIN, run_dir]


def accelerate_command(run_dir: str, dist: dict[str, Any]) -> list[str]:
    nproc, nnodes = int(dist.get("nproc_per_node", 1)), int(dist.get("nnodes", 1))
    argv = [sys.executable, "-m", "accelerate.commands.launch",
            "--num_processes", str(nproc * nnodes), "--num_machines", str(nnodes)]
    if nproc * nnodes > 1:
        argv.append("--multi_gpu")
    if nnodes > 1:
        host, _, port = str(dist.get("rdzv_endpoint") or "").partition(":")
        if not host or not port:
            raise ValueError("distributed.rdzv_endpoint (host:port) is required when nnodes > 1")
        argv += ["--machine_rank", str(int(dist.get("node_rank", 0))),
                 "--main_process_ip", host, "--main_process_port", port]
    return [*argv, *TRAIN, run_dir]


@hookimpl
def register_launchers(register):
    register(Launcher("python", python_command, "one process (the default)"))
    register(Launcher("torchrun", torchrun_command, "torch.distributed.run: DDP over processes/nodes"))
    register(Launcher("accelerate", accelerate_command, "accelerate launch"))
