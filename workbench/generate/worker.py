"""The generation worker: ``python -m workbench.generate.worker``, JSON lines on stdin/stdout.

One process holds the models, so the TUI and the CLI never import torch. Each
base model (backend + model source + precision) is loaded once, through the
training side's :func:`workbench.train.trainer.load_model`; every run's LoRA
adapter is attached to it as a named PEFT adapter, so a second pane on the
same base costs an adapter load (milliseconds for a small LoRA), not a model
load. The untuned base is the same model inside ``disable_adapter()``.

Requests, one JSON object a line::

    {"id": "r1", "op": "generate", "prompt": "...", "temperature": 0.7, "top_p": 0.9,
     "max_new_tokens": 40, "seed": 1234, "n": 1,
     "panes": [{"pane": "p1", "run_dir": "/abs/run", "checkpoint": "final"},
               {"pane": "p0", "base": {"backend": "tiny", "model": null}}]}
    {"id": "r2", "op": "stats"}
    {"id": "r3", "op": "cancel", "target": "r1"}
    {"op": "shutdown"}

Replies: ``{"id", "pane", "loading": what}`` before a base model loads;
``{"id", "pane", "sample": i, "token": piece}`` with the text generated since
the previous piece, at most one every :data:`COALESCE_S` (tokens arriving
faster are joined into one piece, so a fast model does not flood the TUI with
a message per token), then ``{"id", "pane", "sample": i, "done": true, "text": full}``;
``{"id", "pane", "error": one line}`` for a pane that failed (the others go
on); ``{"id", "stats": {...}}``; and ``{"id", "end": true}`` last for every
request. Sample ``i`` of a pane is seeded with ``seed + i`` right before it is
generated, exactly as the training's ``samples`` evaluator seeds it, so the
worker reproduces a run's ``sample`` events. The worker exits on
``shutdown`` or when its stdin closes (its parent went away).
"""

from __future__ import annotations

import gc
import json
import os
import queue
import signal
import sys
import threading
import time
import traceback
from collections import Counter, OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from workbench import offline, sampling
from workbench.generate.client import GenerationError, adapter_path, run_base
from workbench.train.errors import UserError, first_line

MAX_BASES = 3  # base models kept loaded at once; the least recently used goes first
COALESCE_S = 0.03  # streamed text goes out at most this often (plus the first token, at once)


class Cancelled(Exception):
    """Raised inside ``generate`` (from the streamer) when the request was cancelled."""


@dataclass
class LoadedBase:
    """One base model in memory, and the adapters attached to it (path key -> adapter name)."""

    key: tuple[str, str, str]
    model: Any
    tokenizer: Any
    autocast: Any
    adapters: dict[str, tuple[str, int]] = field(default_factory=dict)  # path -> (name, mtime)
    counter: int = 0

    @property
    def peft(self) -> bool:
        return hasattr(self.model, "peft_config")


class TokenStream:
    """A ``generate`` streamer that reports the new text at most every ``interval`` seconds.

    The whole continuation is decoded after each token; a trailing U+FFFD (a
    character whose bytes are still arriving) is held back, so the pieces
    always join to the final text. The first piece goes out at once (the
    user sees the model start), later ones once ``interval`` has passed since
    the last, and :meth:`end` sends what is left.
    """

    def __init__(self, tokenizer: Any, emit: Any, cancelled: Any,
                 interval: float = COALESCE_S, clock: Any = time.monotonic) -> None:
        self.tokenizer = tokenizer
        self.clock = clock
        self.emit = emit
        self.cancelled = cancelled
        self.interval = interval
        self.ids: list[int] = []
        self.sent = ""  # the text emitted so far
        self.ready = ""  # the stable text decoded so far (``sent`` plus what waits)
        self.last_emit: float | None = None
        self.pieces = 0
        self.prompt_seen = False

    def put(self, value: Any) -> None:
        if self.cancelled():
            raise Cancelled
        if not self.prompt_seen:  # generate() hands the prompt over first
            self.prompt_seen = True
            return
        self.ids.extend(int(t) for t in value.reshape(-1).tolist())
        text = self.tokenizer.decode(self.ids, skip_special_tokens=True)
        stable = text.rstrip("\ufffd")
        if stable.startswith(self.sent):
            self.ready = stable
        now = self.clock()
        if self.last_emit is None or now - self.last_emit >= self.interval:
            self.flush(now)

    def flush(self, now: float | None = None) -> None:
        """Send the stable text not sent yet, if any."""
        if len(self.ready) > len(self.sent) and self.ready.startswith(self.sent):
            self.emit(self.ready[len(self.sent):])
            self.sent = self.ready
            self.pieces += 1
            self.last_emit = self.clock() if now is None else now

    def end(self) -> None:
        """Generation finished: send what waited."""
        self.flush()


