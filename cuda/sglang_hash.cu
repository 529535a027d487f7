/*
 * SGLang's gpu_tensor_hash (sglang/kernels/ops/memory/gpu_tensor_hash.py, read and
 * re-implemented, not copied) of many tensors in one launch, each described by segments of
 * source memory plus zero padding (device_backend.h), so an engine rank's answer can be
 * predicted from HF tensors without building the shard, and an engine's own tensors (one
 * segment each, or one per row of a strided view) hashed in one launch instead of several per
 * tensor.
 *
 * The hash: the tensor's bytes, zero-padded to whole little-endian 32-bit words w_i, in tiles
 * of 8192 words; per tile h1 = sum fmix32(w_i ^ p1(i)), h2 likewise with p2 (mod 2^32), each
 * then xor-ed with the padded byte count and mixed again; the tiles' (h1 << 32 | h2) summed
 * mod 2^64, then splitmix64's finaliser. Empty tensors hash to 0.
 *
 * One block per tile: it builds the tile's 32 KiB image in shared memory from the segments
 * that reach into it (zeros elsewhere, the canonical cast where dtypes differ), hashes it, and
 * adds the tile's value to its tensor's sum with one 64-bit atomic add.
 */
#include "device_cast.cuh"
#include "device_state.h"

#include <algorithm>
#include <vector>

#define TILE_WORDS 8192u
#define TILE_BYTES (4u * TILE_WORDS)
#define SG_THREADS 256
#define SEED 0x243F6A88ull
#define FM_C1 0x85EBCA6Bu
#define FM_C2 0xC2B2AE35u
#define POS_A 0x27D4EB2Du
#define POS_B 0x165667B1u

struct SSeg {
    const uint8_t *src;
    int64_t src_row_stride;
    uint64_t rows, row_bytes, dst_offset, dst_row_stride;
    uint64_t pm_end; /* max end of this and the earlier segments of its tensor */
    uint32_t src_dt, dst_dt, src_es, dst_es;
};

struct STensor {
    uint64_t seg0, nseg, tile0, n_u32;
};

__device__ __forceinline__ uint32_t fmix32(uint32_t x) {
    x ^= x >> 16;
    x *= FM_C1;
    x ^= x >> 13;
    x *= FM_C2;
    x ^= x >> 16;
    return x;
}
__device__ __forceinline__ uint32_t rotl32(uint32_t x, int r) { return (x << r) | (x >> (32 - r)); }

/* Bytes [x0, x1) of the image (tile-relative dst: smem + x - T0) from row r of segment S. */
__device__ void fill_row(const SSeg &S, uint64_t r, uint64_t x0, uint64_t x1, uint64_t T0,
                         uint8_t *img) {
    const uint64_t d = S.dst_offset + r * S.dst_row_stride; /* row start in the image */
    const uint8_t *src = S.src + (int64_t)r * S.src_row_stride;
    if (S.src_dt == S.dst_dt) {
        const uint8_t *sp = src + (x0 - d);
        uint8_t *dp = img + (x0 - T0);
        uint64_t n = x1 - x0;
        if ((((uintptr_t)sp ^ (uintptr_t)dp) & 15) == 0) {
            uint64_t head = (16 - ((uintptr_t)dp & 15)) & 15;
            if (head > n) head = n;
            for (uint64_t i = threadIdx.x; i < head; i += blockDim.x) dp[i] = sp[i];
            uint64_t nv = (n - head) / 16;
            const uint4 *s4 = (const uint4 *)(sp + head);
            uint4 *d4 = (uint4 *)(dp + head);
            for (uint64_t i = threadIdx.x; i < nv; i += blockDim.x) d4[i] = __ldcs(s4 + i);
            for (uint64_t i = head + nv * 16 + threadIdx.x; i < n; i += blockDim.x) dp[i] = sp[i];
        } else if ((((uintptr_t)sp ^ (uintptr_t)dp) & 1) == 0) {
            uint64_t head = (uintptr_t)dp & 1;
            if (head > n) head = n;
            if (head && threadIdx.x == 0) dp[0] = sp[0];
            uint64_t nh = (n - head) / 2;
            const uint16_t *s2 = (const uint16_t *)(sp + head);
            uint16_t *d2 = (uint16_t *)(dp + head);
            for (uint64_t i = threadIdx.x; i < nh; i += blockDim.x) d2[i] = s2[i];
            if ((n - head) & 1 && threadIdx.x == 0) dp[n - 1] = sp[n - 1];
        } else {
            for (uint64_t i = threadIdx.x; i < n; i += blockDim.x) dp[i] = sp[i];
        }
        return;
    }
    /* cast to bf16 (2-byte elements); bytes of elements cut by the tile edge one by one */
    uint64_t e0 = (x0 - d) / 2, e1 = (x1 - d + 1) / 2;
    for (uint64_t e = e0 + threadIdx.x; e < e1; e += blockDim.x) {
        uint32_t v = to_bf16(S.src_dt, load_bits(src + e * S.src_es, S.src_es));
        uint64_t x = d + 2 * e;
        if (x >= x0 && x < x1) img[x - T0] = (uint8_t)v;
        if (x + 1 >= x0 && x + 1 < x1) img[x + 1 - T0] = (uint8_t)(v >> 8);
    }
}

