#!/usr/bin/env bash
# SGLang's tensor hash on one core (every kernel, streamed, the SHA-256 path, memcpy), then
# `weightsum expect` of a Qwen2.5-3B-shaped checkpoint at TP 2, 4, 8 against one plain SHA-256
# pass over the same bytes (sha256sum), in the same run.
#
#   bench/bench_sglang.sh                 # library and CLI from build/
#   SKIP_EXPECT=1 bench/bench_sglang.sh   # the hash table only
#
# Writes bench/results/sglang-<hostname>.md. GB = 1e9 bytes.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
OUT=bench/results/sglang-$(hostname).md
mkdir -p bench/results
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
cc -O2 -Iinclude bench/sglang_hash_bench.c "$BUILD/libweightsum.a" -ljansson -lcrypto -lpthread -lm \
    -o "$TMP/sglang_hash_bench"
{
    echo "# SGLang tensor hash benchmark, $(date -u +%Y-%m-%dT%H:%MZ)"
    echo
    echo "Machine: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(nproc) cores," \
         "flags: $(grep -o -w 'avx2\|avx512f\|sha_ni' /proc/cpuinfo | sort -u | tr '\n' ' ')," \
         "load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
    echo
    echo "Command: \`$TMP/sglang_hash_bench --size-mib 256 --reps 3\`"
    echo
    "$TMP/sglang_hash_bench" --size-mib 256 --reps 3
} | tee "$OUT"
