"""Where a model comes from: a hub id, a local folder, or a ``.gguf`` file.

A GGUF file is dequantised once with transformers' GGUF support and cached
as safetensors plus tokenizer under the workbench cache folder, keyed by the
file's path, size and mtime; later runs load the cached folder, which takes
a second instead of the ~30 s the conversion costs for SmolLM2-135M. A hub id
that is neither on disk nor reachable ends in a :class:`UserError` saying how
to get it.

Only a hub id needs the network: :func:`network_for_run` (the training
process's first step) and :func:`hub_for` (the generation worker's, per base
model) turn the hub on for one, through :mod:`workbench.offline`.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from workbench import offline, runs
from workbench.train.errors import UserError, first_line

CACHE_ENV = "WORKBENCH_CACHE"
MODEL_HINT = (
    "run once with network access (or `hf download {id}`), "
    "or set `model` to a local folder or a .gguf file"
)


def cache_root() -> Path:
    """The workbench cache folder: ``$WORKBENCH_CACHE``, else the platform's user cache."""
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("workbench"))


@contextlib.contextmanager
def atomic_dir(final: Path) -> Iterator[Path]:
    """Yield a temporary sibling folder to fill; rename it to ``final`` only on success.

    A crash (or an exception) leaves no half-written ``final``: the temporary
    folder is removed, and a reader that sees ``final`` sees all of it. When
    another process finished the same folder first, ours is discarded.
    """
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.parent / f".{final.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        yield tmp
        try:
            os.rename(tmp, final)
        except OSError:
            if not final.is_dir():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def gguf_cache_dir(gguf: str | Path, root: Path | None = None) -> Path:
    """The cache folder for one GGUF file: ``<root>/gguf/<stem>-<hash of path, size, mtime>``.

    Replacing or touching the file changes the key, so a stale conversion is
    never reused.
    """
    path = Path(gguf).expanduser().resolve()
    st = path.stat()
    key = hashlib.sha256(f"{path}|{st.st_size}|{st.st_mtime_ns}".encode()).hexdigest()[:12]
    return (root or cache_root()) / "gguf" / f"{path.stem}-{key}"


def dequantise_gguf(gguf: str | Path, root: Path | None = None) -> Path:
    """Return a folder holding ``gguf`` as a plain transformers model, converting on first use."""
    path = Path(gguf).expanduser()
    if not path.is_file():
        raise UserError(f"GGUF file not found: {path}", kind="model_unavailable",
                        hint="set `model` to an existing .gguf file")
    final = gguf_cache_dir(path, root)
    if (final / "config.json").is_file():
        return final
    print(f"dequantising {path.name} once into {final} ...", flush=True)
    with atomic_dir(final) as tmp:
        model, tokenizer = _load_gguf(path)
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
    return final


def _load_gguf(path: Path) -> tuple[Any, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    kwargs: dict[str, Any] = {}
    try:  # transformers >= 5 keeps GGUF blocks packed unless told to unpack them
        from transformers import GgufConfig

        kwargs["quantization_config"] = GgufConfig(dequantize=True)
    except ImportError:  # older releases always dequantise
        pass
    folder, name = str(path.parent), path.name
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
        model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, **kwargs)
    except (ValueError, KeyError, NotImplementedError) as exc:
        raise UserError(
            f"cannot read GGUF file {path}: {first_line(exc)}", kind="model_unavailable",
            hint="transformers reads GGUF for common architectures (llama, mistral, qwen2, gpt2 ...)",
        ) from exc
    quantizer = getattr(model, "hf_quantizer", None)
    if quantizer is not None:  # dense weights already: drop the marker that blocks saving
        quantizer.remove_quantization_config(model)
    return model, tokenizer


def is_local(source: str) -> bool:
    return source.startswith(("/", "./", "../", "~")) or Path(source).expanduser().exists()


def is_hub_model(source: str) -> bool:
    """Whether a model source is a hub id (not a .gguf file, not a local path)."""
    return bool(source) and not source.endswith(".gguf") and not is_local(source)


def is_hub_dataset(source: str) -> bool:
    """Whether ``data.source`` is a hub dataset id (not a local file or folder), as data.py reads it."""
    from workbench.train.data import BUILDERS

    return bool(source) and not is_local(source) and Path(source).suffix.lower() not in BUILDERS


def run_model_source(config: dict[str, Any]) -> str | None:
    """The model a run folder's ``config.json`` loads: its ``model``, else its backend's default.

    None when that can't be told (unknown backend, a default that raises): the
    training then reports the problem itself.
    """
    experiment = config.get("experiment") or {}
    if experiment.get("model"):
        return str(experiment["model"])
    try:
        from workbench.plugins import load_plugins

        backend = load_plugins(config.get("plugins_dir")).backends.get(str(experiment.get("backend")))
        return str(backend.resolve_default_model()) if backend is not None else None
    except Exception:  # noqa: BLE001 - the training reports a bad backend with its own message
        return None


def offline_setting(config: dict[str, Any]) -> str | None:
    """Why a run's resolved config forces offline (``offline = true`` in its TOML), or None."""
    if config.get("offline") is True:
        return f"offline = true in {config.get('config_path') or 'the experiments file'}"
    return None


