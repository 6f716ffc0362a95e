"""PLAID and Voyager indexes: agreement with exact MaxSim, updates, persistence, filtering, bad input."""

from __future__ import annotations

import doctest
import gzip
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pipeline import indexes
from pipeline.indexes import base as index_base
from pipeline.indexes.indexing import exact_search, recall_at_k
from tests.paths import require_shared_data, shared_data_present

REPO = Path(__file__).resolve().parents[2]
KINDS = ["PLAID", "Voyager"]
#: The shared contract's checks on small random sets also run on the token-level ScaNN index.
CONTRACT_KINDS = [*KINDS, "ScaNN"]
N_DOCS = 200
N_QUERIES = 30


def random_documents(
    n: int, dim: int = 32, seed: int = 0, tokens: tuple[int, int] = (8, 24)
) -> list[np.ndarray]:
    """Unit-norm random token embeddings: cheap documents for tests that do not need a model."""
    rng = np.random.default_rng(seed)
    documents = []
    for _ in range(n):
        array = rng.standard_normal((int(rng.integers(*tokens)), dim)).astype(np.float32)
        documents.append(array / np.linalg.norm(array, axis=1, keepdims=True))
    return documents


def make_index(kind: str, folder: Path, name: str, **kwargs):
    if kind == "PLAID":
        return indexes.PLAID(index_folder=folder, index_name=name, device="cpu", **kwargs)
    if kind == "ScaNN":
        return indexes.ScaNN(index_folder=str(folder), index_name=name, **kwargs)
    return indexes.Voyager(index_folder=folder, index_name=name, show_progress=False, **kwargs)


def subprocess_env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}


# ---------------------------------------------------------------------------------------------- corpora
#: The recall test runs over both: the generated corpus always (so CI covers what a clone without ../shared
#: runs), SciFact's first documents (real text) where ../shared is (on CI it must be: tests/paths.py).
CORPORA = ("generated", "scifact")
#: The corpus the other tests share: SciFact's when it is here, else the generated one.
DEFAULT_CORPUS = "scifact" if shared_data_present("scifact/corpus.jsonl.gz") else "generated"
#: 20 topics, each with three words no other topic uses.
TOPICS = [
    ("volcano", "lava", "eruption"), ("penguin", "antarctic", "krill"),
    ("violin", "orchestra", "concerto"), ("glacier", "ice", "meltwater"),
    ("bitcoin", "blockchain", "mining"), ("cathedral", "gothic", "stained glass"),
    ("tornado", "storm", "funnel"), ("chess", "grandmaster", "checkmate"),
    ("coffee", "espresso", "roast"), ("submarine", "sonar", "torpedo"),
    ("wheat", "harvest", "flour"), ("telescope", "galaxy", "nebula"),
    ("pirate", "treasure", "galleon"), ("diabetes", "insulin", "glucose"),
    ("earthquake", "fault", "tremor"), ("samurai", "katana", "shogun"),
    ("honeybee", "hive", "pollen"), ("marathon", "runner", "finish line"),
    ("dinosaur", "fossil", "jurassic"), ("opera", "soprano", "aria"),
]  # fmt: skip


def generated_texts() -> tuple[list[str], list[str], list[str]]:
    """Ten documents on each of the 20 topics, and queries that each name one topic's words.

    So each query's exact top 10 is its topic's ten documents, set apart from the eleventh by a MaxSim margin
    several times PLAID's score error (``test_the_generated_corpus_sets_each_querys_answers_apart`` checks
    both): PLAID's top 10 can only differ where its error exceeds half that margin, so recall@10 is 1 here
    and the 0.9 bound holds with room. (Documents that differ only in a number, as an earlier version of
    this corpus had, tie within PLAID's error, and recall@10 came out at 0.89.)
    """
    ids, texts = [], []
    for i in range(N_DOCS):
        name, word, other = TOPICS[i % len(TOPICS)]
        ids.append(f"doc-{i}")
        texts.append(f"Report {i // len(TOPICS)} about the {name}: the {word} and the {other}, note {i}.")
    queries = []
    for i in range(N_QUERIES):
        topic = TOPICS[i % len(TOPICS)]
        queries.append(f"what is known about the {topic[0]} and its {topic[1 + i // len(TOPICS)]}?")
    return ids, texts, queries


