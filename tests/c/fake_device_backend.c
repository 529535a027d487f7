/*
 * A device backend that runs on the host: "device" pointers are host pointers. It lets CI,
 * which has no GPU, test what sits around the CUDA library: the loader (ABI and symbol
 * checks), the descriptors the core builds from strided views, the dispatch and the results'
 * finishing, against the CPU path. Built as a module next to the tests (see CMakeLists.txt);
 * FAKE_ABI overrides the ABI it claims.
 */
#include "device_backend.h"

#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifndef FAKE_ABI
#define FAKE_ABI WSI_DEVICE_BACKEND_ABI
#endif

static ws_err fail(ws_error *err, ws_err code, const char *what) {
    if (err) {
        ws_error_clear(err);
        err->code = code;
        snprintf(err->what, sizeof err->what, "fake backend: %s", what);
    }
    return code;
}

static int pointer_device(const void *ptr) { return ptr ? 0 : -1; }

static ws_err fake_read(const void *ptr, size_t n, void *dst, void *stream, ws_error *err) {
    if (n && (!ptr || !dst)) return fail(err, WS_ERR_ARG, "NULL pointer");
    if (n) memcpy(dst, ptr, n);
    return WS_OK;
}

/* Canonical element (r, c) of a rectangle into out (2 or 1 bytes, or the stored size). */
static size_t element(const wsi_dev_rect *r, ws_canon canon, uint64_t row, uint64_t col,
                      uint8_t *out, ws_value_stats *st) {
    size_t es = ws_dtype_size(r->dtype);
    static const uint8_t zero[8] = {0}; /* a NULL ptr: zeros (sha256_rects only) */
    const uint8_t *p = !r->ptr ? zero
                               : (const uint8_t *)r->ptr +
                                     (row * (uint64_t)r->row_stride + col * (uint64_t)r->col_stride) * es;
    if (ws_cast_to_canonical(r->dtype, canon, p, 1, out, st, NULL) != WS_OK) return 0;
    return ws_dtype_size(ws_canonical_dtype(r->dtype, canon));
}

static ws_err fake_fast(const struct ws_fastkey *key, const wsi_dev_rect *rects, size_t n,
                        ws_canon canon, ws_fast *out, ws_value_stats *stats, void *stream,
                        ws_error *err) {
    for (size_t i = 0; i < n; i++) {
        const wsi_dev_rect *r = &rects[i];
        ws_dtype cd = ws_canonical_dtype(r->dtype, canon);
        unsigned units = ws_dtype_units(cd);
        int ub = ws_dtype_size(cd) == 1 ? 1 : 2;
        ws_fast acc = {{0, 0, 0}};
        ws_value_stats st = {0, 0};
        for (uint64_t row = 0; row < r->rows; row++)
            for (uint64_t c = 0; c < r->cols; c++) {
                uint8_t e[8];
                if (!element(r, canon, row, c, e, &st))
                    return fail(err, WS_ERR_DTYPE, "invalid dtype or policy");
                ws_err rc = ws_fast_accumulate(key, &acc,
                                               r->hf_unit0 + row * r->hf_row_units + c * units,
                                               e, units, ub, err);
                if (rc != WS_OK) return rc;
            }
        out[i] = acc;
        if (stats) stats[i] = st;
    }
    return WS_OK;
}

/* SGLang's gpu_tensor_hash on a host byte image (an independent reading of its Triton code). */
static uint32_t fmix32(uint32_t x) {
    x ^= x >> 16;
    x *= 0x85EBCA6Bu;
    x ^= x >> 13;
    x *= 0xC2B2AE35u;
    x ^= x >> 16;
    return x;
}
static uint32_t rotl32(uint32_t x, int r) { return x << r | x >> (32 - r); }
static uint64_t sglang_image(const uint8_t *img, uint64_t nbytes) {
    uint64_t n = (nbytes + 3) / 4;
    if (!n) return 0;
    uint32_t seed = 0x243F6A88u, s1 = seed, s2 = (uint32_t)((uint64_t)seed * 0x9E3779B1u) ^ 0xDEADBEEFu;
    uint64_t total = 0;
    for (uint64_t t0 = 0; t0 < n; t0 += 8192) {
        uint32_t h1 = 0, h2 = 0;
        for (uint64_t w = t0; w < n && w < t0 + 8192; w++) {
            uint32_t v = 0;
            for (int b = 0; b < 4; b++)
                if (4 * w + b < nbytes) v |= (uint32_t)img[4 * w + b] << (8 * b);
            uint32_t iu = (uint32_t)w;
            h1 += fmix32(v ^ ((iu * 0x27D4EB2Du + s1) ^ rotl32(iu, 15)));
            h2 += fmix32(v ^ ((iu * 0x165667B1u + s2) ^ rotl32(iu, 13)));
        }
        uint32_t nb = (uint32_t)(n * 4);
        total += (uint64_t)fmix32(h1 ^ nb) << 32 | fmix32(h2 ^ nb);
    }
    total ^= total >> 30;
    total *= 0xBF58476D1CE4E5B9ull;
    total ^= total >> 27;
    total *= 0x94D049BB133111EBull;
    total ^= total >> 31;
    return total;
}

