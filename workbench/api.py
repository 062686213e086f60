"""The plugin author's API: descriptors a plugin registers, and the ``hookimpl`` marker.

A plugin is a module (or object) with functions decorated ``@hookimpl``::

    from workbench.api import Backend, hookimpl

    @hookimpl
    def register_backends(register):
        register(Backend(
            name="qwen",
            default_model="Qwen/Qwen2.5-0.5B",
            target_modules=("q_proj", "k_proj", "v_proj", "o_proj"),
        ))

Descriptors are light: they hold names and callables only. Model weights,
tokenizers and torch are touched only when the training or generation
subprocess calls ``load``/``compute``, so listing plugins stays instant.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from workbench import hookimpl

__all__ = ["Backend", "EvalContext", "Evaluator", "Launcher", "Liveness", "hookimpl"]


@dataclass(frozen=True)
class Backend:
    """A family of causal language models workbench can fine-tune.

    ``load(source, settings)`` returns ``(model, tokenizer)``; ``source`` is a
    hub id, a local directory or a GGUF file path (already resolved to a local
    directory by the engine when ``load`` is left as the default). Leave
    ``load`` as ``None`` for any model ``transformers.AutoModelForCausalLM``
    can load. ``default_model`` may be a callable returning the source, for
    models found at run time (for example a file shipped in a Python package).
    """

    name: str
    default_model: str | Callable[[], str]
    target_modules: tuple[str, ...]
    description: str = ""
    load: Callable[[str, dict[str, Any]], tuple[Any, Any]] | None = None

    def resolve_default_model(self) -> str:
        return self.default_model() if callable(self.default_model) else self.default_model


@dataclass
class EvalContext:
    """What an evaluator receives inside the training process.

    ``heldout_loss()`` computes (once per evaluation, then cached) the summed
    negative log-likelihood in nats over the held-out texts, the number of
    predicted tokens and the number of UTF-8 bytes they cover.
    """

    model: Any
    tokenizer: Any
    experiment: Any
    step: int
    eval_texts: list[str]
    prompts: list[str]
    checkpoint: str | None = None
    heldout_loss: Callable[[], dict[str, float]] = field(default=lambda: {})
    generate: Callable[..., list[str]] = field(default=lambda *a, **k: [])


@dataclass(frozen=True)
class Evaluator:
    """A measurement made during training.

    ``when`` says when it runs: ``"eval"`` at every eval step and at the end
    (its result lands in an ``eval`` event), ``"samples"`` at the end and at
    each checkpoint (each returned dict lands as a ``sample`` event).
    ``compute(ctx)`` returns a dict of metric name to value for ``"eval"``, or
    a list of ``{"prompt": ..., "text": ...}`` dicts for ``"samples"``.
    """

    name: str
    compute: Callable[[EvalContext], Any]
    when: str = "eval"
    description: str = ""


@dataclass(frozen=True)
class Liveness:
    """A launcher's word on one run's job, for whoever reads the run's status.

    ``alive``: True while the job runs or waits, False once it is gone for good,
    None when the launcher can't tell right now (its scheduler unreachable; the
    status is then shown as written). ``waiting``: alive but not running (pending
    in the scheduler's queue, or requeued). ``detail``: one line a person reads,
    e.g. ``slurm job 12 pending (Priority)``, ``slurm job 12 running on node7``,
    or for a job that is gone, why: ``slurm job 12 TIMEOUT``. ``reason``: for a job
    that is gone, a short word saying how it ended (``timeout``, ``cancelled``,
    ``vanished`` when the scheduler no longer knows it); empty when it ended well.
    """

    alive: bool | None
    waiting: bool = False
    detail: str = ""
    reason: str = ""


@dataclass(frozen=True)
class Launcher:
    """A way to start the training process: ``command(run_dir, settings)`` returns argv.

    A launcher that hands runs to an outside scheduler (Slurm) also answers for
    them, since a pid says nothing across machines. Each of these is optional;
    left ``None``, the run is a local process group (started by the local queue,
    alive while its pid with its start time lives, stopped by SIGTERM):

    - ``submit(run_dir, experiment)`` hands the run to the scheduler now and
      returns its job id; the local queue never holds such runs back. The job
      runs ``python -m workbench.train RUN_DIR`` (with ``--resume`` when the
      folder has a checkpoint), so it writes the run folder as a local run does.
    - ``liveness(status)`` answers for a run whose ``status.json`` holds that
      ``job_id``: a :class:`Liveness`.
    - ``stop(status)`` asks the job to stop: the trainer gets SIGTERM, saves a
      checkpoint and ends ``stopped`` (a job still waiting is cancelled). Raises
      an exception with a one-line message when it can't.
    """

    name: str
    command: Callable[[str, dict[str, Any]], list[str]]
    description: str = ""
    submit: Callable[[str, dict[str, Any]], str] | None = None
    liveness: Callable[[dict[str, Any]], Liveness] | None = None
    stop: Callable[[dict[str, Any]], None] | None = None
