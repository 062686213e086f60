"""The ``slurm`` launcher against a real one-node Slurm (see slurm_cluster.py).

Every run goes the user's way: ``workbench run`` (a subprocess) submits
``slurm.sh`` with sbatch, Slurm starts the tiny-model trainer, the run folder
fills as for a local run. Stop, kill and requeue use Slurm's own commands.
The script-content and validation tests need no Slurm.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from slurm_cluster import SlurmCluster, slurm_fixture  # noqa: F401 - the `slurm` fixture
from workbench_plugins import slurm as slurm_plugin

from workbench import config, launch, runs
from workbench.config import ConfigError

SAMPLE_DIR = Path(__file__).resolve().parents[1] / "workbench" / "data" / "greentext"
TIMEOUT = 240

TOML = """
[defaults]
backend = "tiny"
model = "{model}"
launcher = "slurm"
evaluators = ["perplexity"]
train.batch_size = 8
train.learning_rate = 1e-2
train.max_length = 48
data.source = "{data}"
data.column = "greentexts"
data.train_split = "train[:64]"
data.eval_split = "test[:8]"

[experiments.short]
train.steps = 6
train.eval_every = 3
train.save_every = 3

[experiments.long]
train.steps = 400
train.eval_every = 1000
train.save_every = 1000

[experiments.held]
train.steps = 6
slurm.extra = ["--hold"]

