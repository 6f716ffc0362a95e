"""The README's index-benchmark tables are rendered from the committed report, between their markers."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def _renderer():
    spec = importlib.util.spec_from_file_location(
        "render_index_bench", REPO / "bench" / "render_index_bench.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


REPORT = {
    "environment": {
        "date": "2026-11-28",
        "cpu": "x86_64",
        "cores": 2,
        "ram_gib": 23.5,
        "load_avg_1m": 9.0,
        "python": "3.11",
        "torch": "2.11.0",
        "cuda": False,
    },
    "command": "bench/index_bench.py --peer",
    "note": "under load",
    "rows": [
        {
            "dataset": "scifact",
            "documents": 500,
            "queries": 50,
            "index": "plaid",
            "ours": {"qps": 10.0, "recall@10": 0.9, "build_s": 8.0},
            "peer": {"qps": 4.0, "recall@10": 0.91, "build_s": 10.0},
        },
        {
            "dataset": "scifact",
            "documents": 500,
            "queries": 50,
            "index": "plaid at target",
            "ours": {"qps": 20.0, "recall@10": 0.97, "settings": "exact MaxSim"},
            "peer": {
                "qps": 5.0,
                "recall@10": 0.92,
                "settings": "n_ivf_probe=32 n_full_scores=4096",
                "reached": False,
            },
        },
    ],
}


def test_render_shows_ratios_the_unreached_peer_and_the_ratio_to_peer_defaults():
    text = _renderer().render(REPORT)
    assert "**under load**" in text and "`bench/index_bench.py --peer`" in text
    assert "| scifact (500, 50) | plaid (defaults) | QPS | 10.00 | 4.00 | 2.50 |" in text
    assert "(its best recall; none reached ours)" in text
    assert (
        "| scifact (500, 50) | plaid at target | QPS vs PyLate at its defaults | 20.00 | 4.00 | 5.00 |"
        in text
    )


def test_readme_tables_are_replaced_between_the_markers(tmp_path):
    module = _renderer()
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{module.BEGIN}\nold table\n{module.END}\noutro\n")
    module.replace_in_readme(readme, "new table")
    assert readme.read_text() == f"intro\n{module.BEGIN}\nnew table\n{module.END}\noutro\n"
    readme.write_text("no markers here\n")
    with pytest.raises(ValueError, match="needs the markers"):
        module.replace_in_readme(readme, "x")


@pytest.mark.parametrize("name", ["index_bench.json", "index_bench_cuda.json", "encode_bench.json"])
def test_the_committed_report_is_what_the_readme_shows(name):
    module = _renderer()
    record = REPO / "bench" / "records" / name
    begin, end = module.markers(module.README_TABLES[name])
    rendered = module.render(json.loads(record.read_text(encoding="utf-8")))
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert f"{begin}\n{rendered}\n{end}" in readme


def test_the_gpu_name_is_in_the_environment_line():
    report = {**REPORT, "environment": {**REPORT["environment"], "cuda": True, "gpu": "NVIDIA H200"}}
    assert "CUDA yes (NVIDIA H200)." in _renderer().render(report)


def test_index_corpus_rss_rows_show_the_per_chunk_peaks_and_the_ratio():
    report = {
        **REPORT,
        "index_corpus_rss": [
            {
                "documents": 500,
                "tokens": 7,
                "seconds": 9.0,
                "rss_after_model_mib": 990.0,
                "peak_rss_mib": 1500.0,
                "peak_rss_after_chunk_mib": [1500.0],
            },
            {
                "documents": 5000,
                "tokens": 70,
                "seconds": 90.0,
                "rss_after_model_mib": 990.0,
                "peak_rss_mib": 1800.0,
                "peak_rss_after_chunk_mib": [1500.0, 1800.0, 1800.0],
            },
        ],
    }
    text = _renderer().render(report)
    assert "| 5000 | 70 | 90 | 990 | 1800 | 1500, 1800, 1800 |" in text
    assert "Peak RSS for 10x the documents: 1.20x (target <= 1.1x)." in text
