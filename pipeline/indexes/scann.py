"""ScaNN index: Google's ScaNN over every token embedding, with PyLate 1.6's constructor and token-level call.

In this module: the token-level call XTR ranks from and the exact MaxSim search ``retrieve.ColBERT``
uses, one backend of the shared index contract. The searcher itself (its build, safe serialisation and
loading) is :mod:`pipeline.indexes.scann_searcher`.

Token ``t`` of the index is ScaNN datapoint ``t``; a document owns a contiguous run of tokens. ScaNN
searchers are trained on their data (a k-means tree and anisotropic quantisation), so an addition rebuilds
the searcher over every token: that needs the earlier tokens, which ``store_embeddings=True`` (PyLate's
default) keeps in ``embeddings.npy``; with ``store_embeddings=False`` the index is built once, as in PyLate.
Removing a document leaves a tombstone (its tokens stop appearing in results), as in :class:`Voyager`.

Differences from PyLate 1.6, each a fix: nothing is pickled (ids live in the shared ``documents.json``,
ScaNN's own ``scann_docids.pkl`` is refused, the searcher's asset paths must stay inside the index);
``remove_documents`` works (PyLate raises ``NotImplementedError``); ``add_documents`` can be called again;
fewer than 16 tokens (too few to train ScaNN's quantiser, where PyLate fails) get an exact brute-force
searcher; a ``k`` larger than the index returns fewer neighbours instead of padding with document 0 at
score 0; ``index_folder=None`` (PyLate's in-memory index) lives in a private temporary folder removed with
the object, so nothing persists.

Example:
    >>> import numpy as np, tempfile
    >>> from pipeline import indexes
    >>> rng = np.random.default_rng(0)
    >>> docs = [rng.standard_normal((6, 8)).astype("float32") for _ in range(10)]
    >>> index = indexes.ScaNN(index_folder=tempfile.mkdtemp(), index_name="demo")
    >>> index = index.add_documents(documents_ids=list(range(10)), documents_embeddings=docs)
    >>> hits = index(docs[3], k=2)                 # PyLate's call: each query token's nearest tokens
    >>> sorted(hits), len(hits["documents_ids"][0]), len(hits["documents_ids"][0][0])
    (['distances', 'documents_ids'], 6, 2)
    >>> [hit["id"] for hit in index.search(docs[3], k=1)[0]]      # exact MaxSim of the candidates
    [3]
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import uuid
import weakref
from pathlib import Path
from typing import Any, Self

import numpy as np
import torch
from tqdm.auto import tqdm

from pipeline.indexes.base import MultiVectorIndex
from pipeline.indexes.checks import DocumentId, as_float_arrays, check_counts, check_k, id_key
from pipeline.indexes.scann_searcher import SEARCHER_FOLDER, build_searcher, load_searcher, write_searcher
from pipeline.indexes.storage import link_or_copy
from pipeline.project.io import atomic_write_json, read_json

logger = logging.getLogger(__name__)

EMBEDDINGS_FILE = "embeddings.npy"
STATE_FILE = "scann.json"
_VERBOSITY = {"none", "init", "all"}


def _verbosity(verbose: bool | str, verbose_level: str | None) -> str:
    """PyLate's two spellings as one level: ``verbose_level`` wins; ``True`` is ``"init"``, ``False`` none."""
    level = verbose_level if verbose_level is not None else ("init" if verbose is True else verbose)
    if level is False:
        level = "none"
    if level not in _VERBOSITY:
        raise ValueError(f"Invalid verbosity level: {level!r}. Expected one of: 'none', 'init', 'all'.")
    return level  # type: ignore[return-value]


def _storage_dtype(embeddings: Any) -> np.dtype | None:
    """float16 when every item is float16, else float32 (PyLate keeps fp16 / fp32 as given); a mix: error."""
    if isinstance(embeddings, np.ndarray | torch.Tensor):
        items = [embeddings]
    elif isinstance(embeddings, list | tuple):
        items = list(embeddings)
    else:
        return None  # the shared check names the argument
    halves: list[bool] = []
    for position, item in enumerate(items):
        half = getattr(item, "dtype", None) in (torch.float16, np.float16)
        if halves and half != halves[0]:
            raise ValueError(
                f"documents_embeddings[{position}] is {item.dtype} but documents_embeddings[0] is "
                f"{items[0].dtype}: all document embeddings must have the same dtype (float16 or float32)"
            )
        halves.append(half)
    return np.dtype(np.float16) if halves and halves[0] else np.dtype(np.float32)


