#!/usr/bin/env bash
# `make test-docker`: build the image, start the compose stack (Celery profile) with host networking on
# 127.0.0.1, run one DAG run through it and ask the served champion a question. For a machine with no image
# registry: the base images are built here from Debian packages (debootstrap + docker import) and passed to
# docker/Dockerfile as build arguments; PostgreSQL and Redis run from a Debian-built stand-in image of the
# public ones compose names (docker/compose.test.yaml). Needs root. Starts its own dockerd (no bridge, no
# iptables, a private socket) and stops it, and everything it started, on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
started=$(date +%s)
log() { echo "test-docker [$(($(date +%s) - started)) s]: $*"; }

state=${COLBERT_TEST_DOCKER_STATE:-/var/lib/colbert-test-docker}
# `make test` sets COLBERT_TEST_DOCKER_OPTIONAL=1: where the machine cannot run this (not root, too little
# disk, no docker.io from apt-get, a daemon that does not start) it says why and passes, so the rest of the
# suite decides; `make test-docker` alone fails instead. On CI (CI=true, which .ci/run sets) only too little
# disk passes so: a CI machine is root with apt-get and can start dockerd, so any other reason is a broken
# machine, and a tier that did not run must not look green.
cannot_run() {  # cannot_run disk|machine WHY
    local kind=$1
    shift
    local ci=0
    [[ ${CI:-} =~ ^(1|true|yes|TRUE|True)$ ]] && ci=1
    if [[ ${COLBERT_TEST_DOCKER_OPTIONAL:-0} == 1 ]] && [[ $kind == disk || $ci == 0 ]]; then
        echo "test-docker: SKIPPED (not run, not passed): $*" >&2
        exit 0
    fi
    ((ci)) && [[ $kind != disk ]] && set -- "$* (CI=true: only too little disk may skip this tier on CI)"
    echo "test-docker: $*" >&2
    exit 1
}
[[ $(id -u) == 0 ]] || cannot_run machine "needs root (dockerd, debootstrap); run make test-docker as root"
# Room: a cold run (nothing kept yet) grew the kept state to 27 GB here (the 6.7 GB image, its layers, the
# build cache, the base images); a warm one reuses what is kept.
existing=$state
while [[ ! -e $existing ]]; do existing=$(dirname "$existing"); done
free_gb=$(df --output=avail -BG "$existing" | tail -1 | tr -dc 0-9)
kept_gb=$( (du -s -BG "$state" 2>/dev/null || true) | cut -f1 | tr -dc 0-9)
need_gb=${COLBERT_TEST_DOCKER_ROOM_GB:-32}
((free_gb + ${kept_gb:-0} >= need_gb)) \
    || cannot_run disk "${free_gb} GB free under $existing (${kept_gb:-0} GB already kept in $state); a cold run needs about ${need_gb} GB (COLBERT_TEST_DOCKER_ROOM_GB)"
