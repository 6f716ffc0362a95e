"""Voyager index: HNSW over every token embedding, then an exact MaxSim rerank of the candidate documents.

Each query token fetches its ``k_token`` nearest document tokens from a voyager HNSW graph; the documents
those tokens belong to are the candidates, and they are scored exactly with MaxSim on their full-precision
token embeddings (which the HNSW index already stores, so nothing is kept twice).

Token ``t`` of the index is HNSW item ``t``; a document owns a contiguous run of tokens, so the owner of a
token is a binary search over the documents' first tokens. Removing a document marks its tokens deleted
in the graph (a tombstone): they stop appearing in searches, but keep their space until the index is
rebuilt (``override=True`` and add everything again).

Example:
    >>> import numpy as np, tempfile
    >>> from pipeline import indexes
    >>> rng = np.random.default_rng(0)
    >>> docs = [rng.standard_normal((6, 16)).astype("float32") for _ in range(20)]
    >>> index = indexes.Voyager(index_folder=tempfile.mkdtemp(), index_name="demo")
    >>> index = index.add_documents(documents_ids=list(range(20)), documents_embeddings=docs)
    >>> index = index.remove_documents([4])
    >>> [hit["id"] for hit in index.search(docs[3:5], k=1)[0]], 4 in index
    ([3], False)

Called directly, as in PyLate, the index answers with its token-level neighbours,
``{"documents_ids": [query][token][k], "distances": [query][token][k]}`` (voyager's inner-product distance,
``1 - dot``); :class:`pipeline.retrieve.ColBERT` and :meth:`search` turn them into ranked documents.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
import voyager
from tqdm.auto import tqdm

from pipeline.indexes.base import MultiVectorIndex
from pipeline.indexes.checks import DocumentId, as_float_arrays, check_k, id_key

logger = logging.getLogger(__name__)

HNSW_FILE = "voyager.index"
#: Tokens inserted per ``add_items`` call: bounds the progress bar's step and the temporary copies.
_ADD_CHUNK = 65_536


class Voyager(MultiVectorIndex):
    """A token-level HNSW index (voyager) with an exact MaxSim rerank.

    Args:
        index_folder: Folder that holds indexes.
        index_name: Name of this index: a plain folder name inside ``index_folder``.
        override: ``False`` opens an existing index (or starts an empty one); ``True`` starts empty and
            replaces whatever is on disk at the first write (until then the old index stays readable).
        embedding_size: Expected embedding dimension; ``None`` takes it from the first documents.
        M: HNSW links per node. 16 keeps builds fast on CPU; candidates are reranked exactly, so the
            graph only has to find a document's best tokens roughly.
        ef_construction: HNSW build-time search depth.
        ef_search: HNSW query-time search depth (raised to ``k_token`` when smaller).
        k_token: Nearest document tokens fetched per query token; their documents are the candidates.
        subset_exact_limit: A ``subset`` of at most this many documents is scored exactly (every allowed
            document), so filtering never misses; larger subsets filter the HNSW candidates.
        seed: HNSW random seed.
        show_progress: Show a progress bar while inserting tokens.

    Facts: ``num_documents``, ``num_tokens``, ``disk_bytes``, ``embedding_size``, ``documents_ids`` and
    ``stats()``.
    """

    kind = "voyager"
    compacts_on_remove = False

    def __init__(
        self,
        index_folder: str | os.PathLike[str] = "indexes",
        index_name: str = "index",
        override: bool = False,
        embedding_size: int | None = None,
        *,
        M: int = 16,
        ef_construction: int = 100,
        ef_search: int = 100,
        k_token: int = 32,
        subset_exact_limit: int = 512,
        seed: int = 42,
        show_progress: bool = True,
    ) -> None:
        for name, value in {
            "M": M,
            "ef_construction": ef_construction,
            "ef_search": ef_search,
            "k_token": k_token,
        }.items():
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if not isinstance(subset_exact_limit, int) or subset_exact_limit < 0:
            raise ValueError(f"subset_exact_limit must be a non-negative integer, got {subset_exact_limit!r}")
        self.M = M
        self.ef_construction = ef_construction
        self.ef_search = ef_search
        self.k_token = k_token
        self.subset_exact_limit = subset_exact_limit
        self.seed = seed
        self.show_progress = show_progress
        self._hnsw: voyager.Index | None = None
        self._starts = np.zeros(0, dtype=np.int64)
        self._alive = np.zeros(0, dtype=bool)
        super().__init__(
            index_folder,
            index_name,
            override,
            embedding_size,
            settings={"M": M, "ef_construction": ef_construction, "seed": seed, "space": "InnerProduct"},
        )

    # ------------------------------------------------------------------ PyLate's token-level API
    def __call__(self, queries_embeddings: Any, k: int = 10, subset: Any = None) -> dict[str, list[Any]]:  # type: ignore[override]
        """PyLate's Voyager call: the ``k`` nearest document tokens of every query token.

        Returns ``{"documents_ids": [...], "distances": [...]}``, each indexed ``[query][query token][k]``:
        the id of the document owning each neighbour token and voyager's distance to it (``1 - dot``,
        smaller is closer). Removed documents never appear. ``subset`` is not supported at token level
        (as in PyLate): pass it to :meth:`search` or ``retrieve.ColBERT.retrieve`` instead.
        """
        if subset is not None:
            raise ValueError("Voyager(...) at token level takes no subset: use index.search(..., subset=...)")
        check_k(k)
        queries = as_float_arrays(queries_embeddings, argument="queries_embeddings", dim=self._dim)
        if self.num_documents == 0 or self._hnsw is None:
            raise ValueError(f"the index {self.path} is empty: add documents before querying")
        live_tokens = self.num_tokens
        k = min(int(k), live_tokens)
        stacked = np.concatenate(queries)
        neighbours, distances = self._hnsw.query(stacked, k=k, query_ef=max(self.ef_search, k))
        owners = np.searchsorted(self._starts, neighbours.astype(np.int64), side="right") - 1
        documents_ids: list[list[list[DocumentId]]] = []
        all_distances: list[list[list[float]]] = []
        offset = 0
        for query in queries:
            rows = slice(offset, offset + len(query))
            offset += len(query)
            documents_ids.append([[self._slot_ids[s] for s in token] for token in owners[rows].tolist()])
            all_distances.append(distances[rows].tolist())
        return {"documents_ids": documents_ids, "distances": all_distances}

    def get_documents_embeddings(self, document_ids: list[list[DocumentId]]) -> list[list[np.ndarray]]:
        """PyLate's helper: the stored ``(tokens, dim)`` embeddings of each id, in the same nesting.

        An id that is not in the index is an error naming it (the group and position).
        """
        result: list[list[np.ndarray]] = []
        for group_number, group in enumerate(document_ids):
            slots = []
            for position, value in enumerate(group):
                slot = (
                    self._positions.get(id_key(value)) if isinstance(value, str | int | np.integer) else None
                )
                if slot is None:
                    raise KeyError(
                        f"document_ids[{group_number}][{position}] = {value!r} is not in {self.path}"
                    )
                slots.append(slot)
            tensors = self._document_embeddings(np.asarray(slots, dtype=np.int64)) if slots else []
            result.append([t.numpy() for t in tensors])
        return result

    # ------------------------------------------------------------------ backend
    def _open_backend(self, version: Path | None) -> None:
        self._hnsw = None
        tokens = np.asarray(self._slot_tokens, dtype=np.int64)
        self._starts = (
            np.concatenate([[0], np.cumsum(tokens)[:-1]]).astype(np.int64) if len(tokens) else tokens
        )
        self._alive = np.array([v is not None for v in self._slot_ids], dtype=bool)
        if version is None or not self._slot_ids:
            return
        path = version / HNSW_FILE
        if not path.is_file():
            raise FileNotFoundError(f"{path} is missing")
        hnsw = voyager.Index.load(str(path))
        if hnsw.num_dimensions != self._dim:
            raise ValueError(f"{path} holds {hnsw.num_dimensions}-dim vectors, the manifest says {self._dim}")
        if hnsw.num_elements != int(tokens.sum()):
            raise ValueError(f"{path} holds {hnsw.num_elements} tokens, documents.json lists {tokens.sum()}")
        hnsw.ef = self.ef_search
        self._hnsw = hnsw

    def _write_added(self, source: Path | None, target: Path, embeddings: list[np.ndarray]) -> None:
        if self._hnsw is None:
            assert self._dim is not None
            self._hnsw = voyager.Index(
                voyager.Space.InnerProduct,
                num_dimensions=self._dim,
                M=self.M,
                ef_construction=self.ef_construction,
                random_seed=self.seed,
                max_elements=sum(len(e) for e in embeddings),
            )
        first = int(sum(self._slot_tokens))  # tombstoned tokens keep their numbers
        vectors = np.concatenate(embeddings)
        with tqdm(
            total=len(vectors), desc="Voyager: inserting tokens", unit="tok", disable=not self.show_progress
        ) as bar:
            for start in range(0, len(vectors), _ADD_CHUNK):
                chunk = vectors[start : start + _ADD_CHUNK]
                self._hnsw.add_items(chunk, ids=list(range(first + start, first + start + len(chunk))))
                bar.update(len(chunk))
        self._hnsw.save(str(target / HNSW_FILE))

    def _write_removed(self, source: Path, target: Path, slots: list[int]) -> None:
        assert self._hnsw is not None
        for slot in slots:
            start = int(self._starts[slot])
            for token in range(start, start + self._slot_tokens[slot]):
                self._hnsw.mark_deleted(token)
        self._hnsw.save(str(target / HNSW_FILE))

    def _document_embeddings(self, slots: np.ndarray) -> list[torch.Tensor]:
        assert self._hnsw is not None
        counts = np.asarray(self._slot_tokens, dtype=np.int64)[slots]
        token_ids = np.concatenate(
            [np.arange(s, s + c) for s, c in zip(self._starts[slots], counts, strict=True)]
        )
        vectors = torch.from_numpy(self._hnsw.get_vectors(token_ids.tolist()))
        return list(torch.split(vectors, counts.tolist()))

    def _candidates(self, queries: list[np.ndarray], allowed: list[np.ndarray | None]) -> list[np.ndarray]:
        """Candidate slots per query: HNSW neighbours of each query token, or a small subset itself."""
        live = self._alive.nonzero()[0]
        exact = [a is not None and len(a) <= self.subset_exact_limit for a in allowed]
        need = [i for i, is_exact in enumerate(exact) if not is_exact]
        # Until the HNSW narrows them down: the small subset itself, else every allowed live document.
        candidates: list[np.ndarray] = []
        for subset, is_exact in zip(allowed, exact, strict=True):
            if subset is None:
                candidates.append(live)
            else:
                candidates.append(subset if is_exact else np.intersect1d(live, subset))
        k_token = min(self.k_token, self.num_tokens)
        if need and k_token < self.num_tokens:
            assert self._hnsw is not None
            stacked = np.concatenate([queries[i] for i in need])
            try:
                neighbours, _ = self._hnsw.query(stacked, k=k_token, query_ef=max(self.ef_search, k_token))
            except RuntimeError as error:
                # Tombstones can leave the graph unable to return k live neighbours: score everything.
                logger.warning("HNSW query failed (%s); scoring every document exactly", error)
                return candidates
            owners = np.searchsorted(self._starts, neighbours.astype(np.int64), side="right") - 1
            offset = 0
            for i in need:
                rows = owners[offset : offset + len(queries[i])]
                offset += len(queries[i])
                slots = np.unique(rows)
                slots = slots[self._alive[slots]]
                if allowed[i] is not None:
                    slots = np.intersect1d(slots, allowed[i])
                candidates[i] = slots
        return candidates

    def _search_slots(
        self, queries: list[np.ndarray], k: int, allowed: list[np.ndarray | None]
    ) -> list[list[tuple[int, float]]]:
        return [
            self._rank_exactly(query, slots, self._document_embeddings(slots) if len(slots) else [], k)
            for query, slots in zip(queries, self._candidates(queries, allowed), strict=True)
        ]
