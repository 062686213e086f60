"""No network unless a run needs the hub, and a quick, clear failure when the hub is needed and absent.

The processes run for real, with the libraries' offline variables unset:
an audit hook (a ``sitecustomize`` on the child's PYTHONPATH, inherited by
every process the child starts) records each name lookup and connection, so
a phone-home anywhere in the CLI, the scheduler, the trainer or the
generation worker fails the test. The fail-fast tests cut the network with a
network namespace (``unshare -n``), where the machine allows it.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import SAMPLE_DIR
from trained_runs import PROMPT

from workbench import config, launch, offline, runs
from workbench.generate import client as gen

# Every variable that would hide a phone-home, plus the one a parent workbench process leaves.
SWITCHES = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE", "HF_HUB_DISABLE_TELEMETRY",
            "DISABLE_TELEMETRY", "DO_NOT_TRACK", "HF_UPDATE_DOWNLOAD_COUNTS", "HF_HUB_DISABLE_UPDATE_CHECK",
            "HF_ENDPOINT", offline.FORCE_ENV, offline.USER_ENV)
LOCAL_HOSTS = {None, "", "localhost", "127.0.0.1", "::1", "0.0.0.0"}

SITECUSTOMIZE = '''
import json, os, sys, traceback
_LOG = os.environ["NET_AUDIT_LOG"]
def _write(record):
    with open(_LOG, "a") as fh:
        fh.write(json.dumps(record) + "\\n")
_write({"pid": os.getpid(), "start": sys.orig_argv[:4]})
def _hook(event, args):
    if event == "socket.getaddrinfo":
        target = args[0]
    elif event == "socket.connect":
        target = args[1]
    else:
        return
    if isinstance(target, bytes):
        target = target.decode("ascii", "replace")
    if isinstance(target, tuple):
        target = list(target[:2])
    stack = [f"{f.filename}:{f.lineno}" for f in traceback.extract_stack()[:-1]
             if not any(s in f.filename for s in ("httpx", "httpcore", "/socket.py", "threading.py"))]
    _write({"pid": os.getpid(), "event": event, "target": target, "stack": stack})
sys.addaudithook(_hook)
'''

TOML = """
[defaults.train]
steps = 2
batch_size = 4
max_length = 32
eval_every = 2
save_every = 2
[defaults.data]
source = "{data}"
column = "greentexts"
train_split = "train[:16]"
eval_split = "test[:4]"
[defaults.sampling]
max_new_tokens = 4

[experiments.local]
backend = "tiny"
prompts = [">be me\\n>"]

[experiments.hub-model]
backend = "smollm"

[experiments.hub-data]
backend = "tiny"
data.source = "someone/not-a-cached-dataset"
"""


def clean_env(tmp_path: Path) -> dict[str, str]:
    """The environment a user without any HF_* variable has, with caches of its own."""
    env = {k: v for k, v in os.environ.items() if k not in SWITCHES}
    env.update(HF_HOME=str(tmp_path / "hf-home"), WORKBENCH_CACHE=str(tmp_path / "wb-cache"),
               OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false", PYTHONUNBUFFERED="1")
    return env


def write_config(tmp_path: Path, extra: str = "") -> Path:
    path = tmp_path / "experiments.toml"
    path.write_text(extra + TOML.format(data=SAMPLE_DIR))
    return path


def non_local(record: dict) -> bool:
    target = record.get("target")
    if isinstance(target, str):  # a unix socket path, or a host name being looked up
        return record["event"] == "socket.getaddrinfo" and target not in LOCAL_HOSTS
    if isinstance(target, list):
        host = target[0]
        return not (host in LOCAL_HOSTS or str(host).startswith("127."))
    return False


@pytest.mark.slow  # trains and generates under an audit hook (~1 min); .ci/run runs it
def test_local_experiment_touches_no_network(tmp_path: Path) -> None:
    """CLI, scheduler, trainer and generation worker of a local experiment: no lookup, no connection."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(SITECUSTOMIZE)
    audit = tmp_path / "audit.jsonl"
    env = clean_env(tmp_path)
    env.update(NET_AUDIT_LOG=str(audit), PYTHONPATH=os.pathsep.join(
        [str(site), *([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])]))
    toml = write_config(tmp_path)

    done = subprocess.run([sys.executable, "-m", "workbench.cli", "-c", str(toml), "run", "local",
                           "--follow"], env=env, capture_output=True, text=True, timeout=600)
    run = runs.resolve(tmp_path / "runs", "local#1")
    assert done.returncode == 0 and run.state == "finished", (
        done.stdout[-2000:] + done.stderr[-2000:] + "\n".join(runs.tail_log(run.path, 30)))

    worker = gen.GenerationClient(env=env)
    try:
        panes = [gen.run_pane("tuned", run.path), gen.base_pane("base", "tiny")]
        results = worker.generate(panes, PROMPT, max_new_tokens=4, seed=1).results(timeout=300)
    finally:
        worker.close()
    assert all(r.error is None and r.texts for r in results.values()), results

    records = [json.loads(line) for line in audit.read_text().splitlines()]
    started = " ".join(" ".join(r["start"]) for r in records if "start" in r)
    for entry in ("workbench.cli", "workbench.queue", "workbench.train", "workbench.generate.worker"):
        assert entry in started, f"the audit hook never ran in {entry}: {started}"
    remote = [r for r in records if "event" in r and non_local(r)]
    assert not remote, "network use:\n" + "\n".join(
        f"{r['event']} {r['target']}\n    " + "\n    ".join(r["stack"][-8:]) for r in remote[:4])


