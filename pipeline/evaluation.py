"""ColBERT evaluators under PyLate's names, on sentence-transformers' multi-vector evaluators.

- :class:`ColBERTTripletEvaluator`: how often MaxSim ranks the positive above the negative; reported as
  ``accuracy`` (PyLate's key) and ``maxsim_accuracy`` (sentence-transformers' key), both prefixed by ``name``.
- :class:`InformationRetrievalEvaluator`: full-corpus retrieval metrics for given queries / corpus / qrels,
  keyed ``<name>_MaxSim_<metric>`` as in PyLate (``MaxSim`` rather than sentence-transformers' ``maxsim``).
- :class:`NanoBEIREvaluator`: the NanoBEIR evaluator, keys ``NanoSciFact_MaxSim_ndcg@10`` and
  ``NanoBEIR_mean_MaxSim_ndcg@10``. ``dataset_id`` may be a local folder built by
  :func:`pipeline.data.nano.build_nano_benchmark`, which is how it runs offline.
- :class:`BEIREvaluator`: the whole corpus of a local BEIR folder.

Example:
    >>> from pipeline import evaluation  # doctest: +SKIP
    >>> evaluator = evaluation.NanoBEIREvaluator(["scifact"], dataset_id="data/nano")  # doctest: +SKIP
    >>> evaluator(model)["NanoBEIR_mean_MaxSim_ndcg@10"]  # doctest: +SKIP
    0.61
"""

from __future__ import annotations

import csv
import logging
import math
import os
import random
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from sentence_transformers.base.evaluation import SentenceEvaluator
from sentence_transformers.multi_vector_encoder.evaluation import (
    MultiVectorInformationRetrievalEvaluator,
    MultiVectorNanoBEIREvaluator,
    MultiVectorTripletEvaluator,
)

from pipeline.data.beir import BeirData
from pipeline.data.beir import load_beir as load_beir_folder
from pipeline.data.nano import list_nano_benchmarks, load_nano_benchmark, nano_split_name
from pipeline.scores import colbert_scores_pairwise

logger = logging.getLogger(__name__)

__all__ = [
    "BEIREvaluator",
    "ColBERTDistillationEvaluator",
    "ColBERTTripletEvaluator",
    "InformationRetrievalEvaluator",
    "NanoBEIREvaluator",
    "PyLateInformationRetrievalEvaluator",
    "evaluate",
    "get_beir_triples",
    "load_beir",
    "load_custom_dataset",
]

#: sentence-transformers names the score function after ``model.similarity_fn_name``; PyLate says MaxSim.
SCORE_FUNCTION_NAMES = {"maxsim": "MaxSim", "meanmaxsim": "MeanMaxSim"}


