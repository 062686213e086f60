"""The GPU fast path and the batching settings resolve to the right TrainingArguments.

The settings are resolved for the hardware (``Hardware(cuda=...)``), so the
CUDA defaults are checked here on a CPU; what only a GPU can show runs in
``benchmarks/gpu_check.sh``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from workbench.config import loads
from workbench.train.errors import UserError
from workbench.train.trainer import FastPath, Hardware, fast_path, sft_config

CPU = Hardware(cuda=False, precision="fp32")
GPU = Hardware(cuda=True, precision="fp32")  # fp32: TrainingArguments accepts it on this CPU box


def experiment(*lines: str):
    toml = "\n".join(["[experiments.t]", 'backend = "tiny"', 'data.source = "x/y"', *lines])
    return loads(toml).get("t")


def test_cpu_defaults_leave_the_fast_path_off(tmp_path: Path) -> None:
    exp = experiment()
    assert exp.train.batching == "padding_free"
    assert fast_path(exp.train, CPU, liger_available=True) == FastPath(
        fused_adamw=False, pin_memory=False, compile=False, liger=False)
    args = sft_config(exp, tmp_path, CPU, liger_available=False)
    assert args.optim == "adamw_torch" and not args.dataloader_pin_memory
    assert not args.accelerator_config.non_blocking and not args.torch_compile
    assert not args.use_liger_kernel and args.train_sampling_strategy == "random"
    assert not args.padding_free  # packing is our collator's job, not TRL's flag


def test_cuda_defaults_turn_the_fast_path_on(tmp_path: Path) -> None:
    exp = experiment()
    assert fast_path(exp.train, GPU, liger_available=True) == FastPath(
        fused_adamw=True, pin_memory=True, compile=False, liger=True)
    assert not fast_path(exp.train, GPU, liger_available=False).liger  # an optional extra
    args = sft_config(exp, tmp_path, GPU, liger_available=False)
    assert args.optim == "adamw_torch_fused" and args.dataloader_pin_memory
    assert args.accelerator_config.non_blocking
    assert not args.logging_nan_inf_filter  # its per-step NaN check syncs with the GPU


def test_each_fast_path_part_is_a_setting(tmp_path: Path) -> None:
    exp = experiment("train.fused_adamw = false", "train.pin_memory = false", "train.compile = true",
                     "train.liger = false", 'train.batching = "grouped"')
    assert fast_path(exp.train, GPU, liger_available=True) == FastPath(
        fused_adamw=False, pin_memory=False, compile=True, liger=False)
    args = sft_config(exp, tmp_path, GPU, liger_available=True)
    assert args.optim == "adamw_torch" and not args.dataloader_pin_memory and args.torch_compile
    assert args.train_sampling_strategy == "group_by_length"
    # the batching a fallback chose wins over the setting
    assert sft_config(exp, tmp_path, CPU, "padding_free").train_sampling_strategy == "random"
    assert fast_path(experiment("train.fused_adamw = true").train, CPU).fused_adamw


def test_liger_where_it_cannot_run_is_one_clear_error() -> None:
    exp = experiment("train.liger = true")
    with pytest.raises(UserError, match="liger-kernel is not installed"):
        fast_path(exp.train, GPU, liger_available=False)
    with pytest.raises(UserError, match="needs a CUDA GPU"):
        fast_path(exp.train, CPU, liger_available=True)


def test_unknown_batching_is_a_config_error() -> None:
    from workbench.config import ConfigError

    with pytest.raises(ConfigError, match="batching"):
        experiment('train.batching = "packed"')
