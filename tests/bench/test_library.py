"""``python -m bench.index.library``: its exact reference, the check that rows are comparable, the ratios
and the rendered tables (no timing asserted: the figures are in bench/records/library_defaults.json)."""

from __future__ import annotations

import numpy as np
import pytest

from bench.index.library import ROWS, check_comparable, exact_top10, render_library, summarize
from pipeline.indexes.indexing import exact_search


def test_the_exact_reference_is_exact_maxsim():
    rng = np.random.default_rng(0)
    documents = [rng.standard_normal((int(rng.integers(3, 12)), 16)).astype(np.float32) for _ in range(40)]
    queries = [rng.standard_normal((5, 16)).astype(np.float32) for _ in range(11)]
    expected = exact_search(queries, documents, list(range(40)), k=10)
    assert exact_top10(queries, documents) == [[hit["id"] for hit in row] for row in expected]


def _run(name: str, **changes: object) -> dict:
    run = {
        "row": name,
        "library": "pylate 1.6.0" if name == "pylate" else "colbert-pipeline 0.1.0",
        "fast_plaid": "1.4.6" if name == "pylate" else "1.7.0",
        "precision": "bf16" if name == "ours" else "fp32",
        "search": "PLAID",
        "documents": 100,
        "queries": 10,
        "torch_threads": 2,
        "encode_docs_per_s": {"ours": 30.0, "pylate": 20.0, "ours-like-pylate": 21.0}[name],
        "build_s": {"ours": 4.0, "pylate": 10.0, "ours-like-pylate": 9.0}[name],
        "qps": {"ours": 9.0, "pylate": 3.0, "ours-like-pylate": 3.0}[name],
        "recall@10": 0.96,
        "disk_mib": 1.0,
        "peak_rss_mib": 900.0,
    }
    return {**run, **changes}


def test_rows_that_differ_in_what_they_must_share_are_refused_by_name():
    rows = {name: [_run(name)] for name in ROWS}
    check_comparable(rows)
    rows["pylate"].append(_run("pylate", torch_threads=1))
    with pytest.raises(SystemExit, match=r"rows differ in torch_threads.*'pylate#1': 1"):
        check_comparable(rows)


def test_ratios_are_ours_over_pylates_means_and_render_labelled():
    rows = {name: [_run(name), _run(name)] for name in ROWS}
    rows["pylate"][1] = _run("pylate", build_s=30.0)  # mean 20 s
    summary = summarize(rows)
    assert summary["ours"]["vs_pylate"] == {"encode": 1.5, "qps": 3.0, "build_time": 0.2}
    assert summary["ours-like-pylate"]["vs_pylate"]["build_time"] == pytest.approx(0.45)
    record = {
        "dataset": "scifact",
        "documents": 100,
        "tokens": 1500,
        "queries": 10,
        "rounds": 2,
        "environment": {"date": "2026-12-07", "cores": 2},
        "summary": summary,
        "sweep": [{"n_ivf_probe": 4, "n_full_scores": 1024, "rerank": 256, "qps": 9.0, "recall@10": 0.97}],
    }
    text = render_library(record)
    assert "| ours at its defaults | 1.50x | 3.00x | 0.20x |" in text
    assert 'PyLate\'s settings (`encode_precision="fp32"`, `rerank=0`) | 1.05x | 1.00x | 0.45x |' in text
    assert "| 4 | 1024 | 256 | 9.00 | 0.970 |" in text
