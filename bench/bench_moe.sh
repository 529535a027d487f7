#!/usr/bin/env bash
# MoE layouts (issue 13):
#  1. verify (fast digest) of a Qwen3-30B-A3B-shaped bf16 SGLang dump at tp 4, ep 4, against one
#     read of the dump's bytes (cat, warm page cache). The hidden size is scaled down to 128
#     (and head_dim to 16, expert rows to 96) so the dump is ~0.5 GB on a shared 2-core VM; the
#     shape of the work (48 layers x 128 experts x 3 tensors, 4 ranks, vocab 151936) is kept.
#  2. layout and plan building time and peak memory for a full-size Qwen3-235B-A22B layout at
#     tp 8, ep 8 (no weights needed).
#
#   bench/bench_moe.sh            # writes bench/results/moe-<hostname>.txt
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
OUT=bench/results/moe-$(hostname).txt
W=$BUILD/weightsum
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
cc -O2 -Iinclude bench/moe_plan_bench.c "$BUILD/libweightsum.a" -ljansson -lcrypto -lpthread -lm \
    -o "$T/moe_plan_bench"
cp bench/configs/qwen3-30b-a3b-scaled.json "$T/config.json"
$W synth "$T/config.json" --dtype bf16 -o "$T/model.safetensors"
$W hash "$T/model.safetensors" --algo fast -o "$T/man.json" --no-progress
$W shard "$T/model.safetensors" --layout sglang --tp 4 --ep 4 -o "$T/dump" --no-progress
BYTES=$(du -cb "$T"/dump/*.safetensors | tail -1 | cut -f1)
cat "$T"/dump/*.safetensors >/dev/null
{
    echo "# bench/bench_moe.sh on $(hostname), $(nproc) cores, $(date -u +%F)"
    echo "# $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
    echo "dump: sglang tp=4 ep=4 of bench/configs/qwen3-30b-a3b-scaled.json, $BYTES bytes, 4 rank files"
    for j in 1 2; do
        s=$(date +%s.%N)
        $W verify "$T/man.json" "$T/dump" -j $j --no-progress | tail -1 >"$T/v.txt"
        e=$(date +%s.%N)
        awk -v s="$s" -v e="$e" -v b="$BYTES" -v j=$j -v r="$(cat "$T/v.txt")" \
            'BEGIN {printf "verify --algo fast -j %d: %.3f s, %.2f GB/s  (%s)\n", j, e-s, b/(e-s)/1e9, r}'
    done
    s=$(date +%s.%N)
    cat "$T"/dump/*.safetensors >/dev/null
    e=$(date +%s.%N)
    awk -v s="$s" -v e="$e" -v b="$BYTES" 'BEGIN {printf "cat (one read of the bytes): %.3f s, %.2f GB/s\n", e-s, b/(e-s)/1e9}'
    "$T/moe_plan_bench" bench/configs/qwen3-235b-a22b.json sglang 8 8 1
    "$T/moe_plan_bench" bench/configs/qwen3-235b-a22b.json vllm 8 8 1
    "$T/moe_plan_bench" bench/configs/qwen3-235b-a22b.json megatron 4 8 1  # Megatron: kv 4 heads, so tp <= 4
} | tee "$OUT"
