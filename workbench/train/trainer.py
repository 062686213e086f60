"""Build the pieces of one training run: precision, model + LoRA, SFTConfig, SFTTrainer.

Settings follow the hardware: fp32 on a CPU, bf16 where the GPU computes it
natively (compute capability 8.0 and up: A100, L4, H100), fp16 on older GPUs
(T4, V100), where bf16 is only emulated (no tensor cores, the slowest attention
kernel), and no gradient checkpointing unless asked. TRL's own
defaults (bf16 and gradient checkpointing on) cost about 2x on a CPU with native
bf16 (measured) and more on hardware that emulates it,
so both are always passed explicitly.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from workbench import runs
from workbench.api import Backend
from workbench.train import ranks, sources
from workbench.train.errors import UserError


@dataclasses.dataclass(frozen=True)
class Hardware:
    """Where training runs and in which precision."""

    cuda: bool
    precision: str  # "fp32" | "fp16" | "bf16"

    @property
    def load_dtype(self) -> Any:
        """The dtype the frozen base weights are loaded in: half only on a GPU."""
        import torch

        if self.cuda and self.precision == "bf16":
            return torch.bfloat16
        if self.cuda and self.precision == "fp16":
            return torch.float16
        return torch.float32

    def autocast(self) -> Any:
        """A context for forward passes outside the Trainer (evaluation, sampling)."""
        import contextlib

        import torch

        if self.precision == "fp32":
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if self.precision == "bf16" else torch.float16
        return torch.autocast("cuda" if self.cuda else "cpu", dtype=dtype)


def choose_precision(requested: str, cuda: bool, bf16_supported: bool) -> str:
    """``train.precision`` resolved: ``auto`` is fp32 on CPU, bf16 if supported, else fp16."""
    if requested == "auto":
        if not cuda:
            return "fp32"
        return "bf16" if bf16_supported else "fp16"
    if requested == "fp16" and not cuda:
        raise UserError("train.precision = 'fp16' needs a CUDA GPU", kind="config",
                        hint="use 'auto' (fp32 on a CPU) or 'bf16'")
    if requested == "bf16" and cuda and not bf16_supported:
        raise UserError("train.precision = 'bf16': this GPU has no bf16 support", kind="config",
                        hint="use 'auto' (fp16 on this GPU)")
    return requested


def native_bf16(device: int | None = None) -> bool:
    """Whether this process's GPU computes bf16 natively (not merely emulates it).

    The probe looks at this rank's own GPU (``LOCAL_RANK``, or ``device``), made
    current first: ``torch.cuda.is_bf16_supported()`` with its default
    ``including_emulation=True`` says yes on a T4 or V100 and allocates a test
    tensor on the current device, which before ``set_device`` is GPU 0 in every
    rank of a multi-GPU run.
    """
    import torch

    if not torch.cuda.is_available():
        return False
    index = ranks.local_rank() if device is None else device
    if index < torch.cuda.device_count():
        torch.cuda.set_device(index)
    return bool(torch.cuda.is_bf16_supported(including_emulation=False))


def detect_hardware(requested: str, device: int | None = None) -> Hardware:
    """The device and the precision ``requested`` (``train.precision``) resolves to on it.

    ``device`` (a CUDA index) is made current; by default the rank's own GPU.
    """
    import torch

    cuda = torch.cuda.is_available()
    return Hardware(cuda=cuda, precision=choose_precision(requested, cuda,
                                                          cuda and native_bf16(device)))


def load_model(backend: Backend, experiment: Any, hardware: Hardware) -> tuple[Any, Any]:
    """The backend's base model and tokenizer, with a pad token set."""
    source = experiment.model or backend.resolve_default_model()
    settings = {"dtype": hardware.load_dtype, "device": "cuda" if hardware.cuda else "cpu",
                "experiment": experiment}
    print(f"loading {source} ({backend.name} backend, {hardware.precision}"
          f"{' on cuda' if hardware.cuda else ' on cpu'})", flush=True)
    if backend.load is not None:
        model, tokenizer = backend.load(source, settings)
    else:
        model, tokenizer = sources.load_pretrained(sources.resolve_model(source), settings)
    sources.prepare_tokenizer(tokenizer, model)
    return model, tokenizer


