"""Results rows, sorting and best marks; the report; saved comparisons; the compare command.

Rows and sorting run on hand-written run folders (milliseconds); the report
and ``workbench compare`` run on the two tiny runs trained for real in
``trained_runs`` (shared with test_generate.py), with the generation worker.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from trained_runs import PROMPT, quiet_env, trained_runs

from workbench import cli, comparisons, results, runs
from workbench.compare import columns
from workbench.compare_model import printable, split_ref
from workbench.report import write_report

PNG = b"\x89PNG\r\n\x1a\n"


# --- hand-written runs -----------------------------------------------------------------


def make_run(root: Path, exp: str, run_id: int, *, r: int = 4, model: str | None = None,
             evals: list[tuple[int, float, float]] = (), train: list[tuple[int, float]] = (),
             state: str = "finished", **status) -> runs.Run:
    path = root / exp / str(run_id)
    path.mkdir(parents=True)
    experiment = {"name": exp, "backend": "tiny", "model": model, "lora": {"r": r},
                  "data": {"source": "x.jsonl"}, "prompts": ["hi"]}
    (path / runs.CONFIG).write_text(json.dumps({"experiment": experiment}))
    runs.write_status(path, state=state, max_steps=4, **status)
    for step, loss in train:
        runs.append_event(path, "train", step=step, loss=loss, tokens=1000, tokens_per_s=100.0 * r)
    for step, ppl, bpb in evals:
        runs.append_event(path, "eval", step=step, perplexity=ppl, bits_per_byte=bpb)
    return runs.resolve(root, f"{exp}#{run_id}")


@pytest.fixture
def three_runs(tmp_path: Path) -> Path:
    root = tmp_path / "runs"
    make_run(root, "base", 1, r=4, model="org/SmolLM-135M", train=[(1, 3.0), (2, 2.0)],
             evals=[(2, 9.0, 1.2), (4, 8.0, 1.1)], step=4)
    make_run(root, "wide", 2, r=16, train=[(1, 3.1), (2, 1.9)], evals=[(2, 7.0, 1.3), (4, 7.5, 1.25)],
             step=4)
    make_run(root, "wide", 10, r=8, state="running", pid=-1, step=1)  # nothing measured yet
    return root


def test_rows_hold_each_run_s_numbers(three_runs):
    rows = {row["run"]: row for row in results.collect(three_runs, default_models={"tiny": "x/Tiny-1M"})}
    base = rows["base#1"]
    assert (base["model"], base["r"], base["steps"]) == ("SmolLM-135M", 4, 4)
    assert (base["ppl"], base["final_ppl"], base["bpb"], base["final_bpb"]) == (8.0, 8.0, 1.1, 1.1)
    assert base["tok_s"] == pytest.approx(400.0)
    assert rows["wide#2"]["model"] == "Tiny-1M"
    assert (rows["wide#2"]["ppl"], rows["wide#2"]["final_ppl"]) == (7.0, 7.5)
    assert rows["wide#10"]["ppl"] is None and rows["wide#10"]["state"] == "failed"  # pid gone: vanished


def test_best_values_are_marked(three_runs):
    rows = {row["run"]: row for row in results.collect(three_runs)}
    assert rows["wide#2"].best == {"ppl", "final_ppl", "tok_s"}
    assert rows["base#1"].best == {"bpb", "final_bpb"}
    assert rows["wide#10"].best == set()
    table = results.render(list(rows.values()))
    assert "★ 7.000" in table and "★ 1.1000" in table


def test_a_value_only_one_run_has_is_not_marked_best(tmp_path):
    root = tmp_path / "runs"
    make_run(root, "solo", 1, train=[(1, 3.0)], evals=[(2, 9.0, 1.2)], step=2)
    rows = results.collect(root)
    assert [row.best for row in rows] == [set()], "nothing to compare with: no best"
    assert "★" not in results.render(rows)
    make_run(root, "other", 1, train=[(1, 3.0)], step=1)  # trained, never evaluated
    rows = {row["run"]: row for row in results.collect(root)}
    assert "ppl" not in rows["solo#1"].best and "bpb" not in rows["solo#1"].best
    assert "tok_s" in rows["solo#1"].best and "tok_s" in rows["other#1"].best  # the same rate: a tie


def test_sorting_by_any_column(three_runs):
    rows = results.collect(three_runs)

    def order(key, reverse=False):
        return [row["run"] for row in results.sort_rows(rows, key, reverse)]

    assert order("ppl") == ["wide#2", "base#1", "wide#10"], "best first, unknown last"
    assert order("ppl", reverse=True) == ["base#1", "wide#2", "wide#10"]
    assert order("tok_s") == ["wide#2", "base#1", "wide#10"], "higher is better"
    assert order("r") == ["base#1", "wide#10", "wide#2"]
    assert order("run") == ["base#1", "wide#2", "wide#10"], "run numbers sort as numbers"
    assert order("state") == ["wide#10", "base#1", "wide#2"]
    with pytest.raises(KeyError):
        results.sort_rows(rows, "nope")


def test_resumed_run_counts_each_step_once_and_no_gap(tmp_path):
    root = tmp_path / "runs"
    run = make_run(root, "r", 1, started=1000.0)
    for event in [
        {"type": "train", "time": 1010.0, "step": 1, "loss": 3.0, "tokens": 100, "tokens_per_s": 10.0},
        {"type": "eval", "time": 1020.0, "step": 2, "perplexity": 5.0},
        {"type": "eval", "time": 1030.0, "step": 3, "perplexity": 1.0},  # lost with the process
        {"type": "resume", "time": 5000.0, "from_step": 2},
        {"type": "eval", "time": 5010.0, "step": 3, "perplexity": 4.0},
    ]:
        with open(run.path / runs.EVENTS, "a") as fh:
            fh.write(json.dumps(event) + "\n")
    row = results.build_row(run.refresh())
    assert (row["ppl"], row["final_ppl"]) == (4.0, 4.0)
    assert row["time"] == pytest.approx(30.0 + 10.0), "1000->1030 plus 5000->5010, not the gap"


def test_results_command_json_and_table(three_runs, tmp_path, capsys):
    common = ["-c", str(tmp_path / "none.toml"), "--runs-dir", str(three_runs)]
    assert cli.main([*common, "results", "--sort", "bpb", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert [d["run"] for d in data] == ["base#1", "wide#2", "wide#10"]
    assert data[0]["best"] == ["bpb", "final_bpb"]
    assert cli.main([*common, "results"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].split()[:3] == ["run", "model", "r"] and "★" in out


def test_report_without_generation(three_runs, tmp_path):
    run = runs.resolve(three_runs, "base#1")
    runs.append_event(run.path, "sample", step=4, checkpoint="final", prompt="hi", text="hello there",
                      index=0, seed=1234)
    folder = tmp_path / "out"
    write_report([run, runs.resolve(three_runs, "wide#2")], folder, generate=False)
    text = (folder / "report.md").read_text()
    assert "| base#1 | SmolLM-135M | 4 |" in text
    assert "| `lora.r` | 4 | 16 |" in text and "| `model` |" in text
    assert "hello there" in text and "not generated" in text
    for name in ("train_loss.png", "perplexity.png", "bits_per_byte.png"):
        assert (folder / name).read_bytes()[:8] == PNG


def test_report_marks_best_on_bits_per_byte_when_tokenizers_differ(tmp_path):
    root = tmp_path / "runs"
    # smol has the better perplexity, tiny the better bits per byte: only the latter is comparable
    smol = make_run(root, "smol", 1, model="org/SmolLM-135M", evals=[(4, 5.0, 1.3)], step=4)
    tiny = make_run(root, "tiny", 1, evals=[(4, 9.0, 1.1)], step=4)
    folder = tmp_path / "out"
    write_report([smol, tiny], folder, defaults={"tiny": "x/Tiny-1M"}, generate=False)
    text = (folder / "report.md").read_text()
    assert "different tokenizers (tiny: SmolLM-135M; tiny: Tiny-1M)" in text
    assert "best is marked on bits per byte, not perplexity" in text
    assert "| smol#1 | SmolLM-135M | 4 | 4 | 5.000 |" in text  # the lower perplexity, not bold
    assert "**1.1000**" in text and "**5.000**" not in text
    # one tokenizer: perplexity best marks as before, and no such sentence
    same = make_run(root, "same", 1, evals=[(4, 7.0, 1.2)], step=4)
    write_report([tiny, same], folder, defaults={"tiny": "x/Tiny-1M"}, generate=False)
    text = (folder / "report.md").read_text()
    assert "**7.000**" in text and "use different tokenizers" not in text


def test_overlapping_report_lines_get_distinct_markers_and_line_styles():
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    from workbench.report import draw_lines

    same = [(float(s), 2.0 / s) for s in range(1, 101)]  # three runs on exactly the same curve
    ax = Figure().subplots()
    draw_lines(ax, [("a#1", same), ("b#1", same), ("c#1", same)])
    styles = [(line.get_marker(), line.get_linestyle()) for line in ax.get_lines()]
    assert len(styles) == 3 and len({m for m, _ in styles}) == 3 and len({s for _, s in styles}) == 3


# --- saved comparisons ---------------------------------------------------------------------


def test_saved_comparisons_round_trip(tmp_path):
    pane = comparisons.SavedPane(label="a#1 · step 4", texts=["x"], run="a#1", checkpoint="final")
    first = comparisons.Comparison("p1", {"seed": 1}, [pane], time=1_700_000_000.0)
    second = comparisons.Comparison("p2", {"seed": 2}, [pane], time=1_700_000_000.0)  # same second
    paths = [comparisons.save(tmp_path, first), comparisons.save(tmp_path, second)]
    assert len(set(paths)) == 2 and all(p.parent == tmp_path / ".comparisons" for p in paths)
    newer = comparisons.Comparison("p3", {}, [], time=1_800_000_000.0)
    comparisons.save(tmp_path, newer)
    (tmp_path / ".comparisons" / "junk.json").write_text("{")
    listed = comparisons.list_saved(tmp_path)
    assert listed[0].prompt == "p3" and len(listed) == 3
    loaded = comparisons.load(paths[0])
    assert loaded.prompt == "p1" and loaded.panes[0].texts == ["x"] and loaded.panes[0].run == "a#1"
    assert runs.list_runs(tmp_path) == [], "the run listing ignores saved comparisons"


def test_columns_and_run_refs():
    out = columns(["left", "right"], ["one\ntwo", "three"], 30)
    lines = out.splitlines()
    assert lines[0].startswith("left") and "│ right" in lines[0]
    assert "one" in lines[2] and "three" in lines[2] and "two" in lines[3]
    assert split_ref("a#1@200") == ("a#1", "checkpoint-200")
    assert split_ref("a") == ("a", "final")


# --- real runs, real worker ------------------------------------------------------------------


def split_row(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_llama_dir):
    return trained_runs(tmp_path_factory, tiny_llama_dir)


@pytest.fixture
def worker_env(monkeypatch, tmp_path):
    for key, value in quiet_env(tmp_path / "cache").items():
        monkeypatch.setenv(key, value)


def test_report_on_trained_runs(trained, tmp_path, worker_env):
    _, by_name = trained
    folder = tmp_path / "report"
    path = write_report([by_name["a"], by_name["b"]], folder)  # speed: benchmarks/bench_report.py
    text = path.read_text()
    table = text.split("## Results")[1].split("## Configuration")[0]
    assert "| a#1 | tiny-llama" in table and "| b#1 |" in table and "LoRA r" in table
    lines = [line for line in table.splitlines() if line.startswith("|")]
    header, cells = split_row(lines[0]), {split_row(line)[0]: split_row(line) for line in lines[2:]}
    best_ppl = {ref: min(e["perplexity"] for e in runs.read_events(run.path) if e["type"] == "eval")
                for ref, run in (("a#1", by_name["a"]), ("b#1", by_name["b"]))}
    winner, loser = sorted(best_ppl, key=best_ppl.get)
    column = header.index("held-out ppl (best)")
    bold = cells[winner][column]
    assert bold.startswith("**") and bold.endswith("**"), "the best value in bold"
    assert float(bold.strip("*")) == pytest.approx(best_ppl[winner], rel=1e-3, abs=0.5)
    assert "**" not in cells[loser][column], "only the best value in bold"
    diffs = text.split("## Configuration differences")[1].split("## Curves")[0]
    assert "`lora.r` | 4 | 8" in diffs and "`train.learning_rate`" in diffs
    for name in ("train_loss.png", "perplexity.png"):
        data = (folder / name).read_bytes()
        assert data[:8] == PNG and len(data) > 1000
        assert f"]({name})" in text
    samples = text.split("## Samples")[1]
    assert "base (untuned)" in samples and "a#1 · step 4" in samples and "b#1 · step 4" in samples
    for run in by_name.values():
        final = [e for e in runs.read_events(run.path) if e.get("type") == "sample"][-1]
        assert printable(final["text"]) in samples, "the run's own final sample"
    base_block = samples.split("base (untuned)**")[1].split("**a#1")[0]
    assert base_block.count("~~~") >= 2 and "could not generate" not in base_block


def test_compare_command_streams_and_saves(trained, tmp_path, worker_env, capsys):
    root, _ = trained
    argv = ["-c", str(tmp_path / "none.toml"), "--runs-dir", str(root), "compare", "a", "b@2", "--base",
            "--layout", "rows", "--prompt", PROMPT.replace("\n", "\\n"), "--seed", "3", "--save"]
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    assert "── a#1 · step 4 (final) ──" in out and "── b#1 · step 2 ──" in out and "base (untuned)" in out
    saved = comparisons.list_saved(root)[0]
    assert saved.prompt == PROMPT and saved.settings["seed"] == 3
    assert [p.checkpoint for p in saved.panes] == [None, "final", "checkpoint-2"]
    assert all(len(p.texts) == 1 and p.error is None for p in saved.panes)
    assert saved.panes[0].base["backend"] == "tiny"
