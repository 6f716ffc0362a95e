"""The data a run read, as MLflow dataset inputs: the prepared training set, the benchmark, the corpus.

Each is an MLflow ``MetaDataset``: a name, where the data lies, and a digest, which is the DVC md5 of the
file or folder (the value ``dvc.lock`` and the ``lineage.<artifact>.md5`` tags hold). Nothing is read or
uploaded: the data stays where DVC keeps it, and the digest says which version a run saw. MLflow's run page
lists them under "Datasets used"; metrics logged with ``dataset=`` carry the dataset's name and digest, so the
model page says what each number was measured on.

Example (a throwaway SQLite store; the md5 would be ``dvc_md5``'s):
    >>> import mlflow
    >>> md5 = "0123456789abcdef0123456789abcdef.dir"
    >>> record = dataset_record("benchmark", Path("data/prepared/eval"), md5)
    >>> with mlflow.start_run() as run:
    ...     log_datasets([(record, "evaluation")])
    >>> [(d.dataset.name, d.dataset.digest) for d in mlflow.get_run(run.info.run_id).inputs.dataset_inputs]
    [('benchmark', '0123456789abcdef0123456789abcdef.dir')]
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from pipeline.ops.lineage import LINEAGE_PREFIX, dvc_md5
from pipeline.project.config import Params, resolve_path
from pipeline.project.layout import Layout

logger = logging.getLogger(__name__)

#: Lineage artifacts that are data: (dataset name, the context the run used it in).
DATA_ARTIFACTS: dict[str, tuple[str, str]] = {
    "data_train": ("prepared_train", "training"),
    "data_eval": ("benchmark", "evaluation"),
}
CORPUS = "corpus"
#: The input tag that holds the DVC md5 (also the digest) and the project-relative path.
MD5_TAG = "dvc.md5"
PATH_TAG = "path"


def dataset_record(name: str, path: Path, md5: str) -> Any:
    """An MLflow ``MetaDataset`` for the data at ``path`` whose DVC md5 is ``md5``."""
    import warnings

    from mlflow.data.dataset_source_registry import resolve_dataset_source
    from mlflow.data.meta_dataset import MetaDataset

    with warnings.catch_warnings():
        # MLflow registers its local source for two schemes ("" and "file") and warns that either fits.
        warnings.simplefilter("ignore", UserWarning)
        source = resolve_dataset_source(str(path))
    return MetaDataset(source=source, name=name, digest=md5)


def log_datasets(records: Iterable[tuple[Any, str]], tags: Mapping[str, str] | None = None) -> None:
    """Log ``(dataset, context)`` pairs as inputs of the active run, each tagged with its md5 and path."""
    import mlflow

    pairs = list(records)
    if not pairs:
        return
    mlflow.log_inputs(
        datasets=[dataset for dataset, _ in pairs],
        contexts=[context for _, context in pairs],
        tags_list=[
            {MD5_TAG: dataset.digest, PATH_TAG: dataset.source.uri, **(tags or {})} for dataset, _ in pairs
        ],
    )


def lineage_datasets(params: Params, project: Path, tags: Mapping[str, str]) -> list[tuple[Any, str]]:
    """The data artifacts among a stage run's lineage tags (``lineage.data_train.md5`` ...) as datasets."""
    layout = Layout(params, project)
    paths = layout.artifacts()
    records = []
    for artifact, (name, context) in DATA_ARTIFACTS.items():
        md5 = tags.get(f"{LINEAGE_PREFIX}{artifact}.md5")
        if md5:
            records.append((dataset_record(name, Path(layout.relative(paths[artifact])), md5), context))
    return records


def corpus_path(params: Params, project: Path) -> Path:
    """What the index is built from: ``index.corpus``, else the prepared benchmark's corpus."""
    config = params.index
    return resolve_path(config.corpus, project) if config.corpus else Layout(params, project).benchmark


def corpus_dataset(params: Params, project: Path) -> Any | None:
    """The indexed corpus as a dataset (its DVC md5 the digest); None when it cannot be hashed."""
    path = corpus_path(params, project)
    md5 = dvc_md5(path, project)
    if not md5:
        logger.warning("mlflow: no DVC md5 for the corpus %s; not logged as a dataset", path)
        return None
    try:
        shown = path.resolve().relative_to(Path(project).resolve())
    except ValueError:
        shown = path  # outside the project (an absolute index.corpus): its own path
    return dataset_record(CORPUS, shown, md5)
