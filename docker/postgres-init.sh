#!/usr/bin/env bash
# Runs once, when the Postgres volume is created: a second database and role for the MLflow backend store,
# beside Airflow's metadata database (POSTGRES_DB).
set -euo pipefail
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
    -v mlflow_password="$COLBERT_PIPELINE_MLFLOW_DB_PASSWORD" <<'SQL'
CREATE ROLE mlflow LOGIN PASSWORD :'mlflow_password';
CREATE DATABASE mlflow OWNER mlflow;
SQL
