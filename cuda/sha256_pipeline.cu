/*
 * SHA-256 of device tensors, hashlib-identical: each tensor's canonical bytes are made on the
 * device (cast.cu) into a staging slot, copied to pinned host memory on the worker's own
 * stream, and hashed by OpenSSL (SHA-NI where the CPU has it) on the worker's CPU thread,
 * in canonical order. Every worker has two slots (device + pinned), so the copy of chunk k+1
 * overlaps the hashing of chunk k; workers take tensors largest first (one tensor's SHA-256
 * is sequential, so the largest bounds the time) and run in parallel.
 *
 * Memory: workers * 2 * WSC_SHA_CHUNK bytes of device memory and as much pinned host memory,
 * allocated on first use and kept for later calls (README, "CUDA tensors").
 */
#include "cast_kernel.h"
#include "device_state.h"

#include <openssl/evp.h>

#include <algorithm>
#include <atomic>
#include <thread>
#include <vector>

#define WSC_SHA_CHUNK (4u << 20)
#define WSC_SHA_MAX_WORKERS 64

struct sha_worker {
    cudaStream_t stream = nullptr;
    void *dev[2] = {nullptr, nullptr};
    void *host[2] = {nullptr, nullptr};
    cudaEvent_t done[2] = {nullptr, nullptr};
    unsigned long long *counts_dev = nullptr, *counts_host = nullptr;
    int device = -1;
};

/* The pool: kept between calls, one call at a time. */
static std::mutex pool_mu;
static sha_worker pool[WSC_SHA_MAX_WORKERS];
static std::atomic<uint64_t> pool_dev_bytes{0}, pool_host_bytes{0};

static void worker_release(sha_worker *w) {
    if (w->device < 0) return;
    cudaSetDevice(w->device);
    for (int i = 0; i < 2; i++) {
        if (w->dev[i]) cudaFree(w->dev[i]);
        if (w->host[i]) cudaFreeHost(w->host[i]);
        if (w->done[i]) cudaEventDestroy(w->done[i]);
    }
    if (w->counts_dev) cudaFree(w->counts_dev);
    if (w->counts_host) cudaFreeHost(w->counts_host);
    if (w->stream) cudaStreamDestroy(w->stream);
    pool_dev_bytes -= 2ull * WSC_SHA_CHUNK + 16;
    pool_host_bytes -= 2ull * WSC_SHA_CHUNK + 16;
    *w = sha_worker();
}

static ws_err worker_ready(sha_worker *w, int device, ws_error *err) {
    if (w->device == device) return WS_OK;
    worker_release(w);
    WSC_TRY(cudaSetDevice(device));
    w->device = device;
    pool_dev_bytes += 2ull * WSC_SHA_CHUNK + 16;
    pool_host_bytes += 2ull * WSC_SHA_CHUNK + 16;
    WSC_TRY(cudaStreamCreateWithFlags(&w->stream, cudaStreamNonBlocking));
    for (int i = 0; i < 2; i++) {
        WSC_TRY(cudaMalloc(&w->dev[i], WSC_SHA_CHUNK));
        WSC_TRY(cudaMallocHost(&w->host[i], WSC_SHA_CHUNK));
        WSC_TRY(cudaEventCreateWithFlags(&w->done[i], cudaEventDisableTiming | cudaEventBlockingSync));
    }
    WSC_TRY(cudaMalloc((void **)&w->counts_dev, 16));
    WSC_TRY(cudaMallocHost((void **)&w->counts_host, 16));
    return WS_OK;
}

struct sha_chunk {
    size_t rect;
    uint64_t e0, n; /* canonical elements of that rect */
};

struct sha_job {
    const wsi_dev_rect *rects;
    const wsi_dev_tensor *tensors;
    ws_canon canon;
    std::vector<wsc_grect> g;
    std::vector<size_t> order;
    std::atomic<size_t> next{0};
    std::atomic<bool> failed{false};
    std::mutex err_mu;
    ws_error first_err;
    ws_err first_rc = WS_OK;
    uint8_t (*out)[32];
    ws_value_stats *stats;
    cudaEvent_t ready;
    int device, sms;
};

static void job_fail(sha_job *j, ws_err rc, const ws_error *e) {
    std::lock_guard<std::mutex> g(j->err_mu);
    if (!j->first_rc) {
        j->first_rc = rc;
        if (e) j->first_err = *e;
    }
    j->failed = true;
}

