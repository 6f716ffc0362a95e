"""PLAID index on fast-plaid: k-means centroids plus residual compression, searched with IVF probing.

One cohesive module: the `PLAID` class (its build, search and PyLate keyword arguments).

fast-plaid does the clustering, compression, incremental updates, deletions and search; this module adds
what it lacks: arbitrary str/int document ids, atomic on-disk versions (see :mod:`pipeline.indexes.base`),
per-query id filtering, and input validation.

fast-plaid numbers documents 0..n-1 in insertion order and renumbers them after a deletion (the
survivors keep their order), which is exactly the compacting slot model of the base class.

Example:
    >>> import numpy as np, tempfile
    >>> from pipeline import indexes
    >>> rng = np.random.default_rng(0)
    >>> docs = [rng.standard_normal((12, 16)).astype("float32") for _ in range(40)]
    >>> index = indexes.PLAID(index_folder=tempfile.mkdtemp(), index_name="demo", device="cpu")
    >>> index = index.add_documents(documents_ids=[f"d{i}" for i in range(40)], documents_embeddings=docs)
    >>> index(docs[3:4], k=1)[0][0]["id"]
    'd3'
"""

from __future__ import annotations

import contextlib
import functools
import gc
import logging
import os
import shutil
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

import pipeline.indexes.tuning as tuning
from pipeline.indexes.base import MultiVectorIndex

logger = logging.getLogger(__name__)

PLAID_FOLDER = "plaid"


@contextlib.contextmanager
def _frozen_heap() -> Iterator[None]:
    """Move existing objects out of the garbage collector's reach while fast-plaid runs.

    fast-plaid calls ``gc.collect()`` many times per build, update or delete; in a process that has
    imported torch and transformers each full collection walks millions of objects (about 0.6 s each
    on a busy 2-core machine). Freezing the heap first makes those collections scan only new objects.
    """
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


#: Points per k-means distance block on CPU. fast-plaid's FastKMeans computes distances in blocks of
#: 51,200 points x every centroid in float32: 800 MiB at the 4,096 centroids of a 500-document build, 1.6 GiB
#: at 8,192, the peak of the whole build. 8,192 points bound it to a sixth (measured in the README); each
#: point's nearest centroid and the centroid sums are the same, only computed in more, smaller blocks.
CPU_KMEANS_CHUNK = 8192

#: fast-plaid's module-level k-means names are swapped for bound ones while a build runs; one at a time.
_KMEANS_SWAP = threading.Lock()


@contextlib.contextmanager
def _fast_plaid_kmeans(points: int | None, centroids: int | None) -> Iterator[None]:
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
#: warns below 39) and cost the tuned search about a fifth of its QPS in one run (README, "Where PLAID's
#: build time goes").
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


#: Stanford-PLAID settings that PyLate's ``PLAID`` accepts and that have no fast-plaid meaning.
STANFORD_ONLY_OPTIONS = ("nranks", "index_bsize", "ndocs", "centroid_score_threshold", "ncells")


def _triton_usable(device: str) -> bool:
    if not device.startswith("cuda"):
        return False
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


