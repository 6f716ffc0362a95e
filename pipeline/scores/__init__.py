"""Scores between queries and documents, a package as PyLate's ``scores`` is.

- :mod:`~pipeline.scores.colbert`: MaxSim (``colbert_scores``, ``colbert_scores_pairwise``,
  ``colbert_kd_scores``, ``ColBERTScores``, ``SimilarityFunction``);
- :mod:`~pipeline.scores.xtr`: XTR's training scores (``XTRScores``, ``XTRKDScores``, ``xtr_scores``,
  ``xtr_kd_scores``);
- :mod:`~pipeline.scores.inputs`: per-text embeddings checked and converted for scoring (``as_tensors``).

Everything public is importable from here, as from PyLate's ``pylate.scores``.

Example:
    >>> import torch
    >>> from pipeline import scores
    >>> scores.colbert_scores([torch.eye(2)], [torch.eye(2)[:1]]).tolist()
    [[1.0]]
"""

from __future__ import annotations

from pipeline.scores.colbert import (
    ColBERTScores,
    SimilarityFunction,
    colbert_kd_scores,
    colbert_scores,
    colbert_scores_pairwise,
)
from pipeline.scores.inputs import as_tensors
from pipeline.scores.xtr import XTRKDScores, XTRScores, xtr_kd_scores, xtr_scores

__all__ = [
    "ColBERTScores",
    "SimilarityFunction",
    "XTRKDScores",
    "XTRScores",
    "as_tensors",
    "colbert_kd_scores",
    "colbert_scores",
    "colbert_scores_pairwise",
    "xtr_kd_scores",
    "xtr_scores",
]
