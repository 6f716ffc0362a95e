"""The index benchmarks' inputs: BEIR texts read as both libraries get them, and cached embeddings.

Importable in PyLate's venv too (no ``pipeline``, numpy only when called). Both systems index the *same*
embeddings, ours, cached by :func:`save_embeddings` under ``bench/.cache/embeddings/``, so recall and speed
compare the indexes, not two random projections.
"""

from __future__ import annotations

import gzip
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench.common import CACHE, DATA

EMBEDDINGS = CACHE / "embeddings"


def _lines(folder: Path, name: str) -> Iterator[str]:
    """The lines of ``name`` (``.jsonl``) in ``folder``, or of its ``.gz``."""
    path = folder / name
    if not path.is_file():
        path = folder / f"{name}.gz"
    if not path.is_file():
        raise FileNotFoundError(f"{folder}: no {name}[.gz] (is ../shared/data beside the checkout?)")
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as handle:
        yield from handle


def read_corpus(dataset: str, max_docs: int | None) -> tuple[list[str], list[str]]:
    """Ids and ``title text`` of a BEIR corpus, in file order, at most ``max_docs``."""
    ids, texts = [], []
    for number, line in enumerate(_lines(DATA / dataset, "corpus.jsonl"), 1):
        try:
            row = json.loads(line)
            ids.append(str(row["_id"]))
            texts.append(f"{row.get('title', '')} {row['text']}".strip())
        except (json.JSONDecodeError, KeyError) as error:
            raise ValueError(f"{DATA / dataset}: corpus line {number}: not a BEIR row ({error})") from None
        if max_docs is not None and len(ids) >= max_docs:
            break
    return ids, texts


def read_queries(dataset: str, max_queries: int) -> list[str]:
    """Texts of the test queries (those in ``qrels/test.tsv``), at most ``max_queries``."""
    wanted: set[str] = set()
    qrels = DATA / dataset / "qrels" / "test.tsv"
    if qrels.is_file():
        with qrels.open(encoding="utf-8") as handle:
            next(handle, None)
            wanted = {line.split("\t", 1)[0] for line in handle if line.strip()}
    texts = []
    for line in _lines(DATA / dataset, "queries.jsonl"):
        row = json.loads(line)
        if not wanted or str(row["_id"]) in wanted:
            texts.append(row["text"])
        if len(texts) >= max_queries:
            break
    return texts


def read_probe_queries(dataset: str, measured: list[str], n: int) -> list[str]:
    """Up to ``n`` query texts of the dataset that are not among the ``measured`` ones (to tune on)."""
    taken, probes = set(measured), []
    for line in _lines(DATA / dataset, "queries.jsonl"):
        text = json.loads(line)["text"]
        if text not in taken:
            taken.add(text)
            probes.append(text)
        if len(probes) >= n:
            break
    return probes


def as_float32(embedding: Any) -> Any:
    """A float32 numpy array of one embedding (a tensor on any device, in any precision, or an array)."""
    import numpy as np

    if hasattr(embedding, "detach"):
        embedding = embedding.detach().float().cpu().numpy()
    return np.asarray(embedding, dtype=np.float32)


def cache_path(dataset: str, n_docs: int, n_queries: int, n_probes: int = 0) -> Path:
    return EMBEDDINGS / f"{dataset}-{n_docs}d-{n_queries}q-{n_probes}p.npz"


def save_embeddings(
    path: Path, ids: list[str], documents: list[Any], queries: list[Any], probes: list[Any] | None = None
) -> Path:
    """Documents (one token matrix each), queries and probe queries as float32, atomically."""
    import numpy as np

    documents = [as_float32(d) for d in documents]
    arrays = {
        "tokens": np.concatenate(documents),
        "lengths": np.array([len(d) for d in documents]),
        "queries": np.stack([as_float32(q) for q in queries]),
        "ids": np.array(ids),
    }
    if probes is not None:
        arrays["probes"] = np.stack([as_float32(q) for q in probes])
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(path.name + ".tmp.npz")
    np.savez(temp, **arrays)
    os.replace(temp, path)
    return path


def load_embeddings(path: str | os.PathLike[str]) -> tuple[list[str], list[Any], list[Any]]:
    """Ids, document and query embeddings written by :func:`save_embeddings`."""
    import numpy as np

    data = np.load(path)
    documents = np.split(data["tokens"], np.cumsum(data["lengths"])[:-1])
    return [str(i) for i in data["ids"]], documents, list(data["queries"])


def load_probes(path: str | os.PathLike[str]) -> list[Any]:
    """The probe queries (tuned on, never measured) of a cache written with them."""
    import numpy as np

    data = np.load(path)
    if "probes" not in data:
        raise SystemExit(f"{path}: no probe queries (a cache written by `python -m bench.index` has them)")
    return list(data["probes"])