def _check_pylate_options(
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


class PLAID(MultiVectorIndex):
    """A PLAID index (fast-plaid) with PyLate's constructor.

    Args:
        index_folder: Folder that holds indexes.
        index_name: Name of this index: a plain folder name inside ``index_folder``.
        override: ``False`` opens an existing index (or starts an empty one); ``True`` starts empty and
            replaces whatever is on disk at the first write (until then the old index stays readable).
        nbits: Bits per residual dimension (2 or 4; 4 is more accurate, 2 is half the size).
        kmeans_niters: k-means iterations when computing centroids.
        max_points_per_centroid: k-means trains on at most this many points per centroid. 32 here
            (:data:`DEFAULT_POINTS_PER_CENTROID`); fast-plaid and PyLate use 256, which on corpora of a few
            thousand documents means clustering every token.
        n_samples_kmeans: Documents sampled for k-means. ``None``: as many as give about
            ``max_points_per_centroid`` points per centroid (:func:`kmeans_sample_documents`), never more
            than fast-plaid's own heuristic.
        n_centroids: Centroids of a new index (not a PyLate argument). ``None``: fast-plaid's rule
            (:func:`fast_plaid_centroids`, 8,192 for SciFact's or NFCorpus's ~0.6-0.9 M tokens). Fewer
            centroids build faster (each token is assigned to its nearest one) and make each probed cell
            larger, which the index stage's tuner accounts for.
        kmeans_chunk_size: Points per k-means distance block (not a PyLate argument). ``None``: 8,192 on
            CPU, which bounds a build's peak memory (fast-plaid's 51,200-point blocks are most of it),
            fast-plaid's own on CUDA. The clustering is the same; only the blocks are smaller.
        n_ivf_probe: Centroids probed per query token at search time (default: the tuned value, else 8).
        n_full_scores: Candidates re-scored with decompressed embeddings per query (default: the tuned
            value, else 8192).
        batch_size: Documents per chunk when fast-plaid builds or updates the index.
        search_batch_size: Documents per scoring chunk when searching (``"auto"``: fast-plaid plans it).
        device: ``"cpu"``, ``"cuda"``, ``"cuda:1"``...; ``None`` picks CUDA when available.
        seed: Seed for k-means sampling and initialisation, so builds are reproducible.
        embedding_size: Expected embedding dimension; ``None`` takes it from the first documents.
        tuned: Search with the settings the index stage measured and stored beside the index
            (``search.json``, see :mod:`pipeline.indexes.tuning`: possibly exact re-scoring or exact search
            from the stored full-precision embeddings). Passing ``n_ivf_probe`` or ``n_full_scores``, or
            ``tuned=False``, searches with plain PLAID instead.
        use_fast: PyLate's backend switch. ``True`` (the default) is fast-plaid, which is what runs here;
            ``False`` asks for the Stanford PLAID backend, which this project does not ship: a warning
            says so and fast-plaid runs instead.
        use_triton: Triton k-means in fast-plaid. Honoured when Triton is installed and the index runs on
            CUDA; otherwise (asked for with ``True``) a warning says torch k-means runs instead.
        show_progress: Progress bars while fast-plaid searches.
        num_threads: Processes fast-plaid may use while searching on CPU (``None``: its default).
        low_memory: Accepted for PyLate code; fast-plaid places the index itself and ignores it, so
            ``True`` gives a warning.
        **kwargs: Stanford-PLAID settings PyLate also accepts (``nranks``, ``index_bsize``, ``ndocs``,
            ``centroid_score_threshold``, ``ncells``): they have no fast-plaid meaning, so a warning names
            them. Any other keyword is an error.

    Facts: ``num_documents``, ``num_tokens``, ``disk_bytes``, ``embedding_size``, ``documents_ids`` and
    ``stats()``.
    """

    kind = "plaid"
    compacts_on_remove = True

    def __init__(
        self,
        index_folder: str | os.PathLike[str] = "indexes",
        index_name: str = "index",
        override: bool = False,
        *,
        nbits: int = 4,
        kmeans_niters: int = 4,
        max_points_per_centroid: int = DEFAULT_POINTS_PER_CENTROID,
        n_samples_kmeans: int | None = None,
        n_centroids: int | None = None,
        kmeans_chunk_size: int | None = None,
        n_ivf_probe: int | None = None,
        n_full_scores: int | None = None,
        batch_size: int = 25_000,
        search_batch_size: int | Literal["auto"] = "auto",
        device: str | None = None,
        seed: int = 42,
        embedding_size: int | None = None,
        tuned: bool = True,
        use_fast: bool = True,
        use_triton: bool | None = None,
        show_progress: bool = True,
        num_threads: int | None = None,
        low_memory: bool = False,
        **kwargs: Any,
    ) -> None:
        _check_pylate_options(use_fast, use_triton, low_memory, kwargs)
        # Explicit search settings win over the stored, tuned ones.
        self.tuned = bool(tuned) and n_ivf_probe is None and n_full_scores is None
        n_ivf_probe = 8 if n_ivf_probe is None else n_ivf_probe
        n_full_scores = 8192 if n_full_scores is None else n_full_scores
        positive = {
            "kmeans_niters": kmeans_niters,
            "max_points_per_centroid": max_points_per_centroid,
            "n_ivf_probe": n_ivf_probe,
            "n_full_scores": n_full_scores,
            "batch_size": batch_size,
        }
        if kmeans_chunk_size is not None:
            positive["kmeans_chunk_size"] = kmeans_chunk_size
        if n_samples_kmeans is not None:
            positive["n_samples_kmeans"] = n_samples_kmeans
        if n_centroids is not None:
            positive["n_centroids"] = n_centroids
        for name, value in positive.items():
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if nbits not in (1, 2, 4, 8):
            raise ValueError(f"nbits must be 1, 2, 4 or 8, got {nbits!r}")
        if search_batch_size != "auto" and (not isinstance(search_batch_size, int) or search_batch_size < 1):
            raise ValueError(
                f"search_batch_size must be 'auto' or a positive integer, got {search_batch_size!r}"
            )
        self.nbits = nbits
        self.kmeans_niters = kmeans_niters
        self.max_points_per_centroid = max_points_per_centroid
        self.n_samples_kmeans = n_samples_kmeans
        self.n_centroids = n_centroids
        self.n_ivf_probe = n_ivf_probe
        self.n_full_scores = n_full_scores
        self.batch_size = batch_size
        self.search_batch_size = search_batch_size
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        if kmeans_chunk_size is None and not self.device.startswith("cuda"):
            kmeans_chunk_size = CPU_KMEANS_CHUNK
        self.kmeans_chunk_size = kmeans_chunk_size
        self.seed = seed
        self.use_fast = use_fast
        self.use_triton = bool(use_triton) and _triton_usable(self.device)
        if use_triton and not self.use_triton and not self.device.startswith("cuda"):
            warnings.warn(
                f"PLAID(use_triton=True): Triton k-means needs CUDA and this index runs on {self.device}, "
                "so fast-plaid's k-means runs in torch",
                UserWarning,
                stacklevel=2,
            )
        self.show_progress = show_progress
        self.num_threads = num_threads
        self._plaid: Any = None
        self.search_settings: tuning.SearchSettings | None = None
        self._embeddings: tuning.EmbeddingStore | None = None
        self._untuned = (n_ivf_probe, n_full_scores)  # what searches use when no tuned settings apply
        super().__init__(
            index_folder,
            index_name,
            override,
            embedding_size,
            settings={
                "nbits": nbits,
                "kmeans_niters": kmeans_niters,
                "max_points_per_centroid": max_points_per_centroid,
                "n_samples_kmeans": n_samples_kmeans,
                "n_centroids": n_centroids,
                "seed": seed,
            },
        )

    # ------------------------------------------------------------------ backend
    def _fast_plaid(self, folder: Path) -> Any:
        from fast_plaid import search  # imported late: it loads torch's native libraries

        with _frozen_heap():
            return search.FastPlaid(index=str(folder), device=self.device)

    def _open_backend(self, version: Path | None) -> None:
        if self._plaid is not None:
            with _frozen_heap():
                self._plaid.close()
        self._plaid = None
        self.search_settings, self._embeddings = None, None
        self.n_ivf_probe, self.n_full_scores = self._untuned
        if version is None or not self._slot_ids:
            return
        folder = version / PLAID_FOLDER
        if not (folder / "metadata.json").is_file():
            raise FileNotFoundError(f"{folder / 'metadata.json'} is missing")
        self._plaid = self._fast_plaid(folder)
        if self.tuned:
            self._load_tuned(version.name)

    def _load_tuned(self, version: str) -> None:
        """Pick up ``search.json`` (and the embedding store it needs) when they match ``version``."""
        settings = tuning.read_settings(self.path, version)
        if settings is None:
            return
        if settings.needs_store:
            self._embeddings = tuning.open_store(self.path, version, device=self.device)
            if self._embeddings is None or self._embeddings.num_documents != len(self._slot_ids):
                logger.warning(
                    "%s: the tuned settings need %s, which is missing or stale: plain PLAID search",
                    self.path,
                    tuning.STORE_FOLDER,
                )
                self._embeddings = None
                return
        self.search_settings = settings
        self.n_ivf_probe, self.n_full_scores = settings.n_ivf_probe, settings.n_full_scores
        logger.info("%s: searching with the tuned settings: %s", self.path, settings.describe())

    @property
    def search_batch_queries(self) -> int | None:
        """The tuned number of queries per search call (``retrieve.ColBERT``'s default), if any."""
        return None if self.search_settings is None else self.search_settings.batch_size

    def _build_kwargs(self, token_counts: list[int] | None = None) -> dict[str, Any]:
        """fast-plaid's build arguments; a new index's ``token_counts`` size the k-means sample."""
        samples = self.n_samples_kmeans
        if samples is None and token_counts is not None:
            samples = kmeans_sample_documents(token_counts, self.max_points_per_centroid, self.n_centroids)
            logger.info("k-means samples %d of %d documents", samples, len(token_counts))
        return {
            "kmeans_niters": self.kmeans_niters,
            "max_points_per_centroid": self.max_points_per_centroid,
            "n_samples_kmeans": samples,
            "batch_size": self.batch_size,
            "seed": self.seed,
            "use_triton_kmeans": self.use_triton,
        }

    def _working_copy(self, source: Path | None, target: Path) -> Path:
        """``target``'s fast-plaid folder, copied from ``source`` unless it is already there (in place)."""
        folder = target / PLAID_FOLDER
        previous = None if source is None else source / PLAID_FOLDER
        if source != target and previous is not None and previous.is_dir():
            # fast-plaid edits its files in place: work on a private copy, never on the live version.
            shutil.copytree(previous, folder, ignore=shutil.ignore_patterns("plaid.lock"))
        if self._plaid is not None:  # release the loaded index before its files change
            with _frozen_heap():
                self._plaid.close()
            self._plaid = None
        return folder

    def _write_added(self, source: Path | None, target: Path, embeddings: list[np.ndarray]) -> None:
        tensors = [torch.from_numpy(e) for e in embeddings]
        folder = self._working_copy(source, target)
        exists = (folder / "metadata.json").is_file()
        plaid = self._fast_plaid(folder)
        with _frozen_heap(), _fast_plaid_kmeans(self.kmeans_chunk_size, self.n_centroids):
            if exists:  # a small index is rebuilt whole, a large one extends its centroids: fast-plaid's rule
                plaid.update(documents_embeddings=tensors, **self._build_kwargs())
            else:
                counts = [len(t) for t in tensors]
                plaid.create(documents_embeddings=tensors, nbits=self.nbits, **self._build_kwargs(counts))
            plaid.close()
        (folder / "plaid.lock").unlink(missing_ok=True)

    def _write_removed(self, source: Path, target: Path, slots: list[int]) -> None:
        folder = self._working_copy(source, target)
        if len(slots) == len(self._slot_ids):
            # Everything removed: an empty version holds no fast-plaid folder.
            shutil.rmtree(folder, ignore_errors=True)
            return
        plaid = self._fast_plaid(folder)
        with _frozen_heap():
            plaid.delete(subset=slots)
            plaid.close()
        (folder / "plaid.lock").unlink(missing_ok=True)

    def _search_slots(
        self, queries: list[np.ndarray], k: int, allowed: list[np.ndarray | None]
    ) -> list[list[tuple[int, float]]]:
        if self.search_settings is not None:
            return tuning.search_slots(
                self.search_settings, self._embeddings, self.candidate_slots, queries, k, allowed
            )
        return self.candidate_slots(queries, k, self.n_ivf_probe, self.n_full_scores, allowed)

    def candidate_slots(
        self,
        queries: list[np.ndarray],
        k: int,
        n_ivf_probe: int,
        n_full_scores: int,
        allowed: list[np.ndarray | None],
    ) -> list[list[tuple[int, float]]]:
        """PLAID's own top-``k`` ``(slot, score)`` per query with the given settings (what tuning varies)."""
        results: list[list[tuple[int, float]]] = [[] for _ in queries]
        unfiltered = [i for i, a in enumerate(allowed) if a is None]
        # An empty subset means "nothing allowed"; fast-plaid would read it as "no filter".
        filtered = [i for i, a in enumerate(allowed) if a is not None and len(a) > 0]
        for group, subset in (
            (unfiltered, None),
            (filtered, [allowed[i].tolist() for i in filtered]),  # type: ignore[union-attr]
        ):
            if not group:
                continue
            hits = self._plaid.search(
                queries_embeddings=[torch.from_numpy(queries[i]) for i in group],
                top_k=k,
                batch_size=self.search_batch_size,
                n_full_scores=max(n_full_scores, k),
                n_ivf_probe=n_ivf_probe,
                show_progress=self.show_progress and len(group) > 1,
                subset=subset,
                n_processes=self.num_threads,
            )
            for position, query_hits in zip(group, hits, strict=True):
                results[position] = [(int(slot), float(score)) for slot, score in query_hits]
        return results
