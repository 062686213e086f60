"""The ``slurm`` launcher: runs handed to Slurm (``sbatch``), watched (``squeue``), stopped (``scancel``).

``workbench run`` writes ``slurm.sh`` into the run folder and submits it at
once; Slurm is the queue. The batch script ``exec``s the trainer (or, for
``distributed.nnodes > 1``, ``srun`` starting one ``torchrun`` per node with the
rendezvous on the allocation's first node), so the signals Slurm sends the batch
shell reach it: ``--signal=B:TERM@N`` ahead of the time limit, ``scancel
--batch --signal=TERM`` from ``workbench stop``, and the TERM of a requeue. The
trainer then saves a checkpoint and ends ``stopped``; a requeued job finds that
checkpoint and resumes from it. The job writes the run folder exactly as a local
run does, so the runs folder must be on a filesystem the nodes share.

Plain ``sbatch``/``squeue``/``scancel`` rather than submitit: the job must run
our own trainer entry point writing our run folder (not a pickled callable),
liveness comes from the run's status plus one ``squeue`` line, and the script a
user can read (and re-submit by hand) is the interface. No accounting
(``sacct``) is needed.
"""

from __future__ import annotations

import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from workbench.api import Launcher, Liveness, hookimpl

SCRIPT = "slurm.sh"
RDZV_PORT = 29500
CACHE_S = 1.0  # a listing of many runs, or a TUI refresh, asks squeue once per job per second at most
TIMEOUT_S = 30
_cache: dict[str, tuple[float, Liveness]] = {}

# squeue's job states (long form) by what they mean for a run.
WAITING = {"PENDING", "CONFIGURING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "RESIZING", "SUSPENDED",
           "STOPPED"}
RUNNING = {"RUNNING", "COMPLETING", "SIGNALING", "STAGE_OUT"}


def job_name(experiment: str, run_id: str) -> str:
    """The Slurm job name of a run; checked on every query, so a reused job id is never mistaken for it."""
    return f"wb-{experiment}-{run_id}"


def sbatch_options(run_dir: str, experiment: dict[str, Any]) -> list[str]:
    """The ``#SBATCH`` options for a run: ours (log, signal, requeue, nodes) and the experiment's table."""
    slurm = experiment.get("slurm") or {}
    dist = experiment.get("distributed") or {}
    options = [
        f"--job-name={job_name(experiment['name'], Path(run_dir).name)}",
        f"--output={Path(run_dir) / 'train.log'}",
        "--open-mode=append",
        f"--chdir={run_dir}",
        f"--signal=B:TERM@{int(slurm.get('signal_before', 120))}",
        "--requeue",
        f"--nodes={int(dist.get('nnodes', 1))}",
        "--ntasks-per-node=1",
    ]
    for key, flag in (("partition", "--partition"), ("time", "--time"), ("account", "--account"),
                      ("qos", "--qos"), ("gpus_per_node", "--gpus-per-node"),
                      ("cpus_per_task", "--cpus-per-task"), ("mem", "--mem")):
        if slurm.get(key) is not None:
            options.append(f"{flag}={slurm[key]}")
    return [*options, *slurm.get("extra", [])]


def trainer_line(run_dir: str, experiment: dict[str, Any]) -> str:
    """The script's ``exec`` line: the trainer itself, torchrun on one node, or srun + torchrun."""
    dist = experiment.get("distributed") or {}
    nnodes, nproc = int(dist.get("nnodes", 1)), int(dist.get("nproc_per_node", 1))
    python, train = shlex.quote(sys.executable), f"-m workbench.train {shlex.quote(run_dir)} $RESUME"
    if nnodes == 1 and nproc == 1:
        return f"exec {python} {train}"
    torchrun = f"{python} -m torch.distributed.run --nproc-per-node={nproc}"
    if nnodes == 1:
        return f"exec {torchrun} --nnodes=1 --standalone {train}"
    endpoint = str(dist.get("rdzv_endpoint") or "")
    port = endpoint.rpartition(":")[2] if ":" in endpoint else str(RDZV_PORT)
    return ('HEAD=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)\n'
            f'exec srun --nodes="$SLURM_JOB_NUM_NODES" --ntasks-per-node=1 --kill-on-bad-exit=1 \\\n'
            f'  {torchrun} --nnodes="$SLURM_JOB_NUM_NODES" --rdzv-backend=c10d \\\n'
            f'  --rdzv-endpoint="$HEAD:{port}" --rdzv-id="$SLURM_JOB_ID" {train}')


