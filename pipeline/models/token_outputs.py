"""PyLate's ``encode(..., output_value=None)``: every token's embedding with its id and masks, unfiltered.

``ColBERT.encode`` returns each text's *scored* token embeddings (padding and, for documents, punctuation
dropped). PyLate 1.6's ``output_value=None`` returns instead, per text, all token positions with what is
needed to filter them, so that an index can keep token ids beside embeddings (PyLate's Tachiom index does):

- ``token_embeddings``: ``(tokens, dim)``, every position, normalised as the default output is;
- ``input_ids``: ``(tokens,)`` the token ids (prefix token included);
- ``attention_mask``: ``(tokens,)`` what the encoder attended to (the tokenizer's mask, so query expansion
  positions are 0 unless the model attends to them);
- ``masks``: ``(tokens,)`` booleans, the scoring mask: ``token_embeddings[masks]`` is exactly what the
  default ``encode`` returns for the same text.

Each text's arrays end at its last real (or expansion) token, whatever the batch it was encoded with:
PyLate keeps the padding of the batch the text happened to fall in, which makes a text's output depend on
its neighbours; the contract above (aligned positions, ``masks`` selects the default output) is the same.
``padding=True`` pads every text to the longest, and, as PyLate, returns each array with a leading axis of
one (``(1, tokens, ...)``).

Example:
    >>> from pipeline import models
    >>> model = models.ColBERT()
    >>> out = model.encode(["a short text."], is_query=False, output_value=None)
    >>> sorted(out)
    ['attention_mask', 'input_ids', 'masks', 'token_embeddings']
    >>> ids, mask = out["input_ids"][0], out["masks"][0]
    >>> model.tokenizer.convert_ids_to_tokens(ids[~mask].tolist())    # what the default output drops
    ['.']
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from sentence_transformers.util import batch_to_device
from tqdm.auto import trange

KEYS = ("token_embeddings", "input_ids", "attention_mask", "masks")


def encode_token_outputs(
    model: Any,
    texts: list[str],
    *,
    task: str,
    prompt: str | None,
    batch_size: int,
    show_progress_bar: bool,
    device: str | torch.device | None,
    normalize_embeddings: bool,
) -> dict[str, list[torch.Tensor]]:
    """Per-text unfiltered outputs (the keys of :data:`KEYS`), as CPU tensors, in the order of ``texts``.

    Batches the texts in the order sentence-transformers' ``encode`` does (longest first), so each text
    sees the same padding, hence the same numbers, as in the default output.
    """
    device = model._resolve_inference_device(device)
    model.eval()
    order = np.argsort([-model._input_length(text) for text in texts])
    outputs: dict[str, list[torch.Tensor]] = {key: [None] * len(texts) for key in KEYS}  # type: ignore[misc]
    name = "queries" if task == "query" else "documents"
    for start in trange(0, len(texts), batch_size, desc=f"Encoding {name}", disable=not show_progress_bar):
        positions = [int(i) for i in order[start : start + batch_size]]
        features = model.preprocess([texts[i] for i in positions], prompt=prompt, task=task)
        features = batch_to_device(features, device)
        attended = features["attention_mask"].clone()  # the forward overwrites it with the scoring mask
        input_ids = features["input_ids"].clone()
        with torch.inference_mode():
            out = model(features, task=task)
        embeddings = out["token_embeddings"]
        if normalize_embeddings:
            embeddings = torch.nn.functional.normalize(embeddings, p=2, dim=-1)
        masks = out["attention_mask"].bool()
        for row, index in enumerate(positions):
            used = (attended[row].bool() | masks[row]).nonzero()
            end = int(used.max()) + 1 if len(used) else 0
            outputs["token_embeddings"][index] = embeddings[row, :end].cpu()
            outputs["input_ids"][index] = input_ids[row, :end].cpu()
            outputs["attention_mask"][index] = attended[row, :end].cpu()
            outputs["masks"][index] = masks[row, :end].cpu()
    return outputs


def pad_outputs(
    outputs: dict[str, list[torch.Tensor]], pad_token_id: int | None
) -> dict[str, list[torch.Tensor]]:
    """PyLate's ``padding=True``: every array padded to the longest text, each as ``(1, tokens, ...)``."""
    padded = {}
    for key, values in outputs.items():
        value = (pad_token_id or 0) if key == "input_ids" else 0
        stacked = torch.nn.utils.rnn.pad_sequence(values, batch_first=True, padding_value=value)
        padded[key] = list(stacked.split(1, dim=0))
    return padded


def convert(values: list[torch.Tensor], *, to_numpy: bool) -> list[Any]:
    """Tensors to numpy arrays (float32 for floating ones) when ``to_numpy``; else the tensors."""
    if not to_numpy:
        return values
    return [v.float().numpy() if v.is_floating_point() else v.numpy() for v in values]
