"""``python -m bench.index.updates``: what updating an index in place costs and what it does to recall.

Two measurements on SciFact (``../shared/data``), each written to its own record:

- ``--time``: the index stage (``colbert-pipeline index`` in a throwaway project, a fresh process per run)
  builds a corpus of ``--docs`` documents, then applies 20 added, 10 removed and 5 changed documents in
  place, then rebuilds the same updated corpus with ``index.update=rebuild``. The record has each run's wall
  time, the stage's own ``build_seconds`` (encoding and the index write) and the documents it encoded.
- ``--recall``: a PLAID index of ``--docs`` documents goes through ``--steps`` updates that each remove and
  add ``--docs`` / (2 ``--steps``) documents (half the corpus replaced in the end). After each, recall@10
  against exact MaxSim over the current corpus, of the updated index and of a fresh build over the same
  documents, for two search settings (PLAID's defaults and a narrow probe); the same embeddings go into both.

Texts are cut to ``--words`` words (the abstracts' first ones) so that one run fits a few minutes on two
cores; the model is the offline MiniLM ColBERT with a seeded projection (what the tests use).

Usage:
    .venv/bin/python -m bench.index.updates --time --record bench/records/index_update_time.json
    .venv/bin/python -m bench.index.updates --recall --record bench/records/index_update_recall.json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import DATA, REPO, command_line, environment, write_record
from bench.index.corpus import read_queries

#: PLAID's defaults, and a narrow probe whose candidates depend more on where the centroids lie.
SETTINGS = {"defaults": (8, 8192), "probe 2, 256 full scores": (2, 256)}


def corpus_rows(docs: int, words: int) -> list[dict[str, str]]:
    """The first ``docs`` SciFact documents, each cut to its first ``words`` words (untitled)."""
    import gzip

    rows = []
    with gzip.open(DATA / "scifact" / "corpus.jsonl.gz", "rt", encoding="utf-8") as stream:
        for line in stream:
            row = json.loads(line)
            rows.append({"_id": row["_id"], "title": "", "text": " ".join(row["text"].split()[:words])})
            if len(rows) == docs:
                break
    return rows


def _save_model(folder: Path) -> None:
    import torch

    from pipeline import models

    torch.manual_seed(0)
    models.ColBERT(device="cpu").save_pretrained(str(folder))


def _write(path: Path, rows: list[dict[str, str]]) -> None:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")


def _stage(project: Path, *sets: str) -> dict[str, Any]:
    """``colbert-pipeline index`` in ``project`` (a fresh process); its metrics and wall seconds."""
    command = [str(Path(sys.executable).parent / "colbert-pipeline"), "index"]
    for setting in ("index.corpus=corpus/docs.jsonl", "index.name=scifact", "index.device=cpu", *sets):
        command += ["--set", setting]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "MLFLOW_TRACKING_URI": f"sqlite:///{project}/mlruns.db"}
    started = time.perf_counter()
    subprocess.run(command, cwd=project, env=env, check=True, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    metrics = json.loads((project / "metrics" / "index.json").read_text(encoding="utf-8"))
    update = metrics["update"]
    return {
        "mode": update["mode"],
        "encoded": update["encoded"],
        "documents": metrics["documents"],
        "build_seconds": metrics["build_seconds"],
        "wall_seconds": round(seconds, 2),
        "reason": update["reason"],
    }


def measure_time(docs: int, words: int, probes: int) -> dict[str, Any]:
    """Build, update (20 added, 10 removed, 5 changed) in place, then rebuild the updated corpus."""
    rows = corpus_rows(docs + 20, words)
    base = rows[:docs]
    removed = {row["_id"] for row in base[100:110]}
    changed = {row["_id"] for row in base[200:205]}
    updated = [
        {**row, "text": row["text"] + " (revised)"} if row["_id"] in changed else row
        for row in base
        if row["_id"] not in removed
    ] + rows[docs:]
    with tempfile.TemporaryDirectory(prefix="bench-update-") as folder:
        project = Path(folder)
        shutil.copy(REPO / "params.yaml", project / "params.yaml")
        (project / "corpus").mkdir()
        _save_model(project / "models" / "colbert")
        _write(project / "corpus" / "docs.jsonl", base)
        runs = {"build": _stage(project, f"index.probe_queries={probes}")}
        _write(project / "corpus" / "docs.jsonl", updated)
        runs["update"] = _stage(project, f"index.probe_queries={probes}")
        runs["rebuild"] = _stage(project, f"index.probe_queries={probes}", "index.update=rebuild")
    ratio = runs["update"]["wall_seconds"] / runs["rebuild"]["wall_seconds"]
    return {
        "benchmark": "index_update_time",
        "dataset": "scifact",
        "documents": docs,
        "words": words,
        "change": {"added": 20, "removed": 10, "changed": 5},
        "runs": runs,
        "update_over_rebuild_wall": round(ratio, 3),
        "update_over_rebuild_build": round(
            runs["update"]["build_seconds"] / runs["rebuild"]["build_seconds"], 3
        ),
    }


def _recalls(index: Any, queries: list[Any], reference: list[list[dict[str, Any]]]) -> dict[str, float]:
    from pipeline.indexes.indexing import recall_at_k

    recalls = {}
    for name, (probe, full) in SETTINGS.items():
        found = index.candidate_slots(queries, 10, probe, full, [None] * len(queries))
        hits = [[{"id": index.documents_ids[slot]} for slot, _ in row] for row in found]
        recalls[name] = round(recall_at_k(hits, reference, k=10), 4)
    return recalls


def measure_recall(docs: int, words: int, steps: int, n_queries: int) -> dict[str, Any]:
    """Replace half of the corpus in ``steps`` updates; recall of the updated index and of a fresh build."""
    from pipeline import indexes, models
    from pipeline.indexes.indexing import exact_search

    step = docs // (2 * steps)
    rows = corpus_rows(docs + step * steps, words)
    with tempfile.TemporaryDirectory(prefix="bench-update-recall-") as folder:
        _save_model(Path(folder) / "model")
        model = models.ColBERT(model_name_or_path=str(Path(folder) / "model"), device="cpu")
        vectors = models.as_numpy(model.encode([row["text"] for row in rows], is_query=False))
        embedding = {row["_id"]: vector for row, vector in zip(rows, vectors, strict=True)}
        queries = models.as_numpy(model.encode(read_queries("scifact", n_queries), is_query=True))
        # fast-plaid's own update against a fresh build: no float16 store, no re-scoring
        plaid = {"index_folder": folder, "device": "cpu", "show_progress": False, "rerank": 0}
        current = [row["_id"] for row in rows[:docs]]
        index = indexes.PLAID(index_name="updated", override=True, **plaid)
        index.add_documents(current, [embedding[i] for i in current])
        trace = []
        for number in range(steps + 1):
            if number:
                gone, new = current[:step], [row["_id"] for row in rows[docs + (number - 1) * step :][:step]]
                started = time.perf_counter()
                with index.transaction():
                    index.remove_documents(gone)
                    index.add_documents(new, [embedding[i] for i in new])
                seconds = time.perf_counter() - started
                current = current[step:] + new
            reference = exact_search(queries, [embedding[i] for i in current], current, k=10)
            fresh = indexes.PLAID(index_name=f"fresh{number}", override=True, **plaid)
            fresh.add_documents(current, [embedding[i] for i in current])
            trace.append(
                {
                    "step": number,
                    "replaced": round(number * step / docs, 3),
                    "update_seconds": round(seconds, 2) if number else None,
                    "updated": _recalls(index, queries, reference),
                    "fresh": _recalls(fresh, queries, reference),
                }
            )
            shutil.rmtree(fresh.path)
    worst = min(row["updated"][name] - row["fresh"][name] for row in trace for name in SETTINGS)
    return {
        "benchmark": "index_update_recall",
        "dataset": "scifact",
        "documents": docs,
        "words": words,
        "queries": len(queries),
        "steps": trace,
        "worst_updated_minus_fresh": round(worst, 4),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--time", action="store_true", help="update vs rebuild through the index stage")
    which.add_argument("--recall", action="store_true", help="recall over updates replacing half the corpus")
    parser.add_argument("--docs", type=int, default=1050, help="documents in the corpus (default 1,050)")
    parser.add_argument("--words", type=int, default=48, help="words kept per document (default 48)")
    parser.add_argument("--steps", type=int, default=5, help="--recall: updates (default 5, 10%% each)")
    parser.add_argument("--queries", type=int, default=100, help="--recall: SciFact test queries")
    parser.add_argument("--probes", type=int, default=20, help="--time: the stage's probe queries")
    parser.add_argument("--record", type=Path, required=True, help="the JSON record to write")
    args = parser.parse_args()
    started = time.perf_counter()
    if args.time:
        record = measure_time(args.docs, args.words, args.probes)
    else:
        record = measure_recall(args.docs, args.words, args.steps, args.queries)
    record["seconds"] = round(time.perf_counter() - started, 1)
    record["command"] = command_line("bench.index.updates")
    record["environment"] = environment()
    write_record(args.record, record)
    print(json.dumps({k: v for k, v in record.items() if k not in ("steps", "environment")}, indent=2))


if __name__ == "__main__":
    main()
