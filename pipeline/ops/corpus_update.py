"""What the corpus DAG (``dags/colbert_corpus.py``) runs besides the stages: the check that the workspace's
model is the champion's, so that a corpus run updates the champion's index and nothing else.

A corpus run re-runs ``index`` and ``register`` only. The index stage encodes with the workspace's model; when
that is the champion's (the same DVC md5 as the champion's ``lineage.model.md5`` tag), register sees a corpus
update of the champion (:func:`pipeline.ops.promotion.corpus_update_of`) and promotes it without comparing
quality. A workspace whose model is another one (a later training run that did not win) would index and
register that model instead: the run refuses to start, saying which model is where.

Example (no champion registered: nothing to follow):
    >>> import tempfile
    >>> from pathlib import Path
    >>> from pipeline.ops.orchestration import Settings
    >>> project = Path(tempfile.mkdtemp())
    >>> _ = (project / "params.yaml").write_text("{}")
    >>> check_champion_model(Settings(workspace=project), f"sqlite:///{project}/mlruns.db")
    Traceback (most recent call last):
    pipeline.ops.orchestration.OrchestrationError: no champion of colbert-pipeline to update: ...
"""

from __future__ import annotations

from typing import Any

from pipeline.ops.orchestration import OrchestrationError, Settings
from pipeline.ops.promotion import CHAMPION
from pipeline.project.layout import Layout
from pipeline.project.params_file import load_params


def check_champion_model(settings: Settings, tracking_uri: str) -> dict[str, Any]:
    """The champion's version and model md5, checked against the workspace's model; else a clear error."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    from pipeline.ops import lineage

    params = load_params(settings.params_path, check_paths=False)
    name = params.register.model_name
    try:
        champion = MlflowClient(tracking_uri=tracking_uri).get_model_version_by_alias(name, CHAMPION)
    except MlflowException:
        raise OrchestrationError(
            f"no champion of {name} to update: run the pipeline DAG (colbert_pipeline) first"
        ) from None
    wanted = (champion.tags or {}).get("lineage.model.md5")
    model = Layout(params, settings.workspace).model
    here = lineage.dvc_md5(model, settings.workspace)
    if wanted is None or here != wanted:
        raise OrchestrationError(
            f"the workspace's model {model} (md5 {here}) is not champion v{champion.version}'s "
            f"(md5 {wanted}): "
            "a corpus run would index and register another model; check out the champion's run first "
            f"(colbert-pipeline reproduce champion --into DIR, then COLBERT_PIPELINE_WORKSPACE=DIR)"
        )
    return {
        "champion": str(champion.version),
        "model_md5": wanted,
        "workspace": str(settings.workspace),
    }