def scifact_texts() -> tuple[list[str], list[str], list[str]]:
    """SciFact's first documents and queries (``../shared/data``; fails on CI, skips elsewhere without it)."""
    folder = require_shared_data("scifact")
    texts, ids = [], []
    with gzip.open(folder / "corpus.jsonl.gz", "rt", encoding="utf-8") as handle:
        for line in handle:
            row = json.loads(line)
            ids.append(str(row["_id"]))
            texts.append(f"{row['title']} {row['text']}".strip())
            if len(ids) == N_DOCS:
                break
    with open(folder / "queries.jsonl", encoding="utf-8") as handle:
        queries = [json.loads(line)["text"] for _, line in zip(range(N_QUERIES), handle, strict=False)]
    return ids, texts, queries


# ---------------------------------------------------------------------------------------------- fixtures
Corpus = tuple[list[str], list[np.ndarray], list[np.ndarray]]


@pytest.fixture(scope="module")
def corpora(colbert_model) -> Callable[[str], Corpus]:
    """A corpus by name (ids, encoded documents, encoded queries), encoded once, when a test first asks."""
    encoded: dict[str, Corpus] = {}

    def get(name: str) -> Corpus:
        if name not in encoded:
            ids, texts, queries = {"generated": generated_texts, "scifact": scifact_texts}[name]()
            documents = colbert_model.encode(texts, is_query=False, batch_size=32)
            encoded[name] = ids, documents, colbert_model.encode(queries, is_query=True)
        return encoded[name]

    return get


@pytest.fixture(scope="module")
def built_over(corpora, module_tmp_path) -> Callable[[str], dict[str, Any]]:
    """One PLAID and one Voyager index over a corpus, at default settings, built once per corpus."""
    built: dict[str, dict[str, Any]] = {}

    def get(name: str) -> dict[str, Any]:
        if name not in built:
            ids, documents, _ = corpora(name)
            built[name] = {}
            for kind in KINDS:
                index = make_index(kind, module_tmp_path / name, kind.lower(), override=True)
                index.add_documents(documents_ids=ids, documents_embeddings=documents)
                built[name][kind] = index
        return built[name]

    return get


@pytest.fixture(scope="module")
def corpus(corpora) -> Corpus:
    return corpora(DEFAULT_CORPUS)


@pytest.fixture(scope="module")
def built(built_over) -> dict[str, Any]:
    return built_over(DEFAULT_CORPUS)


@pytest.fixture(scope="module")
def reference(corpus):
    ids, documents, queries = corpus
    return exact_search(queries, documents, ids, k=10)


def maxsim(query: np.ndarray, document: np.ndarray) -> float:
    return float((query @ document.T).max(axis=1).sum())


# ---------------------------------------------------------------------------------------------- quality
@pytest.mark.parametrize("source", CORPORA)
@pytest.mark.parametrize("kind", KINDS)
def test_top10_agrees_with_exact_maxsim(kind, source, corpora, built_over):
    ids, documents, queries = corpora(source)
    reference = exact_search(queries, documents, ids, k=10)
    results = built_over(source)[kind].search(queries, k=10)
    assert len(results) == len(queries)
    assert recall_at_k(results, reference, k=10) >= 0.9
    for row in results:
        assert len(row) == 10
        scores = [hit["score"] for hit in row]
        assert scores == sorted(scores, reverse=True)
        assert all(isinstance(hit["id"], str) and hit["id"] in set(ids) for hit in row)