static ws_err fake_sglang_batch(const wsi_dev_segment *segs, size_t n_segs,
                                const wsi_dev_sglang_tensor *t, size_t n, uint64_t *out,
                                void *stream, ws_error *err) {
    for (size_t i = 0; i < n; i++) {
        uint8_t *img = calloc(t[i].total_bytes + 1, 1);
        if (!img) return fail(err, WS_ERR_NOMEM, "out of memory");
        for (size_t k = t[i].seg0; k < t[i].seg0 + t[i].n_segs && k < n_segs; k++) {
            const wsi_dev_segment *s = &segs[k];
            size_t ds = ws_dtype_size(s->dst_dtype), ss = ws_dtype_size(s->src_dtype);
            for (uint64_t r = 0; r < s->rows; r++) {
                const uint8_t *src = (const uint8_t *)s->src + (int64_t)r * s->src_row_stride;
                uint8_t *dst = img + s->dst_offset + r * s->dst_row_stride;
                if (s->dst_offset + r * s->dst_row_stride + s->row_bytes > t[i].total_bytes) {
                    free(img);
                    return fail(err, WS_ERR_ARG, "segment past the tensor's end");
                }
                if (s->src_dtype == s->dst_dtype) {
                    memcpy(dst, src, s->row_bytes);
                } else {
                    for (uint64_t e = 0; e < s->row_bytes / ds; e++)
                        if (ws_cast_to_canonical(s->src_dtype, WS_CANON_BF16, src + e * ss, 1,
                                                 dst + e * ds, NULL, err) != WS_OK) {
                            free(img);
                            return err ? err->code : WS_ERR_DTYPE;
                        }
                }
            }
        }
        out[i] = sglang_image(img, t[i].total_bytes);
        free(img);
    }
    return WS_OK;
}

static ws_err fake_sglang(const wsi_dev_segment *segs, size_t n, uint64_t total_bytes,
                          uint64_t *out, void *stream, ws_error *err) {
    wsi_dev_sglang_tensor t = {0, n, total_bytes};
    return fake_sglang_batch(segs, n, &t, 1, out, stream, err);
}

static ws_err fake_sha(const wsi_dev_rect *rects, size_t n_rects, const wsi_dev_tensor *t,
                       size_t n, ws_canon canon, int threads, uint8_t (*out)[32],
                       ws_value_stats *stats, void *stream, ws_error *err) {
    for (size_t i = 0; i < n; i++) {
        EVP_MD_CTX *ctx = EVP_MD_CTX_new();
        ws_value_stats st = {0, 0};
        if (!ctx || EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) != 1) {
            EVP_MD_CTX_free(ctx);
            return fail(err, WS_ERR_CRYPTO, "SHA-256");
        }
        for (size_t k = t[i].rect0; k < t[i].rect0 + t[i].n_rects && k < n_rects; k++)
            for (uint64_t row = 0; row < rects[k].rows; row++)
                for (uint64_t c = 0; c < rects[k].cols; c++) {
                    uint8_t e[8];
                    size_t len = element(&rects[k], canon, row, c, e, &st);
                    EVP_DigestUpdate(ctx, e, len);
                }
        unsigned len = 0;
        EVP_DigestFinal_ex(ctx, out[i], &len);
        EVP_MD_CTX_free(ctx);
        if (stats) stats[i] = st;
    }
    return WS_OK;
}

static ws_err fake_cast(const wsi_dev_rect *r, ws_canon canon, void *dst, ws_value_stats *stats,
                        void *stream, ws_error *err) {
    uint8_t *d = dst;
    ws_value_stats st = {0, 0};
    for (uint64_t row = 0; row < r->rows; row++)
        for (uint64_t c = 0; c < r->cols; c++) d += element(r, canon, row, c, d, &st);
    if (stats) *stats = st;
    return WS_OK;
}

static ws_err fake_memory(wsi_dev_memory *out, ws_error *err) {
    out->device_bytes = out->host_bytes = 0;
    return WS_OK;
}

static const wsi_device_backend table = {
    .abi = FAKE_ABI,
    .name = "fake",
    .pointer_device = pointer_device,
    .read = fake_read,
    .fast_rects = fake_fast,
    .sglang_hash = fake_sglang,
    .sglang_hash_batch = fake_sglang_batch,
    .sha256_rects = fake_sha,
    .cast = fake_cast,
    .memory = fake_memory,
};

__attribute__((visibility("default"))) const wsi_device_backend *ws_device_backend_v1(void) {
    return &table;
}
