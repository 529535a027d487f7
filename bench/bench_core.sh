#!/usr/bin/env bash
# Read path of hash / verify (sources and partials): one ~1 GiB bf16 model checkpoint and its
# SGLang TP=2 dump, page cache warm, best of REPS runs; then cold cache (when root can drop
# it) against `cat FILE >/dev/null`; peak RSS from /usr/bin/time.
#
#   bench/bench_core.sh            # needs build/weightsum; xxhsum (apt-get install xxhash)
#
# Writes bench/results/core-<hostname>.txt. GB = 1e9 bytes.
set -euo pipefail
cd "$(dirname "$0")/.."
WS=${WS:-build/weightsum}
REPS=${REPS:-3}
OUT=bench/results/core-$(hostname).txt
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
mkdir -p bench/results

# ~1.0 GiB in bf16: a llama-shaped model (hidden 2048, 8 layers, vocab 32000)
cat >"$TMP/config.json" <<'JSON'
{"model_type": "llama", "hidden_size": 2048, "intermediate_size": 8192, "num_hidden_layers": 8,
 "num_attention_heads": 16, "num_key_value_heads": 4, "vocab_size": 32000,
 "tie_word_embeddings": false}
JSON
CK=$TMP/model.safetensors
"$WS" synth "$TMP/config.json" -o "$CK" --dtype bf16 --no-progress
"$WS" shard "$CK" --layout sglang --tp 2 -o "$TMP/tp2" >/dev/null
cp "$TMP/config.json" "$TMP/tp2/"
"$WS" hash "$CK" --algo fast -o "$TMP/fast.json" --no-progress
BYTES=$(stat -c %s "$CK")
DUMPBYTES=$(du -cb "$TMP"/tp2/model-rank-*.safetensors | tail -1 | cut -f1)

best() { # best wall seconds of REPS runs
    local b=1e30
    for _ in $(seq "$REPS"); do
        local t0 t1
        t0=$(date +%s.%N); "$@" >/dev/null 2>&1; t1=$(date +%s.%N)
        b=$(echo "$t0 $t1 $b" | awk '{d = $2 - $1; print (d < $3 ? d : $3)}')
    done
    echo "$b"
}
gbs() { echo "$1 $2" | awk '{printf "%.2f", $1 / $2 / 1e9}'; }
rss() { /usr/bin/time -f %M "$@" 2>&1 >/dev/null | tail -1 | awk '{printf "%.0f MB", $1 / 1024}'; }
row() { printf '%-58s %9s %10s\n' "$1" "$2" "$3"; }

cat "$CK" "$TMP"/tp2/*.safetensors >/dev/null
{
    echo "# weightsum core read-path benchmark, $(date -u +%Y-%m-%dT%H:%MZ)"
    echo "# machine: $(lscpu | sed -n 's/^Model name: *//p' | head -1), $(nproc) cores," \
         "$(free -g | awk '/^Mem:/ {print $2}') GiB, kernel $(uname -r); shared with other jobs"
    echo "# data: $BYTES bytes bf16 checkpoint (llama hidden 2048, 8 layers), SGLang TP=2 dump"
    row "what (warm page cache)" "GB/s" "peak RSS"
    if command -v xxhsum >/dev/null; then
        row "xxhsum -H3 FILE" "$(gbs "$BYTES" "$(best xxhsum -H3 "$CK")")" ""
    fi
    sha=$(openssl speed -evp sha256 -seconds 3 2>/dev/null |
        awk '$1 == "sha256" {v = $NF} END {sub(/k$/, "", v); printf "%.2f", v * 1000 / 1e9}')
    row "openssl speed -evp sha256 (16 KiB blocks)" "$sha" ""
    row "cat FILE >/dev/null" "$(gbs "$BYTES" "$(best sh -c "cat '$CK' >/dev/null")")" ""
    row "hash --algo fast -j 1" "$(gbs "$BYTES" "$(best "$WS" hash "$CK" --algo fast -j 1)")" \
        "$(rss "$WS" hash "$CK" --algo fast -j 1)"
    row "hash -j 1 (sha256)" "$(gbs "$BYTES" "$(best "$WS" hash "$CK" -j 1)")" \
        "$(rss "$WS" hash "$CK" -j 1)"
    row "hash -j 2 (sha256)" "$(gbs "$BYTES" "$(best "$WS" hash "$CK" -j 2)")" ""
    row "hash --algo fast -j 1, TP=2 dump" \
        "$(gbs "$DUMPBYTES" "$(best "$WS" hash "$TMP/tp2" --algo fast -j 1)")" \
        "$(rss "$WS" hash "$TMP/tp2" --algo fast -j 1)"
    row "verify (fast manifest) -j 1, TP=2 dump" \
        "$(gbs "$DUMPBYTES" "$(best "$WS" verify "$TMP/fast.json" "$TMP/tp2" -j 1)")" \
        "$(rss "$WS" verify "$TMP/fast.json" "$TMP/tp2" -j 1)"
    row "hash -j 1 (sha256), TP=2 dump" "$(gbs "$DUMPBYTES" "$(best "$WS" hash "$TMP/tp2" -j 1)")" \
        "$(rss "$WS" hash "$TMP/tp2" -j 1)"
    if [ -w /proc/sys/vm/drop_caches ]; then
        cold() { sync; echo 3 >/proc/sys/vm/drop_caches; local t0 t1; t0=$(date +%s.%N)
                 "$@" >/dev/null 2>&1; t1=$(date +%s.%N); echo "$t0 $t1" | awk '{print $2 - $1}'; }
        row "cold: cat FILE >/dev/null" "$(gbs "$BYTES" "$(cold sh -c "cat '$CK' >/dev/null")")" ""
        row "cold: hash --algo fast -j 1" "$(gbs "$BYTES" "$(cold "$WS" hash "$CK" --algo fast -j 1)")" ""
        row "cold: verify (fast) -j 1, TP=2 dump" \
            "$(gbs "$DUMPBYTES" "$(cold "$WS" verify "$TMP/fast.json" "$TMP/tp2" -j 1)")" ""
    else
        echo "# cold cache: not measured (cannot write /proc/sys/vm/drop_caches)"
    fi
} | tee "$OUT"
