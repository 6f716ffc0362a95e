"""The ScaNN index (PyLate 1.6's ``indexes.ScaNN``) and ``retrieve.XTR`` on it.

Checked against brute force on small random sets: ScaNN's token neighbours against exact dot products, the
index's search against exact MaxSim, XTR against :func:`pipeline.rank.score_xtr` over exact neighbours.
"""

from __future__ import annotations

import copy
import gc
import shutil

import numpy as np
import pytest
import torch
from sentence_transformers.base.trainer import BaseTrainer

from pipeline import indexes, losses, rank, retrieve, scores, utils
from pipeline.indexes import IndexFormatError, UnknownIdWarning
from pipeline.indexes.indexing import exact_search, recall_at_k


def random_documents(n: int, dim: int = 32, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        array = rng.standard_normal((int(rng.integers(8, 24)), dim)).astype(np.float32)
        out.append(array / np.linalg.norm(array, axis=1, keepdims=True))
    return out


def noisy_queries(documents: list[np.ndarray], seed: int = 1) -> list[np.ndarray]:
    """Each query is the first tokens of a document plus noise: its source is the best match."""
    rng = np.random.default_rng(seed)
    return [d[:5] + 0.3 * rng.standard_normal(d[:5].shape).astype(np.float32) for d in documents]


DOCUMENTS = random_documents(60)
IDS = [f"d{i}" for i in range(60)]
QUERIES = noisy_queries(DOCUMENTS[:15])
FLAT = np.concatenate(DOCUMENTS)
OWNER = np.repeat(np.arange(len(DOCUMENTS)), [len(d) for d in DOCUMENTS])


def exact_token_neighbours(query: np.ndarray, k: int) -> tuple[list[list[str]], list[list[float]]]:
    similarities = query @ FLAT.T
    top = np.argsort(-similarities, axis=1)[:, :k]
    ids = [[IDS[OWNER[t]] for t in row] for row in top]
    return ids, np.take_along_axis(similarities, top, 1).tolist()


@pytest.fixture
def index(tmp_path) -> indexes.ScaNN:
    built = indexes.ScaNN(index_folder=str(tmp_path), index_name="s")
    return built.add_documents(documents_ids=IDS, documents_embeddings=DOCUMENTS)


def test_token_neighbours_are_exact_when_every_token_is_its_own_leaf(index) -> None:
    # PyLate's default tree has min(2000, tokens) leaves: on a small index each token is a leaf, so the
    # quantisation residuals are zero and ScaNN's answer is the exact one, ids and dot products.
    assert index.build_settings["num_leaves"] == len(FLAT)
    hits = index(QUERIES, k=10)
    assert len(hits["documents_ids"]) == len(QUERIES)
    for query, ids, distances in zip(QUERIES, hits["documents_ids"], hits["distances"], strict=True):
        expected_ids, expected_scores = exact_token_neighbours(query, 10)
        assert ids == expected_ids
        np.testing.assert_allclose(distances, expected_scores, rtol=1e-4, atol=1e-5)


def test_search_and_colbert_retriever_agree_with_exact_maxsim(tmp_path) -> None:
    # A coarse tree (16 leaves, 4 searched): token neighbours are approximate, documents are rescored exactly.
    index = indexes.ScaNN(index_folder=str(tmp_path), index_name="s", num_leaves=16, num_leaves_to_search=4)
    index = index.add_documents(documents_ids=IDS, documents_embeddings=DOCUMENTS)
    exact = exact_search(QUERIES, DOCUMENTS, IDS, k=10)
    index.k_token = len(FLAT)  # every token a candidate: the search is exact MaxSim
    everything = index.search(QUERIES, k=10)
    assert [[h["id"] for h in row] for row in everything] == [[h["id"] for h in row] for row in exact]
    np.testing.assert_allclose(
        [[h["score"] for h in row] for row in everything],
        [[h["score"] for h in row] for row in exact],
        rtol=1e-5,
    )
    index.k_token = 32
    assert recall_at_k(index.search(QUERIES, k=10), exact, k=10) >= 0.9  # 0.98 on this set
    retrieved = retrieve.ColBERT(index=index).retrieve(QUERIES, k=10, k_token=32)
    assert retrieved == index.search(QUERIES, k=10)
    # The retriever's k_token is the index's token depth for that call only.
    deep = retrieve.ColBERT(index=index).retrieve(QUERIES, k=10, k_token=len(FLAT))
    assert [[h["id"] for h in row] for row in deep] == [[h["id"] for h in row] for row in exact]
    assert index.k_token == 32
    # A small subset is scored exactly: exact MaxSim over just those documents.
    allowed = ["d7", "d1", "d0"]
    within = exact_search(QUERIES[:2], [DOCUMENTS[7], DOCUMENTS[1], DOCUMENTS[0]], allowed, k=5)
    assert [[h["id"] for h in row] for row in index.search(QUERIES[:2], k=5, subset=allowed)] == [
        [h["id"] for h in row] for row in within
    ]


def test_persisted_index_reopens_and_moves_with_the_same_answers(index, tmp_path) -> None:
    before = index(QUERIES, k=5)
    version = index.path / index.stats()["version"]
    # No pickle anywhere; the searcher's asset paths are relative, so the folder can be copied elsewhere.
    assert not list(index.path.rglob("*.pkl"))
    assert '"/' not in (version / "scann" / "scann_assets.pbtxt").read_text()
    reopened = indexes.ScaNN(index_folder=str(tmp_path), index_name="s")
    assert reopened(QUERIES, k=5) == before
    assert set(reopened.doc_id_to_embedding_range) == set(IDS) and reopened._documents_added
    moved = tmp_path / "elsewhere"
    shutil.copytree(tmp_path / "s", moved / "s")
    shutil.rmtree(tmp_path / "s")
    assert indexes.ScaNN(index_folder=str(moved), index_name="s")(QUERIES, k=5) == before
    stored = indexes.ScaNN(index_folder=str(moved), index_name="s").get_documents_embeddings([["d3", "d0"]])
    np.testing.assert_array_equal(stored[0][0], DOCUMENTS[3])


def test_float16_embeddings_stay_float16_on_disk(tmp_path) -> None:
    halves = [torch.from_numpy(d).half() for d in DOCUMENTS[:4]]
    index = indexes.ScaNN(index_folder=str(tmp_path), index_name="h").add_documents(IDS[:4], halves)
    reopened = indexes.ScaNN(index_folder=str(tmp_path), index_name="h")
    assert reopened.flattened_embeddings.dtype == np.float16
    np.testing.assert_array_equal(reopened.get_documents_embeddings([["d2"]])[0][0], halves[2].numpy())
    with pytest.raises(ValueError, match="stores float16"):
        index.add_documents(["x"], [DOCUMENTS[5]])


def test_removal_leaves_tombstones_and_an_unknown_id_only_warns(index, tmp_path) -> None:
    with pytest.warns(UnknownIdWarning, match="nope"):
        returned = index.remove_documents(["d0", "nope"])
    assert returned is index and "d0" not in index and index.num_documents == 59
    # The removed document's tokens are skipped and the next live ones take their places.
    hits = index(QUERIES[:1], k=100)
    ids, _ = exact_token_neighbours(QUERIES[0], len(FLAT))
    live = [[i for i in token if i != "d0"][:100] for token in ids]
    assert hits["documents_ids"][0] == live
    assert all(h["id"] != "d0" for h in index.search(QUERIES[0], k=60)[0])
    reopened = indexes.ScaNN(index_folder=str(tmp_path), index_name="s")
    assert "d0" not in reopened and reopened.num_documents == 59
    # Adding again rebuilds the searcher over the stored tokens (PyLate allows a single add only).
    reopened = reopened.add_documents("d0-again", DOCUMENTS[0])
    assert reopened.search(QUERIES[0], k=1)[0][0]["id"] == "d0-again"
    with reopened.transaction():
        reopened.remove_documents(["d1"])
        reopened.add_documents(["d1-again"], [DOCUMENTS[1]])
    assert indexes.ScaNN(index_folder=str(tmp_path), index_name="s").search(QUERIES[1], k=1)[0][0]["id"] == (
        "d1-again"
    )


def test_without_stored_embeddings_xtr_works_and_the_rest_says_why(tmp_path) -> None:
    index = indexes.ScaNN(index_folder=str(tmp_path), index_name="x", store_embeddings=False)
    with pytest.raises(NotImplementedError, match="store_embeddings=True"):
        index.get_documents_embeddings([["d1"]])
    index = index.add_documents(IDS, DOCUMENTS)
    assert not (index.path / index.stats()["version"] / "embeddings.npy").exists()
    assert [row[0]["id"] for row in retrieve.XTR(index=index).retrieve(QUERIES, k=3, k_token=40)] == IDS[:15]
    with pytest.raises(NotImplementedError, match="store_embeddings=False"):
        index.search(QUERIES[0])
    with pytest.raises(ValueError, match="store_embeddings=False"):
        index.add_documents(["more"], [DOCUMENTS[0]])
    assert index.num_documents == 60


def test_xtr_on_scann_is_score_xtr_over_the_exact_token_neighbours(index, tmp_path) -> None:
    results = retrieve.XTR(index=index).retrieve(QUERIES, k=5, k_token=20, batch_size=4)
    for query, got in zip(QUERIES, results, strict=True):
        ids, similarities = exact_token_neighbours(query, 20)
        expected = rank.score_xtr(ids, similarities, k=5)
        assert [r["id"] for r in got] == [r["id"] for r in expected]
        np.testing.assert_allclose([r["score"] for r in got], [r["score"] for r in expected], rtol=1e-4)
    one = retrieve.XTR(index=index).retrieve(torch.from_numpy(QUERIES[2]), k=2, k_token=20)
    assert len(one) == 1 and one[0][0]["id"] == "d2"  # a 2-D query is one query, as in PyLate
    with pytest.raises(NotImplementedError, match="Subset filtering is not implemented"):
        retrieve.XTR(index=index).retrieve(QUERIES[:1], subset=["d1"])
    with pytest.raises(ValueError, match="k_token must be a positive integer"):
        retrieve.XTR(index=index).retrieve(QUERIES[:1], k_token=0)
    with pytest.raises(TypeError, match="token-level index"):  # PLAID ranks end to end
        retrieve.XTR(index=indexes.PLAID(index_folder=str(tmp_path), index_name="p", device="cpu"))


def test_xtr_trained_then_retrieved_on_scann_end_to_end(colbert_model) -> None:
    """PyLate's XTR recipe: train with ``scores.XTRScores`` as the loss's score, then index the corpus with
    ScaNN and rank it with ``retrieve.XTR``, in memory (``index_folder=None``) as PyLate's docstring does."""
    model = copy.deepcopy(colbert_model)  # the session model is shared: train a copy
    rows = [
        {"query": "what does xtr retrieve", "positive": "xtr retrieves tokens", "negative": "bread recipes"},
        {"query": "late interaction models", "positive": "colbert scores tokens", "negative": "mild weather"},
    ]
    batch = utils.ColBERTCollator(tokenize_fn=model.tokenize)(rows)
    features, _ = BaseTrainer.collect_features(None, batch)  # type: ignore[arg-type]
    loss = losses.Contrastive(model=model, score_metric=scores.XTRScores(k=16), temperature=0.05)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    values = []
    for _ in range(2):
        value = loss(features, None)
        optimizer.zero_grad()
        value.backward()
        optimizer.step()
        values.append(float(value.detach()))
    assert values[-1] < values[0]
    corpus = [row[side] for row in rows for side in ("positive", "negative")]
    index = indexes.ScaNN(index_name="xtr", store_embeddings=False, override=True)
    index = index.add_documents(
        documents_ids=["p0", "n0", "p1", "n1"],
        documents_embeddings=model.encode(corpus, batch_size=4, is_query=False),
    )
    queries = model.encode([row["query"] for row in rows], batch_size=2, is_query=True)
    results = retrieve.XTR(index=index).retrieve(queries_embeddings=queries, k=2, device="cpu")
    assert [row[0]["id"] for row in results] == ["p0", "p1"]
    assert len(retrieve.XTR(index=index).retrieve(queries[0], k=2)) == 1
    path = index.path
    del index
    gc.collect()
    assert not path.exists()  # index_folder=None persisted nothing


def test_pylate_arguments_and_bad_input_name_what_is_wrong(tmp_path) -> None:
    assert (indexes.ScaNN(verbose=True).verbose_level, indexes.ScaNN(verbose="all").verbose) == ("init", True)
    assert indexes.ScaNN(verbose=False, verbose_level="all").verbose_level == "all"
    with pytest.raises(ValueError, match="Invalid verbosity level"):
        indexes.ScaNN(verbose="loud")
    with pytest.raises(ValueError, match="num_leaves must be a positive integer"):
        indexes.ScaNN(num_leaves=0)
    with pytest.raises(ValueError, match="index_name"):
        indexes.ScaNN(index_folder=str(tmp_path), index_name="../escape")
    index = indexes.ScaNN(index_folder=str(tmp_path), index_name="b")
    mixed = [torch.randn(3, 8), torch.randn(3, 8, dtype=torch.float16)]
    with pytest.raises(ValueError, match=r"documents_embeddings\[1\].*same dtype"):
        index.add_documents(["a", "b"], mixed)
    with pytest.raises(ValueError, match="Index is empty"):
        index(QUERIES[0])
    # Fewer tokens than ScaNN's quantiser needs (PyLate fails there): an exact brute-force searcher.
    index = index.add_documents(["tiny"], [DOCUMENTS[0][:3]])
    assert index.build_settings["mode"] == "brute_force"
    assert index(DOCUMENTS[0][:1], k=5)["documents_ids"] == [[["tiny"] * 3]]
    with pytest.raises(ValueError, match=r"documents_embeddings\[0\] has dimension 8"):
        index.add_documents(["wrong"], [np.ones((4, 8), np.float32)])
    with pytest.raises(ValueError, match=r"not found in index"):
        index.get_documents_embeddings([["tiny", "ghost"]])


def test_a_tampered_folder_is_refused_before_scann_reads_it(index, tmp_path) -> None:
    folder = index.path / index.stats()["version"] / "scann"
    (folder / "scann_docids.pkl").write_bytes(b"not loaded")  # ScaNN's own loader would unpickle it
    with pytest.raises(IndexFormatError, match="pickle"):
        indexes.ScaNN(index_folder=str(tmp_path), index_name="s")
    (folder / "scann_docids.pkl").unlink()
    assets = folder / "scann_assets.pbtxt"
    assets.write_text(assets.read_text().replace('"hashed_dataset.npy"', '"../../../outside.npy"'))
    with pytest.raises(IndexFormatError, match=r"outside\.npy"):
        indexes.ScaNN(index_folder=str(tmp_path), index_name="s")
    assets.write_text("assets { nonsense")
    with pytest.raises(IndexFormatError, match="not a ScaNN assets file"):
        indexes.ScaNN(index_folder=str(tmp_path), index_name="s")
