"""How fast the readers answer on a long run: ``results``, ``status``, ``report --no-generate``.

Run it from the repository root::

    .venv/bin/python benchmarks/bench_readers.py                      # this checkout
    .venv/bin/python benchmarks/bench_readers.py --code /work/main    # another checkout, for "before"

It writes a runs folder with one experiment of ``--runs`` runs (default 1)
of ``--events`` train events each (default 200,000; an ``eval`` event every
100 steps, a checkpoint and samples every 10,000) as the trainer writes them,
then times each command as a user starts it (``python -m workbench.cli ...``,
a fresh process: start-up included) and reports its peak memory (max RSS).
Each command runs ``--repeat`` times (default 3) and the best time is kept.

``cold``: before each run of the command the readers' cache (``.summary.json``
in each run folder, see :mod:`workbench.summary`) is deleted, as for a run
written by an older workbench; ``warm``: the cache is left as the previous
command wrote it, as after the trainer's last write. A checkout without the
cache shows the same figure in both rows.

Measured on the shared 2-core development machine (load average ~13, so
wall times are 5-10x the CPU times; CPU seconds are the comparable figure),
200,000 train events, ``--repeat 1``:

====================== =================== ===================================
command                before (main)       after (run model + summary)
====================== =================== ===================================
results                2.51 cpu-s, 340 MB  cold 2.38 cpu-s, warm 0.44 cpu-s, 52 MB
status                 0.39 cpu-s, 341 MB  cold 2.34 cpu-s, warm 0.49 cpu-s, 52 MB
report --no-generate   11.1 cpu-s, 451 MB  cold 3.66 cpu-s, warm 2.22 cpu-s, 90 MB
====================== =================== ===================================

Cold is bounded by ``json.loads`` of every line (~1.3 cpu-s of the 2.4);
the trainer keeps the summary warm (it folds the new events at each
evaluation and at the end), so cold is a one-time cost for runs written by
an older workbench. ``status`` before read no events at all and showed
the last step's tokens/s and no metric beyond the two built-ins.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def write_run(folder: Path, events: int, seed: int) -> None:
    folder.mkdir(parents=True)
    rng = random.Random(seed)
    experiment = {"name": folder.parent.name, "backend": "tiny", "model": "org/Bench-1M",
                  "lora": {"r": 8}, "train": {"steps": events}, "prompts": [">be me\n>"]}
    (folder / "config.json").write_text(json.dumps({"experiment": experiment}))
    t = 1.7e9
    with open(folder / "events.jsonl", "w") as fh:
        fh.write(json.dumps({"type": "status", "time": t, "state": "running", "message": "started"}) + "\n")
        for step in range(1, events + 1):
            t += 0.05
            loss = 3.0 / (1 + step / 5000) + rng.random() * 0.1
            fh.write(json.dumps({"type": "train", "time": t, "step": step, "loss": loss, "lr": 2e-4,
                                 "grad_norm": 1.0, "tokens": 512, "tokens_per_s": 10240.0,
                                 "epoch": step / events}) + "\n")
            if step % 100 == 0:
                fh.write(json.dumps({"type": "eval", "time": t, "step": step, "eval_loss": loss,
                                     "perplexity": 2.718 ** loss, "bits_per_byte": loss / 2.77,
                                     "tokens": 4000, "bytes": 16000}) + "\n")
            if step % 10_000 == 0:
                fh.write(json.dumps({"type": "checkpoint", "time": t, "step": step,
                                     "path": f"checkpoints/checkpoint-{step}"}) + "\n")
                fh.write(json.dumps({"type": "sample", "time": t, "step": step, "prompt": ">be me\n>",
                                     "text": "> be bench", "checkpoint": f"checkpoint-{step}",
                                     "index": 0, "seed": 1234}) + "\n")
        fh.write(json.dumps({"type": "status", "time": t, "state": "finished", "message": "done"}) + "\n")
    (folder / "status.json").write_text(json.dumps({
        "state": "finished", "experiment": folder.parent.name, "run_id": folder.name, "started": 1.7e9,
        "ended": t, "step": events, "max_steps": events, "tokens_per_s": 10240.0,
        "train_seconds": t - 1.7e9, "best_perplexity": 2.0,
    }))


def timed(argv: list[str], env: dict[str, str], cwd: Path) -> tuple[float, float, float]:
    """Wall seconds, CPU seconds (user + system) and the child's peak RSS in MB.

    On a shared machine the wall time moves with the load; the CPU time much less.
    """
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    before, cpu0 = usage.ru_maxrss, usage.ru_utime + usage.ru_stime
    t0 = time.perf_counter()
    proc = subprocess.run(argv, env=env, cwd=cwd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed:\n{proc.stderr}")
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = usage.ru_utime + usage.ru_stime - cpu0
    return wall, cpu, max(usage.ru_maxrss, before) / 1024  # ru_maxrss: the largest child so far, KiB


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--code", type=Path, help="the checkout whose workbench to time (default: this one)")
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="bench-readers-"))
    try:
        root = tmp / "runs"
        for i in range(1, args.runs + 1):
            write_run(root / "bench" / str(i), args.events, seed=i)
        env = dict(os.environ, HF_HUB_OFFLINE="1")
        if args.code:
            env["PYTHONPATH"] = str(args.code.resolve())
        base = [sys.executable, "-m", "workbench.cli"]
        commands = {
            "results": [*base, "results", "--runs-dir", str(root)],
            "status": [*base, "status", "--runs-dir", str(root)],
            "status RUN": [*base, "status", "bench#1", "--runs-dir", str(root)],
            "report --no-generate": [*base, "report", "--no-generate", "-o", str(tmp / "report"),
                                     "--runs-dir", str(root)],
        }
        code = args.code or Path(__file__).resolve().parents[1]
        print(f"{args.runs} run(s) of {args.events:,} train events "
              f"({sum(p.stat().st_size for p in root.rglob('events.jsonl')) / 1e6:.0f} MB of events.jsonl); "
              f"code: {code}")
        print(f"{'command':24} {'cold s':>7} {'cpu s':>6} {'warm s':>7} {'cpu s':>6} {'peak MB':>8}")
        for name, argv in commands.items():
            cold, warm, peak = [], [], 0.0
            for _ in range(args.repeat):
                for cache in root.rglob(".summary.json"):
                    cache.unlink()
                wall, cpu, mb = timed(argv, env, tmp)
                cold.append((wall, cpu))
                peak = max(peak, mb)
                warm.append(timed(argv, env, tmp)[:2])
            (cw, cc), (ww, wc) = min(cold), min(warm)
            print(f"{name:24} {cw:7.2f} {cc:6.2f} {ww:7.2f} {wc:6.2f} {peak:8.0f}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
