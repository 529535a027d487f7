/* The public incremental hasher (ws_hasher_*): canonical SHA-256 of elements fed in order and
 * the fast digest of elements fed at any global offset, through the digest sink every other
 * path uses, so its digests are those of ws_digest_buffer on the whole tensor. */
#include "digest.h"

#include <stdlib.h>

struct ws_hasher {
    wsi_sink sink;
    ws_dtype dtype;
    ws_canon canon;
    int ndim;
    uint64_t shape[WS_MAX_DIMS], numel;
    const ws_fastkey *key;
    uint64_t next;        /* SHA-256: elements fed so far */
    ws_value_stats stats;
    bool finished;
};

ws_err ws_hasher_create(ws_dtype dtype, int ndim, const uint64_t *shape, ws_canon canon,
                        unsigned algos, const ws_fastkey *key, ws_hasher **out, ws_error *err) {
    if (!out) return wsi_fail(err, WS_ERR_ARG, NULL, NULL, -1, "NULL argument");
    *out = NULL;
    if (ws_dtype_size(dtype) == 0)
        return wsi_fail(err, WS_ERR_ARG, NULL, NULL, -1, "invalid dtype %d", (int)dtype);
    if (canon != WS_CANON_BF16 && canon != WS_CANON_NATIVE)
        return wsi_fail(err, WS_ERR_ARG, NULL, NULL, -1, "invalid canonical policy %d",
                        (int)canon);
    if (algos == 0 || (algos & ~(unsigned)(WS_ALGO_SHA256 | WS_ALGO_FAST)))
        return wsi_fail(err, WS_ERR_ARG, NULL, NULL, -1, "algos must be WS_ALGO_SHA256 and/or "
                                                         "WS_ALGO_FAST");
    if ((algos & WS_ALGO_FAST) && !key)
        return wsi_fail(err, WS_ERR_ARG, NULL, NULL, -1, "fast digest requested without a key");
    if (ndim < 0 || ndim > WS_MAX_DIMS || (ndim > 0 && !shape))
        return wsi_fail(err, WS_ERR_ARG, NULL, NULL, -1, "invalid shape (ndim %d)", ndim);
    uint64_t numel = 1;
    for (int d = 0; d < ndim; d++)
        if (!wsi_mul_u64(numel, shape[d], &numel))
            return wsi_fail(err, WS_ERR_LIMIT, NULL, NULL, -1, "shape overflows 64 bits");
    ws_hasher *h = calloc(1, sizeof *h);
    if (!h) return wsi_fail(err, WS_ERR_NOMEM, NULL, NULL, -1, "out of memory");
    ws_err rc = wsi_sink_init(&h->sink, algos, ws_canonical_dtype(dtype, canon), key, err);
    if (rc != WS_OK) {
        free(h);
        return rc;
    }
    h->dtype = dtype;
    h->canon = canon;
    h->ndim = ndim;
    for (int d = 0; d < ndim; d++) h->shape[d] = shape[d];
    h->numel = numel;
    h->key = key;
    *out = h;
    return WS_OK;
}

ws_err ws_hasher_update(ws_hasher *h, uint64_t element_offset, const void *data,
                        uint64_t n_elements, ws_error *err) {
    if (!h) return wsi_fail(err, WS_ERR_ARG, NULL, NULL, -1, "NULL hasher");
    if (h->finished) return wsi_fail(err, WS_ERR_ARG, NULL, NULL, -1, "hasher already final");
    if (n_elements == 0) return WS_OK;
    if (!data) return wsi_fail(err, WS_ERR_ARG, NULL, NULL, -1, "NULL data");
    uint64_t end, bytes;
    if (!wsi_add_u64(element_offset, n_elements, &end) ||
        !wsi_mul_u64(end, ws_dtype_units(ws_canonical_dtype(h->dtype, h->canon)), &bytes) ||
        !wsi_mul_u64(n_elements, ws_dtype_size(h->dtype), &bytes) || bytes > (uint64_t)SIZE_MAX)
        return wsi_fail(err, WS_ERR_LIMIT, NULL, NULL, (int64_t)element_offset,
                        "element range overflows");
    if (end > h->numel)
        return wsi_fail(err, WS_ERR_ARG, NULL, NULL, (int64_t)element_offset,
                        "elements up to %llu fed to a tensor of %llu",
                        (unsigned long long)end, (unsigned long long)h->numel);
    if ((h->sink.algos & WS_ALGO_SHA256) && element_offset != h->next)
        return wsi_fail(err, WS_ERR_ARG, NULL, NULL, (int64_t)element_offset,
                        "SHA-256 needs elements in canonical order: element %llu expected next",
                        (unsigned long long)h->next);
    wsi_sink_feed(&h->sink, h->dtype, h->canon, element_offset, data, n_elements, &h->stats);
    h->next = end;
    return WS_OK;
}

ws_err ws_hasher_final(ws_hasher *h, ws_digest *out, ws_value_stats *stats, ws_error *err) {
    if (!h || !out) return wsi_fail(err, WS_ERR_ARG, NULL, NULL, -1, "NULL argument");
    if (h->finished) return wsi_fail(err, WS_ERR_ARG, NULL, NULL, -1, "hasher already final");
    h->finished = true;
    ws_err rc = wsi_sink_final(&h->sink, out, err);
    if (rc == WS_OK) /* the tensor's digest: sealed with its dtype and shape */
        rc = wsi_digest_seal(out, h->key, h->sink.cdtype, h->ndim, h->shape, NULL, err);
    if (stats) *stats = h->stats;
    return rc;
}

void ws_hasher_free(ws_hasher *h) {
    if (!h) return;
    wsi_sink_destroy(&h->sink);
    free(h);
}
