"""Text from a model, a file or a user's TOML made safe to print on a terminal.

A barely trained model emits control characters, and a file or a quoted TOML
key can hold escape sequences (``ESC[2J`` clears the screen, OSC sequences
retitle the window or write the clipboard). Every place that prints such
text goes through :func:`printable` or :func:`one_line`. Standard library only.
"""

from __future__ import annotations

REPLACEMENT = "\ufffd"


def printable(text: str) -> str:
    """``text`` with every control character except newline and tab shown as U+FFFD."""
    return "".join(c if c in "\n\t" or c.isprintable() else REPLACEMENT for c in text)


def one_line(text: str, limit: int | None = None) -> str:
    """``text`` as one printable line: newlines shown as ``⏎``, cut to ``limit`` characters."""
    line = printable(str(text)).replace("\n", " ⏎ ").replace("\t", " ")
    if limit is not None and len(line) > limit:
        line = line[: max(0, limit - 1)] + "…"
    return line
