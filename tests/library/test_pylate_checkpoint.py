"""A checkpoint saved by PyLate 1.6 itself loads in pipeline and encodes to what PyLate encoded.

The fixture (tests/fixtures/pylate-tiny, made by its make_fixture.py with real PyLate, see PROVENANCE.md)
holds a tiny random BERT turned into a ColBERT model and saved by PyLate, plus the embeddings PyLate's
``encode`` gave for a few queries and documents.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from pipeline import models

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "pylate-tiny"


@pytest.fixture(scope="module")
def pylate_model() -> models.ColBERT:
    # float32, as PyLate encoded the fixture: these tests check the loading, to float32's precision.
    return models.ColBERT(model_name_or_path=str(FIXTURE / "model"), device="cpu", encode_precision="fp32")


@pytest.fixture(scope="module")
def texts() -> dict[str, list[str]]:
    return json.loads((FIXTURE / "texts.json").read_text(encoding="utf-8"))


def test_the_fixture_was_saved_by_pylate_1_6() -> None:
    config = json.loads((FIXTURE / "model" / "config_sentence_transformers.json").read_text(encoding="utf-8"))
    versions = json.loads((FIXTURE / "versions.json").read_text(encoding="utf-8"))
    assert versions["pylate"].startswith("1.6")
    assert config["query_prefix"] == "[Q] " and config["model_type"] == "ColBERT"  # PyLate 1.6 layout


def test_settings_come_from_the_pylate_config(pylate_model: models.ColBERT) -> None:
    assert pylate_model.query_prefix == "[Q] " and pylate_model.document_prefix == "[D] "
    assert pylate_model.query_length == 32 and pylate_model.document_length == 180
    assert pylate_model.embedding_size == 128
    assert pylate_model.do_query_expansion and not pylate_model.attend_to_expansion_tokens
    tokenizer = pylate_model.transformer.tokenizer
    assert pylate_model.query_prefix_id == tokenizer.convert_tokens_to_ids("[Q] ")


def test_queries_encode_as_pylate_encoded_them(pylate_model, texts) -> None:
    expected = np.load(FIXTURE / "queries.npy")
    ours = np.stack(pylate_model.encode(texts["queries"], is_query=True))
    assert ours.shape == expected.shape
    np.testing.assert_allclose(ours, expected, rtol=1e-4, atol=1e-5)


def test_documents_encode_as_pylate_encoded_them(pylate_model, texts) -> None:
    lengths = np.load(FIXTURE / "documents_lengths.npy")
    expected = np.split(np.load(FIXTURE / "documents.npy"), np.cumsum(lengths)[:-1])
    ours = pylate_model.encode(texts["documents"], is_query=False)
    assert [len(d) for d in ours] == lengths.tolist()  # same tokens kept (skiplist, prefix)
    for mine, theirs in zip(ours, expected, strict=True):
        np.testing.assert_allclose(mine, theirs, rtol=1e-4, atol=1e-5)


def test_resaved_by_pipeline_it_still_encodes_the_same(pylate_model, texts, tmp_path) -> None:
    pylate_model.save(str(tmp_path / "resaved"))
    config = json.loads((tmp_path / "resaved" / "config_sentence_transformers.json").read_text("utf-8"))
    assert config["query_prefix"] == "[Q] " and config["document_prefix"] == "[D] "
    reloaded = models.ColBERT(
        model_name_or_path=str(tmp_path / "resaved"), device="cpu", encode_precision="fp32"
    )
    np.testing.assert_allclose(
        np.stack(reloaded.encode(texts["queries"], is_query=True)),
        np.load(FIXTURE / "queries.npy"),
        atol=1e-5,
    )


def test_at_the_default_precision_it_encodes_within_bfloat16_rounding(texts) -> None:
    # "auto" is bf16 on a bf16-native CPU (fp32 elsewhere): close to PyLate's float32, not equal.
    model = models.ColBERT(model_name_or_path=str(FIXTURE / "model"), device="cpu")
    assert model.encode_precision == "auto"
    ours = np.stack(model.encode(texts["queries"], is_query=True))
    np.testing.assert_allclose(ours, np.load(FIXTURE / "queries.npy"), atol=0.02)
    np.testing.assert_allclose(np.linalg.norm(ours, axis=-1), 1.0, rtol=1e-5)  # unit length in float32
