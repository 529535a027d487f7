/* Digests of a caller's buffer (the Python binding's numpy arrays and torch tensors): the same
 * cast-then-digest path as a stored tensor. */
#include "digest.h"

#include <stdlib.h>

ws_err ws_digest_buffer(ws_dtype t, ws_canon c, const void *data, int ndim, const uint64_t *shape,
                        unsigned algos, const ws_fastkey *key, ws_digest *out,
                        ws_value_stats *stats, ws_error *err) {
    if (!out) return wsi_fail(err, WS_ERR_ARG, NULL, NULL, -1, "NULL output");
    if (!ws_dtype_name(t)) return wsi_fail(err, WS_ERR_ARG, NULL, NULL, -1, "invalid dtype %d", (int)t);
    if (c != WS_CANON_BF16 && c != WS_CANON_NATIVE)
        return wsi_fail(err, WS_ERR_ARG, NULL, NULL, -1, "invalid canonical policy %d", (int)c);
    if (ndim < 0 || ndim > WS_MAX_DIMS || (ndim > 0 && !shape))
        return wsi_fail(err, WS_ERR_ARG, NULL, NULL, -1, "invalid shape (ndim %d)", ndim);
    uint64_t numel = 1;
    for (int d = 0; d < ndim; d++)
        if (!wsi_mul_u64(numel, shape[d], &numel))
            return wsi_fail(err, WS_ERR_LIMIT, NULL, NULL, -1, "shape overflows 64 bits");
    if (!data && numel > 0) return wsi_fail(err, WS_ERR_ARG, NULL, NULL, -1, "NULL data");
    uint64_t nbytes;
    if (!wsi_mul_u64(numel, ws_dtype_size(t), &nbytes) || nbytes > (uint64_t)SIZE_MAX)
        return wsi_fail(err, WS_ERR_LIMIT, NULL, NULL, -1, "%llu elements overflow a size",
                        (unsigned long long)numel);
    wsi_sink s;
    ws_err rc = wsi_sink_init(&s, algos, ws_canonical_dtype(t, c), key, err);
    if (rc != WS_OK) return rc;
    if (numel) wsi_sink_feed(&s, t, c, 0, data, numel, stats);
    rc = wsi_sink_final(&s, out, err);
    if (rc == WS_OK) rc = wsi_digest_seal(out, key, s.cdtype, ndim, shape, NULL, err);
    wsi_sink_destroy(&s);
    return rc;
}
