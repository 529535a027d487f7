/* Per-device scratch kept between calls (device_state.h). */
#include "device_state.h"

#include <atomic>

#define MAX_DEVICES 64
static wsc_device_state *states[MAX_DEVICES];
static std::mutex states_mu;
static std::atomic<uint64_t> dev_bytes{0}, host_bytes{0};

wsc_device_state *wsc_state(ws_error *err) {
    int d = -1;
    if (wsc_cuda(cudaGetDevice(&d), "cudaGetDevice", err)) return nullptr;
    if (d < 0 || d >= MAX_DEVICES) {
        wsc_fail(err, WS_ERR_LIMIT, "CUDA: device %d beyond the %d supported", d, MAX_DEVICES);
        return nullptr;
    }
    std::lock_guard<std::mutex> g(states_mu);
    if (!states[d]) {
        wsc_device_state *s = new (std::nothrow) wsc_device_state();
        if (!s) {
            wsc_fail(err, WS_ERR_NOMEM, "CUDA: out of host memory");
            return nullptr;
        }
        s->device = d;
        if (wsc_cuda(cudaDeviceGetAttribute(&s->sms, cudaDevAttrMultiProcessorCount, d),
                     "cudaDeviceGetAttribute", err) ||
            wsc_cuda(cudaDeviceGetAttribute(&s->cc_major, cudaDevAttrComputeCapabilityMajor, d),
                     "cudaDeviceGetAttribute", err)) {
            delete s;
            return nullptr;
        }
        states[d] = s;
    }
    return states[d];
}

ws_err wsc_buf_reserve(wsc_buf *b, size_t n, ws_error *err) {
    if (n <= b->cap) return WS_OK;
    size_t cap = b->cap ? b->cap : 4096;
    while (cap < n) cap *= 2;
    if (b->dev) cudaFree(b->dev);
    if (b->host) cudaFreeHost(b->host);
    dev_bytes -= b->cap;
    host_bytes -= b->cap;
    b->dev = b->host = nullptr;
    b->cap = 0;
    WSC_TRY(cudaMalloc(&b->dev, cap));
    if (cudaMallocHost(&b->host, cap) != cudaSuccess) {
        cudaFree(b->dev);
        b->dev = nullptr;
        return wsc_cuda(cudaErrorMemoryAllocation, "cudaMallocHost", err);
    }
    b->cap = cap;
    dev_bytes += cap;
    host_bytes += cap;
    return WS_OK;
}

void wsc_state_bytes(uint64_t *d, uint64_t *h) {
    *d = dev_bytes.load();
    *h = host_bytes.load();
}
