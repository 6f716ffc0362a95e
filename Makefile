# Everything installs from uv.lock into .venv; nothing reaches the Hugging Face Hub.
SHELL := /bin/bash
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false
# mkdocs-material's banner about MkDocs 2.0 on every build
export NO_MKDOCS_2_WARNING := 1
UV ?= $(shell command -v uv 2>/dev/null || echo $(HOME)/.local/bin/uv)
VENV := .venv
PY := $(VENV)/bin/python
# dvc.yaml's stages call `colbert-pipeline`: the project's own venv comes first on PATH.
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)

.PHONY: install services run docs docs-serve docs-assets docs-screenshots test test-fast test-repro test-deploy test-faults test-docker lint format clean quality quality-scifact quality-nfcorpus quality-arguana bench-index bench-library bench-train bench-train-defaults bench-quality bench-pylate-tests bench-serve bench-shards bench-updates bench-growth bench-sweep bench-limit bench-precision-seeds bench-render

$(UV):
	python3 -m pip install --user --quiet uv

# Every extra (`all`): the core library, the MLOps stack (`mlops`), Airflow (`airflow`) and the Postgres and
# Celery/Redis drivers of the deployed platform (`deploy`: tests/deploy, docker/).
# --compile-bytecode: every stage, DVC and Airflow task is a fresh Python process; where
# PYTHONDONTWRITEBYTECODE is set (as on this project's machines) each one otherwise compiles its imports
# again (`import pipeline.training.trainer, pipeline.models, mlflow`: 17 s, 7.4 s with the .pyc files).
$(VENV)/.installed: pyproject.toml uv.lock pipeline/__init__.py | $(UV)
	$(UV) sync --frozen --all-extras --compile-bytecode
	touch $@

install: $(VENV)/.installed

