"""A hostile environment through the real command: a full disk, a diverging run, absurd input,
broken files, escape sequences. Each test states the fault and what the user must see instead.

A full disk is a real 3 MB tmpfs mounted as the runs folder (root only: skipped with the
reason elsewhere). Training runs are real tiny-model runs through ``workbench run`` or
``python -m workbench.train``.
"""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from workbench import cli, launch, runs
from workbench.train.runner import run as run_in_process

SAMPLE_DIR = Path(__file__).resolve().parents[1] / "workbench" / "data" / "greentext"
TIMEOUT = 300

BASE = f"""\
[defaults]
backend = "tiny"
prompts = [">be me"]
train.batch_size = 8
train.max_length = 64
train.eval_every = 100
sampling.max_new_tokens = 4
data.source = "{SAMPLE_DIR}"
data.column = "greentexts"
data.train_split = "train"
data.eval_split = "test"
"""


def env() -> dict[str, str]:
    return dict(os.environ, HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")


def workbench(*args: str, cwd: Path, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "workbench.cli", *args], cwd=cwd, env=env(),
                          capture_output=True, text=True, timeout=timeout)


def one_line_error(result: subprocess.CompletedProcess, code: int, *needles: str) -> str:
    assert result.returncode == code, result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def strict_lines(path: Path) -> list[dict]:
    """Every line of a JSONL file, parsed by a reader that rejects NaN and Infinity."""
    def reject(token: str) -> None:
        raise AssertionError(f"{path.name} holds a bare {token}")

    return [json.loads(line, parse_constant=reject) for line in path.read_text().splitlines()]


def project(tmp_path: Path, model: Path, *lines: str) -> Path:
    (tmp_path / "experiments.toml").write_text(
        BASE + f'model = "{model}"\n[experiments.t]\n' + "\n".join(lines) + "\n")
    return tmp_path


# --- 1. a full disk --------------------------------------------------------------------------


@pytest.fixture
def full_disk(tmp_path: Path):
    """A 3 MB tmpfs to use as the runs folder."""
    mount = tmp_path / "runs"
    mount.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mount)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"mount not permitted here: {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(folder: Path) -> None:
    """Write until the disk holding ``folder`` has no byte left."""
    with open(folder / "filler", "wb") as fh:
        try:
            while True:
                fh.write(b"\0" * 65536)
                fh.flush()
        except OSError:
            pass


def test_full_disk_ends_failed_disk_full_and_commands_say_so_in_one_line(
        tiny_llama_dir: Path, tmp_path: Path, full_disk: Path) -> None:
    cwd = project(tmp_path, tiny_llama_dir, "train.steps = 60", "train.save_every = 2")
    done = workbench("run", "t", "--follow", cwd=cwd, timeout=TIMEOUT)
    run_dir = full_disk / "t" / "1"
    status = json.loads((run_dir / "status.json").read_text())
    assert done.returncode == 1, done.stdout[-2000:]
    assert status["state"] == "failed" and status["error_kind"] == "disk_full", status
    assert "No space left on device" in status["error"] and "free space" in status["hint"]
    assert not list(run_dir.glob(".status.json.*")), "no temp file left behind"
    assert strict_lines(run_dir / "events.jsonl")[-1]["state"] == "failed"
    assert "t#1: failed (disk_full)" in workbench("status", "t#1", cwd=cwd).stdout

    fill(full_disk)  # nothing left at all: the CLI's own writes fail
    before = (run_dir / "status.json").read_text()
    one_line_error(workbench("run", "t", cwd=cwd), 1, "No space left on device", "config.json")
    assert sorted(p.name for p in (full_disk / "t").iterdir()) == ["1"], "no run folder without a status"
    one_line_error(workbench("resume", "t#1", cwd=cwd), 1, "No space left on device", "status.json")
    assert (run_dir / "status.json").read_text() == before, "a refused resume changes nothing"
    assert not list(run_dir.glob(".status.json.*"))