def test_the_generated_corpus_sets_each_querys_answers_apart(corpora, built_over):
    """Why the generated corpus meets recall@10 >= 0.9 (see :func:`generated_texts`), checked per query.

    PLAID's top 10 differs from the exact one only if a non-answer outscores an answer in its approximate
    scores: impossible where the exact margin between the 10th and 11th documents exceeds PLAID's largest
    score error on an answer plus its largest on a non-answer.
    """
    ids, documents, queries = corpora("generated")
    exact = exact_search(queries, documents, ids, k=11)
    position = {doc_id: i for i, doc_id in enumerate(ids)}
    found = built_over("generated")["PLAID"].search(queries, k=N_DOCS)  # every candidate, scored
    for i, (query, expected, row) in enumerate(zip(queries, exact, found, strict=True)):
        answers = {hit["id"] for hit in expected[:10]}
        # the ten answers are the query's topic's ten documents
        assert {int(doc_id.removeprefix("doc-")) % len(TOPICS) for doc_id in answers} == {i % len(TOPICS)}
        error = {hit["id"]: abs(hit["score"] - maxsim(query, documents[position[hit["id"]]])) for hit in row}
        worst_answer = max(error[doc_id] for doc_id in answers if doc_id in error)
        worst_other = max(value for doc_id, value in error.items() if doc_id not in answers)
        margin = expected[9]["score"] - expected[10]["score"]
        assert margin > worst_answer + worst_other, (i, margin, worst_answer, worst_other)


def test_voyager_scores_are_exact_maxsim(built, corpus, reference):
    _, _, queries = corpus
    results = built["Voyager"].search(queries, k=3)
    for row, expected in zip(results, reference, strict=True):
        # Candidates are rescored exactly, so whenever the best document is found its score matches.
        if row[0]["id"] == expected[0]["id"]:
            assert row[0]["score"] == pytest.approx(expected[0]["score"], rel=1e-5)


def test_facts(built, corpus):
    ids, documents, _ = corpus
    for index in built.values():
        stats = index.stats()
        assert stats["documents"] == index.num_documents == len(index) == len(ids)
        assert stats["tokens"] == index.num_tokens == sum(len(d) for d in documents)
        assert stats["dim"] == index.embedding_size == documents[0].shape[1]
        live = index.path / stats["version"]
        assert (
            stats["bytes_on_disk"]
            == index.disk_bytes
            == sum(p.stat().st_size for p in live.rglob("*") if p.is_file())
        )
        assert index.documents_ids == ids


def test_id_mapping_is_not_reread_per_search(built, corpus, monkeypatch):
    _, _, queries = corpus
    expected = built["PLAID"](queries[:2], k=5)

    def no_disk_reads(*args, **kwargs):
        raise AssertionError("the id mapping was read again during a search")

    monkeypatch.setattr(json, "loads", no_disk_reads)
    monkeypatch.setattr(Path, "read_text", no_disk_reads)
    assert built["PLAID"](queries[:2], k=5) == expected


# ---------------------------------------------------------------------------------------------- filtering
@pytest.mark.parametrize("kind", KINDS)
def test_subset_never_returns_an_id_outside_it(kind, built, corpus):
    ids, _, queries = corpus
    rng = np.random.default_rng(1)
    per_query = [list(rng.choice(ids, size=int(rng.integers(1, 40)), replace=False)) for _ in queries]
    results = built[kind].search(queries, k=10, subset=per_query)
    for row, allowed in zip(results, per_query, strict=True):
        assert row, "a non-empty subset must give results"
        assert {hit["id"] for hit in row} <= set(allowed)
        assert len(row) == min(10, len(allowed))
    shared = [*ids[100:130], "not-indexed"]
    for row in built[kind].search(queries, k=5, subset=shared):
        assert {hit["id"] for hit in row} <= set(shared[:-1])
    assert built[kind].search(queries[:2], k=5, subset=[[], ids[:3]])[0] == []