/* Queue chunk c into slot `slot` of w: gather on the device, copy to pinned, mark done. */
static ws_err enqueue(sha_job *j, sha_worker *w, const sha_chunk &c, int slot, ws_error *err) {
    const wsc_grect &g = j->g[c.rect];
    ws_err rc = wsc_gather(&g, c.e0, c.n, w->dev[slot], w->counts_dev, w->stream, j->sms, err);
    if (rc) return rc;
    WSC_TRY(cudaMemcpyAsync(w->host[slot], w->dev[slot], c.n * g.out_es, cudaMemcpyDeviceToHost,
                            w->stream));
    WSC_TRY(cudaEventRecord(w->done[slot], w->stream));
    return WS_OK;
}

static ws_err hash_tensor(sha_job *j, sha_worker *w, size_t ti, ws_error *err) {
    const wsi_dev_tensor &t = j->tensors[ti];
    std::vector<sha_chunk> chunks;
    for (size_t r = t.rect0; r < t.rect0 + t.n_rects; r++) {
        uint64_t n = j->g[r].rows * j->g[r].cols, per = WSC_SHA_CHUNK / j->g[r].out_es;
        for (uint64_t e = 0; e < n; e += per) chunks.push_back({r, e, std::min(per, n - e)});
    }
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    if (!ctx || EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) != 1) {
        EVP_MD_CTX_free(ctx);
        return wsc_fail(err, WS_ERR_CRYPTO, "SHA-256 init failed");
    }
    ws_err rc = wsc_cuda(cudaMemsetAsync(w->counts_dev, 0, 16, w->stream), "cudaMemsetAsync", err);
    if (!rc && !chunks.empty()) rc = enqueue(j, w, chunks[0], 0, err);
    for (size_t k = 0; !rc && k < chunks.size(); k++) {
        if (k + 1 < chunks.size()) rc = enqueue(j, w, chunks[k + 1], (int)((k + 1) & 1), err);
        if (rc) break;
        rc = wsc_cuda(cudaEventSynchronize(w->done[k & 1]), "cudaEventSynchronize", err);
        if (rc) break;
        if (EVP_DigestUpdate(ctx, w->host[k & 1], chunks[k].n * j->g[chunks[k].rect].out_es) != 1)
            rc = wsc_fail(err, WS_ERR_CRYPTO, "SHA-256 update failed");
        if (j->failed) break;
    }
    if (!rc) rc = wsc_cuda(cudaMemcpyAsync(w->counts_host, w->counts_dev, 16, cudaMemcpyDeviceToHost, w->stream), "cudaMemcpyAsync", err);
    if (!rc) rc = wsc_cuda(cudaStreamSynchronize(w->stream), "cudaStreamSynchronize", err);
    unsigned len = 0;
    if (!rc && (EVP_DigestFinal_ex(ctx, j->out[ti], &len) != 1 || len != 32))
        rc = wsc_fail(err, WS_ERR_CRYPTO, "SHA-256 final failed");
    EVP_MD_CTX_free(ctx);
    if (!rc && j->stats) {
        j->stats[ti].nan = w->counts_host[0];
        j->stats[ti].inf = w->counts_host[1];
    }
    if (rc) cudaStreamSynchronize(w->stream); /* leave no copy in flight into the slots */
    return rc;
}

static void run_worker(sha_job *j, sha_worker *w) {
    ws_error e;
    memset(&e, 0, sizeof e);
    ws_err rc = wsc_cuda(cudaSetDevice(j->device), "cudaSetDevice", &e);
    if (!rc) rc = wsc_cuda(cudaStreamWaitEvent(w->stream, j->ready, 0), "cudaStreamWaitEvent", &e);
    while (!rc && !j->failed) {
        size_t i = j->next.fetch_add(1);
        if (i >= j->order.size()) break;
        rc = hash_tensor(j, w, j->order[i], &e);
    }
    if (rc) job_fail(j, rc, &e);
}

