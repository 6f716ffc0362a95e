"""Updating an index in place when only its corpus changed: what a version was built from, how a new corpus
differs from it, whether to update or rebuild, and the update itself.

The index stage writes a :class:`CorpusManifest` into every version it builds (``corpus.json``: the document
ids in slot order, the sha256 of each text, and what encoded them), inside the version folder so that it is
published with the version in one commit. The next build compares the new corpus with it
(:func:`diff_corpus`): documents added, removed, or whose text changed. :func:`plan_update` decides between
an in-place update and a rebuild; :func:`apply_update` removes the removed and changed documents from the
index and carries the surviving documents' full-precision embeddings over to the new version's store, after
which the caller encodes and adds only the added and changed ones.

Example:
    >>> before = CorpusManifest(ids=("a", "b", "c"), digests=tuple(map(text_digest, "xyz")), encoder={})
    >>> change = diff_corpus(before, ["a", "c", "d"], [text_digest("x"), text_digest("Z"), text_digest("w")])
    >>> change.added, change.removed, change.changed, round(change.churn, 3)
    (['d'], ['b'], ['c'], 1.0)
    >>> plan = plan_update(
    ...     "auto", 0.2, before, settings={}, previous_settings={}, encoder={}, change=change
    ... )
    >>> plan.mode, plan.reason
    ('rebuild', 'churn 1.000 (1 added, 1 removed, 1 changed of 3) is beyond index.update_max_churn 0.200')
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from pipeline.indexes.base import MultiVectorIndex
from pipeline.indexes.embedding_store import EmbeddingStore, EmbeddingStoreWriter
from pipeline.indexes.errors import IndexFormatError
from pipeline.indexes.storage import CORPUS_FILE
from pipeline.project.io import atomic_write_json

MANIFEST_FORMAT = 1
#: Documents whose stored embeddings are copied to the new store at a time (bounds memory).
COPY_CHUNK = 1000


def text_digest(text: str) -> str:
    """The sha256 of a document's text (UTF-8), what tells a changed document from an unchanged one.

    Example:
        >>> text_digest("koalas eat leaves")[:12]
        '99743ab9d506'
    """
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclasses.dataclass(frozen=True)
class CorpusManifest:
    """What an index version was built from: ids in slot order, their texts' sha256, and the encoder
    (model md5, backend, precision) whose embeddings it holds."""

    ids: tuple[str, ...]
    digests: tuple[str, ...]
    encoder: Mapping[str, Any]

    def __post_init__(self) -> None:
        if len(self.ids) != len(self.digests):
            raise ValueError(f"{len(self.ids)} ids but {len(self.digests)} digests")

    def write(self, version: Path) -> Path:
        """``<version>/corpus.json``, atomically (inside a working version it is published with it)."""
        path = version / CORPUS_FILE
        atomic_write_json(
            path,
            {
                "format": MANIFEST_FORMAT,
                "encoder": dict(self.encoder),
                "ids": list(self.ids),
                "sha256": list(self.digests),
            },
        )
        return path

    @classmethod
    def read(cls, version: Path) -> CorpusManifest | None:
        """The manifest of a version folder; ``None`` when it has none (built before manifests, by hand)."""
        path = version / CORPUS_FILE
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise IndexFormatError(f"{path}: corrupt ({error})") from None
        if not isinstance(data, dict) or data.get("format") != MANIFEST_FORMAT:
            raise IndexFormatError(f"{path}: not a corpus manifest of format {MANIFEST_FORMAT}")
        ids, digests = data.get("ids"), data.get("sha256")
        if not isinstance(ids, list) or not isinstance(digests, list) or len(ids) != len(digests):
            raise IndexFormatError(f"{path}: 'ids' and 'sha256' must be lists of one length")
        return cls(ids=tuple(ids), digests=tuple(digests), encoder=dict(data.get("encoder") or {}))


@dataclasses.dataclass(frozen=True)
class CorpusDiff:
    """How a new corpus differs from the one a version was built from (ids; added and changed in the new
    corpus's order, removed in slot order)."""

    added: list[str]
    removed: list[str]
    changed: list[str]
    previous: int  #: documents in the version the corpus is compared with

    @property
    def churn(self) -> float:
        """Documents touched (added, removed or changed) per document of the previous corpus."""
        return (len(self.added) + len(self.removed) + len(self.changed)) / max(self.previous, 1)

    @property
    def unchanged(self) -> bool:
        return not (self.added or self.removed or self.changed)

    def counts(self) -> str:
        return (
            f"{len(self.added)} added, {len(self.removed)} removed, {len(self.changed)} changed "
            f"of {self.previous}"
        )


def diff_corpus(previous: CorpusManifest, ids: Sequence[str], digests: Sequence[str]) -> CorpusDiff:
    """Compare the new corpus (``ids`` and their texts' ``digests``) with ``previous``: ids, text hashes."""
    before = dict(zip(previous.ids, previous.digests, strict=True))
    now = dict(zip(ids, digests, strict=True))
    return CorpusDiff(
        added=[i for i in ids if i not in before],
        removed=[i for i in previous.ids if i not in now],
        changed=[i for i in ids if i in before and before[i] != now[i]],
        previous=len(previous.ids),
    )


@dataclasses.dataclass(frozen=True)
class UpdatePlan:
    """``incremental`` (apply ``change`` to the previous version) or ``rebuild``, and why."""

    mode: Literal["incremental", "rebuild"]
    reason: str
    change: CorpusDiff | None = None

    def record(self, documents: int) -> dict[str, Any]:
        """``metrics/index.json``'s ``update``: the mode, the counts and the reason (a rebuild of a corpus
        with no previous version counts every document as added)."""
        change = self.change
        return {
            "mode": self.mode,
            "added": len(change.added) if change else documents,
            "removed": len(change.removed) if change else 0,
            "changed": len(change.changed) if change else 0,
            "churn": round(change.churn, 4) if change else None,
            "reason": self.reason,
        }


def plan_update(
    policy: str,
    max_churn: float,
    previous: CorpusManifest | None,
    *,
    settings: Mapping[str, Any],
    previous_settings: Mapping[str, Any] | None,
    encoder: Mapping[str, Any],
    change: CorpusDiff | None,
    missing: str = "no previous index",
) -> UpdatePlan:
    """Update in place only when the previous version was built by the same encoder with the same index
    settings and the corpus changed by at most ``max_churn``; otherwise rebuild, saying why.

    ``missing`` says why there is no ``previous`` manifest, when there is none.
    """
    if policy == "rebuild":
        return UpdatePlan("rebuild", "index.update is 'rebuild'", change)
    if previous is None or change is None:
        return UpdatePlan("rebuild", missing, None)
    if dict(previous.encoder) != dict(encoder):
        return UpdatePlan("rebuild", f"the encoder changed ({_changes(previous.encoder, encoder)})", change)
    if previous_settings is not None and dict(previous_settings) != dict(settings):
        what = _changes(previous_settings, settings)
        return UpdatePlan("rebuild", f"the index settings changed ({what})", change)
    if change.churn > max_churn:
        return UpdatePlan(
            "rebuild",
            f"churn {change.churn:.3f} ({change.counts()}) is beyond index.update_max_churn {max_churn:.3f}",
            change,
        )
    if change.unchanged:
        return UpdatePlan("incremental", "the corpus is unchanged: the index version stays", change)
    return UpdatePlan("incremental", f"only the corpus changed ({change.counts()})", change)


def _changes(before: Mapping[str, Any], after: Mapping[str, Any]) -> str:
    """``key 'old' -> 'new'`` for each key whose value differs.

    Example:
        >>> _changes({"nbits": 4, "seed": 1}, {"nbits": 2, "seed": 1})
        'nbits 4 -> 2'
    """
    keys = sorted(k for k in {*before, *after} if before.get(k) != after.get(k))
    return ", ".join(f"{k} {before.get(k)!r} -> {after.get(k)!r}" for k in keys)


def apply_update(
    index: MultiVectorIndex, change: CorpusDiff, store: EmbeddingStore, writer: EmbeddingStoreWriter
) -> list[str]:
    """Inside the caller's ``index.transaction()``: remove the removed and changed documents, and copy the
    survivors' embeddings from the previous version's ``store`` to ``writer`` in their new slot order.

    Returns the ids to encode and add next (added, then changed, in corpus order); the caller adds them to
    the index and to ``writer`` in that order, so that the store's slots stay the index's.
    """
    slots = index.documents_ids  # slot order: survivors keep theirs, new documents go after them
    if store.num_documents != len(slots):
        raise IndexFormatError(
            f"{store.folder}: holds {store.num_documents} documents, the index {len(slots)}: it is stale"
        )
    gone = set(change.removed) | set(change.changed)
    if gone:
        index.remove_documents([i for i in slots if i in gone])
    keep = [slot for slot, doc_id in enumerate(slots) if doc_id not in gone]
    for start in range(0, len(keep), COPY_CHUNK):
        chunk = keep[start : start + COPY_CHUNK]
        writer.add([store.tokens[store.offsets[s] : store.offsets[s + 1]] for s in chunk])
    return [*change.added, *change.changed]