[experiments.multi]
train.steps = 4
train.eval_every = 4
train.save_every = 4
distributed.nnodes = 2
distributed.rdzv_endpoint = "head:{port}"
"""


# --- the batch script and the settings (no Slurm needed) ---------------------------------


def experiment(toml_body: str, name: str = "x") -> dict:
    text = textwrap.dedent(f"""
        [experiments.{name}]
        backend = "tiny"
        launcher = "slurm"
        data.source = "data.jsonl"
    """) + textwrap.dedent(toml_body)
    return config.loads(text, "/tmp/experiments.toml").get(name).model_dump(mode="json")


def test_script_execs_the_trainer_with_signal_requeue_and_the_experiments_options() -> None:
    exp = experiment("""
        slurm.partition = "gpu"
        slurm.time = "1:30:00"
        slurm.account = "lab"
        slurm.qos = "short"
        slurm.gpus_per_node = 1
        slurm.cpus_per_task = 8
        slurm.mem = "32G"
        slurm.signal_before = 300
        slurm.extra = ["--constraint=a100", "--exclusive"]
    """)
    script = slurm_plugin.batch_script("/shared/runs/x/7", exp)
    options = [ln.removeprefix("#SBATCH ") for ln in script.splitlines() if ln.startswith("#SBATCH")]
    assert options == [
        "--job-name=wb-x-7", "--output=/shared/runs/x/7/train.log", "--open-mode=append",
        "--chdir=/shared/runs/x/7", "--signal=B:TERM@300", "--requeue", "--nodes=1", "--ntasks-per-node=1",
        "--partition=gpu", "--time=1:30:00", "--account=lab", "--qos=short", "--gpus-per-node=1",
        "--cpus-per-task=8", "--mem=32G", "--constraint=a100", "--exclusive",
    ]
    last = script.strip().splitlines()[-1]
    assert last == f"exec {sys.executable} -m workbench.train /shared/runs/x/7 $RESUME"
    assert 'for c in /shared/runs/x/7/checkpoints/checkpoint-*' in script
    assert subprocess.run(["bash", "-n"], input=script, text=True).returncode == 0


def test_multi_node_script_runs_srun_torchrun_with_the_allocations_rendezvous() -> None:
    exp = experiment("""
        distributed.nnodes = 4
        distributed.nproc_per_node = 2
        distributed.rdzv_endpoint = "ignored:29777"
    """)
    script = slurm_plugin.batch_script("/shared/runs/x/2", exp)
    assert "#SBATCH --nodes=4" in script and "#SBATCH --ntasks-per-node=1" in script
    assert 'HEAD=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)' in script
    body = script.split("HEAD=", 1)[1]
    assert 'exec srun --nodes="$SLURM_JOB_NUM_NODES" --ntasks-per-node=1' in body
    assert "-m torch.distributed.run --nproc-per-node=2" in body
    assert '--rdzv-backend=c10d' in body and '--rdzv-endpoint="$HEAD:29777"' in body
    assert '--rdzv-id="$SLURM_JOB_ID"' in body and "-m workbench.train /shared/runs/x/2 $RESUME" in body
    assert subprocess.run(["bash", "-n"], input=script, text=True).returncode == 0

    one_node = slurm_plugin.batch_script("/r/x/3", experiment("distributed.nproc_per_node = 2"))
    assert "srun" not in one_node
    assert ("-m torch.distributed.run --nproc-per-node=2 --nnodes=1 --standalone -m workbench.train"
            in one_node)


@pytest.mark.parametrize(("line", "message"), [
    ('slurm.time = "90 minutes"', "time '90 minutes': use MINUTES, HH:MM:SS"),
    ('slurm.extra = ["--signal=USR1@60"]', "the slurm launcher sets --signal itself"),
    ('slurm.extra = ["exclusive"]', "is not an sbatch option"),
    ('slurm.mem = "lots"', "slurm.mem"),
    ("slurm.gpus_per_node = 0", "slurm.gpus_per_node"),
    ('slurm.time = "2"\nslurm.signal_before = 120', "signal_before (120 s) must be shorter than time ('2')"),
    ('slurm.partiton = "gpu"', "slurm.partiton: unknown key (did you mean 'partition'?)"),
])
def test_slurm_settings_are_validated_strictly(line: str, message: str) -> None:
    with pytest.raises(ConfigError, match=None) as err:
        experiment(line)
    assert message in str(err.value)


def test_the_tui_run_panel_names_the_job_and_its_state() -> None:
    from workbench.widgets.run_panel import banner_text

    status = {"state": "running", "job_id": "7", "job_detail": "slurm job 7 running on node3"}
    banner = banner_text(runs.Run("x", "1", Path("/nonexistent"), status), None, [])
    assert banner is not None and "slurm job 7 running on node3" in banner.plain


def test_without_sbatch_run_says_so_in_one_line_and_the_run_reads_failed(tmp_path: Path) -> None:
    (tmp_path / "experiments.toml").write_text(TOML.format(model=tmp_path, data=SAMPLE_DIR, port=1))
    env = dict(os.environ, PATH=str(Path(sys.executable).parent))  # no Slurm commands on it
    done = subprocess.run([sys.executable, "-m", "workbench.cli", "run", "short"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "workbench: error: short#1: could not submit: sbatch not found: the slurm launcher needs "
        "Slurm's commands on this machine (a login node of the cluster)"]
    run = runs.resolve(tmp_path / "runs", "short#1")
    assert (run.state, run.status["error_kind"]) == ("failed", "submit")


# --- against the real Slurm ----------------------------------------------------------------


@pytest.fixture(scope="module")
def project(slurm: SlurmCluster, tiny_llama_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("slurm-project")
    toml = TOML.format(model=tiny_llama_dir, data=SAMPLE_DIR, port=free_port())
    (root / "experiments.toml").write_text(toml)
    return root


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def env(slurm: SlurmCluster) -> dict[str, str]:
    # One torch thread: on a busy 2-core machine two per process make the tiny model ~10x slower.
    return dict(slurm.env(), HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false")


def workbench(project: Path, slurm: SlurmCluster, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "workbench.cli", "-c", str(project / "experiments.toml"),
                           *args], capture_output=True, text=True, env=env(slurm), timeout=120)


def submit(project: Path, slurm: SlurmCluster, name: str) -> tuple[runs.Run, str]:
    done = workbench(project, slurm, "run", name)
    assert done.returncode == 0, done.stderr
    run = runs.latest_run(project / "runs", name)
    assert run is not None
    job = run.status["job_id"]
    assert f"submitted {run.ref} to slurm: job {job}" in done.stdout
    return run, job


def wait_for(predicate, what: str, slurm: SlurmCluster, run: runs.Run | None = None,
             timeout: float = TIMEOUT):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    log = runs.tail_log(run.path, 40) if run else []
    raise AssertionError(f"timed out waiting for {what}\n" + "\n".join(log) + "\n" + slurm.logs())


def events(run: runs.Run, kind: str) -> list[dict]:
    return [e for e in runs.read_events(run.path) if e["type"] == kind]


def test_a_run_submitted_through_workbench_run_finishes_with_its_events(project: Path,
                                                                        slurm: SlurmCluster) -> None:
    run, job = submit(project, slurm, "short")
    assert (run.path / "slurm.sh").is_file()
    during = workbench(project, slurm, "status", run.ref)
    assert f"slurm job {job}" in during.stdout
    assert any(word in during.stdout for word in ("pending", "running on", "finished")), during.stdout

    status = wait_for(lambda: (st := run.refresh().status)["state"] in ("finished", "failed") and st,
                      "the run to end", slurm, run)
    assert status["state"] == "finished", runs.tail_log(run.path, 40)
    assert [e["step"] for e in events(run, "train")] == list(range(1, 7))
    assert [e["step"] for e in events(run, "eval")][-1] == 6
    assert (run.path / runs.ADAPTER).is_dir()
    assert (run.path / runs.CHECKPOINTS / "checkpoint-6").is_dir()
    wait_for(lambda: slurm.job_state(job) == "COMPLETED", "the job to complete", slurm, run)
    listing = workbench(project, slurm, "status")
    assert run.ref in listing.stdout and "finished" in listing.stdout
    assert f"slurm job: {job}" in workbench(project, slurm, "status", run.ref).stdout


@pytest.mark.slow  # real Slurm jobs: .ci/run runs it (make test-slow)
def test_a_held_job_reads_queued_with_its_reason_and_stop_cancels_it(project: Path,
                                                                     slurm: SlurmCluster) -> None:
    run, job = submit(project, slurm, "held")
    shown = workbench(project, slurm, "status", run.ref).stdout
    assert f"queued · slurm job {job} pending (JobHeldUser)" in shown
    listed = workbench(project, slurm, "list").stdout
    assert any(run.ref in line and f"queued · slurm job {job} pending (JobHeldUser)" in line
               for line in listed.splitlines()), listed
    stopped = workbench(project, slurm, "stop", run.ref)
    assert stopped.returncode == 0, stopped.stderr
    assert run.refresh().state == "stopped" and run.status.get("cancelled")
    wait_for(lambda: slurm.job_state(job) == "CANCELLED", "the job to be cancelled", slurm)
    assert run.refresh().state == "stopped"


def started_training(run: runs.Run, slurm: SlurmCluster) -> None:
    wait_for(lambda: run.refresh().state == "running" and events(run, "train"), "training to start",
             slurm, run)


@pytest.mark.slow  # real Slurm jobs: .ci/run runs it (make test-slow)
def test_stop_makes_the_trainer_checkpoint_and_end_stopped_and_resume_submits_again(
        project: Path, slurm: SlurmCluster) -> None:
    run, job = submit(project, slurm, "long")
    started_training(run, slurm)
    assert f"slurm job {job} running on {slurm.node}" in workbench(project, slurm, "status").stdout
    done = workbench(project, slurm, "stop", run.ref, "--wait", "120")
    assert done.returncode == 0, done.stderr
    status = run.refresh().status
    assert status["state"] == "stopped", runs.tail_log(run.path, 40)
    step = status["step"]
    assert 0 < step < 400
    assert events(run, "checkpoint")[-1]["step"] == step
    assert (run.path / runs.CHECKPOINTS / f"checkpoint-{step}").is_dir()
    wait_for(lambda: slurm.job_state(job) == "COMPLETED", "the job to complete", slurm, run)
    assert run.refresh().state == "stopped"

    resumed = workbench(project, slurm, "resume", run.ref)  # a new job, from the checkpoint
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming {run.ref} from checkpoint-{step}" in resumed.stdout
    new_job = run.refresh().status["job_id"]
    assert new_job != job and not run.status.get("stop_requested")
    wait_for(lambda: events(run, "resume"), "the new job to resume", slurm, run)
    assert events(run, "resume")[0]["from_step"] == step
    assert workbench(project, slurm, "stop", run.ref, "--wait", "120").returncode == 0
    assert run.refresh().state == "stopped" and run.status["step"] >= step


@pytest.mark.slow  # real Slurm jobs: .ci/run runs it (make test-slow)
def test_a_job_slurm_kills_reads_as_failed_with_the_reason(project: Path, slurm: SlurmCluster) -> None:
    run, job = submit(project, slurm, "long")
    started_training(run, slurm)
    slurm.cmd("scancel", "--signal=KILL", "--full", job)
    ended = wait_for(lambda: (state := slurm.job_state(job)) not in ("RUNNING", "COMPLETING") and state,
                     "Slurm to end the job", slurm, run, timeout=90)
    # read within a few seconds (squeue answers are cached for a second), then for good
    status = wait_for(lambda: (st := run.refresh().status)["state"] == "failed" and st,
                      "the run to read failed", slurm, run, timeout=10)
    time.sleep(slurm_plugin.CACHE_S)
    assert run.refresh().state == "failed"
    assert status["error"].startswith(f"slurm job {job} {ended}")
    assert status["error_kind"] == ended.lower()
    shown = workbench(project, slurm, "status", run.ref).stdout
    assert "failed" in shown and f"slurm job {job}" in shown


@pytest.mark.slow  # real Slurm jobs: .ci/run runs it (make test-slow)
def test_a_requeued_job_resumes_from_its_checkpoint(project: Path, slurm: SlurmCluster) -> None:
    run, job = submit(project, slurm, "long")
    started_training(run, slurm)
    slurm.cmd("scontrol", "requeue", job)
    wait_for(lambda: run.refresh().state == "queued" and run.status.get("requeued"),
             "the requeued run to read queued", slurm, run, timeout=120)
    raw = runs._read_raw_status(run.path)
    assert raw["state"] == "stopped"  # the trainer got TERM and saved a checkpoint
    stopped_at = raw["step"]
    assert (run.path / runs.CHECKPOINTS / f"checkpoint-{stopped_at}").is_dir()
    slurm.cmd("scontrol", "update", f"JobId={job}", "StartTime=now")  # Slurm holds a requeue back ~2 min
    wait_for(lambda: events(run, "resume"), "the job to resume", slurm, run)
    assert events(run, "resume")[0]["from_step"] == stopped_at
    # the resumed trainer is real; stop it rather than train 400 steps
    wait_for(lambda: run.refresh().state == "running" and events(run, "train")[-1]["step"] > stopped_at,
             "the resumed run to train", slurm, run)
    assert workbench(project, slurm, "stop", run.ref, "--wait", "120").returncode == 0
    assert run.refresh().state == "stopped"
    steps = [e["step"] for e in runs.effective(runs.read_events(run.path)) if e["type"] == "train"]
    assert steps == list(range(1, run.status["step"] + 1))


@pytest.mark.slow  # real Slurm jobs: .ci/run runs it (make test-slow)
def test_the_local_queue_never_holds_or_counts_slurm_runs(project: Path, slurm: SlurmCluster) -> None:
    from workbench import queue

    run, job = submit(project, slurm, "held")
    try:
        assert run.refresh().state == "queued"
        assert queue.queued(project / "runs") == []
    finally:
        slurm.cmd("scancel", job)


@pytest.mark.slow  # real Slurm jobs: .ci/run runs it (make test-slow)
def test_the_multi_node_script_trains_through_srun_and_torchrun_on_a_one_node_allocation(
        project: Path, slurm: SlurmCluster) -> None:
    # The two-node script, allocated one node (an sbatch option overrides #SBATCH): srun starts
    # one torchrun, which takes its rendezvous from the allocation and runs the trainer as rank 0.
    cfg = config.load(project / "experiments.toml")
    run_dir = launch.prepare(cfg, "multi", project / "runs")
    script = slurm_plugin.batch_script(str(run_dir), cfg.get("multi").model_dump(mode="json"))
    assert "exec srun" in script
    (run_dir / "slurm.sh").write_text(script)
    job = slurm.cmd("sbatch", "--parsable", "--nodes=1", str(run_dir / "slurm.sh")).strip()
    runs.write_status(run_dir, launcher="slurm", job_id=job)  # what `workbench run` records
    run = runs.resolve(project / "runs", f"multi#{run_dir.name}")
    status = wait_for(lambda: (st := run.refresh().status)["state"] == "finished" and st,
                      "the srun + torchrun run to finish", slurm, run)
    assert status["world_size"] == 1
    assert [e["step"] for e in events(run, "train")] == [1, 2, 3, 4]
    wait_for(lambda: slurm.job_state(job) == "COMPLETED", "the job to complete", slurm, run)
