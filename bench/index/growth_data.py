"""The growth benchmark's documents: the real corpora combined, then synthetic documents made from them.

Real: SciFact, NFCorpus and ArguAna (``../shared/data``), every document, shuffled together with a seed
(:func:`combined_corpus`); queries: the three test sets' first queries, taken in turn
(:func:`combined_queries`).

Synthetic (:func:`synthetic_document`), for a size above the real total: document ``i`` (counting from the
first synthetic one) copies the token matrix of a real document drawn at random, adds Gaussian noise of
standard deviation ``noise / sqrt(dim)`` to every coordinate (so the noise vector's expected norm is about
``noise``, against unit-norm tokens), and normalises each token back to unit length, as ColBERT's
embeddings are. Its random generator is seeded with ``(seed, i)``, so a synthetic document is the same in
every size that holds it and a larger size extends a smaller one. Importable in PyLate's venv (numpy only
when called; no ``pipeline``).
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

from bench.common import DATA
from bench.index.corpus import _lines, read_corpus, read_queries

DATASETS = ("scifact", "nfcorpus", "arguana")
#: The noise's expected norm per token (tokens have norm 1): near copies, not duplicates.
NOISE = 0.3


def combined_corpus(seed: int = 0, datasets: tuple[str, ...] = DATASETS) -> tuple[list[str], list[str]]:
    """Ids (``dataset/id``) and texts of every document of ``datasets``, shuffled together with ``seed``."""
    pairs = []
    for dataset in datasets:
        ids, texts = read_corpus(dataset, None)
        pairs += [(f"{dataset}/{i}", text) for i, text in zip(ids, texts, strict=True)]
    random.Random(seed).shuffle(pairs)
    return [p[0] for p in pairs], [p[1] for p in pairs]


def combined_queries(n: int, datasets: tuple[str, ...] = DATASETS) -> list[str]:
    """``n`` test queries, taken from ``datasets`` in turn (their first ones, in file order)."""
    lists = [read_queries(dataset, n) for dataset in datasets]
    taken = [q for group in zip(*lists, strict=False) for q in group]
    if len(taken) < n:
        raise ValueError(f"{DATA}: only {len(taken)} test queries in {datasets}, {n} wanted")
    return taken[:n]


def synthetic_document(real: list[Any], i: int, seed: int = 0, noise: float = NOISE) -> Any:
    """Synthetic document ``i``: a random real token matrix of ``real`` with noise, tokens renormalised.

    >>> import numpy as np
    >>> real = [np.eye(4, 8, dtype=np.float32), np.eye(2, 8, dtype=np.float32)]
    >>> a = synthetic_document(real, 5, seed=1)
    >>> b = synthetic_document(real, 5, seed=1)
    >>> bool((a == b).all()), a.dtype.name, a.shape[1], bool(np.allclose(np.linalg.norm(a, axis=1), 1))
    (True, 'float32', 8, True)
    """
    import numpy as np

    rng = np.random.default_rng([seed, i])
    source = np.asarray(real[int(rng.integers(len(real)))], dtype=np.float32)
    dim = source.shape[1]
    noisy = source + rng.normal(0.0, noise / np.sqrt(dim), size=source.shape).astype(np.float32)
    return (noisy / np.linalg.norm(noisy, axis=1, keepdims=True)).astype(np.float32)


def size_documents(
    real: list[Any], real_ids: list[str], n: int, seed: int = 0
) -> tuple[list[str], list[Any]]:
    """The first ``n`` documents of the growth sequence: the real ones, then synthetic ones."""
    if n <= len(real):
        return real_ids[:n], real[:n]
    extra = n - len(real)
    synthetic = [synthetic_document(real, i, seed) for i in range(extra)]
    return [*real_ids, *(f"synthetic/{i}" for i in range(extra))], [*real, *synthetic]


def write_size(path: Path, ids: list[str], documents: list[Any], queries: Any) -> Path:
    """One size's embeddings in :func:`bench.index.corpus.save_embeddings`' layout (the workers load it)."""
    from bench.index.corpus import save_embeddings

    return save_embeddings(path, ids, documents, list(queries))


def queries_only(path: str | Path) -> list[Any]:
    """The query embeddings of a size file, without loading its documents (a search process's memory)."""
    import numpy as np

    with np.load(path) as data:
        return list(data["queries"])


def corpus_sizes() -> dict[str, int]:
    """How many documents each real corpus holds (counted from the files)."""
    return {dataset: sum(1 for _ in _lines(DATA / dataset, "corpus.jsonl")) for dataset in DATASETS}


def describe(seed: int, noise: float = NOISE) -> dict[str, Any]:
    """How the documents are made, as the record states it."""
    return {
        "real": f"{' + '.join(DATASETS)} (../shared/data), every document, shuffled together (seed {seed})",
        "synthetic": (
            "above the real total: synthetic document i copies the token embeddings of a real document "
            f"drawn at random (numpy default_rng(({seed}, i))), adds Gaussian noise of std {noise}/sqrt(128) "
            f"to each coordinate (noise norm about {noise} against unit-norm tokens) and renormalises "
            "each token"
        ),
        "noise": noise,
        "seed": seed,
    }
