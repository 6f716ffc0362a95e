"""Build a Nano-sized retrieval benchmark from any BEIR folder, offline, and read it back.

One cohesive module: the Nano benchmark's builder and reader share its on-disk layout.

The public NanoBEIR sets (50 queries, a few thousand documents each) live on the Hugging Face Hub; this
module makes the same kind of benchmark from a local BEIR folder: ``n_queries`` judged queries drawn with
``seed``, every document judged for them, TF-IDF hard negatives (documents that share vocabulary with the
queries, so the benchmark is not trivially easy) and random documents up to ``n_documents``.

The output uses the on-disk layout of the ``sentence-transformers/NanoBEIR-en`` dataset, so both
:class:`pipeline.evaluation.NanoBEIREvaluator` and sentence-transformers' own
``MultiVectorNanoBEIREvaluator(dataset_id=<folder>)`` read it::

    <folder>/README.md                      YAML "configs" listing every benchmark in the folder
    <folder>/corpus/Nano<Name>.parquet      _id, text
    <folder>/queries/Nano<Name>.parquet     _id, text
    <folder>/qrels/Nano<Name>.parquet       query-id, corpus-id, score
    <folder>/meta/Nano<Name>.json           provenance: source folder's name, split, seed, counts

Several benchmarks can share a folder (one per source dataset).

Example:
    >>> from pipeline.data.beir import BeirData
    >>> data = BeirData(
    ...     corpus={f"d{i}": f"document number {i}" for i in range(20)},
    ...     queries={"q1": "number 3", "q2": "number 7"},
    ...     qrels={"q1": {"d3": 1}, "q2": {"d7": 1}},
    ...     name="toy",
    ... )
    >>> import tempfile
    >>> folder = tempfile.mkdtemp()
    >>> info = build_nano_benchmark(data, folder, n_queries=2, n_documents=10, seed=0)
    >>> info.split_name, info.n_queries, info.n_documents
    ('NanoToy', 2, 10)
    >>> sorted(load_nano_benchmark(folder, "toy").qrels)
    ['q1', 'q2']
"""

from __future__ import annotations

import json
import logging
import os
import random
import re
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from pipeline.data.beir import BeirData, BeirFormatError, load_beir

logger = logging.getLogger(__name__)

__all__ = [
    "NanoBenchmark",
    "build_nano_benchmark",
    "list_nano_benchmarks",
    "load_nano_benchmark",
    "nano_split_name",
]

#: The human-readable names sentence-transformers uses for the 13 public NanoBEIR sets.
KNOWN_NAMES = {
    "climatefever": "ClimateFEVER",
    "dbpedia": "DBPedia",
    "fever": "FEVER",
    "fiqa2018": "FiQA2018",
    "hotpotqa": "HotpotQA",
    "msmarco": "MSMARCO",
    "nfcorpus": "NFCorpus",
    "nq": "NQ",
    "quoraretrieval": "QuoraRetrieval",
    "scidocs": "SCIDOCS",
    "arguana": "ArguAna",
    "scifact": "SciFact",
    "touche2020": "Touche2020",
}

_SUBSETS = {
    "corpus": ("_id", "text"),
    "queries": ("_id", "text"),
    "qrels": ("query-id", "corpus-id", "score"),
}


@dataclass(frozen=True)
class NanoBenchmark:
    """What :func:`build_nano_benchmark` wrote."""

    folder: str
    name: str
    split_name: str
    n_queries: int
    n_documents: int
    n_relevant: int
    n_hard_negatives: int
    source: str | None
    source_split: str
    seed: int


def nano_split_name(name: str) -> str:
    """The split a benchmark is stored under: ``scifact`` -> ``NanoSciFact``, ``nq-utd`` -> ``NanoNqUtd``.

    Only letters and digits survive, so the name is a valid dataset split and cannot leave its folder.

    Example:
        >>> nano_split_name("scifact"), nano_split_name("my sample-2")
        ('NanoSciFact', 'NanoMySample2')
    """
    if name.startswith("Nano") and re.fullmatch(r"Nano[A-Za-z0-9]+", name):
        return name
    known = KNOWN_NAMES.get(name.lower())
    if known:
        return f"Nano{known}"
    parts = [part for part in re.split(r"[^A-Za-z0-9]+", name) if part]
    if not parts:
        raise ValueError(f"benchmark name {name!r} has no letters or digits")
    return "Nano" + "".join(part[:1].upper() + part[1:] for part in parts)


