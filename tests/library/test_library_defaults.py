"""What a library user gets at the defaults: ``ColBERT`` encodes in ``auto`` precision, ``PLAID`` keeps a
float16 store and searches it exactly (a small corpus) or re-scores its candidates exactly; PyLate's behaviour
is one argument away on each."""

from __future__ import annotations

import gzip
import json

import numpy as np
import pytest
import torch

from pipeline import indexes, models
from pipeline.indexes.embedding_store import STORE_FOLDER, open_store
from pipeline.indexes.indexing import exact_search, recall_at_k
from pipeline.indexes.search_settings import SearchSettings
from pipeline.models import precision
from tests.paths import require_shared_data

TEXTS = ["Otters eat fish in cold rivers.", "A heron waits in shallow water for a long time, very still."]


def test_auto_encodes_in_bf16_only_where_the_cpu_has_it(colbert_model, monkeypatch):
    assert colbert_model.encode_precision == "auto"
    colbert_model.encode_precision = "fp32"
    try:
        reference = colbert_model.encode(TEXTS, is_query=False)
    finally:
        colbert_model.encode_precision = "auto"
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: False)
    for ours, fp32 in zip(colbert_model.encode(TEXTS, is_query=False), reference, strict=True):
        np.testing.assert_array_equal(ours, fp32)  # no native bf16: exactly float32
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: True)
    bf16 = colbert_model.encode(TEXTS, is_query=False)
    assert not torch.is_autocast_enabled("cpu")  # nothing leaks out of encode
    for ours, fp32 in zip(bf16, reference, strict=True):
        assert ours.dtype == np.float32
        assert 0 < float(np.abs(ours - fp32).max()) < 0.02  # bfloat16 products: near, not equal
        np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, rtol=1e-5)  # normalised in float32


def test_an_unknown_encode_precision_is_refused_before_loading():
    with pytest.raises(ValueError, match=r"encode_precision: 'fp16' is not one of auto, fp32, bf16"):
        models.ColBERT(model_name_or_path="/no/such/model", encode_precision="fp16")


