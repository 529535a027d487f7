#!/usr/bin/env bash
# Read path of hash / verify (sources and partials): one ~1 GiB bf16 model checkpoint and its
# SGLang TP=2 dump, page cache warm, best of REPS runs; then cold cache (when root can drop
# it) against `cat FILE >/dev/null`; peak RSS from /usr/bin/time. Every row also gives the CPU
# seconds (user + sys, best of the runs, /usr/bin/time) and the bytes per CPU second: on a
# machine shared with other jobs the wall clock says more about them than about us.
# weightsum rows run in the CLI's default read mode (--read mmap: through the mapping) and
# again with --read pread (large preads into reused buffers, the library's default).
#
#   bench/bench_core.sh            # needs build/weightsum; xxhsum and b3sum (apt-get install
#                                  # xxhash b3sum)
#
# Writes bench/results/core-<hostname>.txt (RESULT=another path; not OUT, which the device
# runner sets to its own folder). GB = 1e9 bytes.
# COLD=drop (default): cold rows after `echo 3 >/proc/sys/vm/drop_caches`, when root can;
# COLD=file: drop only the benchmark's own files (dd iflag=nocache), for a machine shared with
# others whose page cache should stay; COLD=none: no cold rows. COLD_REPS=3: interleaved cold
# rounds. The warm rows start from the page cache `cat` leaves (after a drop, where root can):
# the page size of the cache depends on who read the file in, and mapping 4 KiB pages costs a
# mapped reader far more than huge ones.
set -euo pipefail
cd "$(dirname "$0")/.."
WS=${WS:-build/weightsum}
TIME_BIN=${TIME_BIN:-/usr/bin/time}  # GNU time (apt-get install time)
REPS=${REPS:-5}
RESULT=${RESULT:-bench/results/core-$(hostname).txt}
COLD=${COLD:-drop}
COLD_REPS=${COLD_REPS:-3}
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

# measure CMD...: "WALL CPU RSS_KB", the best wall and best user+sys seconds of REPS runs and
# the largest peak RSS (one /usr/bin/time per run). Wall is timed here to the nanosecond: time's
# own %e has 10 ms steps, a tenth of a fast hash of the file.
measure() {
    local w=1e30 c=1e30 m=0 t0 t1
    for _ in $(seq "$REPS"); do
        t0=$(date +%s.%N)
        "$TIME_BIN" -f "%U %S %M" -o "$TMP/time" "$@" >/dev/null 2>&1
        t1=$(date +%s.%N)
        read -r u s k <"$TMP/time"
        w=$(echo "$t0 $t1 $w" | awk '{d = $2 - $1; print (d < $3 ? d : $3)}')
        c=$(echo "$u $s $c" | awk '{d = $1 + $2; print (d < $3 ? d : $3)}')
        m=$(echo "$k $m" | awk '{print ($1 > $2 ? $1 : $2)}')
    done
    echo "$w $c $m"
}
gbs() { echo "$1 $2" | awk '{printf "%.2f", ($2 > 0 ? $1 / $2 / 1e9 : 0)}'; }
row() { printf '%-60s %7s %8s %9s %9s\n' "$1" "$2" "$3" "$4" "$5"; }
# mrow LABEL BYTES [rss] CMD...: one measured row
mrow() {
    local label=$1 bytes=$2 want_rss=$3
    shift 3
    read -r w c k <<<"$(measure "$@")"
    local r=""
    [ "$want_rss" = rss ] && r=$(echo "$k" | awk '{printf "%.0f MB", $1 / 1024}')
    row "$label" "$(gbs "$bytes" "$w")" "$c" "$(gbs "$bytes" "$c")" "$r"
}