# --- the hub needed and absent ---------------------------------------------------------------


def _netns_unavailable() -> str | None:
    if shutil.which("unshare") is None:
        return "needs unshare (util-linux) to cut the network"
    probe = subprocess.run(["unshare", "-n", "true"], capture_output=True, text=True)
    if probe.returncode != 0:
        return f"cannot make a network namespace here (needs root): {probe.stderr.strip()[:80]}"
    return None


needs_netns = pytest.mark.skipif(_netns_unavailable() is not None,
                                 reason=_netns_unavailable() or "")


@needs_netns
@pytest.mark.parametrize(("name", "kind", "hint"), [
    ("hub-model", "model_unavailable", "hf download HuggingFaceTB/SmolLM-135M"),
    ("hub-data", "data", "point data.source at a local"),
])
def test_hub_experiment_without_network_fails_within_seconds(
        tmp_path: Path, name: str, kind: str, hint: str) -> None:
    toml = write_config(tmp_path)
    started = time.monotonic()
    done = subprocess.run(["unshare", "-n", sys.executable, "-m", "workbench.cli", "-c", str(toml),
                           "run", name, "--follow"], env=clean_env(tmp_path),
                          capture_output=True, text=True, timeout=300)
    elapsed = time.monotonic() - started
    status = runs.resolve(tmp_path / "runs", f"{name}#1").status
    assert status["state"] == "failed" and done.returncode != 0, (status, done.stdout, done.stderr)
    assert status["error_kind"] == kind and hint in status["hint"], status
    # From the training process's start to `failed`; the whole command (CLI, scheduler, follow
    # polls) is reported alongside. Library retries took 60-85 s here before the probe.
    took = status["ended"] - (status.get("launched") or status["created"])
    assert took < 10, f"the run took {took:.1f}s to fail ({elapsed:.1f}s for `workbench run --follow`)"
    assert "unreachable" in status["error"], status["error"]


@needs_netns
def test_compare_base_pane_for_a_hub_model_without_network_fails_within_seconds(
        tmp_path: Path) -> None:
    wrapper = tmp_path / "python-without-network"
    wrapper.write_text(f'#!/bin/sh\nexec unshare -n "{sys.executable}" "$@"\n')
    wrapper.chmod(0o755)
    worker = gen.GenerationClient(python=str(wrapper), env=clean_env(tmp_path))
    try:
        started = time.monotonic()
        results = worker.generate([gen.base_pane("base", "smollm")], PROMPT,
                                  max_new_tokens=4).results(timeout=120)
        elapsed = time.monotonic() - started
    finally:
        worker.close()
    error = results["base"].error or ""
    assert "'HuggingFaceTB/SmolLM-135M' is not available" in error and "hf download" in error, error
    assert elapsed < 10, f"the pane took {elapsed:.1f}s to fail"


