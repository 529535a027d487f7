/* Digests of canonical bytes: SHA-256 through libcrypto's EVP (SHA-NI where the CPU has it)
 * and the fast digest, fed in chunks that are cast on the way. */
#include "digest.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

ws_err ws_sha256_hex(const uint8_t d[32], char out[65]) {
    if (!out) return WS_ERR_ARG;
    if (!d) {
        out[0] = '\0';
        return WS_ERR_ARG;
    }
    wsi_hex_encode(d, 32, out);
    return WS_OK;
}

ws_err ws_digest_from_hex(const char *hex, ws_digest *out) {
    if (!hex || !out) return WS_ERR_ARG;
    size_t n = strlen(hex);
    if (n == 64) {
        uint8_t sha[32];
        if (!wsi_hex_decode(hex, 32, sha)) return WS_ERR_FORMAT;
        memcpy(out->sha256, sha, 32);
        out->algos |= WS_ALGO_SHA256;
        return WS_OK;
    }
    if (n == 48 && ws_fast_from_hex(hex, &out->fast) == WS_OK) {
        out->algos |= WS_ALGO_FAST;
        return WS_OK;
    }
    return WS_ERR_FORMAT;
}

ws_err wsi_sink_init(wsi_sink *s, unsigned algos, ws_dtype cdtype, const ws_fastkey *key,
                     ws_error *err) {
    memset(s, 0, sizeof *s);
    s->algos = algos ? algos : WS_ALGO_SHA256;
    s->cdtype = cdtype;
    s->key = key;
    if ((s->algos & WS_ALGO_FAST) && !key)
        return wsi_fail(err, WS_ERR_ARG, NULL, NULL, -1, "fast digest requested without a key");
    s->scratch = malloc((size_t)WSI_CHUNK_ELEMS * 8);
    if (!s->scratch) return wsi_fail(err, WS_ERR_NOMEM, NULL, NULL, -1, "out of memory");
    if (s->algos & WS_ALGO_SHA256) {
        s->sha = EVP_MD_CTX_new();
        if (!s->sha || EVP_DigestInit_ex(s->sha, EVP_sha256(), NULL) != 1) {
            wsi_sink_destroy(s);
            return wsi_fail(err, WS_ERR_CRYPTO, NULL, NULL, -1, "EVP SHA-256 init failed");
        }
    }
    return WS_OK;
}

ws_err wsi_sink_init_shared(wsi_sink *s, unsigned algos, ws_dtype cdtype,
                            const ws_fastkey *key, uint8_t *scratch, ws_error *err) {
    memset(s, 0, sizeof *s);
    s->algos = algos ? algos : WS_ALGO_SHA256;
    s->cdtype = cdtype;
    s->key = key;
    s->scratch = scratch;
    if ((s->algos & WS_ALGO_FAST) && !key)
        return wsi_fail(err, WS_ERR_ARG, NULL, NULL, -1, "fast digest requested without a key");
    if (s->algos & WS_ALGO_SHA256) {
        s->sha = EVP_MD_CTX_new();
        if (!s->sha || EVP_DigestInit_ex(s->sha, EVP_sha256(), NULL) != 1) {
            wsi_sink_destroy_shared(s);
            return wsi_fail(err, WS_ERR_CRYPTO, NULL, NULL, -1, "EVP SHA-256 init failed");
        }
    }
    return WS_OK;
}

void wsi_sink_destroy_shared(wsi_sink *s) {
    EVP_MD_CTX_free(s->sha);
    s->sha = NULL;
    s->scratch = NULL;
}

void wsi_sink_destroy(wsi_sink *s) {
    EVP_MD_CTX_free(s->sha);
    free(s->scratch);
    s->sha = NULL;
    s->scratch = NULL;
}

static void feed_canonical(wsi_sink *s, uint64_t at, const void *bytes, uint64_t n) {
    size_t esz = ws_dtype_size(s->cdtype);
    if (s->sha) EVP_DigestUpdate(s->sha, bytes, n * esz);
    if (s->algos & WS_ALGO_FAST) {
        unsigned upe = ws_dtype_units(s->cdtype);
        wsi_fast_accumulate(s->key, &s->fast, at * upe, bytes, n * upe, esz == 1 ? 1 : 2);
    }
}