ws_err wsc_sha256_rects(const wsi_dev_rect *rects, size_t n_rects, const wsi_dev_tensor *tensors,
                        size_t n, ws_canon canon, int threads, uint8_t (*out)[32],
                        ws_value_stats *stats, void *stream, ws_error *err) {
    if (n && (!tensors || !out)) return wsc_fail(err, WS_ERR_ARG, "CUDA SHA-256: NULL argument");
    sha_job j;
    j.rects = rects;
    j.tensors = tensors;
    j.canon = canon;
    j.out = out;
    j.stats = stats;
    j.g.resize(n_rects);
    const void *first = nullptr;
    bool zeros = false; /* rects with a NULL ptr: zero elements (device_backend.h) */
    for (size_t r = 0; r < n_rects; r++) {
        ws_err rc = wsc_grect_make(&rects[r], canon, &j.g[r], err);
        if (rc) return rc;
        if (!first && rects[r].rows && rects[r].cols) first = rects[r].ptr;
        zeros = zeros || (!rects[r].ptr && rects[r].rows && rects[r].cols);
    }
    std::vector<uint64_t> bytes(n, 0);
    for (size_t i = 0; i < n; i++) {
        if (tensors[i].rect0 > n_rects || tensors[i].n_rects > n_rects - tensors[i].rect0)
            return wsc_fail(err, WS_ERR_ARG, "CUDA SHA-256: tensor %zu: rects out of range", i);
        for (size_t r = tensors[i].rect0; r < tensors[i].rect0 + tensors[i].n_rects; r++)
            bytes[i] += j.g[r].rows * j.g[r].cols * j.g[r].out_es;
        j.order.push_back(i);
    }
    std::stable_sort(j.order.begin(), j.order.end(), [&](size_t a, size_t b) { return bytes[a] > bytes[b]; });
    if (!first && !zeros) { /* nothing on a device: every tensor is empty */
        for (size_t i = 0; i < n; i++) {
            unsigned len = 0;
            EVP_Digest("", 0, out[i], &len, EVP_sha256(), NULL);
            if (stats) stats[i] = ws_value_stats{0, 0};
        }
        return WS_OK;
    }
    ws_err rc = WS_OK;
    if (first) {
        if ((rc = wsc_use_device_of(first, &j.device, err))) return rc;
    } else { /* zeros only: the stream's (current) device makes them */
        WSC_TRY(cudaGetDevice(&j.device));
    }
    for (size_t r = 0; r < n_rects; r++)
        if (rects[r].ptr && rects[r].rows && rects[r].cols &&
            wsc_pointer_device(rects[r].ptr) != j.device)
            return wsc_fail(err, WS_ERR_ARG, "CUDA SHA-256: rect %zu is not on device %d like the first", r, j.device);
    WSC_TRY(cudaDeviceGetAttribute(&j.sms, cudaDevAttrMultiProcessorCount, j.device));

    int workers = threads > 0 ? threads : (int)std::thread::hardware_concurrency();
    if (workers < 1) workers = 1;
    if (workers > WSC_SHA_MAX_WORKERS) workers = WSC_SHA_MAX_WORKERS;
    if ((size_t)workers > n) workers = (int)n;

    std::lock_guard<std::mutex> lock(pool_mu);
    for (int i = 0; i < workers; i++)
        if ((rc = worker_ready(&pool[i], j.device, err))) return rc;
    WSC_TRY(cudaSetDevice(j.device));
    WSC_TRY(cudaEventCreateWithFlags(&j.ready, cudaEventDisableTiming));
    cudaError_t e = cudaEventRecord(j.ready, (cudaStream_t)stream);
    if (e != cudaSuccess) {
        cudaEventDestroy(j.ready);
        return wsc_cuda(e, "cudaEventRecord", err);
    }
    memset(&j.first_err, 0, sizeof j.first_err);
    std::vector<std::thread> th;
    try {
        for (int i = 1; i < workers; i++) th.emplace_back(run_worker, &j, &pool[i]);
    } catch (...) {
        j.failed = true;
        job_fail(&j, WS_ERR_THREAD, nullptr);
    }
    run_worker(&j, &pool[0]);
    for (auto &t : th) t.join();
    cudaEventDestroy(j.ready);
    if (j.first_rc) {
        if (err) {
            *err = j.first_err;
            if (!err->code) wsc_fail(err, j.first_rc, "CUDA SHA-256: a worker thread failed to start");
        }
        return j.first_rc;
    }
    return WS_OK;
}

ws_err wsc_memory(wsi_dev_memory *out, ws_error *err) {
    if (!out) return wsc_fail(err, WS_ERR_ARG, "NULL output");
    uint64_t d = 0, h = 0;
    wsc_state_bytes(&d, &h);
    out->device_bytes = d + pool_dev_bytes.load();
    out->host_bytes = h + pool_host_bytes.load();
    return WS_OK;
}