def network_for_run(run_dir: Path) -> None:
    """Set the training process's network switches from its run folder, before the heavy imports.

    Everything stays offline unless the run's model or data is a hub id; then
    the hub is turned on if allowed and reachable (a probe of a few seconds),
    and otherwise stays off, so only cached hub files load.
    """
    config = runs.read_config(Path(run_dir))
    offline.apply()  # nothing below may reach the network before we decide
    experiment = config.get("experiment") or {}
    data = experiment.get("data") or {}
    model = run_model_source(config)
    hub_data = [s for s in (data.get("source"), data.get("eval_source"))
                if isinstance(s, str) and is_hub_dataset(s)]
    hub_model = model is not None and is_hub_model(model)
    why = offline.open_hub(hub_model, bool(hub_data), offline_setting(config))
    needed = ", ".join([*([model] if hub_model and model else []), *hub_data])
    if why is not None:
        print(f"hub: offline ({why}); only cached copies of {needed} can load", flush=True)
    elif needed:
        print(f"hub: online for {needed}", flush=True)


def preflight(config: dict[str, Any]) -> None:
    """Fail now, before torch loads, when a run's hub model or dataset can't come from anywhere.

    That is: the hub is off (forced, or unreachable as :func:`network_for_run`
    found) and the local cache lacks it. Loading torch and TRL first costs
    10 s of CPU; a missing model should not wait for that.
    """
    model = run_model_source(config)
    if model is not None:
        check_hub_model(model)
    data = (config.get("experiment") or {}).get("data") or {}
    if not offline.is_true(os.environ.get("HF_DATASETS_OFFLINE")):
        return
    for source in (data.get("source"), data.get("eval_source")):
        if isinstance(source, str) and is_hub_dataset(source) and not dataset_cached(source):
            from workbench.train.data import DATA_HINT

            why = offline.why_offline() or "HF_DATASETS_OFFLINE=1"
            raise UserError(f"dataset {source!r} is not available: the hub is offline ({why}) "
                            "and it is not in the local cache", kind="data", hint=DATA_HINT)


def dataset_cached(repo_id: str) -> bool:
    """Whether datasets' own cache holds hub dataset ``repo_id`` (what ``load_dataset`` reads offline).

    Offline, datasets 5 skips the hub cache and reads only the folder
    ``load_dataset`` prepared on an earlier online run (``<org>___<name>``); a
    quick check without importing datasets.
    """
    from huggingface_hub import constants

    root = Path(os.environ.get("HF_DATASETS_CACHE") or Path(constants.HF_HOME) / "datasets")
    return (root.expanduser() / repo_id.replace("/", "___")).is_dir()


@contextlib.contextmanager
def hub_for(source: str, setting: str | None = None) -> Iterator[None]:
    """Within the block the hub is on if ``source`` is a hub id and it is allowed and reachable.

    The generation worker's switch, around one base model load; offline again after.
    """
    if not is_hub_model(source):
        yield
        return
    offline.open_hub(models=True, data=False, setting=setting)
    try:
        yield
    finally:
        offline.apply()


def resolve_model(source: str) -> str:
    """A name ``from_pretrained`` can load: a local folder, a cached GGUF conversion, or a hub id.

    Raises :class:`UserError` for a missing local path, or a hub id that is
    not in the local cache while offline.
    """
    if source.endswith(".gguf"):
        return str(dequantise_gguf(source))
    if is_local(source):
        path = Path(source).expanduser()
        if not path.exists():
            raise UserError(f"model folder not found: {path}", kind="model_unavailable",
                            hint="set `model` to an existing folder, a .gguf file or a hub id")
        if path.is_dir() and not (path / "config.json").is_file():
            raise UserError(f"{path} holds no config.json: not a transformers model folder",
                            kind="model_unavailable")
        return str(path)
    check_hub_model(source)
    return source


def check_hub_model(source: str) -> None:
    """Raise ``model_unavailable`` if hub id ``source`` can't load: the hub is off, the cache lacks it."""
    if is_hub_model(source) and hub_offline() and not hub_cached(source):
        why = offline.why_offline() or "HF_HUB_OFFLINE=1"
        raise model_unavailable(source, f"the hub is offline ({why})")


def hub_offline() -> bool:
    """HF_HUB_OFFLINE as set now (huggingface_hub reads it once, at import; offline.apply updates it)."""
    from huggingface_hub import constants

    return offline.is_true(os.environ.get("HF_HUB_OFFLINE")) or bool(constants.HF_HUB_OFFLINE)


def hub_cached(repo_id: str) -> bool:
    """Whether the local HF cache holds ``repo_id``'s config (a model that can load offline)."""
    from huggingface_hub import try_to_load_from_cache

    try:
        found = try_to_load_from_cache(repo_id, "config.json")
    except Exception:  # noqa: BLE001 - an id the hub library rejects is simply not cached
        return False
    return isinstance(found, str)


def model_unavailable(repo_id: str, why: str) -> UserError:
    return UserError(
        f"model {repo_id!r} is not available: {why} and it is not in the local cache",
        kind="model_unavailable", hint=MODEL_HINT.format(id=repo_id),
    )


def load_pretrained(source: str, settings: dict[str, Any]) -> tuple[Any, Any]:
    """Load model and tokenizer with ``from_pretrained``; a hub failure becomes a UserError."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    kwargs: dict[str, Any] = {}
    if settings.get("dtype") is not None:
        kwargs["dtype"] = settings["dtype"]
    try:
        tokenizer = AutoTokenizer.from_pretrained(source)
        model = AutoModelForCausalLM.from_pretrained(source, **kwargs)
    except OSError as exc:
        if is_local(source):
            raise
        raise model_unavailable(source, first_line(exc)) from exc
    return model, tokenizer


def prepare_tokenizer(tokenizer: Any, model: Any) -> None:
    """Give a tokenizer without a pad token (GPT-2, SmolLM ...) the EOS token as padding."""
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise UserError("the tokenizer has neither a pad nor an EOS token; cannot pad batches")
        tokenizer.pad_token = tokenizer.eos_token
    model.config.pad_token_id = tokenizer.pad_token_id
    if getattr(model, "generation_config", None) is not None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id
