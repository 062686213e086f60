"""Where a model comes from: a hub id, a local folder, or a ``.gguf`` file.

A GGUF file is dequantised once with transformers' GGUF support and cached
as safetensors plus tokenizer under the workbench cache folder, keyed by the
file's path, size and mtime; later runs load the cached folder, which takes
a second instead of the ~30 s the conversion costs for SmolLM2-135M. A hub id
that is neither on disk nor reachable ends in a :class:`UserError` saying how
to get it.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

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
    if hub_offline() and not hub_cached(source):
        raise model_unavailable(source, "the hub is offline (HF_HUB_OFFLINE=1)")
    return source


def hub_offline() -> bool:
    """HF_HUB_OFFLINE as set now (huggingface_hub reads it once, at import)."""
    from huggingface_hub import constants

    env = os.environ.get("HF_HUB_OFFLINE", "").strip().upper()
    return env in ("1", "ON", "YES", "TRUE") or bool(constants.HF_HUB_OFFLINE)


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
