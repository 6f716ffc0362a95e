"""Encoding precision: ``fp32``, or ``bf16`` through ``torch.autocast``; ``auto`` picks per machine.

``bf16`` runs a model's backbone under ``torch.autocast`` in bfloat16 (weights stay float32; matrix products
in bfloat16, what is sensitive to it, e.g. softmax and layer norm, in float32 as autocast decides; the
projection, normalisation and pooling after it in float32), and :class:`pipeline.models.ColBERT` returns
float32 embeddings either way. ``auto`` picks ``bf16`` on a CPU
with native bfloat16 instructions (AVX512-BF16 or AMX, where oneDNN runs the encoder 1.6x to 2.5x as fast
as in float32: ``bench/records/encode_precision_cpu.json``, ``encode_bench.json``) and ``fp32`` elsewhere
(on a GPU half precision measured no faster: ``encode_precision_cuda.json``). In bf16 a text padded to a
longer one in its batch comes out a little different from the text alone (oneDNN blocks its products by
shape: up to 0.003 in a coordinate of a unit vector, bfloat16 rounding; 0.13 for the dynamic int8 that was
rejected for it; ``tests/library/test_precision.py``); in fp32 not at all. ``auto`` is also
:class:`pipeline.models.ColBERT`'s default ``encode_precision``: library users get the index stage's rule,
and ``encode_precision="fp32"`` is PyLate's float32 exactly.

Example:
    >>> resolve_precision("fp32", "cpu"), resolve_precision("auto", "cuda")
    ('fp32', 'fp32')
    >>> resolve_precision("fp16", "cpu")
    Traceback (most recent call last):
    ...
    ValueError: index.precision: 'fp16' is not one of auto, fp32, bf16
"""

from __future__ import annotations

import contextlib
import functools
import threading
from collections.abc import Callable, Iterator
from typing import Any

PRECISIONS = ("auto", "fp32", "bf16")


@functools.cache
def cpu_has_native_bf16() -> bool:
    """Whether this CPU runs bfloat16 matrix products natively (oneDNN's check: AVX512-BF16 or AMX).

    Asked once per process: :class:`pipeline.models.ColBERT` resolves ``auto`` on every ``encode`` call.
    """
    import torch

    checker = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None)
    return bool(torch.backends.mkldnn.is_available() and checker is not None and checker())


def check_precision(precision: str, key: str = "index.precision") -> None:
    """Raise a clear error, naming ``key``, when ``precision`` is not one of :data:`PRECISIONS`."""
    if precision not in PRECISIONS:
        raise ValueError(f"{key}: {precision!r} is not one of {', '.join(PRECISIONS)}")


def resolve_precision(precision: str, device: str | None, key: str = "index.precision") -> str:
    """``fp32`` or ``bf16``: what ``precision`` means on ``device`` (``auto``: bf16 on a bf16-native CPU)."""
    check_precision(precision, key)
    if precision != "auto":
        return precision
    on_cpu = device is None or str(device).startswith("cpu")
    if on_cpu and device is None:
        import torch

        on_cpu = not torch.cuda.is_available()
    return "bf16" if on_cpu and cpu_has_native_bf16() else "fp32"


@contextlib.contextmanager
def encoding_precision(precision: str, device: str | None = None) -> Iterator[None]:
    """Run the encode calls inside in ``precision`` (resolved, see :func:`resolve_precision`).

    Autocast is per thread: the ``encode`` calls must run on the thread that entered this block (as
    sentence-transformers' ``encode`` does).
    """
    resolved = resolve_precision(precision, device)
    if resolved == "fp32":
        yield
        return
    import torch

    device_type = "cuda" if device is not None and str(device).startswith("cuda") else "cpu"
    if device is None and torch.cuda.is_available():
        device_type = "cuda"
    with torch.autocast(device_type=device_type, dtype=torch.bfloat16):
        yield


def in_encode_precision(encode: Callable[..., Any]) -> Callable[..., Any]:
    """Run a model's ``encode`` under its ``encode_precision``, resolved on the model's device at each call
    (``auto``: bf16 on a bf16-native CPU, else float32; ``fp32``: as it is).

    In bf16 only the backbone (the first module, where nearly all the arithmetic is) runs under autocast; its
    outputs are widened to float32 before the projection, the normalisation and any token pooling, so
    embeddings stay unit-length to float32 precision and pooling gets the float32 it needs.
    """

    @functools.wraps(encode)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        if resolve_precision(self.encode_precision, str(self.device), key="encode_precision") == "fp32":
            return encode(self, *args, **kwargs)
        with backbone_in_bf16(self[0], "cuda" if str(self.device).startswith("cuda") else "cpu"):
            return as_float32(encode(self, *args, **kwargs))

    return wrapper


#: Per thread (autocast is per thread): the device type the backbone's forward autocasts to, and the autocast
#: contexts entered by its pre-hook and not yet left.
_BF16 = threading.local()


def _enter_autocast(module: Any, args: Any) -> None:
    device_type = getattr(_BF16, "device_type", None)
    if device_type is not None:
        import torch

        context = torch.autocast(device_type=device_type, dtype=torch.bfloat16)
        context.__enter__()
        _BF16.open.append(context)


def _leave_autocast(module: Any, args: Any, output: Any) -> Any:
    if getattr(_BF16, "device_type", None) is None or not _BF16.open:
        return None
    _BF16.open.pop().__exit__(None, None, None)
    return as_float32(output)


@contextlib.contextmanager
def backbone_in_bf16(backbone: Any, device_type: str) -> Iterator[None]:
    """While inside, ``backbone``'s forward runs under bf16 autocast on this thread and returns float32.

    The hooks are registered on the module once and do nothing outside this block (or on other threads).
    """
    if not getattr(backbone, "_bf16_hooks", None):
        backbone._bf16_hooks = (
            backbone.register_forward_pre_hook(_enter_autocast),
            backbone.register_forward_hook(_leave_autocast),
        )
    outer = getattr(_BF16, "device_type", None)
    _BF16.device_type, _BF16.open = device_type, getattr(_BF16, "open", [])
    depth = len(_BF16.open)
    try:
        yield
    finally:
        while len(_BF16.open) > depth:  # a forward that raised never reached its post-hook
            _BF16.open.pop().__exit__(None, None, None)
        _BF16.device_type = outer


def as_float32(value: Any) -> Any:
    """Tensors (possibly nested in lists or dicts) in bfloat16 as float32: what callers get in fp32."""
    import torch

    if isinstance(value, torch.Tensor):
        return value.float() if value.dtype == torch.bfloat16 else value
    if isinstance(value, list):
        return [as_float32(item) for item in value]
    if isinstance(value, dict):
        return {key: as_float32(item) for key, item in value.items()}
    return value
