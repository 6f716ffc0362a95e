#!/usr/bin/env bash
# Make the /workspace volume a git + DVC checkout of the project the first time the stack starts.
# Stages run there (dvc repro), so DVC's cache, dvc.lock and the outputs survive container restarts.
# An existing workspace is left alone: it may hold a newer params.yaml or another data source.
set -euo pipefail
template=/opt/colbert-pipeline
workspace=${COLBERT_PIPELINE_WORKSPACE:-/workspace}

if [[ -f "$workspace/dvc.yaml" ]]; then
    echo "workspace $workspace already initialised; leaving it as it is"
    exit 0
fi
echo "initialising workspace $workspace from $template"
cp -a "$template"/. "$workspace"/
cd "$workspace"
git init -q
git config user.name "colbert-pipeline"
git config user.email "colbert-pipeline@localhost"
git add -A
git commit -q -m "workspace from the colbert-pipeline image"
echo "workspace ready at commit $(git rev-parse --short HEAD)"
