"""PyLate's prefix bookkeeping (issue 19): ``tokenize`` leaves ``max_seq_length`` at the text budget."""

from __future__ import annotations

import copy

from pipeline import models


def test_tokenize_leaves_the_text_budget_without_the_prefix_token(colbert_model) -> None:
    model = copy.deepcopy(colbert_model)  # tokenize changes max_seq_length: keep the session model as is
    model.tokenize(["hello world"], is_query=True)
    assert model._first_module().max_seq_length == model.query_length - 1
    model.tokenize(["hello world"], is_query=False)
    assert model._first_module().max_seq_length == model.document_length - 1


def test_the_budget_never_caps_the_other_side(colbert_model) -> None:
    """After a query's tokenize (budget 31), documents are still cut at ``document_length``, not 31."""
    model = copy.deepcopy(colbert_model)
    model.tokenize(["a query"], is_query=True)
    long_document = " ".join(["retrieval"] * 400)
    assert model.tokenize([long_document], is_query=False)["input_ids"].shape[1] == model.document_length
    assert len(model.encode(long_document, is_query=False)) == model.document_length


def test_no_prefix_means_the_whole_length_is_text() -> None:
    model = models.ColBERT(query_prefix="", document_prefix="", device="cpu")
    assert model.query_prefix_id is None and model.document_prefix_id is None
    model.tokenize(["hello world"], is_query=True)
    assert model._first_module().max_seq_length == model.query_length
    tokens = model.tokenize(["hello world"], is_query=False)["input_ids"][0]
    assert model.tokenizer.convert_ids_to_tokens(tokens.tolist()) == ["[CLS]", "hello", "world", "[SEP]"]
