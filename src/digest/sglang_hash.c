/*
 * SGLang's tensor hash, both of SGLang's paths (sglang.srt.managers.mm_utils.tensor_hash):
 * CUDA tensors get gpu_tensor_hash (sglang_hash.h has the algorithm), CPU tensors the first 8
 * bytes of SHA-256 read big-endian. The streaming hasher takes a tensor's bytes as pieces:
 * for the CUDA path in any order at any byte offset (each tile's sums are sums over its
 * words, and the few words a piece boundary cuts are assembled before they are hashed), for
 * the SHA-256 path in order; on both, bytes never given are zero, as the padding rows of an
 * engine's local tensor are. A byte given twice is an error, not a silently different hash.
 */
#include "sglang_hash.h"
#include "weightsum_experimental.h"

#include <openssl/evp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

/* ---- kernel choice: once from the CPU's features, or forced (tests, benchmarks) ------------ */

typedef struct sgl_kernel {
    const char *name;
    wsi_sgl_run_fn run;
} sgl_kernel;

enum { SK_SCALAR, SK_AVX2, SK_AVX512, SK__COUNT };

static const sgl_kernel sgl_kernels[SK__COUNT] = {
    [SK_SCALAR] = {"scalar", wsi_sgl_run_scalar},
#ifdef WSI_SGL_HAVE_X86
    [SK_AVX2] = {"avx2", wsi_sgl_run_avx2},
    [SK_AVX512] = {"avx512", wsi_sgl_run_avx512},
#else
    [SK_AVX2] = {"avx2", NULL},
    [SK_AVX512] = {"avx512", NULL},
#endif
};

static pthread_once_t sgl_once = PTHREAD_ONCE_INIT;
static bool sgl_ok[SK__COUNT];
static int sgl_best;
static atomic_int sgl_forced = -1;

static void sgl_detect(void) {
    sgl_ok[SK_SCALAR] = true;
#ifdef WSI_SGL_HAVE_X86
    __builtin_cpu_init(); /* libgcc checks that the OS saves the wider registers too */
    sgl_ok[SK_AVX2] = __builtin_cpu_supports("avx2");
    sgl_ok[SK_AVX512] = __builtin_cpu_supports("avx512f");
#endif
    for (int i = 0; i < SK__COUNT; i++)
        if (sgl_ok[i]) sgl_best = i; /* the table is in speed order */
}

static const sgl_kernel *sgl_current(void) {
    pthread_once(&sgl_once, sgl_detect);
    int f = atomic_load_explicit(&sgl_forced, memory_order_relaxed);
    return &sgl_kernels[f >= 0 ? f : sgl_best];
}

wsi_sgl_run_fn wsi_sgl_kernel(void) { return sgl_current()->run; }

ws_err ws_sglang_set_kernel(const char *name) {
    if (!name) return WS_ERR_ARG;
    pthread_once(&sgl_once, sgl_detect);
    if (strcmp(name, "auto") == 0) {
        atomic_store(&sgl_forced, -1);
        return WS_OK;
    }
    for (int i = 0; i < SK__COUNT; i++) {
        if (strcmp(name, sgl_kernels[i].name) != 0) continue;
        if (!sgl_ok[i]) return WS_ERR_NOTFOUND;
        atomic_store(&sgl_forced, i);
        return WS_OK;
    }
    return WS_ERR_ARG;
}

const char *ws_sglang_kernel(void) { return sgl_current()->name; }

/* ---- the hasher ---------------------------------------------------------------------------- */

typedef struct span {
    uint64_t a, b; /* bytes [a, b) given */
} span;

typedef struct part_word {
    uint64_t index;  /* word index */
    uint8_t byte[4];
    uint8_t mask;    /* bit j: byte j given */
} part_word;

struct ws_sglang_hasher {
    ws_sglang_path path;
    uint64_t total;  /* bytes */
    uint64_t words;  /* ceil(total / 4) */
    /* CUDA path */
    uint32_t (*tiles)[2];
    span *spans;     /* sorted, disjoint, non-adjacent */
    size_t nspans, capspans;
    part_word *parts;
    size_t nparts, capparts;
    wsi_sgl_run_fn run;
    /* CPU path */
    EVP_MD_CTX *sha;
    uint64_t next;   /* next byte SHA-256 expects */
    bool done;
};

