/*
 * Fast digest: key derivation, byte form, the outer polynomial and kernel dispatch.
 *
 * Per lane l, with keys K_l[0..B) and point y_l in GF(p), p = 2^61 - 1, units u_j at global
 * unit index j and block m = j / B:
 *     D_l = sum_m y_l^m * ( (sum_{j in block m} K_l[j mod B] * u_j) mod p )   (mod p).
 * The inner sum is an exact integer below 2^58, so the share of any run of units in a block
 * can be computed on its own and shares add up; a kernel computes those shares, this file
 * weighs each block's share by y^m. See docs/fast-digest.md for the bound and the key stream.
 */
#include "fastdigest.h"

#include <openssl/evp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#define P WSI_FAST_P
#define B WSI_FAST_B

/* ------------------------------------------------------------------------------------------ */
/* Arithmetic mod p = 2^61 - 1: 2^61 = 1 (mod p), so a value folds as (x & p) + (x >> 61).    */
/* ------------------------------------------------------------------------------------------ */

/* Any 64-bit x to [0, p). */
static inline uint64_t reduce64(uint64_t x) {
    x = (x & P) + (x >> 61); /* <= p + 7 */
    return x >= P ? x - P : x;
}

/* a, b < p. */
static inline uint64_t mulmod(uint64_t a, uint64_t b) {
    unsigned __int128 t = (unsigned __int128)a * b; /* < 2^122 */
    uint64_t r = ((uint64_t)t & P) + (uint64_t)(t >> 61); /* < 2p */
    return r >= P ? r - P : r;
}

static inline uint64_t addmod(uint64_t a, uint64_t b) {
    uint64_t r = a + b; /* a, b < p: no overflow */
    return r >= P ? r - P : r;
}

/* y_l^e for every lane, from the table of y_l^(2^i): one multiply per set bit of e. */
static void pow_lanes(const ws_fastkey *k, uint64_t e, uint64_t out[WS_FAST_LANES]) {
    for (int l = 0; l < WS_FAST_LANES; l++) out[l] = 1;
    for (int i = 0; e; i++, e >>= 1)
        if (e & 1)
            for (int l = 0; l < WS_FAST_LANES; l++) out[l] = mulmod(out[l], k->ysq[l][i]);
}

/* ------------------------------------------------------------------------------------------ */
/* Kernels: chosen once from the CPU's features, or forced by name (tests, benchmarks).        */
/* ------------------------------------------------------------------------------------------ */

typedef struct kernel_desc {
    const char *name;
    wsi_fast_run_fn run;
} kernel_desc;

enum { K_SCALAR, K_AVX2, K_AVX512, K_AVX512VNNI, K__COUNT };

static const kernel_desc kernels[K__COUNT] = {
    [K_SCALAR] = {"scalar", wsi_fast_run_scalar},
#ifdef WSI_FAST_HAVE_X86
    [K_AVX2] = {"avx2", wsi_fast_run_avx2},
    [K_AVX512] = {"avx512", wsi_fast_run_avx512},
    [K_AVX512VNNI] = {"avx512vnni", wsi_fast_run_avx512vnni},
#else
    [K_AVX2] = {"avx2", NULL},
    [K_AVX512] = {"avx512", NULL},
    [K_AVX512VNNI] = {"avx512vnni", NULL},
#endif
};

static pthread_once_t detect_once = PTHREAD_ONCE_INIT;
static bool kernel_ok[K__COUNT];
static int kernel_best;
static atomic_int kernel_forced = -1; /* -1: auto */

static void detect(void) {
    kernel_ok[K_SCALAR] = true;
#ifdef WSI_FAST_HAVE_X86
    /* libgcc also checks that the OS saves the wider registers (XCR0). */
    __builtin_cpu_init();
    kernel_ok[K_AVX2] = __builtin_cpu_supports("avx2");
    kernel_ok[K_AVX512] = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw");
    kernel_ok[K_AVX512VNNI] = kernel_ok[K_AVX512] && __builtin_cpu_supports("avx512vnni");
#endif
    kernel_best = K_SCALAR; /* the last available one in the table: they are in speed order */
    for (int i = 0; i < K__COUNT; i++)
        if (kernel_ok[i]) kernel_best = i;
}

