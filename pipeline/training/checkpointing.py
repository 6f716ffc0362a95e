"""Bounded activation memory for a training step's document forward: checkpoints per group of columns.

A knowledge-distillation step embeds ``batch x n_ways`` documents with gradients, and autograd keeps every
one of their activations until the backward. :func:`document_groups` estimates that memory and, when it would
not fit, splits the document columns into groups; :func:`embed_documents_checkpointed` embeds each group under
:func:`torch.utils.checkpoint.checkpoint`, which keeps only the group's embeddings and runs its forward again
during the backward. :class:`pipeline.losses.Distillation` uses both.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from sentence_transformers.base.losses.merged_forward import embed_columns_padded
from torch import Tensor
from torch.utils.checkpoint import checkpoint

__all__ = [
    "activation_bytes_per_token",
    "available_memory",
    "document_groups",
    "embed_documents_checkpointed",
]


def activation_bytes_per_token(model: Any, width: int) -> int:
    """A rough upper estimate of what a training forward keeps for backward, per token of a ``width``-token
    batch (float32; BERT-like encoder: attention scores, probabilities and their dropout per head, about a
    dozen hidden-size tensors and the feed-forward's two intermediate ones per layer).

    Calibrated on the offline MiniLM: 16 queries x 32 documents of 180 tokens (92k tokens, ~32 GB by this
    estimate) were OOM-killed at 23.6 GB resident, still in their forward.

    Example:
        >>> from pipeline import models
        >>> activation_bytes_per_token(models.ColBERT(), width=180) // 1000
        352
    """
    encoder = getattr(model, "_orig_mod", model)  # the model itself under torch.compile's wrapper
    config = getattr(getattr(encoder[0], "auto_model", None), "config", None)
    layers = getattr(config, "num_hidden_layers", 12)
    hidden = getattr(config, "hidden_size", 768)
    heads = getattr(config, "num_attention_heads", 12)
    intermediate = getattr(config, "intermediate_size", 4 * hidden)
    per_layer = 4 * (3 * heads * width + 12 * hidden + 2 * intermediate) + heads * width
    return layers * per_layer


def available_memory(device: torch.device) -> int:
    """Bytes free where the activations live: the GPU's free memory, else the machine's available RAM."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    import psutil

    return int(psutil.virtual_memory().available)


def document_groups(
    model: Any, columns: list[dict[str, Tensor]], budget: Literal["auto"] | int | None
) -> list[list[dict[str, Tensor]]] | None:
    """Groups of document columns to embed under gradient checkpoints, or ``None`` when all of them fit.

    A knowledge-distillation step embeds ``batch x n_ways`` documents with gradients; PyLate's own example
    (16 queries x 32 documents of up to 180 tokens) keeps ~32 GB of activations for its backward, more than
    a 24 GB machine has. When the estimate (:func:`activation_bytes_per_token`) exceeds ``budget`` bytes
    (``"auto"``: a quarter of the free memory), the columns are split into groups of half the budget each;
    the loss embeds each group inside :func:`torch.utils.checkpoint.checkpoint`, which keeps only the
    embeddings and runs the group's forward again during backward (with the same dropout: the RNG state is
    restored). Cost: one more forward of the documents, only on steps that would not have fit.

    Example:
        >>> from pipeline import models
        >>> model = models.ColBERT()
        >>> columns = [model.tokenize(["a document"] * 16, is_query=False) for _ in range(32)]
        >>> len(document_groups(model, columns, budget=2**40) or [])  # fits: no checkpoints
        0
        >>> [len(group) for group in document_groups(model, columns, budget=2**24)][:3]
        [1, 1, 1]
    """
    if budget is None or not columns or not torch.is_grad_enabled():
        return None
    if budget == "auto":
        budget = available_memory(model.device) // 4
    width = max(int(column["input_ids"].shape[-1]) for column in columns)
    rows = int(columns[0]["input_ids"].shape[0])
    per_column = rows * width * activation_bytes_per_token(model, width)
    if per_column * len(columns) <= budget:
        return None
    size = max(1, int(budget // 2 // per_column))
    return [columns[start : start + size] for start in range(0, len(columns), size)]


def _embed_group(model: Any, mini_batch_size: int | None, *group: dict[str, Tensor]) -> tuple[Tensor, ...]:
    # Fresh dicts: the forward writes its outputs into the features it is given (the scoring mask over
    # attention_mask among them), and the re-computation in backward must start from the same inputs.
    columns = [dict(column) for column in group]
    embeddings, masks = embed_columns_padded(model, columns, mini_batch_size, task_default="document")
    return (*embeddings, *masks)


def embed_documents_checkpointed(
    model: Any, groups: list[list[dict[str, Tensor]]], mini_batch_size: int | None
) -> tuple[list[Tensor], list[Tensor]]:
    """Each group of columns embedded under a non-reentrant checkpoint; per-column embeddings and masks."""
    embeddings: list[Tensor] = []
    masks: list[Tensor] = []
    for group in groups:
        outputs = checkpoint(_embed_group, model, mini_batch_size, *group, use_reentrant=False)
        embeddings.extend(outputs[: len(group)])
        masks.extend(outputs[len(group) :])
    return embeddings, masks