def _hard_negative_ranking(
    data: BeirData, query_ids: list[str], doc_ids: list[str], depth: int
) -> list[list[str]]:
    """Per query, the ``depth`` documents with the highest TF-IDF cosine to it (judged ones included)."""
    import numpy as np
    from sklearn.feature_extraction.text import TfidfVectorizer

    # A lexical retriever is what BM25-mined NanoBEIR negatives approximate: close in wording, mostly
    # not relevant. sublinear_tf keeps long documents from dominating.
    vectorizer = TfidfVectorizer(sublinear_tf=True, stop_words="english", dtype=np.float32)
    doc_matrix = vectorizer.fit_transform([data.corpus[d] for d in doc_ids])
    query_matrix = vectorizer.transform([data.queries[q] for q in query_ids])
    scores = (query_matrix @ doc_matrix.T).toarray()
    depth = min(depth, len(doc_ids))
    rankings = []
    for row in scores:
        # Ties broken by corpus position (a stable sort) so the result is the same on every machine.
        order = np.argsort(-row, kind="stable")[:depth]
        rankings.append([doc_ids[i] for i in order if row[i] > 0])
    return rankings


def _write_parquet_atomic(rows: dict[str, list[Any]], path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(handle)
    try:
        pq.write_table(pa.table(rows), temporary)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def _write_text_atomic(text: str, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as stream:
            stream.write(text)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def _write_readme(folder: Path) -> None:
    """(Re)write the dataset card whose YAML ``configs`` let ``load_dataset(folder, subset)`` read it."""
    splits = sorted(p.stem for p in (folder / "corpus").glob("Nano*.parquet"))
    lines = ["---", "configs:"]
    for subset in _SUBSETS:
        lines += [f"- config_name: {subset}", "  data_files:"]
        for split in splits:
            lines += [f"  - split: {split}", f"    path: {subset}/{split}.parquet"]
    lines += [
        "---",
        "",
        "# Local Nano benchmarks",
        "",
        "Built by `pipeline.data.nano.build_nano_benchmark`;",
        "`meta/<split>.json` records the source and the seed.",
        "",
    ]
    _write_text_atomic("\n".join(lines), folder / "README.md")


def build_nano_benchmark(
    source: str | os.PathLike[str] | BeirData,
    output_folder: str | os.PathLike[str],
    split: str = "test",
    n_queries: int = 50,
    n_documents: int = 5000,
    seed: int = 0,
    name: str | None = None,
    *,
    hard_negative_ratio: float = 0.5,
    hard_negatives_depth: int = 100,
    on_missing: str = "error",
) -> NanoBenchmark:
    """Sample a Nano benchmark from a BEIR folder (or loaded :class:`BeirData`) and save it.

    Args:
        source: A BEIR folder (``corpus.jsonl[.gz]``, ``queries.jsonl[.gz]``, ``qrels/<split>.tsv[.gz]``)
            or data already read with :func:`pipeline.data.beir.load_beir`.
        output_folder: Where the benchmark is written (created; other benchmarks in it are kept).
        split: The qrels split to sample queries from (when ``source`` is a folder).
        n_queries: How many queries with at least one relevant document to keep (all, if fewer exist).
        n_documents: Target corpus size. Every document judged for the kept queries is included even
            when that exceeds it; the rest is filled with hard negatives, then random documents.
        seed: The same seed and source give the same benchmark.
        name: Short name (``scifact``, ``nq-utd`` ...); the source's name by default. Known NanoBEIR
            names keep sentence-transformers' spelling (``NanoSciFact``), so metric keys match the Hub sets.
        hard_negative_ratio: Share of the filler documents taken from the TF-IDF ranking of the queries.
        hard_negatives_depth: How deep to read each query's TF-IDF ranking.
        on_missing: Passed to :func:`load_beir` when ``source`` is a folder.

    Returns:
        A :class:`NanoBenchmark` describing what was written.
    """
    if n_queries < 1:
        raise ValueError(f"n_queries must be >= 1, got {n_queries}")
    if n_documents < 1:
        raise ValueError(f"n_documents must be >= 1, got {n_documents}")
    if not 0.0 <= hard_negative_ratio <= 1.0:
        raise ValueError(f"hard_negative_ratio must be in [0, 1], got {hard_negative_ratio}")
    data = source if isinstance(source, BeirData) else load_beir(source, split, on_missing=on_missing)  # type: ignore[arg-type]
    benchmark_name = name or data.name
    split_name = nano_split_name(benchmark_name)

    rng = random.Random(seed)
    relevant = data.relevant_docs()
    candidates = sorted(qid for qid in relevant if qid in data.queries)
    if not candidates:
        raise BeirFormatError(
            f"{data.source or data.name}: no query has a relevant document in split {split!r}"
        )
    query_ids = sorted(rng.sample(candidates, min(n_queries, len(candidates))))

    # Every judged document of the kept queries (score-0 ones too: they are the hardest negatives).
    judged = {doc for qid in query_ids for doc in data.qrels[qid]}
    doc_order = list(data.corpus)  # the source order, which fixes the output for a seed
    chosen = set(judged)
    if len(chosen) > n_documents:
        logger.warning(
            "%d judged documents exceed n_documents=%d; keeping them all", len(chosen), n_documents
        )
    budget = max(n_documents - len(chosen), 0)

    n_hard = 0
    hard_budget = round(budget * hard_negative_ratio)
    if hard_budget:
        rankings = _hard_negative_ranking(data, query_ids, doc_order, hard_negatives_depth)
        # Round-robin over the queries' rankings so every query gets its closest confounders.
        for rank in range(max((len(r) for r in rankings), default=0)):
            for ranking in rankings:
                if n_hard >= hard_budget:
                    break
                if rank < len(ranking) and ranking[rank] not in chosen:
                    chosen.add(ranking[rank])
                    n_hard += 1
            if n_hard >= hard_budget:
                break
    remaining = [doc for doc in doc_order if doc not in chosen]
    fill = n_documents - len(chosen)
    if fill > 0:
        chosen.update(rng.sample(remaining, min(fill, len(remaining))))
    corpus_ids = [doc for doc in doc_order if doc in chosen]

    folder = Path(output_folder)
    folder.mkdir(parents=True, exist_ok=True)
    qrels_rows = [(qid, doc, data.qrels[qid][doc]) for qid in query_ids for doc in sorted(data.qrels[qid])]
    _write_parquet_atomic(
        {"_id": corpus_ids, "text": [data.corpus[d] for d in corpus_ids]},
        folder / "corpus" / f"{split_name}.parquet",
    )
    _write_parquet_atomic(
        {"_id": query_ids, "text": [data.queries[q] for q in query_ids]},
        folder / "queries" / f"{split_name}.parquet",
    )
    _write_parquet_atomic(
        {
            "query-id": [row[0] for row in qrels_rows],
            "corpus-id": [row[1] for row in qrels_rows],
            "score": [int(row[2]) for row in qrels_rows],
        },
        folder / "qrels" / f"{split_name}.parquet",
    )
    info = NanoBenchmark(
        folder=str(folder),
        name=benchmark_name,
        split_name=split_name,
        n_queries=len(query_ids),
        n_documents=len(corpus_ids),
        n_relevant=len(judged),
        n_hard_negatives=n_hard,
        source=data.source,
        source_split=data.split,
        seed=seed,
    )
    # The meta file is inside a DVC-hashed output: nothing machine-specific goes in (no absolute paths),
    # so the same data built in two workspaces hashes the same.
    meta = {key: value for key, value in asdict(info).items() if key != "folder"}
    meta["source"] = Path(info.source).name if info.source else None
    _write_text_atomic(json.dumps(meta, indent=2) + "\n", folder / "meta" / f"{split_name}.json")
    _write_readme(folder)
    logger.info(
        "Wrote %s to %s: %d queries, %d documents (%d judged, %d hard negatives)",
        split_name,
        folder,
        info.n_queries,
        info.n_documents,
        info.n_relevant,
        n_hard,
    )
    return info


def list_nano_benchmarks(folder: str | os.PathLike[str]) -> list[str]:
    """The short names of the benchmarks in ``folder`` (as given to :func:`build_nano_benchmark`)."""
    root = Path(folder)
    names = []
    for split in sorted(p.stem for p in (root / "corpus").glob("Nano*.parquet")):
        meta = root / "meta" / f"{split}.json"
        names.append(json.loads(meta.read_text(encoding="utf-8"))["name"] if meta.is_file() else split)
    return names


def load_nano_benchmark(folder: str | os.PathLike[str], name: str) -> BeirData:
    """Read one benchmark back as :class:`BeirData` (``name`` as built, or its ``Nano...`` split name)."""
    import pyarrow.parquet as pq

    root = Path(folder)
    split_name = nano_split_name(name)
    tables = {}
    for subset, columns in _SUBSETS.items():
        path = root / subset / f"{split_name}.parquet"
        if not path.is_file():
            available = list_nano_benchmarks(root) if (root / "corpus").is_dir() else []
            raise BeirFormatError(f"{path}: not found (benchmarks in {root}: {available or 'none'})")
        table = pq.read_table(path)
        missing = [column for column in columns if column not in table.column_names]
        if missing:
            raise BeirFormatError(f"{path}: missing columns {missing}")
        tables[subset] = table.to_pydict()
    corpus = dict(zip(tables["corpus"]["_id"], tables["corpus"]["text"], strict=True))
    queries = dict(zip(tables["queries"]["_id"], tables["queries"]["text"], strict=True))
    qrels: dict[str, dict[str, int]] = {}
    rows = zip(
        tables["qrels"]["query-id"], tables["qrels"]["corpus-id"], tables["qrels"]["score"], strict=True
    )
    for query_id, doc_id, score in rows:
        qrels.setdefault(query_id, {})[doc_id] = int(score)
    meta_path = root / "meta" / f"{split_name}.json"
    meta = json.loads(meta_path.read_text(encoding="utf-8")) if meta_path.is_file() else {}
    return BeirData(
        corpus=corpus,
        queries=queries,
        qrels=qrels,
        name=meta.get("name", name),
        split=split_name,
        source=str(root),
    )
