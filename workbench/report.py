"""``workbench report``: a Markdown write-up of runs, in the shape of the seed study's.

``FOLDER/report.md`` holds the results table (model, LoRA r, held-out
perplexity and bits per byte, speed), the settings in which the runs differ,
PNG plots of training loss, held-out perplexity and bits per byte against
step with the runs overlaid (each run its own colour, marker and line style,
so lines that overlap stay apart), and sample generations for the runs' prompts:
the base model's next to each run's.

Where samples come from: each run's own ``sample`` events at its last step
(written during training with the run's seeded ``[sampling]`` settings, so
they cost nothing here and are exactly what the run produced), and, for the
untuned base models and any run without sample events, the generation worker
with the same seeded settings (the worker reproduces a run's sample events
token for token). ``--no-generate`` skips the worker: no torch at all.
matplotlib (Agg) is imported only while plotting.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from workbench import config, runs
from workbench.compare_model import base_label, base_spec, printable, request_settings
from workbench.results import Row, cell, columns_for, default_columns, default_models, notes, rows_for
from workbench.runview import LOSS

LABELS = {"r": "LoRA r", "ppl": "held-out ppl (best)", "final_ppl": "held-out ppl (final)",
          "bpb": "bits/byte (best)"}
#: Built-in plots' files and titles; every other metric gets ``<name>.png`` titled by its label.
PLOT_TITLES = {LOSS: ("train_loss.png", "Training loss", "loss"),
               "perplexity": ("perplexity.png", "Held-out perplexity", "perplexity"),
               "bits_per_byte": ("bits_per_byte.png", "Held-out bits per byte", "bits per byte")}
#: Per run, in turn: markers and line styles (with the colour cycle) that tell overlapping lines apart.
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
LINESTYLES = ("-", "--", "-.", ":")
MARKS_PER_LINE = 12  # a long series gets about this many markers, not one per point
PER_TOKEN = ("ppl", "final_ppl", "perplexity")  # columns that compare only within one tokenizer


@dataclass
class Samples:
    """The sample texts of one pane (a run or a base) for each prompt, and where they came from."""

    label: str
    texts: dict[str, list[str]] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    source: str = ""


# --- choosing runs ----------------------------------------------------------------------


def default_runs(root: Path, cfg: config.Config | None) -> list[runs.Run]:
    """The latest run of each experiment: the file's order when there is one, else by name."""
    names = list(cfg.experiments) if cfg else []
    if root.is_dir():
        names += sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    chosen = []
    for name in dict.fromkeys(names):
        try:
            run = runs.latest_run(root, name)
        except runs.RunError:
            continue
        if run is not None:
            chosen.append(run)
    return chosen


# --- markdown pieces ------------------------------------------------------------------------


def md_escape(text: str) -> str:
    return printable(str(text)).replace("|", "\\|").replace("\n", " ")


def md_table(header: list[str], rows: list[list[str]], align: list[str] | None = None) -> str:
    align = align or ["l"] * len(header)
    rule = ["---:" if a == "r" else "---" for a in align]
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join(rule) + " |"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def results_table(rows: list[Row]) -> str:
    """The results as a Markdown table, best values in bold."""
    keys = default_columns(rows)
    by_key = columns_for(rows)
    header = [md_escape(LABELS.get(k, by_key[k].label)) for k in keys]
    body = []
    for row in rows:
        cells = []
        for key in keys:
            text = md_escape(cell(row, key, star=""))
            cells.append(f"**{text}**" if key in row.best else text)
        body.append(cells)
    align = ["r" if by_key[k].numeric else "l" for k in keys]
    return md_table(header, body, align)


def tokenizers(rows: list[Row]) -> list[str]:
    """The distinct tokenizers of ``rows``: each run's backend and resolved model, as ``backend: model``."""
    return list(dict.fromkeys(f"{row['backend'] or '?'}: {row['model']}" for row in rows))


def best_on_bits_per_byte(rows: list[Row]) -> str | None:
    """With runs on different tokenizers, take the perplexity best marks off (bits per byte keeps
    its own) and return the sentence saying so; ``None`` when every run shares one tokenizer."""
    found = tokenizers(rows)
    if len(found) < 2:
        return None
    for row in rows:
        row.best.difference_update(PER_TOKEN)
    return (f"These runs use different tokenizers ({'; '.join(found)}), so best is marked on bits per "
            "byte, not perplexity: a perplexity per token does not compare across tokenizers.")


