"""The plugins view (``p``): what loaded, from where, and what failed, without crashing."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, cast

from rich.console import Group
from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

from workbench.plugins import BLOCK_ENV

if TYPE_CHECKING:
    from workbench.app import WorkbenchApp
    from workbench.plugins import Registry


def short_source(source: str, base: Path | None) -> str:
    """A plugin file's path relative to the project folder when it is inside it."""
    if base is None or not source.startswith("/"):
        return source
    try:
        return str(Path(source).resolve().relative_to(base.resolve()))
    except ValueError:
        return source


def registry_view(reg: Registry | None, base: Path | None = None) -> Group | Text:
    """Backends, evaluators and launchers with provenance, then failures in red."""
    if reg is None:
        return Text("loading plugins…", style="dim")
    table = Table(box=None, padding=(0, 2, 0, 0), header_style="bold", expand=True)
    for header in ("kind", "name", "plugin", "from"):
        table.add_column(header, no_wrap=True, overflow="ellipsis")
    table.add_column("default model / description", no_wrap=True, overflow="ellipsis", ratio=1)
    for kind in ("backends", "evaluators", "launchers"):
        for name, item in sorted(getattr(reg, kind).items()):
            origin = reg.origin(kind, name)
            detail = getattr(item, "description", "")
            if kind == "backends":
                model = item.default_model
                detail = "(found at run time)" if callable(model) else str(model)
            table.add_row(kind[:-1], Text(name, style="bold"), origin.plugin if origin else "?",
                          short_source(origin.source, base) if origin else "?", detail)
    parts: list = [table if table.row_count else Text("no backends, evaluators or launchers loaded",
                                                      style="bold red")]
    if reg.blocked:
        parts.append(Text(f"\nblocked by {BLOCK_ENV}: {', '.join(reg.blocked)}", style="yellow"))
    if reg.failures:
        parts.append(Text(f"\n{len(reg.failures)} failed to load (the others work):", style="bold red"))
        for failure in reg.failures:
            line = Text("  ✗ ", style="bold red")
            line.append(failure.plugin, style="bold")
            line.append(f"  ({short_source(failure.source, base)})\n      ", style="dim")
            line.append(failure.error, style="red")
            parts.append(line)
    else:
        parts.append(Text("\nall plugins loaded", style="green"))
    return Group(*parts)


class PluginsScreen(ModalScreen[None]):
    """The loaded registry; r reloads the plugins, escape closes."""

    BINDINGS = [
        Binding("escape", "close", "close"),
        Binding("q", "close", "close", show=False),
        Binding("p", "close", "close", show=False),
        Binding("r", "reload", "reload plugins"),
    ]

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="plugins-box"):
            yield Static(Text("Plugins", style="bold"), id="plugins-title")
            yield Static(id="plugins-body")

    @property
    def wb(self) -> WorkbenchApp:
        return cast("WorkbenchApp", self.app)

    def on_mount(self) -> None:
        self.show(self.wb.registry)
        self.wb.plugins_signal.subscribe(self, self.show)

    def show(self, registry: Registry | None) -> None:
        base = self.wb.config_path.resolve().parent
        self.query_one("#plugins-body", Static).update(registry_view(registry, base))

    def action_reload(self) -> None:
        self.query_one("#plugins-body", Static).update(Text("reloading plugins…", style="dim"))
        self.wb.load_registry()

    def action_close(self) -> None:
        self.dismiss()
