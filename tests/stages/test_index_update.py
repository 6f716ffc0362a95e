"""The index stage updates its index in place when only the corpus changed, on a real SciFact slice.

The base index is built once per module (1,050 SciFact abstracts, each cut to the first 12 words of its text,
untitled, to keep the test short; more than fast-plaid's 999, below which its update rebuilds the PLAID files
from their embeddings). Each test copies that project and changes its corpus: 20 documents added, 10
removed and 5 changed are encoded and applied as such; a change beyond ``index.update_max_churn``, a new
model, or ``index.update: rebuild`` rebuild (on a smaller slice: a rebuild encodes everything).
"""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from pipeline import indexes, models
from pipeline.indexes import updates
from pipeline.indexes.embedding_store import STORE_FOLDER, EmbeddingStore
from pipeline.indexes.storage import TEXTS_FILE, VersionStore
from pipeline.project.config import Params
from pipeline.stages import index as index_stage
from tests.paths import require_shared_data

SLICE = 1_050
SMALL = 60
WORDS = 12
CORPUS = "corpus/scifact.jsonl"


def scifact_rows(n: int) -> list[dict]:
    """The first ``n`` SciFact documents, each cut to the first :data:`WORDS` words of its text."""
    rows = []
    with gzip.open(require_shared_data("scifact") / "corpus.jsonl.gz", "rt", encoding="utf-8") as stream:
        for line in stream:
            row = json.loads(line)
            rows.append({"_id": row["_id"], "title": "", "text": " ".join(row["text"].split()[:WORDS])})
            if len(rows) == n:
                break
    return rows


def write_corpus(project: Path, rows: list[dict]) -> None:
    path = project / CORPUS
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")


def params(**index) -> Params:
    settings = {"name": "scifact", "corpus": CORPUS, "probe_queries": 10, "device": "cpu", **index}
    return Params.model_validate({"index": settings, "tracking": {"retries": 1}})


def text_of(row: dict) -> str:
    return f"{row.get('title') or ''} {row['text']}".strip()


def _base(folder: Path, saved_colbert: Path, rows: list[dict]) -> Path:
    shutil.copytree(saved_colbert, folder / "models" / "colbert")
    write_corpus(folder, rows)
    result = index_stage.run(params(), folder)
    assert (
        result["update"]["mode"] == "rebuild" and result["update"]["reason"] == "no previous index to update"
    )
    return folder


@pytest.fixture(scope="module")
def rows() -> list[dict]:
    return scifact_rows(SLICE + 40)


@pytest.fixture(scope="module")
def built(module_tmp_path: Path, saved_colbert: Path, rows: list[dict]) -> Path:
    return _base(module_tmp_path / "base", saved_colbert, rows[:SLICE])


@pytest.fixture(scope="module")
def small(module_tmp_path: Path, saved_colbert: Path, rows: list[dict]) -> Path:
    return _base(module_tmp_path / "small", saved_colbert, rows[:SMALL])


def copy_of(project: Path, tmp_path: Path) -> Path:
    target = tmp_path / "project"
    shutil.copytree(project, target, symlinks=True)
    return target


def live(project: Path) -> Path:
    folder = project / "indexes" / "scifact"
    return folder / VersionStore(folder).current()


