"""Every ours/PyLate ratio compares like with like or says how not (issue 37): each side's setup is
recorded (:func:`bench.common.setup`), :func:`bench.common.check_setups` refuses a difference the comparison
does not declare, naming it, and the renderers refuse a record whose paired rows differ undeclared."""

from __future__ import annotations

import copy
import importlib.metadata

import pytest
import torch

from bench import render
from bench.common import (
    PEER_PINNED,
    SETUP_KEYS,
    SetupMismatch,
    check_setups,
    setup,
)

OURS = {
    "library": "pipeline",
    "precision": "fp32",
    "torch_threads": 2,
    "torch": "2.11.0",
    "transformers": "5.23.0",
    "sentence-transformers": "6.2.0",
    "fast-plaid": "1.7.0",
}
#: Each value PyLate's side would show when it differs, key by key.
OTHER = {
    "precision": "bf16",
    "torch_threads": 1,
    "torch": "2.10.0",
    "transformers": "5.3.0",
    "sentence-transformers": "5.3.0",
    "fast-plaid": "1.4.6",
}


def peer_with(**changes: object) -> dict[str, object]:
    return {**OURS, "library": "pylate", **changes}


def test_setup_records_the_precision_threads_and_versions_this_process_runs() -> None:
    recorded = setup("pipeline", "bf16")
    assert recorded["precision"] == "bf16"
    assert recorded["torch_threads"] == torch.get_num_threads()
    assert recorded["torch"] == importlib.metadata.version("torch")
    assert recorded["transformers"] == importlib.metadata.version("transformers")
    assert recorded["library_version"] == importlib.metadata.version("colbert-pipeline")
    assert set(SETUP_KEYS) <= set(recorded)


@pytest.mark.parametrize("key", SETUP_KEYS)
@pytest.mark.parametrize("comparison", ["like for like", "defaults"])
def test_an_undeclared_difference_is_refused_naming_the_key_and_both_values(
    key: str, comparison: str
) -> None:
    with pytest.raises(SetupMismatch) as refused:
        check_setups(OURS, peer_with(**{key: OTHER[key]}), comparison, what="scifact encode")
    message = str(refused.value)
    assert f"{key} {OURS[key]} vs {OTHER[key]}" in message
    assert "scifact encode" in message


def test_every_differing_key_is_named_at_once() -> None:
    with pytest.raises(SetupMismatch) as refused:
        check_setups(OURS, peer_with(precision="bf16", torch_threads=1), "defaults")
    assert "precision fp32 vs bf16" in str(refused.value)
    assert "torch_threads 2 vs 1" in str(refused.value)


def test_a_declared_difference_is_accepted_and_returned_for_the_table() -> None:
    peer = peer_with(precision="bf16", **{"fast-plaid": "1.4.6"})
    differing = check_setups(OURS, peer, "defaults", declared=("precision", "fast-plaid"))
    assert differing == {"precision": ("fp32", "bf16"), "fast-plaid": ("1.7.0", "1.4.6")}
    # The libraries themselves differ: that is what is compared, never a mismatch.
    assert check_setups(OURS, peer_with(), "like for like") == {}


def test_like_for_like_may_declare_pinned_versions_but_not_precision_or_threads() -> None:
    peer = peer_with(**{"fast-plaid": "1.4.6"})
    assert check_setups(OURS, peer, "like for like", declared=PEER_PINNED) == {
        "fast-plaid": ("1.7.0", "1.4.6")
    }
    for key in ("precision", "torch_threads"):
        with pytest.raises(SetupMismatch, match=key):
            check_setups(OURS, peer_with(**{key: OTHER[key]}), "like for like", declared=(key,))
    with pytest.raises(SetupMismatch, match="'roughly'"):
        check_setups(OURS, OURS, "roughly")


def index_record(peer_setup: dict[str, object], declared: list[str]) -> dict[str, object]:
    row = {
        "dataset": "scifact",
        "documents": 500,
        "queries": 50,
        "index": "encode",
        "ours": {"encode_docs_per_s": 80.0, "precision": "bf16"},
        "peer": {"encode_docs_per_s": 32.0, "precision": "fp32"},
        "comparison": "defaults",
        "declared": declared,
        "setups": {"ours": {**OURS, "precision": "bf16"}, "peer": peer_setup},
    }
    return {"environment": {"date": "2026-12-07"}, "rows": [row]}


