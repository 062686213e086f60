"""Fixtures for the TUI tests: a workspace (TOML, plugins folder, runs folder), run writers
that use the engine's own writer, real processes to stop, and a Pilot helper that waits.

Every run folder here is written by ``runs.append_event`` / ``runs.write_status`` /
``launch.prepare`` / ``launch.start``, never by hand. Launched runs use a real
launcher plugin (``fake``) whose process is ``fake_trainer.py``: the real queue,
spawn, detach and SIGTERM paths, with a trainer that finishes in a second.
"""

from __future__ import annotations

import math
import os
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from helpers import HERE, T0  # tests/tui is on sys.path (pytest prepend import mode)
from textual.widgets import Input

from workbench import config as config_mod
from workbench import launch, queue, runs

TOML = """\
plugins_dir = "plugins"

[defaults]
backend = "testlm"
launcher = "fake"
evaluators = ["held_out"]
prompts = [">be me\\n>"]

[defaults.lora]
r = 4

[defaults.train]
steps = 40
eval_every = 10
save_every = 10

[defaults.data]
source = "test/dataset"
train_split = "train[:100]"
eval_split = "train[100:150]"

[experiments.alpha]
description = "the reference run"

[experiments.beta]
description = "alpha with LoRA r=8: only the rank changes"
extends = "alpha"
lora.r = 8

[experiments.sweep]
description = "a learning-rate sweep on alpha"
extends = "alpha"
matrix = { "train.learning_rate" = [0.001, 0.003] }
"""

PLUGIN = '''\
"""Test plugin: a backend, an evaluator and a launcher that runs fake_trainer.py."""
import sys

from workbench.api import Backend, Evaluator, Launcher, hookimpl

TRAINER = {trainer!r}


@hookimpl
def register_backends(register):
    register(Backend(name="testlm", default_model="test/TestLM-1M", target_modules=("q_proj",)))


@hookimpl
def register_evaluators(register):
    register(Evaluator(name="held_out", compute=lambda ctx: {{}}, description="fake held-out metric"))


@hookimpl
def register_launchers(register):
    register(Launcher(name="fake", command=lambda run_dir, dist: [sys.executable, TRAINER, run_dir],
                      description="fake trainer for tests"))
'''


@dataclass
class Workspace:
    """A project folder: ``experiments.toml``, ``plugins/``, ``runs/``."""

    path: Path
    processes: list[subprocess.Popen] = field(default_factory=list)

    @property
    def toml(self) -> Path:
        return self.path / "experiments.toml"

    @property
    def root(self) -> Path:
        return self.path / "runs"

    @property
    def plugins(self) -> Path:
        return self.path / "plugins"

    def config(self) -> config_mod.Config:
        return config_mod.load(self.toml)

    def app(self, **options: Any):
        from workbench.app import make_app

        options.setdefault("poll_interval", 0.1)
        return make_app(self.toml, **options)

    # --- run folders, written by the engine's own writer ------------------------------

    def prepare(self, name: str) -> Path:
        """A run folder as ``launch.prepare`` makes it (config.json, status queued)."""
        return launch.prepare(self.config(), name, self.root, self.plugins)

    def sleeper(self, seconds: float = 120) -> subprocess.Popen:
        """A real process in its own session (like a run) that a test may stop or kill."""
        proc = subprocess.Popen(["sleep", str(seconds)], start_new_session=True)
        self.processes.append(proc)
        return proc

    def make_run(self, name: str, state: str, steps: int = 0, total: int = 40, pid: int | None = None,
                 evals: int = 10, samples: bool = True, step_s: float = 0.5, rate: float = 2048.0,
                 **status: Any) -> Path:
        """A run of ``name`` that reached ``steps``, in ``state``, with its events (``rate`` tokens/s)."""
        run_dir = self.prepare(name)
        for step in range(1, steps + 1):
            loss = 3.0 / (1 + step / 15) + 0.3 + 0.05 * math.sin(step)
            runs.append_event(run_dir, "train", step=step, loss=loss, lr=1e-3, grad_norm=1.0,
                              tokens=step * 256, tokens_per_s=rate, epoch=step / total,
                              time=T0 + step * step_s)
            if evals and step % evals == 0:
                runs.append_event(run_dir, "eval", step=step, eval_loss=loss, perplexity=math.exp(loss),
                                  bits_per_byte=loss / 2.8, time=T0 + step * step_s)
        if samples and steps:
            runs.append_event(run_dir, "sample", step=steps, prompt=">be me\n>",
                              checkpoint=str(run_dir / "checkpoints" / f"checkpoint-{steps}"),
                              text=f"sample of {name} at step {steps}", index=0, seed=1234,
                              time=T0 + steps * step_s)
        fields: dict[str, Any] = dict(state=state, step=steps, max_steps=total, started=T0,
                                      tokens_per_s=rate if steps else None)
        if steps and evals and steps >= evals:
            best = min(math.exp(3.0 / (1 + s / 15) + 0.3 + 0.05 * math.sin(s))
                       for s in range(evals, steps + 1, evals))
            fields.update(best_perplexity=best, best_bits_per_byte=math.log2(best) / 4)
        if state == "running":
            proc_pid = pid if pid is not None else self.sleeper().pid
            fields.update(pid=proc_pid, pgid=proc_pid, pid_start=runs.process_start_time(proc_pid))
        if state in ("finished", "failed", "stopped"):
            fields["ended"] = T0 + steps * step_s
        fields.update(status)
        runs.write_status(run_dir, **fields)
        return run_dir

    def cleanup(self) -> None:
        """Leave no process behind: cancel queued runs, stop running ones, end sleepers."""
        for _ in range(5):  # a scheduler may start a queued run while we look: look again
            acted = False
            for run in runs.list_runs(self.root):
                if run.state == "queued":
                    try:
                        queue.cancel(run)
                        acted = True
                    except runs.RunError:
                        pass
                raw = runs._read_raw_status(run.path)
                pgid = raw.get("pgid") or raw.get("pid")
                if isinstance(pgid, int) and runs.is_alive(raw.get("pid"), raw.get("pid_start")):
                    try:
                        os.killpg(pgid, signal.SIGKILL)
                        acted = True
                    except (ProcessLookupError, PermissionError):
                        pass
            if not acted:
                break
            time.sleep(0.3)
        for proc in self.processes:
            if proc.poll() is None:
                proc.kill()
            proc.wait()


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("FAKE_STEP_S", "0.02")
    Input.cursor_blink = False  # type: ignore[assignment]


@pytest.fixture
def workspace(tmp_path: Path):
    """A fresh project folder; every process it started is gone after the test."""
    ws = Workspace(tmp_path)
    ws.toml.write_text(TOML)
    ws.plugins.mkdir()
    (ws.plugins / "testing.py").write_text(PLUGIN.format(trainer=str(HERE / "fake_trainer.py")))
    try:
        yield ws
    finally:
        ws.cleanup()