static const uint8_t zeros[16384];

/* Words [index, index + n) at data, split at tile boundaries. */
static void add_words(ws_sglang_hasher *h, uint64_t index, const uint8_t *data, uint64_t n) {
    while (n) {
        uint64_t t = index / WSI_SGL_TILE_WORDS;
        uint64_t k = WSI_SGL_TILE_WORDS - index % WSI_SGL_TILE_WORDS;
        if (k > n) k = n;
        h->run(data, (uint32_t)index, (size_t)k, h->tiles[t]);
        index += k;
        data += 4 * k;
        n -= k;
    }
}

static void add_zero_words(ws_sglang_hasher *h, uint64_t index, uint64_t n) {
    while (n) {
        uint64_t k = n < sizeof zeros / 4 ? n : sizeof zeros / 4;
        add_words(h, index, zeros, k);
        index += k;
        n -= k;
    }
}

/* Record [a, b) as given; WS_ERR_ARG when it overlaps bytes given before. */
static ws_err add_span(ws_sglang_hasher *h, uint64_t a, uint64_t b, ws_error *err) {
    size_t lo = 0, hi = h->nspans; /* first span with .a >= a */
    if (hi && h->spans[hi - 1].a < a) lo = hi; /* in-order updates: past the last one */
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (h->spans[mid].a < a) lo = mid + 1;
        else hi = mid;
    }
    span *prev = lo ? &h->spans[lo - 1] : NULL, *next = lo < h->nspans ? &h->spans[lo] : NULL;
    if ((prev && prev->b > a) || (next && next->a < b))
        return wsi_fail(err, WS_ERR_ARG, NULL, NULL, (int64_t)a,
                        "bytes %llu..%llu of the tensor were given twice",
                        (unsigned long long)a, (unsigned long long)b);
    bool join_prev = prev && prev->b == a, join_next = next && next->a == b;
    if (join_prev && join_next) {
        prev->b = next->b;
        memmove(next, next + 1, (h->nspans - lo - 1) * sizeof *next);
        h->nspans--;
    } else if (join_prev) {
        prev->b = b;
    } else if (join_next) {
        next->a = a;
    } else {
        if (h->nspans == h->capspans) {
            size_t cap = h->capspans ? 2 * h->capspans : 8;
            span *g = realloc(h->spans, cap * sizeof *g);
            if (!g) return wsi_fail(err, WS_ERR_NOMEM, NULL, NULL, -1, "out of memory");
            h->spans = g;
            h->capspans = cap;
        }
        memmove(&h->spans[lo + 1], &h->spans[lo], (h->nspans - lo) * sizeof *h->spans);
        h->spans[lo] = (span){a, b};
        h->nspans++;
    }
    return WS_OK;
}

/* Bytes [off, off + n) of word `index` (n < 4 or off > 0): kept until the word is whole. */
static ws_err add_part(ws_sglang_hasher *h, uint64_t index, unsigned off, const uint8_t *p,
                       unsigned n, ws_error *err) {
    part_word *w = NULL;
    for (size_t i = h->nparts; i-- > 0;) /* in-order updates find it at the end */
        if (h->parts[i].index == index) {
            w = &h->parts[i];
            break;
        }
    if (!w) {
        if (h->nparts == h->capparts) {
            size_t cap = h->capparts ? 2 * h->capparts : 8;
            part_word *g = realloc(h->parts, cap * sizeof *g);
            if (!g) return wsi_fail(err, WS_ERR_NOMEM, NULL, NULL, -1, "out of memory");
            h->parts = g;
            h->capparts = cap;
        }
        w = &h->parts[h->nparts++];
        memset(w, 0, sizeof *w);
        w->index = index;
    }
    for (unsigned j = 0; j < n; j++) {
        w->byte[off + j] = p[j];
        w->mask |= (uint8_t)(1u << (off + j));
    }
    return WS_OK;
}

