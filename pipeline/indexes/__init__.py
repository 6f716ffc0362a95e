"""Multi-vector indexes for ColBERT embeddings: :class:`PLAID` (fast-plaid), :class:`Voyager` (HNSW) and
:class:`ScaNN` (Google's ScaNN, token level, for ``retrieve.XTR``).

All share one contract (:class:`~pipeline.indexes.base.MultiVectorIndex`): ``add_documents``,
``remove_documents``, ``search(queries_embeddings, k=10, subset=None)``, str or int ids returned as given,
atomic on-disk versions, and the facts ``num_documents``, ``num_tokens``, ``disk_bytes`` and ``stats()``.

Example:
    >>> import numpy as np, tempfile
    >>> from pipeline import indexes
    >>> index = indexes.Voyager(index_folder=tempfile.mkdtemp(), index_name="index", override=True)
    >>> index = index.add_documents(documents_ids=["1"], documents_embeddings=[np.eye(4, dtype="float32")])
    >>> index.search(np.eye(4, dtype="float32")[None], k=1)
    [[{'id': '1', 'score': 4.0}]]
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pipeline.indexes.errors import (
    DuplicateDocumentIdError,
    IndexFormatError,
    UnknownDocumentIdError,
    UnknownIdWarning,
)

if TYPE_CHECKING:
    from pipeline.indexes.base import MultiVectorIndex
    from pipeline.indexes.plaid import PLAID
    from pipeline.indexes.scann import ScaNN
    from pipeline.indexes.voyager import Voyager


def __getattr__(name: str) -> Any:
    """The index classes, imported when first named: they import torch (3 s), which a process that only
    reads an index's version folder (the register stage, through :mod:`pipeline.indexes.storage`) never
    needs."""
    if name == "PLAID":
        from pipeline.indexes.plaid import PLAID

        return PLAID
    if name == "Voyager":
        from pipeline.indexes.voyager import Voyager

        return Voyager
    if name == "ScaNN":
        from pipeline.indexes.scann import ScaNN

        return ScaNN
    if name == "MultiVectorIndex":
        from pipeline.indexes.base import MultiVectorIndex

        return MultiVectorIndex
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


__all__ = [
    "PLAID",
    "DuplicateDocumentIdError",
    "IndexFormatError",
    "MultiVectorIndex",
    "ScaNN",
    "UnknownDocumentIdError",
    "UnknownIdWarning",
    "Voyager",
]
