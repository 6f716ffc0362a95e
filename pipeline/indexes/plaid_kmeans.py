"""How PLAID's k-means is sized and run: the sample of documents it trains on, its number of centroids and
its distance-block size. Apart from :mod:`pipeline.indexes.plaid` because it is measured arithmetic and a
patch of fast-plaid's module, not part of the index contract.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import threading
from collections.abc import Iterator

import numpy as np

logger = logging.getLogger(__name__)

#: Points per k-means distance block on CPU. fast-plaid's FastKMeans computes distances in blocks of
#: 51,200 points x every centroid in float32: 800 MiB at the 4,096 centroids of a 500-document build, 1.6 GiB
#: at 8,192, the peak of the whole build. 8,192 points bound it to a sixth (measured: docs/history.md); each
#: point's nearest centroid and the centroid sums are the same, only computed in more, smaller blocks.
CPU_KMEANS_CHUNK = 8192

#: fast-plaid's module-level k-means names are swapped for bound ones while a build runs; one at a time.
_KMEANS_SWAP = threading.Lock()


@contextlib.contextmanager
def fast_plaid_kmeans(points: int | None, centroids: int | None) -> Iterator[None]:
    """Run fast-plaid's k-means in ``points``-point blocks, with ``centroids`` centroids when it builds whole.

    fast-plaid's ``create``/``update`` build ``FastKMeans(...)`` themselves without a block size, and
    ``create`` calls ``compute_kmeans`` without a centroid count (it derives one from the token count), so
    the names they look up are replaced by ones with ``chunk_size_data`` / ``num_partitions`` bound, for the
    duration of the build (a new index, or a small one fast-plaid's ``update`` rebuilds whole). When
    ``update`` adds centroids to a large index it passes its own ``num_partitions``, which wins.
    ``None`` keeps fast-plaid's own (on CUDA large blocks are what makes k-means fast).
    """
    if points is None and centroids is None:
        yield
        return
    from fast_plaid.search import fast_plaid as module

    swaps = {}
    for name, keyword, value in (
        ("FastKMeans", "chunk_size_data", points),
        ("compute_kmeans", "num_partitions", centroids),
    ):
        if value is None:
            continue
        original = getattr(module, name, None)
        if original is None:  # a fast-plaid without the hook: build with its own setting
            logger.warning("fast-plaid has no %s to set %s on; it uses its own", name, keyword)
            continue
        swaps[name] = (original, functools.partial(original, **{keyword: value}))
    with _KMEANS_SWAP:
        for name, (_, bound) in swaps.items():
            setattr(module, name, bound)
        try:
            yield
        finally:
            for name, (original, _) in swaps.items():
                setattr(module, name, original)


#: k-means points per centroid when none is given. fast-plaid and PyLate cap it at 256 and sample up to
#: 16 * sqrt(120 * documents) documents, which on corpora of a few thousand documents is all of them (~100
#: points per centroid): k-means was 40% of a SciFact build. 25 points per centroid built in 0.70x the time
#: at the same recall at PLAID's defaults, 12.5 cost a quarter of the tuned QPS; 32 keeps a margin (FAISS
#: warns below 39) and cost the tuned search about a fifth of its QPS in one run (docs/benchmarks.md,
#: "Where PLAID's build time goes").
DEFAULT_POINTS_PER_CENTROID = 32


def fast_plaid_centroids(tokens: int) -> int:
    """fast-plaid's number of centroids for ``tokens`` token embeddings: the largest power of two not above
    16 * sqrt(tokens) (PLAID's rule).

    Example:
        >>> fast_plaid_centroids(561_120)  # NFCorpus's tokens
        8192
    """
    return 2 ** int(np.floor(np.log2(16 * np.sqrt(tokens))))


def kmeans_sample_documents(
    token_counts: list[int], points_per_centroid: int, centroids: int | None = None
) -> int:
    """Documents to sample for fast-plaid's k-means so it gets about ``points_per_centroid`` points each.

    fast-plaid picks the number of centroids from the corpus's token count (:func:`fast_plaid_centroids`,
    unless ``centroids`` is given) and subsamples to ``max_points_per_centroid`` per centroid inside
    k-means; a document sample of this size avoids gathering (and holding) the whole corpus only to
    subsample it.

    Example:
        >>> kmeans_sample_documents([160] * 5000, points_per_centroid=32)  # 8,192 centroids
        1639
        >>> kmeans_sample_documents([10] * 20, points_per_centroid=32)  # small corpora: every document
        20
    """
    documents, tokens = len(token_counts), sum(token_counts)
    if documents == 0 or tokens == 0:
        return documents
    centroids = centroids or fast_plaid_centroids(tokens)
    wanted = int(np.ceil(centroids * points_per_centroid * documents / tokens))
    return min(documents, wanted, 1 + int(16 * np.sqrt(120 * documents)))  # never more than fast-plaid's
