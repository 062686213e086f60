"""The network switches of every workbench process: no network unless a run needs the hub.

Each process entry (the CLI and TUI, the scheduler, the trainer, the
generation worker) calls :func:`apply` first: the Hugging Face libraries go
offline and their telemetry goes quiet. Only a run whose model or data is a
hub id turns the hub on, for that run's process, through :func:`open_hub`;
when the hub is needed but forced off or unreachable, the libraries stay
offline, so a cached model still loads and an uncached one fails at once
with our hint instead of after a minute of library retries.

What each switch does, read from the installed sources (huggingface_hub 2.4,
datasets 5.2, transformers 5.24, trl 1.16, peft 0.21):

- ``HF_HUB_OFFLINE`` (alias ``TRANSFORMERS_OFFLINE``): read once, when
  ``huggingface_hub.constants`` is imported; transformers and peft ask
  ``is_offline_mode()`` / ``constants.HF_HUB_OFFLINE`` at call time.
- ``HF_DATASETS_OFFLINE``: read when ``datasets.config`` is imported, and it
  overrides ``HF_HUB_OFFLINE`` for datasets (a user's ``=0`` would put
  datasets online while the hub is off).
- ``HF_UPDATE_DOWNLOAD_COUNTS``: datasets sends a HEAD request to
  s3.amazonaws.com on every ``load_dataset``, local JSON files included.
- ``HF_HUB_DISABLE_TELEMETRY``: TRL's trainer reports itself to
  huggingface.co when it is built.
- ``HF_HUB_DISABLE_UPDATE_CHECK``: the ``hf`` command line's version check.

The environment is what child processes (torchrun ranks) inherit; when a
library is already imported, its module-level copy is updated too, so
:func:`apply` is right before and after the heavy imports. The user's own
values are kept (in ``WORKBENCH_USER_NETWORK_ENV``) so a child can tell the
user's ``HF_HUB_OFFLINE=1`` from the one its parent set. Standard library only.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import threading
import time
import urllib.parse
import urllib.request

FORCE_ENV = "WORKBENCH_OFFLINE"
USER_ENV = "WORKBENCH_USER_NETWORK_ENV"
HUB_SWITCHES = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
DATASETS_SWITCH = "HF_DATASETS_OFFLINE"
# Switched off in every process, hub runs included: nothing of ours needs them.
QUIET = {
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "HF_UPDATE_DOWNLOAD_COUNTS": "0",
    "HF_HUB_DISABLE_UPDATE_CHECK": "1",
}
PROBE_TIMEOUT_S = 3.0
PROBE_REUSE_S = 30.0
_TRUE = ("1", "ON", "YES", "TRUE")

_why_offline: str | None = None
_probed: dict[tuple[str, int], tuple[float, str | None]] = {}


def is_true(value: str | None) -> bool:
    return (value or "").strip().upper() in _TRUE


def user_env() -> dict[str, str]:
    """The user's own values of the offline switches, from before any workbench process set them."""
    saved = os.environ.get(USER_ENV)
    if saved is not None:
        try:
            found = json.loads(saved)
            if isinstance(found, dict):
                return {str(k): str(v) for k, v in found.items()}
        except ValueError:
            pass
    return {k: os.environ[k] for k in (*HUB_SWITCHES, DATASETS_SWITCH) if k in os.environ}


def apply(hub: bool = False, datasets: bool = False) -> None:
    """Set this process's switches: the hub on only for what is asked, telemetry always off.

    ``hub`` lets models and tokenizers come from the hub; ``datasets`` lets
    ``load_dataset`` reach it too (it needs ``hub`` as well: datasets downloads
    through huggingface_hub).
    """
    os.environ.setdefault(USER_ENV, json.dumps(user_env()))
    hub_off, data_off = not (hub or datasets), not datasets
    for name in HUB_SWITCHES:
        os.environ[name] = "1" if hub_off else "0"
    os.environ[DATASETS_SWITCH] = "1" if data_off else "0"
    os.environ.update(QUIET)
    constants = sys.modules.get("huggingface_hub.constants")
    if constants is not None:  # imported already: its copies were read at import
        constants.HF_HUB_OFFLINE = hub_off  # type: ignore[attr-defined]
        constants.HF_HUB_DISABLE_TELEMETRY = True  # type: ignore[attr-defined]
    config = sys.modules.get("datasets.config")
    if config is not None:
        config.HF_HUB_OFFLINE = data_off  # type: ignore[attr-defined]
        config.HF_DATASETS_OFFLINE = data_off  # type: ignore[attr-defined]
        config.HF_UPDATE_DOWNLOAD_COUNTS = False  # type: ignore[attr-defined]


def forced_offline(setting: str | None = None) -> str | None:
    """Why the hub must stay off whatever a run asks (a setting or the user's environment), or None."""
    if is_true(os.environ.get(FORCE_ENV)):
        return f"{FORCE_ENV}={os.environ[FORCE_ENV]} is set"
    if setting:
        return setting
    for name, value in user_env().items():
        if is_true(value):
            return f"{name}={value} is set"
    return None


def hub_address() -> tuple[str, int]:
    """The host and port a hub request opens first: the HTTPS proxy if one applies, else the hub."""
    endpoint = urllib.parse.urlsplit(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    host = endpoint.hostname or "huggingface.co"
    port = endpoint.port or (443 if endpoint.scheme == "https" else 80)
    proxy = urllib.request.getproxies_environment().get(endpoint.scheme or "https")
    if proxy and not urllib.request.proxy_bypass(host):
        parsed = urllib.parse.urlsplit(proxy if "://" in proxy else f"http://{proxy}")
        if parsed.hostname:
            return parsed.hostname, parsed.port or 80
    return host, port


def unreachable(timeout: float = PROBE_TIMEOUT_S) -> str | None:
    """None when a TCP connection to the hub (or its proxy) opens within ``timeout`` seconds.

    Otherwise why not. The name lookup runs in a thread we stop waiting for:
    ``getaddrinfo`` has no timeout, and on a firewalled machine it can hang
    for tens of seconds. An answer is reused for :data:`PROBE_REUSE_S`.
    """
    address = hub_address()
    now = time.monotonic()
    known = _probed.get(address)
    if known is not None and now - known[0] < PROBE_REUSE_S:
        return known[1]
    why = _probe(*address, timeout)
    _probed[address] = (now, why)
    return why


def _probe(host: str, port: int, timeout: float) -> str | None:
    result: list[BaseException | None] = []

    def connect() -> None:
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            result.append(None)
        except OSError as exc:
            result.append(exc)

    thread = threading.Thread(target=connect, daemon=True, name="workbench-hub-probe")
    thread.start()
    thread.join(timeout + 0.5)
    if not result:
        return f"{host}:{port} did not answer within {timeout:.0f}s"
    error = result[0]
    if error is None:
        return None
    detail = getattr(error, "strerror", None) or str(error) or type(error).__name__
    return f"{host}:{port} is unreachable: {detail}"


def open_hub(models: bool, data: bool, setting: str | None = None) -> str | None:
    """Turn the hub on for what a run needs, if allowed and reachable; else return why it is off.

    ``models``/``data``: whether the run's model / data are hub ids.
    ``setting``: why a setting (``offline = true``) forces offline, if it does.
    """
    global _why_offline
    _why_offline = None
    if not (models or data):
        apply()
        return None
    why = forced_offline(setting) or unreachable()
    if why is not None:
        apply()
        _why_offline = why
        return why
    apply(hub=True, datasets=data)
    return None


def why_offline() -> str | None:
    """Why the hub was kept off although this process's run needed it (None if it was not)."""
    return _why_offline