def test_20_added_10_removed_5_changed_are_encoded_and_applied_in_place(built, rows, tmp_path):
    project = copy_of(built, tmp_path)
    before = live(project)
    kept = shutil.copytree(before, tmp_path / "before")  # the update's commit sweeps the old version
    base = rows[:SLICE]
    removed = [row["_id"] for row in base[100:110]]
    changed = {
        row["_id"]: {**row, "text": row["text"] + " revised in a later release"} for row in base[200:205]
    }
    added = rows[SLICE : SLICE + 20]
    corpus = [changed.get(row["_id"], row) for row in base if row["_id"] not in removed] + added
    write_corpus(project, corpus)

    result = index_stage.run(params(), project)

    update = json.loads((project / "metrics" / "index.json").read_text())["update"]
    assert {k: update[k] for k in ("mode", "added", "removed", "changed", "encoded")} == {
        "mode": "incremental",
        "added": 20,
        "removed": 10,
        "changed": 5,
        "encoded": 25,  # only the added and changed documents, not the 1,050
    }
    assert "only the corpus changed" in update["reason"]
    assert result["documents"] == SLICE + 20 - 10
    assert result["search"]["settled"].startswith(("re-checked", "re-tuned"))
    version = live(project)
    assert version.name != before.name and result["index_version"] == version.name

    # The new version describes the new corpus exactly: its manifest, texts and full-precision store.
    manifest = updates.CorpusManifest.read(version)
    assert dict(zip(manifest.ids, manifest.digests, strict=True)) == {
        row["_id"]: updates.text_digest(text_of(row)) for row in corpus
    }
    texts = {json.loads(line)["id"]: json.loads(line)["text"] for line in (version / TEXTS_FILE).open()}
    assert set(texts) == {row["_id"] for row in corpus} and all(texts[i].endswith("release") for i in changed)
    assert not before.exists()
    store, old_store = EmbeddingStore(version / STORE_FOLDER), EmbeddingStore(kept / STORE_FOLDER)
    old_slots = {doc_id: slot for slot, doc_id in enumerate(updates.CorpusManifest.read(kept).ids)}
    model = models.ColBERT(model_name_or_path=str(project / "models" / "colbert"), device="cpu")
    for slot, doc_id in enumerate(manifest.ids):
        rows_now = np.asarray(store.tokens[store.offsets[slot] : store.offsets[slot + 1]], dtype=np.float32)
        if doc_id in changed or doc_id in {row["_id"] for row in added}:
            source = next(row for row in corpus if row["_id"] == doc_id)
            expected = models.as_numpy(model.encode([text_of(source)], is_query=False))[0]
            assert np.allclose(rows_now, expected, atol=2e-2), doc_id  # the new text's embeddings
        elif slot % 50 == 0:  # survivors: carried over from the previous version unchanged
            old = old_slots[doc_id]
            previous = old_store.tokens[old_store.offsets[old] : old_store.offsets[old + 1]]
            assert np.array_equal(rows_now, np.asarray(previous, dtype=np.float32)), doc_id

    # Search, as the served model opens the index: an added document is found by its own text, a removed one
    # is never returned.
    index = indexes.PLAID(index_folder=project / "indexes", index_name="scifact", device="cpu")
    queries = model.encode([text_of(row) for row in added], is_query=True)
    hits = index.search(queries, k=10)
    found = [row["_id"] in [hit["id"] for hit in top[:3]] for row, top in zip(added, hits, strict=True)]
    assert sum(found) >= 18, found
    removed_texts = [text_of(row) for row in base[100:110]]
    returned = {
        hit["id"] for top in index.search(model.encode(removed_texts, is_query=True), k=10) for hit in top
    }
    assert returned and not returned & set(removed)


def test_an_unchanged_corpus_keeps_the_version(small, tmp_path):
    project = copy_of(small, tmp_path)
    before = live(project).name
    result = index_stage.run(params(), project)
    assert result["update"]["mode"] == "incremental" and result["update"]["encoded"] == 0
    assert "unchanged" in result["update"]["reason"]
    assert live(project).name == before == result["index_version"]


def test_a_change_beyond_the_churn_threshold_rebuilds_and_says_why(small, rows, tmp_path):
    project = copy_of(small, tmp_path)
    write_corpus(project, rows[15:SMALL])  # 15 of 60 removed: churn 0.25 > 0.2
    result = index_stage.run(params(), project)
    update = result["update"]
    assert update["mode"] == "rebuild" and update["encoded"] == SMALL - 15
    assert update["removed"] == 15 and update["churn"] == round(15 / SMALL, 4)
    assert "beyond index.update_max_churn 0.200" in update["reason"]
    assert json.loads((project / "metrics" / "index.json").read_text())["update"] == update
    # the same change within a higher threshold is an update
    project = copy_of(small, tmp_path / "again")
    write_corpus(project, rows[15:SMALL])
    assert index_stage.run(params(update_max_churn=0.3), project)["update"]["mode"] == "incremental"


def test_a_new_model_or_index_update_rebuild_rebuilds(small, rows, tmp_path):
    project = copy_of(small, tmp_path)
    write_corpus(project, rows[: SMALL + 2])  # a small change, which would otherwise be an update
    shutil.rmtree(project / "models" / "colbert")
    torch.manual_seed(1)  # another projection: another model, whose embeddings the old ones do not match
    models.ColBERT(device="cpu").save_pretrained(str(project / "models" / "colbert"))
    result = index_stage.run(params(), project)
    assert result["update"]["mode"] == "rebuild" and result["update"]["encoded"] == SMALL + 2
    assert result["update"]["reason"].startswith("the encoder changed (model_md5 ")

    project = copy_of(small, tmp_path / "forced")
    write_corpus(project, rows[: SMALL + 2])
    result = index_stage.run(params(update="rebuild"), project)
    assert result["update"]["mode"] == "rebuild" and result["update"]["reason"] == "index.update is 'rebuild'"

    project = copy_of(small, tmp_path / "settings")
    result = index_stage.run(params(nbits=2), project)
    assert result["update"]["mode"] == "rebuild" and result["update"]["reason"].startswith(
        "the index settings changed (nbits 4 -> 2)"
    )
