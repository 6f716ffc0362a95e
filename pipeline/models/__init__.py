"""ColBERT models, a package as PyLate's ``models`` is.

- :mod:`~pipeline.models.colbert`: the ``ColBERT`` class, PyLate's constructor, attributes and ``encode``;
- :mod:`~pipeline.models.checkpoints`: where a model comes from, and which kind of checkpoint it is;
- :mod:`~pipeline.models.settings`: PyLate's ColBERT settings (prefixes, lengths, expansion, skiplist);
- :mod:`~pipeline.models.encoding`: the ``encode`` loop, and per-text embeddings as numpy arrays;
- :mod:`~pipeline.models.precision`: encoding in float32 or bf16 (``auto`` picks per machine);
- :mod:`~pipeline.models.backends`: loading a model on the ``torch``, ``onnx`` or ``openvino`` backend;
- :mod:`~pipeline.models.token_outputs`: PyLate's ``encode(..., output_value=None)`` per-token outputs.

``ColBERT`` and ``Dense`` are importable from here, as from ``pylate.models``.

Example:
    >>> from pipeline import models
    >>> models.ColBERT().encode(["a query"], is_query=True)[0].shape
    (32, 128)
"""

from __future__ import annotations

from sentence_transformers.base.modules.dense import Dense

from pipeline.models.checkpoints import (
    DEFAULT_MODEL_ID,
    ModelNotFoundError,
    default_model_path,
    is_colbert_checkpoint,
    resolve_model_name,
)
from pipeline.models.colbert import ColBERT
from pipeline.models.encoding import as_numpy

__all__ = [
    "DEFAULT_MODEL_ID",
    "ColBERT",
    "Dense",
    "ModelNotFoundError",
    "as_numpy",
    "default_model_path",
    "is_colbert_checkpoint",
    "resolve_model_name",
]
