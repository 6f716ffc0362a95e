"""The sharded-build record (``python -m bench.shards``) as Markdown, for :mod:`bench.render`."""

from __future__ import annotations

from typing import Any


def render_shards(report: dict[str, Any]) -> str:
    """A sharded-build record (``python -m bench.shards``): the documents, and recall@10 against exact MaxSim
    of the unsharded build and of the build from shards, per PLAID search setting."""
    result = report["shards"]
    same = (
        "the same document ids in the same order" if result["same_documents_in_order"] else "OTHER documents"
    )
    from bench.render import environment_line

    lines = [
        environment_line(report),
        "",
        f"{result['dataset']}: {result['documents']} documents, {result['queries']} test queries, "
        f"{result['shards']} shards, chunks of {result['chunk_size']}, encoded in {result['precision']}. "
        f"Both indexes hold {same}. (The record keeps each step's seconds; on a shared machine they are not "
        "a comparison.)",
        "",
        "| PLAID search (n_ivf_probe, n_full_scores) | recall@10 unsharded | recall@10 from shards "
        "| difference |",
        "|---|---|---|---|",
    ]
    for row in result["recall"]:
        lines.append(
            f"| {row['n_ivf_probe']}, {row['n_full_scores']} | {row['recall_unsharded']:.4f} "
            f"| {row['recall_sharded']:.4f} | {row['recall_difference']:+.4f} |"
        )
    return "\n".join(lines)
