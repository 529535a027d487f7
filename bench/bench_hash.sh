#!/usr/bin/env bash
# Benchmark of `weightsum hash` and `weightsum verify` on a ~3 GB checkpoint (Qwen2.5-1.5B
# shaped, bf16, synthetic) against openssl speed, sha256sum, b3sum and a minimal mmap+SHA-256
# loop, 1 and 2 threads, page cache warm; then verify of its SGLang TP=2 dump; peak RSS from
# /usr/bin/time. Writes bench/results/hash-$(hostname).md. Needs ~9 GB of free disk in $DATA.
# Usage: bench/bench_hash.sh [DATA_DIR]   (default bench/data)
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${1:-bench/data}
mkdir -p "$DATA" bench/results
scripts/setup.sh >/dev/null
command -v b3sum >/dev/null && command -v xxhsum >/dev/null ||
  (apt-get install -y -qq b3sum xxhash >/dev/null 2>&1 || true)
scripts/build.sh build >/dev/null
cc -O2 -o build/mmap_sha256 bench/mmap_sha256.c -lcrypto
WS=build/weightsum
BIG=$DATA/qwen2.5-1.5b.safetensors SMALL=$DATA/small.safetensors
[ -f "$BIG" ] || $WS synth bench/configs/qwen2.5-1.5b.json -o "$BIG" --dtype bf16
[ -f "$SMALL" ] || $WS synth bench/configs/small-tensors.json -o "$SMALL" --dtype bf16
cp bench/configs/qwen2.5-1.5b.json "$DATA/config.json"
bytes=$(stat -c %s "$BIG")
out=bench/results/hash-$(hostname).md

best() { # best wall seconds of 3 runs of a command; its peak RSS (KB) goes to $BEST_RSS
  local b=999999 p=0 t m
  for _ in 1 2 3; do
    /usr/bin/time -f "%e %M" -o /tmp/ws_bench_time "$@" >/dev/null 2>&1 || true
    read -r t m </tmp/ws_bench_time
    if awk "BEGIN{exit !($t < $b)}"; then b=$t; p=$m; fi
  done
  echo "$p" >/tmp/ws_bench_rss
  echo "$b"
}
gbs() { awk "BEGIN{printf \"%.2f\", $1/$2/1e9}"; }
row() { printf '| %s | %s | %s | %s s | %s GB/s | %s MB |\n' "$1" "$2" "$3" "$4" "$(gbs "$5" "$4")" "$(($(cat /tmp/ws_bench_rss)/1024))" >>"$out"; }

cat "$BIG" "$SMALL" >/dev/null  # warm the page cache
ossl=$(openssl speed -evp sha256 -seconds 3 -bytes 16384 2>/dev/null | awk '/^sha256/{print $NF}' | tr -d k)
ossl_gbs=$(awk "BEGIN{printf \"%.2f\", $ossl*1000/1e9}")
{
  echo "# weightsum hash / verify benchmark"
  echo
  echo "machine: $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) cores, $(free -g | awk '/Mem:/{print $2}') GiB; $(openssl version | cut -d' ' -f1-2); date $(date -u +%F)"
  echo "data: $BIG, $bytes bytes, bf16, largest tensor 467 MB (embed_tokens); page cache warm; best of 3"
  echo
  echo "openssl speed -evp sha256 (16 KiB blocks, in cache, 1 core): **$ossl_gbs GB/s**"
  echo
  echo "| tool | threads | data | time | rate | peak RSS |"
  echo "|---|---|---|---|---|---|"
} >"$out"
t=$(best sha256sum "$BIG"); row "sha256sum (coreutils)" 1 "3.1 GB file" "$t" "$bytes"
t=$(best build/mmap_sha256 "$BIG"); row "mmap + EVP SHA-256 loop (ceiling)" 1 "3.1 GB file" "$t" "$bytes"
if command -v b3sum >/dev/null; then
  t=$(best b3sum --num-threads 1 "$BIG"); row "b3sum (BLAKE3)" 1 "3.1 GB file" "$t" "$bytes"
  t=$(best b3sum --num-threads 2 "$BIG"); row "b3sum (BLAKE3)" 2 "3.1 GB file" "$t" "$bytes"
fi
if command -v xxhsum >/dev/null; then
  t=$(best xxhsum -H3 "$BIG"); row "xxhsum -H3 (XXH3-128)" 1 "3.1 GB file" "$t" "$bytes"
fi
for j in 1 2; do
  t=$(best $WS hash "$BIG" -j $j --no-progress); row "weightsum hash (sha256, bf16)" $j "3.1 GB, 339 tensors" "$t" "$bytes"
done
for j in 1 2; do
  t=$(best $WS hash "$BIG" -j $j --algo fast --no-progress); row "weightsum hash --algo fast" $j "3.1 GB, 339 tensors" "$t" "$bytes"
done
sbytes=$(stat -c %s "$SMALL")
t=$(best $WS hash "$SMALL" -j 1 --no-progress); row "weightsum hash (sha256, bf16)" 1 "$((sbytes/1000000)) MB, largest 4 MB" "$t" "$sbytes"
# engine side: the SGLang TP=2 dump of the same model
$WS hash "$BIG" -o "$DATA/manifest.json" --no-progress
rm -rf "$DATA/sglang-tp2"
$WS shard "$BIG" --layout sglang --tp 2 --config "$DATA/config.json" -o "$DATA/sglang-tp2"
cat "$DATA"/sglang-tp2/*.safetensors >/dev/null
$WS hash "$BIG" --algo fast -o "$DATA/manifest-fast.json" --no-progress
for j in 1 2; do
  t=$(best $WS verify "$DATA/manifest.json" "$DATA/sglang-tp2" -j $j --no-progress)
  row "weightsum verify (sha256), SGLang TP=2 dump" $j "3.1 GB in 2 rank files" "$t" "$bytes"
done
for j in 1 2; do
  t=$(best $WS verify "$DATA/manifest-fast.json" "$DATA/sglang-tp2" -j $j --no-progress)
  row "weightsum verify (fast), SGLang TP=2 dump" $j "3.1 GB in 2 rank files" "$t" "$bytes"
done
# peak memory must not grow with tensor size: the same verify on a model of 4 MB tensors
cp bench/configs/small-tensors.json "$DATA/small-config.json"
$WS hash "$SMALL" -o "$DATA/small-manifest.json" --no-progress
rm -rf "$DATA/small-tp2"
$WS shard "$SMALL" --layout sglang --tp 2 --config "$DATA/small-config.json" -o "$DATA/small-tp2"
t=$(best $WS verify "$DATA/small-manifest.json" "$DATA/small-tp2" -j 1 --no-progress)
row "weightsum verify (sha256), SGLang TP=2 dump" 1 "$((sbytes/1000000)) MB, largest 4 MB" "$t" "$sbytes"
echo >>"$out"
ratios=$(awk -v o="$ossl_gbs" -F'|' '/weightsum hash \(sha256, bf16\) \| 1 \| 3.1/{gsub(/ GB\/s| /,"",$6); printf "weightsum hash sha256, 1 thread / openssl speed: %.2fx\n", $6/o}
  /weightsum hash \(sha256, bf16\) \| 2 \| 3.1/{gsub(/ GB\/s| /,"",$6); printf "weightsum hash sha256, 2 threads / openssl speed (1 core): %.2fx\n", $6/o}' "$out")
echo "$ratios" >>"$out"
cat "$out"
