# Everything installs from uv.lock into .venv; nothing reaches the Hugging Face Hub.
SHELL := /bin/bash
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false
UV ?= $(shell command -v uv 2>/dev/null || echo $(HOME)/.local/bin/uv)
VENV := .venv
PY := $(VENV)/bin/python
# dvc.yaml's stages call `colbert-pipeline`: the project's own venv comes first on PATH.
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)

.PHONY: install run test test-fast lint format clean quality quality-scifact quality-nfcorpus quality-arguana

$(UV):
	python3 -m pip install --user --quiet uv

$(VENV)/.installed: pyproject.toml uv.lock | $(UV)
	$(UV) sync --frozen
	touch $@

install: $(VENV)/.installed

# The main job: every stage on the offline sample (prepare, baseline, train, evaluate, index, register).
run: install
	$(VENV)/bin/dvc repro
	$(VENV)/bin/colbert-pipeline summary

# Real-data quality (configs/*.yaml; ../shared/data beside the checkout): the pipeline's fine-tuned ColBERT
# against the dense and untrained baselines and, unless PEER=0, PyLate 1.6 trained identically
# (bench/quality_peer.py installs it into bench/.peer-venv). Results and report: reports/beir/.
CP := $(VENV)/bin/colbert-pipeline
PEER ?= 1

quality: quality-scifact quality-nfcorpus quality-arguana

quality-scifact quality-nfcorpus: quality-%: install
	$(CP) prepare --config configs/$*.yaml
	$(CP) train --config configs/$*.yaml
	$(CP) quality --config configs/$*.yaml
	if [ "$(PEER)" = 1 ]; then $(PY) bench/quality_peer.py --config configs/$*.yaml; fi
	$(CP) report --config configs/$*.yaml

# Zero-shot: scores the SciFact-trained models (run quality-scifact first).
quality-arguana: install
	$(CP) quality --config configs/arguana.yaml
	if [ "$(PEER)" = 1 ]; then $(PY) bench/quality_peer.py --config configs/arguana.yaml; fi
	$(CP) report --config configs/arguana.yaml

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/ruff check --select AIR3 dags/

format: install
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

# Everything: unit tests, the package's docstring examples and the slow end-to-end tiers.
test: lint
	$(VENV)/bin/pytest

# The same without the slow tiers (end-to-end runs, real servers): a few minutes.
test-fast: lint
	$(VENV)/bin/pytest -m "not slow"

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