class ColBERTTripletEvaluator(MultiVectorTripletEvaluator):
    """Accuracy of MaxSim at ranking each anchor's positive above its negative.

    Args:
        anchors: Query texts.
        positives: One relevant document per query.
        negatives: One non-relevant document per query.
        name: Prefix of the metric keys (``"<name>_accuracy"``).
        batch_size: Texts per encoding batch.
        show_progress_bar: Show tqdm bars while encoding.
        write_csv: Append results to a CSV in the trainer's output folder.
        margin: How much the positive must win by.

    Returns (when called): ``{"accuracy": ..., "maxsim_accuracy": ...}``, keys prefixed by ``name``.

    Example:
        >>> from pipeline import evaluation  # doctest: +SKIP
        >>> evaluator = evaluation.ColBERTTripletEvaluator(["q"], ["yes"], ["no"])  # doctest: +SKIP
        >>> evaluator(model)["accuracy"]  # doctest: +SKIP
        1.0
    """

    def __init__(
        self,
        anchors: Sequence[str],
        positives: Sequence[str],
        negatives: Sequence[str],
        name: str = "",
        batch_size: int = 32,
        show_progress_bar: bool = False,
        write_csv: bool = True,
        margin: float | None = None,
        **kwargs: Any,
    ) -> None:
        lengths = {"anchors": len(anchors), "positives": len(positives), "negatives": len(negatives)}
        if len(set(lengths.values())) != 1:
            raise ValueError(f"anchors, positives and negatives must have the same length, got {lengths}")
        if lengths["anchors"] == 0:
            raise ValueError("the triplet evaluator needs at least one (anchor, positive, negative) triplet")
        for field_name, values in (("anchors", anchors), ("positives", positives), ("negatives", negatives)):
            bad = next(
                (i for i, text in enumerate(values) if not isinstance(text, str) or not text.strip()), None
            )
            if bad is not None:
                raise ValueError(f"{field_name}[{bad}] is not a non-empty text")
        super().__init__(
            list(anchors),
            list(positives),
            list(negatives),
            name=name,
            batch_size=batch_size,
            show_progress_bar=show_progress_bar,
            write_csv=write_csv,
            margin=margin,
            **kwargs,
        )

    def _append_csv_headers(self, similarity_fn_names: list[str]) -> None:
        # PyLate's CSV column is "accuracy"; one score function (MaxSim) needs no suffix to tell it apart.
        for fn_name in similarity_fn_names:
            self.csv_headers.append("accuracy" if len(similarity_fn_names) == 1 else f"accuracy_{fn_name}")

    def __call__(self, model: Any, output_path: str | None = None, epoch: int = -1, steps: int = -1):
        metrics = super().__call__(model, output_path, epoch, steps)
        # PyLate reports one "accuracy"; keep sentence-transformers' per-function keys beside it.
        source = self.primary_metric
        if source not in metrics:  # sentence-transformers may or may not have prefixed it with the name
            source = f"{self.name}_{source}"
        accuracy_key = f"{self.name}_accuracy" if self.name else "accuracy"
        metrics[accuracy_key] = metrics[source]
        self.primary_metric = accuracy_key
        return metrics


class InformationRetrievalEvaluator(MultiVectorInformationRetrievalEvaluator):
    """Full-corpus retrieval metrics (NDCG, MRR, MAP, recall, precision, accuracy) with MaxSim.

    Same arguments as sentence-transformers' ``MultiVectorInformationRetrievalEvaluator`` (``queries``,
    ``corpus``, ``relevant_docs``, ``name``, ``corpus_chunk_size`` ...); metric keys use PyLate's
    ``MaxSim`` spelling: ``<name>_MaxSim_ndcg@10``.
    """

    def _model_score_functions(self, model: Any) -> dict[str, Callable[..., Any]]:
        functions = super()._model_score_functions(model)
        return {SCORE_FUNCTION_NAMES.get(key, key): function for key, function in functions.items()}


def _is_local(dataset_id: str | os.PathLike[str]) -> bool:
    return Path(dataset_id).is_dir()


