/* Device-buffer sources: tensors in GPU memory, read through the device backend's table
 * (device_backend.h), copied into a reused host buffer a band at a time. The fast digest of a
 * device tensor's pieces does not come this way: partials hand whole rectangles to the
 * backend's fast_rects (partials.c). */
#include "source.h"

ws_err wsi_device_rect(const ws_source *s, const wsi_src_tensor *t, uint64_t row0,
                       uint64_t col0, uint64_t rows, uint64_t cols, uint64_t l_cols,
                       wsi_readbuf *buf, wsi_rect_fn fn, void *ctx, ws_error *err) {
    size_t es = ws_dtype_size(t->dtype);
    int64_t rs, cs;
    if (!s->dev || !wsi_view_strides(t, &rs, &cs))
        return wsi_fail(err, WS_ERR_ARG, NULL, t->name, -1, "device tensor without a backend");
    ws_err rc = wsi_readbuf_reserve(buf, WSI_READ_CHUNK, err);
    uint64_t per = WSI_READ_CHUNK / es;
    const uint8_t *base = t->data;
    for (uint64_t r = 0; r < rows && rc == WS_OK; r++) {
        int64_t row = (int64_t)(row0 + r);
        for (uint64_t c = 0; c < cols && rc == WS_OK; c += (cs == 1 ? per : 1)) {
            uint64_t m = cs == 1 ? (cols - c < per ? cols - c : per) : 1;
            const uint8_t *p = base + (row * rs + (int64_t)(col0 + c) * cs) * (int64_t)es;
            rc = s->dev->read(p, (size_t)(m * es), buf->p, t->stream, err);
            if (rc == WS_OK) rc = fn(ctx, r * cols + c, buf->p, m);
        }
    }
    (void)l_cols;
    return rc;
}