def attach_lora(model: Any, experiment: Any, backend: Backend) -> Any:
    """Wrap ``model`` in a PEFT LoRA adapter on the experiment's (or backend's) target modules."""
    from peft import LoraConfig, get_peft_model
    from transformers import set_seed
    from transformers.pytorch_utils import Conv1D

    targets = list(experiment.lora.target_modules or backend.target_modules)
    leaves: dict[str, Any] = {}
    for name, module in model.named_modules():
        leaves.setdefault(name.rsplit(".", 1)[-1], module)
    missing = [t for t in targets if t not in leaves]
    if missing:
        linear = sorted(n for n, m in leaves.items()
                        if type(m).__name__ in ("Linear", "Conv1D") and n)
        raise UserError(
            f"LoRA target module(s) {', '.join(missing)} not in the model; its linear layers: "
            f"{', '.join(linear)}", kind="config",
            hint="fix lora.target_modules, or leave it unset to use the backend's",
        )
    # GPT-2 style Conv1D layers store weights transposed (fan_in, fan_out).
    conv1d = any(isinstance(m, Conv1D) for name, m in model.named_modules()
                 if name.rsplit(".", 1)[-1] in targets)
    config = LoraConfig(
        r=experiment.lora.r, lora_alpha=experiment.lora.alpha,
        lora_dropout=experiment.lora.dropout, target_modules=targets,
        fan_in_fan_out=conv1d, bias="none", task_type="CAUSAL_LM",
    )
    set_seed(experiment.train.seed)  # the adapter's random init follows the run's seed
    return get_peft_model(model, config)


@dataclasses.dataclass(frozen=True)
class FastPath:
    """The GPU speed settings of a run, each ``train.*`` setting resolved for the hardware."""

    fused_adamw: bool
    pin_memory: bool  # pinned host batches, copied to the GPU without blocking
    compile: bool
    liger: bool


def liger_installed() -> bool:
    import importlib.util

    return importlib.util.find_spec("liger_kernel") is not None


def fast_path(train: Any, hardware: Hardware, liger_available: bool | None = None) -> FastPath:
    """``train.fused_adamw`` / ``pin_memory`` / ``liger`` (None: on with CUDA) and ``compile``.

    A CPU gains nothing from pinned memory, and Liger's kernels are Triton (GPU
    only); asking for Liger where it is not installed is a config error.
    """
    available = liger_installed() if liger_available is None else liger_available
    if train.liger and not available:
        raise UserError("train.liger = true, but liger-kernel is not installed", kind="config",
                        hint="pip install liger-kernel (the [liger] extra), or leave train.liger unset")
    if train.liger and not hardware.cuda:
        raise UserError("train.liger = true needs a CUDA GPU", kind="config",
                        hint="leave train.liger unset (on with CUDA when installed)")

    def auto(value: bool | None, default: bool) -> bool:
        return default if value is None else bool(value)

    return FastPath(
        fused_adamw=auto(train.fused_adamw, hardware.cuda),
        pin_memory=auto(train.pin_memory, hardware.cuda) and hardware.cuda,
        compile=bool(train.compile),
        liger=auto(train.liger, hardware.cuda and available),
    )


def sft_config(experiment: Any, run_dir: Path, hardware: Hardware,
               batching: str | None = None, liger_available: bool | None = None) -> Any:
    """The SFTConfig for an experiment, every hardware-sensitive default made explicit.

    ``batching`` is the one :func:`workbench.train.batching.resolve` chose
    (default: ``train.batching``); only ``grouped`` changes the sampler.
    """
    from trl import SFTConfig

    from workbench.train.batching import sampling_strategy

    t = experiment.train
    fast = fast_path(t, hardware, liger_available)
    names = {f.name for f in dataclasses.fields(SFTConfig)}
    checkpointing = {"gradient_checkpointing": t.gradient_checkpointing}
    if "activation_checkpointing" in names:  # transformers >= 5 renamed it
        checkpointing["activation_checkpointing"] = t.gradient_checkpointing
    return SFTConfig(
        output_dir=str(run_dir / runs.CHECKPOINTS),
        max_steps=t.steps,
        per_device_train_batch_size=t.batch_size,
        per_device_eval_batch_size=t.eval_batch_size,
        gradient_accumulation_steps=t.gradient_accumulation,
        learning_rate=t.learning_rate,
        lr_scheduler_type=t.lr_scheduler,
        warmup_steps=t.warmup_steps,
        seed=t.seed,
        logging_strategy="steps",
        logging_steps=t.logging_every,
        save_strategy="steps",
        save_steps=t.save_every,
        eval_strategy="no",  # evaluations run in our callback, on our held-out texts
        bf16=hardware.precision == "bf16",
        fp16=hardware.precision == "fp16",
        use_cpu=not hardware.cuda,
        report_to=list(t.report_to) or "none",
        disable_tqdm=True,  # one plain line per log instead (see EventCallback)
        dataloader_num_workers=0,
        # LoRA freezes most parameters; DDP's unused-parameter search would walk the
        # autograd graph every step to find them.
        ddp_find_unused_parameters=False,
        dataloader_pin_memory=fast.pin_memory,
        accelerator_config={"non_blocking": fast.pin_memory},
        optim="adamw_torch_fused" if fast.fused_adamw else "adamw_torch",
        torch_compile=fast.compile,
        use_liger_kernel=fast.liger,
        # Its NaN check reads the loss back from the GPU every step (a host-device sync).
        logging_nan_inf_filter=not hardware.cuda,
        include_num_input_tokens_seen="non_padding",  # counted without a sync: see build_trainer
        train_sampling_strategy=sampling_strategy(batching or t.batching),  # type: ignore[arg-type]
        max_length=t.max_length,
        packing=False,
        padding_free=False,  # our collator packs (workbench.train.batching); TRL's flag refuses max_length
        pad_to_multiple_of=None,  # padded batches: to their longest row only
        dataset_text_field="text",
        **checkpointing,
    )


