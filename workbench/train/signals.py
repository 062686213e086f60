"""SIGTERM (and Ctrl-C) as a polite request: finish the step, checkpoint, exit 0.

The handler only sets a flag; the training callback reads it at the next
step end. A second signal means "now": it raises :class:`Interrupted`.
"""

from __future__ import annotations

import signal
import sys
from collections.abc import Callable
from typing import Any


class Interrupted(BaseException):
    """A second stop signal arrived before the checkpoint: leave without one."""


class StopRequest:
    """A flag set by SIGTERM/SIGINT; see the module docstring."""

    def __init__(self) -> None:
        self.requested = False
        self.signals = 0

    def _handle(self, signum: int, frame: Any) -> None:
        self.signals += 1
        if self.signals > 1:
            raise Interrupted(f"{signal.Signals(signum).name} again: stopping without a checkpoint")
        self.requested = True
        print(f"{signal.Signals(signum).name}: stopping after this step, with a checkpoint",
              file=sys.stderr, flush=True)

    def install(self) -> Callable[[], None]:
        """Install the handlers; return a function that puts the previous ones back."""
        previous = {sig: signal.signal(sig, self._handle) for sig in (signal.SIGTERM, signal.SIGINT)}

        def restore() -> None:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

        return restore