def _lookup(data: dict[str, Any], dotted: str) -> Any:
    node: Any = data
    for part in dotted.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    return node


def config_differences(rows: list[Row]) -> str:
    """The settings in which the runs differ, one row per setting, one column per run."""
    from workbench.schema import Experiment

    experiments = []
    for row in rows:
        try:
            experiments.append((row, Experiment.model_validate(row.experiment)))
        except ValueError:
            continue
    if len(experiments) < 2:
        return "Only one run: nothing to compare."
    reference = experiments[0][1]
    keys: list[str] = []
    for _, exp in experiments[1:]:
        for key, _, _ in config.diff(reference, exp):
            if key not in keys:
                keys.append(key)
    if not keys:
        return "All runs share one configuration (names and descriptions aside)."
    dumps = [exp.model_dump(mode="json") for _, exp in experiments]
    body = [[f"`{key}`", *(md_escape(json.dumps(_lookup(d, key))) for d in dumps)] for key in keys]
    return md_table(["setting", *(md_escape(r.run.ref) for r, _ in experiments)], body)


def fence(text: str) -> str:
    """``text`` in a fenced block whose fence it cannot close."""
    mark = "~~~"
    while mark in text:
        mark += "~"
    return f"{mark}text\n{printable(text)}\n{mark}"


# --- plots ----------------------------------------------------------------------------------


def series(row: Row, name: str) -> list[tuple[float, float]]:
    """``(step, value)`` of the training loss or a metric, from the run's summary."""
    return row.view.series(name) if row.view else []


def plotted(rows: list[Row]) -> list[tuple[str, str, str, str]]:
    """``(series, file, title, y label)``: the loss, then every metric any run has."""
    names = [LOSS]
    labels: dict[str, str] = {}
    for row in rows:
        for m in row.view.metrics if row.view else []:
            if m.name not in names:
                names.append(m.name)
                labels[m.name] = m.metric.title
    out = []
    for name in names:
        if name in PLOT_TITLES:
            file, title, ylabel = PLOT_TITLES[name]
        else:
            safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in name).strip(".")
            file, title, ylabel = f"metric_{safe}.png", labels.get(name, name), labels.get(name, name)
        out.append((name, file, title, ylabel))
    return out


def plot(rows: list[Row], folder: Path) -> list[tuple[str, str]]:
    """Write the PNG plots; return ``(file name, title)`` for those that had data."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt
    from matplotlib.ticker import MaxNLocator

    written = []
    for key, name, title, ylabel in plotted(rows):
        lines = [(row.run.ref, series(row, key)) for row in rows]
        lines = [(ref, pts) for ref, pts in lines if pts]
        if not lines:
            continue
        fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
        try:
            draw_lines(ax, lines)
            values = [p[1] for _, pts in lines for p in pts]
            if min(values) > 0 and max(values) / min(values) > 20:
                ax.set_yscale("log")
            ax.set(title=title, xlabel="step", ylabel=ylabel)
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.grid(alpha=0.3)
            ax.legend(fontsize="small")
            fig.tight_layout()
            fig.savefig(folder / name, format="png")
        finally:
            plt.close(fig)
        written.append((name, title))
    return written


def draw_lines(ax: Any, lines: list[tuple[str, list[tuple[float, float]]]]) -> None:
    """One line per run on ``ax``: the i-th run gets the i-th colour, marker and line style."""
    for i, (ref, pts) in enumerate(lines):
        ax.plot([p[0] for p in pts], [p[1] for p in pts], label=ref, marker=MARKERS[i % len(MARKERS)],
                linestyle=LINESTYLES[i % len(LINESTYLES)], markersize=4,
                markevery=max(1, len(pts) // MARKS_PER_LINE))


# --- samples --------------------------------------------------------------------------------


def sampling_of(row: Row) -> dict[str, Any]:
    """The worker settings equal to a run's ``[sampling]``."""
    return request_settings(row.experiment)