static const kernel_desc *current_kernel(void) {
    pthread_once(&detect_once, detect);
    int f = atomic_load_explicit(&kernel_forced, memory_order_relaxed);
    return &kernels[f >= 0 ? f : kernel_best];
}

ws_err ws_fast_set_kernel(const char *name) {
    if (!name) return WS_ERR_ARG;
    pthread_once(&detect_once, detect);
    if (strcmp(name, "auto") == 0) {
        atomic_store(&kernel_forced, -1);
        return WS_OK;
    }
    for (int i = 0; i < K__COUNT; i++) {
        if (strcmp(name, kernels[i].name) != 0) continue;
        if (!kernel_ok[i]) return WS_ERR_NOTFOUND;
        atomic_store(&kernel_forced, i);
        return WS_OK;
    }
    return WS_ERR_ARG;
}

const char *ws_fast_kernel(void) { return current_kernel()->name; }

/* ------------------------------------------------------------------------------------------ */
/* Accumulation                                                                                */
/* ------------------------------------------------------------------------------------------ */

ws_err ws_fast_accumulate(const ws_fastkey *k, ws_fast *acc, uint64_t unit_index,
                          const void *data, size_t n_units, int unit_bytes, ws_error *err) {
    if (!k || !acc)
        return wsi_fail(err, WS_ERR_ARG, NULL, NULL, -1, "fast digest: NULL %s",
                        k ? "accumulator" : "key");
    if (unit_bytes != 1 && unit_bytes != 2)
        return wsi_fail(err, WS_ERR_ARG, NULL, NULL, -1,
                        "fast digest: unit_bytes %d (1 or 2)", unit_bytes);
    if (n_units && !data) return wsi_fail(err, WS_ERR_ARG, NULL, NULL, -1, "fast digest: NULL data");
    if (n_units && n_units - 1 > UINT64_MAX - unit_index) /* the last unit's index wraps */
        return wsi_fail(err, WS_ERR_LIMIT, NULL, NULL, -1,
                        "fast digest: %zu units from index %llu pass 2^64 - 1", n_units,
                        (unsigned long long)unit_index);
    if (n_units) wsi_fast_accumulate(k, acc, unit_index, data, n_units, unit_bytes);
    return WS_OK;
}

/* The accumulation; with `special` nonzero (16-bit units), also the largest unit magnitude
 * seen (shifted as wsi_max_mag16's), scanned once the kernel has read the call's data. */
static uint16_t accumulate(const ws_fastkey *k, ws_fast *acc, uint64_t unit_index,
                           const void *data, size_t n_units, int unit_bytes, bool scan) {
    wsi_fast_run_fn run = current_kernel()->run;
    const uint8_t *p = data;
    size_t off = (size_t)(unit_index % B), n_total = n_units;
    uint64_t a[WS_FAST_LANES], yp[WS_FAST_LANES];
    uint16_t mag = 0;
    pow_lanes(k, unit_index / B, yp); /* y^m for the first block touched */
    for (int l = 0; l < WS_FAST_LANES; l++) a[l] = reduce64(acc->lane[l]);
    while (n_units) {
        size_t take = B - off < n_units ? B - off : n_units;
        uint64_t s[WS_FAST_LANES];
        run(k, off, p, take, unit_bytes, s);
        for (int l = 0; l < WS_FAST_LANES; l++) {
            a[l] = addmod(a[l], mulmod(yp[l], reduce64(s[l])));
            yp[l] = mulmod(yp[l], k->y[l]);
        }
        p += take * (size_t)unit_bytes;
        n_units -= take;
        off = 0;
    }
    for (int l = 0; l < WS_FAST_LANES; l++) acc->lane[l] = a[l];
    /* once over the whole call, not per block: the callers' calls are L1-sized (16 KiB,
     * digest.c), and per 2 KiB block the scan's setup and final reduction cost as much as
     * its loop (perf on the VM: 16% of `hash --algo fast -j 1`; once per call, 7%) */
    if (scan) mag = wsi_max_mag16(data, n_total);
    return mag;
}

