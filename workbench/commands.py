"""Command palette (ctrl+p): one entry per action, plus "show EXPERIMENT" for each experiment."""

from __future__ import annotations

from functools import partial

from textual.command import DiscoveryHit, Hit, Hits, Provider

# (command text, help, action on the main screen, or "app." for app actions)
ACTIONS: tuple[tuple[str, str, str], ...] = (
    ("Run experiment", "start the marked experiments, or the selected one (r)", "launch"),
    ("Stop run", "stop the shown run, after asking (s)", "stop"),
    ("Resume run", "continue the shown stopped or failed run from its checkpoint (u)", "resume"),
    ("Mark experiment", "mark or unmark the selected experiment, then move down (space)", "mark"),
    ("Toggle overlay", "draw the marked experiments' latest runs together (o)",
     "overlay"),
    ("Chart another metric", "the right chart shows the run's next declared metric (m)", "metric"),
    ("Filter experiments", "type to filter the experiments table (/)", "filter"),
    ("Show config tab", "the resolved config of the selected experiment (1)", "tab('config')"),
    ("Show diff tab", "what differs from the experiment it extends (2)", "tab('diff')"),
    ("Show runs tab", "every run of the selected experiment (3)", "tab('runs')"),
    ("Show samples tab", "the latest sample generations (4)", "tab('samples')"),
    ("Show log tab", "the tail of train.log (5)", "tab('log')"),
    ("Note on run", "write the shown run's note, kept in its folder (n)", "note"),
    ("Tag run", "set the shown run's tags; / filters by them (T)", "tag"),
    ("Archive run", "hide the shown run, kept under runs/EXP/.archive/, after asking (A)", "archive"),
    ("Delete run", "delete the shown run's folder for good, after asking (D)", "delete"),
    ("Edit experiments file", "open $EDITOR at the selected experiment; the table reloads (e)", "edit"),
    ("Compare runs", "generate side by side from runs and base models (c)", "compare"),
    ("Results table", "one row per run, sortable, best values marked (t)", "app.results"),
    ("Study view", "a search experiment's trials, best so far, a scatter per param (y)", "app.study"),
    ("Plugins", "what loaded, from where, and what failed (p)", "app.plugins"),
    ("Help", "keys and a short tour (?)", "app.help"),
    ("Quit", "leave the TUI; runs keep going (q)", "app.quit"),
)

# Actions of the compare and results screens, offered while that screen is shown.
COMPARE_ACTIONS: tuple[tuple[str, str, str], ...] = (
    ("Generate", "generate the prompt in every pane, streaming (g)", "generate"),
    ("Regenerate", "new samples: the next seed, then generate (r)", "regenerate"),
    ("Samples per pane", "cycle 1-4 samples per pane (n)", "samples"),
    ("Add pane", "a run at its latest checkpoint, or the base model of a backend (a)", "add_pane"),
    ("Remove pane", "remove the focused pane (x)", "remove_pane"),
    ("Cycle checkpoint", "the focused run pane's adapter: checkpoint-N ..., final (k)", "checkpoint"),
    ("Save comparison", "keep prompt, settings and texts in RUNS/.comparisons (s)", "save"),
    ("Saved comparisons", "list saved comparisons and reopen one (l)", "saved"),
    ("Grid mode", "runs x checkpoints for one prompt; enter picks a checkpoint (m)", "grid"),
)
RESULTS_ACTIONS: tuple[tuple[str, str, str], ...] = (
    ("Cycle sort column", "sort by the next column; 1-9 pick one (s)", "cycle_sort"),
    ("Reverse sort", "reverse the order (S)", "reverse"),
    ("Export report", "write report.md, its plots and samples, in the background (e)", "export"),
)


class WorkbenchCommands(Provider):
    """Every workbench action, searchable by name."""

    def _commands(self) -> list[tuple[str, str, str]]:
        from workbench.screens.compare import CompareScreen
        from workbench.screens.main import MainScreen
        from workbench.screens.results import ResultsScreen

        on_main = isinstance(self.screen, MainScreen)
        commands = [c for c in ACTIONS if on_main or c[2].startswith("app.")]
        if isinstance(self.screen, CompareScreen):
            commands = [*COMPARE_ACTIONS, *commands]
        elif isinstance(self.screen, ResultsScreen):
            commands = [*RESULTS_ACTIONS, *commands]
        if on_main:
            names = self.screen.table.names()  # type: ignore[attr-defined]
            commands += [(f"Show {name}", f"select experiment {name}", f"select('{name}')") for name in names]
        return commands

    def _runner(self, action: str):
        target = action if action.startswith("app.") else f"screen.{action}"
        return partial(self.app.run_action, target)

    async def discover(self) -> Hits:
        for text, help_text, action in self._commands():
            if action.startswith("select("):
                continue
            yield DiscoveryHit(text, self._runner(action), help=help_text)

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for text, help_text, action in self._commands():
            score = matcher.match(text)
            if score > 0:
                yield Hit(score, matcher.highlight(text), self._runner(action), text=text, help=help_text)
