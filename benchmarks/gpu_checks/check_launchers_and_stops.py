"""GPU check (issue 12): precision chosen, GPU processes mapped to runs, stops, impossible launches.

Run by ``benchmarks/gpu_check.sh`` (rows ``CHECK<TAB>name<TAB>result<TAB>detail``).
On one GPU, in about two minutes:

- ``precision_auto``: what ``train.precision = "auto"`` picks, against the GPU's
  compute capability (bf16 only from 8.0 up: fp16 on a T4 or V100);
- ``child_allocation_mapped``: a ``torchrun`` run's rank (a child of the agent,
  in a session of its own) is mapped by ``workbench.gpus`` to its run;
- ``torchrun_stop_during_sampling``: ``workbench stop`` right after a checkpoint,
  while rank 0 samples, ends ``stopped`` with a checkpoint and no process left;
- ``impossible_nproc_refused``: ``nproc_per_node`` above the GPU count is refused.

With two GPUs also ``no_stray_context_on_gpu0`` (rank 1's precision probe opens
no CUDA context on GPU 0) and ``torchrun_two_ranks_mapped`` (each rank on its
own GPU, both mapped to the run); with one they say so and skip. Without a
CUDA GPU every row is ``skip`` and the exit code is 0.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _issue12 import (
    Project,
    experiment_toml,
    gpu_count,
    guarded,
    log,
    row,
    small_llama,
    try_on_cpu,
    wait_for,
)

NAMES = ("precision_auto", "child_allocation_mapped", "torchrun_stop_during_sampling",
         "impossible_nproc_refused", "no_stray_context_on_gpu0", "torchrun_two_ranks_mapped")


def check_precision() -> None:
    import torch

    from workbench.train.trainer import detect_hardware

    major, minor = torch.cuda.get_device_capability(0)
    chosen = detect_hardware("auto").precision
    expected = "bf16" if major >= 8 else "fp16"
    row("precision_auto", "ok" if chosen == expected else "FAIL",
        f"{chosen} on {torch.cuda.get_device_name(0)} (capability {major}.{minor}); expected {expected}")


def pids_on_gpus() -> dict[int, set[str]]:
    """``{pid: {gpu uuid, ...}}`` from nvidia-smi's compute processes."""
    from workbench import gpus

    out: dict[int, set[str]] = {}
    for app in gpus.parse_apps(gpus.run_nvidia_smi(gpus.APP_COMMAND) or ""):
        out.setdefault(app.pid, set()).add(app.gpu_uuid)
    return out


def check_no_stray_context() -> None:
    """Rank 1's hardware probe, then an allocation: nvidia-smi must show it on GPU 1 only."""
    from workbench import gpus

    code = ("import os, sys, time; os.environ['LOCAL_RANK'] = '1'\n"
            "from workbench.train.trainer import detect_hardware\n"
            "import torch\n"
            "h = detect_hardware('auto'); x = torch.zeros(1 << 20, device='cuda')\n"
            "print(h.precision, torch.cuda.current_device(), flush=True); time.sleep(60)\n")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline().split() if proc.stdout else []
        uuids = {g.index: g.uuid for g in gpus.query()}
        seen = wait_for(lambda: pids_on_gpus().get(proc.pid), 15) or set()
        time.sleep(1)
        seen = pids_on_gpus().get(proc.pid) or seen
        ok = seen == {uuids.get(1)}
        row("no_stray_context_on_gpu0", "ok" if ok else "FAIL",
            f"rank 1 (current device {line[1:2]}) holds contexts on "
            f"{sorted(i for i, u in uuids.items() if u in seen)}")
    finally:
        proc.kill()
        proc.wait()


def mapped_runs(project: Project, name: str) -> dict[int, list[str]]:
    """``{gpu index: [runs]}`` as the TUI's GPU bar would show them now."""
    from workbench import gpus

    status = project.status(name)
    return {g.index: g.runs for g in gpus.query(gpus.run_pids([(f"{name}#1", status)]))
            if any(p.run for p in g.processes)}


def check_torchrun_one(folder: Path, model: Path) -> None:
    """One torchrun rank: its GPU process mapped to the run; a stop while it samples."""

    project = Project(folder, [experiment_toml(
        "tr", model, launcher="torchrun", evaluators=["samples"], train__steps=400,
        train__save_every=10, sampling__max_new_tokens=400, sampling__num_samples=3,
        prompts=[">be me\\n>", ">be a cat\\n>", ">mfw\\n>", ">tfw\\n>"])])
    result = project.workbench("run", "tr")
    if result.returncode != 0:
        raise RuntimeError(f"run: {result.stderr.strip()}")
    try:
        stop_while_sampling(project)
    finally:
        project.end_runs()