ws_err ws_sglang_hasher_create(ws_sglang_path path, uint64_t total_bytes, ws_sglang_hasher **out,
                               ws_error *err) {
    if (!out) return wsi_fail(err, WS_ERR_ARG, NULL, NULL, -1, "NULL argument");
    *out = NULL;
    if (path != WS_SGLANG_CUDA && path != WS_SGLANG_CPU)
        return wsi_fail(err, WS_ERR_ARG, NULL, NULL, -1, "invalid SGLang hash path");
    if (total_bytes > (UINT64_C(1) << 50))
        return wsi_fail(err, WS_ERR_LIMIT, NULL, NULL, -1, "a tensor of %llu bytes is too large",
                        (unsigned long long)total_bytes);
    ws_sglang_hasher *h = calloc(1, sizeof *h);
    if (!h) return wsi_fail(err, WS_ERR_NOMEM, NULL, NULL, -1, "out of memory");
    h->path = path;
    h->total = total_bytes;
    h->words = (total_bytes + 3) / 4;
    bool ok = true;
    if (path == WS_SGLANG_CUDA) {
        uint64_t ntiles = (h->words + WSI_SGL_TILE_WORDS - 1) / WSI_SGL_TILE_WORDS;
        h->run = wsi_sgl_kernel();
        ok = !ntiles || (h->tiles = calloc((size_t)ntiles, sizeof *h->tiles));
    } else {
        ok = (h->sha = EVP_MD_CTX_new()) && EVP_DigestInit_ex(h->sha, EVP_sha256(), NULL) == 1;
    }
    if (!ok) {
        ws_sglang_hasher_free(h);
        return wsi_fail(err, path == WS_SGLANG_CPU ? WS_ERR_CRYPTO : WS_ERR_NOMEM, NULL, NULL, -1,
                        path == WS_SGLANG_CPU ? "SHA-256 could not start" : "out of memory");
    }
    *out = h;
    return WS_OK;
}

void ws_sglang_hasher_free(ws_sglang_hasher *h) {
    if (!h) return;
    free(h->tiles);
    free(h->spans);
    free(h->parts);
    EVP_MD_CTX_free(h->sha);
    free(h);
}

static ws_err sha_zeros(ws_sglang_hasher *h, uint64_t n, ws_error *err) {
    while (n) {
        size_t k = n < sizeof zeros ? (size_t)n : sizeof zeros;
        if (EVP_DigestUpdate(h->sha, zeros, k) != 1)
            return wsi_fail(err, WS_ERR_CRYPTO, NULL, NULL, -1, "SHA-256 failed");
        n -= k;
    }
    return WS_OK;
}

ws_err ws_sglang_hasher_update(ws_sglang_hasher *h, uint64_t offset, const void *data, size_t n,
                               ws_error *err) {
    if (!h || (!data && n)) return wsi_fail(err, WS_ERR_ARG, NULL, NULL, -1, "NULL argument");
    if (h->done) return wsi_fail(err, WS_ERR_ARG, NULL, NULL, -1, "hasher already finished");
    if (offset > h->total || n > h->total - offset)
        return wsi_fail(err, WS_ERR_ARG, NULL, NULL, (int64_t)offset,
                        "bytes %llu..%llu are past the tensor's %llu bytes",
                        (unsigned long long)offset, (unsigned long long)(offset + n),
                        (unsigned long long)h->total);
    if (n == 0) return WS_OK;
    if (h->path == WS_SGLANG_CPU) {
        if (offset < h->next)
            return wsi_fail(err, WS_ERR_ARG, NULL, NULL, (int64_t)offset,
                            "SHA-256 takes bytes in order: %llu given after %llu",
                            (unsigned long long)offset, (unsigned long long)h->next);
        ws_err rc = sha_zeros(h, offset - h->next, err);
        if (rc != WS_OK) return rc;
        if (EVP_DigestUpdate(h->sha, data, n) != 1)
            return wsi_fail(err, WS_ERR_CRYPTO, NULL, NULL, -1, "SHA-256 failed");
        h->next = offset + n;
        return WS_OK;
    }
    ws_err rc = add_span(h, offset, offset + n, err);
    const uint8_t *p = data;
    uint64_t end = offset + n;
    if (rc == WS_OK && offset % 4) { /* head: part of a word */
        unsigned off = (unsigned)(offset % 4), k = 4 - off;
        if (k > n) k = (unsigned)n;
        rc = add_part(h, offset / 4, off, p, k, err);
        p += k;
        offset += k;
    }
    if (rc == WS_OK && offset < end) {
        uint64_t whole = (end - offset) / 4;
        add_words(h, offset / 4, p, whole);
        p += 4 * whole;
        offset += 4 * whole;
        if (offset < end) rc = add_part(h, offset / 4, 0, p, (unsigned)(end - offset), err);
    }
    return rc;
}

