"""The help screen (``?``): every key binding, and what the screen shows."""

from __future__ import annotations

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

ABOUT = """\
The left pane lists every experiment in the experiments file (matrix entries
expanded) with the state of its latest run. The right pane shows the selected
experiment's latest run: training loss and held-out perplexity against step,
progress, and tabs for the resolved config, its difference from what it
extends, all its runs (enter shows an older one), the latest samples and the
tail of train.log.

Runs are separate processes: quitting this screen or losing the SSH
connection leaves them running; open workbench again to see them live.
A run whose process died without a word shows as failed ("vanished").
Mark experiments with space to launch several at once, or press o to
overlay their latest runs on the charts. ctrl+p opens the command palette.

c compares the marked runs (or the selected one next to its untuned base):
one prompt, each pane streaming its continuation from a generation worker
process that keeps base models loaded. t shows the results table; e there
writes report.md."""

STATES = (
    ("● 212/500", "bold green", "running, at step 212 of 500"),
    ("✓ done", "green", "finished"),
    ("✗ OOM", "bold red", "failed, with the reason (the Log tab has the details)"),
    ("■ stopped", "yellow", "stopped; u resumes it from its last checkpoint"),
    ("◌ queued", "dim", "launched, not started yet"),
)


def bindings_table(groups: list[tuple[str, list[Binding]]]) -> Table:
    """Key, name and what it does (the command palette's help text) for each binding."""
    from workbench.commands import ACTIONS, COMPARE_ACTIONS, RESULTS_ACTIONS

    details = {action: help_text.rsplit(" (", 1)[0]
               for _, help_text, action in (*ACTIONS, *COMPARE_ACTIONS, *RESULTS_ACTIONS)}
    details.update({action.removeprefix("app."): text for action, text in list(details.items())})
    details.update(escape="close the filter, or go back to the latest run", command_palette="every action, "
                   "searchable; also \"show NAME\" to jump to an experiment")
    table = Table(box=None, show_header=False, padding=(0, 2, 0, 0))
    table.add_column(style="bold cyan", no_wrap=True)
    table.add_column(style="bold", no_wrap=True)
    table.add_column(style="dim")
    for title, bindings in groups:
        table.add_row(Text(title, style="bold underline"), "", "")
        for binding in bindings:
            if not binding.description:
                continue
            key = binding.key_display or {"question_mark": "?", "slash": "/"}.get(binding.key, binding.key)
            table.add_row(key, binding.description, details.get(binding.action, binding.tooltip))
    return table


class HelpScreen(ModalScreen[None]):
    """Keys and a short tour; escape, q or ? closes it."""

    BINDINGS = [
        Binding("escape", "close", "close"),
        Binding("q", "close", "close", show=False),
        Binding("question_mark", "close", "close", show=False),
    ]

    def __init__(self, groups: list[tuple[str, list[Binding]]]) -> None:
        super().__init__()
        self.groups = groups

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="help-box"):
            yield Static(Text("workbench — keys", style="bold"), id="help-title")
            yield Static(bindings_table(self.groups), id="help-keys")
            states = Text("\nstates  ", style="bold")
            for label, style, meaning in STATES:
                states.append("\n  ")
                states.append(label.ljust(10), style=style)
                states.append(meaning)
            yield Static(states)
            yield Static(Text("\n" + ABOUT))

    def action_close(self) -> None:
        self.dismiss()
