"""Data readers and builders: BEIR folders (:mod:`pipeline.data.beir`) and local Nano benchmarks
(:mod:`pipeline.data.nano`).

Prepare's data sources (sample, triplets, KD, BEIR) and the leak check are in :mod:`pipeline.data.sources`.

Example:
    >>> from pipeline.data import BeirData, build_nano_benchmark, load_nano_benchmark
    >>> data = BeirData(corpus={"d1": "koalas eat leaves", "d2": "trains run"}, queries={"q1": "koala food?"},
    ...                 qrels={"q1": {"d1": 1}}, name="toy")
    >>> info = build_nano_benchmark(data, "nano", n_queries=1, n_documents=2, seed=0)
    >>> info.split_name, load_nano_benchmark("nano", info.split_name).queries
    ('NanoToy', {'q1': 'koala food?'})
"""

from __future__ import annotations

from pipeline.data.beir import BeirData, BeirFormatError, load_beir
from pipeline.data.nano import NanoBenchmark, build_nano_benchmark, list_nano_benchmarks, load_nano_benchmark

__all__ = [
    "BeirData",
    "BeirFormatError",
    "NanoBenchmark",
    "build_nano_benchmark",
    "list_nano_benchmarks",
    "load_beir",
    "load_nano_benchmark",
]