class Worker:
    """Serves requests one at a time; see the module docstring for the protocol."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.out_lock = threading.Lock()
        self.bases: OrderedDict[tuple[str, str, str], LoadedBase] = OrderedDict()
        self.registries: dict[str | None, Any] = {}
        self.base_loads: Counter[str] = Counter()
        self.adapter_loads: Counter[str] = Counter()
        self.cancelled: set[str] = set()
        self.runs_roots: set[Path] = set()  # where the queue's runs live, from the panes seen

    # --- output ---------------------------------------------------------------

    def send(self, **message: Any) -> None:
        line = json.dumps(message, ensure_ascii=False)
        with self.out_lock:
            self.out.write(line + "\n")
            self.out.flush()

    def is_cancelled(self, rid: Any) -> bool:
        """Whether request ``rid`` was cancelled (or the worker is shutting down)."""
        return str(rid) in self.cancelled or "*" in self.cancelled

    # --- requests ---------------------------------------------------------------

    def handle(self, request: dict[str, Any]) -> None:
        rid = request.get("id")
        op = request.get("op")
        try:
            if op == "generate":
                self.generate(request)
            elif op == "stats":
                self.send(id=rid, stats=self.stats())
            else:
                self.send(id=rid, error=f"unknown op {op!r} (use generate, stats, cancel, shutdown)")
        finally:
            self.cancelled.discard(str(rid))
            self.send(id=rid, end=True)

    def stats(self) -> dict[str, Any]:
        return {
            "base_loads": dict(self.base_loads),
            "adapter_loads": dict(self.adapter_loads),
            "loaded": [
                {"base": "|".join(b.key), "adapters": sorted(name for name, _ in b.adapters.values())}
                for b in self.bases.values()
            ],
        }

    def generate(self, request: dict[str, Any]) -> None:
        rid = request.get("id")
        panes = [p for p in request.get("panes") or [] if isinstance(p, dict)]
        try:
            prompt = request["prompt"]
            if not isinstance(prompt, str):
                raise TypeError("the prompt must be a string")
            settings = {
                "temperature": float(request.get("temperature", sampling.TEMPERATURE)),
                "top_p": float(request.get("top_p", sampling.TOP_P)),
                "max_new_tokens": int(request.get("max_new_tokens", sampling.MAX_NEW_TOKENS)),
            }
            seed = int(request.get("seed", sampling.SEED))
            n = max(int(request.get("n", sampling.NUM_SAMPLES)), 1)
        except (KeyError, TypeError, ValueError) as exc:
            for pane in panes:
                self.send(id=rid, pane=pane.get("pane"), error=f"bad request: {describe(exc)}")
            return
        for pane in panes:
            pid = pane.get("pane")
            if self.is_cancelled(rid):
                self.send(id=rid, pane=pid, error="cancelled", cancelled=True)
                continue
            try:
                base, adapter = self.target(rid, pane)
                for index in range(n):
                    text = self.sample(rid, pid, index, base, adapter, prompt, seed + index, settings)
                    self.send(id=rid, pane=pid, sample=index, done=True, text=text)
            except Cancelled:
                self.send(id=rid, pane=pid, error="cancelled", cancelled=True)
            except Exception as exc:  # noqa: BLE001 - one pane's failure must not end the others
                if not isinstance(exc, (UserError, GenerationError)):
                    traceback.print_exc()
                self.send(id=rid, pane=pid, error=describe(exc))

    # --- models -------------------------------------------------------------------

    def target(self, rid: Any, pane: dict[str, Any]) -> tuple[LoadedBase, str | None]:
        """The loaded base and the adapter name (None: the untuned base) a pane asks for."""
        if pane.get("run_dir"):
            run_dir = Path(pane["run_dir"])
            self.runs_roots.add(run_dir.resolve().parent.parent)
            spec = run_base(run_dir)
            path = adapter_path(run_dir, pane.get("checkpoint") or "final")
            base = self.base(rid, pane.get("pane"), spec)
            return base, self.adapter(base, path)
        asked = pane.get("base")
        if not isinstance(asked, dict) or not asked.get("backend"):
            raise UserError('a pane needs "run_dir" or "base": {"backend": ..., "model": ...}')
        return self.base(rid, pane.get("pane"), asked), None

    def registry(self, plugins_dir: str | None) -> Any:
        if plugins_dir not in self.registries:
            from workbench.plugins import load_plugins

            self.registries[plugins_dir] = load_plugins(plugins_dir)
        return self.registries[plugins_dir]

    def base(self, rid: Any, pid: Any, spec: dict[str, Any]) -> LoadedBase:
        """The base model for ``spec`` (backend, model, plugins_dir, precision), loading it once."""
        from workbench.schema import Experiment
        from workbench.train.sources import check_hub_model, hub_for, offline_setting
        from workbench.train.trainer import detect_hardware, load_model

        registry = self.registry(spec.get("plugins_dir"))
        name = spec["backend"]
        backend = registry.backends.get(name)
        if backend is None:
            raise UserError(f"unknown backend {name!r} (known: {', '.join(sorted(registry.backends))})")
        source = spec.get("model") or backend.resolve_default_model()
        with hub_for(str(source), offline_setting(spec)):
            check_hub_model(str(source))  # offline and not cached: fail now, before torch loads
        key = (name, str(source), spec.get("precision") or "auto")
        if key in self.bases:
            self.bases.move_to_end(key)
            return self.bases[key]
        while len(self.bases) >= MAX_BASES:
            self.evict_oldest()
        hardware = detect_hardware(spec.get("precision") or "auto", self.pick_gpu())
        self.send(id=rid, pane=pid, loading=f"{name}: {source}")
        experiment = spec.get("experiment")
        if isinstance(experiment, dict):
            experiment = Experiment.model_validate(experiment)
        else:  # a bare base pane: only what load_model reads
            experiment = _BareExperiment(model=spec.get("model"))
        with hub_for(str(source), offline_setting(spec)):  # the network only for a hub id
            model, tokenizer = load_model(backend, experiment, hardware)
        if hardware.cuda:
            model = model.to("cuda")
        model.eval()
        self.base_loads["|".join(key)] += 1
        loaded = LoadedBase(key, model, tokenizer, hardware.autocast)
        self.bases[key] = loaded
        return loaded

    def evict_oldest(self) -> None:
        """Drop the least recently used base model and give its memory back (GPU included)."""
        _, evicted = self.bases.popitem(last=False)
        cuda = getattr(evicted.model, "device", None) is not None and evicted.model.device.type == "cuda"
        del evicted
        gc.collect()  # before the next base loads: never MAX_BASES + 1 models at once
        if cuda:
            import torch

            torch.cuda.empty_cache()

    def pick_gpu(self) -> int | None:
        """A GPU the queue is not using (else the least loaded), as a torch index; None on a CPU."""
        import torch

        if not torch.cuda.is_available():
            return None
        from workbench import gpus, runs

        reserved = {str(g) for root in self.runs_roots for run in runs.list_runs(root)
                    if run.state == "running" for g in run.status.get("gpus") or []}
        env = os.environ.get("CUDA_VISIBLE_DEVICES")
        visible = None if env is None else [g.strip() for g in env.split(",") if g.strip()]
        return gpus.choose_gpu(gpus.query(), reserved, visible)

    def adapter(self, base: LoadedBase, path: Path) -> str:
        """The name of ``path``'s adapter on ``base``, attaching it (again, if it changed on disk)."""
        key = str(path.resolve())
        if not (path / "adapter_config.json").is_file():
            raise UserError(f"no LoRA adapter in {path}")
        mtime = max(p.stat().st_mtime_ns for p in path.iterdir() if p.name.startswith("adapter_"))
        known = base.adapters.get(key)
        if known and known[1] == mtime:
            return known[0]
        if known:  # rewritten since (a resumed run finished again): drop the stale weights
            base.model.delete_adapter(known[0])
        base.counter += 1
        name = f"a{base.counter}"
        if base.peft:
            base.model.load_adapter(str(path), adapter_name=name)
        else:
            from peft import PeftModel

            base.model = PeftModel.from_pretrained(base.model, str(path), adapter_name=name)
        base.model.eval()
        base.adapters[key] = (name, mtime)
        self.adapter_loads[key] += 1
        return name

    def sample(self, rid: Any, pid: Any, index: int, base: LoadedBase, adapter: str | None,
               prompt: str, seed: int, settings: dict[str, Any]) -> str:
        """One seeded continuation of ``prompt``, streamed token by token; returns the full text."""
        import contextlib

        import torch
        from transformers import set_seed

        model, tokenizer = base.model, base.tokenizer
        if adapter is not None:
            model.set_adapter(adapter)
        adapters_off = model.disable_adapter() if adapter is None and base.peft \
            else contextlib.nullcontext()
        device = next(model.parameters()).device
        enc = tokenizer(prompt, return_tensors="pt").to(device)
        sampling: dict[str, Any] = (
            {"do_sample": True, "temperature": settings["temperature"], "top_p": settings["top_p"]}
            if settings["temperature"] > 0 else {"do_sample": False}
        )
        stream = TokenStream(
            tokenizer, lambda piece: self.send(id=rid, pane=pid, sample=index, token=piece),
            lambda: self.is_cancelled(rid),
        )
        with adapters_off, torch.no_grad(), base.autocast():
            set_seed(seed)
            out = model.generate(
                **enc, max_new_tokens=settings["max_new_tokens"], pad_token_id=tokenizer.pad_token_id,
                streamer=stream, **sampling,
            )
        text = tokenizer.decode(out[0, enc["input_ids"].shape[1]:], skip_special_tokens=True)
        if text.startswith(stream.sent) and len(text) > len(stream.sent):
            self.send(id=rid, pane=pid, sample=index, token=text[len(stream.sent):])
        return text


