"""The Nano benchmark's files: NanoBEIR's on-disk layout, written and read back.

A benchmark is stored under its split name (:func:`nano_split_name`) in the layout of the
``sentence-transformers/NanoBEIR-en`` dataset, so both :class:`pipeline.evaluation.NanoBEIREvaluator` and
sentence-transformers' own ``MultiVectorNanoBEIREvaluator(dataset_id=<folder>)`` read it::

    <folder>/README.md                      YAML "configs" listing every benchmark in the folder
    <folder>/corpus/Nano<Name>.parquet      _id, text
    <folder>/queries/Nano<Name>.parquet     _id, text
    <folder>/qrels/Nano<Name>.parquet       query-id, corpus-id, score
    <folder>/meta/Nano<Name>.json           provenance: source folder's name, split, seed, counts

Several benchmarks can share a folder (one per source dataset). Every file is written beside its final
name and renamed over it, so a crash never leaves half a parquet file. What goes in them (which queries
and documents) is :mod:`pipeline.data.nano`'s.

Example:
    >>> import tempfile
    >>> folder = Path(tempfile.mkdtemp())
    >>> data = BeirData(corpus={"d1": "a text"}, queries={"q1": "query"}, qrels={"q1": {"d1": 1}}, name="toy")
    >>> write_benchmark(folder, "NanoToy", data, ["q1"], ["d1"])
    >>> write_meta(folder, "NanoToy", {"name": "toy"})
    >>> list_nano_benchmarks(folder), load_nano_benchmark(folder, "toy").qrels
    (['toy'], {'q1': {'d1': 1}})
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any

from pipeline.data.beir import BeirData, BeirFormatError

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

#: The benchmark's tables (each a folder of ``<split>.parquet`` files) and their columns.
SUBSETS = {
    "corpus": ("_id", "text"),
    "queries": ("_id", "text"),
    "qrels": ("query-id", "corpus-id", "score"),
}


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


def write_benchmark(
    folder: Path, split_name: str, data: BeirData, query_ids: list[str], corpus_ids: list[str]
) -> None:
    """Write the corpus, queries and qrels files of the benchmark ``split_name`` (ids in the order given)."""
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


def write_meta(folder: Path, split_name: str, meta: dict[str, Any]) -> None:
    """Write the benchmark's provenance, then the folder's dataset card listing every benchmark in it."""
    _write_text_atomic(json.dumps(meta, indent=2) + "\n", folder / "meta" / f"{split_name}.json")
    _write_readme(folder)


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
    for subset in SUBSETS:
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
    for subset, columns in SUBSETS.items():
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
