"""The comparison model: what a compare pane is, its label, and the sampling settings a comparison uses.

Shared by ``workbench compare`` (:mod:`workbench.compare`), the compare
screen, its panes and the report; no argparse and no printing here, so the
TUI and the report never import a command. Standard library only: generation
runs in the worker process (:mod:`workbench.generate.client`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from workbench import comparisons, runs
from workbench.generate import client as gen
from workbench.results import short_model
from workbench.runs import RunError
from workbench.terminal import printable  # noqa: F401 - the compare command and pane import it from here

# What a sampling setting is called in ``[sampling]`` -> in a generate request.
REQUEST_KEYS = {"temperature": "temperature", "top_p": "top_p", "max_new_tokens": "max_new_tokens",
                "seed": "seed", "num_samples": "n"}


@dataclass
class Target:
    """A pane to fill: its spec for the worker and the label shown above it."""

    spec: dict[str, Any]
    label: str
    run: runs.Run | None = None
    checkpoint: str | None = None


def split_ref(text: str) -> tuple[str, str]:
    """``baseline#3@checkpoint-200`` -> ``("baseline#3", "checkpoint-200")``; ``@200`` works too."""
    ref, _, checkpoint = text.partition("@")
    if not checkpoint:
        return ref, gen.FINAL
    return ref, checkpoint if not checkpoint.isdigit() else f"checkpoint-{checkpoint}"


def run_label(run: runs.Run, checkpoint: str) -> str:
    step = gen.checkpoint_step(run.path, checkpoint)
    where = f"step {step}" if step is not None else checkpoint
    return f"{run.ref} · {where}" + (" (final)" if checkpoint == gen.FINAL else "")


def base_spec(run_dir: str | Path) -> dict[str, Any]:
    """A run's base model as a base-pane spec (no experiment: only what keys the loaded model)."""
    spec = gen.run_base(run_dir)
    return {k: spec.get(k) for k in ("backend", "model", "plugins_dir", "precision")}


def base_label(spec: Mapping[str, Any]) -> str:
    model = short_model(spec.get("model")) if spec.get("model") else "default model"
    return f"{spec['backend']} · {model} · base (untuned)"


def targets_for(root: str | Path, refs: list[str], with_base: bool) -> list[Target]:
    """The panes for ``refs`` (``RUN[@CHECKPOINT]``), with each distinct base first when asked."""
    out: list[Target] = []
    bases: list[dict[str, Any]] = []
    for i, text in enumerate(refs):
        ref, checkpoint = split_ref(text)
        run = runs.resolve(Path(root), ref)
        try:
            path = gen.adapter_path(run.path, checkpoint)
            spec = base_spec(run.path)
        except gen.GenerationError as exc:
            raise RunError(f"{text}: {exc}") from None
        if not (path / "adapter_config.json").is_file():
            have = ", ".join(gen.checkpoints(run.path)) or "none yet"
            raise RunError(f"{run.ref} has no adapter {checkpoint!r} (it has: {have})")
        if spec not in bases:
            bases.append(spec)
        out.append(Target(gen.run_pane(f"p{i + 1}", run.path, checkpoint), run_label(run, checkpoint),
                          run, checkpoint))
    if with_base:
        base_targets = [Target({"pane": f"b{j + 1}", "base": spec}, base_label(spec))
                        for j, spec in enumerate(bases)]
        out = base_targets + out
    return out


# --- sampling -----------------------------------------------------------------------------


def default_sampling(experiment: Mapping[str, Any] | None) -> dict[str, Any]:
    """An experiment's ``[sampling]`` over the schema's defaults: the one merge every surface uses."""
    from workbench.schema import SamplingSettings

    sampling = SamplingSettings().model_dump()
    sampling.update((experiment or {}).get("sampling") or {})
    return sampling


def request_settings(experiment: Mapping[str, Any] | None, **chosen: Any) -> dict[str, Any]:
    """Generate-request settings (``temperature``, ``top_p``, ``max_new_tokens``, ``seed``, ``n``).

    ``chosen`` values that are not ``None`` win over the experiment's
    ``[sampling]``, which wins over the schema's defaults.
    """
    sampling = default_sampling(experiment)
    settings = {key: sampling[name] for name, key in REQUEST_KEYS.items()}
    settings.update((k, v) for k, v in chosen.items() if v is not None and k in settings)
    return settings


def run_experiment(run: runs.Run | None) -> dict[str, Any] | None:
    """The experiment a run was started with (its saved config), if any."""
    if run is None:
        return None
    experiment = runs.read_config(run.path).get("experiment")
    return experiment if isinstance(experiment, dict) else None


# --- what a pane shows ------------------------------------------------------------------


def pane_text(result: gen.PaneResult, n: int) -> str:
    """A finished pane's samples as one text (or its error)."""
    if result.error is not None:
        return f"error: {result.error}"
    if n == 1:
        return result.texts[0] if result.texts else ""
    return "\n\n".join(f"[sample {i + 1}]\n{t}" for i, t in enumerate(result.texts))


def build_comparison(prompt: str, settings: dict[str, Any], targets: list[Target],
                     results: dict[str, gen.PaneResult]) -> comparisons.Comparison:
    """A saveable comparison from the panes and what they produced."""
    panes = []
    for t in targets:
        result = results.get(t.spec["pane"], gen.PaneResult())
        panes.append(comparisons.SavedPane(
            label=t.label, texts=list(result.texts), error=result.error,
            run=t.run.ref if t.run else None, run_dir=str(t.run.path) if t.run else None,
            checkpoint=t.checkpoint, base=t.spec.get("base"),
        ))
    return comparisons.Comparison(prompt=prompt, settings=dict(settings), panes=panes)
