"""Prepare's data sources: each turns its configured input into training rows and a held-out benchmark.

``SOURCES`` maps ``prepare.source`` to an adapter ``(params, project) -> Prepared``: the offline ``sample``,
local or Hub ``triplets``, ``kd`` (query/document id rows with teacher scores, plus text tables) and ``beir``
(a BEIR folder, with hard negatives mined by a dense model). :func:`check_no_leak` refuses a split in which an
evaluation query (by id or by text) would be trained on.

Example:
    >>> from pipeline.project.config import Params
    >>> prepared = SOURCES["sample"](Params(), Path("."))
    >>> prepared.kind, len(prepared.rows) > 0, len(prepared.benchmark.queries) > 0
    ('triplets', True, True)
    >>> check_no_leak(prepared)  # the sample's splits are disjoint: no error
"""

from __future__ import annotations

import hashlib
import logging
import random
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.data.beir import BeirData, load_beir
from pipeline.data.readers import DataFormatError, read_id_texts, read_kd, read_triplets
from pipeline.data.sample import generate_sample
from pipeline.project.config import Params, resolve_path
from pipeline.project.errors import InputError

logger = logging.getLogger(__name__)


class LeakError(InputError):
    """An evaluation query would have been trained on."""


@dataclass
class Prepared:
    """What a source produced, before it is written."""

    kind: str  # "triplets" or "kd"
    rows: list[dict[str, Any]]
    benchmark: BeirData
    tables: dict[str, dict[str, str]] = field(default_factory=dict)  # kd: queries / documents
    stats: dict[str, Any] = field(default_factory=dict)


def text_id(prefix: str, text: str) -> str:
    """A stable id for a text that has none."""
    return f"{prefix}-{hashlib.sha1(text.encode()).hexdigest()[:12]}"


def dedupe(rows: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], int]:
    seen: set[tuple] = set()
    kept = []
    for row in rows:
        key = tuple((k, tuple(v) if isinstance(v, list) else v) for k, v in sorted(row.items()))
        if key not in seen:
            seen.add(key)
            kept.append(row)
    return kept, len(rows) - len(kept)


def _split_queries(queries: Iterable[str], fraction: float, seed: int) -> set[str]:
    ordered = sorted(set(queries))
    count = max(1, round(len(ordered) * fraction))
    if count >= len(ordered):
        raise DataFormatError(
            f"only {len(ordered)} distinct queries: too few to hold {count} out for evaluation"
        )
    return set(random.Random(seed).sample(ordered, count))


def from_sample(params: Params, project: Path) -> Prepared:
    config = params.prepare.sample
    sample = generate_sample(
        n_train_entities=config.n_train_entities,
        n_eval_entities=config.n_eval_entities,
        n_distractors=config.n_distractors,
        negatives_per_query=config.negatives_per_query,
        seed=params.prepare.seed,
    )
    rows = [
        {"query": t["query"], "positive": t["positive"], "negative_1": t["negative"]}
        for t in sample.train_triplets
    ]
    benchmark = BeirData(
        corpus=sample.corpus,
        queries=sample.eval_queries,
        qrels=sample.eval_qrels,
        name="sample",
        split="test",
    )
    return Prepared(kind="triplets", rows=rows, benchmark=benchmark)


def from_triplets(params: Params, project: Path) -> Prepared:
    config = params.prepare.triplets
    assert config.path is not None  # checked by the schema
    local = resolve_path(config.path, project)
    if local.exists():
        rows, dropped = read_triplets(local, params.prepare.on_bad_rows)
        name = local.name.split(".")[0]
    else:
        rows, dropped = _hub_triplets(config.path, config.split, params.prepare.on_bad_rows)
        name = config.path.rsplit("/", 1)[-1]
    rows, duplicates = dedupe(rows)  # before the split, so a duplicate cannot straddle train and eval
    held_out = _split_queries((row["query"] for row in rows), config.eval_fraction, params.prepare.seed)
    corpus: dict[str, str] = {}
    queries: dict[str, str] = {}
    qrels: dict[str, dict[str, int]] = {}
    for row in rows:
        for key, text in row.items():
            if key != "query":
                corpus.setdefault(text_id("d", text), text)
        if row["query"] in held_out:
            query_id = text_id("q", row["query"])
            queries[query_id] = row["query"]
            qrels.setdefault(query_id, {})[text_id("d", row["positive"])] = 1
    train = [row for row in rows if row["query"] not in held_out]
    benchmark = BeirData(corpus=corpus, queries=queries, qrels=qrels, name=name, split="heldout")
    stats = {"rows_dropped": dropped, "duplicates_dropped": duplicates}
    return Prepared(kind="triplets", rows=train, benchmark=benchmark, stats=stats)


def _hub_triplets(dataset_id: str, split: str, on_bad_rows: str) -> tuple[list[dict[str, str]], int]:
    from datasets import load_dataset

    from pipeline.data.readers import triplet_row

    try:
        dataset = load_dataset(dataset_id, split=split)
    except Exception as error:  # datasets raises many types for an unreachable or unknown id
        raise DataFormatError(
            f"prepare.triplets.path {dataset_id!r} is neither a local file nor a loadable Hub dataset "
            f"({error}). Offline, point it at a local JSONL/CSV/Parquet file."
        ) from None
    rows, dropped = [], 0
    for index, record in enumerate(dataset):
        try:
            rows.append(triplet_row(record, f"{dataset_id}[{split}] row {index}"))
        except DataFormatError:
            if on_bad_rows == "error":
                raise
            dropped += 1
    return rows, dropped


