"""PyLate 1.6 behaviours that pipeline reproduces (issue 19), checked without a model where possible."""

from __future__ import annotations

import csv
import math
import re
import warnings

import numpy as np
import pytest
import torch
from datasets import Dataset

from pipeline import evaluation, indexes, rank, retrieve, scores, utils


def unit_documents(n: int, dim: int = 16, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        array = rng.standard_normal((int(rng.integers(4, 9)), dim)).astype(np.float32)
        out.append(array / np.linalg.norm(array, axis=1, keepdims=True))
    return out


@pytest.fixture
def voyager(tmp_path) -> indexes.Voyager:
    return indexes.Voyager(index_folder=tmp_path, index_name="v", show_progress=False, k_token=64)


# ---------------------------------------------------------------------------------------------- indexes
def test_add_and_remove_return_the_index_so_pylate_reassignment_works(voyager) -> None:
    documents = unit_documents(3)
    index = voyager.add_documents(documents_ids=["a", "b", "c"], documents_embeddings=documents)
    assert index is voyager
    index = index.remove_documents(["b"])
    assert index is voyager and index.documents_ids == ["a", "c"]


def test_one_text_embedding_is_one_item_everywhere(voyager) -> None:
    documents = unit_documents(3)
    voyager.add_documents(documents_ids=["a", "b"], documents_embeddings=documents[:2])
    # A single (tokens, dim) array, as model.encode("one text") returns it, is one document / one query.
    voyager.add_documents(documents_ids=["c"], documents_embeddings=torch.from_numpy(documents[2]))
    assert voyager.documents_ids == ["a", "b", "c"] and voyager.num_tokens == sum(len(d) for d in documents)
    ranked = voyager.search(documents[2], k=3)
    assert len(ranked) == 1 and ranked[0][0]["id"] == "c"
    assert retrieve.ColBERT(index=voyager).retrieve(documents[1], k=1) == [
        [voyager.search(documents[1], k=1)[0][0]]
    ]
    tokens = voyager(documents[0], k=2)
    assert len(tokens["documents_ids"]) == 1 and len(tokens["documents_ids"][0]) == len(documents[0])


def test_voyager_call_answers_token_neighbours_and_the_retriever_ranks_them(voyager) -> None:
    documents = unit_documents(6, seed=1)
    voyager.add_documents(documents_ids=[f"d{i}" for i in range(6)], documents_embeddings=documents)
    queries = [documents[4][:3], documents[1][:2]]
    answer = voyager(queries, k=5)
    assert set(answer) == {"documents_ids", "distances"}
    assert [len(q) for q in answer["documents_ids"]] == [3, 2]
    assert all(len(token) == 5 for q in answer["documents_ids"] for token in q)
    # A query token taken from d4 has d4's own token as its nearest neighbour, at distance ~0 (1 - dot).
    assert answer["documents_ids"][0][0][0] == "d4"
    assert answer["distances"][0][0][0] == pytest.approx(0.0, abs=1e-5)
    assert answer["distances"][0][0] == sorted(answer["distances"][0][0])
    ranked = retrieve.ColBERT(index=voyager).retrieve(queries, k=2)
    assert [row[0]["id"] for row in ranked] == ["d4", "d1"]
    # The retriever's scores are exact MaxSim of the stored embeddings.
    expected = scores.colbert_scores([queries[0]], [documents[4]])[0, 0].item()
    assert ranked[0][0]["score"] == pytest.approx(expected, rel=1e-5)
    stored = voyager.get_documents_embeddings([["d4", "d1"]])
    np.testing.assert_allclose(stored[0][0], documents[4], atol=1e-6)


def test_update_documents_replaces_embeddings_in_one_commit(voyager) -> None:
    documents = unit_documents(3, seed=7)
    voyager.add_documents(documents_ids=["a", "b"], documents_embeddings=documents[:2])
    assert voyager.update_documents(["b"], documents[2]) is voyager
    assert sorted(voyager.documents_ids) == ["a", "b"]
    assert voyager.search(documents[2], k=1)[0][0]["id"] == "b"
    np.testing.assert_allclose(voyager.get_documents_embeddings([["b"]])[0][0], documents[2], atol=1e-6)


def test_removing_an_unknown_id_warns_and_removes_the_others(voyager) -> None:
    voyager.add_documents(documents_ids=["a", "b"], documents_embeddings=unit_documents(2))
    with pytest.warns(indexes.UnknownIdWarning, match="'zz'"):
        voyager.remove_documents(["a", "zz"])
    assert voyager.documents_ids == ["b"]


def test_plaid_takes_pylate_arguments_and_says_what_it_cannot_honour(tmp_path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the defaults PyLate code passes warn about nothing
        indexes.PLAID(index_folder=tmp_path, index_name="a", use_fast=True, show_progress=False, device="cpu")
    with pytest.warns(UserWarning, match=r"use_fast=False.*fast-plaid backend runs instead"):
        indexes.PLAID(index_folder=tmp_path, index_name="b", use_fast=False, device="cpu")
    with pytest.warns(UserWarning, match=r"use_triton=True.*k-means runs in torch"):
        index = indexes.PLAID(index_folder=tmp_path, index_name="c", use_triton=True, device="cpu")
    assert index.use_triton is False
    with pytest.warns(UserWarning, match=r"Stanford-PLAID option\(s\) \['ndocs'\]"):
        indexes.PLAID(index_folder=tmp_path, index_name="d", ndocs=100, device="cpu")
    with pytest.raises(TypeError, match="unexpected keyword"):
        indexes.PLAID(index_folder=tmp_path, index_name="e", not_an_option=1)


# ---------------------------------------------------------------------------------------------- KD
def kd_tables() -> tuple[Dataset, Dataset]:
    queries = Dataset.from_list([{"query_id": "q1", "text": "what is colbert?"}])
    documents = Dataset.from_list([{"document_id": f"d{i}", "text": f"document {i}"} for i in range(6)])
    return queries, documents


def test_kd_n_ways_is_a_cap_and_text_encoded_lists_are_parsed() -> None:
    queries, documents = kd_tables()
    train = Dataset.from_list(
        [
            {"query_id": "q1", "document_ids": "['d0', 'd1', 'd2', 'd3']", "scores": "[0.9, 0.5, 0.2, 0.1]"},
            {"query_id": "q1", "document_ids": "['d4', 'd5']", "scores": "[0.7, 0.3]"},
        ]
    )
    kd = utils.KDProcessing(queries=queries, documents=documents)  # PyLate's default n_ways=32
    assert kd.n_ways == 32 and kd.validate(train) == 2
    train.set_transform(kd.transform)
    assert train[0]["documents"] == [f"document {i}" for i in range(4)]
    assert train[0]["scores"] == pytest.approx([0.9, 0.5, 0.2, 0.1])
    assert train[1]["documents"] == ["document 4", "document 5"]
    capped = utils.KDProcessing(queries=queries, documents=documents, n_ways=3)
    assert capped.map(
        {"query_id": "q1", "document_ids": ["d0", "d1", "d2", "d3"], "scores": [4, 3, 2, 1]}
    ) == {
        "query": "what is colbert?",
        "documents": ["document 0", "document 1", "document 2"],
        "scores": [4.0, 3.0, 2.0],
    }


def test_collator_pads_ragged_kd_rows_with_a_masked_score(colbert_model) -> None:
    collator = utils.ColBERTCollator(colbert_model.tokenize)
    batch = collator(
        [
            {"query": "a", "documents": ["x", "y", "z"], "scores": [3.0, 2.0, 1.0]},
            {"query": "b", "documents": ["x", "y"], "scores": [1.0, 2.0]},
        ]
    )
    labels = batch["label"]
    assert labels.shape == (2, 3)
    assert labels[0].tolist() == [3.0, 2.0, 1.0]
    assert labels[1, :2].tolist() == [1.0, 2.0] and math.isnan(labels[1, 2].item())
    assert "documents_3_input_ids" in batch


def test_distillation_masks_padding_exactly(colbert_model) -> None:
    """A ragged batch's loss equals the mean of each row's loss computed alone, unpadded."""
    from pipeline import losses

    loss = losses.Distillation(model=colbert_model)
    collator = utils.ColBERTCollator(colbert_model.tokenize)
    rows = [
        {
            "query": "what is colbert",
            "documents": ["late interaction", "a bird", "a tree"],
            "scores": [3.0, 1.0, 0.0],
        },
        {"query": "capital of france", "documents": ["paris", "berlin"], "scores": [2.0, -1.0]},
    ]

    def value(batch_rows):
        batch = collator(batch_rows)
        labels = batch.pop("label")
        features: dict[str, dict] = {}
        for key, item in batch.items():
            match = re.match(r"^(query|documents_\d+)_(.+)$", key)
            if match:
                features.setdefault(match.group(1), {})[match.group(2)] = item
        order = sorted(features, key=lambda name: -1 if name == "query" else int(name.split("_")[1]))
        features = [features[name] for name in order]
        with torch.no_grad():
            return loss(features, labels).item()

    assert value(rows) == pytest.approx((value(rows[:1]) + value(rows[1:])) / 2, rel=1e-4)


# ---------------------------------------------------------------------------------------------- scores / rank
def test_colbert_scores_masks_as_pylate_and_colbert_scores_class_is_query_major() -> None:
    queries = torch.tensor(
        [[[1.0], [0.0], [0.0], [0.0]], [[0.0], [2.0], [0.0], [0.0]], [[0.0], [0.0], [3.0], [0.0]]]
    )
    documents = torch.tensor([[[10.0], [0.0], [1.0]], [[0.0], [100.0], [10.0]], [[1.0], [0.0], [1000.0]]])
    queries_mask = torch.tensor([[1.0, 1.0, 1.0, 1.0], [1.0, 1.0, 1.0, 1.0], [1.0, 1.0, 0.0, 1.0]])
    documents_mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 0.0, 1.0], [1.0, 1.0, 1.0]])
    got = scores.colbert_scores(queries, documents, queries_mask, documents_mask)
    assert got.tolist() == [[10.0, 10.0, 1000.0], [20.0, 20.0, 2000.0], [0.0, 0.0, 0.0]]
    grouped = torch.randn(3, 2, 5, 4)
    full = scores.ColBERTScores()(torch.randn(3, 6, 4), grouped)
    assert full.shape == (3, 6)
    q = torch.randn(2, 6, 4)
    per_slot = scores.ColBERTScores()(q, grouped)
    # Column j * N + k is query i against group j's k-th candidate.
    assert per_slot[1, 2 * 2 + 1].item() == pytest.approx(
        scores.colbert_scores(q[1:2], grouped[2:3, 1])[0, 0].item(), rel=1e-5
    )
    assert scores.SimilarityFunction.to_similarity_fn("MaxSim") is scores.colbert_scores
    with pytest.warns(UserWarning, match="'flash' is not available"):
        scores.colbert_scores([torch.eye(2)], [torch.eye(2)], backend="flash")


