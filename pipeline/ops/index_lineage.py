"""Which model encoded a registered index: the registry refuses an index built with another model, and tags
the index stage's run with the version that serves it.

Both read the index stage's MLflow runs by the index's DVC md5 (``lineage.index.md5``): the run that built an
index records the model md5 it encoded with (``lineage.model.md5``).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

logger = logging.getLogger(__name__)


def link_index_run(client: Any, experiment: str, lineage: Mapping[str, str], name: str, version: str) -> None:
    """Tag the index stage run that built this index with the model version that serves it (best effort)."""
    index_md5 = lineage.get("lineage.index.md5")
    if not index_md5:
        return
    try:
        exp = client.get_experiment_by_name(experiment)
        if exp is None:
            return
        runs = client.search_runs(
            [exp.experiment_id],
            filter_string=f"tags.stage = 'index' and tags.`lineage.index.md5` = '{index_md5}'",
            max_results=5,
        )
        for run in runs:
            client.set_tag(run.info.run_id, "registered_model_version", f"{name}/{version}")
    except Exception as error:  # lineage links are a convenience: never fail a registration on them
        logger.warning("registry: could not tag the index run with %s/%s: %s", name, version, error)


def check_index_matches_model(client: Any, experiment: str, lineage: Mapping[str, str]) -> str | None:
    """Refuse an index built with another model: the index run's input model md5 must be this model's.

    Returns the md5 of the model that encoded the index when the index run is on record, else None.
    """
    index_md5, model_md5 = lineage.get("lineage.index.md5"), lineage.get("lineage.model.md5")
    if not index_md5 or not model_md5:
        return None
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return None
    runs = client.search_runs(
        [exp.experiment_id],
        filter_string=f"tags.stage = 'index' and tags.`lineage.index.md5` = '{index_md5}'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    if not runs:
        logger.warning("registry: no index run on record for index md5 %s; cannot check its model", index_md5)
        return None
    encoded_with = runs[0].data.tags.get("lineage.model.md5")
    if encoded_with and encoded_with != model_md5:
        raise ValueError(
            f"the index (md5 {index_md5}) was built with model md5 {encoded_with}, but the model to register "
            f"has md5 {model_md5}: re-run the index stage so the served index matches the model"
        )
    return encoded_with
