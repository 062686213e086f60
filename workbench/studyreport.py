"""The report's study section: the trials table, best-so-far and per-param plots, importances.

``workbench report lr-search`` reports the study's best trial as any run
and appends this section. The plots are PNGs beside ``report.md``: the best
value so far over trials, and one scatter of the metric against each
searched param (log x axis for a ``log = true`` param). Optuna's parameter
importances come once :data:`workbench.search.MIN_FOR_IMPORTANCE` trials
finished; Optuna is imported only for them.
"""

from __future__ import annotations

from pathlib import Path

from workbench.studyview import StudyView, trials_table


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in name)


def plot(study: StudyView, folder: Path) -> list[tuple[str, str]]:
    """Write the study's PNGs into ``folder``; ``(file name, title)`` of those with data."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt
    from matplotlib.ticker import MaxNLocator

    metric = study.metric.title
    written: list[tuple[str, str]] = []
    curve = study.best_so_far()
    if curve:
        fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
        try:
            finished = [(t.number, t.value) for t in study.trials
                        if t.state == "finished" and t.value is not None]
            ax.scatter([p[0] for p in finished], [p[1] for p in finished], s=14, alpha=0.5, label="trial")
            ax.step([p[0] for p in curve], [p[1] for p in curve], where="post", label="best so far")
            ax.set(title=f"best {metric} so far", xlabel="trial", ylabel=metric)
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.grid(alpha=0.3)
            ax.legend(fontsize="small")
            fig.tight_layout()
            fig.savefig(folder / "study_best_so_far.png", format="png")
        finally:
            plt.close(fig)
        written.append(("study_best_so_far.png", f"best {metric} so far"))
    for param in study.params:
        pts = study.points(param)
        if not pts:
            continue
        name = f"study_param_{_safe(param)}.png"
        fig, ax = plt.subplots(figsize=(5, 3.5), dpi=100)
        try:
            numeric = all(isinstance(x, (int, float)) and not isinstance(x, bool) for x, _ in pts)
            xs = [x if numeric else str(x) for x, _ in pts]
            ax.scatter(xs, [y for _, y in pts], s=18)
            if param in study.log_params:
                ax.set_xscale("log")
            ax.set(title=f"{metric} vs {param}", xlabel=param, ylabel=metric)
            ax.grid(alpha=0.3)
            fig.tight_layout()
            fig.savefig(folder / name, format="png")
        finally:
            plt.close(fig)
        written.append((name, f"{metric} vs {param}"))
    return written


def section(study: StudyView, folder: Path, importances: dict[str, float]) -> str:
    """The Markdown of the study section (plots written into ``folder``)."""
    from workbench.report import md_table

    header, rows = trials_table(study, star="")
    bold = [[f"**{c}**" if t.best and i == len(row) - 1 else c for i, c in enumerate(row)]
            for row, t in zip(rows, sorted(study.trials, key=lambda t: t.number), strict=True)]
    counts = ", ".join(f"{n} {state}" for state, n in study.counts().items())
    best = study.best
    parts = [
        f"## Study {study.experiment}",
        "",
        f"{len(study.trials)} trial(s): {counts}. Metric: {study.metric.title} "
        f"({study.metric.better} is better)"
        + (f"; best {study.metric.fmt(best.value)} ({best.ref})." if best else "."),
        "",
        md_table(header, bold, ["l", "r", *("l" for _ in study.params), "l", "r"]),
        "",
    ]
    for name, title in plot(study, folder):
        parts += [f"![{title}]({name})", ""]
    if importances:
        parts += ["### Parameter importances (Optuna, fANOVA)", "",
                  md_table(["param", "importance"], [[p, f"{v:.3f}"] for p, v in importances.items()],
                           ["l", "r"]), ""]
    else:
        from workbench.search import MIN_FOR_IMPORTANCE

        parts += [f"Parameter importances need {MIN_FOR_IMPORTANCE} finished trials with different "
                  "values.", ""]
    return "\n".join(parts)