missing=()
for tool in dockerd docker debootstrap docker-compose; do command -v "$tool" >/dev/null || missing+=("$tool"); done
if ((${#missing[@]})); then
    log "installing docker.io debootstrap docker-compose (apt-get; missing: ${missing[*]})"
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker.io debootstrap docker-compose \
        >/dev/null; } || cannot_run machine "apt-get could not install docker.io debootstrap docker-compose"
fi

# A docker CLI that builds with BuildKit by itself (a newer CLI without the buildx plugin cannot).
docker() { "${DOCKER_CLI:-$( [[ -x /usr/bin/docker ]] && echo /usr/bin/docker || command -v docker)}" "$@"; }
# Kept after the run: the build log, compose's output and, when it fails, every service's whole log.
logs=${COLBERT_TEST_DOCKER_LOGS:-/tmp/colbert-test-docker-logs}
run=$(mktemp -d /tmp/colbert-test-docker.XXXXXX)
mkdir -p "$state"
rm -rf "$logs" && mkdir -p "$logs"
export DOCKER_HOST="unix://$run/docker.sock"
project=colbert-test
compose=(docker-compose -p "$project" --project-directory "$run" -f "$run/compose.yaml" -f "$run/compose.test.yaml"
    --profile celery)

dockerd --bridge=none --iptables=false --ip-masq=false --host "$DOCKER_HOST" --data-root "$state/docker" \
    --exec-root "$run/exec" --pidfile "$run/dockerd.pid" >"$run/dockerd.log" 2>&1 &
dockerd_pid=$!
cleanup() {
    status=$?
    if [[ $status != 0 && -f "$run/compose.yaml" ]]; then
        # Each service on its own: one interleaved tail hid the service that failed behind the chatty ones.
        for service in $("${compose[@]}" --profile serve config --services 2>/dev/null); do
            "${compose[@]}" --profile serve logs --no-color "$service" >"$logs/$service.log" 2>&1 || true
            echo "--- $service: last 15 lines (all of it: $logs/$service.log)"
            tail -15 "$logs/$service.log"
        done
    fi
    [[ -f "$run/compose.yaml" ]] && "${compose[@]}" --profile serve down -v --remove-orphans -t 20 >/dev/null 2>&1
    # The stateless stage's two servers (started below), by their pids. Each dies of the signal, so its
    # `wait` returns non-zero: under `set -e` that would end this cleanup before dockerd is stopped.
    for pid in ${git_daemon_pid:-} ${moto_pid:-}; do
        kill "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    kill "$dockerd_pid" 2>/dev/null && wait "$dockerd_pid" 2>/dev/null
    umount "$run/exec/netns/default" 2>/dev/null || true
    rm -rf "$run"
    log "done (exit status $status)"
}
trap cleanup EXIT
for _ in $(seq 60); do docker info >/dev/null 2>&1 && break; kill -0 "$dockerd_pid" 2>/dev/null || break; sleep 1; done
# A daemon that cannot start here (no overlay file system or cgroups in a container, say) is the machine's
# limit, like root or disk: reported with its log, not taken for a failure of the image or the stack.
docker info >/dev/null 2>&1 || { tail -20 "$run/dockerd.log"; cannot_run machine "dockerd did not start (its log above)"; }
log "dockerd up (pid $dockerd_pid)"
# Builds and containers descend from dockerd/containerd: a lower CPU priority leaves the machine usable.
renice -n "${COLBERT_TEST_DOCKER_NICE:-10}" -p "$dockerd_pid" $(pgrep -P "$dockerd_pid") >/dev/null || true

# -- local base images ----------------------------------------------------------------------------------
mirror=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
mirror=${mirror:-http://deb.debian.org/debian}
debian_image() {  # name, packages: a bookworm root file system from the mirror apt uses, imported as an image
    local name=$1 packages=$2
    docker image inspect "$name" >/dev/null 2>&1 && return
    log "debootstrap bookworm ($packages) from $mirror -> $name"
    rm -rf "$run/rootfs"
    debootstrap --variant=minbase --include="$packages" bookworm "$run/rootfs" "$mirror" >"$run/debootstrap.log" 2>&1 \
        || { tail -20 "$run/debootstrap.log"; exit 1; }
    tar -C "$run/rootfs" -c . | docker import - "$name" >/dev/null
    rm -rf "$run/rootfs"
}
debian_image colbert-test-python:bookworm "python3,ca-certificates"
debian_image colbert-test-services:bookworm "postgresql-15,redis-server"
if ! docker image inspect colbert-test-uv:local >/dev/null 2>&1; then
    mkdir -p "$run/uv" && cp "$(command -v uv || echo "$HOME/.local/bin/uv")" "$run/uv/uv"
    printf 'FROM scratch\nCOPY uv /uv\n' | docker build -q -t colbert-test-uv:local -f - "$run/uv" >/dev/null
fi

# -- the image: base images as build arguments, the commit it is built from (an image holds no .git, so a
# stateless task in it matches its code with a run's by this commit; a dirty tree's changes are not in it), the host's CA bundle as a build secret (test build only) ----
log "building colbert-pipeline:test"
build_started=$(date +%s)
DOCKER_BUILDKIT=1 docker build --progress plain --network host -f docker/Dockerfile -t colbert-pipeline:test \
    --build-arg PYTHON_IMAGE=colbert-test-python:bookworm --build-arg UV_IMAGE=colbert-test-uv:local \
    --build-arg COLBERT_PIPELINE_COMMIT="$(git rev-parse HEAD)" \
    --secret id=ca,src=/etc/ssl/certs/ca-certificates.crt . >"$logs/build.log" 2>&1 \
    || { tail -40 "$logs/build.log"; exit 1; }
steps=$(grep -oE '^#[0-9]+ \[' "$logs/build.log" | sort -u | wc -l)
cached=$(grep -cE '^#[0-9]+ CACHED$' "$logs/build.log" || true)
log "image built in $(($(date +%s) - build_started)) s ($cached of $steps build steps cached): \
$(docker image inspect -f '{{.Size}}' colbert-pipeline:test | awk '{printf "%.1f GB", $1/1e9}')"
# The image this build replaced, untagged now, is dropped, and the build cache is bounded (least recently used
# first): each change of uv.lock left another ~7 GB venv layer, and the kept state had reached 37 GB.
docker image prune -f >/dev/null
docker builder prune -f --keep-storage "${COLBERT_TEST_DOCKER_CACHE:-20GB}" >/dev/null
# `make test` builds the image this way while pytest runs (the build mostly waits on downloads and disk),
# then runs the whole script after pytest, its build all cached.
if [[ ${1:-} == --build-only ]]; then
    log "built (--build-only: no stack)"
    exit 0
fi

# -- the stack, host networking, every service on 127.0.0.1 and free ports ------------------------------
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
export COLBERT_PIPELINE_IMAGE=colbert-pipeline:test AIRFLOW__CORE__EXECUTOR=CeleryExecutor
export COLBERT_PIPELINE_BIND_HOST=127.0.0.1 COLBERT_PIPELINE_SCHEDULE=none
export COLBERT_PIPELINE_POSTGRES_PORT=$(free_port) COLBERT_PIPELINE_REDIS_PORT=$(free_port)
export AIRFLOW__API__PORT=$(free_port) COLBERT_PIPELINE_MLFLOW_PORT=$(free_port) COLBERT_PIPELINE_SERVE_PORT=$(free_port)
export COLBERT_PIPELINE_MODEL_NAME=colbert-docker
export COLBERT_PIPELINE_ADMIN_PASSWORD=$(python3 -c 'import secrets; print(secrets.token_urlsafe(12))')
# What compose's network names would give: every address is 127.0.0.1 on the host network.
export COLBERT_PIPELINE_POSTGRES_HOST=127.0.0.1 COLBERT_PIPELINE_REDIS_URL="redis://127.0.0.1:$COLBERT_PIPELINE_REDIS_PORT/0"
export COLBERT_PIPELINE_AIRFLOW_API_URL="http://127.0.0.1:$AIRFLOW__API__PORT"
export MLFLOW_TRACKING_URI="http://127.0.0.1:$COLBERT_PIPELINE_MLFLOW_PORT"
# The compose file is copied below: the DAG folder it mounts is this checkout's, by absolute path.
export COLBERT_PIPELINE_DAGS=$PWD/dags
# Compose 1.29 predates the top-level `name:` (the project is named with -p); no GPU here to reserve.
# Host networking publishes nothing (compose 1.29 refuses `ports:` with it): every server listens on 127.0.0.1.
sed -e '/^name: colbert-pipeline$/d' -e '/deploy: \*gpu-reservation/d' -e '/^    ports:$/d' \
    -e '/^      - "127\.0\.0\.1:/d' docker/compose.yaml >"$run/compose.yaml"
cp docker/postgres-init.sh docker/test-postgres.sh "$run/"
cp docker/compose.test.yaml "$run/compose.test.yaml"
# Every service's env_file (Compose refuses a missing one), as a user's first `make docker/.env` makes it: the
# example, all defaults; the settings above come from this shell.
cp docker/.env.example "$run/.env"
log "starting the stack"
"${compose[@]}" up -d >"$logs/up.log" 2>&1 || { cat "$logs/up.log"; exit 1; }
# Every wait of the driver is bounded; a stuck run fails the script with the services' logs.
wait_s=${COLBERT_TEST_DOCKER_WAIT:-1200}
.venv/bin/python tests/deploy/drive_stack.py run --api "$COLBERT_PIPELINE_AIRFLOW_API_URL" --timeout "$wait_s" \
    --password "$COLBERT_PIPELINE_ADMIN_PASSWORD" --mlflow "$MLFLOW_TRACKING_URI" --model "$COLBERT_PIPELINE_MODEL_NAME"
log "serving the champion"
"${compose[@]}" --profile serve up -d serve >>"$logs/up.log" 2>&1 || { cat "$logs/up.log"; exit 1; }
.venv/bin/python tests/deploy/drive_stack.py serve --serve "http://127.0.0.1:$COLBERT_PIPELINE_SERVE_PORT" --timeout "$wait_s"

# -- one stage of a stateless run as a container (what a DockerOperator / KubernetesPodOperator task runs) --
# It shares nothing with the host but three services on 127.0.0.1: a git daemon serving a bare copy of this
# checkout's HEAD as `main`, moto's S3 server (the DVC remote) and the stack's MLflow server. No clone and no
# mount in it: settings name the services (pipeline/ops/task_origin.py). Then the run's next stage runs on the
# host, in a clone of the served repository: it must pull what the container pushed.
log "a stateless stage as a container"
served=$run/served
git init -q --bare "$served/project.git"
git -C "$served/project.git" symbolic-ref HEAD refs/heads/main
git push -q "$served/project.git" HEAD:refs/heads/main
git_port=$(free_port)
s3_port=$(free_port)
git daemon --base-path="$served" --export-all --enable=receive-pack --listen=127.0.0.1 --port="$git_port" \
    --reuseaddr "$served" >"$logs/git-daemon.log" 2>&1 &
git_daemon_pid=$!
.venv/bin/moto_server -H 127.0.0.1 -p "$s3_port" >"$logs/moto.log" 2>&1 &
moto_pid=$!
endpoint="http://127.0.0.1:$s3_port"
git_url="git://127.0.0.1:$git_port/project.git"
.venv/bin/python tests/deploy/container_task.py bucket --endpoint "$endpoint"
for _ in $(seq 50); do git ls-remote "$git_url" >/dev/null 2>&1 && break; sleep 0.2; done
stateless_run=container-$(date +%s)
mapfile -t sets < <(.venv/bin/python tests/deploy/container_task.py sets)
task_env=(COLBERT_PIPELINE_GIT_REMOTE="$git_url" COLBERT_PIPELINE_DVC_REMOTE_URL=s3://runs/dvc
    COLBERT_PIPELINE_DVC_REMOTE_OPTIONS="endpointurl=$endpoint region=us-east-1"
    AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test MLFLOW_TRACKING_URI="$MLFLOW_TRACKING_URI")
task_started=$(date +%s)
docker run --rm --network host "${task_env[@]/#/--env=}" colbert-pipeline:test \
    colbert-pipeline task prepare --run "$stateless_run" "${sets[@]}" >"$logs/task-container.log" 2>&1 \
    || { tail -40 "$logs/task-container.log"; exit 1; }
log "task prepare of $stateless_run ran in a container in $(($(date +%s) - task_started)) s"
.venv/bin/python tests/deploy/container_task.py check --git "$git_url" --run "$stateless_run" \
    --start "$(git rev-parse HEAD)" --endpoint "$endpoint" --stages prepare
git clone -q "$git_url" "$run/host-clone"
repo=$PWD
task_started=$(date +%s)
(cd "$run/host-clone" && env "${task_env[@]}" "$repo/.venv/bin/colbert-pipeline" task baseline \
    --run "$stateless_run" "${sets[@]}") >"$logs/task-host.log" 2>&1 || { tail -40 "$logs/task-host.log"; exit 1; }
log "task baseline of $stateless_run ran on the host in $(($(date +%s) - task_started)) s, from the container's push"
.venv/bin/python tests/deploy/container_task.py check --git "$git_url" --run "$stateless_run" \
    --start "$(git rev-parse HEAD)" --endpoint "$endpoint" --stages prepare baseline
log "passed"
