"""A small modal list to pick one item from: a pane to add, a saved comparison to reopen."""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import OptionList, Static
from textual.widgets.option_list import Option


class PickScreen(ModalScreen[Any]):
    """``title`` over a list of ``(label, value)``; enter dismisses with the value, escape with None."""

    BINDINGS = [Binding("escape", "cancel", "cancel")]

    def __init__(self, title: str, choices: list[tuple[str, Any]], empty: str = "nothing to pick") -> None:
        super().__init__()
        self.title_text = title
        self.choices = choices
        self.empty = empty

    def compose(self) -> ComposeResult:
        with Vertical(id="pick-box"):
            yield Static(Text(self.title_text, style="bold"), id="pick-title")
            if self.choices:
                yield OptionList(*(Option(Text(label), id=str(i)) for i, (label, _) in
                                   enumerate(self.choices)), id="pick-list")
            else:
                yield Static(Text(self.empty, style="dim"))

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        self.dismiss(self.choices[event.option_index][1])

    def action_cancel(self) -> None:
        self.dismiss(None)
