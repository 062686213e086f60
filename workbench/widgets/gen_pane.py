"""One generation pane of the compare screen: what it generates from, and the text streamed into it.

:class:`PaneSource` says what a pane is (a run's adapter at a checkpoint, or
an untuned base model) and turns itself into the worker's pane spec;
:class:`GenPane` shows its samples as they stream, a ``▌`` marking the one
still being generated.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from rich.text import Text
from textual.containers import VerticalScroll
from textual.widgets import Static

from workbench import comparisons, runs
from workbench.compare_model import base_label, printable, run_label
from workbench.generate import client as gen

CURSOR = "▌"


@dataclass
class PaneSource:
    """A run at ``checkpoint`` (``run`` set), or a base model (``base`` set); ``label`` names it."""

    run: runs.Run | None = None
    checkpoint: str = gen.FINAL
    base: dict[str, Any] | None = None
    saved_label: str | None = None  # a reopened pane whose run is gone

    @classmethod
    def for_run(cls, run: runs.Run, checkpoint: str | None = None) -> PaneSource:
        """``run`` at ``checkpoint``, by default its latest adapter (``final`` when it has one)."""
        have = gen.checkpoints(run.path)
        return cls(run=run, checkpoint=checkpoint or (have[-1] if have else gen.FINAL))

    @property
    def label(self) -> str:
        if self.run is not None:
            return run_label(self.run, self.checkpoint)
        if self.base is not None:
            return base_label(self.base)
        return self.saved_label or "(gone)"

    def spec(self, pane: str) -> dict[str, Any]:
        """The worker's pane spec (raises :class:`gen.GenerationError` for a pane it cannot serve)."""
        if self.run is not None:
            return gen.run_pane(pane, self.run.path, self.checkpoint)
        if self.base is not None:
            return {"pane": pane, "base": dict(self.base)}
        raise gen.GenerationError(f"{self.label}: its run is gone, nothing to generate from")

    def saved(self, texts: list[str], error: str | None) -> comparisons.SavedPane:
        return comparisons.SavedPane(
            label=self.label, texts=list(texts), error=error,
            run=self.run.ref if self.run else None, run_dir=str(self.run.path) if self.run else None,
            checkpoint=self.checkpoint if self.run else None, base=self.base)


@dataclass
class PaneOutput:
    """What a pane shows: a text per sample, the sample now streaming, an error, a status word."""

    texts: list[str] = field(default_factory=list)
    streaming: int | None = None
    error: str | None = None
    status: str = ""


class GenPane(VerticalScroll, can_focus=True):
    """A bordered pane: the source's label on top, its samples inside."""

    DEFAULT_CSS = """
    GenPane {
        width: 1fr;
        height: 1fr;
        border: round $primary 50%;
        border-title-color: $text;
        padding: 0 1;
    }
    GenPane:focus {
        border: round $accent;
    }
    GenPane > Static {
        width: 1fr;
    }
    """

    def __init__(self, source: PaneSource, pane_id: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.source = source
        self.pane_id = pane_id
        self.output = PaneOutput()
        self._body = Static("", markup=False)

    def compose(self):
        yield self._body

    def on_mount(self) -> None:
        self.redraw()

    def set_source(self, source: PaneSource) -> None:
        """Point the pane somewhere else: its old text no longer applies."""
        self.source = source
        self.output = PaneOutput()
        self.redraw()

    def clear(self, status: str = "") -> None:
        self.output = PaneOutput(status=status)
        self.redraw()

    def apply(self, reply: dict[str, Any]) -> None:
        """Take one worker reply for this pane."""
        out = self.output
        sample = int(reply.get("sample") or 0)
        if reply.get("loading"):
            out.status = f"loading {reply['loading']}"
        elif reply.get("error") is not None:
            out.error, out.streaming, out.status = str(reply["error"]), None, "error"
        elif "token" in reply:
            while len(out.texts) <= sample:
                out.texts.append("")
            out.texts[sample] += str(reply["token"])
            out.streaming, out.status = sample, "generating"
        elif reply.get("done"):
            while len(out.texts) <= sample:
                out.texts.append("")
            out.texts[sample] = str(reply.get("text", out.texts[sample]))
            out.streaming, out.status = None, ""
        self.redraw()

    def finish(self) -> None:
        """The request ended: nothing streams any more."""
        if self.output.streaming is not None or self.output.status.startswith(("loading", "generating")):
            self.output.streaming = None
            self.output.status = "" if self.output.error is None else "error"
            self.redraw()

    def redraw(self) -> None:
        self.border_title = self.source.label
        self.border_subtitle = self.output.status
        self._body.update(render_output(self.output))


def render_output(out: PaneOutput) -> Text:
    """The samples (headed ``sample N`` when several), the streaming one ending in ``▌``, then any error."""
    text = Text()
    for i, sample in enumerate(out.texts):
        if len(out.texts) > 1:
            if i:
                text.append("\n\n")
            text.append(f"sample {i + 1}\n", style="dim")
        text.append(printable(sample))
        if out.streaming == i:
            text.append(CURSOR, style="bold")
    if out.error is not None:
        if out.texts:
            text.append("\n")
        text.append(f"✗ {out.error}", style="bold red")
    if not out.texts and out.error is None and out.streaming is None:
        text.append("press g to generate" if not out.status else "", style="dim")
    return text
