"""Data readers and builders: BEIR folders (:mod:`pipeline.data.beir`) and local Nano benchmarks
(:mod:`pipeline.data.nano`).

Example:
    >>> from pipeline.data import load_beir, build_nano_benchmark  # doctest: +SKIP
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