def test_a_run_that_died_of_a_full_disk_reads_disk_full(tmp_path: Path) -> None:
    """The trainer could not even write its status: the log says why, and so does the reader."""
    cwd = project(tmp_path, tmp_path / "model")
    run_dir = launch.prepare(cli.config.load(cwd / "experiments.toml"), "t", cwd / "runs")
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    start = runs.process_start_time(dead.pid)
    dead.wait()
    runs.write_status(run_dir, state="running", pid=dead.pid, pid_start=start)
    (run_dir / "train.log").write_text("step 4/60  loss 5.1\nOSError: [Errno 28] No space left on device\n")
    out = workbench("status", "t#1", cwd=cwd).stdout
    assert "t#1: failed (disk_full)" in out and "free space" in out
    (run_dir / "train.log").write_text("step 4/60  loss 5.1\n")
    assert "failed (vanished)" in workbench("status", "t#1", cwd=cwd).stdout


# --- 2. a diverging run ------------------------------------------------------------------------


def test_a_diverging_run_fails_naming_the_step_and_keeps_the_checkpoint_before(
        tiny_llama_dir: Path, tmp_path: Path) -> None:
    cwd = project(tmp_path, tiny_llama_dir, "train.steps = 8", "train.save_every = 1",
                  "train.learning_rate = 1e30")
    config = cli.config.load(cwd / "experiments.toml")
    run_dir = launch.prepare(config, "t", cwd / "runs")
    with open(run_dir / "train.log", "wb") as log:
        code = subprocess.run([sys.executable, "-m", "workbench.train", str(run_dir)], stdout=log,
                              stderr=subprocess.STDOUT, env=env(), timeout=TIMEOUT).returncode
    status = json.loads((run_dir / "status.json").read_text(), parse_constant=lambda t: 1 / 0)
    assert code == 1 and status["state"] == "failed" and status["error_kind"] == "diverged", status
    bad_step = int(re.search(r"at step (\d+)", status["error"]).group(1))
    kept = sorted(int(p.name.split("-")[1]) for p in (run_dir / "checkpoints").glob("checkpoint-*"))
    assert kept and max(kept) < bad_step, (kept, status["error"])
    assert f"checkpoint-{max(kept)} is from before it" in status["error"]
    assert "learning_rate" in status["hint"]
    from safetensors.torch import load_file

    weights = load_file(run_dir / "checkpoints" / f"checkpoint-{max(kept)}" / "adapter_model.safetensors")
    assert all(bool(t.isfinite().all()) for t in weights.values()), "the kept checkpoint is finite"
    events = strict_lines(run_dir / "events.jsonl")
    assert events[-1]["state"] == "failed"


def test_non_finite_values_are_written_as_null(tmp_path: Path) -> None:
    runs.append_event(tmp_path, "train", step=2, loss=math.nan, grad_norm=math.inf, extra=[-math.inf, 1.0])
    runs.write_status(tmp_path, state="running", loss=math.nan, last_eval={"perplexity": math.inf})
    (event,) = strict_lines(tmp_path / "events.jsonl")
    assert (event["loss"], event["grad_norm"], event["extra"]) == (None, None, [None, 1.0])
    status = json.loads((tmp_path / "status.json").read_text(), parse_constant=lambda t: 1 / 0)
    assert status["loss"] is None and status["last_eval"] == {"perplexity": None}


# --- 8. --max-parallel ---------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["-1", "0"])
def test_max_parallel_below_one_is_refused(tmp_path: Path, value: str) -> None:
    cwd = project(tmp_path, tmp_path / "model")
    one_line_error(workbench("run", "t", "--max-parallel", value, cwd=cwd), 2,
                   "--max-parallel", "1 or more", f"got {value}")
    assert not (cwd / "runs").exists(), "nothing was queued"


# --- 10. one line, never a traceback ------------------------------------------------------------