def test_subset_matches_exact_search_within_the_subset(built, corpus):
    ids, documents, queries = corpus
    allowed = ids[::7]
    positions = [ids.index(i) for i in allowed]
    expected = exact_search(queries, [documents[p] for p in positions], allowed, k=5)
    for kind in KINDS:
        results = built[kind].search(queries, k=5, subset=allowed)
        assert recall_at_k(results, expected, k=5) >= 0.9


# ---------------------------------------------------------------------------------------------- updates
@pytest.mark.parametrize("kind", CONTRACT_KINDS)
def test_add_then_remove_leaves_exactly_the_expected_ids(kind, tmp_path):
    documents = random_documents(60, seed=3)
    index = make_index(kind, tmp_path, "updates")
    index.add_documents(documents_ids=list(range(40)), documents_embeddings=documents[:40])
    index.remove_documents([3, 17, 39])
    index.add_documents(documents_ids=[f"x{i}" for i in range(40, 60)], documents_embeddings=documents[40:])
    index.remove_documents(["x45", 0])
    expected = [i for i in range(40) if i not in {0, 3, 17, 39}] + [f"x{i}" for i in range(40, 60) if i != 45]
    assert index.documents_ids == expected
    assert index.num_tokens == sum(len(documents[i if isinstance(i, int) else int(i[1:])]) for i in expected)
    # Every live document finds itself; removed ones are never returned.
    own = [documents[i if isinstance(i, int) else int(i[1:])] for i in expected]
    results = index.search(own, k=len(expected) + 10)
    assert [row[0]["id"] for row in results] == expected
    returned = {hit["id"] for row in results for hit in row}
    assert returned == set(expected)
    reopened = make_index(kind, tmp_path, "updates")
    assert reopened.documents_ids == expected
    assert [row[0]["id"] for row in reopened.search(own, k=1)] == expected


@pytest.mark.parametrize("kind", CONTRACT_KINDS)
def test_duplicate_and_unknown_ids_change_nothing(kind, tmp_path):
    documents = random_documents(12, seed=4)
    index = make_index(kind, tmp_path, "dups")
    index.add_documents(documents_ids=[str(i) for i in range(10)], documents_embeddings=documents[:10])
    version = index.stats()["version"]
    with pytest.raises(indexes.DuplicateDocumentIdError, match="'3'"):
        index.add_documents(documents_ids=["10", "3"], documents_embeddings=documents[10:12])
    with pytest.raises(indexes.DuplicateDocumentIdError, match="more than once"):
        index.add_documents(documents_ids=["10", "10"], documents_embeddings=documents[10:12])
    # PyLate's tests expect removing an absent id not to raise: it is skipped with a warning naming it.
    with pytest.warns(indexes.UnknownIdWarning, match="'nope'"):
        index.remove_documents(["nope"])
    assert index.stats()["version"] == version
    # "3" and 3 are different documents: an int id does not collide with a str one.
    index.add_documents(documents_ids=[3], documents_embeddings=documents[10:11])
    assert index.documents_ids == [*(str(i) for i in range(10)), 3]
    assert index.stats()["version"] != version
    assert index.search(documents[10:11], k=1)[0][0]["id"] == 3


def test_plaid_builds_are_reproducible_with_a_seed(tmp_path):
    documents = random_documents(80, seed=5)
    queries = random_documents(5, seed=6)
    results = []
    for name in ("a", "b"):
        index = make_index("PLAID", tmp_path, name, seed=7)
        index.add_documents(documents_ids=list(range(80)), documents_embeddings=documents)
        results.append(index.search(queries, k=10))
    assert results[0] == results[1]


