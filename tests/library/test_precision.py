"""``index.precision``: bf16 autocast encodes close to float32, returns float32, barely batch-dependent."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pipeline.models import backends as encoding
from pipeline.models import precision
from pipeline.models.precision import resolve_precision
from pipeline.project.config import ConfigError
from pipeline.project.params_file import load_params

TEXTS = [
    "The otter swims in cold rivers and eats fish.",
    "A heron stands still in shallow water, waiting.",
    "Badgers dig long tunnels and sleep by day; they live in groups called clans.",
    "Geckos climb glass.",
]


def test_auto_is_bf16_only_on_a_cpu_with_native_bfloat16(monkeypatch):
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: True)
    assert resolve_precision("auto", "cpu") == "bf16"
    assert resolve_precision("auto", "cuda:0") == "fp32"  # half precision measured no faster on a GPU
    assert resolve_precision("fp32", "cpu") == "fp32" and resolve_precision("bf16", "cuda") == "bf16"
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: False)
    assert resolve_precision("auto", "cpu") == "fp32"
    with pytest.raises(ValueError, match=r"index.precision: 'int8' is not one of auto, fp32, bf16"):
        resolve_precision("int8", "cpu")


def test_other_backends_encode_in_their_own_precision():
    with pytest.raises(ValueError, match=r"index.backend: 'onnx' runs its own graph; precision bf16 needs"):
        encoding.load_model("unused", backend="onnx", precision="bf16")
    # in params.yaml it is refused when the params are read, naming the key
    # (the error names where the value came from: here the --set override)
    with pytest.raises(ConfigError, match=r"--set index\.precision: .*bf16 needs backend 'torch'"):
        load_params("no-such-file.yaml", {"index.backend": "openvino", "index.precision": "bf16"})


def test_bf16_encodes_close_to_fp32_in_float32_whatever_the_batch(colbert_model):
    model = colbert_model
    assert model.encode_precision == "auto"  # the library's default
    try:
        model.encode_precision = "fp32"
        reference = model.encode(TEXTS, is_query=False)
        model.encode_precision = "bf16"
        documents = model.encode(TEXTS, is_query=False, batch_size=4)
        alone = [model.encode([text], is_query=False, batch_size=1)[0] for text in TEXTS]
        tensors = model.encode(TEXTS[:2], is_query=True, convert_to_tensor=True)
    finally:
        model.encode_precision = "auto"
    assert not torch.is_autocast_enabled("cpu")  # nothing leaks out of encode
    assert all(d.dtype == np.float32 for d in documents)
    assert all(t.dtype == torch.float32 for t in tensors)  # never a bfloat16 tensor to the caller
    for bf16, fp32 in zip(documents, reference, strict=True):
        assert bf16.shape == fp32.shape
        difference = float(np.abs(bf16 - fp32).max())
        assert 0 < difference < 0.02  # bfloat16 products: near, not equal (unit-length token vectors)
    # Alone or batched with longer texts, a text's embedding moves by bfloat16 rounding only (oneDNN blocks
    # the products by batch shape): far below dynamic int8's 0.13 (docs/benchmarks.md, encoding precision).
    drift = max(float(np.abs(s - b).max()) for s, b in zip(alone, documents, strict=True))
    assert drift < 0.01
