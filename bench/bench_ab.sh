#!/usr/bin/env bash
# Interleaved A/B of weightsum builds on one checkpoint, warm page cache: best wall and CPU of
# N rounds of `BIN hash FILE ARGS` per build, against the best `openssl speed -evp sha256`
# (16 KiB blocks) of the same rounds. The page cache is dropped (where root can) and refilled
# by cat first: the page size of the cache depends on who read the file in.
#
#   N=7 ARGS="-j 1" bench/bench_ab.sh FILE build-a/weightsum build-b/weightsum
#
# Without FILE (an empty first argument) it synthesises the 1.2 GB bf16 checkpoint that
# bench_core.sh uses. GB = 1e9 bytes.
set -euo pipefail
N=${N:-7}
ARGS=${ARGS:--j 1}
F=${1:-}
shift
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
if [ -z "$F" ]; then
    cat >"$TMP/config.json" <<'JSON'
{"model_type": "llama", "hidden_size": 2048, "intermediate_size": 8192, "num_hidden_layers": 8,
 "num_attention_heads": 16, "num_key_value_heads": 4, "vocab_size": 32000,
 "tie_word_embeddings": false}
JSON
    F=$TMP/model.safetensors
    "$1" synth "$TMP/config.json" -o "$F" --dtype bf16 --no-progress
fi
B=$(stat -c %s "$F")
if [ -w /proc/sys/vm/drop_caches ]; then sync; echo 3 >/proc/sys/vm/drop_caches; fi
cat "$F" >/dev/null
declare -A W C
O=0
for _ in $(seq "$N"); do
    s=$(openssl speed -evp sha256 -seconds 1 2>/dev/null |
        awk '$1 == "sha256" {v = $NF} END {sub(/k$/, "", v); printf "%.4f", v * 1000 / 1e9}')
    O=$(echo "$s $O" | awk '{print ($1 > $2 ? $1 : $2)}')
    for bin in "$@"; do
        t0=$(date +%s.%N)
        /usr/bin/time -f "%U %S" -o "$TMP/t" "$bin" hash "$F" $ARGS >/dev/null
        t1=$(date +%s.%N)
        read -r u s2 <"$TMP/t"
        W[$bin]=$(echo "$t0 $t1 ${W[$bin]:-1e9}" | awk '{d = $2 - $1; print (d < $3 ? d : $3)}')
        C[$bin]=$(echo "$u $s2 ${C[$bin]:-1e9}" | awk '{d = $1 + $2; print (d < $3 ? d : $3)}')
    done
done
echo "# $B bytes, best of $N; openssl speed -evp sha256 best $O GB/s"
for bin in "$@"; do
    echo "$bin hash $ARGS: wall $(echo "$B ${W[$bin]} $O" | awk '{printf "%.2f GB/s = %.3fx openssl", $1 / $2 / 1e9, $1 / $2 / 1e9 / $3}'), cpu $(echo "$B ${C[$bin]} $O" | awk '{printf "%.2f GB/s", $1 / $2 / 1e9}')"
done
