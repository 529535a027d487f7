#!/usr/bin/env bash
# torch3's device call (bench/results/torch-expect-h200.md): tests/gpu/test_torch*.py (the
# expect-from-CUDA cases with the Qwen2.5-3B timing, the gloo hooks at 2 and 4 ranks) plus
# test_cuda_backend.py, logs under $OUT. It runs from a bundle folder (.dev/torch3, carried)
# holding this script as run.sh, libweightsum.so and libweightsum_cuda.so built from the tree,
# lib/libjansson.so.4, lib-fallback/libcrypto.so.3, gpu_tensor_hash.py, and copies of python/,
# examples/, tests/gpu, tests/py and tests/vectors.
set -uo pipefail
D=$(cd "$(dirname "$0")" && pwd)
cd "$D"
export LD_LIBRARY_PATH=$D/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
ldconfig -p | grep -q 'libcrypto.so.3 ' || export LD_LIBRARY_PATH=$LD_LIBRARY_PATH:$D/lib-fallback
export WEIGHTSUM_LIB=$D/libweightsum.so WEIGHTSUM_CUDA_LIB=$D/libweightsum_cuda.so
export SGLANG_GPU_TENSOR_HASH=$D/gpu_tensor_hash.py
export PYTHONPATH=$D/python:$D/tests/gpu PYTHONUNBUFFERED=1
export WS_EXPECT_BENCH=1 WS_EXPECT_OUT=$OUT/expect_cuda.json
{ date -u; cat COMMIT 2>/dev/null
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
  lscpu | grep -E 'Model name|^CPU\(s\)' | cut -c1-120
  python3 -c 'import torch; print("torch", torch.__version__)'; } > "$OUT/machine.txt" 2>&1
t0=$SECONDS
timeout 200 python3 -m pytest -q -p no:cacheprovider -rfE --durations=8 \
    tests/gpu/test_torch_expect_cuda.py tests/gpu/test_torch_cuda.py \
    tests/gpu/test_cuda_backend.py 2>&1 | tee "$OUT/gpu_tests.log"
echo "pytest rc=${PIPESTATUS[0]} in $((SECONDS - t0)) s" | tee -a "$OUT/machine.txt"
python3 -c "import json; print(json.dumps(json.load(open('$OUT/expect_cuda.json')).get('bench'), indent=1))" 2>&1 | tee -a "$OUT/machine.txt"
