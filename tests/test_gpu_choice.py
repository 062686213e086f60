"""Where the generation worker puts a base model, and that evicting one frees it."""

from __future__ import annotations

import io
import weakref
from pathlib import Path

from workbench import gpus
from workbench.generate import worker as worker_mod

DATA = Path(__file__).parent / "tui" / "data"


def machine() -> list[gpus.Gpu]:
    """Two H100s: GPU 0 busy with a run's process (23 GB), GPU 1 idle."""
    found = gpus.parse_gpus((DATA / "nvidia_smi_gpus.csv").read_text())
    apps = gpus.parse_apps((DATA / "nvidia_smi_apps.csv").read_text())
    return gpus.attach(found, apps, {})


def test_the_worker_avoids_the_gpu_a_run_uses():
    assert gpus.choose_gpu(machine()) == 1


def test_a_reserved_gpu_is_avoided_even_before_its_run_touches_it():
    found = machine()
    idle = [g.__class__(**{**g.__dict__, "processes": ()}) for g in found]  # nothing running yet
    assert gpus.choose_gpu(idle) == 1, "most free memory"
    assert gpus.choose_gpu(idle, reserved={"1"}) == 0
    assert gpus.choose_gpu(idle, reserved={found[1].uuid}) == 0


def test_all_busy_takes_the_least_loaded_and_counts_in_visible_order():
    found = machine()
    assert gpus.choose_gpu(found, reserved={"1"}) == 1, "busier by memory: GPU 0 holds 23 GB"
    # CUDA_VISIBLE_DEVICES=1,0: torch's device 0 is the machine's GPU 1
    assert gpus.choose_gpu(found, visible=["1", "0"]) == 0
    assert gpus.choose_gpu(found, visible=["0"]) == 0
    assert gpus.choose_gpu([], reserved={"0"}) is None


def test_an_evicted_base_model_is_freed_before_the_next_one_loads(tiny_llama_dir, tiny_gpt2_dir,
                                                                   monkeypatch):
    from workbench.train import trainer

    monkeypatch.setattr(worker_mod, "MAX_BASES", 1)
    alive_at_load: list[bool] = []
    real_load = trainer.load_model

    def load_model(*args, **kwargs):
        alive_at_load.append(gone() is not None)
        return real_load(*args, **kwargs)

    worker = worker_mod.Worker(io.StringIO())
    first = worker.base("r1", "p", {"backend": "tiny", "model": str(tiny_llama_dir)})
    gone = weakref.ref(first.model)
    del first
    monkeypatch.setattr(trainer, "load_model", load_model)
    worker.base("r2", "p", {"backend": "tiny", "model": str(tiny_gpt2_dir)})
    assert [b.key[1] for b in worker.bases.values()] == [str(tiny_gpt2_dir)]
    assert alive_at_load == [False], "the evicted model still held its memory during the load"
