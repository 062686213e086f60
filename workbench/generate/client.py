"""Talk to the generation worker: start it on first use, stream its replies, survive its death.

Standard library only: the TUI imports this module and must never import
torch. :class:`GenerationClient` starts ``python -m workbench.generate.worker``
lazily, sends requests and hands back a :class:`Request` per request, an
iterator of the worker's reply messages (see :mod:`workbench.generate.worker`
for their shapes) that blocks, so a Textual thread worker or a CLI loop can
consume it. If the worker dies mid-request, every pane still waiting gets an
``error`` message saying so and the request ends: nothing hangs. The worker
is killed on :meth:`GenerationClient.close` and at interpreter exit, and it
exits by itself when its stdin closes, so it never outlives its parent.
"""

from __future__ import annotations

import atexit
import itertools
import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from workbench import runs, sampling

WORKER_MODULE = "workbench.generate.worker"
FINAL = "final"
_CHECKPOINT_RE = re.compile(r"^checkpoint-(\d+)$")


class GenerationError(Exception):
    """A pane that can't be generated (no such checkpoint, no config); ``str()`` is one line."""


# --- what a pane names ------------------------------------------------------------


def adapter_path(run_dir: str | Path, checkpoint: str | int | None = FINAL) -> Path:
    """The adapter folder of a run's ``final`` adapter or of ``checkpoint-N`` (or just ``N``)."""
    run_dir = Path(run_dir)
    name = str(checkpoint if checkpoint not in (None, "") else FINAL)
    if name == FINAL:
        return run_dir / runs.ADAPTER
    if name.isdigit():
        name = f"checkpoint-{name}"
    if not _CHECKPOINT_RE.match(name):
        raise GenerationError(f"bad checkpoint {checkpoint!r}: use 'final', 'checkpoint-N' or N")
    return run_dir / runs.CHECKPOINTS / name


def checkpoints(run_dir: str | Path) -> list[str]:
    """The adapters a run has on disk: ``checkpoint-N`` by step, then ``final`` if it exists."""
    run_dir = Path(run_dir)
    names = [c.name for c in runs.checkpoints(run_dir)]  # complete ones only
    if (run_dir / runs.ADAPTER / "adapter_config.json").is_file():
        names.append(FINAL)
    return names


def checkpoint_step(run_dir: str | Path, checkpoint: str | None = FINAL) -> int | None:
    """The training step an adapter was saved at (``final``: the run's last step)."""
    m = _CHECKPOINT_RE.match(str(checkpoint or ""))
    if m:
        return int(m.group(1))
    if str(checkpoint).isdigit():
        return int(str(checkpoint))
    step = runs.read_status(Path(run_dir)).get("step")
    return step if isinstance(step, int) else None


def run_base(run_dir: str | Path) -> dict[str, Any]:
    """What the worker needs to load a run's base model, from its ``config.json``."""
    config = runs.read_config(Path(run_dir))
    experiment = config.get("experiment")
    if not isinstance(experiment, dict) or not experiment.get("backend"):
        raise GenerationError(f"{Path(run_dir) / runs.CONFIG} is missing or unreadable: not a run folder")
    return {
        "backend": experiment["backend"],
        "model": experiment.get("model"),
        "plugins_dir": config.get("plugins_dir"),
        "precision": (experiment.get("train") or {}).get("precision", "auto"),
        "experiment": experiment,
        "offline": config.get("offline") is True,
    }


def run_pane(pane: str, run_dir: str | Path, checkpoint: str = FINAL) -> dict[str, Any]:
    """A pane spec for a run's adapter (``final`` or ``checkpoint-N``)."""
    return {"pane": pane, "run_dir": str(Path(run_dir).resolve()), "checkpoint": checkpoint}


def base_pane(pane: str, backend: str, model: str | None = None,
              plugins_dir: str | None = None) -> dict[str, Any]:
    """A pane spec for an untuned base model; ``run_base(run_dir)`` gives a run's."""
    return {"pane": pane, "base": {"backend": backend, "model": model, "plugins_dir": plugins_dir}}


# --- requests ---------------------------------------------------------------------


@dataclass
class PaneResult:
    """What one pane produced: a text per sample, or the error that ended it."""

    texts: list[str] = field(default_factory=list)
    error: str | None = None