def from_kd(params: Params, project: Path) -> Prepared:
    config = params.prepare.kd
    assert config.scores and config.queries and config.documents  # checked by the schema
    queries = read_id_texts(resolve_path(config.queries, project), "query_id")
    documents = read_id_texts(resolve_path(config.documents, project), "document_id")
    rows, counts = read_kd(
        resolve_path(config.scores, project), queries, documents, params.prepare.on_bad_rows
    )
    held_out = _split_queries((row["query_id"] for row in rows), config.eval_fraction, params.prepare.seed)
    qrels: dict[str, dict[str, int]] = {}
    for row in rows:
        if row["query_id"] in held_out:
            # The documents the teacher ranks as relevant: the listed positives, else its top-scored one.
            positives = row["document_ids"][: row.get("n_positive") or 0]
            if not positives:
                positives = [max(zip(row["scores"], row["document_ids"], strict=True))[1]]
            qrels.setdefault(row["query_id"], {}).update(dict.fromkeys(positives, 1))
    benchmark = BeirData(
        corpus=documents,
        queries={qid: queries[qid] for qid in qrels},
        qrels=qrels,
        name=Path(config.scores).parent.name or "kd",
        split="heldout",
    )
    train = [
        {"query_id": r["query_id"], "document_ids": r["document_ids"], "scores": r["scores"]}
        for r in rows
        if r["query_id"] not in held_out
    ]
    tables = {"queries": queries, "documents": documents}
    return Prepared(kind="kd", rows=train, benchmark=benchmark, tables=tables, stats=counts)


def from_beir(params: Params, project: Path) -> Prepared:
    config = params.prepare.beir
    assert config.folder is not None  # checked by the schema
    folder = resolve_path(config.folder, project)
    on_missing = "skip" if params.prepare.on_bad_rows == "drop" else "error"
    train_data = load_beir(folder, config.train_split, on_missing=on_missing)
    eval_data = load_beir(folder, config.eval_split, on_missing=on_missing)
    # A query is held out by id and by text: SciFact, for one, has claims worded identically in both splits.
    eval_texts = set(eval_data.queries.values())
    leaked = set(train_data.queries) & set(eval_data.queries) | {
        qid for qid, text in train_data.queries.items() if text in eval_texts
    }
    relevant = {qid: sorted(docs) for qid, docs in train_data.relevant_docs().items() if qid not in leaked}
    if config.max_positives_per_query:
        # Seeded per query, so adding or dropping one query does not change the others' samples.
        cap = config.max_positives_per_query
        relevant = {
            qid: sorted(random.Random(f"{params.prepare.seed}:{qid}").sample(docs, min(cap, len(docs))))
            for qid, docs in relevant.items()
        }
    pairs = [(qid, doc) for qid, docs in sorted(relevant.items()) for doc in docs]
    if config.max_train_queries:
        keep = set(sorted({qid for qid, _ in pairs})[: config.max_train_queries])
        pairs = [(qid, doc) for qid, doc in pairs if qid in keep]
    rows = _mine_negatives(
        train_data, pairs, config.negatives_per_query, config.mining_model, config.mining_corpus
    )
    stats = {"train_queries_removed_as_eval": len(leaked), "skipped_qrels": train_data.skipped_qrels}
    return Prepared(kind="triplets", rows=rows, benchmark=eval_data, stats=stats)


def _mine_negatives(
    data: BeirData, pairs: list[tuple[str, str]], count: int, model_name: str, corpus_size: int | None
) -> list[dict[str, str]]:
    """Hard negatives for (query, positive) pairs, mined with a dense model by sentence-transformers."""
    from datasets import Dataset
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.util import mine_hard_negatives

    from pipeline.models import resolve_model_name

    if not pairs:
        raise DataFormatError(
            f"{data.source}: split {data.split!r} has no training query with a relevant document"
        )
    corpus_ids = sorted(data.corpus)
    if corpus_size and corpus_size < len(corpus_ids):
        # Keep every positive; fill the rest of the mining corpus with a seeded sample.
        positives = {doc for _, doc in pairs}
        rest = [doc for doc in corpus_ids if doc not in positives]
        corpus_ids = sorted(
            positives | set(random.Random(0).sample(rest, max(0, corpus_size - len(positives))))
        )
    dataset = Dataset.from_dict(
        {"query": [data.queries[q] for q, _ in pairs], "positive": [data.corpus[d] for _, d in pairs]}
    )
    model = SentenceTransformer(resolve_model_name(model_name), device="cpu")
    mined = mine_hard_negatives(
        dataset,
        model,
        corpus=[data.corpus[d] for d in corpus_ids],
        num_negatives=count,
        range_min=1,
        range_max=30,
        sampling_strategy="top",
        output_format="n-tuple",
        batch_size=64,
        verbose=False,
    )
    rows = []
    for record in mined:
        negatives = [record[key] for key in record if key.startswith("negative")]
        rows.append({"query": record["query"], "positive": record["positive"]} | _numbered(negatives))
    return rows


def _numbered(negatives: list[str]) -> dict[str, str]:
    return {f"negative_{i}": text for i, text in enumerate(negatives, start=1)}


SOURCES = {"sample": from_sample, "triplets": from_triplets, "kd": from_kd, "beir": from_beir}


def check_no_leak(prepared: Prepared) -> None:
    """Fail if any evaluation query (by id or text) is in the training rows."""
    eval_texts = set(prepared.benchmark.queries.values())
    eval_ids = set(prepared.benchmark.queries)
    if prepared.kind == "kd":
        leaked = {row["query_id"] for row in prepared.rows} & eval_ids
    else:
        leaked = {row["query"] for row in prepared.rows} & eval_texts
    if leaked:
        raise LeakError(
            f"{len(leaked)} evaluation queries are in the training set, e.g. {sorted(leaked)[0]!r}"
        )
