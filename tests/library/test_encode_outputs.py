"""``ColBERT.encode``'s PyLate options (issue 19): ``output_value=None``, ``padding`` and ``pool_factor``."""

from __future__ import annotations

import numpy as np
import pytest
import torch

DOCUMENTS = [
    "Late interaction keeps one vector per token, then sums the best matches.",
    "Short one.",
    "Punctuation (brackets, commas; colons) is dropped from documents: only words score!",
]


def test_masks_select_exactly_the_default_document_output(colbert_model) -> None:
    default = colbert_model.encode(DOCUMENTS, is_query=False)
    out = colbert_model.encode(DOCUMENTS, is_query=False, output_value=None)
    assert set(out) == {"token_embeddings", "input_ids", "attention_mask", "masks"}
    tokenizer = colbert_model.tokenizer
    for expected, embeddings, ids, attention, mask in zip(
        default, out["token_embeddings"], out["input_ids"], out["attention_mask"], out["masks"], strict=True
    ):
        assert embeddings.shape[0] == ids.shape[0] == attention.shape[0] == mask.shape[0]
        assert mask.dtype == np.bool_ and ids.dtype == np.int64
        np.testing.assert_allclose(embeddings[mask], expected, atol=1e-6)
        # The dropped positions are the skiplist's punctuation, nothing else; the prefix token is kept.
        dropped = tokenizer.convert_ids_to_tokens(ids[~mask].tolist())
        assert dropped and all(token in colbert_model.skiplist_words for token in dropped)
        assert ids[1] == colbert_model.document_prefix_id and mask[1]


def test_query_expansion_positions_score_but_are_not_attended(colbert_model) -> None:
    queries = ["what is late interaction", "xtr"]
    default = colbert_model.encode(queries, is_query=True)
    out = colbert_model.encode(queries, is_query=True, output_value=None)
    for expected, embeddings, attention, mask in zip(
        default, out["token_embeddings"], out["attention_mask"], out["masks"], strict=True
    ):
        assert len(mask) == colbert_model.query_length and mask.all()  # expansion tokens are scored
        assert 0 < attention.sum() < len(attention)  # ... but the encoder did not attend to them
        np.testing.assert_allclose(embeddings[mask], expected, atol=1e-6)


@pytest.mark.parametrize(("precision", "tolerance"), [("fp32", 1e-5), ("bf16", 0.01)])
def test_a_texts_output_does_not_depend_on_its_batch(colbert_model, precision, tolerance) -> None:
    # In float32 not at all; in bf16 (what "auto" picks on a bf16-native CPU) by bfloat16 rounding only
    # (oneDNN blocks its products by batch shape: pipeline/models/precision.py).
    colbert_model.encode_precision = precision
    try:
        alone = colbert_model.encode(DOCUMENTS[1], is_query=False, output_value=None)
        batched = colbert_model.encode(DOCUMENTS, is_query=False, output_value=None)
    finally:
        colbert_model.encode_precision = "auto"
    assert alone["token_embeddings"].ndim == 2  # one text: a dict of single items
    np.testing.assert_array_equal(alone["input_ids"], batched["input_ids"][1])
    np.testing.assert_allclose(alone["token_embeddings"], batched["token_embeddings"][1], atol=tolerance)


def test_padding_gives_pylates_leading_axis_and_pads_ids_with_the_pad_token(colbert_model) -> None:
    out = colbert_model.encode(DOCUMENTS, is_query=False, output_value=None, padding=True)
    longest = max(len(ids[0]) for ids in out["input_ids"])
    for key, values in out.items():
        assert all(value.shape[:2] == (1, longest) for value in values), key
    short_ids, short_mask = out["input_ids"][1][0], out["masks"][1][0]
    assert (short_ids[~short_mask][-1]) == colbert_model.tokenizer.pad_token_id
    default = colbert_model.encode(DOCUMENTS, is_query=False, padding=True, convert_to_tensor=True)
    assert all(isinstance(e, torch.Tensor) and e.shape[:2] == (1, default[0].shape[1]) for e in default)


def test_pool_factor_merges_document_tokens_only(colbert_model) -> None:
    full = colbert_model.encode(DOCUMENTS[:1], is_query=False)[0]
    pooled = colbert_model.encode(DOCUMENTS[:1], is_query=False, pool_factor=2)[0]
    assert len(pooled) < len(full) and len(pooled) >= len(full) // 2
    np.testing.assert_allclose(pooled[0], full[0], atol=1e-6)  # the protected [CLS] is kept as is
    query = colbert_model.encode(["what is late interaction"], is_query=True, pool_factor=2)[0]
    assert len(query) == colbert_model.query_length


def test_bad_output_options_are_refused_before_encoding(colbert_model) -> None:
    with pytest.raises(ValueError, match="output_value must be"):
        colbert_model.encode(DOCUMENTS, is_query=False, output_value="sentence_embedding")
    with pytest.raises(ValueError, match="pool_factor"):
        colbert_model.encode(DOCUMENTS, is_query=False, output_value=None, pool_factor=2)


def test_sentence_transformers_own_calls_keep_their_raw_dicts(colbert_model) -> None:
    """``encode_document(..., output_value=None)`` (sentence-transformers' API, used by its evaluators) still
    gets sentence-transformers' list of per-text feature dicts, not PyLate's dict of lists."""
    raw = colbert_model.encode_document(DOCUMENTS[:2], output_value=None)
    assert isinstance(raw, list) and len(raw) == 2 and "token_embeddings" in raw[0]
    default = colbert_model.encode_document(DOCUMENTS[:2], convert_to_numpy=True)
    assert len(default) == 2 and default[0].ndim == 2
