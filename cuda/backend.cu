/*
 * libweightsum_cuda.so: the CUDA device backend the core loads with dlopen (device_backend.h).
 * This file holds the table, pointer queries, plain reads and error helpers; the kernels are
 * in fast_rects.cu (fast digest), sglang_hash.cu (SGLang's gpu_tensor_hash), cast.cu and
 * sha256_pipeline.cu (SHA-256 through pinned staging and CPU threads).
 */
#include "cuda_internal.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

ws_err wsc_fail(ws_error *err, ws_err code, const char *fmt, ...) {
    if (!err) return code;
    memset(err, 0, sizeof *err);
    err->code = code;
    err->offset = -1;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err->what, sizeof err->what, fmt, ap);
    va_end(ap);
    return code;
}

ws_err wsc_cuda(cudaError_t e, const char *what, ws_error *err) {
    if (e == cudaSuccess) return WS_OK;
    (void)cudaGetLastError(); /* clear a sticky-free error so later calls start clean */
    if (e == cudaErrorNoDevice || e == cudaErrorInsufficientDriver)
        return wsc_fail(err, WS_ERR_NOTFOUND, "CUDA: no usable device (%s: %s)", what,
                        cudaGetErrorString(e));
    if (e == cudaErrorMemoryAllocation)
        return wsc_fail(err, WS_ERR_NOMEM, "CUDA: out of memory (%s)", what);
    return wsc_fail(err, WS_ERR_IO, "CUDA: %s: %s", what, cudaGetErrorString(e));
}

int wsc_pointer_device(const void *ptr) {
    if (!ptr) return -1;
    cudaPointerAttributes a;
    if (cudaPointerGetAttributes(&a, ptr) != cudaSuccess) {
        (void)cudaGetLastError();
        return -1;
    }
    if (a.type == cudaMemoryTypeDevice || a.type == cudaMemoryTypeManaged) return a.device;
    return -1;
}

/* cuMemGetAddressRange through the runtime's entry-point query (no link against libcuda). */
typedef int (*mem_range_fn)(unsigned long long *base, size_t *size, unsigned long long ptr);
static mem_range_fn mem_range() {
    static mem_range_fn fn = [] {
        void *f = nullptr;
        cudaDriverEntryPointQueryResult q;
        if (cudaGetDriverEntryPointByVersion("cuMemGetAddressRange", &f, 12000, cudaEnableDefault,
                                             &q) != cudaSuccess ||
            q != cudaDriverEntryPointSuccess) {
            (void)cudaGetLastError();
            f = nullptr;
        }
        return (mem_range_fn)f;
    }();
    return fn;
}

bool wsc_device_check::on_device(const void *ptr) {
    const uintptr_t p = (uintptr_t)ptr;
    for (unsigned i = 0; i < n_; i++)
        if (p >= lo_[i] && p < hi_[i]) return true;
    if (wsc_pointer_device(ptr) != dev_) return false;
    unsigned long long base = 0;
    size_t size = 0;
    mem_range_fn f = mem_range();
    if (f && f(&base, &size, (unsigned long long)p) == 0 && size && p >= base && p - base < size) {
        lo_[next_] = (uintptr_t)base;
        hi_[next_] = (uintptr_t)base + size;
        next_ = (next_ + 1) % 64;
        if (n_ < 64) n_++;
    }
    return true;
}

ws_err wsc_use_device_of(const void *ptr, int *device, ws_error *err) {
    int d = wsc_pointer_device(ptr);
    if (d < 0)
        return wsc_fail(err, WS_ERR_ARG, "CUDA: pointer %p is not CUDA device memory", ptr);
    WSC_TRY(cudaSetDevice(d));
    if (device) *device = d;
    return WS_OK;
}

static ws_err backend_read(const void *ptr, size_t n, void *dst, void *stream, ws_error *err) {
    if (!n) return WS_OK;
    if (!ptr || !dst) return wsc_fail(err, WS_ERR_ARG, "CUDA read: NULL pointer");
    ws_err rc = wsc_use_device_of(ptr, NULL, err);
    if (rc) return rc;
    cudaStream_t s = (cudaStream_t)stream;
    WSC_TRY(cudaMemcpyAsync(dst, ptr, n, cudaMemcpyDeviceToHost, s));
    WSC_TRY(cudaStreamSynchronize(s));
    return WS_OK;
}

static ws_err backend_sglang_one(const wsi_dev_segment *segs, size_t n, uint64_t total_bytes,
                                 uint64_t *out, void *stream, ws_error *err) {
    wsi_dev_sglang_tensor t = {0, n, total_bytes};
    return wsc_sglang_batch(segs, n, &t, 1, out, stream, err);
}

static const wsi_device_backend table = {
    WSI_DEVICE_BACKEND_ABI,
    "cuda",
    wsc_pointer_device,
    backend_read,
    wsc_fast_rects,
    backend_sglang_one,
    wsc_sglang_batch,
    wsc_sha256_rects,
    wsc_cast,
    wsc_memory,
};

extern "C" __attribute__((visibility("default"))) const wsi_device_backend *
ws_device_backend_v1(void) {
    return &table;
}
