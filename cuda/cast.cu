/*
 * The canonical cast of a rectangle on the device (device_cast.cuh's rules, dtype.c's
 * results) into contiguous canonical elements, with NaN/Inf counts of the stored elements:
 * used for SHA-256 staging and offered through the table's `cast`.
 */
#include "cast_kernel.h"
#include "device_cast.cuh"
#include "device_state.h"

__global__ void gather_kernel(wsc_grect R, uint64_t e0, uint64_t n, uint8_t *dst,
                              unsigned long long *counts) {
    uint32_t nan = 0, inf = 0;
    const bool fl = dt_is_float(R.dt);
    for (uint64_t i = (uint64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (uint64_t)gridDim.x * blockDim.x) {
        uint64_t e = e0 + i, r = 0, c = e;
        if (R.rows > 1) {
            r = e / R.cols;
            c = e - r * R.cols;
        }
        uint64_t bits = 0; /* a NULL ptr: zeros (padding of an image, device_backend.h) */
        if (R.ptr)
            bits = load_bits(R.ptr + (int64_t)r * R.row_stride_b + (int64_t)c * R.col_stride_b, R.es);
        if (fl) classify(R.dt, bits, nan, inf);
        if (R.cast) {
            ((uint16_t *)dst)[i] = (uint16_t)to_bf16(R.dt, bits);
        } else {
            switch (R.es) {
            case 1: dst[i] = (uint8_t)bits; break;
            case 2: ((uint16_t *)dst)[i] = (uint16_t)bits; break;
            case 4: ((uint32_t *)dst)[i] = (uint32_t)bits; break;
            default: ((uint64_t *)dst)[i] = bits; break;
            }
        }
    }
    if (counts && fl) {
        nan = __reduce_add_sync(0xffffffffu, nan);
        inf = __reduce_add_sync(0xffffffffu, inf);
        if ((threadIdx.x & 31) == 0) {
            if (nan) atomicAdd(&counts[0], (unsigned long long)nan);
            if (inf) atomicAdd(&counts[1], (unsigned long long)inf);
        }
    }
}

ws_err wsc_grect_make(const wsi_dev_rect *r, ws_canon canon, wsc_grect *g, ws_error *err) {
    unsigned es = wsc_dtype_size(r->dtype);
    if (!es) return wsc_fail(err, WS_ERR_DTYPE, "CUDA cast: unknown dtype %d", (int)r->dtype);
    ws_dtype cd = wsc_canonical(r->dtype, canon);
    g->ptr = (const uint8_t *)r->ptr;
    g->row_stride_b = r->row_stride * (int64_t)es;
    g->col_stride_b = r->col_stride * (int64_t)es;
    g->rows = r->rows;
    g->cols = r->cols;
    g->dt = (uint32_t)r->dtype;
    g->es = es;
    g->cast = cd != r->dtype;
    g->out_es = wsc_dtype_size(cd);
    if (r->rows && r->cols && r->ptr && (uintptr_t)r->ptr % es) /* NULL: zeros */
        return wsc_fail(err, WS_ERR_ARG, "CUDA cast: pointer %p not aligned to its %u-byte elements", r->ptr, es);
    return WS_OK;
}

ws_err wsc_gather(const wsc_grect *g, uint64_t e0, uint64_t n, void *dst,
                  unsigned long long *counts, cudaStream_t s, int sms, ws_error *err) {
    if (!n) return WS_OK;
    uint64_t blocks = (n + 255) / 256, cap = (uint64_t)(sms > 0 ? sms : 1) * 16;
    if (blocks > cap) blocks = cap;
    gather_kernel<<<(unsigned)blocks, 256, 0, s>>>(*g, e0, n, (uint8_t *)dst, counts);
    WSC_TRY(cudaGetLastError());
    return WS_OK;
}

ws_err wsc_cast(const wsi_dev_rect *rect, ws_canon canon, void *dst, ws_value_stats *stats,
                void *stream, ws_error *err) {
    if (!rect || (!rect->ptr && rect->rows && rect->cols))
        return wsc_fail(err, WS_ERR_ARG, "CUDA cast: NULL rect or pointer");
    wsc_grect g;
    ws_err rc = wsc_grect_make(rect, canon, &g, err);
    if (rc) return rc;
    if (stats) stats->nan = stats->inf = 0;
    uint64_t n = rect->rows * rect->cols;
    if (!n) return WS_OK;
    if ((rc = wsc_use_device_of(rect->ptr, nullptr, err))) return rc;
    wsc_device_state *st = wsc_state(err);
    if (!st) return err ? err->code : WS_ERR_IO;
    std::lock_guard<std::mutex> lock(st->mu);
    cudaStream_t s = (cudaStream_t)stream;
    if ((rc = wsc_buf_reserve(&st->result, 16, err))) return rc;
    unsigned long long *counts = (unsigned long long *)st->result.dev;
    WSC_TRY(cudaMemsetAsync(counts, 0, 16, s));
    if ((rc = wsc_gather(&g, 0, n, dst, counts, s, st->sms, err))) return rc;
    WSC_TRY(cudaMemcpyAsync(st->result.host, counts, 16, cudaMemcpyDeviceToHost, s));
    WSC_TRY(cudaStreamSynchronize(s));
    if (stats) {
        stats->nan = ((unsigned long long *)st->result.host)[0];
        stats->inf = ((unsigned long long *)st->result.host)[1];
    }
    return WS_OK;
}
