"""How the index stage writes a version: a rebuild, or an in-place update when only the corpus changed.

:func:`plan_for` reads the previous build's corpus manifest and decides (:func:`pipeline.indexes.updates.
plan_update`); :func:`build_or_update` writes the new version with its float16 store, texts and manifest
inside it, in one transaction; :func:`settle_search` re-checks the previous search settings after an update,
or tunes afresh. The index stage (:mod:`pipeline.stages.index`) runs them in that order.

Every ``pipeline`` import here is made where it is used: the library wing is loaded only by the stage that
calls in (the ops wing imports no torch when imported).

Example (no previous build, nothing to update):
    >>> import tempfile
    >>> from pathlib import Path
    >>> from pipeline.project.config import Params
    >>> from pipeline.project.layout import Layout
    >>> params = Params()
    >>> plan_for(params, Layout(params, Path(tempfile.mkdtemp())), None, ["a"], ["h"], {}).reason
    'no previous index to update'
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)


def encoder_identity(params: Any, project: Path) -> dict[str, Any]:
    """What makes two encodings of a text the same: the model (its DVC md5), the backend and the precision.

    An index built by another encoder must be rebuilt: its embeddings and new ones would not compare.
    """
    from pipeline.models.precision import resolve_precision
    from pipeline.ops import lineage
    from pipeline.project.layout import Layout

    layout = Layout(params, project)
    if not layout.model.is_dir():
        raise FileNotFoundError(f"{layout.model}: no trained model (train.output; run the train stage first)")
    config = params.index
    return {
        "model_md5": lineage.dvc_md5(layout.model, project),
        "backend": config.backend,
        "precision": resolve_precision(config.precision, config.device, key="index.precision"),
    }


def plan_for(
    params: Any, layout: Any, origin: str | None, ids: list[str], digests: list[str], encoder: dict
) -> Any:
    """Update in place or rebuild (:func:`pipeline.indexes.updates.plan_update`), from the previous build."""
    from pipeline.indexes import updates
    from pipeline.indexes.storage import VersionStore, read_build_settings
    from pipeline.indexes.tuning import open_store

    config = params.index
    version = VersionStore(layout.index).current() if origin else None
    previous = updates.CorpusManifest.read(layout.index / version) if version else None
    missing = "no previous index to update"
    if version is not None and previous is None:
        missing = f"the previous index ({origin}) has no corpus manifest: it was built before manifests"
    elif version is not None and open_store(layout.index, version) is None:
        # its documents' embeddings are what an update carries over: without them, encode everything
        previous, missing = None, f"the previous index ({origin}) has no embedding store for its version"
    return updates.plan_update(
        config.update,
        config.update_max_churn,
        previous,
        settings=_plaid(params, layout, override=True).settings,
        previous_settings=read_build_settings(layout.index / version) if version else None,
        encoder=encoder,
        change=updates.diff_corpus(previous, ids, digests) if previous is not None else None,
        missing=missing,
    )


def _plaid(params: Any, layout: Any, override: bool) -> Any:
    from pipeline import indexes

    config = params.index
    return indexes.PLAID(
        index_folder=str(layout.index_folder),
        index_name=config.name,
        override=override,
        device=config.device,
        **config.plaid_options(),
    )


def build_or_update(
    params: Any,
    layout: Any,
    plan: Any,
    corpus: Any,
    digests: list[str],
    encoder: dict,
    add_all: Callable[[Any, Any, Any], dict[str, Any]],
) -> tuple[Any, Any, dict[str, Any], float, Any]:
    """Write the new index version: every document (a rebuild) or the change (an update), together with its
    full-precision store, texts and corpus manifest, all inside the version and published with it in one
    commit. A crash anywhere before that commit leaves the previous version live and complete; the next run
    starts from it again. ``add_all(model, index, writer)`` adds the whole corpus (a rebuild: the stage's
    chunked encoding, or its shards). Returns the index, its store, the encoding stats, the seconds and the
    model."""
    from pipeline.indexes import tuning, updates
    from pipeline.indexes.indexing import index_corpus
    from pipeline.indexes.storage import TEXTS_FILE
    from pipeline.models.backends import load_model
    from pipeline.ops import serving
    from pipeline.project.io import fault_point

    config = params.index
    model = load_model(str(layout.model), config.backend, device=config.device, precision=config.precision)
    incremental = plan.mode == "incremental"
    index = _plaid(params, layout, override=not incremental)
    started = time.perf_counter()
    if incremental and plan.change.unchanged:  # nothing to write: the version stays as it is
        store = tuning.open_store(index.path, index.stats()["version"], device=index.device)
        return index, store, {"documents": 0, "tokens": 0}, time.perf_counter() - started, model
    texts = dict(zip(corpus.ids, corpus.texts, strict=True))
    digest_of = dict(zip(corpus.ids, digests, strict=True))
    encode: list[str] = []
    # The float16 copy is written outside the index folder until it is complete, then moved into the version.
    with (
        tuning.EmbeddingStoreWriter(index.path / tuning.STORE_FOLDER, scratch=layout.index_folder) as writer,
        index.transaction(),
    ):
        stats: dict[str, Any] = {"documents": 0, "tokens": 0}
        if incremental:
            previous = tuning.open_store(index.path, index.stats()["version"])
            encode = updates.apply_update(index, plan.change, previous, writer)
        else:
            stats, encode = add_all(model, index, writer), []
        if encode:
            stats = index_corpus(
                model,
                [texts[i] for i in encode],
                encode,
                index,
                chunk_size=config.chunk_size,
                batch_size=config.batch_size,
                on_chunk=lambda _, embeddings: writer.add(embeddings),
            )
        version = index.version_folder()
        # scored where the index searches (a GPU's exact MaxSim can beat PLAID, so it is timed there)
        store = writer.commit(version.name, device=index.device, folder=version / tuning.STORE_FOLDER)
        # The texts go into the version, so the registry packs them without reading the corpus again.
        serving.write_documents({i: texts[i] for i in index.documents_ids}, version / TEXTS_FILE)
        slots = index.documents_ids
        updates.CorpusManifest(tuple(slots), tuple(digest_of[i] for i in slots), encoder).write(version)
        fault_point("publish")  # the fault suite's kill: the whole version written, not yet live
    seconds = time.perf_counter() - started
    # An older layout kept the store and texts beside the versions: stale now, so they go.
    shutil.rmtree(index.path / tuning.STORE_FOLDER, ignore_errors=True)
    (index.path / TEXTS_FILE).unlink(missing_ok=True)
    return index, store, stats, seconds, model


def settle_search(
    model: Any, index: Any, store: Any, probes: list[str], config: Any, plan: Any, layout: Any
) -> tuple[dict[str, Any], Any]:
    """Store search settings for the new version beside the index: after an in-place update, the previous
    settings when they still reach ``index.recall_target`` on the updated index (re-checked); otherwise, and
    after a rebuild, settings tuned afresh.

    The embeddings store stays whatever is chosen: which setting wins depends on measured time, and an output
    whose files depended on timing would not hash the same twice. ``search.json`` itself is timing-dependent,
    so ``.dvcignore`` keeps it out of the index's DVC hash (it lives beside the data, outside the hash), and
    ``dvc repro`` does not restore it with the previous build: the stage keeps a copy of it in the
    workspace's state folder, where the next update finds the settings to re-check.
    Returns the summary and the encoded probe queries.
    """
    from pipeline.indexes import tuning
    from pipeline.models import as_numpy
    from pipeline.project.io import atomic_write_text

    version = index.stats()["version"]
    queries = as_numpy(
        model.encode(probes, is_query=True, batch_size=config.batch_size, show_progress_bar=False)
    )
    previous = previous_settings(index.path, _settings_copy(layout)) if plan.mode == "incremental" else None
    result, how = None, "tuned"
    if previous is not None:
        result = tuning.recheck(store, queries, index.candidate_slots, previous, target=config.recall_target)
        how = (
            "re-checked: still reach the target"
            if result.reached
            else "re-tuned: re-checked below the target"
        )
        logger.info("search settings %s (%s)", how, tuning.describe_qps(result))
    if result is None or not result.reached:
        result = tuning.tune(store, queries, index.candidate_slots, target=config.recall_target)
    path = tuning.write_settings(index.path, version, result)
    atomic_write_text(_settings_copy(layout), path.read_text(encoding="utf-8"))
    logger.info("search settings: %s", tuning.describe_qps(result))
    summary = {k: v for k, v in result.summary().items() if k != "trials"}  # every trial: search.json
    summary["settled"] = how
    return summary, queries


def _settings_copy(layout: Any) -> Path:
    return layout.state / "search" / f"{layout.params.index.name}.json"


def previous_settings(index_path: Path, copy: Path) -> Any:
    """The search settings stored for the previous build: beside the index, else the workspace's copy."""
    from pipeline.indexes.search_settings import SEARCH_SETTINGS_FILE, SearchSettings

    for path in (index_path / SEARCH_SETTINGS_FILE, copy):
        try:
            return SearchSettings(**json.loads(path.read_text(encoding="utf-8"))["settings"])
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return None
