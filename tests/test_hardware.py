"""Precision from the GPU's compute capability, probed on the rank's own GPU.

No GPU here: torch.cuda's device queries are patched to describe one. A real
T4 or V100 (capability 7.x) can build a bf16 tensor (emulated), so the
emulation probe is patched to say yes, as it does there.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from workbench.train.trainer import detect_hardware


@pytest.fixture
def fake_gpu(monkeypatch: pytest.MonkeyPatch):
    """Describe a machine with two GPUs of one capability; record which device is made current."""
    state = {"current": 0, "capability": (8, 0), "set": []}

    def set_device(index: int) -> None:
        state["set"].append(index)
        state["current"] = index

    def properties(device=None):
        index = state["current"] if device is None else int(device)
        assert index == state["current"], "probed a GPU other than the rank's own"
        major, minor = state["capability"]
        return SimpleNamespace(major=major, minor=minor, name="fake")

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "set_device", set_device)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: state["current"])
    monkeypatch.setattr(torch.cuda, "get_device_properties", properties)
    monkeypatch.setattr(torch.cuda, "_check_bf16_tensor_supported", lambda device: True)
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    return state


@pytest.mark.parametrize(("capability", "gpu", "expected"), [
    ((7, 0), "V100", "fp16"),
    ((7, 5), "T4", "fp16"),
    ((8, 0), "A100", "bf16"),
    ((9, 0), "H100", "bf16"),
])
def test_auto_precision_is_bf16_only_where_the_gpu_has_it_natively(fake_gpu, capability, gpu,
                                                                    expected):
    fake_gpu["capability"] = capability
    hardware = detect_hardware("auto")
    assert (hardware.cuda, hardware.precision) == (True, expected), gpu


@pytest.mark.parametrize("capability", [(7, 0), (7, 5)])
def test_asking_for_bf16_on_a_gpu_that_only_emulates_it_is_refused(fake_gpu, capability):
    from workbench.train.errors import UserError

    fake_gpu["capability"] = capability
    with pytest.raises(UserError, match="no bf16"):
        detect_hardware("bf16")


def test_the_probe_makes_the_ranks_own_gpu_current_first(fake_gpu, monkeypatch):
    monkeypatch.setenv("LOCAL_RANK", "1")
    detect_hardware("auto")
    assert fake_gpu["set"] == [1], "rank 1 probes GPU 1, not GPU 0"