class Request:
    """One request's replies, in order; iterate to consume them (blocks until they arrive).

    Iteration ends after the worker's ``end`` message (or the synthetic one a
    crash produces). :meth:`results` consumes what is left and returns each
    pane's texts or error.
    """

    def __init__(self, client: GenerationClient, rid: str, panes: list[str], n: int) -> None:
        self.client = client
        self.id = rid
        self.n = n
        self.panes: dict[str, PaneResult] = {p: PaneResult() for p in panes}
        self.stats: dict[str, Any] | None = None
        self.finished = False
        self._queue: queue.Queue[dict[str, Any]] = queue.Queue()
        self._settled: set[str] = set()
        self._ended = False
        self._lock = threading.Lock()

    # called from the client's reader thread
    def _deliver(self, message: dict[str, Any]) -> None:
        with self._lock:
            if self._ended:
                return
            pane = message.get("pane")
            if pane is not None and pane not in self.panes:
                self.panes[pane] = PaneResult()
            if message.get("error") is not None and pane is not None:
                self._settled.add(pane)
            elif message.get("done") and pane is not None and message.get("sample", 0) >= self.n - 1:
                self._settled.add(pane)
            if message.get("end"):
                self._ended = True
        self._queue.put(message)

    def _fail(self, reason: str) -> None:
        """End the request with ``reason`` as the error of every pane still waiting."""
        with self._lock:
            waiting = [] if self._ended else [p for p in self.panes if p not in self._settled]
        for pane in waiting:
            self._deliver({"id": self.id, "pane": pane, "error": reason})
        self._deliver({"id": self.id, "end": True})

    def _apply(self, message: dict[str, Any]) -> None:
        pane = message.get("pane")
        if "stats" in message:
            self.stats = message["stats"]
        if pane is None:
            return
        result = self.panes.setdefault(pane, PaneResult())
        if message.get("error") is not None:
            result.error = message["error"]
        elif message.get("done"):
            result.texts.append(message.get("text", ""))

    def messages(self, timeout: float | None = None) -> Iterator[dict[str, Any]]:
        """Yield each reply as it arrives; ``timeout`` (seconds) bounds each wait."""
        while not self.finished:
            try:
                message = self._queue.get(timeout=timeout)
            except queue.Empty:
                raise TimeoutError(f"no reply from the generation worker in {timeout}s") from None
            self._apply(message)
            if message.get("end"):
                self.finished = True
            yield message

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return self.messages()

    def results(self, timeout: float | None = None) -> dict[str, PaneResult]:
        """Wait for the end; every pane's texts (one per sample) or error."""
        for _ in self.messages(timeout):
            pass
        return self.panes

    def cancel(self) -> None:
        """Ask the worker to stop this request; its remaining panes end with ``cancelled``."""
        self.client.cancel(self)


# --- the client -----------------------------------------------------------------------


