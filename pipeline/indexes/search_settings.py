"""How a PLAID index searches: the :class:`SearchSettings` the tuner chooses, the search they describe, and
reading them back from ``search.json``. Apart from :mod:`pipeline.indexes.tuning` so that opening and
searching an index never imports the tuner (which writes the file: :func:`~pipeline.indexes.tuning.tune`,
:func:`~pipeline.indexes.tuning.write_settings`).

``search.json`` sits in the index folder beside its version folders: the chosen settings, what was measured,
and the index version they were measured on (a later write to the index makes them stale: they are then
ignored, with a warning).

Example:
    >>> [SearchSettings(mode="exact").needs_store, SearchSettings(rerank=32).needs_store]
    [True, True]
    >>> SearchSettings().needs_store  # plain PLAID reads only its own compressed index
    False
    >>> SearchSettings(n_ivf_probe=0)
    Traceback (most recent call last):
    ValueError: n_ivf_probe must be a positive integer, got 0
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Literal

import numpy as np

from pipeline.indexes.checks import check_counts
from pipeline.indexes.embedding_store import EmbeddingStore, Hits

logger = logging.getLogger(__name__)

#: The tuned settings' file inside an index folder, beside its versions.
SEARCH_SETTINGS_FILE = "search.json"

SETTINGS_FORMAT = 1

#: ``(queries, depth, n_ivf_probe, n_full_scores, allowed) -> top-depth (slot, score) per query``.
CandidateSearch = Callable[
    [list[np.ndarray], int, int, int, list[np.ndarray | None]], list[list[tuple[int, float]]]
]


@dataclasses.dataclass(frozen=True)
class SearchSettings:
    """How to search a PLAID index.

    Attributes:
        mode: ``"plaid"`` (IVF probing, then optional exact re-scoring) or ``"exact"`` (MaxSim over every
            document from the full-precision store; no PLAID at all).
        n_ivf_probe: Centroids probed per query token.
        n_full_scores: Candidates PLAID scores with its decompressed embeddings.
        rerank: PLAID's top ``rerank`` candidates are re-scored with full-precision embeddings (0: none,
            PLAID's own scores are final).
        batch_size: Queries per search call.
    """

    mode: Literal["plaid", "exact"] = "plaid"
    n_ivf_probe: int = 8
    n_full_scores: int = 8192
    rerank: int = 0
    batch_size: int = 64

    def __post_init__(self) -> None:
        if self.mode not in ("plaid", "exact"):
            raise ValueError(f"mode must be 'plaid' or 'exact', got {self.mode!r}")
        check_counts({name: getattr(self, name) for name in ("n_ivf_probe", "n_full_scores", "batch_size")})
        check_counts({"rerank": self.rerank}, minimum=0)

    @property
    def needs_store(self) -> bool:
        """Whether searching with these settings reads the full-precision embeddings."""
        return self.mode == "exact" or self.rerank > 0

    def describe(self) -> str:
        if self.mode == "exact":
            return f"exact MaxSim over every document (batch {self.batch_size})"
        rerank = f", exact re-scoring of the top {self.rerank}" if self.rerank else ""
        return (
            f"PLAID n_ivf_probe={self.n_ivf_probe} n_full_scores={self.n_full_scores}{rerank} "
            f"(batch {self.batch_size})"
        )


def search_slots(
    settings: SearchSettings,
    store: EmbeddingStore | None,
    candidates: CandidateSearch,
    queries: list[np.ndarray],
    k: int,
    allowed: list[np.ndarray | None],
) -> Hits:
    """Top-``k`` ``(slot, score)`` per query under ``settings`` (``candidates`` is the PLAID search)."""
    if settings.needs_store and store is None:
        raise ValueError(f"{settings.describe()} needs the full-precision embedding store")
    if settings.mode == "exact":
        return store.search(queries, k, allowed)  # type: ignore[union-attr]
    depth = max(k, settings.rerank)
    hits = candidates(queries, depth, settings.n_ivf_probe, max(settings.n_full_scores, depth), allowed)
    if not settings.rerank:
        return [row[:k] for row in hits]
    return store.rescore(queries, [[slot for slot, _ in row] for row in hits], k)  # type: ignore[union-attr]


def read_settings(index_path: str | os.PathLike[str], index_version: str | None) -> SearchSettings | None:
    """The stored settings of ``index_path`` if they were measured on ``index_version``; else ``None``.

    A missing file is ``None`` silently; stale or unreadable settings are ``None`` with a warning.
    """
    path = Path(index_path) / SEARCH_SETTINGS_FILE
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if data.get("format") != SETTINGS_FORMAT:
            raise ValueError(f"unsupported format {data.get('format')!r}")
        settings = SearchSettings(**data["settings"])
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as error:
        logger.warning("%s: unreadable search settings, searching with defaults (%s)", path, error)
        return None
    if data.get("index_version") != index_version:
        logger.warning(
            "%s: tuned on index version %s, but %s is live: searching with defaults (rerun the index stage)",
            path,
            data.get("index_version"),
            index_version,
        )
        return None
    return settings
