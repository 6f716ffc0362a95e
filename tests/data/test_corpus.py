"""The corpus to index is checked row by row: bad rows are refused naming their lines, or dropped, counted."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline.data.beir import BeirFormatError
from pipeline.data.corpus import corpus_for, read_corpus_rows
from pipeline.project.config import Params

ROWS = [
    {"_id": "d1", "title": "Koalas", "text": "eat eucalyptus leaves"},
    {"_id": 7, "text": "an integer id"},  # line 2
    {"_id": "d2", "title": "", "text": "   "},  # line 3: empty text
    {"_id": "d1", "text": "the same id again"},  # line 4
    {"_id": "d3", "text": "Trains run on rails"},
    {"text": "no id at all"},  # line 6
    {"_id": "d4", "title": "Only a title", "text": ""},  # a title alone is text
]


def _write(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def test_bad_rows_are_refused_with_every_line_named(tmp_path):
    path = _write(tmp_path / "corpus.jsonl", ROWS)
    with pytest.raises(BeirFormatError) as raised:
        read_corpus_rows(path)
    message = str(raised.value)
    assert "4 bad row(s)" in message and "prepare.on_bad_rows: drop" in message
    assert f"{path}:2: '_id' must be a string, got int 7" in message
    assert f"{path}:3: document 'd2' has no text" in message
    assert f"{path}:4: duplicate '_id' 'd1' (first on line 1)" in message
    assert f"{path}:6: no field '_id'" in message


def test_drop_keeps_the_good_rows_and_counts_the_bad_by_reason(tmp_path):
    rows = read_corpus_rows(_write(tmp_path / "corpus.jsonl", ROWS), "drop")
    assert rows.ids == ["d1", "d3", "d4"]
    assert rows.texts == ["Koalas eat eucalyptus leaves", "Trains run on rails", "Only a title"]
    assert rows.dropped == {"duplicate id": 1, "empty text": 1, "id not a string": 1, "missing id": 1}


def test_the_index_stage_refuses_a_bad_corpus_before_loading_any_model(tmp_path):
    (tmp_path / "corpus").mkdir()
    _write(tmp_path / "corpus" / "docs.jsonl", ROWS)
    params = Params.model_validate({"index": {"corpus": "corpus/docs.jsonl"}})
    # no model folder at all: the corpus is refused first
    with pytest.raises(BeirFormatError, match=r"docs.jsonl:2: '_id' must be a string"):
        corpus_for(params, tmp_path)
    from pipeline.stages import index as index_stage

    with pytest.raises(BeirFormatError, match="4 bad row"):
        index_stage.run(params, tmp_path)
    assert not (tmp_path / "mlruns.db").exists() and not (tmp_path / "indexes").exists()
    dropping = Params.model_validate(
        {"index": {"corpus": "corpus/docs.jsonl"}, "prepare": {"on_bad_rows": "drop"}}
    )
    rows, _ = corpus_for(dropping, tmp_path)
    assert rows.ids == ["d1", "d3", "d4"] and sum(rows.dropped.values()) == 4
