#!/usr/bin/env bash
# One-shot set-up before the Airflow services start: metadata schema, the admin login, the pools the DAG
# uses (pipeline.ops.services init: the same code tests/deploy runs), then the DVC workspace. Safe to re-run.
set -euo pipefail

python -m pipeline.ops.services init

/opt/colbert-pipeline/docker/init-workspace.sh
echo "airflow-init done"
