"""``workbench archive / delete / note / tag``: run management from the CLI, nothing lost by mistake."""

from __future__ import annotations

from pathlib import Path

from cli_project import TINY_TOML, workbench

from workbench import runmeta, runs


def project(tmp_path: Path, *states: str) -> Path:
    (tmp_path / "experiments.toml").write_text(TINY_TOML)
    for state in states:
        path = runs.new_run_dir(tmp_path / "runs", "tiny")
        (path / runs.CONFIG).write_text('{"experiment": {"name": "tiny", "backend": "tiny"}}')
        runs.write_status(path, state=state, max_steps=10)
    return tmp_path


def test_archive_hides_a_run_keeps_its_folder_and_its_number(tmp_path: Path) -> None:
    base = project(tmp_path, "finished", "stopped")
    proc = workbench(base, "archive", "tiny#2")
    assert proc.returncode == 0, proc.stderr
    assert (base / "runs" / "tiny" / ".archive" / "2" / runs.STATUS).is_file()
    assert [r.ref for r in runs.list_runs(base / "runs")] == ["tiny#1"]
    assert "tiny#1" in workbench(base, "status").stdout and "tiny#2" not in workbench(base, "status").stdout
    assert runs.new_run_dir(base / "runs", "tiny").name == "3"  # the archived number stays taken


def test_a_running_or_queued_run_is_neither_archived_nor_deleted(tmp_path: Path) -> None:
    base = project(tmp_path, "queued")
    for command in (["archive", "tiny#1"], ["delete", "tiny#1", "--yes"]):
        proc = workbench(base, *command)
        assert proc.returncode == 2 and "queued: take it out of the queue" in proc.stderr
        assert "Traceback" not in proc.stderr
    assert (base / "runs" / "tiny" / "1" / runs.STATUS).is_file()


def test_delete_asks_unless_yes(tmp_path: Path) -> None:
    base = project(tmp_path, "failed")
    proc = workbench(base, "delete", "tiny#1")  # no terminal to ask on: refused, kept
    assert proc.returncode == 2 and "--yes" in proc.stderr
    assert (base / "runs" / "tiny" / "1").is_dir()
    assert workbench(base, "delete", "tiny#1", "--yes").returncode == 0
    assert not (base / "runs" / "tiny" / "1").exists()


def test_note_and_tags_live_in_the_run_folder(tmp_path: Path) -> None:
    base = project(tmp_path, "finished")
    assert workbench(base, "note", "tiny", "lr", "too", "high").returncode == 0
    assert workbench(base, "tag", "tiny#1", "keep", "lr-sweep", "keep").returncode == 0
    assert workbench(base, "tag", "tiny#1", "--remove", "lr-sweep").returncode == 0
    meta = runmeta.read_meta(base / "runs" / "tiny" / "1")
    assert meta == runmeta.RunMeta("lr too high", ("keep",))
    assert "note" not in runs.read_status(base / "runs" / "tiny" / "1")  # status.json untouched
    bad = workbench(base, "tag", "tiny#1", "two words")
    assert bad.returncode == 2 and "one word" in bad.stderr
    results = workbench(base, "results").stdout.splitlines()
    assert results[0].rstrip().endswith("notes") and results[1].rstrip().endswith("#keep lr too high")
    report = workbench(base, "report", "tiny#1", "-o", str(tmp_path / "out"))
    assert report.returncode == 0, report.stderr
    assert "#keep lr too high |" in (tmp_path / "out" / "report.md").read_text()
