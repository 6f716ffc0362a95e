"""PyLate's ``PLAID`` keyword arguments that fast-plaid cannot honour: each is accepted, and a warning says
what runs instead. Apart from :mod:`pipeline.indexes.plaid` so that the index reads as fast-plaid's, with
PyLate's compatibility kept in one place.
"""

from __future__ import annotations

import warnings
from typing import Any

#: Stanford-PLAID settings that PyLate's ``PLAID`` accepts and that have no fast-plaid meaning.
STANFORD_ONLY_OPTIONS = ("nranks", "index_bsize", "ndocs", "centroid_score_threshold", "ncells")


def triton_usable(device: str) -> bool:
    """Whether fast-plaid can run Triton k-means on ``device``: CUDA, with Triton installed."""
    if not device.startswith("cuda"):
        return False
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


def check_pylate_options(
    use_fast: bool, use_triton: bool | None, low_memory: bool, kwargs: dict[str, Any]
) -> None:
    """Warn, naming each PyLate option this index cannot honour and what runs instead; refuse unknown ones."""
    unknown = sorted(set(kwargs) - set(STANFORD_ONLY_OPTIONS))
    if unknown:
        raise TypeError(f"PLAID got unexpected keyword argument(s) {unknown}")
    if kwargs:
        warnings.warn(
            f"PLAID ignores the Stanford-PLAID option(s) {sorted(kwargs)}: fast-plaid runs, with its own "
            "settings (nbits, kmeans_niters, n_ivf_probe, n_full_scores ...)",
            UserWarning,
            stacklevel=3,
        )
    if not use_fast:
        warnings.warn(
            "PLAID(use_fast=False) asks for the Stanford PLAID backend, which this project does not ship: "
            "the fast-plaid backend runs instead",
            UserWarning,
            stacklevel=3,
        )
    if use_triton:
        try:
            import triton  # noqa: F401
        except ImportError:
            warnings.warn(
                "PLAID(use_triton=True): Triton is not installed, so fast-plaid's k-means runs in torch",
                UserWarning,
                stacklevel=3,
            )
    if low_memory:
        warnings.warn(
            "PLAID(low_memory=True) is ignored: fast-plaid places the index in memory itself",
            UserWarning,
            stacklevel=3,
        )
