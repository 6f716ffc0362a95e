"""Pipeline stages. Each module has ``run(params, project) -> dict``: it reads its inputs by path, writes its
outputs by path (atomically) and logs to MLflow. The CLI, ``dvc.yaml`` and the Airflow DAG all call it the
same way (``colbert-pipeline <stage>``); none of them holds logic of its own.
"""

from __future__ import annotations

#: In dependency order. ``baseline`` scores the base model; DVC caches it until the base or benchmark changes.
STAGES: tuple[str, ...] = ("prepare", "baseline", "train", "evaluate", "index", "register")

#: After the pipeline, for people rather than production: ``quality`` scores the base and fine-tuned models
#: on a full test set, ``report`` turns every scored result into ``reports/quality.md`` and plots. The
#: Airflow DAG runs ``STAGES`` only; ``dvc.yaml`` and the CLI have these too.
REPORT_STAGES: tuple[str, ...] = ("quality", "report")
