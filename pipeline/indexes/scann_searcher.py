"""The ScaNN searcher inside a :class:`~pipeline.indexes.ScaNN` version: how it is built, written and read
back. Apart from :mod:`pipeline.indexes.scann` because loading it safely (no pickle, assets confined to
the index folder) and choosing its build mode are ScaNN's own business, not the index contract's.

Example:
    >>> import numpy as np, tempfile
    >>> unset = dict.fromkeys(["num_neighbors", "num_leaves", "num_leaves_to_search", "training_sample_size"])
    >>> searcher, settings = build_searcher(
    ...     np.eye(4, dtype="float32"),
    ...     **unset,
    ...     dimensions_per_block=2,
    ...     anisotropic_quantization_threshold=0.2,
    ...     use_autopilot=False,
    ...     verbose=False,
    ... )
    >>> settings  # too few tokens to train ScaNN's quantiser: exact
    {'tokens': 4, 'mode': 'brute_force'}
    >>> version = Path(tempfile.mkdtemp())
    >>> write_searcher(searcher, version)
    >>> load_searcher(version).size()
    4
"""

from __future__ import annotations

import logging
import os
import shutil
import uuid
from pathlib import Path
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

SEARCHER_FOLDER = "scann"
ASSETS_FILE = "scann_assets.pbtxt"
#: ScaNN's anisotropic quantiser trains 16 centres per block: fewer tokens than this cannot train it.
AH_MIN_TOKENS = 16


def build_searcher(
    vectors: np.ndarray,
    *,
    num_neighbors: int | None,
    num_leaves: int | None,
    num_leaves_to_search: int | None,
    training_sample_size: int | None,
    dimensions_per_block: int,
    anisotropic_quantization_threshold: float,
    use_autopilot: bool,
    verbose: bool,
) -> tuple[Any, dict[str, Any]]:
    """A ScaNN searcher over ``vectors`` (float32, one row per token) and the settings it was built by.

    Fewer than :data:`AH_MIN_TOKENS` tokens get an exact brute-force searcher (PyLate fails on them);
    ``None`` settings take ScaNN's usual values for the number of tokens.
    """
    from scann.scann_ops.py import scann_ops_pybind

    n = len(vectors)
    neighbours = num_neighbors or min(10, n)
    builder = scann_ops_pybind.builder(vectors, neighbours, "dot_product")
    if n < AH_MIN_TOKENS:
        settings: dict[str, Any] = {"mode": "brute_force"}
        builder = builder.score_brute_force()
    elif use_autopilot:
        settings = {"mode": "autopilot"}
        builder = builder.autopilot()
    else:
        settings = {
            "mode": "tree_ah",
            "num_leaves": num_leaves or min(2_000, n),
            "num_leaves_to_search": num_leaves_to_search or 200,
            "training_sample_size": training_sample_size or min(250_000, n),
            "dimensions_per_block": dimensions_per_block,
            "anisotropic_quantization_threshold": anisotropic_quantization_threshold,
        }
        builder = builder.tree(
            num_leaves=settings["num_leaves"],
            num_leaves_to_search=settings["num_leaves_to_search"],
            training_sample_size=settings["training_sample_size"],
            spherical=True,
        ).score_ah(
            dimensions_per_block=dimensions_per_block,
            anisotropic_quantization_threshold=anisotropic_quantization_threshold,
        )
    log = logger.info if verbose else logger.debug
    log("ScaNN: building a searcher over %d tokens (%s)", n, settings)
    return builder.build(), {"tokens": n, **settings}


def write_searcher(searcher: Any, version: Path) -> None:
    """Serialise ``searcher`` as ``version``'s searcher folder, replacing the one there (a transaction's)."""
    folder = version / f".{SEARCHER_FOLDER}.{uuid.uuid4().hex}.tmp"
    folder.mkdir()
    try:
        searcher.serialize(str(folder), relative_path=True)  # asset paths relative: the index can move
        _replace(folder, version / SEARCHER_FOLDER)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _replace(new: Path, path: Path) -> None:
    old = path.with_name(f".{path.name}.old-{uuid.uuid4().hex}")
    if path.exists():
        os.replace(path, old)
    os.replace(new, path)
    shutil.rmtree(old, ignore_errors=True)


def load_searcher(version: Path) -> Any:
    """Load the serialised searcher without ScaNN's pickle path, its assets confined to the folder."""
    from google.protobuf import text_format
    from scann.scann_ops import scann_assets_pb2
    from scann.scann_ops.py import scann_ops_pybind

    folder = version / SEARCHER_FOLDER
    if (folder / "scann_docids.pkl").exists():
        raise ValueError(f"{folder / 'scann_docids.pkl'}: a pickle file; this index never writes one")
    text = (folder / ASSETS_FILE).read_text(encoding="utf-8")
    try:
        assets = text_format.Parse(text, scann_assets_pb2.ScannAssets())
    except text_format.ParseError as error:
        raise ValueError(f"{folder / ASSETS_FILE}: not a ScaNN assets file ({error})") from None
    root = folder.resolve()
    for asset in assets.assets:
        where = (folder / asset.asset_path).resolve()
        if os.path.isabs(asset.asset_path) or not where.is_relative_to(root) or not where.is_file():
            raise ValueError(
                f"{folder / ASSETS_FILE}: asset {asset.asset_path!r} is not a file inside {folder}"
            )
    return scann_ops_pybind.ScannSearcher(scann_ops_pybind.scann_pybind.ScannNumpy(str(folder), text), None)