def test_score_xtr_imputes_the_lowest_retrieved_score() -> None:
    # d1: token 0 retrieved it (0.9); token 1 did not: imputed with token 1's lowest retrieved score, 0.2.
    results = rank.score_xtr([["d1", "d2", "d2"], ["d2", "d3"]], [[0.9, 0.5, 0.6], [0.8, 0.2]], k=3)
    assert [r["id"] for r in results] == ["d2", "d1", "d3"]
    assert [r["score"] for r in results] == pytest.approx([0.6 + 0.8, 0.9 + 0.2, 0.5 + 0.2])


def test_xtr_retriever_on_voyager_ranks_the_source_document_first(voyager) -> None:
    documents = unit_documents(8, seed=3)
    voyager.add_documents(documents_ids=list(range(8)), documents_embeddings=documents)
    results = retrieve.XTR(index=voyager).retrieve([documents[5], documents[2]], k=3, k_token=20)
    assert [row[0]["id"] for row in results] == [5, 2]
    with pytest.raises(NotImplementedError):
        retrieve.XTR(index=voyager).retrieve([documents[0]], subset=[1])


# ---------------------------------------------------------------------------------------------- utils
def test_utils_helpers_follow_pylate() -> None:
    assert utils.convert_to_tensor([]).numel() == 0
    assert utils.convert_to_tensor([[1.0, 2.0]]).dtype == torch.float32
    assert [len(b) for b in utils.iter_batch(list(range(5)), batch_size=2, tqdm_bar=False)] == [2, 2, 1]
    tensor = torch.ones(3, requires_grad=True)
    gathered = utils.all_gather(tensor)
    assert gathered == [tensor] and gathered[0] is tensor  # not distributed: this process's tensor
    assert utils.all_gather_with_gradients(tensor)[0] is tensor
    assert (utils.get_rank(), utils.get_world_size()) == (0, 1)