__global__ void __launch_bounds__(SG_THREADS)
sglang_kernel(const SSeg *__restrict__ segs, const STensor *__restrict__ tensors, uint32_t nt,
              uint32_t seed1, uint32_t seed2, unsigned long long *sums) {
    __shared__ __align__(16) uint32_t img32[TILE_WORDS];
    __shared__ uint32_t red[2][SG_THREADS / 32];
    uint8_t *img = (uint8_t *)img32;
    const uint64_t tile = blockIdx.x;
    uint32_t lo = 0, hi = nt;
    while (hi - lo > 1) {
        uint32_t mid = (lo + hi) / 2;
        if (tensors[mid].tile0 <= tile) lo = mid;
        else hi = mid;
    }
    const STensor T = tensors[lo];
    const uint64_t tt = tile - T.tile0;
    const uint64_t T0 = tt * TILE_BYTES;
    const uint64_t nbytes_pad = T.n_u32 * 4;
    const uint64_t T1 = min(T0 + TILE_BYTES, nbytes_pad);

    /* first segment that may reach into the tile: pm_end is non-decreasing */
    uint64_t a = T.seg0, b = T.seg0 + T.nseg;
    while (a < b) {
        uint64_t mid = (a + b) / 2;
        if (segs[mid].pm_end <= T0) a = mid + 1;
        else b = mid;
    }
    uint32_t h1 = 0, h2 = 0;
    const uint32_t posA = POS_A, posB = POS_B;
    const uint64_t wbase = tt * TILE_WORDS;
    /* The common tile: inside one segment whose rows lie back to back in the image, same dtype,
     * 16-byte rows and sources: each thread hashes its 16-byte words straight from the source. */
    bool direct = false;
    SSeg S0;
    if (a < T.seg0 + T.nseg) {
        S0 = segs[a];
        direct = S0.src_dt == S0.dst_dt && S0.rows && S0.row_bytes &&
                 (S0.rows == 1 || S0.dst_row_stride == S0.row_bytes) && S0.dst_offset <= T0 &&
                 S0.dst_offset + S0.rows * S0.row_bytes >= T1 && ((T1 - T0) & 15) == 0 &&
                 (S0.row_bytes & 15) == 0 && S0.row_bytes <= 0x7fffffffu &&
                 ((uintptr_t)S0.src & 15) == 0 && (S0.src_row_stride & 15) == 0 &&
                 ((T0 - S0.dst_offset) & 15) == 0;
        /* no later segment may reach into the tile (segments do not overlap in an image, but
         * the general path is the one that takes whatever comes) */
        if (direct && a + 1 < T.seg0 + T.nseg && segs[a + 1].dst_offset < T1) direct = false;
    }
    if (direct) {
        const uint64_t o0 = T0 - S0.dst_offset;
        const uint32_t rb = (uint32_t)S0.row_bytes;
        const uint64_t r0 = o0 / rb;
        const uint32_t c0 = (uint32_t)(o0 - r0 * rb);
        const uint32_t nv = (uint32_t)((T1 - T0) >> 4);
        uint4 v[TILE_WORDS / 4 / SG_THREADS];
#pragma unroll
        for (uint32_t k = 0; k < TILE_WORDS / 4 / SG_THREADS; k++) {
            const uint32_t i = threadIdx.x + SG_THREADS * k;
            v[k] = make_uint4(0, 0, 0, 0);
            if (i < nv) {
                const uint32_t c = c0 + 16u * i, dr = c / rb;
                v[k] = __ldcs((const uint4 *)(S0.src + (int64_t)(r0 + dr) * S0.src_row_stride + (c - dr * rb)));
            }
        }
#pragma unroll
        for (uint32_t k = 0; k < TILE_WORDS / 4 / SG_THREADS; k++) {
            const uint32_t i = threadIdx.x + SG_THREADS * k;
            if (i < nv) {
                const uint32_t w[4] = {v[k].x, v[k].y, v[k].z, v[k].w};
#pragma unroll
                for (int e = 0; e < 4; e++) {
                    const uint32_t iu = (uint32_t)(wbase + 4u * i + e);
                    const uint32_t p1 = (iu * posA + seed1) ^ rotl32(iu, 15);
                    const uint32_t p2 = (iu * posB + seed2) ^ rotl32(iu, 13);
                    h1 += fmix32(w[e] ^ p1);
                    h2 += fmix32(w[e] ^ p2);
                }
            }
        }
    } else {
        for (uint32_t i = threadIdx.x; i < TILE_WORDS / 4; i += blockDim.x)
            ((uint4 *)img32)[i] = make_uint4(0, 0, 0, 0);
        __syncthreads();

        for (uint64_t j = a; j < T.seg0 + T.nseg; j++) {
            const SSeg S = segs[j];
            if (S.dst_offset >= T1) break;
            if (!S.rows || !S.row_bytes) continue;
            uint64_t r_lo = 0;
            if (T0 >= S.dst_offset + S.row_bytes) r_lo = (T0 - S.dst_offset - S.row_bytes) / S.dst_row_stride + 1;
            uint64_t r_hi = (T1 - S.dst_offset + S.dst_row_stride - 1) / S.dst_row_stride;
            if (r_hi > S.rows) r_hi = S.rows;
            for (uint64_t r = r_lo; r < r_hi; r++) {
                uint64_t d = S.dst_offset + r * S.dst_row_stride;
                uint64_t x0 = max(d, T0), x1 = min(d + S.row_bytes, T1);
                if (x0 < x1) fill_row(S, r, x0, x1, T0, img);
            }
        }
        __syncthreads();

    #pragma unroll 8
        for (uint32_t w = threadIdx.x; w < TILE_WORDS; w += SG_THREADS) {
            uint64_t idx = wbase + w;
            if (idx < T.n_u32) {
                uint32_t v = img32[w];
                uint32_t iu = (uint32_t)idx;
                uint32_t p1 = (iu * posA + seed1) ^ rotl32(iu, 15);
                uint32_t p2 = (iu * posB + seed2) ^ rotl32(iu, 13);
                h1 += fmix32(v ^ p1);
                h2 += fmix32(v ^ p2);
            }
        }
    }
    h1 = __reduce_add_sync(0xffffffffu, h1);
    h2 = __reduce_add_sync(0xffffffffu, h2);
    if ((threadIdx.x & 31) == 0) {
        red[0][threadIdx.x >> 5] = h1;
        red[1][threadIdx.x >> 5] = h2;
    }
    __syncthreads();
    if (threadIdx.x == 0) {
        h1 = h2 = 0;
        for (int i = 0; i < SG_THREADS / 32; i++) {
            h1 += red[0][i];
            h2 += red[1][i];
        }
        uint32_t nb = (uint32_t)nbytes_pad;
        h1 = fmix32(h1 ^ nb);
        h2 = fmix32(h2 ^ nb);
        atomicAdd(&sums[lo], (unsigned long long)h1 << 32 | h2);
    }
}

