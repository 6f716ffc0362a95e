"""The documents' full-precision token embeddings beside an index, which exact search and re-scoring read.

PLAID keeps 4-bit residuals; reaching a recall target past their plateau needs the original vectors. The index
stage writes them here while it encodes the corpus (float16, in the index's slot order, one chunk in memory at
a time), and :mod:`pipeline.indexes.tuning` decides whether searches read them. On a GPU (``device="cuda"``)
the store scores there: the GPU pass measured exact MaxSim on the GPU at 0.8x to 1.4x the QPS of tuned PLAID
on BEIR corpora, so the tuner must time it where searches will run.

Example:
    >>> import numpy as np, tempfile
    >>> from pathlib import Path
    >>> rng = np.random.default_rng(0)
    >>> docs = [rng.standard_normal((6, 8)).astype("float32") for _ in range(5)]
    >>> folder = Path(tempfile.mkdtemp()) / "embeddings"
    >>> with EmbeddingStoreWriter(folder) as writer:
    ...     writer.add(docs)
    ...     store = writer.commit(index_version="v000001")
    >>> [slot for slot, _ in store.exact_topk([docs[3]], k=1)[0]]
    [3]
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pipeline.project.io import atomic_write_json

logger = logging.getLogger(__name__)

#: The store's folder inside an index folder, beside its versions.
STORE_FOLDER = "embeddings"
STORE_FORMAT = 1
#: Float32 scores held at once while scoring (bounds the memory of exact search): 16M floats, 64 MiB.
SCORE_BUDGET = 1 << 24
#: A store whose float32 copy fits here is converted once and kept in memory (otherwise per chunk).
CACHE_BYTES = 1 << 30

Hits = list[list[tuple[int, float]]]


class EmbeddingStore:
    """Read-only float16 token embeddings of an index's documents, in slot order, memory-mapped.

    Files: ``tokens.f16`` (all token vectors, ``(tokens, dim)`` row-major), ``offsets.npy`` (``documents + 1``
    int64 row offsets) and ``meta.json`` (``dim``, counts, and the index version they belong to).
    """

    def __init__(
        self,
        folder: str | os.PathLike[str],
        cache_bytes: int = CACHE_BYTES,
        device: str | torch.device | None = None,
    ) -> None:
        self.folder = Path(folder)
        #: Where scores are computed: the CPU (numpy's segment max) or an accelerator (torch's).
        self.device = torch.device(device or "cpu")
        meta_path = self.folder / "meta.json"
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise FileNotFoundError(f"{meta_path}: missing (no embedding store here)") from None
        except json.JSONDecodeError as error:
            raise ValueError(f"{meta_path}: corrupt ({error})") from None
        if meta.get("format") != STORE_FORMAT:
            raise ValueError(f"{meta_path}: unsupported format {meta.get('format')!r}")
        self.dim = int(meta["dim"])
        self.index_version = meta.get("index_version")
        self.offsets = np.load(self.folder / "offsets.npy")
        if len(self.offsets) != int(meta["documents"]) + 1 or int(self.offsets[-1]) != int(meta["tokens"]):
            raise ValueError(f"{self.folder}: offsets.npy does not match meta.json's counts")
        expected = int(meta["tokens"]) * self.dim * 2
        actual = (self.folder / "tokens.f16").stat().st_size
        if actual != expected:
            raise ValueError(f"{self.folder / 'tokens.f16'}: {actual} bytes, expected {expected}")
        self.tokens: np.ndarray = (
            np.memmap(
                self.folder / "tokens.f16", dtype=np.float16, mode="r", shape=(int(meta["tokens"]), self.dim)
            )
            if expected
            else np.zeros((0, self.dim), dtype=np.float16)
        )
        self._cache_bytes = cache_bytes
        self._float32: torch.Tensor | None = None

    @property
    def num_documents(self) -> int:
        return len(self.offsets) - 1

    @property
    def num_tokens(self) -> int:
        return int(self.offsets[-1])

    def _float_tokens(self) -> torch.Tensor | None:
        """All token rows as float32 on the store's device, converted once, when they fit ``cache_bytes``
        (else ``None``)."""
        if self._float32 is None and self.num_tokens * self.dim * 4 <= self._cache_bytes:
            self._float32 = torch.from_numpy(np.asarray(self.tokens, dtype=np.float32)).to(self.device)
        return self._float32

    def _rows(self, start: int, stop: int) -> torch.Tensor:
        """Token rows ``start:stop`` as a float32 tensor on the store's device."""
        cached = self._float_tokens()
        if cached is not None:
            return cached[start:stop]
        return torch.from_numpy(np.asarray(self.tokens[start:stop], dtype=np.float32)).to(self.device)

    def _gather(self, slots: np.ndarray) -> tuple[torch.Tensor, np.ndarray]:
        """The token rows of ``slots`` (concatenated) and each document's first row within them."""
        starts, stops = self.offsets[slots], self.offsets[slots + 1]
        lengths = stops - starts
        firsts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
        rows = np.repeat(starts - firsts, lengths) + np.arange(int(lengths.sum()))
        cached = self._float_tokens()
        if cached is not None:
            return cached[torch.from_numpy(rows).to(self.device)], firsts
        tokens = torch.from_numpy(np.asarray(self.tokens[rows], dtype=np.float32)).to(self.device)
        return tokens, firsts

    def _maxsim(self, queries: torch.Tensor, tokens: torch.Tensor, firsts: np.ndarray) -> np.ndarray:
        """MaxSim of each query (``(B, Lq, d)``, zero-padded) with each segment of ``tokens``: ``(B, m)``."""
        batch, length, dim = queries.shape
        similarities = queries.to(self.device).reshape(-1, dim) @ tokens.T
        if _numpy_segments(self.device):
            best = np.maximum.reduceat(similarities.numpy(), firsts, axis=1)
            return best.reshape(batch, length, -1).sum(axis=1)
        best = segment_max(similarities, firsts)
        return best.reshape(batch, length, -1).sum(dim=1).cpu().numpy()

    def exact_topk(self, queries: Sequence[np.ndarray], k: int, batch_size: int = 32) -> Hits:
        """Top-``k`` ``(slot, score)`` of each query by exact MaxSim over every document, best first."""
        results: Hits = []
        for start in range(0, len(queries), batch_size):
            padded = _pad(queries[start : start + batch_size], self.dim)
            rows_per_chunk = max(1, SCORE_BUDGET // (padded.shape[0] * padded.shape[1]))
            best_scores = np.full((len(padded), 0), -np.inf, dtype=np.float32)
            best_slots = np.zeros((len(padded), 0), dtype=np.int64)
            first = 0
            while first < self.num_documents:
                # As many documents as fit the score budget (at least one).
                last = (
                    int(np.searchsorted(self.offsets, self.offsets[first] + rows_per_chunk, side="right")) - 1
                )
                last = min(max(last, first + 1), self.num_documents)
                begin, end = int(self.offsets[first]), int(self.offsets[last])
                scores = self._maxsim(padded, self._rows(begin, end), self.offsets[first:last] - begin)
                merged = np.concatenate([best_scores, scores], axis=1)
                slots = np.concatenate(
                    [best_slots, np.broadcast_to(np.arange(first, last), scores.shape)], axis=1
                )
                keep = min(k, merged.shape[1])
                top = np.argpartition(-merged, keep - 1, axis=1)[:, :keep]
                best_scores = np.take_along_axis(merged, top, axis=1)
                best_slots = np.take_along_axis(slots, top, axis=1)
                first = last
            order = np.argsort(-best_scores, axis=1, kind="stable")
            for scores_row, slots_row in zip(
                np.take_along_axis(best_scores, order, axis=1),
                np.take_along_axis(best_slots, order, axis=1),
                strict=True,
            ):
                results.append([(int(s), float(v)) for s, v in zip(slots_row, scores_row, strict=True)])
        return results

    def rescore(self, queries: Sequence[np.ndarray], candidates: Sequence[Sequence[int]], k: int) -> Hits:
        """Re-rank each query's candidate slots by exact MaxSim; top ``k`` ``(slot, score)``, best first."""
        results: Hits = []
        for query, slots in zip(queries, candidates, strict=True):
            slots = np.asarray(list(dict.fromkeys(int(s) for s in slots)), dtype=np.int64)
            if len(slots) == 0:
                results.append([])
                continue
            padded = _pad([query], self.dim)
            scores = np.empty(len(slots), dtype=np.float32)
            budget = max(1, SCORE_BUDGET // padded.shape[1])
            lengths = self.offsets[slots + 1] - self.offsets[slots]
            start = 0
            while start < len(slots):  # chunks of candidates within the score budget
                stop = start + max(1, int(np.searchsorted(np.cumsum(lengths[start:]), budget, side="right")))
                tokens, firsts = self._gather(slots[start:stop])
                scores[start:stop] = self._maxsim(padded, tokens, firsts)[0]
                start = stop
            order = np.argsort(-scores, kind="stable")[:k]
            results.append([(int(slots[i]), float(scores[i])) for i in order])
        return results

    def search(self, queries: Sequence[np.ndarray], k: int, allowed: Sequence[np.ndarray | None]) -> Hits:
        """Exact search of every query, within its ``allowed`` slots when given."""
        results: Hits = [[] for _ in queries]
        free = [i for i, a in enumerate(allowed) if a is None]
        for position, hits in zip(free, self.exact_topk([queries[i] for i in free], k), strict=True):
            results[position] = hits
        for position, slots in enumerate(allowed):
            if slots is not None:
                results[position] = self.rescore([queries[position]], [slots.tolist()], k)[0]
        return results


def _numpy_segments(device: torch.device) -> bool:
    """Whether segment maxima are numpy's (on the CPU, where it is the faster) rather than torch's."""
    return device.type == "cpu"


def segment_max(similarities: torch.Tensor, firsts: np.ndarray) -> torch.Tensor:
    """Column-segment maxima where the device is: ``(rows, tokens)`` -> ``(rows, segments)``, segment ``j``
    being columns ``firsts[j]`` up to the next first (what ``np.maximum.reduceat(..., axis=1)`` gives).

    Example:
        >>> import numpy as np, torch
        >>> segment_max(torch.tensor([[1.0, 3.0, 2.0, 0.5]]), np.array([0, 1])).tolist()
        [[1.0, 3.0]]
    """
    device = similarities.device
    lengths = torch.from_numpy(np.diff(np.append(firsts, similarities.shape[1]))).to(device)
    owner = torch.repeat_interleave(torch.arange(len(firsts), device=device), lengths)
    shape = (similarities.shape[0], len(firsts))
    best = torch.full(shape, -torch.inf, device=device, dtype=similarities.dtype)
    return best.scatter_reduce_(1, owner.expand_as(similarities), similarities, "amax")


def _pad(queries: Sequence[np.ndarray], dim: int) -> torch.Tensor:
    """Queries as one zero-padded ``(B, max tokens, dim)`` float32 tensor; a zero token adds 0 to MaxSim."""
    length = max(len(q) for q in queries)
    padded = np.zeros((len(queries), length, dim), dtype=np.float32)
    for row, query in enumerate(queries):
        padded[row, : len(query)] = query
    return torch.from_numpy(padded)


class EmbeddingStoreWriter:
    """Write an :class:`EmbeddingStore` chunk by chunk (memory stays one chunk), then swap it into place.

    Use as a context manager: leaving the block without :meth:`commit` (or on an error) removes the
    temporary folder and leaves any previous store where it was.

    Args:
        folder: Where the store goes (``<index>/embeddings``).
        scratch: Where the temporary folder is written meanwhile (default: beside ``folder``; the index stage
            puts it outside the index, whose first commit sweeps everything that is not a version).
    """

    def __init__(self, folder: str | os.PathLike[str], scratch: str | os.PathLike[str] | None = None) -> None:
        self.folder = Path(folder)
        parent = Path(scratch) if scratch is not None else self.folder.parent
        parent.mkdir(parents=True, exist_ok=True)
        self._temp = parent / f".{self.folder.name}.tmp-{uuid.uuid4().hex[:8]}"
        self._temp.mkdir()
        self._handle = open(self._temp / "tokens.f16", "wb")  # noqa: SIM115 - closed in commit/discard
        self._lengths: list[int] = []
        self.dim: int | None = None

    def __enter__(self) -> EmbeddingStoreWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.discard()

    def add(self, embeddings: Sequence[Any]) -> None:
        """Append documents (one ``(tokens, dim)`` array or tensor each), in index slot order."""
        from pipeline.scores.inputs import check_token_matrix  # lazily, as in checks.as_float_arrays

        for position, item in enumerate(embeddings):
            if isinstance(item, torch.Tensor):
                item = item.detach().cpu().numpy()
            array = np.asarray(item)
            self.dim = check_token_matrix(array.shape, argument="embeddings", position=position, dim=self.dim)
            self._handle.write(np.ascontiguousarray(array, dtype=np.float16).tobytes())
            self._lengths.append(int(array.shape[0]))

    def add_rows(self, rows: np.ndarray, lengths: Sequence[int]) -> None:
        """Append documents given as their token rows back to back (``lengths`` rows each), e.g. a run of
        slots read from another store: one write instead of one per document."""
        lengths = [int(n) for n in lengths]
        if rows.ndim != 2 or sum(lengths) != rows.shape[0] or any(n < 1 for n in lengths):
            raise ValueError(f"rows {rows.shape} do not split into documents of {len(lengths)} lengths")
        if self.dim is None:
            self.dim = int(rows.shape[1])
        elif rows.shape[1] != self.dim:
            raise ValueError(f"rows have dimension {rows.shape[1]}, expected {self.dim}")
        self._handle.write(np.ascontiguousarray(rows, dtype=np.float16).tobytes())
        self._lengths.extend(lengths)

    def commit(
        self,
        index_version: str | None,
        device: str | torch.device | None = None,
        folder: str | os.PathLike[str] | None = None,
    ) -> EmbeddingStore:
        """Finish the files, replace ``folder`` with them, and open the result (scoring on ``device``).

        ``folder`` (default: the one given when the writer was made) lets the index stage put the store into
        an index version that did not exist yet when the writer started: the transaction's working version.
        """
        if folder is not None:
            self.folder = Path(folder)
        if self._handle.closed:
            raise RuntimeError(f"{self.folder}: this writer was already committed or discarded")
        if self.dim is None:
            raise ValueError(f"{self.folder}: no documents were added to the store")
        self._handle.flush()
        os.fsync(self._handle.fileno())
        self._handle.close()
        offsets = np.concatenate([[0], np.cumsum(self._lengths)]).astype(np.int64)
        np.save(self._temp / "offsets.npy", offsets)
        atomic_write_json(
            self._temp / "meta.json",
            {
                "format": STORE_FORMAT,
                "dim": self.dim,
                "documents": len(self._lengths),
                "tokens": int(offsets[-1]),
                "dtype": "float16",
                "index_version": index_version,
            },
        )
        old = self._temp.with_name(f".{self.folder.name}.old-{uuid.uuid4().hex[:8]}")
        self.folder.parent.mkdir(parents=True, exist_ok=True)
        if self.folder.exists():
            os.replace(self.folder, old)
        os.replace(self._temp, self.folder)
        shutil.rmtree(old, ignore_errors=True)
        return EmbeddingStore(self.folder, device=device)

    def discard(self) -> None:
        if not self._handle.closed:
            self._handle.close()
        shutil.rmtree(self._temp, ignore_errors=True)


def open_store(
    index_path: str | os.PathLike[str],
    index_version: str | None,
    device: str | torch.device | None = None,
) -> EmbeddingStore | None:
    """The index's embedding store (scoring on ``device``) if it exists and belongs to ``index_version``;
    else ``None``.

    The index stage writes the store inside the version folder it belongs to (published with it in one
    commit); indexes written before that keep it beside the versions, which is read when the version has none.
    """
    folder = Path(index_path) / STORE_FOLDER
    if index_version is not None and (Path(index_path) / index_version / STORE_FOLDER).is_dir():
        folder = Path(index_path) / index_version / STORE_FOLDER
    if not folder.is_dir():
        return None
    try:
        store = EmbeddingStore(folder, device=device)
    except (OSError, ValueError, KeyError) as error:
        logger.warning("%s: unreadable embedding store (%s)", folder, error)
        return None
    if store.index_version != index_version:
        logger.warning("%s: written for index version %s, not %s", folder, store.index_version, index_version)
        return None
    return store
