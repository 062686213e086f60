"""The machine at a glance: each GPU's memory and utilisation, and which run holds it.

Reads ``nvidia-smi`` in CSV mode (two queries: the GPUs, then the compute
processes) and maps each process to a run through its ancestry: a process
belongs to the run whose trainer or launcher (``pid`` or ``pgid`` in its
status) it is or descends from. Sessions would not do: torch's elastic agent
(torchrun, multi-process accelerate) starts every rank in a session of its
own. On a machine without ``nvidia-smi`` every function quietly returns
nothing. Standard library only; the TUI calls :func:`query` from a worker
thread, never the UI thread.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from workbench import processes

GPU_FIELDS = "index,uuid,name,memory.used,memory.total,utilization.gpu"
APP_FIELDS = "pid,gpu_uuid,used_memory"
GPU_COMMAND = ["nvidia-smi", f"--query-gpu={GPU_FIELDS}", "--format=csv,noheader,nounits"]
APP_COMMAND = ["nvidia-smi", f"--query-compute-apps={APP_FIELDS}", "--format=csv,noheader,nounits"]


@dataclass(frozen=True)
class GpuProcess:
    """One compute process on a GPU, and the run it belongs to (when it is one of ours)."""

    pid: int
    gpu_uuid: str
    used_mib: float | None
    run: str | None = None


@dataclass(frozen=True)
class Gpu:
    """One GPU: memory in MiB, utilisation in percent (``None`` where the driver says N/A)."""

    index: int
    uuid: str
    name: str
    memory_used_mib: float | None
    memory_total_mib: float | None
    utilization: float | None
    processes: tuple[GpuProcess, ...] = field(default=())
    reserved_by: str | None = None

    @property
    def runs(self) -> list[str]:
        """The runs holding this GPU (its reservation first, then by process), without repeats."""
        found = [self.reserved_by] if self.reserved_by else []
        return list(dict.fromkeys(found + [p.run for p in self.processes if p.run]))

    @property
    def short_name(self) -> str:
        return short_name(self.name)


def _number(text: str) -> float | None:
    """``"23101"`` -> 23101.0; ``"[N/A]"``, ``"[Not Supported]"``, ``""`` -> None."""
    text = text.strip()
    try:
        return float(text)
    except ValueError:
        return None


def parse_gpus(text: str) -> list[Gpu]:
    """Parse ``--query-gpu=index,uuid,name,memory.used,memory.total,utilization.gpu`` output.

    Lines that don't parse (a driver warning, "No devices were found") are skipped.
    """
    gpus: list[Gpu] = []
    for line in text.splitlines():
        fields = [f.strip() for f in line.split(",")]
        if len(fields) < 6 or not fields[0].isdigit():
            continue
        # a name containing a comma would split in two: the name is everything in the middle
        name = ", ".join(fields[2:-3])
        gpus.append(Gpu(
            index=int(fields[0]), uuid=fields[1], name=name,
            memory_used_mib=_number(fields[-3]), memory_total_mib=_number(fields[-2]),
            utilization=_number(fields[-1]),
        ))
    return gpus


def parse_apps(text: str) -> list[GpuProcess]:
    """Parse ``--query-compute-apps=pid,gpu_uuid,used_memory`` output (empty when idle)."""
    apps: list[GpuProcess] = []
    for line in text.splitlines():
        fields = [f.strip() for f in line.split(",")]
        if len(fields) < 3 or not fields[0].isdigit():
            continue
        apps.append(GpuProcess(pid=int(fields[0]), gpu_uuid=fields[1], used_mib=_number(fields[2])))
    return apps


session_id = processes.session_id


def run_pids(active: Iterable[tuple[str, Mapping[str, Any]]]) -> dict[int, str]:
    """``{pid: run ref}`` for running runs: the trainer (rank 0) and the launcher (``pgid``)."""
    out: dict[int, str] = {}
    for ref, status in active:
        for key in ("pgid", "pid"):
            if isinstance(status.get(key), int):
                out[status[key]] = ref
    return out


def attach(
    gpus: list[Gpu],
    apps: list[GpuProcess],
    run_pids: Mapping[int, str],
    ancestors_of: Callable[[int], list[int]] = processes.ancestors,
    reserved: Mapping[str, str] | None = None,
) -> list[Gpu]:
    """Give each GPU its processes, each labelled with the run (``exp#n``) it belongs to.

    ``reserved`` maps a GPU id (index or uuid, as the scheduler put it in
    ``CUDA_VISIBLE_DEVICES``) to the run it was given to: such a GPU shows its
    run even before the run's process has touched it (while the model loads).
    """
    by_uuid: dict[str, list[GpuProcess]] = {}
    for app in apps:
        run = next((run_pids[p] for p in ancestors_of(app.pid) if p in run_pids), None)
        by_uuid.setdefault(app.gpu_uuid, []).append(replace(app, run=run))
    out = []
    for gpu in gpus:
        procs = tuple(by_uuid.get(gpu.uuid, ()))
        holder = (reserved or {}).get(str(gpu.index)) or (reserved or {}).get(gpu.uuid)
        out.append(replace(gpu, processes=procs, reserved_by=holder))
    return out


def short_name(name: str) -> str:
    """``"NVIDIA H100 80GB HBM3"`` -> ``"H100"``; ``"NVIDIA GeForce RTX 4090"`` -> ``"RTX 4090"``."""
    words = [w for w in name.split() if w not in ("NVIDIA", "GeForce", "Tesla", "Quadro")]
    if not words:
        return name
    if words[0] in ("RTX", "GTX") and len(words) > 1:
        return " ".join(words[:2])
    return words[0]


Runner = Callable[[list[str]], str | None]


def run_nvidia_smi(cmd: list[str], timeout: float = 5.0) -> str | None:
    """Run one nvidia-smi query; its output, or ``None`` when it is missing, fails or hangs."""
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return proc.stdout if proc.returncode == 0 else None


def available() -> bool:
    return shutil.which("nvidia-smi") is not None


def query(run_pids: Mapping[int, str] | None = None, runner: Runner = run_nvidia_smi,
          reserved: Mapping[str, str] | None = None) -> list[Gpu]:
    """The GPUs now, with their processes mapped to runs; ``[]`` without nvidia-smi or GPUs."""
    text = runner(GPU_COMMAND)
    if not text:
        return []
    gpus = parse_gpus(text)
    if not gpus:
        return []
    apps = parse_apps(runner(APP_COMMAND) or "")
    return attach(gpus, apps, run_pids or {}, reserved=reserved)


def choose_gpu(found: list[Gpu], reserved: Iterable[str] = (),
               visible: list[str] | None = None) -> int | None:
    """The torch device index for work outside the queue (the generation worker).

    A GPU the queue gave a run (``reserved``: indices or uuids) or that runs
    compute processes comes last; among the rest, the one with the most free
    memory. ``visible`` is ``CUDA_VISIBLE_DEVICES`` (``None`` when unset): torch
    numbers only those, in that order. ``None`` when there is no GPU to choose.
    """
    taken = set(reserved)
    order = [str(g.index) for g in found] if visible is None else list(visible)
    candidates = []
    for position, ident in enumerate(order):
        gpu = next((g for g in found if ident in (str(g.index), g.uuid)), None)
        if gpu is None:
            continue
        busy = str(gpu.index) in taken or gpu.uuid in taken or bool(gpu.processes)
        free = (gpu.memory_total_mib or 0) - (gpu.memory_used_mib or 0)
        candidates.append((busy, -free, position))
    return min(candidates)[2] if candidates else None