void wsi_fast_accumulate(const ws_fastkey *k, ws_fast *acc, uint64_t unit_index,
                         const void *data, size_t n_units, int unit_bytes) {
    accumulate(k, acc, unit_index, data, n_units, unit_bytes, false);
}

bool wsi_fast_accumulate_scan(const ws_fastkey *k, ws_fast *acc, uint64_t unit_index,
                              const void *data, size_t n_units, uint16_t special) {
    return accumulate(k, acc, unit_index, data, n_units, 2, true) >= (uint16_t)(special << 1);
}

ws_err ws_fast_add(ws_fast *acc, const ws_fast *part, ws_error *err) {
    if (!acc || !part)
        return wsi_fail(err, WS_ERR_ARG, NULL, NULL, -1, "fast digest: NULL %s",
                        acc ? "part" : "accumulator");
    wsi_fast_add(acc, part);
    return WS_OK;
}

void wsi_fast_add(ws_fast *acc, const ws_fast *part) {
    for (int l = 0; l < WS_FAST_LANES; l++)
        acc->lane[l] = addmod(reduce64(acc->lane[l]), reduce64(part->lane[l]));
}

/* ------------------------------------------------------------------------------------------ */
/* Byte form: each lane as 16 lowercase hex digits, big-endian, lane 0 first.                  */
/* ------------------------------------------------------------------------------------------ */

ws_err ws_fast_hex(const ws_fast *d, char out[49]) {
    if (!out) return WS_ERR_ARG;
    if (!d) {
        out[0] = '\0';
        return WS_ERR_ARG;
    }
    uint8_t be[8 * WS_FAST_LANES];
    for (int l = 0; l < WS_FAST_LANES; l++)
        for (int i = 0; i < 8; i++) be[8 * l + i] = (uint8_t)(d->lane[l] >> (56 - 8 * i));
    wsi_hex_encode(be, sizeof be, out);
    return WS_OK;
}

ws_err ws_fast_from_hex(const char *hex, ws_fast *out) {
    if (!hex || !out) return WS_ERR_ARG;
    uint8_t be[8 * WS_FAST_LANES];
    if (strlen(hex) != 2 * sizeof be || !wsi_hex_decode(hex, sizeof be, be)) return WS_ERR_FORMAT;
    ws_fast d;
    for (int l = 0; l < WS_FAST_LANES; l++) {
        uint64_t v = 0;
        for (int i = 0; i < 8; i++) v = v << 8 | be[8 * l + i];
        if (v >= P) return WS_ERR_FORMAT;
        d.lane[l] = v;
    }
    *out = d;
    return WS_OK;
}

/* ------------------------------------------------------------------------------------------ */
/* Keys: a SHA-256 counter-mode stream, block i = SHA-256(seed || "weightsum-fast-v1" ||      */
/* le32(i)), read as one byte string.                                                          */
/* ------------------------------------------------------------------------------------------ */

static const char stream_label[] = "weightsum-fast-v1";

typedef struct key_stream {
    EVP_MD_CTX *ctx;
    const void *seed;
    size_t seed_len;
    uint32_t counter;
    uint8_t buf[32];
    unsigned pos; /* bytes of buf already read; 32 = empty */
} key_stream;

static bool stream_refill(key_stream *s) {
    uint8_t le[4] = {(uint8_t)s->counter, (uint8_t)(s->counter >> 8),
                     (uint8_t)(s->counter >> 16), (uint8_t)(s->counter >> 24)};
    unsigned len = 0;
    if (EVP_DigestInit_ex(s->ctx, EVP_sha256(), NULL) != 1 ||
        (s->seed_len && EVP_DigestUpdate(s->ctx, s->seed, s->seed_len) != 1) ||
        EVP_DigestUpdate(s->ctx, stream_label, sizeof stream_label - 1) != 1 ||
        EVP_DigestUpdate(s->ctx, le, 4) != 1 || EVP_DigestFinal_ex(s->ctx, s->buf, &len) != 1 ||
        len != 32)
        return false;
    s->counter++;
    s->pos = 0;
    return true;
}

