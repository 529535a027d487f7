/*
 * The seal of a tensor's fast digest: the raw digest D (the sum over every unit of the tensor,
 * which adds up per piece) does not see length or shape, since zero units add nothing. A
 * tensor's digest is D plus the contribution of one more block, placed right after the data
 * (block index M = ceil(units / B)), whose units encode (canonical dtype, ndim, dims):
 *     sealed = D + y^M * (sum_i K[i] * s_i)   (mod p)
 * The sealed message (data, zeros to the block boundary, seal block) is an injective encoding
 * of (data, dtype, shape), so the collision bound holds with one block more
 * (docs/fast-digest.md, "Sealing").
 */
#include "digest.h"
#include "fastdigest.h"

#include <string.h>

/* Seal codes of the canonical dtypes: part of the file format, never renumbered. */
static uint16_t seal_code(ws_dtype t) {
    static const uint16_t code[] = {
        [WS_BOOL] = 1,  [WS_U8] = 2,   [WS_I8] = 3,       [WS_I16] = 4,      [WS_U16] = 5,
        [WS_I32] = 6,   [WS_U32] = 7,  [WS_I64] = 8,      [WS_U64] = 9,      [WS_F16] = 10,
        [WS_BF16] = 11, [WS_F32] = 12, [WS_F64] = 13,     [WS_F8_E4M3] = 14, [WS_F8_E5M2] = 15,
    };
    _Static_assert(WS_DTYPE__COUNT == 15, "a new dtype needs a seal code (docs/fast-digest.md)");
    return (unsigned)t < WS_DTYPE__COUNT ? code[t] : 0;
}

int wsi_fast_seal_units(ws_dtype canonical_dtype, int ndim, const uint64_t *shape,
                        uint8_t out[WSI_FAST_SEAL_MAX * 2], uint64_t *block) {
    uint16_t c = seal_code(canonical_dtype);
    if (!c || ndim < 0 || ndim > WS_MAX_DIMS || (ndim > 0 && !shape)) return -1;
    uint64_t units = ws_dtype_units(canonical_dtype);
    for (int d = 0; d < ndim; d++)
        if (!wsi_mul_u64(units, shape[d], &units)) return -1;
    *block = units / WSI_FAST_B + (units % WSI_FAST_B != 0);
    if (*block > UINT64_MAX / WSI_FAST_B) return -1;
    uint16_t u[WSI_FAST_SEAL_MAX];
    int n = 0;
    u[n++] = WSI_FAST_SEAL_TAG;
    u[n++] = c;
    u[n++] = (uint16_t)ndim;
    for (int d = 0; d < ndim; d++)
        for (int q = 0; q < 4; q++) u[n++] = (uint16_t)(shape[d] >> (16 * q));
    for (int i = 0; i < n; i++) {
        out[2 * i] = (uint8_t)u[i];
        out[2 * i + 1] = (uint8_t)(u[i] >> 8);
    }
    return n;
}

ws_err ws_fast_seal(const ws_fastkey *k, ws_fast *d, ws_dtype canonical_dtype, int ndim,
                    const uint64_t *shape) {
    if (!k || !d) return WS_ERR_ARG;
    if (!seal_code(canonical_dtype) || ndim < 0 || ndim > WS_MAX_DIMS || (ndim > 0 && !shape))
        return WS_ERR_ARG;
    uint8_t units[WSI_FAST_SEAL_MAX * 2];
    uint64_t block;
    int n = wsi_fast_seal_units(canonical_dtype, ndim, shape, units, &block);
    if (n < 0) return WS_ERR_LIMIT;
    return ws_fast_accumulate(k, d, block * WSI_FAST_B, units, (size_t)n, 2, NULL);
}

ws_err wsi_digest_seal(ws_digest *dg, const ws_fastkey *k, ws_dtype canonical_dtype, int ndim,
                       const uint64_t *shape, const char *tensor, ws_error *err) {
    if (!(dg->algos & WS_ALGO_FAST)) return WS_OK;
    ws_err rc = ws_fast_seal(k, &dg->fast, canonical_dtype, ndim, shape);
    if (rc != WS_OK)
        return wsi_fail(err, rc, NULL, tensor, -1,
                        rc == WS_ERR_LIMIT ? "shape too large for the fast digest's seal"
                                           : "fast digest seal: invalid dtype, shape or key");
    return WS_OK;
}