# The deploy tier (tests/deploy) runs PostgreSQL (initdb, postgres, psql) and redis-server from the machine;
# tests/ops/test_docker.py validates docker/compose.yaml with docker-compose (no daemon needed); the deploy
# tier's UI test opens MLflow's and Airflow's pages in headless Chromium (with a font to render them).
# As root (CI), install what is missing with apt-get; otherwise say what to install.
DEPLOY_BINARIES := initdb postgres psql redis-server docker-compose chromium
services:
	@missing=""; for b in $(DEPLOY_BINARIES); do command -v $$b >/dev/null || ls /usr/lib/postgresql/*/bin/$$b >/dev/null 2>&1 || missing="$$missing $$b"; done; \
	if [ -n "$$missing" ]; then \
	  packages=""; case "$$missing" in *redis-server*) packages="redis-server";; esac; \
	  case "$$missing" in *initdb*|*postgres*|*psql*) packages="$$packages postgresql";; esac; \
	  case "$$missing" in *docker-compose*) packages="$$packages docker-compose";; esac; \
	  case "$$missing" in *chromium*) packages="$$packages chromium fonts-dejavu-core";; esac; \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "make services: installing$$packages for the tests (missing:$$missing)"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$packages >/dev/null; \
	  else echo "make services: the tests need$$missing: apt-get install$$packages" >&2; exit 1; fi; \
	fi

# The deployed stack's settings: docker/compose.yaml reads docker/.env into every service (env_file), and Compose
# refuses a missing one. The first time, the documented example (every setting commented out: the defaults)
# becomes it; an existing docker/.env is never overwritten. Then: docker compose -f docker/compose.yaml up -d
docker/.env:
	cp docker/.env.example $@

# The main job: every stage on the offline sample (prepare, baseline, train, evaluate, index, register).
run: install
	$(VENV)/bin/dvc repro
	$(VENV)/bin/colbert-pipeline summary

# Real-data quality (configs/*.yaml; ../shared/data beside the checkout): the pipeline's fine-tuned ColBERT
# against the dense and untrained baselines and, unless PEER=0, PyLate 1.6 trained identically
# (`python -m bench.quality`, which installs it into bench/.peer-venv). Results and report: reports/beir/.
CP := $(VENV)/bin/colbert-pipeline
PEER ?= 1

quality: quality-scifact quality-nfcorpus quality-arguana

quality-scifact quality-nfcorpus: quality-%: install
	$(CP) prepare --config configs/$*.yaml
	$(CP) train --config configs/$*.yaml
	$(CP) quality --config configs/$*.yaml
	if [ "$(PEER)" = 1 ]; then $(PY) -m bench.quality --config configs/$*.yaml; fi
	$(CP) report --config configs/$*.yaml

# Zero-shot: scores the SciFact-trained models (run quality-scifact first).
quality-arguana: install
	$(CP) quality --config configs/arguana.yaml
	if [ "$(PEER)" = 1 ]; then $(PY) -m bench.quality --config configs/arguana.yaml; fi
	$(CP) report --config configs/arguana.yaml

# Benchmarks against PyLate 1.6 (bench/, a package; PyLate goes into bench/.peer-venv on first use). Each
# writes the committed record it is named for into bench/records/; long (minutes to an hour on 2 cores): run
# them on a quiet machine. Arguments replace the defaults, e.g.
#   make bench-index BENCH_ARGS="--datasets scifact --max-docs 500 --max-queries 50"
# bench-library: the library at its defaults against PyLate 1.6 at its own, same run (all of SciFact, 5,183
# documents, 100 queries, one round: 38 minutes on 2 cores; BENCH_ARGS="--max-docs 2000 --rounds 2" for the
# smaller two-round run).
# bench-quality: PyLate trained and scored on DATASET's test set, into bench/records/peer/runs/<DATASET>
# (quality-* above run the same module into reports/beir/ for the quality report).
# bench-pylate-tests: PyLate's own tests against pipeline, from an unpacked PyLate sdist: PYLATE=DIR.
# bench-serve: `colbert-pipeline serve` under load on loopback (a tiny SciFact champion, cached in
# bench/.cache/serve/): latency at concurrency 1, 4 and 16 with and without batching, RSS over up to 10,000 requests (a time bound may come first).
# bench-shards: an index built from 2 shards of SciFact's encoding (1,000 documents) against the unsharded build:
# the same documents, recall@10 against exact MaxSim at three PLAID settings (index.shards).
# bench-updates: an index updated in place against a rebuild, through the index stage (1,050 SciFact documents:
# 20 added, 10 removed, 5 changed), and recall@10 over five updates replacing half the corpus against fresh
# builds (docs/indexes.md, "Updating an index in place"); each about 8-20 min on 2 busy cores.
# bench-growth: build, disk, peak RSS, QPS and one-query latency at 5,000, 17,490 (every real document) and
# 25,000 documents (synthetic above the real ones), ours and PyLate at their PLAID defaults beside brute force
# (docs/benchmarks.md, "Growth with the corpus"); about 2 hours on 2 cores, mostly PyLate's builds. It
# refuses sizes that would not fit in memory before it starts.
# bench-sweep: PyLate's PLAID over 49 search settings (n_ivf_probe 1..64 x n_full_scores 256..16,384) and both
# libraries' exact search, beside ours as PyLate, tuned and at its defaults (SciFact, 100 queries; 85 min on 2 cores).
# bench-limit: encoding and exact MaxSim as a share of this machine's matmul GFLOP/s and read bandwidth (~3 min).
# bench-precision-seeds: the train stage in fp32 and bf16 over 3 seeds, scored on SciFact's test set: the
# record behind training's CPU precision default (about an hour on 2 cores; resumes where it stopped).
# bench-train-defaults: the train stage at precision auto (bf16 on a bf16-native CPU) against PyLate's trainer
# at its own fp32, the difference declared (bench/records/train_throughput_defaults.json; ~10 min).
# bench-render: every record as Markdown tables.
DATASET ?= scifact
bench-index: install
	$(PY) -m bench.index $(or $(BENCH_ARGS),--peer --rss --kinds plaid --record bench/records/index_bench.json)

bench-library: install
	$(PY) -m bench.index.library $(or $(BENCH_ARGS),--max-docs 5183 --rounds 1 --record bench/records/library_defaults_scifact.json)

bench-train: install
	$(PY) -m bench.train $(or $(BENCH_ARGS),--peer --steps 8 --warmup 2 --repeats 2 --output bench/records/train_throughput.json)

bench-train-defaults: install
	$(PY) -m bench.train $(or $(BENCH_ARGS),--peer --defaults --steps 8 --warmup 2 --repeats 2)

bench-quality: install
	$(PY) -m bench.quality --config configs/$(DATASET).yaml --set quality.output=bench/records/peer $(BENCH_ARGS)

bench-pylate-tests: install
	@test -n "$(PYLATE)" || { echo "make bench-pylate-tests PYLATE=DIR: DIR is a PyLate checkout or unpacked sdist" >&2; exit 2; }
	$(PY) -m bench.pylate_tests $(PYLATE) $(BENCH_ARGS)

bench-serve: install
	$(PY) -m bench.serve $(or $(BENCH_ARGS),--record bench/records/serve_load.json)

bench-shards: install
	$(PY) -m bench.shards $(or $(BENCH_ARGS),--record bench/records/index_shards.json)

bench-updates: install
	$(PY) -m bench.index.updates --time --record bench/records/index_update_time.json $(BENCH_ARGS)
	$(PY) -m bench.index.updates --recall --record bench/records/index_update_recall.json $(BENCH_ARGS)

bench-growth: install
	$(PY) -m bench.index.growth $(or $(BENCH_ARGS),--record bench/records/index_growth.json)

bench-sweep: install
	$(PY) -m bench.index.sweep $(or $(BENCH_ARGS),--record bench/records/index_sweep_scifact.json)

bench-limit: install
	$(PY) -m bench.limit $(or $(BENCH_ARGS),--record bench/records/machine_limit.json)

bench-precision-seeds: install
	$(PY) -m bench.train.precision_seeds $(BENCH_ARGS)

bench-render: install
	$(PY) -m bench.render $(BENCH_ARGS)

# A real-data run as a DVC experiment (prepare -> baseline -> train -> evaluate, and quality on the full test
# set, with configs/<name>.yaml; its runs go to reports/experiments/<name>, as reports/beir/ is git's):
# `dvc exp show` lists it with its params and metrics, `colbert-pipeline experiments` tabulates the runs,
# `dvc metrics diff <exp> <exp>` compares two. A trial adds params and a name:
#   make exp-nfcorpus EXP_SET="train.max_steps=240 quality.exact=false" EXP_NAME=nfcorpus-240steps
# `dvc exp run` edits params.yaml in place and leaves it so: the next experiment would inherit this one's
# params. So it starts only from the committed params.yaml and puts it back after (the exp ref keeps them).
# ArguAna is zero-shot: its experiment trains with SciFact's config and scores ArguAna's test set.
EXP_CONFIGS_arguana := configs/scifact.yaml configs/arguana.yaml
exp-%: install
	@git diff --quiet HEAD -- params.yaml || { echo "params.yaml differs from HEAD (a finished experiment's, or your edits): an experiment would inherit them; commit them or 'git checkout params.yaml' first" >&2; exit 2; }
	$(VENV)/bin/dvc exp run $$($(CP) experiments --set-arguments $(or $(EXP_CONFIGS_$*),configs/$*.yaml) --set quality.output=reports/experiments/$* $(foreach s,$(EXP_SET),--set $(s))) -n $(or $(EXP_NAME),$*-$$(date +%Y%m%d-%H%M%S)) evaluate quality; \
	  status=$$?; git checkout -- params.yaml; exit $$status

# The docs site (mkdocs.yml, docs/): built offline and strict into site/; its benchmark tables and params
# reference are rendered from bench/records/, reports/ and the params schema while it builds (docs/hooks.py).
# docs-assets: the README's parts that MkDocs cannot render (the headline table and the quality plot), from the
# same records; tests/docs/test_docs.py fails when they are stale.
docs: install
	$(VENV)/bin/mkdocs build --strict

docs-serve: install
	$(VENV)/bin/mkdocs serve --strict -a 127.0.0.1:8000

docs-assets: install
	$(PY) docs/hooks.py readme

# docs/assets' two UI screenshots (MLflow's model page, Airflow's grid): the deploy tier's platform, its first
# DAG run, then headless Chromium on both servers (tests/deploy/test_deploy.py; 7 min of pytest on 2 busy cores).
docs-screenshots: install services
	COLBERT_DEPLOY_REQUIRED=1 COLBERT_DEPLOY_SCREENSHOTS=docs/assets $(VENV)/bin/pytest -p no:cacheprovider \
	  tests/deploy/test_deploy.py -k "a_run_trains_on_the_gpu_worker or the_uis_show"

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/ruff check --select AIR3 dags/

format: install
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

# Unit tests (tests/docs builds the docs site with `mkdocs build --strict` and checks its figures against
# bench/records/), the package's docstring examples, the slow end-to-end tier, the fault-injection suite
# (tests/faults: stages SIGKILLed under dvc repro, the MLflow server killed during register) and the deploy tier
# (tests/deploy: PostgreSQL, Redis, MLflow, Airflow on Celery workers as processes; `services` installs what
# is missing with apt-get as root). COLBERT_DEPLOY_REQUIRED: the deploy tier fails, never skips, here.
# Two xdist workers, one test module each at a time (module fixtures stay whole), the longest modules first
# (conftest.py orders them): one worker alone kept ~1 of the 2 cores busy (44 min wall, 40 min CPU on a quiet
# machine), and the deploy tier mostly waits on services. Then `test-docker` (the image built and the compose
# stack run for real, ~6 minutes cold): as root with room on disk; elsewhere it prints why it did not run (on
# CI, CI=true, only too little disk may skip it). On CI any other skip fails too (conftest.py's CI_MAY_SKIP).
# Its image is built while pytest runs, at a lower CPU priority (`--build-only`: mostly downloads and disk;
# 106 s here with the base layers kept, minutes cold), so the tier after pytest finds its build cached; its
# output is .test-results/docker-build.log, and a failed build fails the tier when it builds again.
# The last lines summarise each tier (tests/tier_summary.py, from pytest's junit XML and the docker output).
RESULTS := .test-results
test: lint services
	@mkdir -p $(RESULTS); rm -f $(RESULTS)/pytest.xml $(RESULTS)/docker.log $(RESULTS)/docker-build.log; \
	docker_status=; \
	COLBERT_TEST_DOCKER_OPTIONAL=1 nice -n 10 docker/test-docker.sh --build-only \
	  >$(RESULTS)/docker-build.log 2>&1 & build=$$!; trap 'kill $$build 2>/dev/null; wait $$build' INT TERM; \
	COLBERT_DEPLOY_REQUIRED=1 $(VENV)/bin/pytest -m "not repro" -n 2 --dist loadscope --no-loadscope-reorder \
	  --durations=40 --junitxml=$(RESULTS)/pytest.xml; status=$$?; \
	wait $$build; echo "the image, built while pytest ran (exit status $$?):"; tail -3 $(RESULTS)/docker-build.log; \
	if [ $$status = 0 ]; then \
	  COLBERT_TEST_DOCKER_OPTIONAL=1 docker/test-docker.sh 2>&1 | tee $(RESULTS)/docker.log; \
	  docker_status=$${PIPESTATUS[0]}; status=$$docker_status; \
	fi; \
	$(PY) tests/tier_summary.py --junit $(RESULTS)/pytest.xml --docker-log $(RESULTS)/docker.log \
	  $${docker_status:+--docker-status $$docker_status}; \
	exit $$status

# Reproducibility (not in `test`: ~15 minutes on 2 cores): two workspaces of one commit give identical DVC
# hashes, a forced re-run gives the recorded ones, a changed input byte re-runs prepare, trials are experiments.
test-repro: lint
	$(VENV)/bin/pytest -m repro

# The deploy tier alone (also part of `test`): the platform as processes, driven over HTTP.
test-deploy: lint services
	COLBERT_DEPLOY_REQUIRED=1 $(VENV)/bin/pytest -m deploy

# The fault-injection suite alone (also part of `test`).
test-faults: lint
	$(VENV)/bin/pytest -m faults

# The image built and the compose stack started for real (root; starts and stops its own dockerd, builds the
# base images from Debian packages): one DAG run through the stack, then the champion served. Also the last
# step of `test`, which lets it pass, saying why, where the machine cannot run it (not root, under ~32 GB
# free, no docker.io from apt-get, a daemon that does not start); on CI (CI=true) only for too little disk.
test-docker: install
	docker/test-docker.sh

# The same without the slow tier (end-to-end runs, real servers): a few minutes.
test-fast: lint
	$(VENV)/bin/pytest -m "not slow and not deploy and not faults and not repro"

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache $(RESULTS)
