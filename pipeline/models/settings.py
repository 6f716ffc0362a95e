"""PyLate's ColBERT settings (prefixes, lengths, query expansion, skiplist, projection size) on a model.

A new model built from a plain encoder gets :data:`COLBERT_DEFAULTS` overridden by the arguments given; a
ColBERT checkpoint keeps what it was saved with, and only the arguments given change it. The settings live
where sentence-transformers' ``MultiVectorEncoder`` keeps them (its ``Transformer``, ``MultiVectorMask`` and
``Dense`` modules, its ``prompts``); :func:`pylate_config` writes them back out under PyLate's key names.

Example:
    >>> explicit_settings({"query_length": 64, "document_prefix": None})
    {'query_length': 64}
"""

from __future__ import annotations

import logging
import string
from typing import Any

import torch
from sentence_transformers.base.modules.dense import Dense
from sentence_transformers.multi_vector_encoder.modules import MultiVectorMask
from transformers import AddedToken

logger = logging.getLogger(__name__)

#: PyLate's ColBERT defaults, applied when a new model is built from a plain encoder.
COLBERT_DEFAULTS: dict[str, Any] = {
    "embedding_size": 128,
    "query_prefix": "[Q] ",
    "document_prefix": "[D] ",
    "query_length": 32,
    "document_length": 180,
    "do_query_expansion": True,
    "attend_to_expansion_tokens": False,
    "skiplist_words": list(string.punctuation),
}

_EXPANSION_KEYS = {"query_length", "do_query_expansion", "attend_to_expansion_tokens"}


def explicit_settings(given: dict[str, Any]) -> dict[str, Any]:
    """The settings a caller gave (``None`` means not given), checked."""
    explicit = {key: value for key, value in given.items() if value is not None}
    unknown = set(explicit) - set(COLBERT_DEFAULTS)
    if unknown:  # pragma: no cover - guarded by ColBERT's signature
        raise TypeError(f"unknown ColBERT settings: {sorted(unknown)}")
    embedding_size = explicit.get("embedding_size")
    if embedding_size is not None and embedding_size < 1:
        raise ValueError(f"embedding_size must be a positive integer, got {embedding_size}")
    return explicit


def mask_module(model: Any) -> MultiVectorMask | None:
    """The model's ``MultiVectorMask`` (it holds the skiplist), if it has one."""
    return next((module for module in model if isinstance(module, MultiVectorMask)), None)


def apply_colbert_settings(model: Any, settings: dict[str, Any], *, new_model: bool) -> None:
    """Set ``settings`` (keys of :data:`COLBERT_DEFAULTS`) on ``model``, a ``ColBERT``."""
    transformer = model.transformer
    if "embedding_size" in settings:
        set_projection(model, settings["embedding_size"], replace=not new_model)
    _set_prefixes(model, settings)
    if "document_length" in settings:
        transformer.document_length = int(settings["document_length"])
    if _EXPANSION_KEYS & set(settings):
        _set_query_expansion(model, settings, new_model=new_model)
    if "skiplist_words" in settings:
        mask = mask_module(model)
        if mask is None:  # pragma: no cover - every MultiVectorEncoder pipeline has a mask
            raise RuntimeError("the model has no MultiVectorMask module to hold a skiplist")
        mask.skiplist_words = list(settings["skiplist_words"])
        mask.resolve_with_tokenizer(transformer.tokenizer)


def _set_prefixes(model: Any, settings: dict[str, Any]) -> None:
    transformer = model.transformer
    prefixes = {"query": settings.get("query_prefix"), "document": settings.get("document_prefix")}
    new_tokens = [p for p in prefixes.values() if p and p not in transformer.tokenizer.get_vocab()]
    if new_tokens:
        # Added as whole, non-normalized tokens (as PyLate does) so "[Q] " stays one token on a
        # lowercasing tokenizer and lands right after [CLS] when the prompt is prepended.
        transformer.tokenizer.add_tokens([AddedToken(t, normalized=False, special=True) for t in new_tokens])
        transformer.auto_model.resize_token_embeddings(len(transformer.tokenizer))
    for role, prefix in prefixes.items():
        if prefix is not None:
            model.prompts[role] = prefix


def _set_query_expansion(model: Any, settings: dict[str, Any], *, new_model: bool) -> None:
    transformer = model.transformer
    current = transformer.query_expansion
    length = int(settings.get("query_length", model.query_length or COLBERT_DEFAULTS["query_length"]))
    expand = settings.get("do_query_expansion", current is not None or new_model)
    attend = settings.get("attend_to_expansion_tokens", bool(current and current["attend"]))
    # query_length is a content cap that must not undercut the expansion's pad target.
    transformer.query_expansion = None
    transformer.query_length = length
    if expand:
        transformer.query_expansion = {"strategy": "fixed", "attend": bool(attend), "length": length}


def set_projection(model: Any, embedding_size: int, *, replace: bool) -> None:
    """Give ``model`` a bias-free ``embedding_size``-dim projection, unless it has one of that size."""
    index, dense = next(((i, m) for i, m in enumerate(model) if isinstance(m, Dense)), (None, None))
    if dense is None or index is None:  # pragma: no cover - every ColBERT pipeline has a projection
        raise RuntimeError("the model has no Dense projection to resize")
    if dense.out_features == embedding_size:
        return
    if replace:
        logger.warning(
            "Replacing the trained %d-dim projection by a new random %d-dim one: train before use.",
            dense.out_features,
            embedding_size,
        )
    projection = Dense(
        in_features=dense.in_features,
        out_features=embedding_size,
        bias=False,
        activation_function=torch.nn.Identity(),
        module_input_name="token_embeddings",
    ).to(dense.linear.weight.device)
    model._modules[str(index)] = projection


def pylate_config(model: Any) -> dict[str, Any]:
    """PyLate's top-level config keys, so PyLate code and tools that read ``query_prefix``,
    ``document_prefix``, ``query_length`` ... from a saved model find them."""
    return {
        "query_prefix": model.query_prefix,
        "document_prefix": model.document_prefix,
        "query_length": model.query_length,
        "document_length": model.document_length,
        "attend_to_expansion_tokens": model.attend_to_expansion_tokens,
        "skiplist_words": model.skiplist_words,
        "do_query_expansion": model.do_query_expansion,
        # sentence-transformers' own spelling of the expansion, so a reload never falls back to
        # the PyLate default it applies when only the flat keys are present.
        "query_expansion": model.transformer.query_expansion,
    }
