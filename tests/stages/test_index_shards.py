"""``index.shards``: the corpus encoded in shards (each on its own worker), the index built from them.

A stand-in encoder (deterministic vectors per text) checks the bookkeeping: which shard holds which
documents, when a shard is reused, encoded here, or refused. The real model and index: the stateless test
(``tests/ops/test_stateless_shards.py``: two clones encode the shards, a third builds the index) and the
benchmark (``python -m bench.shards``, ``tests/bench/test_shards.py``), which compare the index with an
unsharded build's documents and recall.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pipeline.indexes import shards as shard_files
from pipeline.project.config import Params
from pipeline.project.errors import InputError
from pipeline.project.layout import SHARD_RUN_ENV, Layout
from pipeline.stages import index as index_stage


class FakeModel:
    """Encodes a text as a few deterministic 8-dim vectors (its length in tokens: one per word, at most 5)."""

    encode_precision = "fp32"

    def __init__(self) -> None:
        self.encoded: list[str] = []

    def encode(self, texts: list[str], is_query: bool, batch_size: int, show_progress_bar: bool) -> list:
        self.encoded += texts
        out = []
        for text in texts:
            seed = int.from_bytes(text.encode()[:8].ljust(8, b"\0"), "little") % (2**32)
            out.append(np.random.default_rng(seed).standard_normal((min(len(text.split()), 5), 8)))
        return [e.astype("float32") for e in out]


@pytest.fixture()
def project(tmp_path: Path) -> Path:
    (tmp_path / "models" / "colbert").mkdir(parents=True)
    (tmp_path / "models" / "colbert" / "weights.bin").write_bytes(b"model one")
    return tmp_path


def _params(shards: int, **index: Any) -> Params:
    return Params.model_validate({"index": {"name": "toy", "shards": shards, "chunk_size": 2, **index}})


IDS = [f"d{i}" for i in range(7)]
TEXTS = [f"document number {i} says something" for i in range(7)]


def test_shards_split_the_corpus_in_order_and_are_reused_when_their_inputs_match(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(SHARD_RUN_ENV, raising=False)
    params, model = _params(3), FakeModel()
    folders, encoded = index_stage.ready_shards(params, project, model, IDS, TEXTS)
    assert encoded == 3 and sorted(model.encoded) == sorted(TEXTS)  # each document encoded once
    assert folders == [Layout(params, project).index_shard(i, 3) for i in range(3)]
    assert folders[0].relative_to(project).as_posix() == "index-shards/toy/shard-0-of-3"
    held = [[i for ids, _ in shard_files.iter_shard(folder) for i in ids] for folder in folders]
    assert held == [IDS[0:3], IDS[3:5], IDS[5:7]]  # contiguous, in order, sizes within one
    # the stored embeddings are the encoder's, document by document
    again = FakeModel().encode(TEXTS, is_query=False, batch_size=1, show_progress_bar=False)
    stored = [e for folder in folders for _, chunk in shard_files.iter_shard(folder) for e in chunk]
    assert all(np.array_equal(a, b) for a, b in zip(stored, again, strict=True))

    model.encoded.clear()
    assert index_stage.ready_shards(params, project, model, IDS, TEXTS) == (folders, 0)
    assert model.encoded == []  # all three found, nothing encoded again

    # Another model: every shard is stale and encoded again here (outside a stateless task).
    (project / "models" / "colbert" / "weights.bin").write_bytes(b"model two")
    assert index_stage.ready_shards(params, project, model, IDS, TEXTS)[1] == 3


def test_in_a_stateless_task_a_missing_or_stale_shard_names_the_task_that_makes_it(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    params = _params(2)
    monkeypatch.delenv(SHARD_RUN_ENV, raising=False)
    index_stage.ready_shards(params, project, FakeModel(), IDS, TEXTS)
    shutil.rmtree(Layout(params, project).index_shard(1, 2))
    monkeypatch.setenv(SHARD_RUN_ENV, "run-7")
    model = FakeModel()
    with pytest.raises(InputError) as missing:
        index_stage.ready_shards(params, project, model, IDS, TEXTS)
    assert "shard 1 of 2 (index-shards/toy/shard-1-of-2) is missing" in str(missing.value)
    assert "`colbert-pipeline task index --shard 1/2 --run run-7`" in str(missing.value)
    assert model.encoded == []  # refused: nothing encoded in the index task

    # Encoded by a worker whose "auto" precision resolved otherwise: refused, with the remedy.
    monkeypatch.delenv(SHARD_RUN_ENV)
    index_stage.ready_shards(params, project, FakeModel(), IDS, TEXTS)
    model.encode_precision = "bf16"
    monkeypatch.setenv(SHARD_RUN_ENV, "run-7")
    with pytest.raises(InputError, match=r"shard 0 of 2 .* precision 'fp32', not 'bf16'.*index\.precision"):
        index_stage.ready_shards(params, project, model, IDS, TEXTS)


def test_shards_are_added_in_the_chunks_of_an_unsharded_build(tmp_path: Path) -> None:
    """Chunks are cut across shard boundaries as if the corpus were one sequence."""
    params, model = _params(2, chunk_size=3), FakeModel()
    folders = []
    for shard in range(2):
        identity = index_stage.shard_identity(params, model, "md5", IDS, TEXTS, shard)
        folder = tmp_path / f"s{shard}"
        index_stage.write_encoded_shard(params, model, IDS, TEXTS, folder, identity)
        folders.append(folder)

    class Recorder:
        path = tmp_path / "recorder"

        def __init__(self) -> None:
            self.added: list[list[str]] = []

        def transaction(self) -> Any:
            import contextlib

            return contextlib.nullcontext()

        def add_documents(self, documents_ids: list[str], documents_embeddings: list) -> None:
            self.added.append(list(documents_ids))

    recorder = Recorder()
    stats = shard_files.index_shards(folders, recorder, chunk_size=3, show_progress=False)
    assert recorder.added == [IDS[0:3], IDS[3:6], IDS[6:7]]  # shard 0 holds d0-d3, shard 1 d4-d6
    assert stats["documents"] == 7 and stats["chunks"] == 3


def test_a_shard_must_be_of_the_run_s_shard_count(
    project: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``colbert-pipeline index --shard I/N``: N other than index.shards, or a malformed I/N, is an input
    error (exit 2) before the corpus is read or the model loaded (no corpus exists here)."""
    from pipeline.cli import main

    (project / "params.yaml").write_text("index:\n  shards: 2\n")
    monkeypatch.chdir(project)
    for argument, message in (
        ("1/3", "--shard 1/3: index.shards is 2, not 3"),
        ("2/2", "--shard 2/2: I/N needs 0 <= I < N and N >= 2"),
        ("one", "--shard one: expected I/N"),
    ):
        assert main(["index", "--shard", argument]) == 2
        assert message in capsys.readouterr().err