@dataclass(frozen=True)
class _BareExperiment:
    """Stands in for an Experiment when a pane names only a backend and a model."""

    model: str | None = None


def describe(exc: BaseException) -> str:
    """One line for a pane's error (with the fix, when a UserError knows it)."""
    if isinstance(exc, UserError) and exc.hint:
        return f"{exc} ({exc.hint})"
    if isinstance(exc, (UserError, GenerationError)):
        return str(exc)
    return f"{type(exc).__name__}: {first_line(exc)}".rstrip(": ")


def read_requests(stream: TextIO, work: queue.Queue, worker: Worker) -> None:
    """Read stdin in its own thread, so a cancel arrives while a generation runs."""
    for line in stream:
        line = line.strip()
        if not line:
            continue
        try:
            request = json.loads(line)
        except ValueError:
            worker.send(error=f"not JSON: {line[:80]}")
            continue
        if not isinstance(request, dict):
            worker.send(error="a request must be a JSON object")
            continue
        op = request.get("op")
        if op == "cancel":
            worker.cancelled.add(str(request.get("target")))
            continue
        if op == "shutdown":
            break
        work.put(request)
    worker.cancelled.add("*")
    work.put(None)


def main() -> int:
    """Serve until ``shutdown`` or the end of stdin."""
    offline.apply()  # no network until a pane asks for a hub model (see Worker.base)
    # Only protocol lines may reach stdout: send anything a library prints to stderr.
    protocol = os.fdopen(os.dup(sys.stdout.fileno()), "w", encoding="utf-8", buffering=1)
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    sys.stdout = sys.stderr
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    # Ctrl-C in the terminal reaches the whole process group; the parent decides when we stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    worker = Worker(protocol)
    work: queue.Queue = queue.Queue()
    reader = threading.Thread(target=read_requests, args=(sys.stdin, work, worker), daemon=True)
    reader.start()
    worker.send(ready=True, pid=os.getpid())
    while True:
        request = work.get()
        if request is None:
            return 0
        worker.handle(request)


if __name__ == "__main__":
    code = main()
    sys.stderr.flush()
    os._exit(code)  # skip interpreter teardown (torch's takes seconds); nothing is left to save
