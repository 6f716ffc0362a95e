"""PLAID index on fast-plaid: k-means centroids plus residual compression, searched with IVF probing.

In this module: the `PLAID` class, its build and its search. How k-means is sized lives in
:mod:`pipeline.indexes.plaid_kmeans`, PyLate's options fast-plaid cannot honour in
:mod:`pipeline.indexes.plaid_options`, the tuned search settings in :mod:`pipeline.indexes.search_settings`.

fast-plaid does the clustering, compression, incremental updates, deletions and search; this module adds
what it lacks: arbitrary str/int document ids, atomic on-disk versions (see :mod:`pipeline.indexes.storage`),
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
import gc
import logging
import os
import shutil
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from pipeline.indexes.base import MultiVectorIndex
from pipeline.indexes.checks import check_counts
from pipeline.indexes.embedding_store import CACHE_BYTES, STORE_FOLDER, EmbeddingStore, open_store
from pipeline.indexes.plaid_kmeans import (
    CPU_KMEANS_CHUNK,
    DEFAULT_POINTS_PER_CENTROID,
    fast_plaid_centroids,
    fast_plaid_kmeans,
    kmeans_sample_documents,
)
from pipeline.indexes.plaid_options import check_pylate_options, triton_usable
from pipeline.indexes.plaid_store import carry_store
from pipeline.indexes.search_settings import SEARCH_SETTINGS_FILE, SearchSettings, read_settings, search_slots
from pipeline.indexes.storage import TEXTS_FILE

logger = logging.getLogger(__name__)

PLAID_FOLDER = "plaid"

#: Re-scoring depth at the defaults: PLAID's top 256 candidates are re-scored with the float16 store.
DEFAULT_RERANK = 256
#: The candidate pass that feeds the re-scoring, at the defaults above ``exact_search_tokens``:
#: ``(n_ivf_probe, n_full_scores)``.
RERANK_CANDIDATES = (4, 1024)
#: PyLate's plain PLAID search settings: what ``rerank=0`` (or an index without a store) searches with.
PYLATE_SEARCH = (8, 8192)


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
            (:func:`~pipeline.indexes.plaid_kmeans.fast_plaid_centroids`, 8,192 for SciFact's or NFCorpus's
            ~0.6-0.9 M tokens), halved when ``rerank`` is on. Fewer centroids build faster (each token is
            assigned to its nearest one) and make each probed cell larger, which re-scoring and the index
            stage's tuner account for.
        kmeans_chunk_size: Points per k-means distance block (not a PyLate argument). ``None``: 8,192 on
            CPU, which bounds a build's peak memory (fast-plaid's 51,200-point blocks are most of it),
            fast-plaid's own on CUDA. The clustering is the same; only the blocks are smaller.
        n_ivf_probe: Centroids probed per query token at search time (default: the tuned value, else 4
            when re-scoring, else PyLate's 8).
        n_full_scores: Candidates scored with decompressed embeddings per query (default: the tuned value,
            else 1,024 when re-scoring, else PyLate's 8,192).
        exact_search_tokens: Not a PyLate argument. Up to this many stored tokens, a search at the default
            settings (``rerank`` on, neither ``n_ivf_probe`` nor ``n_full_scores`` given, no tuned settings)
            scores every document exactly from the float16 store instead of running PLAID's candidate
            pass: on a CPU, fast-plaid's candidate pass costs about as much as exact MaxSim over a few
            thousand documents and still misses part of the exact top 10 (all of SciFact, 5,183
            documents: recall@10 0.928 at about exact search's QPS in
            ``bench/records/index_sweep_scifact.json``; ``python -m bench.index.library`` measures both
            in one run). ``None`` (the default): as many tokens as the store's float32 copy holds in its
            1 GiB in-memory cache (2,097,152 at 128 dimensions, about 13,000 SciFact abstracts); ``0``:
            always the candidate pass.
        rerank: Not a PyLate argument. ``256`` (the default): each version keeps a float16 copy of the
            documents' embeddings (``embeddings/``, about four times PLAID's own 4-bit files). Up to
            ``exact_search_tokens`` a search scores every document exactly with it; above, it re-scores
            PLAID's top 256 candidates exactly with it, from a cheaper candidate pass (probe 4, 1,024
            full scores), which is as good as the candidates it is given; the index is
            built with half of fast-plaid's centroids (``n_centroids`` unset), which took 0.48x the build
            time on SciFact (``bench/records/build_centroids_scifact.json``; the defaults against PyLate's:
            ``python -m bench.index.library``). ``0``: PyLate's behaviour, plain PLAID at
            ``n_ivf_probe=8, n_full_scores=8192``, fast-plaid's centroid count, no copy kept. An index
            written without the copy (``rerank=0``, or by an older version) is searched as plain PLAID.
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
    #: Written beside the versions by the index stage: the tuned settings, the full-precision embeddings
    #: and the documents' texts.
    side_files = (SEARCH_SETTINGS_FILE, STORE_FOLDER, TEXTS_FILE)

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
        exact_search_tokens: int | None = None,
        rerank: int = DEFAULT_RERANK,
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
        check_pylate_options(use_fast, use_triton, low_memory, kwargs)
        check_counts({"rerank": rerank}, minimum=0)
        if exact_search_tokens is not None:
            check_counts({"exact_search_tokens": exact_search_tokens}, minimum=0)
        # Explicit search settings win over the stored, tuned ones, and over exact search.
        settings_given = n_ivf_probe is not None or n_full_scores is not None
        self.tuned = bool(tuned) and not settings_given
        self.rerank = rerank
        self.exact_search_tokens = 0 if settings_given else exact_search_tokens
        # The candidate pass of a re-scored search, and the plain PLAID search (PyLate's unless set), which
        # runs when there is nothing to re-score with. n_ivf_probe / n_full_scores: what searches use now.
        self._candidates = (
            RERANK_CANDIDATES[0] if n_ivf_probe is None else n_ivf_probe,
            RERANK_CANDIDATES[1] if n_full_scores is None else n_full_scores,
        )
        self._plain = (
            PYLATE_SEARCH[0] if n_ivf_probe is None else n_ivf_probe,
            PYLATE_SEARCH[1] if n_full_scores is None else n_full_scores,
        )
        self.n_ivf_probe, self.n_full_scores = self._plain
        self.nbits = nbits
        self.kmeans_niters = kmeans_niters
        self.max_points_per_centroid = max_points_per_centroid
        self.n_samples_kmeans = n_samples_kmeans
        self.n_centroids = n_centroids
        self.batch_size = batch_size
        self.search_batch_size = search_batch_size
        self._check_settings(kmeans_chunk_size)
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        if kmeans_chunk_size is None and not self.device.startswith("cuda"):
            kmeans_chunk_size = CPU_KMEANS_CHUNK
        self.kmeans_chunk_size = kmeans_chunk_size
        self.seed = seed
        self.use_fast = use_fast
        self.use_triton = self._triton_runs(use_triton)
        self.show_progress = show_progress
        self.num_threads = num_threads
        self._plaid: Any = None
        self.search_settings: SearchSettings | None = None
        self._embeddings: EmbeddingStore | None = None
        super().__init__(index_folder, index_name, override, embedding_size, settings=self._build_settings())

    def _check_settings(self, kmeans_chunk_size: int | None) -> None:
        """Refuse settings fast-plaid cannot build or search with, before anything is opened."""
        given = {
            "kmeans_chunk_size": kmeans_chunk_size,
            "n_samples_kmeans": self.n_samples_kmeans,
            "n_centroids": self.n_centroids,
        }
        check_counts(
            {
                "kmeans_niters": self.kmeans_niters,
                "max_points_per_centroid": self.max_points_per_centroid,
                "n_ivf_probe": self.n_ivf_probe,
                "n_full_scores": self.n_full_scores,
                "batch_size": self.batch_size,
                **{name: value for name, value in given.items() if value is not None},
            }
        )
        if self.nbits not in (1, 2, 4, 8):
            raise ValueError(f"nbits must be 1, 2, 4 or 8, got {self.nbits!r}")
        batch = self.search_batch_size
        if batch != "auto" and (not isinstance(batch, int) or batch < 1):
            raise ValueError(f"search_batch_size must be 'auto' or a positive integer, got {batch!r}")

    def _triton_runs(self, use_triton: bool | None) -> bool:
        """Whether fast-plaid's k-means runs in Triton: asked for, installed, and on CUDA."""
        usable = bool(use_triton) and triton_usable(self.device)
        if use_triton and not usable and not self.device.startswith("cuda"):
            warnings.warn(
                f"PLAID(use_triton=True): Triton k-means needs CUDA and this index runs on {self.device}, "
                "so fast-plaid's k-means runs in torch",
                UserWarning,
                stacklevel=3,  # the caller of PLAID(...), past __init__
            )
        return usable

    def _build_settings(self) -> dict[str, Any]:
        """The settings that shape the index on disk, recorded in its manifest (not search or device ones)."""
        return {
            "nbits": self.nbits,
            "kmeans_niters": self.kmeans_niters,
            "max_points_per_centroid": self.max_points_per_centroid,
            "n_samples_kmeans": self.n_samples_kmeans,
            "n_centroids": self.n_centroids,
            "seed": self.seed,
        }

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
        self.n_ivf_probe, self.n_full_scores = self._plain
        if version is None or not self._slot_ids:
            return
        folder = version / PLAID_FOLDER
        if not (folder / "metadata.json").is_file():
            raise FileNotFoundError(f"{folder / 'metadata.json'} is missing")
        self._plaid = self._fast_plaid(folder)
        if self.tuned:
            self._load_tuned(version.name)
        if self.search_settings is None and self.rerank:
            self._load_rerank(version)

    def _load_rerank(self, version: Path) -> None:
        """Search exactly, or re-score PLAID's candidates, with the version's float16 store when it has one
        that matches; else plain PLAID."""
        store = open_store(self.path, version.name, device=self.device)
        if store is None or store.num_documents != len(self._slot_ids):
            logger.info("%s: %s has no embedding store: plain PLAID search", self.path, version.name)
            return
        self._embeddings = store
        self.n_ivf_probe, self.n_full_scores = self._candidates
        if store.num_tokens <= self._exact_limit(store.dim):
            self.search_settings = SearchSettings(mode="exact")
            return
        self.search_settings = SearchSettings(
            n_ivf_probe=self.n_ivf_probe, n_full_scores=self.n_full_scores, rerank=self.rerank
        )

    def _exact_limit(self, dim: int) -> int:
        """The most stored tokens searched exactly at the defaults (``exact_search_tokens``)."""
        if self.exact_search_tokens is not None:
            return self.exact_search_tokens
        return CACHE_BYTES // (4 * dim)  # while the float32 copy stays in memory between searches

    def _load_tuned(self, version: str) -> None:
        """Pick up ``search.json`` (and the embedding store it needs) when they match ``version``."""
        settings = read_settings(self.path, version)
        if settings is None:
            return
        if settings.needs_store:
            self._embeddings = open_store(self.path, version, device=self.device)
            if self._embeddings is None or self._embeddings.num_documents != len(self._slot_ids):
                logger.warning(
                    "%s: the tuned settings need %s, which is missing or stale: plain PLAID search",
                    self.path,
                    STORE_FOLDER,
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

    def _centroids(self, tokens: int) -> int | None:
        """Centroids when fast-plaid clusters ``tokens`` whole: as set, else half of fast-plaid's rule when
        re-scoring (its candidates need not be as fine: half the build time), else fast-plaid's own."""
        if self.n_centroids is not None or not self.rerank or tokens == 0:
            return self.n_centroids
        return max(1, fast_plaid_centroids(tokens) // 2)

    def _build_kwargs(self, token_counts: list[int] | None = None) -> dict[str, Any]:
        """fast-plaid's build arguments; a new index's ``token_counts`` size the k-means sample."""
        samples = self.n_samples_kmeans
        if samples is None and token_counts is not None:
            centroids = self._centroids(sum(token_counts))
            samples = kmeans_sample_documents(token_counts, self.max_points_per_centroid, centroids)
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
        tokens = sum(self._slot_tokens) + sum(len(e) for e in embeddings)  # what a whole rebuild clusters
        with _frozen_heap(), fast_plaid_kmeans(self.kmeans_chunk_size, self._centroids(tokens)):
            if exists:  # a small index is rebuilt whole, a large one extends its centroids: fast-plaid's rule
                plaid.update(documents_embeddings=tensors, **self._build_kwargs())
            else:
                counts = [len(t) for t in tensors]
                plaid.create(documents_embeddings=tensors, nbits=self.nbits, **self._build_kwargs(counts))
            plaid.close()
        (folder / "plaid.lock").unlink(missing_ok=True)
        if self.rerank:
            carry_store(source, target, target.name, added=embeddings)

    def _write_removed(self, source: Path, target: Path, slots: list[int]) -> None:
        folder = self._working_copy(source, target)
        if len(slots) == len(self._slot_ids):
            # Everything removed: an empty version holds no fast-plaid folder (nor a store).
            shutil.rmtree(folder, ignore_errors=True)
            shutil.rmtree(target / STORE_FOLDER, ignore_errors=True)
            return
        plaid = self._fast_plaid(folder)
        with _frozen_heap():
            plaid.delete(subset=slots)
            plaid.close()
        (folder / "plaid.lock").unlink(missing_ok=True)
        if self.rerank:
            keep = np.setdiff1d(np.arange(len(self._slot_ids)), np.asarray(slots, dtype=np.int64))
            carry_store(source, target, target.name, keep=keep)

    def _search_slots(
        self, queries: list[np.ndarray], k: int, allowed: list[np.ndarray | None]
    ) -> list[list[tuple[int, float]]]:
        if self.search_settings is not None:
            return search_slots(
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