def _documents(n: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    documents = []
    for _ in range(n):
        array = rng.standard_normal((int(rng.integers(6, 16)), 16)).astype(np.float32)
        documents.append(array / np.linalg.norm(array, axis=1, keepdims=True))
    return documents


def _exact(query: np.ndarray, document: np.ndarray) -> float:
    return float((query @ document.T).max(axis=1).sum())


def test_the_store_follows_every_write_and_searches_re_score_exactly(tmp_path):
    documents = _documents(90)
    ids = [f"d{i}" for i in range(90)]
    index = indexes.PLAID(index_folder=tmp_path, index_name="lib", device="cpu", show_progress=False)
    index.add_documents(ids[:40], documents[:40])
    with index.transaction():  # two additions in one version: the store is appended to, not copied
        index.add_documents(ids[40:70], documents[40:70])
        index.add_documents(ids[70:], documents[70:])
    index.remove_documents([f"d{i}" for i in range(0, 90, 9)])
    version = index.stats()["version"]
    store = open_store(index.path, version)
    assert store is not None and store.index_version == version
    kept = [i for i in range(90) if i % 9]
    assert store.num_documents == len(kept) == index.num_documents
    for slot, i in enumerate(kept):  # row for row, the kept documents in slot order (float16)
        first, last = store.offsets[slot], store.offsets[slot + 1]
        np.testing.assert_allclose(store.tokens[first:last], documents[i], atol=1e-3)
    assert index.search_settings == SearchSettings(mode="exact")  # a small store: every document scored
    candidates = indexes.PLAID(index_folder=tmp_path, index_name="lib", device="cpu", exact_search_tokens=0)
    assert candidates.search_settings == SearchSettings(n_ivf_probe=4, n_full_scores=1024, rerank=256)
    queries = [documents[i][:4] for i in (1, 10, 55)]
    for searched in (index, candidates):
        for query, row in zip(queries, searched.search(queries, k=5), strict=True):
            assert all(int(h["id"][1:]) % 9 for h in row)  # removed documents never come back
            exact = [_exact(query, documents[int(h["id"][1:])]) for h in row]
            np.testing.assert_allclose([h["score"] for h in row], exact, atol=2e-2)  # the float16 MaxSim
    index.remove_documents(index.documents_ids)
    assert index.num_documents == 0 and index.search(queries, k=3) == [[], [], []]


def test_the_defaults_search_exactly_up_to_the_token_limit_then_re_score_candidates(tmp_path):
    documents = _documents(40, seed=2)
    ids = [f"d{i}" for i in range(40)]
    tokens = sum(len(d) for d in documents[:20])
    index = indexes.PLAID(
        index_folder=tmp_path,
        index_name="grow",
        device="cpu",
        exact_search_tokens=tokens,
        show_progress=False,
    )
    index.add_documents(ids[:20], documents[:20])
    assert index.search_settings == SearchSettings(mode="exact")
    queries = [documents[5][:3]]
    ranked = [h["id"] for h in index.search(queries, k=20)[0]]
    assert set(ranked) == set(ids[:20])  # exact search ranks every document
    best = max(ids[:20], key=lambda i: _exact(queries[0], documents[int(i[1:])]))
    assert ranked[0] == best
    index.add_documents(ids[20:], documents[20:])  # one token past the limit: PLAID's candidates again
    assert index.search_settings == SearchSettings(n_ivf_probe=4, n_full_scores=1024, rerank=256)
    # Search settings given explicitly are what runs, exact or not.
    given = indexes.PLAID(index_folder=tmp_path, index_name="grow", device="cpu", n_ivf_probe=2)
    assert given.search_settings == SearchSettings(n_ivf_probe=2, n_full_scores=1024, rerank=256)
    with pytest.raises(ValueError, match="exact_search_tokens must be a non-negative integer"):
        indexes.PLAID(index_folder=tmp_path, index_name="bad", exact_search_tokens=-1)


def test_rerank_0_is_pylates_plain_plaid_with_no_store(tmp_path):
    documents = _documents(60, seed=1)
    ids = [f"d{i}" for i in range(60)]
    plain = indexes.PLAID(
        index_folder=tmp_path, index_name="plain", device="cpu", rerank=0, show_progress=False
    )
    plain.add_documents(ids, documents)
    assert not (plain.path / plain.stats()["version"] / STORE_FOLDER).exists()
    assert plain.search_settings is None and (plain.n_ivf_probe, plain.n_full_scores) == (8, 8192)
    queries = [documents[i][:4] for i in (3, 30)]
    compressed = [h["score"] for row in plain.search(queries, k=5) for h in row]
    exact = [
        _exact(q, documents[int(h["id"][1:])])
        for q, row in zip(queries, plain.search(queries, k=5), strict=True)
        for h in row
    ]
    assert not np.allclose(compressed, exact, atol=1e-3)  # PLAID's own 4-bit scores, as PyLate returns
    # Opened at the defaults, an index without a store is searched as plain PLAID, at PyLate's settings.
    reopened = indexes.PLAID(index_folder=tmp_path, index_name="plain", device="cpu")
    assert reopened.search_settings is None and (reopened.n_ivf_probe, reopened.n_full_scores) == (8, 8192)
    with pytest.raises(ValueError, match="rerank must be a non-negative integer"):
        indexes.PLAID(index_folder=tmp_path, index_name="bad", rerank=-1)


@pytest.fixture(scope="module")
def scifact_slice(colbert_model) -> tuple[list[str], list[np.ndarray], list[np.ndarray]]:
    """SciFact's first 300 documents and 30 queries, encoded at the defaults (CI must have the data)."""
    folder = require_shared_data("scifact")
    ids, texts = [], []
    with gzip.open(folder / "corpus.jsonl.gz", "rt", encoding="utf-8") as handle:
        for line in handle:
            row = json.loads(line)
            ids.append(str(row["_id"]))
            texts.append(f"{row['title']} {row['text']}".strip())
            if len(ids) == 300:
                break
    with open(folder / "queries.jsonl", encoding="utf-8") as handle:
        queries = [json.loads(line)["text"] for _, line in zip(range(30), handle, strict=False)]
    documents = colbert_model.encode(texts, is_query=False)
    return ids, documents, colbert_model.encode(queries, is_query=True)


def test_the_defaults_reach_recall_095_on_real_text(scifact_slice, tmp_path):
    # At 300 documents the defaults search exactly, and the candidate pass (what runs above the token
    # limit) holds nearly every document; the same-run benchmark measures both on SciFact
    # (bench/records/library_defaults*.json).
    ids, documents, queries = scifact_slice
    reference = exact_search(queries, documents, ids, k=10)
    default = indexes.PLAID(index_folder=tmp_path, index_name="default", device="cpu", show_progress=False)
    default.add_documents(ids, documents)
    candidates = indexes.PLAID(
        index_folder=tmp_path, index_name="default", device="cpu", exact_search_tokens=0
    )
    assert (default.search_settings.mode, candidates.search_settings.mode) == ("exact", "plaid")
    for index in (default, candidates):
        results = index.search(queries, k=10)
        assert recall_at_k(results, reference, k=10) >= 0.95
        for row, expected in zip(results, reference, strict=True):  # the top hit's score is exact MaxSim's
            assert row[0]["score"] == pytest.approx(expected[0]["score"], abs=2e-2)