# ---------------------------------------------------------------------------------------------- evaluation
def test_evaluate_matches_trec_eval_on_a_graded_run() -> None:
    from pipeline.project.runs import evaluate_run

    qrels = {"q1": {"a": 2, "b": 1, "z": 0}, "q2": {"c": 1}}
    hits = [
        [{"id": "x", "score": 3.0}, {"id": "b", "score": 2.0}, {"id": "a", "score": 1.0}],
        [{"id": "c", "score": 1.0}],
    ]
    ours = evaluation.evaluate(hits, qrels, ["q1", "q2"], metrics=["ndcg@10", "mrr@10", "hits@1", "recall@2"])
    reference = evaluate_run({"q1": {"x": 3.0, "b": 2.0, "a": 1.0}, "q2": {"c": 1.0}}, qrels)
    assert ours["ndcg@10"] == pytest.approx(reference["ndcg@10"])
    assert ours["mrr@10"] == pytest.approx(reference["mrr@10"])
    assert ours["hits@1"] == pytest.approx(0.5) and ours["recall@2"] == pytest.approx((1 / 2 + 1) / 2)


@pytest.mark.shared_data
def test_beir_helpers_read_a_local_folder(shared_data) -> None:
    documents, queries, qrels = evaluation.load_custom_dataset(shared_data / "scifact", split="test")
    assert len(documents) == 5183 and len(queries) == 300 and set(queries) == set(qrels)
    assert set(documents[0]) == {"id", "text"}
    triples = evaluation.get_beir_triples(documents, list(queries.values()), qrels)
    assert len(triples) == sum(len(v) for v in qrels.values())
    with pytest.raises(FileNotFoundError, match="does not download"):
        evaluation.load_beir("no-such-set")


def test_triplet_csv_column_is_accuracy(colbert_model, tmp_path) -> None:
    evaluator = evaluation.ColBERTTripletEvaluator(["a query"], ["a query answer"], ["unrelated"], name="dev")
    evaluator(colbert_model, output_path=str(tmp_path))
    with open(tmp_path / evaluator.csv_file, encoding="utf-8") as handle:
        header = next(csv.reader(handle))
    assert header == ["epoch", "steps", "accuracy"]


def test_distillation_evaluator_prefers_the_teacher_order(colbert_model) -> None:
    queries = ["what is late interaction in retrieval?"]
    documents = [["late interaction retrieval compares query and document tokens", "a recipe for bread"]]
    agree = evaluation.ColBERTDistillationEvaluator(queries, documents, [[1.0, 0.0]], write_csv=False)
    disagree = evaluation.ColBERTDistillationEvaluator(queries, documents, [[0.0, 1.0]], write_csv=False)
    assert agree(colbert_model)["kl_divergence"] < disagree(colbert_model)["kl_divergence"]
    with pytest.raises(ValueError, match="scores\\[0\\] has 1 scores for 2 documents"):
        evaluation.ColBERTDistillationEvaluator(queries, documents, [[1.0]])
