"""``python -m bench.limit``: encoding's FLOPs are counted whole (attention included) and each rate is
rendered as its share of the ceiling it is held to (no timing asserted: the figures are in
bench/records/machine_limit.json)."""

from __future__ import annotations

from bench import render
from bench.limit import BENCHMARK, encode_rate


def test_the_encoding_flop_count_is_every_linear_layer_and_attention_over_the_padded_tokens() -> None:
    from pipeline import models

    texts = ["scientific claims need evidence from the abstracts of papers"] * 3
    result = encode_rate(texts, "fp32")
    model = models.ColBERT(device="cpu", encode_precision="fp32")
    length = model.tokenize(texts[:1], is_query=False)["input_ids"].shape[1]
    config = model[0].auto_model.config
    linear = sum(
        parameter.numel()
        for name, parameter in model.named_parameters()
        if parameter.ndim == 2 and "embeddings" not in name and "pooler" not in name
    )
    # Per sequence: 2 FLOPs per weight per token, and per layer Q.K^T and attention.V (2 x 2 x L^2 x hidden).
    expected = len(texts) * (
        2 * linear * length + config.num_hidden_layers * 4 * length**2 * config.hidden_size
    )
    assert abs(result["flops"] - expected) / expected < 0.02
    assert result["gflops"] == result["flops"] / result["seconds"] / 1e9


def test_each_rate_is_shown_as_its_share_of_the_ceiling_it_is_held_to() -> None:
    record = {
        "benchmark": BENCHMARK,
        "environment": {"date": "2026-12-07", "cores": 2},
        "documents": 1000,
        "queries": 100,
        "ceilings": {"matmul_gflops": {"float32": 100.0, "bfloat16": 200.0}, "read_gbps": 20.0},
        "encoding": {"fp32": {"gflops": 55.0}, "bf16": {"gflops": 90.0}},
        "exact": {
            "document_tokens": 170_000,
            "batched_gflops": 30.0,
            "batched_seconds": 1.0,
            "single_query_gbps": 5.0,
            "single_query_ms": 17.4,
        },
    }
    text = render.render(record)
    assert (
        "| encode 1,000 SciFact documents, fp32 | 55.0 GFLOP/s | fp32 matmul (100.0 GFLOP/s) | 55% |" in text
    )
    assert (
        "| encode 1,000 SciFact documents, bf16 | 90.0 GFLOP/s | bf16 matmul (200.0 GFLOP/s) | 45% |" in text
    )
    assert "| 30.0 GFLOP/s | fp32 matmul (100.0 GFLOP/s) | 30% |" in text
    assert "| 5.0 GB/s | read bandwidth (20.0 GB/s) | 25% |" in text
    # One query's share of the batched run's FLOPs (0.3 GFLOP) over its 17.4 ms.
    assert (
        "| exact MaxSim, one query at a time, fp32 | 17.2 GFLOP/s | fp32 matmul (100.0 GFLOP/s) | 17% |"
        in text
    )
