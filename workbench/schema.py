"""The experiment schema: what one fully-resolved experiment holds.

Strict pydantic models: unknown keys are errors, and a value must already
have its field's type (``steps = "10"`` or ``steps = true`` is rejected, not
coerced; a whole number is accepted where a float is expected). Every number
is finite and inside the range its library accepts. :mod:`workbench.config`
reads the TOML into these; the training process reads them back from the run
folder's ``config.json``.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    StringConstraints,
    ValidationInfo,
    field_validator,
    model_serializer,
    model_validator,
)
from pydantic_core import PydanticCustomError

from workbench import sampling
from workbench.searchspec import Search

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
# Experiment names become folder names: keep them well inside a file name's 255 bytes.
NAME_MAX = 120
TRACKERS = ("tensorboard", "wandb", "trackio")
# transformers' SchedulerType values that need no lr_scheduler_kwargs (the schema has none).
# A test checks this list against the installed transformers; the TUI never imports it.
LR_SCHEDULERS = (
    "linear", "cosine", "cosine_with_restarts", "polynomial", "constant",
    "constant_with_warmup", "inverse_sqrt", "reduce_lr_on_plateau", "greedy",
)
# Sizes and counts: a whole number a C int (and so every library) can hold.
INT_MAX = 2**31 - 1
# Seeds: numpy's seed range, which transformers' set_seed feeds.
SEED_MAX = 2**32 - 1

Text = Annotated[str, StringConstraints(min_length=1)]
Size = Annotated[int, Field(gt=0, le=INT_MAX)]
Count = Annotated[int, Field(ge=0, le=INT_MAX)]
Seed = Annotated[int, Field(ge=0, le=SEED_MAX)]
Name = Annotated[str, StringConstraints(pattern=NAME_RE.pattern, max_length=NAME_MAX)]
# The datasets split syntax: NAME, NAME[a:b], NAME[a%:b%], joined with "+".
_SLICE = r"\w+(?:\.\w+)*\s*(?:\[\s*-?\d*\s*%?\s*:\s*-?\d*\s*%?\s*\])?"
SPLIT_RE = re.compile(rf"^\s*{_SLICE}(?:\s*\+\s*{_SLICE})*\s*$")
Split = Annotated[str, StringConstraints(pattern=SPLIT_RE.pattern)]
RDZV_RE = re.compile(r"^[^\s:]+:\d{1,5}$")


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)


class LoraSettings(Strict):
    r: Size = Field(8, description="LoRA rank")
    alpha: Size = Field(16, description="LoRA alpha (scaling = alpha / r)")
    dropout: float = Field(0.05, ge=0, lt=1)
    target_modules: list[Text] | None = Field(
        None, min_length=1, description="module names to adapt; default (unset): the backend's"
    )


class TrainSettings(Strict):
    steps: Size = 500
    batch_size: Size = 4
    gradient_accumulation: Size = 1
    learning_rate: float = Field(2e-4, gt=0)
    warmup_steps: Count = 0
    lr_scheduler: Literal[LR_SCHEDULERS] = "linear"  # type: ignore[valid-type]
    max_length: Size = Field(256, description="training sequences are cut to this many tokens")
    seed: Seed = 42
    eval_every: Size = Field(50, description="held-out evaluation every N steps")
    save_every: Size = Field(100, description="checkpoint (and samples) every N steps")
    logging_every: Size = 1
    precision: Literal["auto", "fp32", "fp16", "bf16"] = "auto"
    gradient_checkpointing: bool = False
    report_to: list[Literal["tensorboard", "wandb", "trackio"]] = Field(default_factory=list)
    eval_batch_size: Size = 8
    batching: Literal["padding_free", "grouped", "padded"] = Field(
        "padding_free", description="padding_free: rows packed, no compute on padding; grouped: "
        "batches of similar length (changes which rows train together); padded: pad to the longest row")
    compile: bool = Field(False, description="torch.compile the model (GPU; slow to start)")
    fused_adamw: bool | None = Field(None, description="fused AdamW; default: on with CUDA")
    pin_memory: bool | None = Field(
        None, description="pinned host memory and non-blocking copies; default: on with CUDA")
    liger: bool | None = Field(
        None, description="Liger kernels (pip install liger-kernel); default: on with CUDA when installed")


class DataSettings(Strict):
    source: Text = Field(description="hub dataset id, or a local JSONL/JSON/CSV/Parquet file or folder")
    column: Text = "text"
    subset: Text | None = Field(None, description="hub dataset configuration name")
    train_split: Split = "train[:100]"
    eval_split: Split = "train[100:150]"
    eval_source: Text | None = Field(None, description="held-out rows from another source")


class SamplingSettings(Strict):
    temperature: float = Field(sampling.TEMPERATURE, ge=0)
    top_p: float = Field(sampling.TOP_P, gt=0, le=1)
    max_new_tokens: Size = sampling.MAX_NEW_TOKENS
    seed: Seed = sampling.SEED
    num_samples: int = Field(sampling.NUM_SAMPLES, gt=0, le=64)


class DistributedSettings(Strict):
    nproc_per_node: Size = Field(1, description="processes (GPUs) per node")
    nnodes: Size = 1
    node_rank: Count = 0
    rdzv_endpoint: Annotated[str, StringConstraints(pattern=RDZV_RE.pattern)] | None = Field(
        None, description="host:port of the rendezvous for multi-node"
    )

    @model_validator(mode="after")
    def _rank_in_range(self) -> DistributedSettings:
        if self.node_rank >= self.nnodes:
            raise ValueError(f"node_rank {self.node_rank} must be below nnodes ({self.nnodes})")
        return self


# Slurm time limits: "MINUTES", "MINUTES:SECONDS", "HOURS:MINUTES:SECONDS", "DAYS-HOURS",
# "DAYS-HOURS:MINUTES", "DAYS-HOURS:MINUTES:SECONDS" (sbatch --time).
_SLURM_TIME_RE = re.compile(r"^(?:(?P<d>\d+)-(?P<dh>\d+)(?::(?P<dm>\d+))?(?::(?P<ds>\d+))?"
                            r"|(?P<a>\d+)(?::(?P<b>\d+))?(?::(?P<c>\d+))?)$")
# sbatch options the slurm launcher sets itself; `extra` may not override them.
SLURM_MANAGED = ("--output", "--error", "--open-mode", "--signal", "--requeue", "--no-requeue",
                 "--job-name", "--parsable", "--nodes", "--ntasks-per-node", "--chdir", "-o", "-e", "-J",
                 "-N", "-D")


def slurm_time_seconds(value: str) -> int:
    """Seconds in a Slurm time limit (``"90"`` minutes, ``"1:30:00"``, ``"2-00:00"``); ValueError if bad."""
    m = _SLURM_TIME_RE.match(value.strip())
    if not m:
        raise ValueError(f"time {value!r}: use MINUTES, HH:MM:SS, MM:SS or DAYS-HH[:MM[:SS]]")
    g = {k: int(v) for k, v in m.groupdict().items() if v is not None}
    if "d" in g:
        return ((g["d"] * 24 + g["dh"]) * 60 + g.get("dm", 0)) * 60 + g.get("ds", 0)
    parts = [g[k] for k in ("a", "b", "c") if k in g]
    if len(parts) == 1:
        return parts[0] * 60
    if len(parts) == 2:
        return parts[0] * 60 + parts[1]
    return (parts[0] * 60 + parts[1]) * 60 + parts[2]


class SlurmSettings(Strict):
    """``[experiments.X.slurm]``: what the ``slurm`` launcher asks ``sbatch`` for."""

    partition: str | None = None
    time: str | None = Field(None, description='time limit, e.g. "90" (minutes), "4:00:00", "1-12:00"')
    account: str | None = None
    qos: str | None = None
    gpus_per_node: int | None = Field(None, gt=0)
    cpus_per_task: int | None = Field(None, gt=0)
    mem: str | None = Field(None, pattern=r"^[1-9][0-9]*[KMGT]?$", description='per node, e.g. "32G"')
    extra: list[str] = Field(default_factory=list, description='further sbatch options, e.g. ["--exclusive"]')
    signal_before: int = Field(120, ge=1, le=65535,
                               description="seconds before the time limit the trainer is told to checkpoint")

    @field_validator("time")
    @classmethod
    def _time(cls, value: str | None) -> str | None:
        if value is not None:
            slurm_time_seconds(value)
        return value

    @field_validator("extra")
    @classmethod
    def _extra(cls, value: list[str]) -> list[str]:
        for option in value:
            if not option.startswith("-"):
                raise ValueError(f"{option!r} is not an sbatch option (they start with '-')")
            if option.split("=", 1)[0] in SLURM_MANAGED:
                raise ValueError(f"{option!r}: the slurm launcher sets {option.split('=', 1)[0]} itself")
        return value

    @model_validator(mode="after")
    def _signal_inside_time(self) -> SlurmSettings:
        if self.time is not None and self.signal_before >= slurm_time_seconds(self.time):
            raise ValueError(f"signal_before ({self.signal_before} s) must be shorter than time "
                             f"({self.time!r}): the trainer is told to checkpoint that long before the end")
        return self


class Experiment(Strict):
    name: Name
    description: str = ""
    backend: Text
    model: Text | None = Field(None, description="hub id, local folder or .gguf; default: backend's")
    launcher: Text = "python"
    distributed: DistributedSettings = Field(default_factory=DistributedSettings)
    slurm: SlurmSettings = Field(default_factory=SlurmSettings)
    lora: LoraSettings = Field(default_factory=LoraSettings)
    train: TrainSettings = Field(default_factory=TrainSettings)
    data: DataSettings
    sampling: SamplingSettings = Field(default_factory=SamplingSettings)
    evaluators: list[Text] = Field(default_factory=lambda: ["perplexity", "bits_per_byte", "samples"])
    prompts: list[str] = Field(default_factory=list)
    search: Search | None = Field(None, description="an Optuna study over this experiment")

    @field_validator("distributed")
    @classmethod
    def _one_process_launcher(cls, value: DistributedSettings, info: ValidationInfo
                              ) -> DistributedSettings:
        """``python`` starts one process: given two GPUs, SFTTrainer refuses DataParallel."""
        if info.data.get("launcher", "python") == "python" and value.nproc_per_node > 1:
            raise PydanticCustomError(
                "one_process", "launcher 'python' starts one process: for "
                "distributed.nproc_per_node = {n} use launcher = 'torchrun' or 'accelerate'",
                {"n": value.nproc_per_node})
        return value

    @model_serializer(mode="wrap")
    def _without_empty_search(self, handler: SerializerFunctionWrapHandler) -> Any:
        """No ``search = None`` in dumps (config tab, config.json) of experiments that don't search."""
        data = handler(self)
        if isinstance(data, dict) and data.get("search", 0) is None:
            del data["search"]
        return data


_SPLIT_RE = re.compile(r"^\s*(\w[\w.-]*)\s*(?:\[\s*(-?\d*)\s*(%?)\s*:\s*(-?\d*)\s*(%?)\s*\])?\s*$")


def split_range(split: str) -> tuple[str, float, float, str] | None:
    """``"train[100:150]"`` -> ``("train", 100, 150, "rows")``; ``None`` when not a plain slice.

    A bare split name covers everything (0 to infinity). Negative indices and
    mixed units can't be compared without the dataset's length, so they give
    ``None`` and the caller skips the overlap check.
    """
    m = _SPLIT_RE.match(split)
    if not m:
        return None
    name, start, pct1, stop, pct2 = m.groups()
    if start is None and stop is None and not pct1 and not pct2:
        return name, 0.0, float("inf"), "rows"
    if (start or "").startswith("-") or (stop or "").startswith("-"):
        return None
    unit = "%" if (pct1 or pct2) else "rows"
    if pct1 != pct2 and start and stop:
        return None
    lo = float(start) if start else 0.0
    hi = float(stop) if stop else (100.0 if unit == "%" else float("inf"))
    return name, lo, hi, unit