def event_samples(row: Row) -> tuple[int | None, dict[str, list[str]]]:
    """The ``sample`` texts a run wrote at its last sampled step: ``(step, {prompt: texts})``."""
    if row.view is None:
        return None, {}
    last, at_last = row.view.samples()
    texts: dict[str, list[str]] = {}
    for event in at_last:
        texts.setdefault(str(event.get("prompt", "")), []).append(str(event.get("text", "")))
    return last, texts


def collect_samples(rows: list[Row], prompts: list[str], generate: bool) -> list[Samples]:
    """Base samples (worker) and each run's samples (its events, else the worker), per prompt."""
    from workbench.generate import client as gen

    panes: list[Samples] = []
    bases: dict[str, tuple[dict[str, Any], Row, Samples]] = {}
    wanted: list[tuple[dict[str, Any], dict[str, Any], Samples]] = []  # (pane spec, settings, target)
    for row in rows:
        try:
            spec = base_spec(row.run.path)
        except gen.GenerationError:
            continue
        key = json.dumps(spec, sort_keys=True)
        if key not in bases:
            bases[key] = (spec, row, Samples(base_label(spec), source="generation worker"))
    panes.extend(entry[2] for entry in bases.values())
    for spec, row, target in bases.values():
        wanted.append(({"pane": "", "base": spec}, sampling_of(row), target))
    for row in rows:
        step, texts = event_samples(row)
        target = Samples(f"{row.run.ref} · step {step}" if step is not None else row.run.ref)
        if texts:
            target.texts, target.source = texts, "sample events"
        elif (row.run.path / runs.ADAPTER / "adapter_config.json").is_file():
            target.source = "generation worker"
            wanted.append((gen.run_pane("", row.run.path), sampling_of(row), target))
        panes.append(target)
    if generate and wanted:
        _generate(wanted, prompts)
    return panes


def _generate(wanted: list[tuple[dict[str, Any], dict[str, Any], Samples]], prompts: list[str]) -> None:
    """Fill the targets through one worker: one request per prompt and sampling settings."""
    from workbench.generate.client import GenerationClient

    groups: dict[str, list[tuple[dict[str, Any], Samples]]] = {}
    settings_of: dict[str, dict[str, Any]] = {}
    for spec, settings, target in wanted:
        key = json.dumps(settings, sort_keys=True)
        settings_of[key] = settings
        groups.setdefault(key, []).append((spec, target))
    with GenerationClient() as client:
        for key, members in groups.items():
            for prompt in prompts:
                specs = [dict(spec, pane=f"p{i}") for i, (spec, _) in enumerate(members)]
                results = client.generate(specs, prompt, **settings_of[key]).results()
                for i, (_, target) in enumerate(members):
                    result = results.get(f"p{i}")
                    if result is None:
                        continue
                    if result.error is not None:
                        target.errors[prompt] = result.error
                    else:
                        target.texts[prompt] = result.texts


def samples_section(rows: list[Row], panes: list[Samples], prompts: list[str], generate: bool) -> str:
    if not prompts:
        return "The runs' experiments have no `prompts`: no samples."
    settings = sampling_of(rows[0])
    lines = [
        f"Seeded sampling: seed {settings['seed']} (sample *i* uses seed + *i*), temperature "
        f"{settings['temperature']}, top-p {settings['top_p']}, at most {settings['max_new_tokens']} "
        "new tokens (each run with its own `[sampling]`). Runs: the samples each run wrote at its "
        "last step; base models" + (": generated now by the generation worker with the same settings."
                                    if generate else ": not generated (`--no-generate`)."),
    ]
    for i, prompt in enumerate(prompts, start=1):
        lines += ["", f"### Prompt {i}", "", fence(prompt)]
        for pane in panes:
            texts = pane.texts.get(prompt)
            error = pane.errors.get(prompt)
            if texts is None and error is None:
                if not pane.source:  # a run with no samples yet and no adapter to generate from
                    lines += ["", f"**{md_escape(pane.label)}**", "",
                              "*no samples yet: the run has not reached a checkpoint with samples*"]
                continue
            lines += ["", f"**{md_escape(pane.label)}**", ""]
            if error is not None:
                lines.append(f"*could not generate: {md_escape(error)}*")
                continue
            texts = texts or []
            for j, text in enumerate(texts):
                if len(texts) > 1:
                    lines.append(f"*sample {j + 1}*")
                lines.append(fence(text))
    return "\n".join(lines)


