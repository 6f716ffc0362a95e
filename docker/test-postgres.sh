#!/usr/bin/env bash
# PostgreSQL for `make test-docker` (docker/compose.test.yaml): what the public postgres image and
# docker/postgres-init.sh do, from Debian's postgresql-15: the `airflow` and `mlflow` databases and roles.
set -euo pipefail
bin=/usr/lib/postgresql/15/bin
data=/var/lib/postgresql/data
chown -R postgres:postgres "$data"
if [[ ! -s $data/PG_VERSION ]]; then
    runuser -u postgres -- "$bin/initdb" -D "$data" -U postgres --auth-local=peer --auth-host=scram-sha-256 >/dev/null
    runuser -u postgres -- "$bin/pg_ctl" -D "$data" -o "-c listen_addresses='' -k /tmp" -w start >/dev/null
    runuser -u postgres -- psql -h /tmp -v ON_ERROR_STOP=1 -q \
        -c "CREATE ROLE airflow LOGIN PASSWORD '${POSTGRES_PASSWORD}'" -c "CREATE DATABASE airflow OWNER airflow" \
        -c "CREATE ROLE mlflow LOGIN PASSWORD '${COLBERT_PIPELINE_MLFLOW_DB_PASSWORD}'" \
        -c "CREATE DATABASE mlflow OWNER mlflow"
    runuser -u postgres -- "$bin/pg_ctl" -D "$data" -w stop >/dev/null
fi
exec runuser -u postgres -- "$bin/postgres" -D "$data" -h 127.0.0.1 -p "${COLBERT_PIPELINE_POSTGRES_PORT}" -k /tmp