class ScaNN(MultiVectorIndex):
    """A token-level ScaNN index, PyLate 1.6's ``indexes.ScaNN`` (same arguments, order and defaults).

    Args:
        index_name: Name of this index: a plain folder name inside ``index_folder``.
        embedding_size: Expected embedding dimension; ``None`` takes it from the first documents (PyLate's
            default of 128 is never checked by PyLate, so it is not a default here).
        num_neighbors: The searcher's default neighbour count (each call passes its own ``k``).
        num_leaves: k-means tree leaves; ``None``: ``min(2000, tokens)``.
        num_leaves_to_search: Leaves searched per query token; ``None``: 200.
        dimensions_per_block: Dimensions per quantisation block (``None``: 2).
        anisotropic_quantization_threshold: ScaNN's anisotropic threshold (``None``: 0.2).
        training_sample_size: Tokens the tree is trained on; ``None``: ``min(250_000, tokens)``.
        verbose: ``False``/``"none"``: quiet; ``True``/``"init"``/``"all"``: log builds and show progress.
        use_autopilot: Let ScaNN choose its own configuration (overrides the tree settings).
        store_embeddings: Keep the token embeddings (``embeddings.npy``): needed for
            ``get_documents_embeddings``, :meth:`search` / ``retrieve.ColBERT`` and later additions.
        index_folder: Folder that holds indexes; ``None``: a temporary folder removed with the index.
        override: ``False`` opens an existing index; ``True`` starts empty and replaces it at the first write.
        verbose_level: PyLate's older spelling of ``verbose``; overrides it when given.
        k_token: Nearest tokens fetched per query token when :meth:`search` gathers candidate documents.
        subset_exact_limit: A ``subset`` of at most this many documents is scored exactly in :meth:`search`.
    """

    kind = "scann"
    compacts_on_remove = False

    def __init__(
        self,
        index_name: str | None = "ScaNN_index",
        embedding_size: int | None = None,
        num_neighbors: int | None = 10,
        num_leaves: int | None = None,
        num_leaves_to_search: int | None = None,
        dimensions_per_block: int | None = 2,
        anisotropic_quantization_threshold: float | None = 0.2,
        training_sample_size: int | None = None,
        verbose: bool | str = "none",
        use_autopilot: bool = False,
        store_embeddings: bool = True,
        index_folder: str | os.PathLike[str] | None = None,
        override: bool = False,
        verbose_level: str | None = None,
        *,
        k_token: int = 32,
        subset_exact_limit: int = 512,
    ) -> None:
        self.verbose_level = _verbosity(verbose, verbose_level)
        self.verbose = self.verbose_level in ("init", "all")
        counts = {
            "num_neighbors": num_neighbors,
            "num_leaves": num_leaves,
            "num_leaves_to_search": num_leaves_to_search,
            "dimensions_per_block": dimensions_per_block,
            "training_sample_size": training_sample_size,
            "k_token": k_token,
        }
        check_counts(counts, optional=True)
        threshold = anisotropic_quantization_threshold
        if threshold is not None and (isinstance(threshold, bool) or not isinstance(threshold, int | float)):
            raise ValueError(
                f"anisotropic_quantization_threshold must be a number or None, got {threshold!r}"
            )
        check_counts({"subset_exact_limit": subset_exact_limit}, minimum=0)
        self.num_neighbors = num_neighbors
        self.num_leaves = num_leaves
        self.num_leaves_to_search = num_leaves_to_search
        self.dimensions_per_block = 2 if dimensions_per_block is None else dimensions_per_block
        self.anisotropic_quantization_threshold = 0.2 if threshold is None else float(threshold)
        self.training_sample_size = training_sample_size
        self.use_autopilot = bool(use_autopilot)
        self.store_embeddings = bool(store_embeddings)
        self.k_token = k_token
        self.subset_exact_limit = subset_exact_limit
        self.searcher: Any = None
        self.build_settings: dict[str, Any] = {}
        self._embeddings: np.ndarray | None = None
        self._dtype: np.dtype | None = None
        self._starts = np.zeros(0, dtype=np.int64)
        self._alive = np.zeros(0, dtype=bool)
        self._fresh: tuple[Path, Any] | None = None
        self._pending_dtype: np.dtype | None = None
        self.persistent = index_folder is not None and index_name is not None
        folder = index_folder if self.persistent else self._private_folder()
        super().__init__(
            folder,  # type: ignore[arg-type]
            index_name or "ScaNN_index",
            override,
            embedding_size,
            settings={"distance": "dot_product", **self._searcher_options()},
        )
        if not self.persistent:
            self.index_folder = None  # type: ignore[assignment]  # PyLate's attribute: not persisted

    def _private_folder(self) -> str:
        """PyLate keeps an index without folder or name in memory only: a private folder, removed with it."""
        folder = tempfile.mkdtemp(prefix="pipeline-scann-")
        weakref.finalize(self, shutil.rmtree, folder, True)
        return folder

    def _searcher_options(self) -> dict[str, Any]:
        """The searcher's build options as given (``None``: chosen from the token count at each build)."""
        return {
            "num_neighbors": self.num_neighbors,
            "num_leaves": self.num_leaves,
            "num_leaves_to_search": self.num_leaves_to_search,
            "dimensions_per_block": self.dimensions_per_block,
            "anisotropic_quantization_threshold": self.anisotropic_quantization_threshold,
            "training_sample_size": self.training_sample_size,
            "use_autopilot": self.use_autopilot,
        }

    # ------------------------------------------------------------------ PyLate's attributes
    @property
    def flattened_embeddings(self) -> np.ndarray | None:
        """Every token embedding in index order, in the dtype they were added in (``None`` if not kept)."""
        return self._embeddings

    @property
    def doc_id_to_embedding_range(self) -> dict[DocumentId, tuple[int, int]]:
        """``{id: (first token, token count)}`` of the indexed documents."""
        return {
            v: (int(self._starts[s]), self._slot_tokens[s])
            for s, v in enumerate(self._slot_ids)
            if v is not None
        }

    @property
    def _documents_added(self) -> bool:
        return self.num_documents > 0

    def save(self) -> None:
        """Every write is committed to disk already; this only refuses an empty index (as PyLate does)."""
        if self.searcher is None:
            raise ValueError("Cannot save index: no searcher has been built. Add documents first.")

    # ------------------------------------------------------------------ writing
    def add_documents(  # type: ignore[override]
        self, documents_ids: Any, documents_embeddings: Any, batch_size: int = 128
    ) -> Self:
        """Add documents and rebuild the searcher over every token; returns the index.

        ``batch_size`` is accepted for PyLate code and unused (as in PyLate). float16 embeddings are kept
        as float16. With ``store_embeddings=False`` the index can be built once only.
        """
        dtype = _storage_dtype(documents_embeddings)
        if self.num_tokens_stored and self._embeddings is None:
            raise ValueError(
                f"{self.path} was built with store_embeddings=False, so its token embeddings are not kept "
                "and the searcher cannot be rebuilt with more documents: rebuild it with override=True"
            )
        if dtype is not None and self._dtype is not None and dtype != self._dtype:
            raise ValueError(
                f"documents_embeddings are {dtype} but the index {self.path} stores {self._dtype}: "
                "all document embeddings must have the same dtype"
            )
        self._pending_dtype = dtype
        return super().add_documents(documents_ids, documents_embeddings)

    @property
    def num_tokens_stored(self) -> int:
        """Tokens in the searcher, tombstoned ones included."""
        return int(sum(self._slot_tokens))

    def _write_added(self, source: Path | None, target: Path, embeddings: list[np.ndarray]) -> None:
        dtype = self._dtype or self._pending_dtype or np.dtype(np.float32)
        total = sum(len(e) for e in embeddings)
        new = np.empty((total, embeddings[0].shape[1]), dtype=np.float32)
        offset = 0
        for item in tqdm(
            embeddings, desc="ScaNN: flattening documents", unit="doc", disable=not self.verbose
        ):
            new[offset : offset + len(item)] = item
            offset += len(item)
        old = self._embeddings
        vectors = new if old is None else np.concatenate([np.asarray(old, dtype=np.float32), new])
        searcher, self.build_settings = build_searcher(
            vectors, **self._searcher_options(), verbose=self.verbose
        )
        write_searcher(searcher, target)
        if self.store_embeddings:
            stored = vectors.astype(dtype, copy=False)
            temp = target / f".{EMBEDDINGS_FILE}.{uuid.uuid4().hex}.tmp"
            with open(temp, "xb") as handle:
                np.save(handle, stored, allow_pickle=False)
            os.replace(temp, target / EMBEDDINGS_FILE)  # never written in place: versions may share it
        state = {"dtype": dtype.name, "store_embeddings": self.store_embeddings, "build": self.build_settings}
        atomic_write_json(target / STATE_FILE, state)
        self._dtype = dtype
        self._fresh = (target, searcher)

    def _write_removed(self, source: Path, target: Path, slots: list[int]) -> None:
        if source == target:  # inside a transaction: tombstones live in documents.json only
            return
        (target / SEARCHER_FOLDER).mkdir()
        for file in (source / SEARCHER_FOLDER).iterdir():
            link_or_copy(file, target / SEARCHER_FOLDER / file.name)
        for name in (EMBEDDINGS_FILE, STATE_FILE):
            if (source / name).is_file():
                link_or_copy(source / name, target / name)
        self._fresh = (target, self.searcher)

    # ------------------------------------------------------------------ loading
    def _open_backend(self, version: Path | None) -> None:
        tokens = np.asarray(self._slot_tokens, dtype=np.int64)
        self._starts = (
            np.concatenate([[0], np.cumsum(tokens)[:-1]]).astype(np.int64) if len(tokens) else tokens
        )
        self._alive = np.array([v is not None for v in self._slot_ids], dtype=bool)
        fresh, self._fresh = self._fresh, None
        if version is None or not self._slot_ids:
            self.searcher, self._embeddings, self._dtype = None, None, None
            return
        state = read_json(version / STATE_FILE)
        if not isinstance(state, dict) or state.get("dtype") not in ("float16", "float32"):
            raise ValueError(f"{version / STATE_FILE}: 'dtype' must be float16 or float32")
        self._dtype = np.dtype(state["dtype"])
        self.store_embeddings = bool(state.get("store_embeddings"))  # what was kept, whatever was asked now
        self.build_settings = dict(state.get("build") or {})
        total = int(tokens.sum())
        self.searcher = fresh[1] if fresh is not None and fresh[0] == version else load_searcher(version)
        self._embeddings = None
        if self.store_embeddings:
            path = version / EMBEDDINGS_FILE
            embeddings = np.load(path, mmap_mode="r", allow_pickle=False)
            if embeddings.shape != (total, self._dim) or embeddings.dtype != self._dtype:
                raise ValueError(
                    f"{path} holds {embeddings.dtype} {embeddings.shape}, "
                    f"expected {self._dtype} ({total}, {self._dim})"
                )
            self._embeddings = embeddings
        if self.searcher.size() != total:
            raise ValueError(
                f"{version / SEARCHER_FOLDER} holds {self.searcher.size()} tokens, expected {total}"
            )

    # ------------------------------------------------------------------ searching
    def _neighbours(self, stacked: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Each row's ``k`` nearest live tokens: owner slots (-1 where fewer were found) and dot products."""
        total = self.num_tokens_stored
        fetch = min(k + (total - self.num_tokens), total)  # room for tombstoned tokens, filtered below
        neighbours, scores = self.searcher.search_batched_parallel(stacked, final_num_neighbors=fetch)
        neighbours, scores = np.asarray(neighbours, dtype=np.int64), np.asarray(scores, dtype=np.float32)
        owners = np.searchsorted(self._starts, neighbours, side="right") - 1
        valid = np.isfinite(scores) & self._alive[owners]  # ScaNN pads a short row with NaN scores
        order = np.argsort(~valid, axis=1, kind="stable")[:, :k]  # valid ones first, in ScaNN's order
        owners = np.where(np.take_along_axis(valid, order, 1), np.take_along_axis(owners, order, 1), -1)
        return owners, np.take_along_axis(scores, order, 1)

    def __call__(self, queries_embeddings: Any, k: int = 10, subset: Any = None) -> dict[str, list[Any]]:  # type: ignore[override]
        """PyLate's ScaNN call: the ``k`` nearest document tokens of every query token.

        Returns ``{"documents_ids": [...], "distances": [...]}``, each indexed ``[query][query token][k]``:
        the id of the document owning each neighbour token and ScaNN's dot product with it (larger is
        closer, as in PyLate). Removed documents never appear; a token has fewer than ``k`` entries only
        when ScaNN found fewer live tokens. ``subset`` is not supported at token level (as in PyLate).
        """
        if subset is not None:
            raise ValueError("ScaNN(...) at token level takes no subset: use index.search(..., subset=...)")
        check_k(k)
        queries = as_float_arrays(queries_embeddings, argument="queries_embeddings", dim=self._dim)
        if self.num_documents == 0 or self.searcher is None:
            raise ValueError(f"Index is empty, add documents before querying ({self.path})")
        owners, scores = self._neighbours(np.concatenate(queries), min(int(k), self.num_tokens))
        documents_ids: list[list[list[DocumentId]]] = []
        distances: list[list[list[float]]] = []
        offset = 0
        for query in queries:
            rows = range(offset, offset + len(query))
            offset += len(query)
            keep = [owners[r] >= 0 for r in rows]
            documents_ids.append(
                [[self._slot_ids[s] for s in owners[r][m]] for r, m in zip(rows, keep, strict=True)]
            )
            distances.append([scores[r][m].tolist() for r, m in zip(rows, keep, strict=True)])
        return {"documents_ids": documents_ids, "distances": distances}

    def get_documents_embeddings(self, documents_ids: list[list[DocumentId]]) -> list[list[np.ndarray]]:
        """PyLate's helper: the stored ``(tokens, dim)`` embeddings of each id, in their dtype and nesting."""
        if not self.store_embeddings:
            raise NotImplementedError(
                "Retrieving document embeddings requires store_embeddings=True (this index keeps none)"
            )
        if self._embeddings is None:
            raise ValueError(f"Index is empty, add documents before retrieving embeddings ({self.path})")
        result: list[list[np.ndarray]] = []
        for group_number, group in enumerate(documents_ids):
            row = []
            for position, value in enumerate(group):
                ok = isinstance(value, str | int | np.integer) and not isinstance(value, bool)
                slot = self._positions.get(id_key(value)) if ok else None
                if slot is None:
                    raise ValueError(
                        f"documents_ids[{group_number}][{position}] = {value!r} "
                        f"not found in index {self.path}"
                    )
                start = int(self._starts[slot])
                row.append(np.array(self._embeddings[start : start + self._slot_tokens[slot]]))
            result.append(row)
        return result

    def _search_slots(
        self, queries: list[np.ndarray], k: int, allowed: list[np.ndarray | None]
    ) -> list[list[tuple[int, float]]]:
        if self._embeddings is None:
            raise NotImplementedError(
                f"{self.path} was built with store_embeddings=False: exact search (index.search, "
                "retrieve.ColBERT) needs the embeddings; retrieve.XTR ranks from the token neighbours alone"
            )
        live = self._alive.nonzero()[0]
        k_token = min(self.k_token, self.num_tokens)
        results: list[list[tuple[int, float]]] = []
        for query, subset in zip(queries, allowed, strict=True):
            if subset is not None and len(subset) <= self.subset_exact_limit:
                slots = subset
            else:
                slots = live
                if k_token < self.num_tokens:  # else every live document is a candidate: exact
                    owners, _ = self._neighbours(query, k_token)
                    slots = np.unique(owners[owners >= 0])
                if subset is not None:
                    slots = np.intersect1d(slots, subset)
            counts = np.asarray(self._slot_tokens)[slots].tolist()
            documents = [
                torch.from_numpy(np.array(self._embeddings[s : s + n], dtype=np.float32))
                for s, n in zip(self._starts[slots].tolist(), counts, strict=True)
            ]
            results.append(self._rank_exactly(query, slots, documents, k))
        return results