# --- the report -------------------------------------------------------------------------------


def write_report(selected: list[runs.Run], folder: Path, defaults: dict[str, str] | None = None,
                 generate: bool = True, title: str = "Experiment report") -> Path:
    """Write ``folder/report.md`` and its plots for ``selected``; returns the report's path."""
    if not selected:
        raise runs.RunError("no runs to report on (run some experiments first, or name runs)")
    folder.mkdir(parents=True, exist_ok=True)
    rows = rows_for(selected, defaults)
    prompts: list[str] = []
    for row in rows:
        for prompt in row.experiment.get("prompts") or []:
            if prompt not in prompts:
                prompts.append(prompt)
    plots = plot(rows, folder)
    mixed = best_on_bits_per_byte(rows)
    panes = collect_samples(rows, prompts, generate)
    when = time.strftime("%Y-%m-%d %H:%M", time.localtime())
    parts = [
        f"# {title}",
        "",
        f"{len(rows)} run(s), written {when}.",
        "",
        "## Results",
        "",
        results_table(rows),
        "",
        *([*(f"- {md_escape(line)}" for line in notes(rows)), ""] if notes(rows) else []),
        ("Best values in bold. Held-out perplexity is measured on rows never trained on; bits per byte "
         "divides the same loss by the texts' UTF-8 bytes, so it compares models with different "
         "tokenizers fairly. Train time is wall time in the training process; tok/s counts trained "
         "tokens over step time."),
        "",
        *([mixed, ""] if mixed else []),
        "## Configuration differences",
        "",
        config_differences(rows),
        "",
        "## Curves",
        "",
    ]
    if plots:
        for name, plot_title in plots:
            parts += [f"![{plot_title}]({name})", ""]
    else:
        parts += ["No training or evaluation events yet: no curves.", ""]
    parts += ["## Samples", "", samples_section(rows, panes, prompts, generate), ""]
    path = folder / "report.md"
    path.write_text("\n".join(parts), encoding="utf-8")
    return path


def cmd_report(ctx: Any) -> int:
    """``workbench report``."""
    args = ctx.args
    study = _study(ctx.root, args.runs)
    if study is not None:  # a search experiment: its best trial (else its latest), then the study
        best = study.best or max(study.trials, key=lambda t: t.number)
        args.runs = [best.ref]
    selected = ([runs.resolve(ctx.root, ref) for ref in args.runs] if args.runs
                else default_runs(ctx.root, ctx.try_config()))
    path = write_report(selected, Path(args.output), default_models(ctx.registry),
                        generate=not args.no_generate)
    if study is not None:
        from workbench import search, studyreport

        text = studyreport.section(study, path.parent, search.importances(ctx.root, study.experiment))
        with open(path, "a", encoding="utf-8") as fh:
            fh.write("\n" + text)
    pngs = sorted(p.name for p in path.parent.glob("*.png"))
    print(f"wrote {path} ({len(selected)} runs; plots: {', '.join(pngs) or 'none'})")
    return 0


def _study(root: Path, refs: list[str]) -> Any:
    """The study named by ``refs`` when it is one search experiment's name, else ``None``."""
    if len(refs) != 1 or "#" in refs[0]:
        return None
    from workbench.studyview import study_view

    try:
        return study_view(root, refs[0])
    except runs.RunError:
        return None


def add_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    """Add ``report`` to the CLI's subcommands."""
    p = sub.add_parser("report", parents=[common],
                       help="write a Markdown report: results, config differences, plots, samples")
    p.add_argument("runs", nargs="*", metavar="RUN",
                   help="runs to include (default: the latest run of each experiment)")
    p.add_argument("-o", "--output", default="report", metavar="FOLDER",
                   help="where report.md and the plots go (default: ./report)")
    p.add_argument("--no-generate", action="store_true",
                   help="no base-model samples: use only what the runs wrote (never starts torch)")
    p.set_defaults(func=cmd_report)