if [ "$COLD" = drop ] && [ -w /proc/sys/vm/drop_caches ]; then sync; echo 3 >/proc/sys/vm/drop_caches; fi
cat "$CK" "$TMP"/tp2/*.safetensors >/dev/null
{
    echo "# weightsum core read-path benchmark, $(date -u +%Y-%m-%dT%H:%MZ)"
    echo "# machine: $(lscpu | sed -n 's/^Model name: *//p' | head -1), $(nproc) cores," \
         "$(free -g | awk '/^Mem:/ {print $2}') GiB, kernel $(uname -r); shared with other jobs"
    echo "# data: $BYTES bytes bf16 checkpoint (llama hidden 2048, 8 layers), SGLang TP=2 dump"
    echo "# GB/s: bytes / best wall time; cpu s: best user+sys seconds; GB/cpu-s: bytes / cpu s"
    row "what (warm page cache)" "GB/s" "cpu s" "GB/cpu-s" "peak RSS"
    if command -v xxhsum >/dev/null; then
        mrow "xxhsum -H3 FILE" "$BYTES" - xxhsum -H3 "$CK"
    fi
    if command -v b3sum >/dev/null; then
        mrow "b3sum --num-threads 1 FILE" "$BYTES" - b3sum --num-threads 1 "$CK"
    fi
    sha=$(openssl speed -evp sha256 -seconds 3 2>/dev/null |
        awk '$1 == "sha256" {v = $NF} END {sub(/k$/, "", v); printf "%.2f", v * 1000 / 1e9}')
    row "openssl speed -evp sha256 (16 KiB blocks)" "$sha" "" "$sha" ""
    mrow "cat FILE >/dev/null" "$BYTES" - sh -c "cat '$CK' >/dev/null"
    for mode in mmap pread; do
        sfx=$([ "$mode" = mmap ] && echo "" || echo ", --read pread")
        R=(--read "$mode")
        mrow "hash --algo fast -j 1$sfx" "$BYTES" rss "$WS" hash "$CK" --algo fast -j 1 "${R[@]}"
        mrow "hash -j 1 (sha256)$sfx" "$BYTES" rss "$WS" hash "$CK" -j 1 "${R[@]}"
        mrow "hash -j 2 (sha256)$sfx" "$BYTES" - "$WS" hash "$CK" -j 2 "${R[@]}"
        mrow "hash --algo fast -j 1, TP=2 dump$sfx" "$DUMPBYTES" rss \
            "$WS" hash "$TMP/tp2" --algo fast -j 1 "${R[@]}"
        mrow "verify (fast manifest) -j 1, TP=2 dump$sfx" "$DUMPBYTES" rss \
            "$WS" verify "$TMP/fast.json" "$TMP/tp2" -j 1 "${R[@]}"
        mrow "hash -j 1 (sha256), TP=2 dump$sfx" "$DUMPBYTES" rss "$WS" hash "$TMP/tp2" -j 1 "${R[@]}"
        mrow "hash --algo both -j 1, TP=2 dump$sfx" "$DUMPBYTES" - \
            "$WS" hash "$TMP/tp2" --algo both -j 1 "${R[@]}"
    done
    drop() {
        sync
        if [ "$COLD" = file ]; then
            for f in "$CK" "$TMP"/tp2/*.safetensors; do dd if="$f" iflag=nocache count=0 status=none; done
        else
            echo 3 >/proc/sys/vm/drop_caches
        fi
    }
    if [ "$COLD" = file ] || { [ "$COLD" = drop ] && [ -w /proc/sys/vm/drop_caches ]; }; then
        # COLD_REPS rounds, each dropping the cache before every command, the order reversed
        # every other round (a machine's disk may be faster or slower after what ran before:
        # on the VM the same command varied 3x between positions); best and median per row
        cold_cmds=("cat FILE >/dev/null|$BYTES|cat $CK")
        for mode in mmap pread; do
            sfx=$([ "$mode" = mmap ] && echo "" || echo ", --read pread")
            cold_cmds+=("hash --algo fast -j 1$sfx|$BYTES|$WS hash $CK --algo fast -j 1 --read $mode"
                        "hash -j 1 (sha256)$sfx|$BYTES|$WS hash $CK -j 1 --read $mode"
                        "verify (fast) -j 1, TP=2 dump$sfx|$DUMPBYTES|$WS verify $TMP/fast.json $TMP/tp2 -j 1 --read $mode")
        done
        declare -A runs=()
        for r in $(seq "$COLD_REPS"); do
            idx=$(seq 0 $((${#cold_cmds[@]} - 1)))
            [ $((r % 2)) = 0 ] && idx=$(echo "$idx" | tac)
            for i in $idx; do
                IFS='|' read -r label bytes cmd <<<"${cold_cmds[$i]}"
                drop
                t0=$(date +%s.%N)
                eval "$cmd" >/dev/null 2>&1
                t1=$(date +%s.%N)
                runs[$i]="${runs[$i]:-} $(echo "$t0 $t1 $bytes" | awk '{printf "%.2f", $3 / ($2 - $1) / 1e9}')"
            done
        done
        echo "# cold cache ($([ "$COLD" = file ] && echo "the files' pages dropped" || echo drop_caches)," \
             "$COLD_REPS interleaved rounds): wall GB/s, best and median, and every run"
        row "what (cold cache)" "best" "median" "runs" ""
        for i in $(seq 0 $((${#cold_cmds[@]} - 1))); do
            IFS='|' read -r label _ _ <<<"${cold_cmds[$i]}"
            best=$(echo ${runs[$i]} | tr ' ' '\n' | sort -n | tail -1)
            med=$(echo ${runs[$i]} | tr ' ' '\n' | sort -n |
                awk '{a[NR] = $1} END {printf "%.2f", NR % 2 ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2}')
            printf '%-60s %7s %8s   %s\n' "cold: $label" "$best" "$med" "${runs[$i]# }"
        done
    else
        echo "# cold cache: not measured (COLD=$COLD; drop_caches needs root)"
    fi
} | tee "$RESULT"
