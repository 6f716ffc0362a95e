#!/usr/bin/env bash
# One-shot set-up before the Airflow services start: metadata schema, the admin login, the pools the DAG
# uses, and the DVC workspace. Safe to re-run (every step is idempotent).
set -euo pipefail

airflow db migrate

# SimpleAuthManager reads logins from a JSON file; write the admin password given in the environment.
passwords_file=${AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE:?}
mkdir -p "$(dirname "$passwords_file")"
python - "$passwords_file" <<'PY'
import json, os, sys
with open(sys.argv[1], "w", encoding="utf-8") as stream:
    json.dump({"admin": os.environ["AIRFLOW_ADMIN_PASSWORD"]}, stream)
PY
chmod 600 "$passwords_file"

# DVC takes one lock per workspace: one slot. GPU tasks share the gpu pool (slots = GPUs on the workers).
airflow pools set colbert_dvc_workspace 1 "one dvc repro at a time in the colbert-pipeline workspace"
airflow pools set gpu "${COLBERT_GPU_SLOTS:-1}" "GPU tasks (one per GPU)"

/opt/colbert-pipeline/docker/init-workspace.sh
echo "airflow-init done"
