"""Training data: local files and split folders, slices, blank rows, and clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from workbench.train.data import load_split, load_texts
from workbench.train.errors import UserError


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    rows = [{"body": f"text {i}", "id": i} for i in range(6)]
    rows[2]["body"] = "   "  # blank
    rows[4]["body"] = None  # missing
    (tmp_path / "train.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    (tmp_path / "test.csv").write_text("body,id\nheld one,1\nheld two,2\n")
    (tmp_path / "notes.txt").write_text("not data")
    return tmp_path


def test_folder_splits_by_file_name_and_blank_rows_are_dropped(folder: Path) -> None:
    assert load_split(str(folder), "train", "body") == ["text 0", "text 1", "text 3", "text 5"]
    assert load_split(str(folder), "test", "body") == ["held one", "held two"]


def test_slices_use_the_split_syntax(folder: Path) -> None:
    assert load_split(str(folder), "train[:2]", "body") == ["text 0", "text 1"]
    assert load_split(str(folder), "train[3:]", "body") == ["text 3", "text 5"]


def test_a_single_file_is_the_train_split(folder: Path) -> None:
    assert load_split(str(folder / "test.csv"), "train[1:]", "body") == ["held two"]


def test_missing_column_names_column_source_and_available_columns(folder: Path) -> None:
    with pytest.raises(UserError) as info:
        load_split(str(folder), "train", "text")
    message = str(info.value)
    assert "'text'" in message and str(folder) in message and "body, id" in message
    assert info.value.kind == "data"


def test_unknown_split_lists_the_files_there(folder: Path) -> None:
    with pytest.raises(UserError, match=r"no split 'validation' \(files give: test, train\)"):
        load_split(str(folder), "validation[:10]", "body")


def test_slice_past_the_end_is_a_user_error(folder: Path) -> None:
    with pytest.raises(UserError, match="bad split"):
        load_split(str(folder), "train[100:200]", "body")


def test_missing_local_source(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="data source not found"):
        load_split(str(tmp_path / "nope.jsonl"), "train", "body")


def test_hub_dataset_offline_says_how_to_fix() -> None:
    with pytest.raises(UserError) as info:
        load_split("someone/not-a-cached-dataset", "train[:10]", "text")
    assert "'someone/not-a-cached-dataset'" in str(info.value) and info.value.kind == "data"
    assert "network" in info.value.hint


def test_eval_source_gives_held_out_rows_from_elsewhere(folder: Path, tmp_path: Path) -> None:
    other = tmp_path / "other.jsonl"
    other.write_text(json.dumps({"body": "elsewhere"}) + "\n")

    class Data:
        source, column, subset = str(folder), "body", None
        train_split, eval_split, eval_source = "train[:1]", "train", str(other)

    assert load_texts(Data) == (["text 0"], ["elsewhere"])
