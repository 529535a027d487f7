#!/usr/bin/env bash
# One device call (< 200 s on one H200): every GPU test (tests/gpu: the CUDA kernels against the
# CPU paths and SGLang's own kernel, weightsum.torch on CUDA tensors over 2 and 4 gloo ranks)
# and the GPU benchmark (bench/gpu/bench_gpu.py), logs under $OUT.
#
# Run from the repo root with the libraries carried in one folder, default .dev/final (carry
# [".dev/final"]), override with WS_LIBDIR: libweightsum.so and libweightsum_cuda.so built from
# this tree (scripts/build.sh, or .ci/run; WS_CUDA_ARCHITECTURES 80;90), lib/libjansson.so.4,
# lib-fallback/libcrypto.so.3 (used only where the machine lacks OpenSSL 3), SGLang's
# gpu_tensor_hash.py (its released file) and, optionally, read_ceiling (bench/gpu/read_ceiling.cu).
# The code (python/, tests/, examples/, bench/) is the tree this script sits in.
#   bash bench/gpu/final_call.sh            # from main's root, carry [".dev/final"]
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
D=$(cd "${WS_LIBDIR:-$ROOT/.dev/final}" && pwd)
OUT=${OUT:-/tmp/weightsum-gpu-out}
mkdir -p "$OUT"
cd "$ROOT"
export LD_LIBRARY_PATH=$D/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
ldconfig -p | grep -q 'libcrypto.so.3 ' || export LD_LIBRARY_PATH=$LD_LIBRARY_PATH:$D/lib-fallback
export WEIGHTSUM_LIB=$D/libweightsum.so WEIGHTSUM_CUDA_LIB=$D/libweightsum_cuda.so
export SGLANG_GPU_TENSOR_HASH=$D/gpu_tensor_hash.py
export PYTHONPATH=$ROOT/python:$ROOT/tests/gpu PYTHONUNBUFFERED=1
{ date -u; git -C "$ROOT" log -1 --format='tree at %h %s' 2>/dev/null
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
  lscpu | grep -E 'Model name|^CPU\(s\)' | cut -c1-120; python3 -c 'import torch; print("torch", torch.__version__)'
  echo "command: WEIGHTSUM_LIB=$WEIGHTSUM_LIB WEIGHTSUM_CUDA_LIB=$WEIGHTSUM_CUDA_LIB SGLANG_GPU_TENSOR_HASH=... PYTHONPATH=python:tests/gpu python3 -m pytest -q tests/gpu; python3 bench/gpu/bench_gpu.py"
} 2>&1 | tee "$OUT/machine.txt"
# the read ceiling of the card (bench/gpu/read_ceiling.cu, built with nvcc -O3 -arch=sm_90), if carried
[ -x "$D/read_ceiling" ] && timeout 60 "$D/read_ceiling" 2>&1 | tee -a "$OUT/machine.txt"
t0=$SECONDS
timeout 120 python3 -m pytest -q -p no:cacheprovider -rfE tests/gpu > "$OUT/gpu_tests.log" 2>&1
echo "pytest tests/gpu: rc=$? in $((SECONDS - t0)) s: $(tail -1 "$OUT/gpu_tests.log")" | tee -a "$OUT/machine.txt"
grep -E '^(FAILED|ERROR)' "$OUT/gpu_tests.log" | head -20
t0=$SECONDS
timeout 90 python3 bench/gpu/bench_gpu.py > "$OUT/bench_stdout.log" 2>&1
echo "bench_gpu.py: rc=$? in $((SECONDS - t0)) s" | tee -a "$OUT/machine.txt"
sed -n '/^SUMMARY/,$p' "$OUT/bench_stdout.log"; tail -4 "$OUT/bench_stdout.log"
