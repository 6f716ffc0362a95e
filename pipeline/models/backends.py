"""Load a ColBERT model on a chosen inference backend (``torch``, ``onnx`` or ``openvino``), encoding in
a chosen precision (:mod:`pipeline.models.precision`).

sentence-transformers' ``MultiVectorEncoder`` runs its transformer through ONNX Runtime or OpenVINO when
given ``backend=``; those need packages the default install leaves out (``sentence-transformers[onnx]`` or
``[openvino]``). :func:`check_backend` says so before any model is loaded, naming the ``index.backend`` key.

Example:
    >>> check_backend("torch")
    >>> check_backend("tensorflow")
    Traceback (most recent call last):
    ...
    ValueError: index.backend: 'tensorflow' is not one of torch, onnx, openvino
"""

from __future__ import annotations

import importlib.util
from typing import Any

from pipeline.models.precision import check_precision, resolve_precision

BACKENDS = ("torch", "onnx", "openvino")
#: The modules each backend imports, and the extra that installs them.
_NEEDS = {
    "onnx": (("onnxruntime", "optimum.onnxruntime"), "sentence-transformers[onnx]"),
    "openvino": (("openvino", "optimum.intel"), "sentence-transformers[openvino]"),
}


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # a missing parent package
        return False


def check_backend(backend: str, key: str = "index.backend") -> None:
    """Raise a clear error when ``backend`` is unknown or its packages are not installed."""
    if backend not in BACKENDS:
        raise ValueError(f"{key}: {backend!r} is not one of {', '.join(BACKENDS)}")
    if backend in _NEEDS:
        modules, extra = _NEEDS[backend]
        missing = [m for m in modules if not _installed(m)]
        if missing:
            raise ValueError(
                f"{key}: {backend!r} needs {', '.join(missing)}, which is not installed "
                f"(install {extra!r}; with this project's lock it is not installable: see docs/indexes.md)"
            )


def load_model(
    path: str,
    backend: str = "torch",
    device: str | None = None,
    key: str = "index.backend",
    precision: str = "fp32",
) -> Any:
    """A :class:`pipeline.models.ColBERT` from ``path`` on ``backend`` (checked first) that encodes in
    ``precision`` (its ``encode_precision``; ``bf16`` needs the torch backend, ``auto`` is fp32 on others)."""
    from pipeline import models

    check_precision(precision)
    if backend != "torch":  # ONNX Runtime and OpenVINO run their own graphs: autocast does not reach them
        if precision == "bf16":
            raise ValueError(f"{key}: {backend!r} runs its own graph; precision bf16 needs 'torch'")
        precision = "fp32"
    check_backend(backend, key)
    resolved = resolve_precision(precision, device)
    extra = {} if backend == "torch" else {"backend": backend}
    model = models.ColBERT(model_name_or_path=path, device=device, **extra)
    model.encode_precision = resolved
    return model
