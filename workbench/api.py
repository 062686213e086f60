"""The plugin author's API: everything a plugin needs, in one module.

A plugin is a module (or object) with functions decorated ``@hookimpl``,
registered through the ``workbench`` entry-point group of its distribution
(or dropped as a ``.py`` file in a plugins folder)::

    from workbench.api import Evaluator, Metric, hookimpl

    def greentext_format(ctx):
        texts = ctx.generate(ctx.prompts, seed=0, max_new_tokens=40)
        return {"greentext-format": sum(t.startswith(">") for t in texts) / max(len(texts), 1)}

    @hookimpl
    def register_evaluators(register):
        register(Evaluator(
            name="greentext", compute=greentext_format,
            metrics=(Metric("greentext-format", "greentext fmt", better="higher", format=".2f"),),
        ))

What is here:

- descriptors: :class:`Backend`, :class:`Evaluator` (with the
  :class:`Metric` s it emits), :class:`Launcher`; and :class:`EvalContext`,
  what an evaluator receives;
- :class:`UserError`: raise it for a failure the user can fix; its message,
  ``kind`` and ``hint`` land in the run's status and are shown as one line;
- :func:`cache_dir` (``$WORKBENCH_CACHE``, else the user cache folder) and
  :func:`atomic_dir` (build a folder there, visible only once complete),
  and :func:`load_pretrained`, the default loader a backend's ``load`` may
  delegate to;
- :data:`RESERVED_METRICS`: names the engine owns in events; an evaluator
  may not emit them.

Entry-point names share one namespace with the built-ins' (``backends``,
``evaluators``, ``launchers``): a plugin whose entry point has one of those
names fails to load. Descriptors are light: they hold names and callables
only. Model weights, tokenizers and torch are touched only when the training
or generation subprocess calls ``load``/``compute``, so listing plugins
stays instant; import torch inside those functions, never at module level.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from workbench import hookimpl
from workbench.metrics import RESERVED as RESERVED_METRICS
from workbench.metrics import Metric
from workbench.train.errors import UserError
from workbench.train.sources import atomic_dir, load_pretrained
from workbench.train.sources import cache_root as cache_dir

__all__ = [
    "RESERVED_METRICS", "Backend", "EvalContext", "Evaluator", "Generate", "Launcher", "Liveness",
    "Metric", "UserError", "atomic_dir", "cache_dir", "hookimpl", "load_pretrained",
]


@dataclass(frozen=True)
class Backend:
    """A family of causal language models workbench can fine-tune.

    ``load(source, settings)`` returns ``(model, tokenizer)``. ``source`` is
    the experiment's ``model`` (else the backend's default): a hub id, a
    local directory or a ``.gguf`` file path, as written. ``settings`` holds
    ``dtype`` (the torch dtype to load in, chosen from the hardware and
    ``train.precision``), ``device`` (``"cuda"`` or ``"cpu"``; the trainer
    moves the model there, ``load`` need not) and ``experiment`` (the
    validated experiment: ``.train``, ``.lora``, ``.data`` ...). Leave
    ``load`` as ``None`` for any model ``transformers.AutoModelForCausalLM``
    can load (a GGUF file is then dequantised and cached first); a custom
    ``load`` may delegate to :func:`load_pretrained`. ``default_model`` may
    be a callable returning the source, for models found at run time (for
    example a file shipped in a Python package). Raise :class:`UserError`
    (kind ``"model_unavailable"``, say) when the model can't be had.
    """

    name: str
    default_model: str | Callable[[], str]
    target_modules: tuple[str, ...]
    description: str = ""
    load: Callable[[str, dict[str, Any]], tuple[Any, Any]] | None = None

    def resolve_default_model(self) -> str:
        return self.default_model() if callable(self.default_model) else self.default_model


class Generate(Protocol):
    """``ctx.generate(prompts, seed, temperature=..., top_p=..., max_new_tokens=...)``.

    One continuation per prompt (the prompt itself not included), sampled
    with ``seed``: the same seed and weights give the same text. Settings not
    given are the experiment's ``[sampling]`` ones; ``temperature = 0`` is
    greedy. The model's training-time random state is left untouched.
    """

    def __call__(self, prompts: list[str], seed: int, *, temperature: float | None = None,
                 top_p: float | None = None, max_new_tokens: int | None = None) -> list[str]: ...


def _no_generate(prompts: list[str], seed: int, *, temperature: float | None = None,
                 top_p: float | None = None, max_new_tokens: int | None = None) -> list[str]:
    return ["" for _ in prompts]


@dataclass
class EvalContext:
    """What an evaluator receives inside the training process.

    ``model`` and ``tokenizer`` are the model being trained (LoRA attached,
    in eval mode with no gradients while evaluators run), ``experiment`` the
    validated experiment, ``step`` the training step, ``eval_texts`` the
    held-out texts, ``prompts`` the experiment's prompts and ``checkpoint``
    the checkpoint name for a ``"samples"`` evaluator (``"final"`` at the
    end). ``heldout_loss()`` computes (once per evaluation, then cached)
    ``{"nll": summed nats, "tokens": predicted tokens, "bytes": UTF-8 bytes}``
    over the held-out texts. ``generate`` is described by :class:`Generate`.
    """

    model: Any
    tokenizer: Any
    experiment: Any
    step: int
    eval_texts: list[str]
    prompts: list[str]
    checkpoint: str | None = None
    heldout_loss: Callable[[], dict[str, float]] = field(default=lambda: {})
    generate: Generate = field(default=_no_generate)


@dataclass(frozen=True)
class Evaluator:
    """A measurement made during training.

    ``when`` says when it runs: ``"eval"`` at every eval step and at the end
    (its result lands in an ``eval`` event), ``"samples"`` at the end and at
    each checkpoint (each returned dict lands as a ``sample`` event).
    ``compute(ctx)`` returns a dict of metric name to number for ``"eval"``,
    or a list of ``{"prompt": ..., "text": ...}`` dicts for ``"samples"``.
    ``metrics`` declares each metric an ``"eval"`` evaluator returns (label,
    which way is better, format): every surface (``run --follow``,
    ``status``, ``results``, ``report``, the TUI) shows it and marks the best
    run by its direction. Names in :data:`RESERVED_METRICS` are refused. An
    evaluator that raises does not end training: the run finishes with a
    warning naming the evaluator and its error.
    """

    name: str
    compute: Callable[[EvalContext], Any]
    when: str = "eval"
    description: str = ""
    metrics: tuple[Metric, ...] = ()


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

    ``settings`` is the experiment's ``[distributed]`` table as a dict.

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