/* Next nbytes (<= 8) of the stream as a little-endian integer. */
static bool stream_read(key_stream *s, unsigned nbytes, uint64_t *out) {
    uint64_t v = 0;
    for (unsigned i = 0; i < nbytes; i++) {
        if (s->pos == 32 && !stream_refill(s)) return false;
        v |= (uint64_t)s->buf[s->pos++] << (8 * i);
    }
    *out = v;
    return true;
}

void wsi_fastkey_expand(ws_fastkey *k) {
    for (int l = 0; l < WS_FAST_LANES; l++) {
        k->ysq[l][0] = k->y[l];
        for (int i = 1; i < 64; i++) k->ysq[l][i] = mulmod(k->ysq[l][i - 1], k->ysq[l][i - 1]);
        k->kprefix[l][0] = 0;
        for (unsigned i = 0; i < B; i++) {
            uint64_t K = k->k[l][i];
            for (int q = 0; q < WSI_FAST_PIECES; q++)
                k->kw[l][q][i] =
                    (int16_t)((K >> (q * WSI_FAST_PIECE_BITS)) & ((1u << WSI_FAST_PIECE_BITS) - 1));
            k->kprefix[l][i + 1] = k->kprefix[l][i] + K;
        }
    }
}

static bool derive(key_stream *s, ws_fastkey *k) {
    for (int l = 0; l < WS_FAST_LANES; l++)
        for (unsigned i = 0; i < B; i++) {
            uint64_t w;
            do {
                if (!stream_read(s, 4, &w)) return false;
            } while (w == 0);
            k->k[l][i] = w;
        }
    for (int l = 0; l < WS_FAST_LANES; l++) {
        uint64_t w;
        do {
            if (!stream_read(s, 8, &w)) return false;
            w &= P;
        } while (w == 0 || w >= P); /* rejection keeps y uniform on [1, p) */
        k->y[l] = w;
    }
    wsi_fastkey_expand(k);
    return true;
}

ws_err ws_fastkey_create(const void *seed, size_t seed_len, ws_fastkey **out, ws_error *err) {
    if (!out) return wsi_fail(err, WS_ERR_ARG, NULL, NULL, -1, "fast key: NULL output");
    *out = NULL;
    if (!seed && seed_len)
        return wsi_fail(err, WS_ERR_ARG, NULL, NULL, -1, "fast key: NULL seed of length %zu",
                        seed_len);
    size_t size = (sizeof(ws_fastkey) + 63) / 64 * 64;
    ws_fastkey *k = aligned_alloc(64, size);
    if (!k) return wsi_fail(err, WS_ERR_NOMEM, NULL, NULL, -1, "fast key: out of memory");
    memset(k, 0, sizeof *k);

    key_stream s = {.ctx = EVP_MD_CTX_new(), .seed = seed, .seed_len = seed_len, .pos = 32};
    uint8_t h[32];
    unsigned hlen = 0;
    bool ok = s.ctx && derive(&s, k) && EVP_DigestInit_ex(s.ctx, EVP_sha256(), NULL) == 1 &&
              (!seed_len || EVP_DigestUpdate(s.ctx, seed, seed_len) == 1) &&
              EVP_DigestFinal_ex(s.ctx, h, &hlen) == 1 && hlen == 32;
    EVP_MD_CTX_free(s.ctx);
    if (!ok) {
        free(k);
        return wsi_fail(err, WS_ERR_CRYPTO, NULL, NULL, -1, "fast key: SHA-256 failed");
    }
    wsi_hex_encode(h, 8, k->id);
    *out = k;
    return WS_OK;
}

void ws_fastkey_free(ws_fastkey *k) { free(k); }

const char *ws_fastkey_id(const ws_fastkey *k) { return k ? k->id : NULL; }