def stop_while_sampling(project: Project) -> None:
    from workbench import launch, processes, runs

    folder, run_dir = project.folder, project.run_dir("tr")
    if not wait_for(lambda: (project.status("tr").get("step") or 0) >= 2, 150):
        raise RuntimeError(f"no progress: {project.status('tr').get('state')} {project.log_tail('tr')}")
    mapped = wait_for(lambda: mapped_runs(project, "tr"), 20) or {}
    row("child_allocation_mapped", "ok" if any("tr#1" in r for r in mapped.values()) else "FAIL",
        f"GPU bar: {mapped or 'no process of ours seen'}")

    first = wait_for(lambda: project.events("tr", "checkpoint"), 120)
    if not first:
        raise RuntimeError("no checkpoint event within 120 s")
    procs = processes.of_run(run_dir, project.status("tr"))
    t0 = time.monotonic()
    samples_before = len(project.events("tr", "sample"))
    launch.stop(runs.resolve(folder / "runs", "tr#1"))  # what `workbench stop` does, at once
    status = launch.wait(runs.resolve(folder / "runs", "tr#1"), timeout=240)
    took = time.monotonic() - t0
    step = status.get("step")
    has_checkpoint = (run_dir / runs.CHECKPOINTS / f"checkpoint-{step}" / "trainer_state.json").is_file()
    left = [p.pid for p in procs if p.alive()] if not processes.wait_gone(procs, 30) else []
    samples_after = [e for e in project.events("tr", "sample")
                     if e.get("checkpoint") == first[0].get("path", "").rsplit("/", 1)[-1]]
    ok = status.get("state") == "stopped" and has_checkpoint and not left
    row("torchrun_stop_during_sampling", "ok" if ok else "FAIL",
        f"stop after checkpoint-{first[0]['step']}, {samples_before} of its "
        f"{len(samples_after)} samples written: "
        f"{status.get('state')} at step {step} in {took:.0f}s, checkpoint-{step} "
        f"{'complete' if has_checkpoint else 'MISSING'}, processes left {left}")


def check_torchrun_two(folder: Path, model: Path) -> None:
    """Two ranks: each on its own GPU (no context on the other), both mapped to the run."""
    from workbench import gpus, processes

    project = Project(folder, [experiment_toml(
        "ddp", model, launcher="torchrun", distributed__nproc_per_node=2, evaluators=[],
        train__steps=2000, train__save_every=1000)])
    result = project.workbench("run", "ddp")
    if result.returncode != 0:
        raise RuntimeError(f"run: {result.stderr.strip()}")
    try:
        if not wait_for(lambda: (project.status("ddp").get("step") or 0) >= 3, 150):
            raise RuntimeError(f"no progress: {project.log_tail('ddp')}")
        status = project.status("ddp")
        ranks = processes.ready_ranks(project.run_dir("ddp"))
        on = pids_on_gpus()
        index = {g.uuid: g.index for g in gpus.query()}
        placement = {r.pid: sorted(index.get(u, -1) for u in on.get(r.pid, ())) for r in ranks}
        mapped = mapped_runs(project, "ddp")
        one_each = sorted(len(v) for v in placement.values()) == [1, 1] and \
            len({v[0] for v in placement.values() if v}) == 2
        row("torchrun_two_ranks_mapped",
            "ok" if one_each and sum("ddp#1" in r for r in mapped.values()) == 2 else "FAIL",
            f"rank pids -> GPUs {placement}; GPU bar {mapped}; status gpus {status.get('gpus')}")
    finally:
        project.workbench("stop", "ddp#1", "--wait", "120", timeout=150)
        project.end_runs()


def check_impossible_nproc(folder: Path, model: Path, count: int) -> None:
    project = Project(folder, [experiment_toml("big", model, launcher="torchrun",
                                               distributed__nproc_per_node=max(count, 1) + 1)])
    result = project.workbench("run", "big", env=None if count else {"CUDA_VISIBLE_DEVICES": "0"})
    refused = result.returncode == 2 and not project.run_dir("big").exists()
    row("impossible_nproc_refused", "ok" if refused else "FAIL",
        f"exit {result.returncode}: {(result.stderr or result.stdout).strip()[:200]}")


def main() -> int:
    count = gpu_count()
    if count == 0 and not try_on_cpu():
        for name in NAMES:
            row(name, "skip", "no CUDA GPU")
        return 0
    if count:
        guarded("precision_auto", check_precision)
    with tempfile.TemporaryDirectory(prefix="gpu-check-12-") as tmp:
        scratch = Path(tmp)
        model = small_llama(scratch / "model", hidden=256, layers=4)
        log(f"model ready; {count} GPU(s)")
        guarded("impossible_nproc_refused",
                lambda: check_impossible_nproc(scratch / "big", model, count))
        if not guarded("torchrun_stop_during_sampling",
                       lambda: check_torchrun_one(scratch / "tr", model)):
            row("child_allocation_mapped", "skip", "the torchrun run did not get going")
        if count < 2:
            for name in ("no_stray_context_on_gpu0", "torchrun_two_ranks_mapped"):
                row(name, "skip", f"needs 2 GPUs, this machine has {count}")
            return 0
        guarded("no_stray_context_on_gpu0", check_no_stray_context)
        guarded("torchrun_two_ranks_mapped", lambda: check_torchrun_two(scratch / "ddp", model))
    return 0


if __name__ == "__main__":
    sys.exit(main())
