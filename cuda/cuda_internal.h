/*
 * Internal to libweightsum_cuda.so: shared declarations of the backend's parts (error helpers,
 * per-device caches, the kernels' host launchers). Host C++ compiled by nvcc; never installed.
 */
#ifndef WS_CUDA_INTERNAL_H
#define WS_CUDA_INTERNAL_H

#include <cuda_runtime.h>
#include <stdint.h>

extern "C" {
#include "device_backend.h"
#include "fastdigest.h"
}

#define WSC_HIDDEN __attribute__((visibility("hidden")))

/* Fill err like the core's wsi_fail (the backend is a separate library: no core internals). */
WSC_HIDDEN ws_err wsc_fail(ws_error *err, ws_err code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* WS_OK, or WS_ERR_IO naming the CUDA call and its error string. */
WSC_HIDDEN ws_err wsc_cuda(cudaError_t e, const char *what, ws_error *err);
#define WSC_TRY(call)                                                                          \
    do {                                                                                       \
        ws_err rc_ = wsc_cuda((call), #call, err);                                             \
        if (rc_) return rc_;                                                                   \
    } while (0)

/* The device a pointer's memory belongs to, or -1 (host memory, or no CUDA device). */
WSC_HIDDEN int wsc_pointer_device(const void *ptr);
/* Make the device of ptr current; WS_ERR_ARG when ptr is not device memory. */
WSC_HIDDEN ws_err wsc_use_device_of(const void *ptr, int *device, ws_error *err);
/* Whether pointers of one call lie on device `dev`, asking the driver once per allocation
 * (cudaPointerGetAttributes for each of hundreds of tensors cost more than the kernel's
 * launch): the allocations seen are kept for the call (cuMemGetAddressRange; where the driver
 * cannot say, every pointer is asked). */
struct wsc_device_check {
    explicit wsc_device_check(int dev) : dev_(dev) {}
    bool on_device(const void *ptr);

  private:
    int dev_;
    uintptr_t lo_[64], hi_[64]; /* the last allocations seen, a small ring */
    unsigned n_ = 0, next_ = 0;
};

/* Units (16-bit, or bytes for 1-byte canonical dtypes) and stored element sizes. */
static inline unsigned wsc_dtype_size(ws_dtype t) {
    switch (t) {
    case WS_BOOL: case WS_U8: case WS_I8: case WS_F8_E4M3: case WS_F8_E5M2: return 1;
    case WS_I16: case WS_U16: case WS_F16: case WS_BF16: return 2;
    case WS_I32: case WS_U32: case WS_F32: return 4;
    case WS_I64: case WS_U64: case WS_F64: return 8;
    default: return 0;
    }
}
static inline bool wsc_is_float(ws_dtype t) {
    return t == WS_F16 || t == WS_BF16 || t == WS_F32 || t == WS_F64 || t == WS_F8_E4M3 ||
           t == WS_F8_E5M2;
}
/* The dtype a stored dtype has after the canonical cast (ws_canonical_dtype). */
static inline ws_dtype wsc_canonical(ws_dtype t, ws_canon c) {
    return c == WS_CANON_BF16 && wsc_is_float(t) ? WS_BF16 : t;
}

/* ---- the entry points behind the table (one file each) ---- */
WSC_HIDDEN ws_err wsc_fast_rects(const struct ws_fastkey *key, const wsi_dev_rect *rects,
                                 size_t n, ws_canon canon, ws_fast *out, ws_value_stats *stats,
                                 void *stream, ws_error *err);
WSC_HIDDEN ws_err wsc_sglang_batch(const wsi_dev_segment *segs, size_t n_segs,
                                   const wsi_dev_sglang_tensor *tensors, size_t n,
                                   uint64_t *out, void *stream, ws_error *err);
WSC_HIDDEN ws_err wsc_sha256_rects(const wsi_dev_rect *rects, size_t n_rects,
                                   const wsi_dev_tensor *tensors, size_t n, ws_canon canon,
                                   int threads, uint8_t (*out)[32], ws_value_stats *stats,
                                   void *stream, ws_error *err);
WSC_HIDDEN ws_err wsc_cast(const wsi_dev_rect *rect, ws_canon canon, void *dst,
                           ws_value_stats *stats, void *stream, ws_error *err);
WSC_HIDDEN ws_err wsc_memory(wsi_dev_memory *out, ws_error *err);

#endif
