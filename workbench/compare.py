"""``workbench compare``: generations of several runs (and their base models) for one prompt.

In a terminal wide enough for every pane the results are printed side by
side once they are complete (a progress line streams meanwhile); otherwise
each pane streams its text as it is generated, one after the other. Sampling
settings default to the first run's ``[sampling]``; the same seed and
settings always give the same text. This module is the command (argparse and
printing); what a pane is lives in :mod:`workbench.compare_model`.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import textwrap
from typing import Any, TextIO

from workbench import comparisons
from workbench.compare_model import (
    Target,
    build_comparison,
    pane_text,
    printable,
    request_settings,
    run_experiment,
    targets_for,
)
from workbench.generate import client as gen
from workbench.runs import RunError

MIN_COLUMN = 28
GAP = " │ "


def settings_for(args: argparse.Namespace, experiment: dict[str, Any] | None) -> dict[str, Any]:
    """Sampling settings: the flags, else the first run's ``[sampling]``, else the schema defaults."""
    return request_settings(experiment, temperature=args.temperature, top_p=args.top_p,
                            max_new_tokens=args.max_new_tokens, seed=args.seed, n=args.n)


# --- output ---------------------------------------------------------------------------


def stream_rows(request: gen.Request, targets: list[Target], out: TextIO) -> None:
    """Print each pane's text as it streams, one pane after the other."""
    labels = {t.spec["pane"]: t.label for t in targets}
    current: tuple[Any, Any] | None = None
    for message in request:
        pane = message.get("pane")
        if pane is None:
            continue
        key = (pane, message.get("sample", 0))
        if message.get("error") is not None:
            out.write(f"\n── {labels.get(pane, pane)} ──\nerror: {message['error']}\n")
            current = None
        elif "token" in message or message.get("done"):
            if current != key:
                sample = f" · sample {key[1] + 1}" if request.n > 1 else ""
                out.write(f"\n── {labels.get(pane, pane)}{sample} ──\n")
                current = key
            if "token" in message:
                out.write(printable(message["token"]))
            else:
                out.write("\n")
        out.flush()


def wait_with_progress(request: gen.Request, targets: list[Target], err: TextIO) -> None:
    """Consume the request, showing a one-line progress on ``err`` when it is a terminal."""
    labels = {t.spec["pane"]: t.label for t in targets}
    tty = err.isatty()
    tokens = 0
    for message in request:
        if not tty:
            continue
        pane = message.get("pane")
        if "token" in message:
            tokens += 1
            err.write(f"\r\x1b[Kgenerating {labels.get(pane, pane)} … {tokens} tokens")
        elif message.get("loading"):
            err.write(f"\r\x1b[Kloading {message['loading']} …")
        err.flush()
    if tty:
        err.write("\r\x1b[K")
        err.flush()


def columns(labels: list[str], texts: list[str], width: int) -> str:
    """Texts side by side in equal columns of ``width`` total characters."""
    col = (width - len(GAP) * (len(texts) - 1)) // len(texts)
    wrapped = []
    for label, text in zip(labels, texts, strict=True):
        lines = textwrap.wrap(label, col) or [""]
        lines.append("─" * col)
        for para in printable(text).split("\n"):
            lines.extend(textwrap.wrap(para, col, replace_whitespace=False, drop_whitespace=False) or [""])
        wrapped.append(lines)
    height = max(len(w) for w in wrapped)
    rows = []
    for i in range(height):
        rows.append(GAP.join((w[i] if i < len(w) else "").ljust(col) for w in wrapped).rstrip())
    return "\n".join(rows)


def choose_layout(layout: str, panes: int, width: int) -> str:
    if layout != "auto":
        return layout
    fits = panes * MIN_COLUMN + len(GAP) * (panes - 1) <= width
    return "columns" if panes > 1 and fits else "rows"


# --- the command -------------------------------------------------------------------------


def cmd_compare(ctx: Any, out: TextIO | None = None, err: TextIO | None = None) -> int:
    """``workbench compare``: exit status 0, or 1 when any pane failed."""
    args = ctx.args
    out, err = out or sys.stdout, err or sys.stderr
    targets = targets_for(ctx.root, args.runs, args.base)
    experiment = run_experiment(next((t.run for t in targets if t.run is not None), None))
    settings = settings_for(args, experiment)
    prompt = args.prompt
    if prompt is None:
        prompts = (experiment or {}).get("prompts")
        if not prompts:
            raise RunError("pass --prompt TEXT (the run's experiment has no prompts)")
        prompt = prompts[0]
    else:
        prompt = prompt.replace("\\n", "\n")
    width = shutil.get_terminal_size((100, 24)).columns
    layout = choose_layout(args.layout, len(targets), width)
    out.write(f"prompt: {prompt!r}\nseed {settings['seed']} · temperature {settings['temperature']} · "
              f"top-p {settings['top_p']} · max {settings['max_new_tokens']} tokens · "
              f"{settings['n']} sample(s)\n")
    client = gen.GenerationClient()
    try:
        request = client.generate([t.spec for t in targets], prompt, **settings)
        if layout == "rows":
            stream_rows(request, targets, out)
        else:
            wait_with_progress(request, targets, err)
            results = request.results()
            texts = [pane_text(results[t.spec["pane"]], settings["n"]) for t in targets]
            out.write("\n" + columns([t.label for t in targets], texts, width) + "\n")
        results = request.results()
    except KeyboardInterrupt:
        out.write("\ninterrupted\n")
        return 130
    finally:
        client.close()
    if args.save:
        path = comparisons.save(ctx.root, build_comparison(prompt, settings, targets, results))
        out.write(f"\nsaved {path}\n")
    return 1 if any(r.error is not None for r in results.values()) else 0


def add_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    """Add ``compare`` to the CLI's subcommands."""
    p = sub.add_parser("compare", parents=[common],
                       help="generate from several runs (and their base) side by side")
    p.add_argument("runs", nargs="+", metavar="RUN",
                   help="EXPERIMENT#N, EXPERIMENT or a folder; RUN@checkpoint-200 (or RUN@200): a checkpoint")
    p.add_argument("--prompt", metavar="TEXT",
                   help="the prompt (\\n for a newline); default: the first run's first prompt")
    p.add_argument("--base", action="store_true", help="also the untuned base model of each run")
    p.add_argument("--seed", type=int, metavar="N")
    p.add_argument("--temperature", type=float, metavar="T", help="0 for greedy decoding")
    p.add_argument("--top-p", type=float, metavar="P")
    p.add_argument("--max-new-tokens", type=int, metavar="N")
    p.add_argument("-n", type=int, metavar="N", help="samples per pane (seeded seed, seed+1, ...)")
    p.add_argument("--layout", choices=("auto", "columns", "rows"), default="auto",
                   help="side by side, or one after the other streaming (default: by terminal width)")
    p.add_argument("--save", action="store_true", help="keep it in RUNS/.comparisons for the TUI")
    p.set_defaults(func=cmd_compare)
