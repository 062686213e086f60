"""A real one-node Slurm for the tests: munged, slurmctld and slurmd from Debian's packages.

The ``slurm`` fixture (session scope) writes a ``slurm.conf`` with settings that
work inside a container (no cgroups, no accounting, root as SlurmUser) and the
daemons' state into a short temporary folder, starts a private ``munged`` on its
own socket, ``slurmctld`` and ``slurmd`` in the foreground on free ports, points
``SLURM_CONF`` at the file and waits until ``sinfo`` shows the node idle (about a
second). At the end it cancels what is left and stops the daemons.

Without root or without the packages it skips, unless ``WORKBENCH_REQUIRE_SLURM=1``
(set by ``.ci/run``), where that is a failure.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

REQUIRE_ENV = "WORKBENCH_REQUIRE_SLURM"
COMMANDS = ("munged", "mungekey", "slurmctld", "slurmd", "sbatch", "squeue", "scancel", "scontrol", "sinfo")

CONF = """\
ClusterName=wbtest
SlurmctldHost={host}(127.0.0.1)
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket={dir}/munge/munge.sock
CredType=cred/munge
StateSaveLocation={dir}/state
SlurmdSpoolDir={dir}/spool
SlurmctldPidFile={dir}/slurmctld.pid
SlurmdPidFile={dir}/slurmd.pid
SlurmctldLogFile={dir}/slurmctld.log
SlurmdLogFile={dir}/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=none
ReturnToService=2
MinJobAge=600
NodeName={host} NodeAddr=127.0.0.1 CPUs={cpus} State=UNKNOWN
PartitionName=debug Nodes={host} Default=YES MaxTime=INFINITE State=UP
"""


@dataclass
class SlurmCluster:
    """The running one-node cluster: its folder, config file and node name."""

    folder: Path
    conf: Path
    node: str

    def env(self) -> dict[str, str]:
        return dict(os.environ, SLURM_CONF=str(self.conf))

    def cmd(self, *argv: str, check: bool = True) -> str:
        """Run a Slurm command against this cluster; its stdout."""
        done = subprocess.run(list(argv), capture_output=True, text=True, env=self.env(), timeout=60)
        if check and done.returncode != 0:
            raise AssertionError(f"{' '.join(argv)}: exit {done.returncode}: {done.stderr.strip()}")
        return done.stdout

    def job_state(self, job: str) -> str:
        return self.cmd("squeue", "-h", "-t", "all", "-j", job, "-o", "%T").strip()

    def logs(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-3000:]}"
                         for p in sorted(self.folder.glob("*.log")))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _unavailable() -> str | None:
    missing = [c for c in COMMANDS if shutil.which(c) is None]
    if missing:
        return f"Slurm is not installed (missing {', '.join(missing)}): apt-get install slurm-wlm munge"
    if os.geteuid() != 0:
        return "the test Slurm runs its daemons as root"
    return None


@pytest.fixture(scope="session", name="slurm")
def slurm_fixture() -> Iterator[SlurmCluster]:
    why = _unavailable()
    if why:
        if os.environ.get(REQUIRE_ENV) == "1":
            pytest.fail(f"{why} ({REQUIRE_ENV}=1: CI must test against a real Slurm)")
        pytest.skip(why)
    # A short path: munge's socket path must fit a sockaddr_un (108 bytes).
    folder = Path(tempfile.mkdtemp(prefix="wb-slurm-"))
    for sub in ("state", "spool", "munge"):
        (folder / sub).mkdir(mode=0o700)
    host = socket.gethostname().split(".")[0]
    conf = folder / "slurm.conf"
    conf.write_text(CONF.format(host=host, dir=folder, cpus=os.cpu_count() or 1,
                                ctld_port=_free_port(), slurmd_port=_free_port()))
    cluster = SlurmCluster(folder, conf, host)
    previous = os.environ.get("SLURM_CONF")
    os.environ["SLURM_CONF"] = str(conf)
    procs: list[subprocess.Popen] = []
    out = open(folder / "daemons.log", "ab")  # noqa: SIM115 - closed in the finally below
    try:
        subprocess.run(["mungekey", "--create", f"--keyfile={folder}/munge/munge.key"], check=True,
                       capture_output=True)
        munge = folder / "munge"
        procs.append(subprocess.Popen(
            ["munged", "--foreground", "--force", f"--key-file={munge}/munge.key",
             f"--socket={munge}/munge.sock", f"--pid-file={munge}/munged.pid",
             f"--log-file={munge}/munged.log", f"--seed-file={munge}/munge.seed"],
            stdout=out, stderr=subprocess.STDOUT))
        _wait(lambda: (munge / "munge.sock").exists(), "munged's socket", cluster)
        procs.append(subprocess.Popen(["slurmctld", "-D", "-c", "-i", "-f", str(conf)],
                                      stdout=out, stderr=subprocess.STDOUT))
        procs.append(subprocess.Popen(["slurmd", "-D", "-N", host, "-f", str(conf)],
                                      stdout=out, stderr=subprocess.STDOUT))
        _wait(lambda: "idle" in cluster.cmd("sinfo", "-h", "-o", "%T", check=False),
              "the node to be idle", cluster)
        yield cluster
    finally:
        if procs:
            cluster.cmd("scancel", "--full", "--signal=KILL", "--user=root", check=False)
            _wait(lambda: not cluster.cmd("squeue", "-h", check=False).strip(), "jobs to end", cluster,
                  timeout=30, fail=False)
        for proc in reversed(procs):
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        out.close()
        if previous is None:
            os.environ.pop("SLURM_CONF", None)
        else:
            os.environ["SLURM_CONF"] = previous
        shutil.rmtree(folder, ignore_errors=True)


def _wait(predicate, what: str, cluster: SlurmCluster, timeout: float = 30, fail: bool = True) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    if fail:
        raise AssertionError(f"test Slurm: timed out waiting for {what}\n{cluster.logs()}")