ws_err ws_sglang_hasher_final(ws_sglang_hasher *h, uint64_t *out, ws_error *err) {
    if (!h || !out) return wsi_fail(err, WS_ERR_ARG, NULL, NULL, -1, "NULL argument");
    if (h->done) return wsi_fail(err, WS_ERR_ARG, NULL, NULL, -1, "hasher already finished");
    h->done = true;
    if (h->path == WS_SGLANG_CPU) {
        uint8_t md[32];
        unsigned len = 0;
        ws_err rc = sha_zeros(h, h->total - h->next, err);
        if (rc != WS_OK) return rc;
        if (EVP_DigestFinal_ex(h->sha, md, &len) != 1 || len != 32)
            return wsi_fail(err, WS_ERR_CRYPTO, NULL, NULL, -1, "SHA-256 failed");
        uint64_t v = 0;
        for (int i = 0; i < 8; i++) v = v << 8 | md[i];
        *out = v;
        return WS_OK;
    }
    if (h->words == 0) {
        *out = 0;
        return WS_OK;
    }
    /* Words no byte was given for are zero words; words a boundary cuts are in parts. */
    uint64_t at = 0; /* first byte not yet accounted for */
    for (size_t i = 0; i <= h->nspans; i++) {
        uint64_t g1 = i < h->nspans ? h->spans[i].a : 4 * h->words;
        uint64_t w0 = (at + 3) / 4, w1 = g1 / 4;
        if (w1 > w0) add_zero_words(h, w0, w1 - w0);
        if (i < h->nspans) at = h->spans[i].b;
    }
    for (size_t i = 0; i < h->nparts; i++) {
        const part_word *w = &h->parts[i];
        add_words(h, w->index, w->byte, 1);
    }
    uint64_t sum = 0, ntiles = (h->words + WSI_SGL_TILE_WORDS - 1) / WSI_SGL_TILE_WORDS;
    for (uint64_t t = 0; t < ntiles; t++) sum += wsi_sgl_tile(h->tiles[t][0], h->tiles[t][1], h->words);
    *out = wsi_sgl_final(sum);
    return WS_OK;
}

ws_err ws_sglang_hash(ws_sglang_path path, const void *data, uint64_t nbytes, uint64_t *out,
                      ws_error *err) {
    if (!out || (!data && nbytes)) return wsi_fail(err, WS_ERR_ARG, NULL, NULL, -1, "NULL argument");
    if (nbytes > SIZE_MAX) return wsi_fail(err, WS_ERR_LIMIT, NULL, NULL, -1, "tensor too large");
    ws_sglang_hasher *h = NULL;
    ws_err rc = ws_sglang_hasher_create(path, nbytes, &h, err);
    if (rc == WS_OK) rc = ws_sglang_hasher_update(h, 0, data, (size_t)nbytes, err);
    if (rc == WS_OK) rc = ws_sglang_hasher_final(h, out, err);
    ws_sglang_hasher_free(h);
    return rc;
}

void ws_sglang_hex(uint64_t v, char out[17]) {
    static const char hx[] = "0123456789abcdef";
    for (int i = 15; i >= 0; i--, v >>= 4) out[i] = hx[v & 15];
    out[16] = 0;
}

ws_err ws_sglang_from_hex(const char *hex, uint64_t *out) {
    if (!hex || !out || strlen(hex) != 16) return WS_ERR_ARG;
    uint64_t v = 0;
    for (int i = 0; i < 16; i++) {
        char c = hex[i];
        int d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10
                : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
        if (d < 0) return WS_ERR_ARG;
        v = v << 4 | (uint64_t)d;
    }
    *out = v;
    return WS_OK;
}
