"""ColBERT's triplet and retrieval evaluators (NanoBEIR, BEIR, custom corpora) under PyLate's names."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from sentence_transformers.multi_vector_encoder.evaluation import (
    MultiVectorInformationRetrievalEvaluator,
    MultiVectorNanoBEIREvaluator,
    MultiVectorTripletEvaluator,
)

from pipeline.data.beir import BeirData
from pipeline.data.beir import load_beir as load_beir_folder
from pipeline.data.nano import list_nano_benchmarks, load_nano_benchmark, nano_split_name

logger = logging.getLogger(__name__)


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
        >>> from pipeline import evaluation
        >>> evaluator = evaluation.ColBERTTripletEvaluator(
        ...     ["what do koalas eat?"], ["Koalas eat eucalyptus leaves."], ["Trains run on rails."]
        ... )
        >>> 0.0 <= evaluator(model)["accuracy"] <= 1.0  # ``model``: a ColBERT model
        True
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
        >>> from pipeline import evaluation
        >>> from pipeline.data import BeirData, build_nano_benchmark
        >>> data = BeirData(corpus={"d1": "koalas eat leaves", "d2": "trains run"},
        ...                 queries={"q1": "what do koalas eat?"}, qrels={"q1": {"d1": 1}}, name="toy")
        >>> _ = build_nano_benchmark(data, "nano", n_queries=1, n_documents=2, seed=0)
        >>> evaluator = evaluation.NanoBEIREvaluator(dataset_id="nano")
        >>> "NanoBEIR_mean_MaxSim_ndcg@10" in evaluator(model)
        True
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
        >>> import json
        >>> from pipeline import evaluation
        >>> folder = Path("toy"); (folder / "qrels").mkdir(parents=True)
        >>> rows = [{"_id": "d1", "text": "koalas eat leaves"}, {"_id": "d2", "text": "trains run"}]
        >>> _ = (folder / "corpus.jsonl").write_text("\\n".join(json.dumps(row) for row in rows))
        >>> _ = (folder / "queries.jsonl").write_text(json.dumps({"_id": "q1", "text": "koala food?"}))
        >>> _ = (folder / "qrels" / "test.tsv").write_text("query-id\\tcorpus-id\\tscore\\nq1\\td1\\t1\\n")
        >>> evaluator = evaluation.BEIREvaluator(str(folder), split="test")
        >>> 0.0 <= evaluator(model)["toy_MaxSim_ndcg@10"] <= 1.0
        True
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