def test_the_index_renderer_shows_a_declared_difference_beside_its_ratio() -> None:
    markdown = render.render(index_record(peer_with(), ["precision"]))
    assert "| 2.50 (precision bf16 vs fp32) |" in markdown
    assert "Setup not recorded" not in markdown


def test_the_index_renderer_refuses_paired_rows_that_differ_undeclared() -> None:
    with pytest.raises(SetupMismatch, match="torch_threads 2 vs 1"):
        render.render(index_record(peer_with(torch_threads=1), ["precision"]))
    with pytest.raises(SetupMismatch, match="precision bf16 vs fp32"):
        render.render(index_record(peer_with(), []))


def test_a_record_from_before_setups_names_its_precision_difference_and_says_the_rest_is_unknown() -> None:
    record = index_record(peer_with(), ["precision"])
    for key in ("setups", "comparison", "declared"):
        del record["rows"][0][key]
    markdown = render.render(record)
    assert "| 2.50 (precision bf16 vs fp32) |" in markdown
    assert "Setup not recorded for scifact (500, 50) encode" in markdown


def trainer_record(peer_threads: int) -> dict[str, object]:
    runs = [
        {"data": "scifact", "system": "stage", "samples_per_s": 5.0, "setup": OURS},
        {
            "data": "scifact",
            "system": "peer",
            "samples_per_s": 4.0,
            "setup": peer_with(torch_threads=peer_threads),
        },
    ]
    return {
        "environment": {"date": "2026-12-07"},
        "runs": runs,
        "samples_per_s_median": {"scifact": {"stage": 5.0, "peer": 4.0, "stage_vs_peer": 1.25}},
        "train": {"precision": "fp32"},
        "comparison": "like for like",
        "declared": list(PEER_PINNED),
        "peer": "pylate==1.6.*",
    }


def test_the_trainer_renderer_checks_each_data_sets_runs() -> None:
    assert "| scifact | 5.00 | 4.00 | 1.25 |" in render.render(trainer_record(2))
    with pytest.raises(SetupMismatch, match=r"training on scifact: .*torch_threads 2 vs 1"):
        render.render(trainer_record(1))


def test_the_growth_renderer_refuses_sizes_whose_libraries_differ_undeclared() -> None:
    side = {
        "build_s": 10.0,
        "disk_mib": 5.0,
        "build_peak_rss_mib": 900.0,
        "search_peak_rss_mib": 800.0,
        "qps": 2.0,
        "recall@10": 0.9,
        "single": {"p50_ms": 100.0, "p95_ms": 200.0, "recall@10": 0.9},
    }
    brute = {"qps": 30.0, "p50_ms": 30.0, "p95_ms": 35.0}
    size = {
        "documents": 1000,
        "real_documents": 1000,
        "tokens": 150_000,
        "brute": {"fp32": brute, "bf16": {**brute, "recall@10": 1.0}},
        "ours": {**side, "setup": OURS},
        "peer": {**side, "setup": peer_with(**{"fast-plaid": "1.4.6"})},
    }
    record = {
        "benchmark": "index_growth",
        "environment": {"date": "2026-12-07"},
        "documents": {"real": "real", "synthetic": "synthetic"},
        "queries": 5,
        "encoding": {"setup": {"precision": "bf16"}},
        "comparison": "defaults",
        "declared": list(PEER_PINNED),
        "sizes": [size],
    }
    markdown = render.render(record)
    assert "| 1,000 | 1.00 | 1.00 | 1.00 | 1.00 | fast-plaid 1.7.0 vs 1.4.6 |" in markdown
    assert "one query p50 100 ms, 3.33 times fp32 brute force's (30 ms)" in markdown
    undeclared = copy.deepcopy(record)
    undeclared["declared"] = []
    with pytest.raises(SetupMismatch, match=r"1000 documents: .*fast-plaid 1\.7\.0 vs 1\.4\.6"):
        render.render(undeclared)