def build_trainer(model: Any, tokenizer: Any, train_texts: list[str], args: Any,
                  callbacks: list[Any], batching: str = "padding_free") -> Any:
    """An SFTTrainer over ``train_texts`` with our callbacks, collator and no progress printer.

    The training loss is the model's own (``transformers.Trainer.compute_loss``),
    always without a KV cache (a cache makes packed rows attend across each
    other). TRL 1.16's own loss adds, every step, full-vocabulary passes for
    entropy/accuracy metrics we never read and three ``.item()`` host-device
    syncs; off a GPU its fused LM head also recomputes the vocabulary projection
    in the backward pass (about 12% of a SmolLM2-135M step on a 2-core CPU,
    measured by benchmarks/bench_train.py). The loss value is the same.

    Tokens seen are counted without a device sync: a packed batch's count is
    its shape; a padded batch's mask sum stays on the device until the next
    log or save reads it.
    """
    import transformers
    from datasets import Dataset
    from transformers.trainer_callback import PrinterCallback, ProgressCallback
    from trl import SFTTrainer

    from workbench.train.batching import collator, real_tokens

    class WorkbenchSFTTrainer(SFTTrainer):
        pending_tokens: Any = 0

        def compute_loss(self, model: Any, inputs: Any, return_outputs: bool = False,
                         num_items_in_batch: Any = None) -> Any:
            inputs["use_cache"] = False
            return transformers.Trainer.compute_loss(
                self, model, inputs, return_outputs=return_outputs,
                num_items_in_batch=num_items_in_batch)

        def _track_num_input_tokens(self, inputs: Any) -> None:
            count = real_tokens(inputs)
            if self.args.world_size > 1:
                import torch

                count = self.accelerator.gather(
                    torch.as_tensor(count, device=self.args.device, dtype=torch.int64)).sum()
            if not isinstance(count, int) and count.device.type == "cpu":
                count = int(count)
            self.pending_tokens = self.pending_tokens + count
            if isinstance(self.pending_tokens, int):
                self._flush_tokens()

        def _flush_tokens(self) -> None:
            self.state.num_input_tokens_seen += int(self.pending_tokens)
            self.pending_tokens = 0

        def _maybe_log_save_evaluate(self, *args: Any, **kwargs: Any) -> Any:
            if self.control.should_log or self.control.should_save or self.control.should_evaluate:
                self._flush_tokens()  # the one sync, on steps that log anyway
            return super()._maybe_log_save_evaluate(*args, **kwargs)

    trainer = WorkbenchSFTTrainer(
        model=model, args=args, train_dataset=Dataset.from_dict({"text": train_texts}),
        processing_class=tokenizer, callbacks=callbacks,
        data_collator=collator(batching, tokenizer.pad_token_id),  # type: ignore[arg-type]
    )
    trainer.remove_callback(PrinterCallback)
    trainer.remove_callback(ProgressCallback)
    return trainer


def latest_checkpoint(run_dir: Path) -> tuple[Path, int] | None:
    """The highest complete checkpoint (:func:`workbench.runs.latest_checkpoint`) and its step."""
    found = runs.latest_checkpoint(run_dir)
    return (found.path, found.step) if found else None
