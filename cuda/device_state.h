/*
 * Per-device scratch the backend keeps between calls: the fast-digest key (uploaded once per
 * key), growable descriptor and result arrays (device + pinned host). One mutex per device
 * serialises calls that use them; sizes are small (descriptors: tens of bytes per piece).
 */
#ifndef WS_CUDA_DEVICE_STATE_H
#define WS_CUDA_DEVICE_STATE_H
#include "cuda_internal.h"

#include <mutex>

struct wsc_buf {
    void *dev = nullptr, *host = nullptr; /* host: pinned */
    size_t cap = 0;
};

struct wsc_device_state {
    std::mutex mu;
    int device = -1;
    int sms = 0;
    int cc_major = 0; /* compute capability: the tensor-core fast digest needs 8 or more */
    /* fast digest key as the kernel wants it, and the host copy it was made from */
    void *key_dev = nullptr;
    uint64_t key_k[WS_FAST_LANES][WSI_FAST_B], key_y[WS_FAST_LANES];
    bool key_valid = false;
    wsc_buf desc, result;
};

/* The state of the current device (cudaGetDevice); NULL with err filled on failure. */
WSC_HIDDEN wsc_device_state *wsc_state(ws_error *err);
/* Grow b to at least n bytes on both sides (contents not kept). */
WSC_HIDDEN ws_err wsc_buf_reserve(wsc_buf *b, size_t n, ws_error *err);
/* Bytes the states hold (device, pinned host). */
WSC_HIDDEN void wsc_state_bytes(uint64_t *device_bytes, uint64_t *host_bytes);
#endif
