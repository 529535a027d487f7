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

# expect of a Qwen2.5-3B-shaped bf16 checkpoint (synthetic, bench/configs/qwen2.5-3b.json)
# against one plain SHA-256 pass over the same file, page cache warm, in the same run.
[ "${SKIP_EXPECT:-0}" = 1 ] && exit 0
D=bench/data/q3b
mkdir -p "$D"
cp bench/configs/qwen2.5-3b.json "$D/config.json"
[ -f "$D/model.safetensors" ] || "$BUILD/weightsum" synth "$D/config.json" -o "$D/model.safetensors" --dtype bf16
BYTES=$(stat -c %s "$D/model.safetensors")
cat "$D/model.safetensors" >/dev/null
t() { /usr/bin/time -f "%e s wall, %U s user, %S s sys" "$@" 2>&1 >/dev/null | tail -1; }
{
    echo
    echo "expect of $D/model.safetensors ($BYTES bytes, bf16, Qwen2.5-3B shape), warm cache:"
    echo
    echo "| run | time |"
    echo "|---|---|"
    echo "| openssl dgst -sha256 (one plain SHA-256 pass) | $(t openssl dgst -sha256 "$D/model.safetensors") |"
    echo "| sha256sum | $(t sha256sum "$D/model.safetensors") |"
    for tp in 2 4 8; do
        for j in 1 2; do
            echo "| weightsum expect --layout sglang --tp $tp -j $j | $(t "$BUILD/weightsum" expect "$D/model.safetensors" --layout sglang --tp $tp -j $j -o "$TMP/e.json") |"
        done
    done
    echo "| weightsum expect --layout sglang --tp 8 --device cpu -j 2 (SHA-256 path) | $(t "$BUILD/weightsum" expect "$D/model.safetensors" --layout sglang --tp 8 --device cpu -j 2 -o "$TMP/e.json") |"
} | tee -a "$OUT"