def test_names_too_long_for_a_file_name(tmp_path: Path) -> None:
    long = "a" * 300
    (tmp_path / "experiments.toml").write_text(BASE + f"[experiments.{long}]\n")
    one_line_error(workbench("validate", cwd=tmp_path), 2, "at most 120 characters")
    cwd = project(tmp_path, tmp_path / "model")
    one_line_error(workbench("status", long, cwd=cwd), 2, "no run")
    one_line_error(workbench("stop", long + "#1", cwd=cwd), 2)


def test_runs_dir_that_is_a_file(tmp_path: Path) -> None:
    cwd = project(tmp_path, tmp_path / "model")
    (cwd / "afile").write_text("x")
    for command in (["status"], ["list"], ["run", "t"], ["queue"], ["results"]):
        one_line_error(workbench(*command, "--runs-dir", "afile", cwd=cwd), 2, "is a file, not a folder")


def test_status_into_a_closed_pipe(tmp_path: Path) -> None:
    cwd = project(tmp_path, tmp_path / "model")
    for n in range(1, 1500):  # more than a pipe buffer of output
        folder = cwd / "runs" / "t" / str(n)
        folder.mkdir(parents=True)
        (folder / "status.json").write_text('{"state": "finished", "loss": 1.5}')
    done = subprocess.run(f"{sys.executable} -m workbench.cli status | head -1", shell=True, cwd=cwd,
                          env=env(), capture_output=True, text=True, timeout=120)
    assert done.stdout.startswith("run") and done.stderr == "", done.stderr[-2000:]


def test_a_deep_extends_chain_and_a_huge_matrix(tmp_path: Path) -> None:
    chain = "".join(f'[experiments.e{i}]\nextends = "e{i - 1}"\n' for i in range(1, 2000))
    (tmp_path / "experiments.toml").write_text(BASE + "[experiments.e0]\n" + chain)
    done = workbench("validate", cwd=tmp_path, timeout=120)
    assert done.returncode == 0 and "2000 experiments OK" in done.stdout, done.stderr

    values = ", ".join(str(i) for i in range(1000))
    (tmp_path / "experiments.toml").write_text(
        BASE + f'[experiments.m]\nmatrix = {{ "train.seed" = [{values}], "lora.r" = [{values}] }}\n')
    one_line_error(workbench("validate", cwd=tmp_path), 2, "experiments.m.matrix",
                   "1000000 experiments", "at most 1000")

    (tmp_path / "experiments.toml").write_text(BASE + "[experiments.x]\nprompts = " + "[" * 5000 + "]" * 5000)
    one_line_error(workbench("validate", cwd=tmp_path), 2, "nested too deeply")


# --- 9. strict values through the command -----------------------------------------------------


@pytest.mark.parametrize(("line", "needles"), [
    ("train.steps = true", ("train.steps", "whole number", "got true")),
    ('train.steps = "10"', ("train.steps", "whole number", "got '10'")),
    ("train.learning_rate = inf", ("train.learning_rate", "finite")),
    ("sampling.temperature = inf", ("sampling.temperature", "finite")),
    ('train.lr_scheduler = "bogus"', ("train.lr_scheduler", "must be one of", "'cosine'")),
    ("lora.target_modules = []", ("lora.target_modules", "must not be empty")),
])
def test_values_outside_their_domain(tmp_path: Path, line: str, needles: tuple[str, ...]) -> None:
    cwd = project(tmp_path, tmp_path / "model", line)
    one_line_error(workbench("validate", cwd=cwd), 2, *needles)


# --- 11. data errors ---------------------------------------------------------------------------


