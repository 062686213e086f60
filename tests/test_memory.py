"""Training and evaluation peaks are measured apart (reset around each evaluation pass)."""

from __future__ import annotations

import pytest

from workbench.train.memory import GB, PeakMemory, reset_rss_peak, rss_peak_bytes


def test_cpu_rss_peaks_keep_an_eval_pass_out_of_the_training_peak():
    reset_rss_peak()
    if rss_peak_bytes() is None:
        pytest.skip("no /proc/self/status VmHWM here")
    memory = PeakMemory.for_device(cuda=False)
    memory.training_peak()
    with memory.evaluation():
        big = b"\x01" * int(0.4 * GB)  # the eval pass's logits, say: touched, resident
        del big
    fields = memory.fields()  # read after the eval pass, like the next train event
    assert fields["eval_peak_mem_gb"] - fields["peak_mem_gb"] >= 0.3, fields


class FakeAllocator:
    """torch.cuda's peak counter: max since the last reset."""

    def __init__(self) -> None:
        self.now = 0
        self.peak = 0

    def use(self, nbytes: int) -> None:
        self.now = nbytes
        self.peak = max(self.peak, nbytes)

    def read(self) -> int:
        return self.peak

    def reset(self) -> None:
        self.peak = self.now


def test_gpu_peaks_are_kept_apart_across_several_evaluations():
    gpu = FakeAllocator()
    memory = PeakMemory(gpu.read, gpu.reset)
    for step_bytes, eval_bytes in ((2 * GB, 9 * GB), (3 * GB, 5 * GB)):
        gpu.use(step_bytes)
        gpu.use(int(1 * GB))
        with memory.evaluation():
            gpu.use(eval_bytes)
            gpu.use(int(1 * GB))
    gpu.use(int(2.5 * GB))
    assert memory.fields() == {"peak_mem_gb": 3.0, "eval_peak_mem_gb": 9.0}


def test_nothing_is_reported_where_nothing_can_be_measured():
    memory = PeakMemory(lambda: None, lambda: None)
    with memory.evaluation():
        pass
    assert memory.fields() == {}
