"""Hook specifications: everything a plugin can implement.

Each ``register_*`` hook receives a ``register`` callback; an implementation
calls it once per thing it provides. Implementations may accept fewer
arguments than the spec lists, so specs can grow without breaking plugins.
None of these hooks may import torch at call time; heavy imports belong inside
the ``load``/``compute`` functions that the training subprocess calls. The
descriptor types and helpers a plugin uses are in :mod:`workbench.api`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pluggy

from workbench import PROJECT

hookspec = pluggy.HookspecMarker(PROJECT)


@hookspec
def register_backends(register: Callable[[Any], None]) -> None:
    """Call ``register(Backend(...))`` for each model backend this plugin provides."""


@hookspec
def register_evaluators(register: Callable[[Any], None]) -> None:
    """Call ``register(Evaluator(...))`` for each evaluator this plugin provides.

    An ``"eval"`` evaluator declares the metrics it returns in ``Evaluator.metrics``
    (:class:`workbench.api.Metric`); a declaration using a reserved name
    (:data:`workbench.api.RESERVED_METRICS`) makes the registration fail.
    """


@hookspec
def register_launchers(register: Callable[[Any], None]) -> None:
    """Call ``register(Launcher(...))`` for each way of starting a training process."""


@hookspec
def pre_model_load(experiment: Any) -> None:
    """Called in the training process before the backend loads model and tokenizer."""


@hookspec
def post_lora_load(experiment: Any, model: Any) -> None:
    """Called in the training process once the LoRA adapter is attached to the model."""


@hookspec
def post_train(experiment: Any, run_dir: str, state: str) -> None:
    """Called in the training process when training ends (finished, stopped or failed)."""
