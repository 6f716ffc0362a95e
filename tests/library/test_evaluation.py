"""Evaluators: PyLate's metric names, offline NanoBEIR on a local benchmark, full-corpus BEIR."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from pipeline import evaluation
from pipeline.data.beir import BeirData
from pipeline.data.nano import build_nano_benchmark
from pipeline.scores import colbert_scores_pairwise

TOPICS = ["volcano", "penguin", "violin", "glacier", "saffron", "tornado", "orchid", "comet"]


def toy_data() -> BeirData:
    corpus = {
        f"d{i}": f"A long article about the {t} and everything on the {t}." for i, t in enumerate(TOPICS)
    }
    corpus.update({f"x{i}": f"Unrelated note number {i} on taxes." for i in range(8)})
    queries = {f"q{i}": f"what about the {t}?" for i, t in enumerate(TOPICS)}
    qrels = {f"q{i}": {f"d{i}": 1} for i in range(len(TOPICS))}
    return BeirData(corpus=corpus, queries=queries, qrels=qrels, name="toy")


def test_triplet_evaluator_reports_accuracy_under_pylate_and_st_names(colbert_model) -> None:
    anchors = [f"what about the {t}?" for t in TOPICS[:4]]
    positives = [f"An article about the {t}." for t in TOPICS[:4]]
    negatives = [f"An article about the {t}." for t in TOPICS[4:8]]
    negatives[0] = positives[0] + " Indeed."  # a near-duplicate: this one may go either way
    evaluator = evaluation.ColBERTTripletEvaluator(anchors=anchors, positives=positives, negatives=negatives)
    metrics = evaluator(colbert_model)
    assert evaluator.primary_metric == "accuracy"
    assert metrics["accuracy"] == metrics["maxsim_accuracy"]

    # The same accuracy, computed independently with the package's MaxSim.
    q = colbert_model.encode(anchors, is_query=True)
    p = colbert_model.encode(positives, is_query=False)
    n = colbert_model.encode(negatives, is_query=False)
    expected = (colbert_scores_pairwise(q, p) > colbert_scores_pairwise(q, n)).float().mean().item()
    assert metrics["accuracy"] == pytest.approx(expected)

    named = evaluation.ColBERTTripletEvaluator(anchors, positives, negatives, name="dev")(colbert_model)
    assert named["dev_accuracy"] == pytest.approx(metrics["accuracy"])


def test_triplet_evaluator_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="same length"):
        evaluation.ColBERTTripletEvaluator(["a", "b"], ["p"], ["n"])
    with pytest.raises(ValueError, match=r"negatives\[1\] is not a non-empty text"):
        evaluation.ColBERTTripletEvaluator(["a", "b"], ["p", "q"], ["n", " "])


def test_nano_beir_evaluator_runs_offline_on_a_local_benchmark(colbert_model, tmp_path: Path) -> None:
    folder = tmp_path / "nano"
    build_nano_benchmark(toy_data(), folder, n_queries=8, n_documents=16, name="scifact")
    evaluator = evaluation.NanoBEIREvaluator(dataset_id=str(folder), write_csv=False)
    metrics = evaluator(colbert_model)
    assert evaluator.primary_metric == "NanoBEIR_mean_MaxSim_ndcg@10"
    assert "NanoSciFact_MaxSim_ndcg@10" in metrics and "NanoBEIR_mean_MaxSim_recall@10" in metrics
    assert metrics["NanoBEIR_mean_MaxSim_ndcg@10"] == pytest.approx(metrics["NanoSciFact_MaxSim_ndcg@10"])

    # The metric measures ranking quality: shuffling the judgements (each query judged against another
    # topic's article) must score lower than the true judgements.
    shuffled = toy_data()
    shuffled.qrels = {f"q{i}": {f"d{(i + 1) % len(TOPICS)}": 1} for i in range(len(TOPICS))}
    build_nano_benchmark(shuffled, folder, n_queries=8, n_documents=16, name="shuffled")
    both = evaluation.NanoBEIREvaluator(dataset_id=str(folder), write_csv=False)(colbert_model)
    assert both["NanoSciFact_MaxSim_ndcg@10"] > both["NanoShuffled_MaxSim_ndcg@10"]


def test_sentence_transformers_reads_the_local_layout(colbert_model, tmp_path: Path) -> None:
    """sentence-transformers' own NanoBEIR evaluator loads our folder with datasets.load_dataset."""
    from sentence_transformers.multi_vector_encoder.evaluation import MultiVectorNanoBEIREvaluator

    folder = tmp_path / "nano"
    build_nano_benchmark(toy_data(), folder, n_queries=8, n_documents=16, name="scifact")
    theirs = MultiVectorNanoBEIREvaluator(dataset_names=["scifact"], dataset_id=str(folder), write_csv=False)
    ours = evaluation.NanoBEIREvaluator(["scifact"], dataset_id=str(folder), write_csv=False)
    assert theirs(colbert_model)["NanoSciFact_maxsim_ndcg@10"] == pytest.approx(
        ours(colbert_model)["NanoSciFact_MaxSim_ndcg@10"], abs=1e-6
    )


def test_nano_beir_evaluator_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no Nano benchmarks"):
        evaluation.NanoBEIREvaluator(dataset_id=str(tmp_path))
    build_nano_benchmark(toy_data(), tmp_path / "nano", n_queries=2, n_documents=4)
    with pytest.raises(ValueError, match=r"no benchmark named \['nfcorpus'\].*available: \['toy'\]"):
        evaluation.NanoBEIREvaluator(["nfcorpus"], dataset_id=str(tmp_path / "nano"))
    with pytest.raises(ValueError, match="build_nano_benchmark"):  # the Hub is unreachable offline
        evaluation.NanoBEIREvaluator(["scifact"])


def test_beir_evaluator_scores_a_local_folder(colbert_model, tmp_path: Path) -> None:
    data = toy_data()
    folder = tmp_path / "toy"
    (folder / "qrels").mkdir(parents=True)
    (folder / "corpus.jsonl").write_text(
        "".join(json.dumps({"_id": k, "text": v}) + "\n" for k, v in data.corpus.items()), encoding="utf-8"
    )
    (folder / "queries.jsonl").write_text(
        "".join(json.dumps({"_id": k, "text": v}) + "\n" for k, v in data.queries.items()), encoding="utf-8"
    )
    lines = ["query-id\tcorpus-id\tscore"] + [f"{q}\t{d}\t1" for q, j in data.qrels.items() for d in j]
    (folder / "qrels" / "test.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    evaluator = evaluation.BEIREvaluator(folder, split="test", write_csv=False)
    metrics = evaluator(colbert_model)
    assert set(metrics) >= {"toy_MaxSim_ndcg@10", "toy_MaxSim_mrr@10", "toy_MaxSim_map@100"}
    # Direct MaxSim ranking of the same data gives the same top-1 accuracy.
    q = colbert_model.encode(list(data.queries.values()), is_query=True)
    d = colbert_model.encode(list(data.corpus.values()), is_query=False)
    from pipeline.scores import colbert_scores

    best = torch.as_tensor(colbert_scores(q, d)).argmax(dim=1).tolist()
    doc_ids = list(data.corpus)
    hits = [doc_ids[b] in data.qrels[qid] for qid, b in zip(data.queries, best, strict=True)]
    assert metrics["toy_MaxSim_accuracy@1"] == pytest.approx(sum(hits) / len(hits))