def test_kmeans_blocks_are_bounded_and_the_index_is_the_same(tmp_path, monkeypatch):
    from fast_plaid.search import fast_plaid as backend

    # 260 documents x 8-23 tokens: ~4,000 k-means points, so 500-point blocks mean several of them.
    documents = random_documents(260, seed=8)
    seen: list[int] = []
    original = backend.FastKMeans

    def spy(*args, **kwargs):
        seen.append(kwargs.get("chunk_size_data", 51_200))
        return original(*args, **kwargs)

    monkeypatch.setattr(backend, "FastKMeans", spy)
    files = {}
    for name, chunk in (("small", 500), ("fast-plaid", 51_200)):
        index = make_index("PLAID", tmp_path, name, seed=3, kmeans_chunk_size=chunk)
        index.add_documents(documents_ids=list(range(260)), documents_embeddings=documents)
        files[name] = {p.name: p.read_bytes() for p in (tmp_path / name).rglob("*.npy")}
        assert backend.FastKMeans is spy  # put back after the build
    assert seen == [500, 51_200]
    assert files["small"] and files["small"] == files["fast-plaid"]  # centroids, codes, residuals alike
    assert make_index("PLAID", tmp_path, "default").kmeans_chunk_size == 8192  # CPU default
    with pytest.raises(ValueError, match="kmeans_chunk_size"):
        make_index("PLAID", tmp_path, "bad", kmeans_chunk_size=0)


@pytest.mark.parametrize("kind", CONTRACT_KINDS)
def test_transaction_is_all_or_nothing(kind, tmp_path):
    documents = random_documents(20, seed=8)
    index = make_index(kind, tmp_path, "txn")
    index.add_documents(documents_ids=list(range(10)), documents_embeddings=documents[:10])
    with pytest.raises(RuntimeError, match="boom"), index.transaction():
        index.add_documents(documents_ids=list(range(10, 15)), documents_embeddings=documents[10:15])
        assert index.num_documents == 15  # visible inside the transaction
        raise RuntimeError("boom")
    assert index.documents_ids == list(range(10))
    assert make_index(kind, tmp_path, "txn").documents_ids == list(range(10))
    with index.transaction():
        index.add_documents(documents_ids=list(range(10, 15)), documents_embeddings=documents[10:15])
        index.remove_documents([0])
        index.add_documents(documents_ids=list(range(15, 20)), documents_embeddings=documents[15:20])
    assert make_index(kind, tmp_path, "txn").documents_ids == list(range(1, 20))
    assert [p.name for p in index.path.iterdir() if p.name.startswith("v")] == [index.stats()["version"]]


# ---------------------------------------------------------------------------------------------- persistence
REOPEN_SCRIPT = """
import json, sys
import numpy as np
from pipeline import indexes
folder, queries_path = sys.argv[1], sys.argv[2]
queries = list(np.load(queries_path))
out = {
    "PLAID": indexes.PLAID(index_folder=folder, index_name="plaid", device="cpu").search(queries, k=10),
    "Voyager": indexes.Voyager(index_folder=folder, index_name="voyager").search(queries, k=10),
}
print(json.dumps(out))
"""