class NanoBEIREvaluator(MultiVectorNanoBEIREvaluator):
    """NanoBEIR evaluation with PyLate's metric keys, on the Hub sets or on local Nano benchmarks.

    Args:
        dataset_names: Short names (``"scifact"``, ``"nfcorpus"``, or any name given to
            :func:`pipeline.data.nano.build_nano_benchmark`). Defaults to every benchmark in a local
            folder, or to all 13 Hub sets.
        dataset_id: A Hub dataset id (``"sentence-transformers/NanoBEIR-en"``, needs the network) or a
            local folder written by :func:`pipeline.data.nano.build_nano_benchmark` (offline).
        **kwargs: As sentence-transformers' ``MultiVectorNanoBEIREvaluator`` (``batch_size``,
            ``ndcg_at_k``, ``show_progress_bar``, ``write_csv`` ...).

    Keys: ``Nano<Name>_MaxSim_<metric>`` per set and ``NanoBEIR_mean_MaxSim_<metric>`` aggregated;
    the primary metric is ``NanoBEIR_mean_MaxSim_ndcg@10``.

    Example:
        >>> from pipeline import evaluation  # doctest: +SKIP
        >>> evaluator = evaluation.NanoBEIREvaluator(dataset_id="data/nano")  # doctest: +SKIP
    """

    information_retrieval_class = InformationRetrievalEvaluator

    def __init__(
        self,
        dataset_names: list[str] | None = None,
        dataset_id: str | os.PathLike[str] = "sentence-transformers/NanoBEIR-en",
        **kwargs: Any,
    ) -> None:
        self._local = _is_local(dataset_id)
        if self._local:
            available = list_nano_benchmarks(dataset_id)
            if not available:
                raise ValueError(
                    f"{dataset_id}: no Nano benchmarks (pipeline.data.nano.build_nano_benchmark)"
                )
            if dataset_names is None:
                dataset_names = available
            splits = {nano_split_name(name) for name in available}
            unknown = [name for name in dataset_names if nano_split_name(name) not in splits]
            if unknown:
                raise ValueError(f"{dataset_id}: no benchmark named {unknown} (available: {available})")
        elif Path(str(dataset_id)).suffix or str(dataset_id).startswith((".", "/", "~")):
            raise ValueError(f"NanoBEIR folder not found: {dataset_id}")
        super().__init__(dataset_names=dataset_names, dataset_id=str(dataset_id), **kwargs)

    def _validate_dataset_names(self) -> None:
        if not self._local:
            super()._validate_dataset_names()
        elif not self.dataset_names:
            raise ValueError("dataset_names cannot be empty; use None to evaluate every local benchmark")

    def _get_human_readable_name(self, dataset_name: str) -> str:
        return nano_split_name(dataset_name)

    def _load_dataset(self, dataset_name: str, **ir_evaluator_kwargs: Any) -> InformationRetrievalEvaluator:
        if not self._local:
            try:
                return super()._load_dataset(dataset_name, **ir_evaluator_kwargs)
            except ValueError as error:
                raise ValueError(
                    f"{error} Offline, build a local benchmark with pipeline.data.nano.build_nano_benchmark "
                    "and pass its folder as dataset_id."
                ) from error
        data = load_nano_benchmark(self.dataset_id, dataset_name)
        ir_evaluator_kwargs = {**ir_evaluator_kwargs, **self._ir_extra_kwargs}
        if self.query_prompts is not None:
            ir_evaluator_kwargs["query_prompt"] = self.query_prompts.get(dataset_name)
        if self.corpus_prompts is not None:
            ir_evaluator_kwargs["corpus_prompt"] = self.corpus_prompts.get(dataset_name)
        return self.information_retrieval_class(
            queries=data.queries,
            corpus=data.corpus,
            relevant_docs=data.relevant_docs(),
            name=self._get_human_readable_name(dataset_name),
            **ir_evaluator_kwargs,
        )


class BEIREvaluator(InformationRetrievalEvaluator):
    """Retrieval metrics over the whole corpus of a local BEIR folder (or loaded :class:`BeirData`).

    Args:
        source: A BEIR folder (``corpus.jsonl[.gz]``, ``queries.jsonl[.gz]``, ``qrels/<split>.tsv[.gz]``)
            or :class:`pipeline.data.beir.BeirData`.
        split: The qrels split to evaluate.
        name: Metric-key prefix; the folder's name by default (``scifact_MaxSim_ndcg@10``).
        on_missing: How judgements that point at absent documents are handled (see ``load_beir``).
        **kwargs: As :class:`InformationRetrievalEvaluator` (``batch_size``, ``corpus_chunk_size`` ...).

    Example:
        >>> from pipeline import evaluation  # doctest: +SKIP
        >>> evaluator = evaluation.BEIREvaluator("../shared/data/scifact", split="test")  # doctest: +SKIP
    """

    def __init__(
        self,
        source: str | os.PathLike[str] | BeirData,
        split: str = "test",
        name: str | None = None,
        on_missing: str = "error",
        **kwargs: Any,
    ) -> None:
        data = (
            source if isinstance(source, BeirData) else load_beir_folder(source, split, on_missing=on_missing)
        )  # type: ignore[arg-type]
        relevant = data.relevant_docs()
        super().__init__(
            queries={qid: data.queries[qid] for qid in relevant},
            corpus=data.corpus,
            relevant_docs=relevant,
            name=name or data.name,
            **kwargs,
        )


