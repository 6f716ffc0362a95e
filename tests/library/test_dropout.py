"""Cheaper dropout masks for CPU training: the same distribution, the same attention, nothing saved."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from transformers.integrations.sdpa_attention import sdpa_attention_forward

from pipeline.training import dropout


def test_masks_drop_at_the_rate_asked_and_follow_torch_seed():
    for p in (0.1, 0.5, 0.9):
        torch.manual_seed(0)
        mask = dropout.drop_mask((1000, 1000), p)
        # 10^6 Bernoulli draws: the rate's standard deviation is at most 0.0005.
        assert abs(mask.float().mean().item() - p) < 0.003
    torch.manual_seed(1)
    first, second = dropout.drop_mask((64, 64), 0.3), dropout.drop_mask((64, 64), 0.3)
    torch.manual_seed(1)
    assert torch.equal(dropout.drop_mask((64, 64), 0.3), first)
    assert not torch.equal(first, second)
    # Neighbouring elements are independent (no lane pattern from splitting 64-bit words).
    pairs = dropout.drop_mask((500_000, 2), 0.5).float()
    assert abs((pairs[:, 0] * pairs[:, 1]).mean().item() - 0.25) < 0.005
    with pytest.raises(ValueError, match="between 0 and 1"):
        dropout.drop_mask((2, 2), 1.0)


def test_mask_dropout_trains_like_dropout_and_is_the_identity_in_eval():
    layer = dropout.MaskDropout(0.2).train()
    inputs = torch.randn(300, 400, requires_grad=True)
    out = layer(inputs)
    kept = out != 0
    assert abs(1 - kept.float().mean().item() - 0.2) < 0.01
    assert torch.allclose(out[kept], inputs[kept] / 0.8)
    out.sum().backward()
    assert torch.allclose(inputs.grad, kept.float() / 0.8)
    assert torch.equal(layer.eval()(inputs), inputs)


def _qkv(dtype=torch.float32):
    torch.manual_seed(2)
    return [torch.randn(2, 3, 7, 4, dtype=dtype, requires_grad=True) for _ in range(3)]


def _padding(batch=2, tokens=7):
    attend = torch.ones(batch, 1, tokens, tokens, dtype=torch.bool)
    attend[0, ..., 5:] = False  # the first row's last two tokens are padding
    return attend


def test_attention_with_dropout_is_softmax_attention_over_the_same_mask(monkeypatch):
    query, key, value = _qkv(torch.float64)
    attend = _padding()
    torch.manual_seed(5)
    dropped = dropout.drop_mask((2, 3, 7, 7), 0.3)
    monkeypatch.setattr(dropout, "drop_mask", lambda shape, p: dropped)

    module = torch.nn.Module()
    out, _ = dropout.attention(module, query, key, value, attend, dropout=0.3, scaling=0.5)
    scores = (query @ key.transpose(-1, -2) * 0.5).masked_fill(~attend, float("-inf"))
    reference = (scores.softmax(-1).masked_fill(dropped, 0.0) / 0.7 @ value).transpose(1, 2)
    assert torch.allclose(out, reference)
    grads = torch.autograd.grad(out.sum(), (query, key, value))
    expected = torch.autograd.grad(reference.sum(), (query, key, value))
    for got, want in zip(grads, expected, strict=True):
        assert torch.allclose(got, want)
    assert torch.autograd.gradcheck(
        lambda q, k, v: dropout.attention(module, q, k, v, attend, dropout=0.3, scaling=0.5)[0],
        (query, key, value),
    )


def test_attention_without_dropout_is_sdpa():
    query, key, value = _qkv()
    module = torch.nn.Module()
    out, _ = dropout.attention(module, query, key, value, _padding(), dropout=0.0)
    expected, _ = sdpa_attention_forward(module, query, key, value, _padding(), dropout=0.0, is_causal=False)
    assert torch.equal(out, expected)


@pytest.fixture
def cheap_model(colbert_model):
    model = copy.deepcopy(colbert_model)
    swapped = dropout.use_cheap_dropout(model)
    return model, swapped


def test_a_colbert_model_takes_it_and_padding_stays_masked(cheap_model, colbert_model):
    model, swapped = cheap_model
    bert = model.transformer.auto_model
    # MiniLM-L6: embeddings + 6 layers x (attention probabilities, attention output, feed-forward output).
    assert swapped == 19 and bert.config._attn_implementation == dropout.ATTENTION
    assert not any(type(m) is torch.nn.Dropout for m in model.modules())
    # Dropout so rare that nothing is dropped: a training forward then computes what evaluation does,
    # through the new attention (dropout > 0), on a batch whose shorter document is padded.
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 1e-12
    documents = ["a short one", "a much longer document, with many more tokens than the first " * 3]
    features = model.tokenize(documents, is_query=False)
    assert not features["attention_mask"].all()
    with torch.no_grad():
        trained = model.train()(dict(features))["token_embeddings"]
        evaluated = colbert_model.eval()(dict(features))["token_embeddings"]
    assert torch.allclose(trained, evaluated, atol=1e-5)


def test_a_training_step_is_repeatable_under_torch_seed(cheap_model):
    model, _ = cheap_model
    model.train()
    features = dict(model.tokenize(["ColBERT scores late interactions between tokens"], is_query=False))

    # The embeddings themselves, not a sum of their squares: each token's is normalised, so that sum is the
    # token count whatever the dropout mask (it compared 10.0 with 10.0 on an AMD EPYC).
    def embeddings_with_seed(seed: int) -> torch.Tensor:
        torch.manual_seed(seed)
        return model(dict(features))["token_embeddings"].detach()

    assert torch.equal(embeddings_with_seed(4), embeddings_with_seed(4))
    assert not torch.equal(embeddings_with_seed(4), embeddings_with_seed(5))


def test_what_is_saved_does_not_name_the_cheap_attention(cheap_model, tmp_path):
    from pipeline import models

    model, _ = cheap_model
    model.save_pretrained(str(tmp_path))
    texts = [path.read_text() for path in tmp_path.rglob("*.json")]
    assert texts and not any(dropout.ATTENTION in text for text in texts)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config.get("attn_implementation") in (None, "sdpa")
    loaded = models.ColBERT(model_name_or_path=str(tmp_path), device="cpu")
    assert loaded.transformer.auto_model.config._attn_implementation == "sdpa"
