"""nvidia-smi parsing on captured output, and mapping GPU processes to runs."""

from __future__ import annotations

import os
import subprocess
import time

from helpers import DATA

from workbench import gpus


def test_parse_gpus_h100() -> None:
    found = gpus.parse_gpus((DATA / "nvidia_smi_gpus.csv").read_text())
    assert [g.index for g in found] == [0, 1]
    first = found[0]
    assert first.uuid == "GPU-4c2a9e1b-7f0d-5e3c-8a21-6b9f0d3e7c15"
    assert first.name == "NVIDIA H100 80GB HBM3" and first.short_name == "H100"
    assert (first.memory_used_mib, first.memory_total_mib, first.utilization) == (23654, 81559, 61)


def test_parse_not_available_values() -> None:
    found = gpus.parse_gpus((DATA / "nvidia_smi_gpus_na.csv").read_text())
    assert found[0].utilization is None and found[0].memory_used_mib == 1530
    assert found[1].memory_used_mib is None and found[1].utilization == 3
    assert found[1].short_name == "RTX 4090"


def test_parse_garbage_and_no_devices() -> None:
    assert gpus.parse_gpus((DATA / "nvidia_smi_no_devices.txt").read_text()) == []
    assert gpus.parse_gpus("") == []
    assert gpus.parse_apps("") == []
    assert gpus.parse_apps("pid, gpu_uuid, used_gpu_memory [MiB]\n") == []


def test_parse_apps_and_attach_by_pid_and_session() -> None:
    gpu_list = gpus.parse_gpus((DATA / "nvidia_smi_gpus.csv").read_text())
    apps = gpus.parse_apps((DATA / "nvidia_smi_apps.csv").read_text()
                          + "99, GPU-a81f3d07-2c6e-4b9a-9e14-0f5d8c2b6a73, 100\n")
    assert apps[0].pid == 48213 and apps[0].used_mib == 23640
    # 48213 is a run's pid; 99 is a torchrun worker, a child of run 7000's launcher
    attached = gpus.attach(gpu_list, apps, {48213: "baseline#3", 7000: "sweep#1"},
                           ancestors_of=lambda pid: [99, 7000] if pid == 99 else [pid])
    assert attached[0].runs == ["baseline#3"]
    assert attached[1].runs == ["sweep#1"]


def test_reserved_gpu_shows_its_run_before_any_process() -> None:
    gpu_list = gpus.parse_gpus((DATA / "nvidia_smi_gpus.csv").read_text())
    attached = gpus.attach(gpu_list, [], {}, reserved={"1": "beta#2"})
    assert attached[0].runs == [] and attached[1].runs == ["beta#2"]


def test_session_id_of_a_real_process() -> None:
    proc = subprocess.Popen(["sleep", "5"], start_new_session=True)
    try:
        assert gpus.session_id(proc.pid) == proc.pid  # its own session, like a run
        assert gpus.session_id(os.getpid()) is not None
    finally:
        proc.kill()
        proc.wait()
    assert gpus.session_id(2**22 + 12345) is None


def test_query_without_nvidia_smi_is_quietly_empty() -> None:
    assert gpus.query({}, runner=lambda cmd: None) == []
    text = (DATA / "nvidia_smi_gpus.csv").read_text()
    found = gpus.query({48213: "a#1"}, runner=lambda cmd: text if "--query-gpu" in cmd[1] else
                       (DATA / "nvidia_smi_apps.csv").read_text())
    assert found[0].runs == ["a#1"]


def test_a_rank_in_a_session_of_its_own_maps_to_its_runs_launcher() -> None:
    """torch's elastic agent starts each rank with start_new_session: the ancestry still tells."""
    launcher = subprocess.Popen(
        ["/bin/sh", "-c", "setsid sleep 30 & echo $!; wait"], stdout=subprocess.PIPE, text=True,
        start_new_session=True)
    try:
        rank = int(launcher.stdout.readline())
        deadline = time.monotonic() + 5
        while gpus.session_id(rank) != rank:  # until setsid has run
            assert time.monotonic() < deadline
            time.sleep(0.01)
        uuid = "GPU-a81f3d07-2c6e-4b9a-9e14-0f5d8c2b6a73"
        gpu_list = [gpus.Gpu(1, uuid, "NVIDIA H100", 1.0, 80.0, 0.0)]
        pids = gpus.run_pids([("ddp#1", {"pid": 12345678, "pgid": launcher.pid})])
        attached = gpus.attach(gpu_list, [gpus.GpuProcess(rank, uuid, 100.0)], pids)
        assert attached[0].runs == ["ddp#1"]
    finally:
        os.kill(rank, 9)
        launcher.wait()