# ---------------------------------------------------------------------------------------------- PyLate's API
class PyLateInformationRetrievalEvaluator(InformationRetrievalEvaluator):
    """PyLate's name for the full-corpus retrieval evaluator: :class:`InformationRetrievalEvaluator`.

    Same arguments as sentence-transformers' ``InformationRetrievalEvaluator`` (``queries``, ``corpus``,
    ``relevant_docs``, ``name`` ...), queries encoded as queries and documents as documents, keys
    ``<name>_MaxSim_<metric>``.
    """


class ColBERTDistillationEvaluator(SentenceEvaluator):
    """KL divergence between a teacher's scores and the model's MaxSim over each query's candidates.

    PyLate's evaluator for monitoring distillation: lower is better.

    Args:
        queries: Query texts.
        documents: One list of candidate texts per query, the same number for every query.
        scores: The teacher's scores, one list per query, aligned with ``documents``.
        name: Prefix of the metric key (``"<name>_kl_divergence"``) and of the CSV file.
        batch_size: Texts per encoding batch.
        show_progress_bar: Show tqdm bars while encoding.
        write_csv: Append ``epoch, steps, kl_divergence`` to ``distillation_evaluation[_<name>]_results.csv``.
        truncate_dim: Keep only the first ``truncate_dim`` dimensions of each token embedding.
        normalize_scores: Min-max scale the student's scores per query before the softmax (PyLate's default).

    Example:
        >>> from pipeline import evaluation  # doctest: +SKIP
        >>> evaluator = evaluation.ColBERTDistillationEvaluator(  # doctest: +SKIP
        ...     ["q"], [["a", "b"]], [[1.0, 0.0]]
        ... )
        >>> evaluator(model)  # doctest: +SKIP
        {'kl_divergence': 0.02}
    """

    def __init__(
        self,
        queries: list[str],
        documents: list[list[str]],
        scores: list[list[float]],
        name: str = "",
        batch_size: int = 16,
        show_progress_bar: bool = False,
        write_csv: bool = True,
        truncate_dim: int | None = None,
        normalize_scores: bool = True,
    ) -> None:
        super().__init__()
        if not (len(queries) == len(documents) == len(scores)):
            raise ValueError(
                f"queries ({len(queries)}), documents ({len(documents)}) and scores ({len(scores)}) "
                "must have one entry per query"
            )
        if not queries:
            raise ValueError("the distillation evaluator needs at least one query")
        n_ways = len(documents[0])
        for row, (candidates, teacher) in enumerate(zip(documents, scores, strict=True)):
            if len(candidates) != n_ways:
                raise ValueError(
                    f"documents[{row}] has {len(candidates)} candidates, documents[0] has {n_ways}"
                )
            if len(teacher) != n_ways:
                raise ValueError(f"scores[{row}] has {len(teacher)} scores for {n_ways} documents")
        if n_ways < 2:
            raise ValueError(
                "each query needs at least two candidate documents (a softmax over one is constant)"
            )
        self.queries = list(queries)
        self.documents = [text for candidates in documents for text in candidates]
        self.n_ways = n_ways
        self.scores = scores
        self.name = name
        self.batch_size = batch_size
        self.show_progress_bar = show_progress_bar
        self.write_csv = write_csv
        self.truncate_dim = truncate_dim
        self.normalize_scores = normalize_scores
        self.csv_file = "distillation_evaluation" + (f"_{name}" if name else "") + "_results.csv"
        self.csv_headers = ["epoch", "steps", "kl_divergence"]
        self.primary_metric = "kl_divergence"
        self.greater_is_better = False

    def _encode(self, model: Any, texts: list[str], is_query: bool) -> list[torch.Tensor]:
        embeddings = model.encode(
            texts,
            batch_size=self.batch_size,
            show_progress_bar=self.show_progress_bar,
            convert_to_tensor=True,
            is_query=is_query,
        )
        embeddings = [torch.as_tensor(e) for e in embeddings]
        if self.truncate_dim is not None:
            embeddings = [e[..., : self.truncate_dim] for e in embeddings]
        return embeddings

    def __call__(
        self, model: Any, output_path: str | None = None, epoch: int = -1, steps: int = -1
    ) -> dict[str, float]:
        queries = self._encode(model, self.queries, is_query=True)
        documents = self._encode(model, self.documents, is_query=False)
        student = torch.stack(
            [
                colbert_scores_pairwise(queries, documents[way :: self.n_ways]).float()
                for way in range(self.n_ways)
            ],
            dim=1,
        )
        if self.normalize_scores:
            low = student.min(dim=1, keepdim=True).values
            high = student.max(dim=1, keepdim=True).values
            student = (student - low) / (high - low + 1e-8)
        teacher = torch.tensor(self.scores, dtype=torch.float32)
        kl_divergence = torch.nn.functional.kl_div(
            torch.log_softmax(student, dim=-1),
            torch.log_softmax(teacher, dim=-1),
            reduction="batchmean",
            log_target=True,
        ).item()
        if output_path is not None and self.write_csv:
            os.makedirs(output_path, exist_ok=True)
            csv_path = os.path.join(output_path, self.csv_file)
            new_file = not os.path.isfile(csv_path)
            with open(csv_path, mode="a", newline="", encoding="utf-8") as handle:
                writer = csv.writer(handle)
                if new_file:
                    writer.writerow(self.csv_headers)
                writer.writerow([epoch, steps, kl_divergence])
        metrics = self.prefix_name_to_metrics({"kl_divergence": kl_divergence}, self.name)
        self.store_metrics_in_model_card_data(model, metrics, epoch, steps)
        return metrics


