#!/usr/bin/env bash
# One device call: check the carried build runs there (or build there), run the GPU tests, the
# kernels under compute-sanitizer, and the benchmark. Run from .dev/cuda (a copy of the tree
# with build/ and lib/ carried); everything lands in $OUT.
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
export LD_LIBRARY_PATH=$PWD/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
ldconfig -p | grep -q 'libcrypto.so.3 ' || export LD_LIBRARY_PATH=$LD_LIBRARY_PATH:$PWD/lib-fallback
export WEIGHTSUM_LIB=$PWD/build/libweightsum.so WEIGHTSUM_CUDA_LIB=$PWD/build/libweightsum_cuda.so
export PYTHONPATH=$PWD/python:$PWD/tests/gpu PYTHONUNBUFFERED=1
{ nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv; lscpu | grep -E 'Model name|^CPU\(s\)|sha_ni' | cut -c1-200; } 2>&1 | tee "$OUT/machine.txt"
grep -q sha_ni /proc/cpuinfo && echo "SHA-NI: yes" | tee -a "$OUT/machine.txt"
python3 -c "import weightsum, torch; print(weightsum.fast_tensors([torch.ones(3, device='cuda')]))" 2>&1 | tail -3
{ openssl version; openssl speed -seconds 2 -bytes 16384 -evp sha256 2>/dev/null | tail -1
  openssl speed -seconds 2 -bytes 16384 -multi 16 -evp sha256 2>/dev/null | tail -1
  python3 -c "import hashlib,os,time; b=os.urandom(1<<28); t=time.perf_counter(); hashlib.sha256(b); print('hashlib one thread: %.2f GB/s' % (len(b)/(time.perf_counter()-t)/1e9))"; } 2>&1 | tee -a "$OUT/machine.txt"
MODE=${1:-all}
if [ "$MODE" = all ] || [ "$MODE" = test ]; then
  timeout 300 python3 -m pytest -q -p no:cacheprovider tests/gpu -x 2>&1 | tee "$OUT/gpu_tests.log" | tail -25
fi
if [ "$MODE" = all ] || [ "$MODE" = sanitize ]; then
  for tool in memcheck racecheck; do
    timeout 150 compute-sanitizer --tool $tool --target-processes all --print-limit 20 \
      python3 tests/gpu/sanitize_run.py > "$OUT/sanitizer_$tool.log" 2>&1
    echo "compute-sanitizer $tool: rc=$? $(grep -E 'ERROR SUMMARY|RACECHECK SUMMARY' "$OUT/sanitizer_$tool.log" | tail -1)"
  done
fi
if [ "$MODE" = all ] || [ "$MODE" = bench ]; then
  timeout 400 python3 bench/gpu/bench_gpu.py 2>&1 | tail -40
fi
