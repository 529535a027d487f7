/* Element-level differences: how many, the first, the largest absolute and ULP distance. */
#include "internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

void ws_diff_init(ws_diff *d) {
    if (!d) return;
    memset(d, 0, sizeof *d);
    d->first = UINT64_MAX;
}

ws_err ws_unravel(uint64_t i, int ndim, const uint64_t *shape, uint64_t *coords,
                  ws_error *err) {
    if (ndim < 0 || ndim > WS_MAX_DIMS)
        return wsi_fail(err, WS_ERR_ARG, NULL, NULL, -1, "%d dimensions (at most %d)", ndim,
                        WS_MAX_DIMS);
    if (ndim > 0 && (!shape || !coords))
        return wsi_fail(err, WS_ERR_ARG, NULL, NULL, -1, "NULL %s", shape ? "coords" : "shape");
    wsi_unravel(i, ndim, shape, coords);
    return WS_OK;
}

void wsi_unravel(uint64_t i, int ndim, const uint64_t *shape, uint64_t *coords) {
    for (int d = ndim - 1; d >= 0; d--) {
        uint64_t s = shape[d] ? shape[d] : 1;
        coords[d] = i % s;
        i /= s;
    }
}

static uint64_t load_bits(const void *p, uint64_t i, size_t sz) {
    uint64_t v = 0;
    memcpy(&v, (const uint8_t *)p + i * sz, sz); /* little-endian host */
    return v;
}

/* Distance between two values counted in representable steps: floats by their ordered bit
 * patterns (sign-magnitude folded onto a line), integers by value. Saturates. */
static uint64_t ulp_distance(ws_dtype t, uint64_t a, uint64_t b) {
    size_t sz = ws_dtype_size(t);
    int bits = (int)(sz * 8);
    if (ws_dtype_is_float(t)) {
        uint64_t sign = 1ull << (bits - 1), mag = sign - 1;
        __int128 oa = (a & sign) ? -(__int128)(a & mag) : (__int128)(a & mag);
        __int128 ob = (b & sign) ? -(__int128)(b & mag) : (__int128)(b & mag);
        __int128 d = oa > ob ? oa - ob : ob - oa;
        return d > (__int128)UINT64_MAX ? UINT64_MAX : (uint64_t)d;
    }
    bool is_signed = t == WS_I8 || t == WS_I16 || t == WS_I32 || t == WS_I64;
    __int128 va = a, vb = b;
    if (is_signed && bits < 64) {
        uint64_t sign = 1ull << (bits - 1);
        if (a & sign) va = (__int128)a - ((__int128)1 << bits);
        if (b & sign) vb = (__int128)b - ((__int128)1 << bits);
    } else if (is_signed) {
        va = (int64_t)a;
        vb = (int64_t)b;
    }
    __int128 d = va > vb ? va - vb : vb - va;
    return d > (__int128)UINT64_MAX ? UINT64_MAX : (uint64_t)d;
}

ws_err ws_diff_update(ws_diff *d, ws_dtype t, uint64_t at, const void *a, const void *b,
                      uint64_t n, ws_error *err) {
    if (!d) return wsi_fail(err, WS_ERR_ARG, NULL, NULL, -1, "NULL diff");
    if (!ws_dtype_name(t)) return wsi_fail(err, WS_ERR_DTYPE, NULL, NULL, -1, "invalid dtype %d", (int)t);
    if (n && (!a || !b)) return wsi_fail(err, WS_ERR_ARG, NULL, NULL, -1, "NULL %s", a ? "b" : "a");
    uint64_t bytes;
    if (!wsi_mul_u64(n, ws_dtype_size(t), &bytes) || bytes > SIZE_MAX)
        return wsi_fail(err, WS_ERR_LIMIT, NULL, NULL, -1, "%llu elements overflow a size",
                        (unsigned long long)n);
    wsi_diff_update(d, t, at, a, b, n);
    return WS_OK;
}

void wsi_diff_update(ws_diff *d, ws_dtype t, uint64_t at, const void *a, const void *b,
                     uint64_t n) {
    size_t sz = ws_dtype_size(t);
    d->compared += n;
    if (memcmp(a, b, n * sz) == 0) return;
    for (uint64_t i = 0; i < n; i++) {
        uint64_t x = load_bits(a, i, sz), y = load_bits(b, i, sz);
        if (x == y) continue;
        d->differ++;
        double va = ws_element_as_double(t, a, i), vb = ws_element_as_double(t, b, i);
        if (at + i < d->first) {
            d->first = at + i;
            d->first_a = va;
            d->first_b = vb;
        }
        if (!isnan(va) && !isnan(vb)) {
            double ad = fabs(va - vb);
            if (ad > d->max_abs || isnan(d->max_abs)) d->max_abs = ad;
        }
        uint64_t u = ulp_distance(t, x, y);
        if (u > d->max_ulp) d->max_ulp = u;
    }
}

ws_err ws_diff_tensors(const ws_tensor *a, const ws_tensor *b, ws_diff *out, ws_error *err) {
    ws_diff_init(out);
    if (a->ndim != b->ndim || memcmp(a->shape, b->shape, sizeof(uint64_t) * (size_t)a->ndim))
        return wsi_fail(err, WS_ERR_SHAPE, b->file, b->name, -1, "shapes differ");
    if (a->dtype == b->dtype) {
        wsi_diff_update(out, a->dtype, 0, a->data, b->data, a->numel);
        return WS_OK;
    }
    ws_dtype ca = ws_canonical_dtype(a->dtype, WS_CANON_BF16);
    ws_dtype cb = ws_canonical_dtype(b->dtype, WS_CANON_BF16);
    if (ca != cb)
        return wsi_fail(err, WS_ERR_DTYPE, b->file, b->name, -1,
                        "dtypes %s and %s have no common canonical form",
                        ws_dtype_name(a->dtype), ws_dtype_name(b->dtype));
    enum { CH = 65536 };
    uint8_t *ba = malloc(CH * 2), *bb = malloc(CH * 2);
    if (!ba || !bb) {
        free(ba);
        free(bb);
        return wsi_fail(err, WS_ERR_NOMEM, NULL, NULL, -1, "out of memory");
    }
    size_t sa = ws_dtype_size(a->dtype), sb = ws_dtype_size(b->dtype);
    for (uint64_t at = 0; at < a->numel; at += CH) {
        uint64_t k = a->numel - at < CH ? a->numel - at : CH;
        wsi_cast_to_canonical(a->dtype, WS_CANON_BF16, (const uint8_t *)a->data + at * sa, k, ba,
                             NULL);
        wsi_cast_to_canonical(b->dtype, WS_CANON_BF16, (const uint8_t *)b->data + at * sb, k, bb,
                             NULL);
        wsi_diff_update(out, ca, at, ba, bb, k);
    }
    free(ba);
    free(bb);
    return WS_OK;
}