class GenerationClient:
    """Starts the worker on first use and routes its replies to their :class:`Request`.

    Thread-safe: requests may be sent from any thread; the worker serves them
    one at a time, in order.
    """

    def __init__(self, python: str | None = None, env: dict[str, str] | None = None,
                 cwd: str | Path | None = None) -> None:
        self.python = python or sys.executable
        self.env = env
        self.cwd = str(cwd) if cwd else None
        self.stderr: deque[str] = deque(maxlen=200)
        self._proc: subprocess.Popen | None = None
        self._pending: dict[str, tuple[Request, subprocess.Popen]] = {}
        self._lock = threading.RLock()
        self._ids = itertools.count(1)
        self._stderr_done: threading.Event | None = None
        self._atexit = False

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None and self._proc.poll() is None else None

    def _start(self) -> subprocess.Popen:
        if self._proc is not None and self._proc.poll() is None:
            return self._proc
        env = dict(os.environ if self.env is None else self.env)
        env.setdefault("PYTHONUNBUFFERED", "1")
        env.setdefault("TOKENIZERS_PARALLELISM", "false")
        proc = subprocess.Popen(
            [self.python, "-m", WORKER_MODULE], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True, encoding="utf-8", errors="replace", bufsize=1,
            env=env, cwd=self.cwd, close_fds=True,
        )
        self._proc = proc
        done = threading.Event()
        self._stderr_done = done
        threading.Thread(target=self._drain_stderr, args=(proc, done), daemon=True).start()
        threading.Thread(target=self._read, args=(proc, done), daemon=True).start()
        if not self._atexit:
            atexit.register(self.close)
            self._atexit = True
        return proc

    def _drain_stderr(self, proc: subprocess.Popen, done: threading.Event) -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            self.stderr.append(line.rstrip("\n"))
        done.set()

    def _read(self, proc: subprocess.Popen, stderr_done: threading.Event) -> None:
        """Route each stdout line to its request; when the worker dies, fail what it left."""
        assert proc.stdout is not None
        for line in proc.stdout:
            try:
                message = json.loads(line)
            except ValueError:
                self.stderr.append(f"(stdout) {line.rstrip()}")
                continue
            if not isinstance(message, dict):
                continue
            with self._lock:
                entry = self._pending.get(str(message.get("id")))
                if entry is not None and message.get("end"):
                    del self._pending[str(message.get("id"))]
            if entry is not None:
                entry[0]._deliver(message)
        code = proc.wait()
        stderr_done.wait(2)
        reason = self._death_reason(code)
        with self._lock:
            orphans = [rid for rid, (_, p) in self._pending.items() if p is proc]
            failed = [self._pending.pop(rid)[0] for rid in orphans]
        for request in failed:
            request._fail(reason)

    def _death_reason(self, code: int | None) -> str:
        if code is not None and code < 0:
            try:
                how = f"killed by {signal.Signals(-code).name}"
            except ValueError:
                how = f"killed by signal {-code}"
        else:
            how = f"exit code {code}"
        last = next((ln.strip() for ln in reversed(self.stderr) if ln.strip()), "")
        return f"the generation worker stopped ({how})" + (f": {last}" if last else "")

    def submit(self, op: str, panes: list[dict[str, Any]] | None = None, n: int = 1,
               **payload: Any) -> Request:
        """Send one request; returns its :class:`Request` at once (replies stream into it)."""
        panes = list(panes or [])
        with self._lock:
            rid = f"r{next(self._ids)}"
            request = Request(self, rid, [str(p.get("pane")) for p in panes], n)
            proc = self._start()
            self._pending[rid] = (request, proc)
            line = json.dumps({"id": rid, "op": op, "panes": panes, "n": n, **payload})
            try:
                assert proc.stdin is not None
                proc.stdin.write(line + "\n")
                proc.stdin.flush()
            except (BrokenPipeError, OSError, ValueError):
                self._pending.pop(rid, None)
                proc.wait()
                if self._stderr_done is not None:
                    self._stderr_done.wait(2)
                request._fail(self._death_reason(proc.returncode))
        return request

    def generate(self, panes: list[dict[str, Any]], prompt: str, *,
                 temperature: float = sampling.TEMPERATURE, top_p: float = sampling.TOP_P,
                 max_new_tokens: int = sampling.MAX_NEW_TOKENS, seed: int = sampling.SEED,
                 n: int = sampling.NUM_SAMPLES) -> Request:
        """Generate ``n`` seeded samples of ``prompt`` in every pane (see :func:`run_pane`)."""
        return self.submit("generate", panes, n=n, prompt=prompt, temperature=temperature,
                           top_p=top_p, max_new_tokens=max_new_tokens, seed=seed)

    def stats(self, timeout: float | None = 60) -> dict[str, Any]:
        """Load counts and what is in memory: ``base_loads``, ``adapter_loads``, ``loaded``."""
        request = self.submit("stats")
        request.results(timeout)
        return request.stats or {}

    def cancel(self, request: Request) -> None:
        """Stop ``request`` early; harmless when it has already ended."""
        with self._lock:
            proc = self._proc
            if proc is None or proc.poll() is not None or request.id not in self._pending:
                return
            try:
                assert proc.stdin is not None
                proc.stdin.write(json.dumps({"op": "cancel", "target": request.id}) + "\n")
                proc.stdin.flush()
            except (BrokenPipeError, OSError, ValueError):
                pass

    def close(self, timeout: float = 3.0) -> None:
        """Shut the worker down (killing it if it does not leave within ``timeout``)."""
        with self._lock:
            proc, self._proc = self._proc, None
        if self._atexit:
            atexit.unregister(self.close)
            self._atexit = False
        if proc is None:
            return
        if proc.poll() is None:
            try:
                assert proc.stdin is not None
                proc.stdin.write(json.dumps({"op": "shutdown"}) + "\n")
                proc.stdin.close()
            except (BrokenPipeError, OSError, ValueError):
                pass
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def __enter__(self) -> GenerationClient:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
