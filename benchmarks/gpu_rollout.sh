#!/usr/bin/env bash
# The GPU checks and measurements recorded in benchmarks/: run from the repository root on a CUDA host
# that has torch and transformers (pydantic and redis are installed from ./.whl if present). Writes $OUT.
set -uo pipefail
OUT="${OUT:-benchmarks/out}"
mkdir -p "$OUT"
if [ -d .whl ]; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
    export PYTHONPATH="/tmp/site:$PWD"
else
    export PYTHONPATH="$PWD"
fi
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
python3 -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)" | tee -a "$OUT/gpu.txt"
ARPO=(python3 -c "import sys; from arpo.cli import app; sys.argv[0] = 'arpo'; app()")
# Correctness on CUDA, fp32: the engine (dynamic cache), and the static path compiled into CUDA graphs
# against it (same tokens, log-probs and entropies within 1e-4).
ARPO_TEST_DEVICE=cuda ARPO_TEST_COMPILE=1 timeout 200 python3 -m pytest -q -p no:cacheprovider \
    tests/integration/test_rollout_engine.py tests/integration/test_rollout_static.py 2>&1 | tail -6 | tee "$OUT/tests.txt"
# Throughput: 0.5B and 1.5B shapes with Qwen2.5's vocabulary, bf16, batch 64, 256 new tokens.
timeout 240 "${ARPO[@]}" bench rollout --shape 0.5b --vocab-size 151936 --batch 64 --new-tokens 256 \
    --device cuda --dtype bfloat16 --repeats 3 --static-baseline --out "$OUT/rollout-gpu.jsonl"
timeout 150 "${ARPO[@]}" bench rollout --shape 1.5b --vocab-size 151936 --batch 64 --new-tokens 256 \
    --device cuda --dtype bfloat16 --repeats 1 --out "$OUT/rollout-gpu.jsonl"
