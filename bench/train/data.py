"""The training benchmarks' rows: real triplets from ``../shared/data`` (or generated texts), read alike
for this package and PyLate (importable in PyLate's venv: no ``pipeline`` at module level)."""

from __future__ import annotations

import gzip
import json
import random
from pathlib import Path
from typing import Any

from bench.common import DATA, REPO

#: Short passages: the real KD/triplet sample.
SHORT_TRIPLETS = DATA / "kd-sample-flagembedding" / "triplets.jsonl.gz"
#: Long documents: SciFact's prepared triplets (``colbert-pipeline prepare --config configs/scifact.yaml``)
#: or, when absent, SciFact's train qrels with seeded random negatives.
SCIFACT_PREPARED = REPO / "data" / "scifact" / "prepared" / "train"
SHARED_SCIFACT = DATA / "scifact"
FIELDS = ("query", "positive", "negative")
WORDS = [
    "late",
    "interaction",
    "retrieval",
    "token",
    "vector",
    "index",
    "query",
    "document",
    "score",
    "model",
    "train",
]


def read_triplets(path: Path) -> list[dict[str, str]]:
    """``query, positive, negative`` rows from a prepared train folder, a JSONL file or a ``.jsonl.gz``."""
    if (path / "dataset").is_dir():
        from datasets import load_from_disk

        dataset = load_from_disk(str(path / "dataset"))
        negative = next((c for c in dataset.column_names if c.startswith("negative")), None)
        if negative is None:
            raise SystemExit(f"{path}: the prepared rows have no negative column ({dataset.column_names})")
        return [{"query": r["query"], "positive": r["positive"], "negative": r[negative]} for r in dataset]
    opener = gzip.open if path.suffix == ".gz" else open
    rows = []
    with opener(path, "rt", encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            row = json.loads(line)
            if not all(isinstance(row.get(k), str) for k in FIELDS):
                raise SystemExit(f"{path}:{number}: needs string fields query, positive, negative")
            rows.append({k: row[k] for k in FIELDS})
    return rows


def scifact_from_qrels(folder: Path, seed: int) -> list[dict[str, str]]:
    """SciFact's train (query, positive) pairs with a seeded random negative each."""
    from pipeline.data.beir import load_beir

    data = load_beir(folder, split="train")
    rng = random.Random(seed)
    ids = sorted(data.corpus)
    return [
        {"query": data.queries[q], "positive": data.corpus[d], "negative": data.corpus[rng.choice(ids)]}
        for q, judged in sorted(data.qrels.items())
        for d, grade in sorted(judged.items())
        if grade > 0
    ]


def shuffled_rows(n: int, seed: int) -> tuple[list[dict[str, str]], str]:
    """``n`` rows, shuffled short triplets repeated as needed (generated texts without ``../shared``)."""
    if SHORT_TRIPLETS.is_file():
        rows = read_triplets(SHORT_TRIPLETS)
        random.Random(seed).shuffle(rows)
        return (rows * (n // len(rows) + 1))[:n], f"kd-sample triplets ({SHORT_TRIPLETS.parent.name})"
    rng = random.Random(seed)
    rows = [
        {
            "query": " ".join(rng.choices(WORDS, k=8)),
            "positive": " ".join(rng.choices(WORDS, k=120)),
            "negative": " ".join(rng.choices(WORDS, k=120)),
        }
        for _ in range(n)
    ]
    return rows, "generated texts (../shared/data absent)"


def long_and_short(
    long: str | None, short: str | None, need: int, seed: int
) -> list[tuple[str, str, list[dict[str, str]]]]:
    """(name, where from, rows) for the long documents and the short passages: ``need`` rows of each."""
    if long:
        long_rows, long_from = read_triplets(Path(long)), str(long)
    elif SCIFACT_PREPARED.is_dir():
        long_rows, long_from = read_triplets(SCIFACT_PREPARED), str(SCIFACT_PREPARED.relative_to(REPO))
    elif SHARED_SCIFACT.is_dir():
        long_rows = scifact_from_qrels(SHARED_SCIFACT, seed)
        long_from = f"{SHARED_SCIFACT.name} train qrels, seeded random negatives"
    else:
        raise SystemExit("no long documents: pass --long, or prepare configs/scifact.yaml, or add ../shared")
    short_path = Path(short) if short else SHORT_TRIPLETS
    if not short_path.is_file() and not (short_path / "dataset").is_dir():
        raise SystemExit(f"{short_path}: no short passages (pass --short)")
    picked = []
    for name, source, rows in (
        ("scifact", long_from, long_rows),
        ("short", str(short_path), read_triplets(short_path)),
    ):
        if len(rows) < need:
            raise SystemExit(f"{source}: {len(rows)} rows, the run needs {need} (batch x steps)")
        rows = rows[:]
        random.Random(seed).shuffle(rows)
        # Exactly one epoch of these rows: both trainers see the same texts (each in its own order).
        picked.append((name, source, rows[:need]))
    return picked


def fixed_batch(documents: str) -> list[dict[str, Any]]:
    """16 (query, positive, negative) rows, the same for both libraries: SciFact abstracts (``long``; their
    first 60 characters as queries) or short kd-sample passages."""
    if documents == "long":
        with gzip.open(SHARED_SCIFACT / "corpus.jsonl.gz", "rt", encoding="utf-8") as handle:
            rows = [json.loads(line) for line, _ in zip(handle, range(48), strict=False)]
        texts = [f"{row.get('title', '')} {row['text']}".strip() for row in rows]
    else:
        with gzip.open(SHORT_TRIPLETS, "rt", encoding="utf-8") as handle:
            rows = [json.loads(line) for line, _ in zip(handle, range(32), strict=False)]
        texts = [row["positive"] for row in rows[:16]] + [row["negative"] for row in rows[:32]]
    return [{"query": texts[i][:60], "positive": texts[16 + i], "negative": texts[32 + i]} for i in range(16)]