void wsi_sink_feed(wsi_sink *s, ws_dtype src_dtype, ws_canon c, uint64_t at, const void *src,
                   uint64_t n, ws_value_stats *stats) {
    const uint8_t *p = src;
    size_t ssz = ws_dtype_size(src_dtype);
    bool same = ws_canonical_dtype(src_dtype, c) == src_dtype;
    /* Blocks of 16 KiB of source: small enough to stay in L1/L2 between the passes over them
     * (NaN/Inf count or cast, digest). No software prefetch: the file sources hand over
     * buffers they have just filled (in L2), and the hardware prefetchers follow a mapping's
     * sequential stream; the loop that prefetched each next block cost 4% (pread) to 10%
     * (mapped) of a fast hash per perf; with the NaN/Inf scan below, `hash --algo fast` takes
     * 18% less CPU (bench/results/core-vm-r4.txt). */
    uint64_t block = (16u * 1024u) / ssz;
    const uint8_t *rel = p;
    /* 16-bit floats fed as they are to the fast digest: one unit per element, so the kernel's
     * blocks can be scanned for NaN/Inf candidates while they are in L1 */
    uint16_t special = 0;
    if (same && stats && (s->algos & WS_ALGO_FAST))
        special = src_dtype == WS_BF16 ? 0x7f80u : src_dtype == WS_F16 ? 0x7c00u : 0;
    while (n > 0) {
        uint64_t k = n < block ? n : block;
        if (same) {
            if (special) { /* the NaN/Inf scan rides along with the fast digest */
                if (s->sha) EVP_DigestUpdate(s->sha, p, (size_t)k * ssz);
                if (wsi_fast_accumulate_scan(s->key, &s->fast, at, p, (size_t)k, special))
                    wsi_count_specials(src_dtype, p, (size_t)k, stats); /* exact, when any */
            } else {
                feed_canonical(s, at, p, k);
                if (stats) wsi_count_specials(src_dtype, p, (size_t)k, stats); /* now in cache */
            }
        } else {
            wsi_cast_to_canonical(src_dtype, c, p, (size_t)k, s->scratch, stats);
            feed_canonical(s, at, s->scratch, k);
        }
        p += k * ssz;
        at += k;
        n -= k;
        /* let go of what was read, a megabyte at a time (one system call each); a short
         * feed is left to its caller, which knows when a whole region is done */
        if (s->release && (size_t)(p - rel) >= (1u << 20)) {
            wsi_ckpt_release(s->release, rel, (size_t)(p - rel));
            rel = p;
        }
    }
}

ws_err wsi_sink_final(wsi_sink *s, ws_digest *out, ws_error *err) {
    memset(out, 0, sizeof *out);
    out->algos = s->algos;
    if (s->sha) {
        unsigned int len = 0;
        if (EVP_DigestFinal_ex(s->sha, out->sha256, &len) != 1 || len != 32)
            return wsi_fail(err, WS_ERR_CRYPTO, NULL, NULL, -1, "EVP SHA-256 final failed");
    }
    if (s->algos & WS_ALGO_FAST) out->fast = s->fast;
    return WS_OK;
}

ws_err ws_digest_tensor(const ws_tensor *t, ws_canon c, unsigned algos, const ws_fastkey *key,
                        ws_digest *out, ws_value_stats *stats, ws_error *err) {
    wsi_sink s;
    ws_err rc = wsi_sink_init(&s, algos, ws_canonical_dtype(t->dtype, c), key, err);
    if (rc != WS_OK) return rc;
    wsi_sink_feed(&s, t->dtype, c, 0, t->data, t->numel, stats);
    rc = wsi_sink_final(&s, out, err);
    if (rc == WS_OK)
        rc = wsi_digest_seal(out, key, s.cdtype, t->ndim, t->shape, t->name, err);
    wsi_sink_destroy(&s);
    return rc;
}
