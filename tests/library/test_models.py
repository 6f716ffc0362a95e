"""The ColBERT model layer: PyLate defaults, nested encode, save/load, PyLate-format checkpoints."""

from __future__ import annotations

import json
import string
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from pipeline import models


def test_new_model_gets_pylate_defaults(colbert_model):
    assert colbert_model.embedding_size == 128
    assert colbert_model.query_length == 32
    assert colbert_model.document_length == 180
    assert colbert_model.prompts["query"] == "[Q] "
    assert colbert_model.prompts["document"] == "[D] "
    assert set(colbert_model.skiplist_words) == set(string.punctuation)


def test_query_is_expanded_to_32_tokens_with_mask(colbert_model):
    features = colbert_model.tokenize(["a short query"], is_query=True)
    tokens = colbert_model.tokenizer.convert_ids_to_tokens(features["input_ids"][0])
    assert len(tokens) == 32
    assert tokens[:2] == ["[CLS]", "[Q] "]
    assert tokens[-1] == "[MASK]"
    [embedding] = colbert_model.encode(["a short query"], is_query=True)
    assert embedding.shape == (32, 128)


def test_documents_have_prefix_variable_length_and_no_punctuation(colbert_model):
    features = colbert_model.tokenize(["hello, world!"], is_query=False)
    tokens = colbert_model.tokenizer.convert_ids_to_tokens(features["input_ids"][0])
    assert tokens[:2] == ["[CLS]", "[D] "]
    short, long = colbert_model.encode(
        ["hello, world!", "a much longer document about many things"], is_query=False
    )
    # [CLS] [D] hello world [SEP]: the comma and the bang are on the skiplist.
    assert short.shape == (5, 128)
    assert long.shape[0] > short.shape[0]
    np.testing.assert_allclose(np.linalg.norm(long, axis=1), 1.0, rtol=1e-4)


def test_document_length_caps_tokens(colbert_model):
    [embedding] = colbert_model.encode(["word " * 400], is_query=False)
    assert embedding.shape[0] <= 180


def test_nested_lists_keep_their_shape_and_tensors_on_request(colbert_model):
    nested = colbert_model.encode([["document A", "document B"], ["document C"]], is_query=False)
    assert [len(group) for group in nested] == [2, 1]
    flat = colbert_model.encode(["document A", "document B", "document C"], is_query=False)
    np.testing.assert_allclose(nested[0][1], flat[1], atol=1e-5)
    tensors = colbert_model.encode(["document A"], is_query=False, convert_to_tensor=True)
    assert isinstance(tensors[0], torch.Tensor)


def test_save_load_round_trip_is_exact(colbert_model, saved_colbert):
    reloaded = models.ColBERT(model_name_or_path=str(saved_colbert), device="cpu")
    assert reloaded.prompts == colbert_model.prompts
    assert reloaded.query_length == 32 and reloaded.document_length == 180
    texts = ["late interaction, token by token", "query for document 3"]
    for is_query in (True, False):
        before = colbert_model.encode(texts, is_query=is_query)
        after = reloaded.encode(texts, is_query=is_query)
        for a, b in zip(before, after, strict=True):
            np.testing.assert_allclose(a, b, atol=1e-6)


def test_sentence_transformers_multivector_checkpoint_loads(saved_colbert):
    from sentence_transformers import MultiVectorEncoder

    native = MultiVectorEncoder(str(saved_colbert), device="cpu")
    ours = models.ColBERT(str(saved_colbert), device="cpu", encode_precision="fp32")
    a = native.encode_document(["a document"], convert_to_numpy=True)[0]
    b = ours.encode(["a document"], is_query=False)[0]
    np.testing.assert_allclose(a, b, atol=1e-6)  # float32 both: the same model, loaded the same
    ours.encode_precision = "auto"  # the default: bf16 on a bf16-native CPU, within its rounding
    np.testing.assert_allclose(a, ours.encode(["a document"], is_query=False)[0], atol=0.02)


