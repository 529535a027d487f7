#!/usr/bin/env bash
# Fast digest throughput against memory bandwidth and other hashers, on one table.
#
#   bench/bench_fast.sh              # 1 GiB buffer/file, library from build/ (built if missing)
#   SIZE_MIB=4096 BUILD=build-rel bench/bench_fast.sh
#
# Writes bench/results/fast-<hostname>.txt. GB = 1e9 bytes. The file for the external tools
# is read once before timing, so they read it from the page cache.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
SIZE_MIB=${SIZE_MIB:-1024}
REPS=${REPS:-3}
OUT=bench/results/fast-$(hostname).txt
mkdir -p bench/results

if [ ! -f "$BUILD/libweightsum.a" ]; then
    cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=Release >/dev/null
    cmake --build "$BUILD" --target weightsum_static -j"$(nproc)" >/dev/null
fi
BIN=$(mktemp -d)
DATA=$BIN/data.bin
trap 'rm -rf "$BIN"' EXIT
cc -O2 -Iinclude bench/fast_bench.c "$BUILD/libweightsum.a" -ljansson -lcrypto -lpthread -lm \
    -o "$BIN/fast_bench"

head -c "$((SIZE_MIB * 1024 * 1024))" /dev/urandom >"$DATA"
cat "$DATA" >/dev/null
BYTES=$(stat -c %s "$DATA")

# Best wall time of REPS runs of a command, as GB/s of BYTES.
rate() {
    local best=""
    for _ in $(seq "$REPS"); do
        local t0 t1
        t0=$(date +%s.%N)
        "$@" >/dev/null 2>&1
        t1=$(date +%s.%N)
        best=$(echo "$t0 $t1 ${best:-1e30}" | awk '{d = $2 - $1; print (d < $3 ? d : $3)}')
    done
    echo "$BYTES $best" | awk '{printf "%.2f", $1 / $2 / 1e9}'
}
row() { printf '%-28s %7s %8s\n' "$1" "$2" "$3"; }

{
    echo "# weightsum fast digest benchmark, $(date -u +%Y-%m-%dT%H:%MZ)"
    echo "# machine: $(lscpu | sed -n 's/^Model name: *//p' | head -1), $(nproc) cores," \
         "$(free -g | awk '/^Mem:/ {print $2}') GiB memory, kernel $(uname -r)"
    "$BIN/fast_bench" --size-mib "$SIZE_MIB" --reps "$REPS"
    echo "# external tools on a ${SIZE_MIB} MiB file in the page cache"
    if command -v xxhsum >/dev/null; then row "xxhsum -H3" 1 "$(rate xxhsum -H3 "$DATA")"; fi
    if command -v b3sum >/dev/null; then
        row "b3sum" 1 "$(rate b3sum --num-threads 1 "$DATA")"
        row "b3sum" "$(nproc)" "$(rate b3sum "$DATA")"
    fi
    if command -v openssl >/dev/null; then
        # openssl speed prints rates in 1000s of bytes per second; the last column is 16 KiB blocks.
        sha=$(openssl speed -evp sha256 -seconds 3 2>/dev/null |
            awk '$1 == "sha256" {v = $NF} END {sub(/k$/, "", v); printf "%.2f", v * 1000 / 1e9}')
        row "openssl sha256 (16 KiB)" 1 "$sha"
    fi
} | tee "$OUT"
echo "wrote $OUT" >&2
