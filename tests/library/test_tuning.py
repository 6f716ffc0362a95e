"""Recall-targeted search: the full-precision store, tuning, and PLAID searching with the stored settings."""

from __future__ import annotations

import doctest
import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch

from pipeline import indexes, retrieve
from pipeline.indexes import embedding_store, tuning
from pipeline.indexes.embedding_store import STORE_FOLDER
from pipeline.indexes.indexing import exact_search
from pipeline.indexes.tuning import SEARCH_SETTINGS_FILE

DIM = 32


def clustered(n_docs: int, n_queries: int, seed: int = 0) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Documents whose tokens cluster around a few topics (as real text does), and queries near documents.

    Values are rounded to float16 so the store's float16 copy is exact and tests compare like with like.
    """
    rng = np.random.default_rng(seed)
    topics = rng.standard_normal((12, DIM))

    def unit(array: np.ndarray) -> np.ndarray:
        array = array / np.linalg.norm(array, axis=1, keepdims=True)
        return array.astype(np.float16).astype(np.float32)

    documents = []
    for _ in range(n_docs):
        chosen = topics[rng.integers(0, len(topics), size=int(rng.integers(6, 20)))]
        documents.append(unit(chosen + 0.6 * rng.standard_normal(chosen.shape)))
    queries = []
    for _ in range(n_queries):
        source = documents[int(rng.integers(0, n_docs))]
        picked = source[rng.integers(0, len(source), size=6)]
        queries.append(unit(picked + 0.3 * rng.standard_normal(picked.shape)))
    return documents, queries


def build(
    folder: Path, name: str, documents: list[np.ndarray]
) -> tuple[indexes.PLAID, tuning.EmbeddingStore]:
    """A PLAID index and its embedding store, written as the index stage writes them (``rerank=0``: the
    stage writes the store itself)."""
    index = indexes.PLAID(index_folder=folder, index_name=name, override=True, device="cpu", rerank=0)
    with tuning.EmbeddingStoreWriter(index.path / STORE_FOLDER, scratch=folder) as writer:
        writer.add(documents)
        index.add_documents([f"d{i}" for i in range(len(documents))], documents)
        store = writer.commit(index_version=index.stats()["version"])
    return index, store


def reference_ids(queries: list[np.ndarray], documents: list[np.ndarray], k: int = 10) -> list[list[str]]:
    ids = [f"d{i}" for i in range(len(documents))]
    return [[hit["id"] for hit in row] for row in exact_search(queries, documents, ids, k=k)]


def recall_of(results: list[list[dict]], reference: list[list[str]], k: int = 10) -> float:
    return float(
        np.mean(
            [
                len({h["id"] for h in row[:k]} & set(ref[:k])) / len(ref[:k])
                for row, ref in zip(results, reference, strict=True)
            ]
        )
    )


@pytest.fixture(scope="module")
def small(module_tmp_path):
    """A 300-document index with its store, probe queries and held-out queries (built once)."""
    documents, queries = clustered(300, 60)
    folder = module_tmp_path
    index, store = build(folder, "small", documents)
    return {"folder": folder, "index": index, "store": store, "documents": documents, "queries": queries}


# ---------------------------------------------------------------------------------------------- the store
def test_module_doctest():
    assert doctest.testmod(tuning).failed == 0


def test_store_exact_search_matches_the_reference_implementation(small):
    queries, documents = small["queries"], small["documents"]
    hits = small["store"].exact_topk(queries, k=10, batch_size=7)  # batches that do not divide 60
    reference = exact_search(queries, documents, list(range(len(documents))), k=10)
    for found, expected in zip(hits, reference, strict=True):
        assert [slot for slot, _ in found] == [hit["id"] for hit in expected]
        np.testing.assert_allclose(
            [s for _, s in found], [h["score"] for h in expected], rtol=1e-4, atol=1e-4
        )


def test_store_scores_in_chunks_when_the_budget_is_small(small, monkeypatch):
    queries = small["queries"][:5]
    full = small["store"].exact_topk(queries, k=10)
    monkeypatch.setattr(embedding_store, "SCORE_BUDGET", 300)  # a few documents per chunk
    chunked_exact = small["store"].exact_topk(queries, k=10)
    assert [[s for s, _ in row] for row in chunked_exact] == [[s for s, _ in row] for row in full]
    np.testing.assert_allclose(
        [[v for _, v in row] for row in chunked_exact], [[v for _, v in row] for row in full], rtol=1e-5
    )
    chunked = small["store"].rescore(queries, [list(range(300))] * 5, k=10)
    assert [[s for s, _ in row] for row in chunked] == [[s for s, _ in row] for row in full]


def test_segment_max_is_numpys_reduceat():
    rng = np.random.default_rng(1)
    similarities = rng.standard_normal((4, 30)).astype(np.float32)
    firsts = np.array([0, 1, 2, 9, 10, 29])  # segments of 1, 1, 7, 1, 19 and 1 columns
    np.testing.assert_array_equal(
        embedding_store.segment_max(torch.from_numpy(similarities), firsts).numpy(),
        np.maximum.reduceat(similarities, firsts, axis=1),
    )


def test_the_accelerator_scoring_path_finds_what_the_cpu_one_finds(small, monkeypatch):
    """The path a GPU store takes (torch's segment max, scores moved back per chunk), run on the CPU."""
    queries, store = small["queries"][:8], small["store"]
    expected_exact = store.exact_topk(queries, k=10)
    expected_rescored = store.rescore(queries, [list(range(0, 300, 3))] * 8, k=10)
    monkeypatch.setattr(embedding_store, "_numpy_segments", lambda device: False)
    monkeypatch.setattr(embedding_store, "SCORE_BUDGET", 3000)  # several chunks
    for found, expected in (
        (store.exact_topk(queries, k=10), expected_exact),
        (store.rescore(queries, [list(range(0, 300, 3))] * 8, k=10), expected_rescored),
    ):
        assert [[slot for slot, _ in row] for row in found] == [[slot for slot, _ in row] for row in expected]
        np.testing.assert_allclose(
            [[v for _, v in row] for row in found], [[v for _, v in row] for row in expected], rtol=1e-5
        )


def test_a_store_is_opened_for_the_device_it_is_given(tmp_path):
    documents, _ = clustered(20, 1)
    with tuning.EmbeddingStoreWriter(tmp_path / STORE_FOLDER) as writer:
        writer.add(documents)
        # "meta" stands in for an accelerator: opening allocates nothing there
        assert writer.commit(index_version="v1", device="meta").device == torch.device("meta")
    assert embedding_store.open_store(tmp_path, "v1").device == torch.device("cpu")
    assert embedding_store.open_store(tmp_path, "v1", device="meta").device == torch.device("meta")


def test_rescore_orders_candidates_by_exact_maxsim(small):
    query, documents = small["queries"][0], small["documents"]
    candidates = [5, 17, 3, 250, 17]  # a duplicate is scored once
    hits = small["store"].rescore([query], [candidates], k=10)[0]
    expected = sorted(
        ((slot, float((query @ documents[slot].T).max(axis=1).sum())) for slot in {5, 17, 3, 250}),
        key=lambda pair: -pair[1],
    )
    assert [slot for slot, _ in hits] == [slot for slot, _ in expected]
    np.testing.assert_allclose([s for _, s in hits], [s for _, s in expected], rtol=1e-4)


def test_store_search_respects_allowed_slots(small):
    queries = small["queries"][:3]
    allowed = [None, np.array([1, 2, 3]), np.array([], dtype=np.int64)]
    hits = small["store"].search(queries, 10, allowed)
    assert len(hits[0]) == 10
    assert {slot for slot, _ in hits[1]} == {1, 2, 3}
    assert hits[2] == []


def test_writer_discards_on_error_and_keeps_the_previous_store(tmp_path):
    documents, _ = clustered(5, 1)
    with tuning.EmbeddingStoreWriter(tmp_path / "embeddings") as writer:
        writer.add(documents)
        writer.commit(index_version="v1")
    with (
        pytest.raises(ValueError, match=r"embeddings\[1\] has dimension 8, expected 32"),
        tuning.EmbeddingStoreWriter(tmp_path / "embeddings") as writer,
    ):
        writer.add([documents[0], np.ones((3, 8), np.float32)])
    store = tuning.EmbeddingStore(tmp_path / "embeddings")
    assert (store.num_documents, store.index_version) == (5, "v1")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["embeddings"]  # no temporary folder left


def test_a_truncated_store_is_refused_with_its_path(tmp_path):
    documents, _ = clustered(4, 1)
    with tuning.EmbeddingStoreWriter(tmp_path / "embeddings") as writer:
        writer.add(documents)
        writer.commit(index_version="v1")
    tokens = tmp_path / "embeddings" / "tokens.f16"
    tokens.write_bytes(tokens.read_bytes()[:-2])
    with pytest.raises(ValueError, match=r"tokens\.f16: .* bytes, expected"):
        tuning.EmbeddingStore(tmp_path / "embeddings")


# ---------------------------------------------------------------------------------------------- tuning
def test_tuned_plaid_settings_reach_the_target_on_held_out_queries(small):
    index, store, documents, queries = small["index"], small["store"], small["documents"], small["queries"]
    probe, held_out = queries[:30], queries[30:]
    result = tuning.tune(store, probe, index.candidate_slots, target=0.95, consider_exact=False)
    assert result.reached and result.settings.mode == "plaid"
    assert result.recall >= 0.95
    # The trials back the choice: the chosen settings' recall was measured, and cheaper PLAID-only settings
    # (no re-scoring) were tried too.
    assert any(t.settings.rerank == 0 for t in result.trials)
    tuning.write_settings(index.path, index.stats()["version"], result)
    reopened = indexes.PLAID(index_folder=small["folder"], index_name="small", device="cpu")
    assert reopened.search_settings == result.settings
    hits = retrieve.ColBERT(reopened).retrieve(held_out, k=10)
    assert recall_of(hits, reference_ids(held_out, documents)) >= 0.9  # held-out queries: close to target


def test_the_target_is_held_against_a_lower_bound_of_the_probe_recall(small):
    # A stand-in PLAID: probe 1 loses 3 of the top 10 for 2 queries in 20 (mean recall 0.97, but its
    # lower bound 0.94: on other queries such a setting often falls short), probe 2 finds them all.
    store, queries = small["store"], small["queries"][:20]
    reference = store.exact_topk(queries, 10)

    def candidates(batch, k, probe, n_full, allowed):
        rows = [list(reference[next(i for i, q in enumerate(queries) if q is query)]) for query in batch]
        if probe == 1:
            for position, query in enumerate(batch):
                if any(query is q for q in queries[:2]):
                    rows[position] = rows[position][:7] + [(-1 - j, 0.0) for j in range(3)]
        return rows

    seconds = iter(range(10_000))
    grid = {"probes": (1, 2), "full_scores": (64,), "reranks": (0,), "batch_sizes": (), "finalists": 1}
    arguments = {"target": 0.95, "consider_exact": False, "timer": lambda: next(seconds), **grid}
    by_mean = tuning.tune(store, queries, candidates, standard_errors=0, **arguments)
    assert by_mean.settings.n_ivf_probe == 1 and by_mean.recall == pytest.approx(0.97)
    bounded = tuning.tune(store, queries, candidates, **arguments)
    assert bounded.settings.n_ivf_probe == 2 and bounded.recall == 1.0 and bounded.reached
    first = next(t for t in bounded.trials if t.settings.n_ivf_probe == 1)
    assert first.recall == pytest.approx(0.97) and 0.93 < first.recall_bound < 0.95
    assert bounded.summary()["recall@10_bound"] == 1.0


def test_exact_search_is_chosen_on_a_tiny_corpus(tmp_path):
    # 20 documents: one matrix product over every token beats any IVF search by orders of magnitude.
    documents, queries = clustered(20, 20, seed=1)
    index, store = build(tmp_path, "tiny", documents)
    result = tuning.tune(store, queries, index.candidate_slots, target=0.95, probes=(1, 4), full_scores=(64,))
    assert result.settings.mode == "exact"
    assert result.recall == 1.0 and result.reached
    assert result.summary()["settings"]["mode"] == "exact"


def test_without_exact_search_an_unreachable_target_is_reported_not_hidden(small):
    result = tuning.tune(
        small["store"],
        small["queries"][:10],
        small["index"].candidate_slots,
        target=1.0,
        probes=(1,),
        full_scores=(64,),
        reranks=(0,),
        batch_sizes=(),
        consider_exact=False,
    )
    assert not result.reached
    assert result.settings == tuning.SearchSettings(n_ivf_probe=1, n_full_scores=64, rerank=0)


def test_tune_rejects_bad_arguments(small):
    with pytest.raises(ValueError, match="target must be in"):
        tuning.tune(small["store"], small["queries"], None, target=1.5)
    with pytest.raises(ValueError, match="at least one probe query"):
        tuning.tune(small["store"], [], None)
    with pytest.raises(ValueError, match="rerank must be"):
        tuning.SearchSettings(rerank=-1)


# ---------------------------------------------------------------------------------------------- stored
def test_stored_settings_drive_search_and_explicit_settings_override_them(tmp_path):
    documents, queries = clustered(120, 8, seed=2)
    index, _ = build(tmp_path, "stored", documents)
    version = index.stats()["version"]
    result = tuning.TuningResult(
        settings=tuning.SearchSettings(n_ivf_probe=4, n_full_scores=64, rerank=32, batch_size=3),
        recall=1.0,
        qps=1.0,
        target=0.95,
        reached=True,
        exact_qps=1.0,
        queries=8,
        k=10,
        trials=[],
    )
    path = tuning.write_settings(index.path, version, result)
    assert path == index.path / SEARCH_SETTINGS_FILE
    assert json.loads(path.read_text())["index_version"] == version
    assert "NaN" not in path.read_text()  # no bound was computed for this result: null, not invalid JSON

    tuned = indexes.PLAID(index_folder=tmp_path, index_name="stored", device="cpu")
    assert (tuned.n_ivf_probe, tuned.n_full_scores, tuned.search_batch_queries) == (4, 64, 3)
    hits = tuned(queries, k=5)
    for query, row in zip(queries, hits, strict=True):  # re-scored: the scores are exact MaxSim
        exact = [float((query @ documents[int(h["id"][1:])].T).max(axis=1).sum()) for h in row]
        np.testing.assert_allclose([h["score"] for h in row], exact, rtol=1e-4)

    # Explicit settings drop the tuned ones; at the library's default they still re-score from the store.
    rescored = indexes.PLAID(index_folder=tmp_path, index_name="stored", device="cpu", n_full_scores=64)
    assert rescored.search_settings == tuning.SearchSettings(n_ivf_probe=4, n_full_scores=64, rerank=256)
    plain = indexes.PLAID(
        index_folder=tmp_path, index_name="stored", device="cpu", n_full_scores=64, rerank=0
    )
    assert plain.search_settings is None and plain.n_ivf_probe == 8
    compressed = [h["score"] for row in plain(queries, k=5) for h in row]
    exact_scores = [h["score"] for row in hits for h in row]
    assert not np.allclose(compressed, exact_scores, rtol=1e-4)  # PLAID's own (compressed) scores

    exact_mode = tuning.TuningResult(**{**result.__dict__, "settings": tuning.SearchSettings(mode="exact")})
    tuning.write_settings(index.path, version, exact_mode)
    reopened = indexes.PLAID(index_folder=tmp_path, index_name="stored", device="cpu")
    assert [[h["id"] for h in row] for row in reopened(queries, k=10)] == reference_ids(queries, documents)
    assert reopened(queries[:1], k=3, subset=["d7", "d9"])[0][0]["id"] in {"d7", "d9"}
    # A write makes a new version: this same object drops the tuned settings and searches with the defaults.
    tuned.add_documents(["extra"], [documents[0]])
    assert tuned.search_settings is None and (tuned.n_ivf_probe, tuned.n_full_scores) == (8, 8192)


def test_settings_of_another_index_version_are_ignored(tmp_path, caplog):
    documents, queries = clustered(60, 4, seed=3)
    index, store = build(tmp_path, "stale", documents)
    result = tuning.tune(store, queries, None, target=0.95)
    tuning.write_settings(index.path, index.stats()["version"], result)
    index.add_documents(["new"], [documents[0]])  # a new version: the tuning no longer describes it
    with caplog.at_level(logging.WARNING, logger="pipeline.indexes.search_settings"):
        reopened = indexes.PLAID(index_folder=tmp_path, index_name="stale", device="cpu")
    assert reopened.search_settings is None
    assert "searching with defaults" in caplog.text
    assert len(reopened(queries, k=10)[0]) == 10


def test_unreadable_settings_fall_back_with_a_warning(tmp_path, caplog):
    (tmp_path / SEARCH_SETTINGS_FILE).write_text("{not json")
    with caplog.at_level(logging.WARNING, logger="pipeline.indexes.search_settings"):
        assert tuning.read_settings(tmp_path, "v000001-00000000") is None
    assert SEARCH_SETTINGS_FILE in caplog.text
    (tmp_path / SEARCH_SETTINGS_FILE).write_text(json.dumps({"format": 1, "settings": {"mode": "fast"}}))
    assert tuning.read_settings(tmp_path, None) is None


def test_override_sweeps_the_stored_settings_and_store(tmp_path):
    documents, queries = clustered(40, 4, seed=4)
    index, store = build(tmp_path, "swept", documents)
    tuning.write_settings(index.path, index.stats()["version"], tuning.tune(store, queries, None))
    rebuilt = indexes.PLAID(index_folder=tmp_path, index_name="swept", override=True, device="cpu")
    rebuilt.add_documents(["x"], [documents[0]])
    assert not (rebuilt.path / SEARCH_SETTINGS_FILE).exists()
    assert not (rebuilt.path / STORE_FOLDER).exists()
