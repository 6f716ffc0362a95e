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