@pytest.mark.slow
def test_reopen_in_a_new_process_gives_identical_results(built, corpus, tmp_path):
    _, _, queries = corpus
    queries_path = tmp_path / "queries.npy"
    np.save(queries_path, np.stack(queries))
    folder = built["PLAID"].path.parent
    completed = subprocess.run(
        [sys.executable, "-c", REOPEN_SCRIPT, str(folder), str(queries_path)],
        capture_output=True,
        text=True,
        env=subprocess_env(),
        cwd=tmp_path,
        timeout=300,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
    other = json.loads(completed.stdout.strip().splitlines()[-1])
    for kind in KINDS:
        # JSON round-trips Python floats exactly, so this compares scores bit for bit.
        assert other[kind] == built[kind].search(queries, k=10)


BUILD_SCRIPT = """
import sys
import numpy as np
from pipeline import indexes
kind, folder, name, data_path, override = sys.argv[1:6]
data = np.load(data_path)
if kind == "PLAID":
    index = indexes.PLAID(index_folder=folder, index_name=name, override=override == "1", device="cpu")
else:
    index = indexes.Voyager(
        index_folder=folder, index_name=name, override=override == "1", show_progress=False
    )
print("OPENED", flush=True)
index.add_documents(documents_ids=[f"new{i}" for i in range(len(data))], documents_embeddings=list(data))
print("DONE", flush=True)
"""


@pytest.mark.slow
@pytest.mark.parametrize(("kind", "override"), [("PLAID", False), ("Voyager", True)])
def test_a_build_killed_midway_leaves_the_previous_index(kind, override, tmp_path):
    old = random_documents(30, dim=64, seed=9)
    index = make_index(kind, tmp_path, "live")
    index.add_documents(documents_ids=[f"old{i}" for i in range(30)], documents_embeddings=old)
    before = index.search(old[:5], k=5)
    committed = index.stats()["version"]
    # A batch big enough that building it takes seconds, so the kill lands mid-build.
    rng = np.random.default_rng(10)
    big = rng.standard_normal((700, 30, 64)).astype(np.float32)
    np.save(tmp_path / "big.npy", big / np.linalg.norm(big, axis=2, keepdims=True))
    process = subprocess.Popen(
        [
            sys.executable,
            "-c",
            BUILD_SCRIPT,
            kind,
            str(tmp_path),
            "live",
            str(tmp_path / "big.npy"),
            str(int(override)),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=subprocess_env(),
    )
    deadline = time.monotonic() + 240
    try:
        while not any(p.name.startswith("v") and p.name != committed for p in index.path.iterdir()):
            assert process.poll() is None, process.stderr.read().decode()[-2000:] if process.stderr else ""
            assert time.monotonic() < deadline, "the build never started"
            time.sleep(0.01)
        time.sleep(0.3)  # let it write part of the new version
        assert process.poll() is None, "the build finished before it could be killed"
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == -signal.SIGKILL
    reopened = make_index(kind, tmp_path, "live")
    assert reopened.stats()["version"] == committed
    assert reopened.documents_ids == [f"old{i}" for i in range(30)]
    assert reopened.search(old[:5], k=5) == before
    # The next writer sweeps the abandoned half-built version.
    reopened.add_documents(documents_ids=["extra"], documents_embeddings=random_documents(1, dim=64, seed=11))
    assert [p.name for p in index.path.iterdir() if p.name.startswith("v")] == [reopened.stats()["version"]]


def test_override_replaces_only_at_the_first_write(tmp_path):
    documents = random_documents(10, seed=12)
    first = make_index("Voyager", tmp_path, "idx")
    first.add_documents(documents_ids=list(range(5)), documents_embeddings=documents[:5])
    assert make_index("Voyager", tmp_path, "idx").documents_ids == list(range(5))  # override=False opens
    fresh = make_index("Voyager", tmp_path, "idx", override=True)
    assert fresh.num_documents == 0 and fresh.search(documents[:1], k=3) == [[]]
    assert make_index("Voyager", tmp_path, "idx").documents_ids == list(range(5))  # not replaced yet
    fresh.add_documents(documents_ids=["a", "b"], documents_embeddings=documents[5:7])
    assert make_index("Voyager", tmp_path, "idx").documents_ids == ["a", "b"]


# ---------------------------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("name", ["../x", "a/b", "", ".", "..", ".hidden", "a\\b", "x\x00"])
def test_index_names_cannot_escape_the_folder(name, tmp_path):
    for kind in KINDS:
        with pytest.raises(ValueError, match="index_name"):
            make_index(kind, tmp_path / "indexes", name)
    assert not (tmp_path / "x").exists()


def test_a_symlinked_name_cannot_escape_the_folder(tmp_path):
    (tmp_path / "indexes").mkdir()
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "indexes" / "link").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(ValueError, match="outside index_folder"):
        make_index("PLAID", tmp_path / "indexes", "link")


@pytest.mark.parametrize("kind", CONTRACT_KINDS)
def test_bad_documents_are_rejected_and_nothing_is_lost(kind, tmp_path):
    documents = random_documents(6, seed=13)
    index = make_index(kind, tmp_path, "bad")
    index.add_documents(documents_ids=["a", "b", "c"], documents_embeddings=documents[:3])
    before = index.search(documents[:3], k=3)
    cases = [
        (["d"], [np.ones((4, 16), np.float32)], "documents_embeddings\\[0\\] has dimension 16.*holds 32"),
        ([], [], "documents_ids is empty"),
        (["d", "e"], documents[3:4], "has 1 items, expected 2"),
        (["d"], [np.ones((0, 32), np.float32)], "0 tokens"),
        (["d"], [np.ones(32, np.float32)], "must be a 2-D"),
        (["d"], [np.full((3, 32), np.nan, np.float32)], "NaN"),
        ([1.5], documents[3:4], "ids must be str or int"),
        ([None], documents[3:4], "ids must be str or int"),
    ]
    for ids, embeddings, message in cases:
        with pytest.raises(ValueError, match=message):
            index.add_documents(documents_ids=ids, documents_embeddings=embeddings)
    assert index.documents_ids == ["a", "b", "c"]
    assert index.search(documents[:3], k=3) == before
    assert make_index(kind, tmp_path, "bad").search(documents[:3], k=3) == before


@pytest.mark.parametrize("kind", KINDS)
def test_bad_queries_are_rejected(kind, built, corpus):
    _, _, queries = corpus
    index = built[kind]
    with pytest.raises(ValueError, match="queries_embeddings\\[1\\] has dimension 64"):
        index.search([queries[0], np.ones((32, 64), np.float32)], k=3)
    # A single (tokens, dim) array is one query, as in PyLate.
    assert len(index.search(queries[0], k=3)) == 1
    with pytest.raises(ValueError, match="must be 3-D"):
        index.search(np.ones((2, 3, 4, 5), np.float32), k=3)
    with pytest.raises(ValueError, match="k must be a positive integer"):
        index.search(queries[:1], k=0)
    with pytest.raises(ValueError, match="subset has 1 lists but there are 2 queries"):
        index.search(queries[:2], k=3, subset=[["a"]])
    assert index.search([], k=3) == []


def test_corrupt_or_foreign_folders_give_clear_errors(tmp_path):
    documents = random_documents(5, seed=14)
    index = make_index("Voyager", tmp_path, "idx")
    index.add_documents(documents_ids=list(range(5)), documents_embeddings=documents)
    version = index.path / index.stats()["version"]

    with pytest.raises(indexes.IndexFormatError, match="'voyager' index, not 'plaid'"):
        make_index("PLAID", tmp_path, "idx")

    (version / "documents.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(indexes.IndexFormatError, match=r"documents\.json: corrupt"):
        make_index("Voyager", tmp_path, "idx")

    (version / "manifest.json").unlink()
    with pytest.raises(indexes.IndexFormatError, match=r"manifest\.json: missing"):
        make_index("Voyager", tmp_path, "idx")

    (index.path / "CURRENT").write_text("garbage", encoding="utf-8")
    with pytest.raises(indexes.IndexFormatError, match="corrupt pointer"):
        make_index("Voyager", tmp_path, "idx")

    (index.path / "CURRENT").write_text('{"version": "v000009-0123abcd"}', encoding="utf-8")
    with pytest.raises(indexes.IndexFormatError, match="is missing"):
        make_index("Voyager", tmp_path, "idx")

    foreign = tmp_path / "notes"
    foreign.mkdir()
    (foreign / "todo.txt").write_text("keep me", encoding="utf-8")
    with pytest.raises(indexes.IndexFormatError, match="not an index folder"):
        make_index("PLAID", tmp_path, "notes")
    assert (foreign / "todo.txt").read_text(encoding="utf-8") == "keep me"


def test_a_truncated_backend_file_is_reported(tmp_path):
    documents = random_documents(5, seed=15)
    index = make_index("PLAID", tmp_path, "idx")
    index.add_documents(documents_ids=list(range(5)), documents_embeddings=documents)
    (index.path / index.stats()["version"] / "plaid" / "metadata.json").unlink()
    with pytest.raises(indexes.IndexFormatError, match="cannot load the plaid index"):
        make_index("PLAID", tmp_path, "idx")


def test_a_missing_index_opens_empty(tmp_path):
    index = make_index("PLAID", tmp_path, "never-built")
    assert index.num_documents == 0 and index.disk_bytes == 0
    assert index(random_documents(2, seed=16), k=3) == [[], []]
    assert not (tmp_path / "never-built").exists()  # opening writes nothing


def test_docstring_examples_run():
    from pipeline.indexes import checks, plaid, plaid_kmeans, storage, voyager

    for module in (index_base, checks, storage, plaid, plaid_kmeans, voyager, indexes):
        failures, _ = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
        assert failures == 0, module.__name__


def test_kmeans_samples_documents_for_the_points_per_centroid_it_trains_on(tmp_path, monkeypatch):
    from fast_plaid.search import fast_plaid as backend

    from pipeline.indexes.plaid_kmeans import fast_plaid_centroids, kmeans_sample_documents

    # 300 documents x 8-23 tokens (~4,600): 1,024 centroids, so 2 points each need ~140 documents.
    documents = random_documents(300, seed=9)
    counts = [len(d) for d in documents]
    assert kmeans_sample_documents(counts, points_per_centroid=2) < 300
    assert kmeans_sample_documents(counts, points_per_centroid=256) == 300  # small corpora: every document
    sampled: list[int | None] = []
    original = backend.compute_kmeans

    def spy(*args, **kwargs):
        sampled.append(kwargs["n_samples_kmeans"])
        return original(*args, **kwargs)

    monkeypatch.setattr(backend, "compute_kmeans", spy)
    index = make_index("PLAID", tmp_path, "sampled", max_points_per_centroid=2)
    index.add_documents(documents_ids=list(range(300)), documents_embeddings=documents)
    make_index("PLAID", tmp_path, "given", n_samples_kmeans=50).add_documents(
        documents_ids=list(range(300)), documents_embeddings=documents
    )
    # At the defaults (rerank on) the index has half of fast-plaid's centroids: 512 here, so half the sample.
    half = fast_plaid_centroids(sum(counts)) // 2
    assert sampled == [kmeans_sample_documents(counts, points_per_centroid=2, centroids=half), 50]
    results = index.search(documents[:5], k=1)
    assert [hits[0]["id"] for hits in results] == [0, 1, 2, 3, 4]  # each document still finds itself
    assert make_index("PLAID", tmp_path, "default").max_points_per_centroid == 32
    with pytest.raises(ValueError, match="n_samples_kmeans"):
        make_index("PLAID", tmp_path, "bad", n_samples_kmeans=0)


def test_n_centroids_sets_the_centroids_of_a_build_and_of_a_rebuild(tmp_path):
    from fast_plaid.search import fast_plaid as backend

    from pipeline.indexes.plaid_kmeans import fast_plaid_centroids

    documents = random_documents(300, seed=4)
    assert fast_plaid_centroids(sum(len(d) for d in documents)) == 1024  # what fast-plaid would pick
    original = backend.compute_kmeans
    index = make_index("PLAID", tmp_path, "few", n_centroids=64)
    index.add_documents(documents_ids=list(range(300)), documents_embeddings=documents)
    assert backend.compute_kmeans is original  # swapped back after the build

    def centroids() -> int:
        live = json.loads((index.path / "CURRENT").read_text())["version"]  # the version folder serving
        return len(np.load(index.path / live / "plaid" / "centroids.npy"))

    assert centroids() == 64
    # A small index is rebuilt whole by fast-plaid's update: still 64, and every document finds itself.
    index.add_documents(
        documents_ids=list(range(300, 340)), documents_embeddings=random_documents(40, seed=5)
    )
    assert centroids() == 64
    results = index.search(documents[:5], k=1)
    assert [hits[0]["id"] for hits in results] == [0, 1, 2, 3, 4]
    with pytest.raises(ValueError, match="n_centroids"):
        make_index("PLAID", tmp_path, "bad", n_centroids=0)
