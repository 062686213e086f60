"""The GPUs at a glance, for the top bar: ``GPU0 H100 61% 23.1/80G baseline#3``.

Hidden entirely on a machine without GPUs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

from rich.text import Text
from textual.widgets import Static

from workbench.gpus import Gpu

if TYPE_CHECKING:
    from workbench.app import WorkbenchApp


def gpu_text(gpus: list[Gpu], compact: bool = False) -> Text:
    """Each GPU's name, utilisation, memory and holder; ``compact`` drops names and memory."""
    text = Text()
    for i, gpu in enumerate(gpus):
        if i:
            text.append("  ")
        text.append(f"GPU{gpu.index}", style="bold")
        if not compact:
            text.append(f" {gpu.short_name}")
        holders = gpu.runs
        busy = bool(gpu.processes) or bool(holders) or (gpu.utilization or 0) > 0
        if not busy:
            text.append(" idle", style="dim")
            continue
        util = f" {gpu.utilization:.0f}%" if gpu.utilization is not None else " ?%"
        text.append(util, style="bold yellow" if (gpu.utilization or 0) > 90 else "yellow")
        if not compact and gpu.memory_used_mib is not None and gpu.memory_total_mib:
            text.append(f" {gpu.memory_used_mib / 1024:.1f}/{gpu.memory_total_mib / 1024:.0f}G")
        if holders:
            text.append(" " + ",".join(holders), style="cyan")
        elif gpu.processes:
            text.append(" other", style="dim")
    return text


class GpuBar(Static):
    """Shows :func:`gpu_text` for the latest reading; invisible without GPUs."""

    DEFAULT_CSS = """
    GpuBar { width: auto; height: 1; padding: 0 1; display: none; }
    GpuBar.-present { display: block; }
    """

    def __init__(self, **kwargs) -> None:
        super().__init__("", **kwargs)
        self.gpus: list[Gpu] = []

    def on_mount(self) -> None:
        app = cast("WorkbenchApp", self.app)
        self.set_gpus(app.gpus)
        app.gpus_signal.subscribe(self, self.set_gpus)

    def set_gpus(self, gpus: list[Gpu]) -> None:
        self.gpus = gpus
        self.set_class(bool(gpus), "-present")
        width = self.app.size.width if self.is_attached else 120
        self.update(gpu_text(gpus, compact=width < 100))