static uint64_t splitmix_final(uint64_t x) {
    x ^= x >> 30;
    x *= 0xBF58476D1CE4E5B9ull;
    x ^= x >> 27;
    x *= 0x94D049BB133111EBull;
    x ^= x >> 31;
    return x;
}

ws_err wsc_sglang_batch(const wsi_dev_segment *segs, size_t n_segs,
                        const wsi_dev_sglang_tensor *tensors, size_t n, uint64_t *out,
                        void *stream, ws_error *err) {
    if (n && (!tensors || !out)) return wsc_fail(err, WS_ERR_ARG, "CUDA SGLang hash: NULL argument");
    std::vector<SSeg> S;
    std::vector<STensor> T(n);
    uint64_t tiles = 0;
    const void *first = nullptr;
    for (size_t i = 0; i < n; i++) {
        const wsi_dev_sglang_tensor &t = tensors[i];
        if (t.seg0 > n_segs || t.n_segs > n_segs - t.seg0)
            return wsc_fail(err, WS_ERR_ARG, "CUDA SGLang hash: tensor %zu: segments out of range", i);
        T[i].seg0 = S.size();
        T[i].nseg = t.n_segs;
        T[i].n_u32 = (t.total_bytes + 3) / 4;
        T[i].tile0 = tiles;
        tiles += (T[i].n_u32 + TILE_WORDS - 1) / TILE_WORDS;
        size_t base = S.size();
        for (size_t k = 0; k < t.n_segs; k++) {
            const wsi_dev_segment &g = segs[t.seg0 + k];
            SSeg s;
            memset(&s, 0, sizeof s);
            s.src = (const uint8_t *)g.src;
            s.src_row_stride = g.src_row_stride;
            s.rows = g.rows;
            s.row_bytes = g.row_bytes;
            s.dst_offset = g.dst_offset;
            s.dst_row_stride = g.rows <= 1 ? (g.row_bytes ? g.row_bytes : 1) : g.dst_row_stride;
            s.src_dt = (uint32_t)g.src_dtype;
            s.dst_dt = (uint32_t)g.dst_dtype;
            s.src_es = wsc_dtype_size(g.src_dtype);
            s.dst_es = wsc_dtype_size(g.dst_dtype);
            if (!s.src_es || !s.dst_es)
                return wsc_fail(err, WS_ERR_DTYPE, "CUDA SGLang hash: tensor %zu segment %zu: unknown dtype", i, k);
            if (g.src_dtype != g.dst_dtype &&
                !(g.dst_dtype == WS_BF16 && wsc_is_float(g.src_dtype)))
                return wsc_fail(err, WS_ERR_DTYPE, "CUDA SGLang hash: tensor %zu segment %zu: no cast from dtype %d to %d (only float -> BF16)", i, k, (int)g.src_dtype, (int)g.dst_dtype);
            if (g.src_dtype != g.dst_dtype && g.row_bytes % 2)
                return wsc_fail(err, WS_ERR_ARG, "CUDA SGLang hash: tensor %zu segment %zu: odd bf16 row bytes", i, k);
            if (!g.rows || !g.row_bytes) continue;
            if (g.rows > 1 && g.dst_row_stride < g.row_bytes)
                return wsc_fail(err, WS_ERR_ARG, "CUDA SGLang hash: tensor %zu segment %zu: rows overlap", i, k);
            uint64_t end = g.dst_offset + (g.rows - 1) * s.dst_row_stride + g.row_bytes;
            if (end > t.total_bytes || end < g.dst_offset)
                return wsc_fail(err, WS_ERR_ARG, "CUDA SGLang hash: tensor %zu segment %zu ends at byte %llu, past the tensor's %llu", i, k, (unsigned long long)end, (unsigned long long)t.total_bytes);
            if (!g.src) return wsc_fail(err, WS_ERR_ARG, "CUDA SGLang hash: tensor %zu segment %zu: NULL source", i, k);
            if (g.src_dtype != g.dst_dtype &&
                ((uintptr_t)g.src % s.src_es || g.src_row_stride % (int64_t)s.src_es))
                return wsc_fail(err, WS_ERR_ARG, "CUDA SGLang hash: tensor %zu segment %zu: source not aligned to its elements", i, k);
            if (!first) first = g.src;
            s.pm_end = end;
            S.push_back(s);
        }
        T[i].nseg = S.size() - base;
        std::sort(S.begin() + base, S.end(), [](const SSeg &x, const SSeg &y) { return x.dst_offset < y.dst_offset; });
        uint64_t pm = 0;
        for (size_t k = base; k < S.size(); k++) {
            pm = std::max(pm, S[k].pm_end);
            S[k].pm_end = pm;
        }
    }
    for (size_t i = 0; i < n; i++) out[i] = 0;
    if (!tiles) return WS_OK;
    if (tiles > 0x7fffffffull || n > UINT32_MAX)
        return wsc_fail(err, WS_ERR_LIMIT, "CUDA SGLang hash: batch too large (%llu tiles)", (unsigned long long)tiles);
    if (first) {
        ws_err rc = wsc_use_device_of(first, nullptr, err);
        if (rc) return rc;
    }
    wsc_device_state *st = wsc_state(err);
    if (!st) return err ? err->code : WS_ERR_IO;
    std::lock_guard<std::mutex> g(st->mu);
    cudaStream_t s = (cudaStream_t)stream;
    size_t sb = S.size() * sizeof(SSeg), tb = n * sizeof(STensor);
    size_t sb_al = (sb + 255) / 256 * 256;
    ws_err rc;
    if ((rc = wsc_buf_reserve(&st->desc, sb_al + tb, err)) ||
        (rc = wsc_buf_reserve(&st->result, n * 8, err)))
        return rc;
    if (sb) memcpy(st->desc.host, S.data(), sb);
    memcpy((char *)st->desc.host + sb_al, T.data(), tb);
    WSC_TRY(cudaMemcpyAsync(st->desc.dev, st->desc.host, sb_al + tb, cudaMemcpyHostToDevice, s));
    WSC_TRY(cudaMemsetAsync(st->result.dev, 0, n * 8, s));
    uint32_t seed1 = (uint32_t)(SEED & 0xffffffffu);
    uint32_t seed2 = (uint32_t)(((SEED * 0x9E3779B1ull) ^ 0xDEADBEEFull) & 0xffffffffu);
    sglang_kernel<<<(unsigned)tiles, SG_THREADS, 0, s>>>(
        (const SSeg *)st->desc.dev, (const STensor *)((char *)st->desc.dev + sb_al), (uint32_t)n,
        seed1, seed2, (unsigned long long *)st->result.dev);
    WSC_TRY(cudaGetLastError());
    WSC_TRY(cudaMemcpyAsync(st->result.host, st->result.dev, n * 8, cudaMemcpyDeviceToHost, s));
    WSC_TRY(cudaStreamSynchronize(s));
    const uint64_t *r = (const uint64_t *)st->result.host;
    for (size_t i = 0; i < n; i++) out[i] = T[i].n_u32 ? splitmix_final(r[i]) : 0;
    return WS_OK;
}