# --- what forces offline, and the probe --------------------------------------------------------


def _train(run_dir: Path, env: dict[str, str]) -> dict:
    subprocess.run([sys.executable, "-m", "workbench.train", str(run_dir)], env=env,
                   capture_output=True, timeout=300)
    return runs.read_status(run_dir)


@pytest.fixture
def reachable_hub(monkeypatch: pytest.MonkeyPatch):
    """A listening local socket posing as the hub endpoint: the probe finds it reachable."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    yield f"http://127.0.0.1:{server.getsockname()[1]}"
    server.close()


@pytest.mark.parametrize("how", ["setting", "env"])
def test_offline_setting_or_env_keeps_a_reachable_hub_off(
        tmp_path: Path, reachable_hub: str, how: str) -> None:
    toml = write_config(tmp_path, "offline = true\n" if how == "setting" else "")
    run_dir = launch.prepare(config.load(toml), "hub-model", tmp_path / "runs")
    env = dict(clean_env(tmp_path), HF_ENDPOINT=reachable_hub)
    if how == "env":
        env[offline.FORCE_ENV] = "1"
    status = _train(run_dir, env)
    why = f"offline = true in {toml}" if how == "setting" else "WORKBENCH_OFFLINE=1 is set"
    assert status["state"] == "failed" and status["error_kind"] == "model_unavailable", status
    assert f"the hub is offline ({why})" in status["error"]


def test_probe_tells_a_listening_hub_from_a_closed_port(
        reachable_hub: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_ENDPOINT", reachable_hub)
    assert offline.unreachable() is None
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()  # nothing listens there now
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    why = offline.unreachable()
    assert why is not None and f"127.0.0.1:{port} is unreachable" in why


def test_hub_run_with_a_reachable_hub_turns_it_on_for_that_process_only(
        tmp_path: Path, reachable_hub: str) -> None:
    run_dir = launch.prepare(config.load(write_config(tmp_path)), "hub-model", tmp_path / "runs")
    code = (
        "import os, sys\n"
        "from workbench.train import sources\n"
        "sources.network_for_run(sys.argv[1])\n"
        "import huggingface_hub.constants as c, datasets.config as d\n"
        "print(os.environ['HF_HUB_OFFLINE'], c.HF_HUB_OFFLINE, d.HF_HUB_OFFLINE, "
        "c.HF_HUB_DISABLE_TELEMETRY, d.HF_UPDATE_DOWNLOAD_COUNTS)\n"
    )
    # The parent's own HF_HUB_OFFLINE=1, set by a workbench process, is not the user's choice.
    env = dict(clean_env(tmp_path), HF_ENDPOINT=reachable_hub, HF_HUB_OFFLINE="1",
               **{offline.USER_ENV: "{}"})
    out = subprocess.run([sys.executable, "-c", code, str(run_dir)], env=env, capture_output=True,
                         text=True, timeout=120, check=True).stdout.splitlines()
    assert out[0] == "hub: online for HuggingFaceTB/SmolLM-135M"
    # the hub on for the model; datasets (local data) and telemetry stay off
    assert out[-1] == "0 False True True False"


def test_apply_switches_libraries_already_imported() -> None:
    code = (
        "import huggingface_hub.constants as c, datasets.config as d\n"
        "assert not c.HF_HUB_OFFLINE and d.HF_UPDATE_DOWNLOAD_COUNTS\n"
        "from workbench import offline\n"
        "offline.apply()\n"
        "print(c.HF_HUB_OFFLINE, d.HF_HUB_OFFLINE, c.HF_HUB_DISABLE_TELEMETRY, d.HF_UPDATE_DOWNLOAD_COUNTS)\n"
        "offline.apply(hub=True, datasets=True)\n"
        "print(c.HF_HUB_OFFLINE, d.HF_HUB_OFFLINE)\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in SWITCHES}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=120, check=True).stdout.splitlines()
    assert out == ["True True True False", "False False"]


def test_offline_key_is_a_boolean(tmp_path: Path) -> None:
    assert config.load(write_config(tmp_path, "offline = true\n")).offline is True
    with pytest.raises(config.ConfigError, match="offline: must be true or false"):
        config.load(write_config(tmp_path, 'offline = "yes"\n'))