def load_custom_dataset(path: str | os.PathLike[str], split: str = "test") -> tuple[list, dict, dict]:
    """A local BEIR-layout folder as PyLate returns it: ``(documents, queries, qrels)``.

    ``documents`` is a list of ``{"id", "text"}`` (title and text joined), ``queries`` maps query id to
    text for the queries judged in ``split``, ``qrels`` maps query id to ``{document id: grade}``.
    Every record is validated (:func:`pipeline.data.beir.load_beir`); errors name the file and line.
    """
    data = load_beir_folder(path, split)
    documents = [{"id": document_id, "text": text} for document_id, text in data.corpus.items()]
    return documents, dict(data.queries), {qid: dict(docs) for qid, docs in data.qrels.items()}


#: Where PyLate's ``load_beir`` downloads a BEIR set; read here, offline.
BEIR_DOWNLOAD_FOLDER = "evaluation_datasets"


def load_beir(dataset_name: str, split: str = "test") -> tuple[list, dict, dict]:
    """A BEIR set by name, as PyLate returns it: ``(documents, queries, qrels)`` (as load_custom_dataset).

    PyLate downloads ``<dataset_name>.zip`` into ``./evaluation_datasets/``. This project does not
    download: ``dataset_name`` is read from ``./evaluation_datasets/<dataset_name>`` (where a PyLate run
    left it) or is itself a local BEIR folder; otherwise a ``FileNotFoundError`` says where to put it.
    """
    candidates = [Path(BEIR_DOWNLOAD_FOLDER) / str(dataset_name), Path(dataset_name)]
    folder = next((c for c in candidates if c.is_dir()), None)
    if folder is None:
        raise FileNotFoundError(
            f"BEIR set {dataset_name!r} not found in {candidates[0]} or as a folder: pipeline does not "
            "download data; unzip the BEIR set there (or pass a local BEIR folder)"
        )
    return load_custom_dataset(folder, split)


def get_beir_triples(documents: list[dict[str, str]], queries: list[str], qrels: dict) -> list[tuple]:
    """``(query, positive, random document)`` for every judged pair, as PyLate builds BEIR triples.

    ``queries`` holds query texts in the order of ``qrels``' keys (``list(queries.values())`` when both come
    from :func:`load_beir`); the negative is drawn uniformly from ``documents`` (``random``'s global state).
    """
    texts = {document["id"]: document["text"] for document in documents}
    if not texts:
        raise ValueError("documents is empty: no text to draw negatives from")
    pool = list(texts.values())
    triples = []
    for query, judged in zip(queries, qrels.values(), strict=False):
        for document_id in judged:
            if document_id not in texts:
                raise KeyError(f"qrels names document {document_id!r}, which is not in documents")
            triples.append((query, texts[document_id], random.choice(pool)))
    return triples


