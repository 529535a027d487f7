/* The device cast/gather of one rectangle (cast.cu), shared with the SHA-256 pipeline. */
#ifndef WS_CUDA_CAST_KERNEL_H
#define WS_CUDA_CAST_KERNEL_H
#include "cuda_internal.h"

struct wsc_grect {
    const uint8_t *ptr;
    int64_t row_stride_b, col_stride_b;
    uint64_t rows, cols;
    uint32_t dt, es, cast, out_es;
};

WSC_HIDDEN ws_err wsc_grect_make(const wsi_dev_rect *r, ws_canon canon, wsc_grect *g,
                                 ws_error *err);
/* Canonical elements [e0, e0 + n) of the rectangle (row-major) into dst (device), stream-
 * ordered; NaN/Inf counts added to counts[0], counts[1] (device; may be NULL). */
WSC_HIDDEN ws_err wsc_gather(const wsc_grect *g, uint64_t e0, uint64_t n, void *dst,
                             unsigned long long *counts, cudaStream_t s, int sms,
                             ws_error *err);
#endif
