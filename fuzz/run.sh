#!/usr/bin/env bash
# Build the fuzz targets as libFuzzer fuzzers (clang, ASan + UBSan) and run one of them.
#   fuzz/run.sh TARGET [SECONDS] [libFuzzer flags...]      (TARGET: safetensors, manifest,
#                                                           model_config, checker)
# One process (the machine is shared): new inputs go to fuzz/corpus/TARGET (kept in the
# repository, replayed by ctest); the seeds below are read, never written. The final stats
# (executions, coverage) are printed at the end; a crash leaves crash-* / leak-* / timeout-*
# in fuzz/artifacts/ and exits non-zero.  After a run, shrink the corpus back with
#   fuzz/run.sh TARGET merge
set -euo pipefail
cd "$(dirname "$0")/.."
target=$1
secs=${2:-300}
shift $(( $# >= 2 ? 2 : 1 ))
build=${WS_FUZZ_BUILD:-build-fuzz}
if [ ! -f "$build/CMakeCache.txt" ]; then
  CC=${CC:-clang} cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DWS_FUZZ=ON \
    -DWS_SANITIZE=ON >/dev/null
fi
cmake --build "$build" -j2 --target "fuzz_$target" 2>&1 | grep -E 'warning|error' || true
case $target in
  safetensors) seeds=(tests/malformed tests/vectors/transformers_qwen2) ;;
  manifest) seeds=(tests/malformed) ;;
  model_config) seeds=(bench/configs) ;;
  *) seeds=() ;;
esac
mkdir -p "fuzz/corpus/$target" fuzz/artifacts
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1:allocator_may_return_null=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
dict=()
[ -f "fuzz/$target.dict" ] && dict=("-dict=fuzz/$target.dict")
if [ "$secs" = merge ]; then
  tmp=$(mktemp -d)
  "$build/fuzz_$target" -merge=1 "$tmp" "fuzz/corpus/$target" "${dict[@]}" "$@" 2>&1 | tail -3
  rm -rf "fuzz/corpus/$target" && mv "$tmp" "fuzz/corpus/$target" && chmod 755 "fuzz/corpus/$target"
  exit 0
fi
exec "$build/fuzz_$target" -max_total_time="$secs" -print_final_stats=1 -max_len=65536 \
  -timeout=10 -rss_limit_mb=2048 -artifact_prefix=fuzz/artifacts/ "${dict[@]}" "$@" \
  "fuzz/corpus/$target" "${seeds[@]}"
