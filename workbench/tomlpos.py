"""Find the line of a key in a TOML file, so an error can say where to look.

:class:`workbench.config.ConfigError` names the file and the key path
(``experiments.ablation-a.lora.rank``); the TOML parser already gives a line
for syntax errors but validation errors have none. :func:`with_line` adds it,
best effort: it reads table headers and ``key = value`` lines (dotted keys
included) and picks the line that defines the key, or the closest enclosing
one. Standard library only.
"""

from __future__ import annotations

import re
from pathlib import Path

_HEADER = re.compile(r"^\s*\[\s*([^\[\]]+?)\s*\]\s*(#.*)?$")
_KEY = re.compile(r"^\s*((?:[A-Za-z0-9_\-]+|\"[^\"]*\")(?:\s*\.\s*(?:[A-Za-z0-9_\-]+|\"[^\"]*\"))*)\s*=")
_ERROR = re.compile(r"^(?P<path>.+?): (?P<key>[A-Za-z0-9_\-.\[\]]+): (?P<message>.+)$", re.S)


def _parts(dotted: str) -> list[str]:
    return [p.strip().strip('"') for p in re.findall(r'"[^"]*"|[^.]+', dotted)]


def locate(text: str, key_path: str) -> int | None:
    """The 1-based line defining ``key_path`` (dots between parts), or the closest enclosing one."""
    want = _parts(re.sub(r"\[\d+\]$", "", key_path))
    best: tuple[int, int] | None = None  # (matched parts, line)
    table: list[str] = []
    for number, line in enumerate(text.splitlines(), start=1):
        header = _HEADER.match(line)
        if header and not line.lstrip().startswith("[["):
            table = _parts(header.group(1))
            full = table
        else:
            key = _KEY.match(line)
            if not key:
                continue
            full = table + _parts(key.group(1))
        if full == want:
            return number
        if full == want[:len(full)] and (best is None or len(full) > best[0]):
            best = (len(full), number)
    return best[1] if best else None


def with_line(message: str) -> str:
    """``"f.toml: a.b: msg"`` -> ``"f.toml:12: a.b: msg"`` when the key is found in the file."""
    found = _ERROR.match(message)
    if not found or re.match(r"^\d+:", found.group("key")):
        return message
    path = Path(found.group("path"))
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return message
    line = locate(text, found.group("key"))
    if line is None:
        return message
    return f"{found.group('path')}:{line}: {found.group('key')}: {found.group('message')}"