def batch_script(run_dir: str, experiment: dict[str, Any]) -> str:
    """The ``slurm.sh`` a run is submitted with (readable, and re-submittable by hand)."""
    sbatch = "\n".join(f"#SBATCH {option}" for option in sbatch_options(run_dir, experiment))
    checkpoints = shlex.quote(str(Path(run_dir) / "checkpoints"))
    return f"""#!/bin/bash
{sbatch}
# Written by `workbench run` for {experiment['name']}#{Path(run_dir).name}; submitted with sbatch.
# The trainer is exec'd, so Slurm's TERM (the --signal ahead of the time limit, `workbench stop`,
# a requeue) reaches it: it saves a checkpoint and ends "stopped". A requeued job resumes from it.
export PYTHONUNBUFFERED=1
RESUME=""
for c in {checkpoints}/checkpoint-*; do
  if [ -d "$c" ]; then RESUME="--resume"; fi
done
{trainer_line(run_dir, experiment)}
"""


def _slurm(argv: list[str]) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=TIMEOUT_S, check=False)
    except FileNotFoundError:
        raise RuntimeError(f"{argv[0]} not found: the slurm launcher needs Slurm's commands on this "
                           "machine (a login node of the cluster)") from None
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"{argv[0]} did not answer in {TIMEOUT_S}s (is slurmctld up?)") from None


def _last_line(text: str) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return lines[-1] if lines else ""


def submit(run_dir: str, experiment: dict[str, Any]) -> str:
    """Write ``slurm.sh`` into the run folder and ``sbatch`` it; the job id."""
    script = Path(run_dir) / SCRIPT
    script.write_text(batch_script(run_dir, experiment))
    script.chmod(0o755)
    done = _slurm(["sbatch", "--parsable", str(script)])
    if done.returncode != 0:
        raise RuntimeError(f"sbatch: {_last_line(done.stderr) or f'exit {done.returncode}'}")
    return done.stdout.strip().split(";")[0]


def liveness(status: dict[str, Any], fresh: bool = False) -> Liveness:
    """What ``squeue`` says of the run's job (no accounting needed: squeue keeps ended jobs a while)."""
    job = str(status["job_id"])
    cached = _cache.get(job)
    if cached and not fresh and time.monotonic() - cached[0] < CACHE_S:
        return cached[1]
    answer = _ask(job, job_name(str(status.get("experiment")), str(status.get("run_id"))))
    _cache[job] = (time.monotonic(), answer)
    return answer


def _ask(job: str, name: str) -> Liveness:
    try:
        done = _slurm(["squeue", "-h", "-t", "all", "-j", job, "-o", "%i|%j|%T|%r|%N"])
    except RuntimeError as exc:
        return Liveness(None, detail=f"slurm job {job}: state unknown ({exc})")
    if done.returncode != 0 and "invalid job id" not in done.stderr.lower():
        return Liveness(None, detail=f"slurm job {job}: state unknown (squeue: {_last_line(done.stderr)})")
    line = next((ln for ln in done.stdout.splitlines() if ln.split("|")[0] == job), None)
    if line is None:
        return Liveness(False, detail=f"slurm job {job} is no longer known to Slurm", reason="vanished")
    _, found_name, state, reason, nodes = (line.split("|") + [""] * 5)[:5]
    if found_name != name:
        return Liveness(False, detail=f"slurm job {job} is another job now ({found_name})", reason="vanished")
    if state in WAITING:
        why = f" ({reason})" if reason and reason != "None" else ""
        return Liveness(True, waiting=True, detail=f"slurm job {job} {state.lower()}{why}")
    if state in RUNNING:
        return Liveness(True, detail=f"slurm job {job} {state.lower()} on {nodes or '?'}")
    why = f" ({reason})" if reason and reason != "None" else ""
    return Liveness(False, detail=f"slurm job {job} {state}{why}",
                    reason="" if state == "COMPLETED" else state.lower())


def stop(status: dict[str, Any]) -> None:
    """A waiting job is cancelled; a running one gets TERM in its batch shell, the exec'd trainer.

    ``--batch`` signals only the batch shell: with ``--full`` the ranks under
    srun + torchrun would get a second TERM (through torchrun), which means
    "stop now, without a checkpoint".
    """
    job = str(status["job_id"])
    live = liveness(status, fresh=True)
    argv = ["scancel", job] if live.waiting else ["scancel", "--batch", "--signal=TERM", job]
    done = _slurm(argv)
    if done.returncode != 0:
        raise RuntimeError(f"scancel: {_last_line(done.stderr) or f'exit {done.returncode}'}")
    _cache.pop(job, None)


def command(run_dir: str, dist: dict[str, Any]) -> list[str]:
    """How a slurm run starts: its batch script, submitted with sbatch (see :func:`submit`)."""
    return ["sbatch", "--parsable", str(Path(run_dir) / SCRIPT)]


@hookimpl
def register_launchers(register):
    register(Launcher("slurm", command, "sbatch to a Slurm cluster (runs folder on a shared filesystem)",
                      submit=submit, liveness=liveness, stop=stop))
