"""What readers need from ``events.jsonl``, folded once and kept beside it.

A :class:`Summary` is the run's event log reduced to what every surface
shows: steps done, the last train event, tokens and step-seconds (for the
average tokens/s), the process sessions (for the training time without
resume gaps), every evaluation, samples, checkpoints, evaluator errors and
the malformed lines, plus downsampled loss, learning-rate and grad-norm
series and the metric series for charts, and the tokens and step-seconds
of the last :data:`WINDOW` train events (the recent tokens/s).
It is built by folding events in order, so it grows incrementally: the fold
state is saved as ``.summary.json`` with the byte offset of ``events.jsonl``
it covers, and the next reader folds only the bytes appended since. A
summary whose log was replaced or truncated, or whose format is older, is
rebuilt from scratch. Saving is best effort (a read-only or full disk just
means the next reader folds again). Standard library only.

Resumes: a ``resume`` event's ``from_step`` cuts train/eval/sample/checkpoint
records with a later step (work lost with the process, redone by the new
one), the way :func:`workbench.runs.effective` does; times and tokens of that
lost work still count towards training time and tokens/s, since it was
really spent.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from workbench import runs
from workbench.metrics import ENGINE_EVAL_FIELDS
from workbench.records import number, parse_event

SUMMARY = ".summary.json"
VERSION = 2  # 2: lr and grad_norm series, the recent-rate window
CHUNK = 1 << 22
WINDOW = 20  # train events in the recent tokens/s (the progress line)
MAX_DAMAGE = 5  # malformed lines named individually; the rest are counted
_NUM = (int, float)
_NUM_NONE = (int, float, type(None))
_LAST_TRAIN = ("step", "time", "loss", "lr", "grad_norm", "tokens_per_s", "peak_mem_gb")
Point = tuple[float, float]


class StreamSeries:
    """A min/max downsampled series built point by point, in bounded memory.

    Points fall in step buckets of ``width``; each bucket keeps its lowest and
    highest point. When there are more than ``cap`` buckets, the width doubles
    and neighbours merge, so however long the run, at most about ``2 * cap``
    points remain and spikes stay visible. The last point is always kept.
    """

    def __init__(self, cap: int = 500) -> None:
        self.cap = cap
        self.width = 1.0
        self.buckets: list[list[Any]] = []  # [key, (s, v) low, (s, v) high]
        self.last: Point | None = None
        self.count = 0

    def add(self, step: float, value: float) -> None:
        point = (step, value)
        key = int(step // self.width)
        self.last = point
        self.count += 1
        if self.buckets and self.buckets[-1][0] == key:
            bucket = self.buckets[-1]
            if value < bucket[1][1]:
                bucket[1] = point
            if value > bucket[2][1]:
                bucket[2] = point
            return
        self.buckets.append([key, point, point])
        if len(self.buckets) > self.cap:
            self._merge()

    def _merge(self) -> None:
        self.width *= 2
        merged: list[list[Any]] = []
        for key, low, high in self.buckets:
            key //= 2
            if merged and merged[-1][0] == key:
                b = merged[-1]
                b[1] = low if low[1] < b[1][1] else b[1]
                b[2] = high if high[1] > b[2][1] else b[2]
            else:
                merged.append([key, low, high])
        self.buckets = merged

    def cut(self, step: float) -> None:
        """Forget points after ``step`` (a resume redoes them)."""
        kept = []
        for key, low, high in self.buckets:
            pts = [p for p in (low, high) if p[0] <= step]
            if pts:
                kept.append([key, min(pts, key=lambda p: p[1]), max(pts, key=lambda p: p[1])])
        self.buckets = kept
        if self.last is not None and self.last[0] > step:
            self.last = self.points()[-1] if self.buckets else None

    def points(self) -> list[Point]:
        """The kept points in step order (each bucket's low and high, and the last point)."""
        out: list[Point] = []
        for _, low, high in self.buckets:
            out.extend(sorted({tuple(low), tuple(high)}, key=lambda p: p[0]))
        if self.last is not None and (not out or out[-1] != tuple(self.last)):
            out.append(tuple(self.last))  # type: ignore[arg-type]
        return out

    def to_json(self) -> dict[str, Any]:
        return {"cap": self.cap, "width": self.width, "buckets": self.buckets, "last": self.last,
                "count": self.count}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> StreamSeries:
        s = cls(int(data["cap"]))
        s.width = float(data["width"])
        s.buckets = [[int(k), tuple(lo), tuple(hi)] for k, lo, hi in data["buckets"]]
        s.last = tuple(data["last"]) if data["last"] is not None else None
        s.count = int(data["count"])
        return s


@dataclass
class Summary:
    """The fold of a run's events (see the module docstring). Build with :func:`summarise`."""

    offset: int = 0
    inode: int | None = None
    events: int = 0
    malformed: int = 0
    damage: list[str] = field(default_factory=list)
    sessions: list[list[float]] = field(default_factory=lambda: [[]])
    resumes: int = 0
    max_step: int | None = None
    last_train: dict[str, Any] | None = None
    train_tokens: float = 0.0
    train_seconds: float = 0.0
    loss: StreamSeries = field(default_factory=StreamSeries)
    lr: StreamSeries = field(default_factory=StreamSeries)
    grad_norm: StreamSeries = field(default_factory=StreamSeries)
    recent: list[list[float]] = field(default_factory=list)  # [tokens, step seconds] of the last WINDOW
    evals: list[dict[str, Any]] = field(default_factory=list)  # {"step", "time", "metrics"}
    samples: list[dict[str, Any]] = field(default_factory=list)
    checkpoints: list[int] = field(default_factory=list)
    last_status: dict[str, Any] | None = None
    eval_errors: dict[str, dict[str, Any]] = field(default_factory=dict)
    _line: int = 0

    # --- folding ---------------------------------------------------------------------

    def fold(self, raw: Any) -> None:
        """Add one decoded event line."""
        self._line += 1
        if type(raw) is dict and raw.get("type") == "train" and self._fold_train(raw):
            return
        event, problem = parse_event(raw)
        if event is None:
            self.malformed += 1
            if len(self.damage) < MAX_DAMAGE:
                self.damage.append(f"events.jsonl line {self._line}: {problem}")
            return
        self.events += 1
        ev: dict[str, Any] = event  # type: ignore[assignment]
        kind = ev["type"]
        t = number(ev.get("time"))
        if kind == "resume":
            self.resumes += 1
            self.sessions.append([])
            self._cut(int(ev["from_step"]))
        if t is not None:
            s = self.sessions[-1]
            if not s:
                s.extend((t, t))
            elif t < s[0]:
                s[0] = t
            elif t > s[1]:
                s[1] = t
        step = ev.get("step")
        if kind == "train" and step is not None:
            step = int(step)
            self.max_step = step if self.max_step is None else max(self.max_step, step)
            self.last_train = ev
            n, rate = number(ev.get("tokens")), number(ev.get("tokens_per_s"))
            self._fold_rate(n, rate)
            for name in ("loss", "lr", "grad_norm"):
                value = number(ev.get(name))
                if value is not None:
                    getattr(self, name).add(float(step), value)
        elif kind == "eval" and step is not None:
            metrics = {k: v for k, v in ev.items()
                       if k not in ENGINE_EVAL_FIELDS and (number(v) is not None or v is None
                                                           or isinstance(v, float))}
            if number(ev.get("eval_loss")) is not None:
                metrics["eval_loss"] = ev["eval_loss"]
            self.evals.append({"step": int(step), "time": t, "metrics": metrics})
            for name, error in (ev.get("errors") or {}).items():
                self.eval_errors[str(name)] = {"step": int(step), "error": str(error)}
        elif kind == "sample":
            self.samples.append({k: ev.get(k) for k in ("step", "checkpoint", "prompt", "text", "index")})
        elif kind == "checkpoint" and step is not None:
            self.checkpoints.append(int(step))
        elif kind == "status":
            self.last_status = {k: ev.get(k) for k in ("state", "message", "time", "step")}

    def _fold_train(self, ev: dict[str, Any]) -> bool:
        """The common case, a well-formed train event, without the generic checks (~3x faster).

        Returns False (nothing folded) when any field is unusual: the generic path decides.
        """
        step, t, loss = ev.get("step"), ev.get("time"), ev.get("loss")
        n, rate = ev.get("tokens"), ev.get("tokens_per_s")
        t_any: Any = t
        if (type(step) is not int or type(t) not in _NUM or type(loss) not in _NUM_NONE
                or type(n) not in _NUM_NONE or type(rate) not in _NUM_NONE
                or type(ev.get("lr")) not in _NUM_NONE or type(ev.get("grad_norm")) not in _NUM_NONE
                or type(ev.get("epoch")) not in _NUM_NONE or loss != loss):
            return False
        self.events += 1
        t = t_any  # checked above: a number
        s = self.sessions[-1]
        if not s:
            s.extend((t, t))
        elif t > s[1]:
            s[1] = t
        elif t < s[0]:
            s[0] = t
        if self.max_step is None or step > self.max_step:
            self.max_step = step
        self.last_train = ev
        self._fold_rate(n, rate)
        if loss is not None:
            self.loss.add(step, loss)
        lr, grad_norm = ev.get("lr"), ev.get("grad_norm")
        if lr is not None and lr == lr:
            self.lr.add(step, lr)
        if grad_norm is not None and grad_norm == grad_norm:
            self.grad_norm.add(step, grad_norm)
        return True

    def _fold_rate(self, n: float | None, rate: float | None) -> None:
        if n and rate:
            self.train_tokens += n
            self.train_seconds += n / rate
            self.recent.append([n, n / rate])
            if len(self.recent) > WINDOW:
                del self.recent[0]

    def _cut(self, step: int) -> None:
        for series in (self.loss, self.lr, self.grad_norm):
            series.cut(step)
        self.evals = [e for e in self.evals if e["step"] <= step]
        self.samples = [s for s in self.samples if not isinstance(s.get("step"), int) or s["step"] <= step]
        self.checkpoints = [c for c in self.checkpoints if c <= step]
        if self.max_step is not None and self.max_step > step:
            self.max_step = step
        if self.last_train and (self.last_train.get("step") or 0) > step:
            self.last_train = None

    def fold_bytes(self, data: bytes) -> None:
        """Fold complete lines of ``data`` (which must end at a newline)."""
        loads = json.loads
        for line in data.splitlines():
            if not line.strip():
                continue
            try:
                raw = loads(line)
            except ValueError:
                raw = None
                self._line += 1
                self.malformed += 1
                if len(self.damage) < MAX_DAMAGE:
                    self.damage.append(f"events.jsonl line {self._line}: not valid JSON")
                continue
            self.fold(raw)

    # --- what readers ask --------------------------------------------------------------

    def metric_series(self, name: str) -> list[Point]:
        """``(step, value)`` of one evaluation metric (``eval_loss`` included), in step order."""
        out = []
        for e in self.evals:
            v = number(e["metrics"].get(name))
            if v is not None:
                out.append((float(e["step"]), v))
        return out

    def metric_names(self) -> list[str]:
        """Every metric any evaluation reported, in first-seen order (``eval_loss`` excluded)."""
        names: dict[str, None] = {}
        for e in self.evals:
            for k in e["metrics"]:
                if k != "eval_loss":
                    names[k] = None
        return list(names)

    @property
    def recent_tokens_per_s(self) -> float | None:
        """Tokens over step time of the last :data:`WINDOW` measured train events (``None`` before any)."""
        seconds = sum(s for _, s in self.recent)
        return sum(n for n, _ in self.recent) / seconds if seconds > 0 else None

    @property
    def is_resumed(self) -> bool:
        return self.resumes > 0

    # --- persistence ------------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        return {
            "version": VERSION, "offset": self.offset, "inode": self.inode, "events": self.events,
            "malformed": self.malformed, "damage": self.damage, "sessions": self.sessions,
            "resumes": self.resumes, "max_step": self.max_step,
            "last_train": {k: self.last_train.get(k) for k in _LAST_TRAIN} if self.last_train else None,
            "train_tokens": self.train_tokens, "train_seconds": self.train_seconds,
            "loss": self.loss.to_json(), "lr": self.lr.to_json(), "grad_norm": self.grad_norm.to_json(),
            "recent": self.recent, "evals": self.evals, "samples": self.samples,
            "checkpoints": self.checkpoints, "last_status": self.last_status,
            "eval_errors": self.eval_errors, "line": self._line,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Summary:
        if data.get("version") != VERSION:
            raise ValueError("old summary format")
        s = cls(
            offset=int(data["offset"]), inode=data["inode"], events=int(data["events"]),
            malformed=int(data["malformed"]), damage=list(data["damage"]),
            sessions=[list(x) for x in data["sessions"]], resumes=int(data["resumes"]),
            max_step=data["max_step"], last_train=data["last_train"],
            train_tokens=float(data["train_tokens"]), train_seconds=float(data["train_seconds"]),
            loss=StreamSeries.from_json(data["loss"]), lr=StreamSeries.from_json(data["lr"]),
            grad_norm=StreamSeries.from_json(data["grad_norm"]),
            recent=[[float(n), float(t)] for n, t in data["recent"]], evals=list(data["evals"]),
            samples=list(data["samples"]), checkpoints=[int(c) for c in data["checkpoints"]],
            last_status=data["last_status"], eval_errors=dict(data["eval_errors"]),
        )
        s._line = int(data["line"])
        return s


def summarise(run_dir: Path, save: bool = True) -> Summary:
    """The run's summary, brought up to the end of ``events.jsonl`` (a torn last line waits).

    Reads ``.summary.json`` when it matches the log, folds only what was
    appended since, and saves it back when anything was added.
    """
    run_dir = Path(run_dir)
    path = run_dir / runs.EVENTS
    try:
        st = path.stat()
    except OSError:
        return Summary()
    summary = _load(run_dir)
    if summary is None or summary.inode != st.st_ino or summary.offset > st.st_size:
        summary = Summary(inode=st.st_ino)
    if summary.offset == st.st_size:
        return summary
    start = summary.offset
    try:
        with open(path, "rb") as fh:
            fh.seek(summary.offset)
            rest = b""
            while True:
                chunk = fh.read(CHUNK)
                if not chunk:
                    break
                chunk = rest + chunk
                end = chunk.rfind(b"\n")
                if end < 0:
                    rest = chunk
                    continue
                summary.fold_bytes(chunk[: end + 1])
                summary.offset += end + 1
                rest = chunk[end + 1:]
    except OSError:
        return summary
    if save and summary.offset != start:
        _save(run_dir, summary)
    return summary


def _load(run_dir: Path) -> Summary | None:
    try:
        data = json.loads((run_dir / SUMMARY).read_bytes())
        return Summary.from_json(data)
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def _save(run_dir: Path, summary: Summary) -> None:
    tmp = run_dir / f".{SUMMARY}.{os.getpid()}.{threading.get_ident()}.tmp"
    try:
        tmp.write_text(json.dumps(summary.to_json(), separators=(",", ":")))
        os.replace(tmp, run_dir / SUMMARY)
    except OSError:
        try:
            tmp.unlink()
        except OSError:
            pass


def fold_events(events: Iterable[dict[str, Any]]) -> Summary:
    """A summary of events already in memory (tests, and callers holding a tail)."""
    summary = Summary()
    for event in events:
        summary.fold(event)
    return summary
