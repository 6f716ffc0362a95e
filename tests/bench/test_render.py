"""Benchmark records render as Markdown (``python -m bench.render``), each with its environment; the docs
site renders its tables from the committed records with the same function (``tests/docs/test_docs.py``)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench import render
from bench.common import RECORDS

REPO = Path(__file__).resolve().parents[2]


def _renderer():
    return render


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
    "command": "python -m bench.index --peer",
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
    assert "**under load**" in text and "`python -m bench.index --peer`" in text
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


def test_kinds_keep_those_rows_and_the_ratio_to_peer_defaults() -> None:
    text = _renderer().render(REPORT, kinds=["plaid at target"])
    assert "| plaid (defaults) |" not in text
    ratio = "| scifact (500, 50) | plaid at target | QPS vs PyLate at its defaults | 20.00 | 4.00 | 5.00 |"
    assert ratio in text
    assert text.startswith("**under load**") and "Environment: 2026-11-28" in text


def test_every_record_kind_names_its_environment() -> None:
    for path in sorted(RECORDS.glob("*.json")):
        record = json.loads(path.read_text(encoding="utf-8"))
        text = render.render(record)
        assert "Environment: " in text and record["environment"]["python"] in text, path.name
        if record["environment"].get("gpu"):
            assert f"CUDA yes ({record['environment']['gpu']})" in text, path.name


def test_the_gpu_name_is_in_the_environment_line():
    report = {**REPORT, "environment": {**REPORT["environment"], "cuda": True, "gpu": "NVIDIA H200"}}
    assert "CUDA yes (NVIDIA H200)." in _renderer().render(report)


def test_the_cpu_model_and_whether_it_has_native_bf16_are_in_the_environment_line():
    """Whether `precision: auto` meant bfloat16 where a record was measured (issue 37's runs moved between a
    CPU with it and an AMD EPYC without)."""
    env = {**REPORT["environment"], "cpu_model": "AMD EPYC", "cpu_native_bf16": False}
    line = _renderer().render({**REPORT, "environment": env})
    assert "AMD EPYC, native bfloat16 no," in line and "x86_64" not in line.split("Command")[0]


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


@pytest.mark.parametrize("path", sorted(RECORDS.glob("*.json")), ids=lambda path: path.name)
def test_every_committed_record_renders(path: Path) -> None:
    """Each record in bench/records is one the renderer knows, and its table has a row per measurement."""
    record = json.loads(path.read_text(encoding="utf-8"))
    text = render.render(record)
    assert text.count("\n|") >= 2, text
    rows = record.get("rows") or record.get("variants") or record.get("samples_per_s_median")
    assert all(str(name) in text for name in (rows if isinstance(rows, dict) else [])), text


def test_the_command_renders_every_record_or_one(tmp_path: Path) -> None:
    command = [sys.executable, "-m", "bench.render"]
    everything = subprocess.run(command, capture_output=True, text=True, cwd=REPO, check=True).stdout
    assert "## index_bench.json" in everything and "## train_throughput.json" in everything
    one = subprocess.run(
        [*command, str(RECORDS / "quantized_encode.json")],
        capture_output=True,
        text=True,
        cwd=REPO,
        check=True,
    ).stdout
    assert one.startswith("scifact: ") and "| int8, every linear layer |" in one
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    failed = subprocess.run([*command, str(bad)], capture_output=True, text=True, cwd=REPO, check=False)
    assert failed.returncode != 0 and "not a benchmark record" in failed.stderr


SERVE = {
    "benchmark": "serve_load",
    "environment": REPORT["environment"],
    "command": "python -m bench.serve",
    "champion": {
        "corpus": "1000 SciFact documents",
        "model": "offline MiniLM ColBERT",
        "search_settings": {"mode": "exact", "batch_size": 64},
    },
    "settings": {"requests_per_level": 600, "seconds_per_level": 60.0, "k": 10},
    "runs": [
        {
            "batching": b,
            "concurrency": c,
            "requests": 600,
            "errors": 0,
            "rps": 10.0 * c,
            "p50_ms": 50.0,
            "p95_ms": p95,
            "p99_ms": p95 + 5,
            "mean_batch": 1.0 if not b else c / 2,
        }
        for b, c, p95 in ((False, 1, 60.0), (False, 16, 900.0), (True, 1, 61.0), (True, 16, 400.0))
    ],
    "rss": {
        "requests": 10000,
        "errors": 0,
        "before_mib": 700.0,
        "after_mib": 712.0,
        "reached_target": True,
        "samples": [[0, 700.0], [5000, 711.0], [10000, 712.0]],
    },
    "breakdown": {
        "precision": "bf16",
        "single": {"encode_ms": 10.0, "search_ms": 5.0, "other_ms": 3.0, "pyfunc_ms": 18.0, "json_ms": 0.1},
        "batch16": {"encode_ms": 2.0, "search_ms": 1.0, "other_ms": 0.5, "pyfunc_ms": 3.5, "json_ms": 0.1},
    },
    "batching": {"p95_ms_at_max_concurrency": {"off": 900.0, "on": 400.0}, "lowers_p95": True},
}


def test_the_serving_record_shows_latency_rss_the_split_and_the_batching_verdict() -> None:
    text = render.render(SERVE)
    assert text.startswith("Environment: 2026-11-28") and "exact MaxSim, batch 64" in text
    assert "| on | 16 | 600 | 0 | 160.0 | 50.0 | 400.0 | 405.0 | 8.00 |" in text
    assert "| off | 1 | 600 | 0 | 10.0 | 50.0 | 60.0 | 65.0 | 1.00 |" in text
    assert "700 MiB before the first request, 712 MiB after 10000 requests, 0 errors" in text
    assert "| 1 | 10.00 | 5.00 | 3.00 | 18.00 | 0.10 | n/a |" in text
    assert "Batching lowers p95 at the highest concurrency: 400 ms on, 900 ms off." in text
