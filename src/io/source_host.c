/* Host-buffer sources: caller-provided tensors in memory, read in place when contiguous and
 * gathered into a reused buffer when strided (see source.h). */
#include "source.h"

#include <string.h>

/* Byte offset of flat element f of a strided tensor (element by element, the general case). */
static int64_t strided_offset(const wsi_src_tensor *t, uint64_t f) {
    int64_t off = 0;
    for (int d = t->ndim - 1; d >= 0; d--) {
        uint64_t n = t->shape[d] ? t->shape[d] : 1;
        off += (int64_t)(f % n) * t->strides[d];
        f /= n;
    }
    return off;
}

ws_err wsi_host_rect(const wsi_src_tensor *t, uint64_t row0, uint64_t col0, uint64_t rows,
                     uint64_t cols, uint64_t l_cols, wsi_readbuf *buf, wsi_rect_fn fn,
                     void *ctx, ws_error *err) {
    size_t es = ws_dtype_size(t->dtype);
    const uint8_t *base = t->data;
    ws_err rc = WS_OK;
    if (t->contiguous) {
        if (cols == l_cols) /* one run */
            return fn(ctx, 0, base + row0 * l_cols * es, rows * cols);
        for (uint64_t r = 0; r < rows && rc == WS_OK; r++)
            rc = fn(ctx, r * cols, base + ((row0 + r) * l_cols + col0) * es, cols);
        return rc;
    }
    int64_t rs, cs;
    bool view = wsi_view_strides(t, &rs, &cs);
    uint64_t per = WSI_READ_CHUNK / es;
    if ((rc = wsi_readbuf_reserve(buf, (size_t)(per * es), err)) != WS_OK) return rc;
    for (uint64_t r = 0; r < rows && rc == WS_OK; r++) {
        uint64_t row = row0 + r;
        if (view && cs == 1) { /* the row's columns are contiguous: in place */
            rc = fn(ctx, r * cols, base + ((int64_t)row * rs + (int64_t)col0) * (int64_t)es, cols);
            continue;
        }
        for (uint64_t c = 0; c < cols && rc == WS_OK; c += per) {
            uint64_t n = cols - c < per ? cols - c : per;
            for (uint64_t k = 0; k < n; k++) {
                int64_t off = view ? (int64_t)row * rs + (int64_t)(col0 + c + k) * cs
                                   : strided_offset(t, row * l_cols + col0 + c + k);
                memcpy(buf->p + k * es, base + off * (int64_t)es, es);
            }
            rc = fn(ctx, r * cols + c, buf->p, n);
        }
    }
    return rc;
}
