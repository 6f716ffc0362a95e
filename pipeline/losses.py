"""ColBERT training losses under PyLate's names, on sentence-transformers' multi-vector losses.

- ``Contrastive`` = ``MultiVectorMultipleNegativesRankingLoss``: cross-entropy of MaxSim over in-batch and
  hard negatives.
- ``CachedContrastive`` = ``CachedMultiVectorMultipleNegativesRankingLoss``: the same value with GradCache,
  memory bounded by ``mini_batch_size``.
- ``Distillation`` = ``MultiVectorDistillKLDivLoss``: KL divergence between teacher scores and student MaxSim.
  Where a step's documents (``batch x n_ways``) would not fit in memory, they are embedded in checkpointed
  groups of columns (:mod:`pipeline.training.checkpointing`): the same loss for a second document forward.

**Temperature.** PyLate's ``temperature`` is sentence-transformers' ``1 / scale``. The default is ``1.0``
(PyLate's and sentence-transformers' default); the PyLate docs point out that contrastive training is
sensitive to it and that ``temperature=0.02`` is the usual choice in the literature — MaxSim scores of
normalized embeddings are sums of cosines, and a small temperature sharpens the softmax over them.

Contrastive rows are ``query, positive`` followed by any number of negative columns (``negative``, or
``negative_1``, ``negative_2`` ...; a ``negatives`` list column is spread into such columns by
:class:`pipeline.utils.ColBERTCollator`). Distillation rows are ``query, documents, scores`` as
:class:`pipeline.utils.KDProcessing` produces them.

Example:
    >>> from pipeline import losses, models
    >>> model = models.ColBERT()
    >>> loss = losses.Contrastive(model=model, temperature=0.02)
    >>> loss.scale
    50.0
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any, Literal

import torch
import torch.nn.functional as F
from sentence_transformers.base.losses.merged_forward import embed_columns_padded
from sentence_transformers.multi_vector_encoder.losses import (
    CachedMultiVectorMultipleNegativesRankingLoss,
    MultiVectorDistillKLDivLoss,
    MultiVectorMultipleNegativesRankingLoss,
)
from sentence_transformers.multi_vector_encoder.model import MultiVectorEncoder
from sentence_transformers.multi_vector_encoder.scoring import colbert_kd_scores, mean_colbert_kd_scores
from sentence_transformers.util import stack_padded_token_embeddings
from torch import Tensor

from pipeline.training.checkpointing import document_groups, embed_documents_checkpointed
from pipeline.training.distributed import check_equal_batches

__all__ = [
    "DEFAULT_TEMPERATURE",
    "RECOMMENDED_TEMPERATURE",
    "CachedContrastive",
    "Contrastive",
    "Distillation",
]

#: The default contrastive temperature (PyLate's and sentence-transformers' default).
DEFAULT_TEMPERATURE = 1.0
#: The temperature the PyLate docs recommend for contrastive training.
RECOMMENDED_TEMPERATURE = 0.02


def _scale(temperature: float) -> float:
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)):
        raise TypeError(f"temperature must be a number, got {type(temperature).__name__}")
    if not 0 < temperature < math.inf:
        raise ValueError(f"temperature must be a positive finite number, got {temperature}")
    return 1.0 / float(temperature)


def _check_contrastive_columns(loss: Any, sentence_features: list[dict[str, Tensor]]) -> None:
    if len(sentence_features) < 2:
        raise ValueError(
            f"{type(loss).__name__} needs a query column and at least a positive column, "
            f"got {len(sentence_features)} column(s)"
        )


class _ContrastiveColumns:
    """What both contrastive losses add to sentence-transformers': a column check before the loss, the
    equal-batch check before documents are gathered across processes, and the temperature in the saved
    config (the mixin goes first so ``super()`` reaches the library's loss)."""

    temperature: float
    gather_across_devices: bool

    def forward(self, sentence_features: Iterable[dict[str, Tensor]], labels: Tensor | None = None) -> Tensor:
        features = list(sentence_features)
        _check_contrastive_columns(self, features)
        if self.gather_across_devices:
            # Uneven batches would misplace the positives' columns (or hang the gather): fail clearly first.
            check_equal_batches(len(features[0]["input_ids"]), features[0]["input_ids"].device)
        return super().forward(features, labels)  # type: ignore[misc]

    def get_config_dict(self) -> dict[str, Any]:
        return {"temperature": self.temperature, **super().get_config_dict()}  # type: ignore[misc]


class Contrastive(_ContrastiveColumns, MultiVectorMultipleNegativesRankingLoss):
    """In-batch and hard-negative contrastive loss over MaxSim scores (InfoNCE).

    Each query's positive competes with every other document in the batch (the others' positives and
    all negatives). Not compatible with gradient accumulation (the negatives are the batch): use
    :class:`CachedContrastive` for large effective batches.

    Args:
        model: The ColBERT model being trained.
        score_metric: Scoring function ``(queries, documents, queries_mask, documents_mask) -> scores``;
            MaxSim (``colbert_scores``) by default. ``similarity_fct`` is accepted as an alias.
        temperature: Softmax temperature (default ``1.0``; ``0.02`` is the usual choice, see module docs).
        gather_across_devices: Share documents across DDP ranks so each query sees the global batch: the mean
            of the ranks' losses and the DDP-averaged gradients are one process's on the concatenated batch
            (:mod:`pipeline.training.distributed`; PyLate's loss is that times the world size).
        mini_batch_size: Rows per forward when embedding the document columns (bounds padding waste).
            ``None`` (the default): one column's rows per forward on CPU, every document row in one
            forward on an accelerator (see :func:`document_rows`).

    Example:
        >>> from pipeline import losses, models
        >>> loss = losses.Contrastive(model=models.ColBERT(), temperature=0.02)
    """

    def __init__(
        self,
        model: MultiVectorEncoder,
        score_metric: Callable[..., Tensor] | None = None,
        temperature: float = DEFAULT_TEMPERATURE,
        gather_across_devices: bool = False,
        *,
        similarity_fct: Callable[..., Tensor] | None = None,
        mini_batch_size: int | None = None,
    ) -> None:
        super().__init__(
            model,
            scale=_scale(temperature),
            similarity_fct=score_metric or similarity_fct,
            mini_batch_size=mini_batch_size,
            gather_across_devices=gather_across_devices,
        )
        self.temperature = float(temperature)

    def forward(self, sentence_features: Iterable[dict[str, Tensor]], labels: Tensor | None = None) -> Tensor:
        features = list(sentence_features)
        chosen = self.mini_batch_size
        if chosen is not None or len(features) < 2:
            return super().forward(features, labels)
        # sentence-transformers' loss reads the attribute: set it for this call only, so the saved config
        # and a later step on another device still see the user's None.
        self.mini_batch_size = document_rows(features)
        try:
            return super().forward(features, labels)
        finally:
            self.mini_batch_size = chosen


def document_rows(features: list[dict[str, Tensor]]) -> int | None:
    """Rows per document forward where the user gave no ``mini_batch_size``: one column's rows on CPU,
    ``None`` (all columns merged into one forward) on an accelerator.

    sentence-transformers merges the positive and negative columns into one forward, which fills a GPU
    better. On a CPU the merged forward's memory-bound work (dropout masks, softmax and GELU over rows x
    heads x tokens x tokens) outgrows the caches: on SciFact batches (16 triplets, 180-token documents,
    2-core CPU) a step took 6.77 s merged and 4.89 s in forwards of one column (16 rows), PyLate's way.
    The train stage already embedded a column per forward (1.07x PyLate on long documents) where the
    seeds' code, merged, measured 0.79x (issue 37). Each chunk is embedded at its own width and padding is
    masked, so the loss and gradients are the merged forward's up to float rounding
    (``tests/library/test_losses.py``).

    Example:
        >>> import torch
        >>> column = {"input_ids": torch.ones(16, 180, dtype=torch.long)}
        >>> document_rows([column, column, column])
        16
        >>> document_rows([column, {"input_ids": torch.ones(16, 180, dtype=torch.long, device="meta")}])
    """
    documents = features[1]["input_ids"]
    return len(documents) if documents.device.type == "cpu" else None


class CachedContrastive(_ContrastiveColumns, CachedMultiVectorMultipleNegativesRankingLoss):
    """:class:`Contrastive` with GradCache: the same loss value, memory bounded by ``mini_batch_size``.

    The batch is embedded in chunks of ``mini_batch_size`` without gradients, the loss and the gradient
    with respect to each embedding are computed on the whole batch, and the chunks are then re-embedded
    with gradients to back-propagate the cached ones. Raise ``per_device_train_batch_size`` for more
    in-batch negatives and keep ``mini_batch_size`` as large as memory allows (it costs a second forward).

    Args:
        model: The ColBERT model being trained.
        mini_batch_size: Rows per embedding chunk (default 32).
        score_metric: Scoring function (MaxSim by default); ``similarity_fct`` is accepted as an alias.
        temperature: Softmax temperature (default ``1.0``; ``0.02`` is the usual choice).
        gather_across_devices: Share documents across DDP ranks (as :class:`Contrastive`).
        show_progress_bar: Show tqdm bars over the chunks.

    Example:
        >>> from pipeline import losses, models
        >>> loss = losses.CachedContrastive(model=models.ColBERT(), mini_batch_size=8)
    """

    def __init__(
        self,
        model: MultiVectorEncoder,
        mini_batch_size: int = 32,
        score_metric: Callable[..., Tensor] | None = None,
        temperature: float = DEFAULT_TEMPERATURE,
        gather_across_devices: bool = False,
        show_progress_bar: bool = False,
        *,
        similarity_fct: Callable[..., Tensor] | None = None,
    ) -> None:
        if isinstance(mini_batch_size, bool) or not isinstance(mini_batch_size, int) or mini_batch_size < 1:
            raise ValueError(f"mini_batch_size must be a positive integer, got {mini_batch_size!r}")
        super().__init__(
            model,
            scale=_scale(temperature),
            similarity_fct=score_metric or similarity_fct,
            mini_batch_size=mini_batch_size,
            gather_across_devices=gather_across_devices,
            show_progress_bar=show_progress_bar,
        )
        self.temperature = float(temperature)


class Distillation(MultiVectorDistillKLDivLoss):
    """Knowledge distillation: KL divergence between the teacher's and the student's score distributions.

    For each query, the teacher's scores over its ``n_ways`` documents and the student's MaxSim scores
    over the same documents are turned into softmax distributions and the student is pulled towards the
    teacher's. Rows come from :class:`pipeline.utils.KDProcessing` (``query``, ``documents``, ``scores``).

    Args:
        model: The ColBERT model being trained.
        score_metric: ``(queries, documents (Q, N, tokens, dim), masks) -> (Q, N)`` scores; by default
            MaxSim, divided by the query's token count when ``normalize_scores`` (PyLate's default).
        normalize_scores: Divide the student's MaxSim by the number of query tokens (default True), which
            keeps the student's scores on a cosine scale whatever the query length.
        temperature: Softmax temperature for both sides (default 1.0).
        teacher_temperature: Teacher-side override; match it to the spread of the teacher's scores.
        mini_batch_size: Rows per forward when embedding the documents (bounds padding waste).
        activation_budget: Bytes of activations a step's documents may keep for backward before they are
            embedded in checkpointed groups (:func:`pipeline.training.checkpointing.document_groups`);
            ``"auto"`` (default): a quarter of the free memory; ``None``: never checkpoint.

    Example:
        >>> from pipeline import losses, models
        >>> loss = losses.Distillation(model=models.ColBERT())
    """

    def __init__(
        self,
        model: MultiVectorEncoder,
        score_metric: Callable[..., Tensor] | None = None,
        normalize_scores: bool = True,
        temperature: float = 1.0,
        *,
        teacher_temperature: float | None = None,
        mini_batch_size: int | None = None,
        activation_budget: Literal["auto"] | int | None = "auto",
    ) -> None:
        budget_ok = activation_budget in (None, "auto") or (
            type(activation_budget) is int and activation_budget > 0
        )
        if not budget_ok:
            raise ValueError(
                f"activation_budget must be 'auto', None or a positive byte count, got {activation_budget!r}"
            )
        default_metric = mean_colbert_kd_scores if normalize_scores else colbert_kd_scores
        super().__init__(
            model,
            similarity_fct=score_metric or default_metric,
            temperature=temperature,
            teacher_temperature=teacher_temperature,
            mini_batch_size=mini_batch_size,
        )
        self.normalize_scores = normalize_scores
        self.activation_budget = activation_budget

    def forward(self, sentence_features: Iterable[dict[str, Tensor]], labels: Tensor) -> Tensor:
        if labels is None:
            raise ValueError(
                "Distillation needs the teacher's scores: rows must have a 'scores' column "
                "(use utils.KDProcessing and utils.ColBERTCollator)"
            )
        features = [dict(f) for f in sentence_features]
        real = torch.isfinite(labels)
        groups = document_groups(self.model, features[1:], self.activation_budget)
        if groups is None and bool(real.all()):
            return super().forward(features, labels)
        return self._masked_forward(features, labels, real, groups)

    def _masked_forward(
        self,
        features: list[dict[str, Tensor]],
        labels: Tensor,
        real: Tensor,
        groups: list[list[dict[str, Tensor]]] | None = None,
    ) -> Tensor:
        """The same KL divergence over rows of different lengths: padded documents (NaN teacher score,
        from :class:`pipeline.utils.ColBERTCollator`) are left out of both softmaxes and of the sum. With
        ``groups``, the documents are embedded group by group under checkpoints."""
        if bool((real.sum(dim=1) < 2).any()):
            raise ValueError("every distillation row needs at least two documents with a teacher score")
        query = self.model(features[0], task=features[0].get("task", "query"))
        if groups is None:
            columns = embed_columns_padded(
                self.model, features[1:], self.mini_batch_size, task_default="document"
            )
        else:
            columns = embed_documents_checkpointed(self.model, groups, self.mini_batch_size)
        documents, documents_mask = stack_padded_token_embeddings(*columns)
        scores = self.similarity_fct(
            query["token_embeddings"],
            documents,
            queries_mask=query["attention_mask"].bool(),
            documents_mask=documents_mask,
        )
        lowest = torch.finfo(scores.dtype).min
        student = F.log_softmax((scores / self.student_temperature).masked_fill(~real, lowest), dim=-1)
        teacher_logits = labels.detach().nan_to_num(0.0) / self.teacher_temperature
        teacher = F.log_softmax(teacher_logits.masked_fill(~real, lowest), dim=-1)
        divergence = (teacher.exp() * (teacher - student)).masked_fill(~real, 0.0).sum(dim=-1).mean()
        return divergence * (self.student_temperature**2)

    def get_config_dict(self) -> dict[str, Any]:
        return {
            "normalize_scores": self.normalize_scores,
            "activation_budget": self.activation_budget,
            **super().get_config_dict(),
        }
