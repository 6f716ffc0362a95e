"""ColBERT evaluators under PyLate's names, on sentence-transformers' multi-vector evaluators.

- :class:`ColBERTTripletEvaluator`: how often MaxSim ranks the positive above the negative; reported as
  ``accuracy`` (PyLate's key) and ``maxsim_accuracy`` (sentence-transformers' key), both prefixed by ``name``.
- :class:`InformationRetrievalEvaluator`: full-corpus retrieval metrics for given queries / corpus / qrels,
  keyed ``<name>_MaxSim_<metric>`` as in PyLate (``MaxSim`` rather than sentence-transformers' ``maxsim``).
- :class:`NanoBEIREvaluator`: the NanoBEIR evaluator, keys ``NanoSciFact_MaxSim_ndcg@10`` and
  ``NanoBEIR_mean_MaxSim_ndcg@10``. ``dataset_id`` may be a local folder built by
  :func:`pipeline.data.nano.build_nano_benchmark`, which is how it runs offline.
- :class:`BEIREvaluator`: the whole corpus of a local BEIR folder.

Example (each evaluator's own example runs it on a small benchmark):
    >>> from pipeline import evaluation
    >>> evaluation.evaluate(scores=[[{"id": "d1", "score": 2.0}, {"id": "d2", "score": 1.0}]],
    ...                     qrels={"q1": {"d1": 1}}, queries=["q1"], metrics=["ndcg@10"])
    {'ndcg@10': 1.0}

A package, as PyLate's ``evaluation`` is: ``retrieval`` (triplet and retrieval evaluators), ``distillation``
and ``beir`` (datasets and run metrics); everything public is importable from here.
"""

from __future__ import annotations

from pipeline.evaluation.beir import evaluate, get_beir_triples, load_beir, load_custom_dataset
from pipeline.evaluation.distillation import ColBERTDistillationEvaluator
from pipeline.evaluation.retrieval import (
    SCORE_FUNCTION_NAMES,
    BEIREvaluator,
    ColBERTTripletEvaluator,
    InformationRetrievalEvaluator,
    NanoBEIREvaluator,
    PyLateInformationRetrievalEvaluator,
)

__all__ = [
    "SCORE_FUNCTION_NAMES",
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
