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

from pipeline.indexes.base import MultiVectorIndex
from pipeline.indexes.errors import (
    DuplicateDocumentIdError,
    IndexFormatError,
    UnknownDocumentIdError,
    UnknownIdWarning,
)
from pipeline.indexes.plaid import PLAID
from pipeline.indexes.scann import ScaNN
from pipeline.indexes.voyager import Voyager

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