def evaluate(
    scores: list[list[dict[str, Any]]],
    qrels: dict[str, dict[str, int]],
    queries: list[str],
    metrics: list[str] | None = None,
) -> dict[str, float]:
    """Mean ranking metrics of retrieval results, PyLate's ``evaluate`` (ranx's metric names).

    Args:
        scores: One ranked list of ``{"id", "score"}`` per query (what a retriever returns).
        qrels: Query key -> {document id: grade}; a grade of 0 is judged non-relevant.
        queries: The key of each entry of ``scores`` in ``qrels``. A key given more than once (a
            duplicate query) reuses its first results, as PyLate does.
        metrics: ``ndcg@k``, ``hits@k``, ``recall@k``, ``precision@k``, ``mrr@k``, ``map@k`` (or without
            ``@k``); default ``ndcg@10`` and ``hits@1..5, 10``.

    Returns:
        Metric -> mean over the queries of ``qrels`` (a query with no results scores 0). nDCG uses linear
        gains, as ranx's ``ndcg`` and trec_eval do.
    """
    if len(queries) > len(scores):
        first: dict[str, list[dict[str, Any]]] = {}
        for query, found in zip(queries, scores, strict=False):
            first.setdefault(query, found)
        scores = [first[query] for query in queries if query in first]
    metrics = list(metrics) if metrics else ["ndcg@10", *(f"hits@{k}" for k in (1, 2, 3, 4, 5, 10))]
    parsed = [_parse_metric(metric) for metric in metrics]
    run = {query: found for query, found in zip(queries, scores, strict=False)}
    judged = [query for query, grades in qrels.items() if any(g > 0 for g in grades.values())]
    if not judged:
        raise ValueError("qrels has no query with a relevant document (grade > 0)")
    totals = dict.fromkeys(metrics, 0.0)
    for query in judged:
        ranked = [str(hit["id"]) for hit in sorted(run.get(query, []), key=lambda h: -float(h["score"]))]
        grades = {str(doc): int(g) for doc, g in qrels[query].items()}
        for metric, (kind, cutoff) in zip(metrics, parsed, strict=True):
            totals[metric] += _metric(kind, ranked[:cutoff] if cutoff else ranked, grades, cutoff)
    return {metric: total / len(judged) for metric, total in totals.items()}


_METRICS = ("ndcg", "hits", "recall", "precision", "mrr", "map")


def _parse_metric(metric: str) -> tuple[str, int | None]:
    kind, _, cutoff = str(metric).partition("@")
    if kind not in _METRICS or (cutoff and not cutoff.isdigit()):
        raise ValueError(f"unknown metric {metric!r}: use one of {list(_METRICS)}, optionally with @k")
    return kind, int(cutoff) if cutoff else None


def _metric(kind: str, ranked: list[str], grades: dict[str, int], cutoff: int | None) -> float:
    relevant = {doc for doc, grade in grades.items() if grade > 0}
    hits = [doc in relevant for doc in ranked]
    if kind == "hits":
        return float(any(hits))
    if kind == "recall":
        return sum(hits) / len(relevant)
    if kind == "precision":
        return sum(hits) / (cutoff or max(len(ranked), 1))
    if kind == "mrr":
        return next((1.0 / (rank + 1) for rank, hit in enumerate(hits) if hit), 0.0)
    if kind == "map":
        found, total = 0, 0.0
        for rank, hit in enumerate(hits):
            if hit:
                found += 1
                total += found / (rank + 1)
        return total / len(relevant)
    gains = sorted((g for g in grades.values() if g > 0), reverse=True)[: cutoff or None]
    ideal = sum(g / math.log2(rank + 2) for rank, g in enumerate(gains))
    dcg = sum(max(grades.get(doc, 0), 0) / math.log2(rank + 2) for rank, doc in enumerate(ranked))
    return dcg / ideal if ideal else 0.0