@pytest.mark.parametrize(("content", "needles"), [
    (b"", (":", "empty (0 bytes)")),
    (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)) * 8, (":1:", "not UTF-8", "0x89")),
    (b'{"text": "ok"}\n{"text": "fine"}\n{"text": "caf\xe9"}\n', (":3:", "not UTF-8", "0xe9")),
    (b'{"text": "ok"}\n{"text": oops}\n', (":2:", "not a JSON object")),
    (b'{"text": "ok"}\n\x00\x00\x00\n', (":2:", "binary data")),
], ids=["empty", "binary", "latin-1", "not-json", "nul-bytes"])
def test_bad_data_files_fail_with_kind_data_naming_file_and_line(
        tiny_llama_dir: Path, tmp_path: Path, content: bytes, needles: tuple[str, ...]) -> None:
    data, good = tmp_path / "rows.jsonl", tmp_path / "good.jsonl"
    data.write_bytes(content)
    good.write_text('{"text": "held out"}\n')
    cwd = project(tmp_path, tiny_llama_dir, f'data.source = "{data}"', 'data.column = "text"',
                  'data.train_split = "train"', f'data.eval_source = "{good}"',
                  'data.eval_split = "train"', "train.steps = 2")
    run_dir = launch.prepare(cli.config.load(cwd / "experiments.toml"), "t", cwd / "runs")
    assert run_in_process(run_dir) == 1
    status = runs.read_status(run_dir)
    assert status["error_kind"] == "data", status
    assert str(data) in status["error"], status["error"]
    for needle in needles:
        assert needle in status["error"], status["error"]
    assert "Traceback" not in (run_dir / "events.jsonl").read_text()


# --- 12. escape sequences from a model or a file -------------------------------------------------


ESC = "\x1b]0;owned\x07\x1b[2J"


def test_model_and_file_text_is_sanitised_on_the_terminal(tmp_path: Path) -> None:
    cwd = project(tmp_path, tmp_path / "model")
    (cwd / "experiments.toml").write_text((cwd / "experiments.toml").read_text().replace(
        f'model = "{tmp_path / "model"}"', 'model = "evil\\u001b[2Jmodel"'))
    run_dir = launch.prepare(cli.config.load(cwd / "experiments.toml"), "t", cwd / "runs")
    runs.append_event(run_dir, "sample", step=2, checkpoint="checkpoint-2", prompt=">be me",
                      text=f"hello{ESC}world")
    runs.append_event(run_dir, "status", state="failed", message=f"bad{ESC}")
    runs.write_status(run_dir, state="failed", error=f"boom{ESC}", hint=f"h{ESC}", ended=1.0)
    (run_dir / "train.log").write_text(f"a log line{ESC}\n")

    shown: list[str] = []
    assert cli.follow(runs.resolve(cwd / "runs", "t#1"), out=shown.append, poll=0.01) == 1
    text = "\n".join(shown)
    assert "hello\ufffd" in text and "world" in text
    for command in (["status", "t#1"], ["status"], ["list"]):
        out = workbench(*command, cwd=cwd).stdout
        assert out and "\x1b" not in out and "\x07" not in out, (command, out)
    assert "\x1b" not in text and "\x07" not in text


# --- also: plugins_dir named, stop --wait says what it waits for ----------------------------------


def test_validate_names_the_plugins_folder_it_ran(tmp_path: Path) -> None:
    cwd = project(tmp_path, tmp_path / "model")
    (cwd / "plugs").mkdir()
    (cwd / "plugs" / "mine.py").write_text("print('plugin code ran')\n")
    (cwd / "experiments.toml").write_text('plugins_dir = "plugs"\n' + (cwd / "experiments.toml").read_text())
    out = workbench("validate", cwd=cwd).stdout
    assert f"plugins loaded from {cwd / 'plugs'}" in out


def test_stop_wait_says_what_it_waits_for(tmp_path: Path) -> None:
    cwd = project(tmp_path, tmp_path / "model")
    run_dir = launch.prepare(cli.config.load(cwd / "experiments.toml"), "t", cwd / "runs")
    proc = subprocess.Popen(["sleep", "60"], start_new_session=True)
    try:
        runs.write_status(run_dir, state="running", pid=proc.pid, pgid=proc.pid,
                          pid_start=runs.process_start_time(proc.pid))
        done = workbench("stop", "t#1", "--wait", "20", cwd=cwd)
    finally:
        proc.kill()
        proc.wait()
    assert "waiting up to 20s for t#1 to write its checkpoint and exit" in done.stdout, done
    one_line_error(workbench("stop", "t#1", "--wait", "-1", cwd=cwd), 2, "--wait")
