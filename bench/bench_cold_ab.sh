#!/usr/bin/env bash
# Cold-cache A/B of weightsum builds against cat (needs root for drop_caches): ROUNDS rounds,
# each dropping the page cache before every command, the order reversed every other round;
# `hash ARGS` (default --algo fast -j 1) of the 1.2 GB bf16 checkpoint bench_core.sh uses.
# Then, per build, a warm `hash -j 1` (sha256) right after that build's own cold read, with
# the count of huge-page (PMD) mappings it made: what the cold reader leaves in the page cache
# matters to the next mapped read.
#
#   ROUNDS=5 bench/bench_cold_ab.sh build-a/weightsum build-b/weightsum
#   ARGS="--algo fast -j 1 --read pread" bench/bench_cold_ab.sh build-a/weightsum ...
#   VERIFY=1 ARGS="-j 1" bench/bench_cold_ab.sh ...   # verify of its SGLang TP=2 dump instead
#
# GB = 1e9 bytes. (bench/results/cold-variants-h200-host-r6.txt, cold-order-h200-host-r6.txt.)
set -euo pipefail
[ -w /proc/sys/vm/drop_caches ] || { echo "bench_cold_ab: needs root (drop_caches)" >&2; exit 2; }
ROUNDS=${ROUNDS:-5}
read -r -a ARGS <<<"${ARGS:---algo fast -j 1}"
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
cat >"$TMP/config.json" <<'JSON'
{"model_type": "llama", "hidden_size": 2048, "intermediate_size": 8192, "num_hidden_layers": 8,
 "num_attention_heads": 16, "num_key_value_heads": 4, "vocab_size": 32000,
 "tie_word_embeddings": false}
JSON
F=$TMP/model.safetensors
"$1" synth "$TMP/config.json" -o "$F" --dtype bf16 --no-progress
B=$(stat -c %s "$F")
if [ "${VERIFY:-0}" = 1 ]; then # the command is `verify FAST-MANIFEST DUMP ARGS`
    "$1" shard "$F" --layout sglang --tp 2 -o "$TMP/tp2" >/dev/null
    cp "$TMP/config.json" "$TMP/tp2/"
    "$1" hash "$F" --algo fast -o "$TMP/fast.json" --no-progress
    rm "$F"
    B=$(du -cb "$TMP"/tp2/model-rank-*.safetensors | tail -1 | cut -f1)
    F=$TMP/tp2
fi
# run BUILD: the measured command of one build
run() {
    if [ "${VERIFY:-0}" = 1 ]; then "$1" verify "$TMP/fast.json" "$F" "${ARGS[@]}"
    else "$1" hash "$F" "${ARGS[@]}"; fi
}
cat_all() { if [ -d "$F" ]; then cat "$F"/*.safetensors; else cat "$F"; fi; }
drop() { sync; echo 3 >/proc/sys/vm/drop_caches; }
rate() { # bytes t0 t1
    echo "$1 $2 $3" | awk '{printf "%.3f", $1 / ($3 - $2) / 1e9}'
}
cold() {
    drop
    local t0 t1
    t0=$(date +%s.%N)
    "$@" >/dev/null 2>&1 || { echo "failed"; return; }
    t1=$(date +%s.%N)
    rate "$B" "$t0" "$t1"
}
names=(cat "$@")
for r in $(seq "$ROUNDS"); do
    idx=$(seq 0 $((${#names[@]} - 1)))
    [ $((r % 2)) = 0 ] && idx=$(echo "$idx" | tac)
    line="round $r:"
    for i in $idx; do
        w=${names[$i]}
        if [ "$w" = cat ]; then v=$(cold cat_all); else v=$(cold run "$w"); fi
        line="$line $w=$v"
    done
    echo "$line"
done
thp() { awk '$1 == "thp_file_mapped" {print $2}' /proc/vmstat; }
for w in "${names[@]}"; do
    drop
    if [ "$w" = cat ]; then cat_all >/dev/null; else run "$w" >/dev/null; fi
    a=$(thp)
    t0=$(date +%s.%N)
    "$1" hash "$F" -j 1 >/dev/null
    t1=$(date +%s.%N)
    echo "warm sha256 ($1) after $w's cold read: $(rate "$B" "$t0" "$t1") GB/s, $(($(thp) - a)) PMD mappings"
done