def _write_pylate_checkpoint(target: Path) -> tuple[torch.Tensor, list[int]]:
    """A checkpoint in PyLate 1.6's layout, from the offline MiniLM; returns its projection and prefix ids."""
    from transformers import AutoModel, AutoTokenizer

    base = models.default_model_path()
    tokenizer = AutoTokenizer.from_pretrained(base)
    encoder = AutoModel.from_pretrained(base)
    vocab_size = len(tokenizer)
    tokenizer.add_tokens(["[Q] ", "[D] "])
    encoder.resize_token_embeddings(len(tokenizer))
    prefix_ids = [vocab_size, vocab_size + 1]  # the word-embedding matrix grew by exactly these two rows
    assert encoder.get_input_embeddings().weight.shape[0] == vocab_size + 2
    target.mkdir(parents=True)
    tokenizer.save_pretrained(target)
    encoder.save_pretrained(target)
    (target / "modules.json").write_text(
        json.dumps(
            [
                {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
                {"idx": 1, "name": "1", "path": "1_Dense", "type": "pylate.models.Dense.Dense"},
            ]
        )
    )
    (target / "sentence_bert_config.json").write_text(
        json.dumps({"max_seq_length": 179, "do_lower_case": False})
    )
    (target / "config_sentence_transformers.json").write_text(
        json.dumps(
            {
                "similarity_fn_name": "MaxSim",
                "query_prefix": "[Q] ",
                "document_prefix": "[D] ",
                "query_length": 32,
                "document_length": 180,
                "attend_to_expansion_tokens": False,
                "do_query_expansion": True,
                "skiplist_words": list(string.punctuation),
            }
        )
    )
    dense = target / "1_Dense"
    dense.mkdir()
    (dense / "config.json").write_text(
        json.dumps(
            {
                "in_features": 384,
                "out_features": 128,
                "bias": False,
                "activation_function": "torch.nn.modules.linear.Identity",
                "use_residual": False,
            }
        )
    )
    weight = torch.randn(128, 384, generator=torch.Generator().manual_seed(1)) / 20
    save_file({"linear.weight": weight.contiguous()}, str(dense / "model.safetensors"))
    return weight, prefix_ids


def test_pylate_format_checkpoint_loads(tmp_path):
    weight, (query_id, document_id) = _write_pylate_checkpoint(tmp_path / "pylate")
    model = models.ColBERT(model_name_or_path=str(tmp_path / "pylate"), device="cpu")
    assert model.embedding_size == 128
    assert model.query_length == 32
    query_ids = model.tokenize(["hello, world!"], is_query=True)["input_ids"][0].tolist()
    # The prefix is the single added token, right after [CLS]; the query is [MASK]-padded to 32.
    assert query_ids[0] == model.tokenizer.cls_token_id and query_ids[1] == query_id
    assert len(query_ids) == 32 and query_ids[-1] == model.tokenizer.mask_token_id
    document_ids = model.tokenize(["x"], is_query=False)["input_ids"][0].tolist()
    assert document_ids[1] == document_id
    [doc] = model.encode(["hello, world!"], is_query=False)
    assert doc.shape == (5, 128)  # punctuation skipped as PyLate does
    # The saved projection is the one in use, not a fresh random one.
    dense = next(m for m in model if m.__class__.__name__ == "Dense")
    torch.testing.assert_close(dense.linear.weight.detach(), weight)


def test_missing_local_path_is_one_clear_error(tmp_path):
    with pytest.raises(models.ModelNotFoundError, match="does not exist"):
        models.ColBERT(model_name_or_path=str(tmp_path / "nope"))


def test_unreachable_hub_id_offline_is_one_clear_error():
    with pytest.raises(models.ModelNotFoundError, match="HF_HUB_OFFLINE"):
        models.ColBERT(model_name_or_path="someone/not-a-cached-model")


def test_default_hub_id_resolves_offline():
    assert models.resolve_model_name(models.DEFAULT_MODEL_ID) == models.default_model_path()
    assert Path(models.default_model_path(), "model.safetensors").is_file()
