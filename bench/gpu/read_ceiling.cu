// What reading the bytes alone costs on this GPU, to put the fast digest's time in scale
// (docs/cuda.md "Benchmark"): one buffer of the benchmark's size (6.17 GB), read
//   plain    every thread 4 independent 16-byte loads per step, a grid-stride loop (the ceiling)
//   tc       the tensor-core kernel's access pattern without its arithmetic: a warp takes tiles of
//            16 blocks x 2 KiB, each thread 8 16-byte loads per 256-byte stage (rows 2 KiB
//            apart, 64 bytes per row per instruction), one stage loaded ahead, each warp a
//            contiguous range of tiles, 4 warps per block, 3 blocks per SM (as launched)
//   tc+pf    the same, each thread prefetching into L2 the lines two stages ahead
// Each sums its words (XOR) so nothing is optimised away. Times: CUDA events, median of 20.
// Last, the host cost of cudaPointerGetAttributes on 434 allocations (median of 5 loops).
//   nvcc -O3 -arch=sm_90 -o read_ceiling bench/gpu/read_ceiling.cu && ./read_ceiling
#include <cstdio>
#include <cstdlib>
#include <algorithm>
#include <chrono>
#include <vector>
#include <cuda_runtime.h>

#define CK(x) do { cudaError_t e_ = (x); if (e_ != cudaSuccess) { \
    fprintf(stderr, "%s: %s\n", #x, cudaGetErrorString(e_)); exit(1); } } while (0)

__global__ void plain(const uint4 *p, size_t n, unsigned *out) {
    unsigned x = 0;
    size_t stride = (size_t)gridDim.x * blockDim.x;
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    for (; i + 3 * stride < n; i += 4 * stride) {
        uint4 a = __ldcs(p + i), b = __ldcs(p + i + stride), c = __ldcs(p + i + 2 * stride),
              d = __ldcs(p + i + 3 * stride);
        x ^= a.x ^ a.y ^ a.z ^ a.w ^ b.x ^ b.y ^ b.z ^ b.w ^ c.x ^ c.y ^ c.z ^ c.w ^ d.x ^ d.y ^
             d.z ^ d.w;
    }
    for (; i < n; i += stride) { uint4 a = __ldcs(p + i); x ^= a.x ^ a.y ^ a.z ^ a.w; }
    if (x == 0x12345678u) out[0] = x;
}

__device__ __forceinline__ void ld8(uint4 X[8], const unsigned char *pg, const unsigned char *ph,
                                    unsigned S) {
#pragma unroll
    for (int c = 0; c < 4; c++) {
        X[c] = __ldcs((const uint4 *)(pg + 256u * S + 64u * c));
        X[4 + c] = __ldcs((const uint4 *)(ph + 256u * S + 64u * c));
    }
}
__device__ __forceinline__ unsigned fold(const uint4 X[8]) {
    unsigned x = 0;
#pragma unroll
    for (int i = 0; i < 8; i++) x ^= X[i].x ^ X[i].y ^ X[i].z ^ X[i].w;
    return x;
}

template <int PF>
__global__ void __launch_bounds__(128) tc_pattern(const unsigned char *base, size_t ntiles,
                                                  size_t per_warp, unsigned *out) {
    const unsigned lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
    size_t tile = ((size_t)blockIdx.x * 4 + (threadIdx.x >> 5)) * per_warp;
    if (tile >= ntiles) return;
    size_t tend = min(tile + per_warp, ntiles);
    unsigned x = 0;
    uint4 X[8], Y[8];
    const unsigned char *pg = base + tile * 32768 + 2048u * g + 16u * t, *ph = pg + 8 * 2048;
    ld8(X, pg, ph, 0);
    for (;;) {
        const bool more = tile + 1 < tend;
        const unsigned char *npg = pg + 32768, *nph = ph + 32768;
#pragma unroll
        for (unsigned S = 0; S < 8; S += 2) {
            if (PF) { /* lane: row lane / 2, half lane % 2 of the stage PF ahead */
                unsigned T = S + PF;
                const unsigned char *r = (T < 8 ? base + tile * 32768 : base + (tile + 1) * 32768) +
                                         2048u * (lane >> 1) + 256u * (T % 8) + 128u * (lane & 1);
                if (T < 8 || more) asm volatile("prefetch.global.L2 [%0];" ::"l"(r));
            }
            ld8(Y, pg, ph, S + 1);
            x ^= fold(X);
            if (S + 2 < 8) ld8(X, pg, ph, S + 2);
            else if (more) ld8(X, npg, nph, 0);
            x ^= fold(Y);
        }
        if (!more) break;
        tile++;
        pg = npg;
        ph = nph;
    }
    if (x == 0x12345678u) out[0] = x;
}

template <typename F> static float time_ms(F f) {
    cudaEvent_t a, b;
    CK(cudaEventCreate(&a));
    CK(cudaEventCreate(&b));
    for (int i = 0; i < 3; i++) f();
    std::vector<float> v;
    for (int i = 0; i < 20; i++) {
        CK(cudaEventRecord(a));
        f();
        CK(cudaEventRecord(b));
        CK(cudaEventSynchronize(b));
        float ms;
        CK(cudaEventElapsedTime(&ms, a, b));
        v.push_back(ms);
    }
    CK(cudaGetLastError());
    std::sort(v.begin(), v.end());
    return v[v.size() / 2];
}

int main() {
    const size_t bytes = 6172311552ull / 32768 * 32768; /* the benchmark's 6.17 GB, whole tiles */
    int sms;
    CK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0));
    unsigned char *p;
    unsigned *out;
    CK(cudaMalloc(&p, bytes));
    CK(cudaMalloc(&out, 4));
    CK(cudaMemset(p, 0x5a, bytes));
    const size_t n16 = bytes / 16, ntiles = bytes / 32768;
    float ms = time_ms([&] { plain<<<sms * 8, 256>>>((const uint4 *)p, n16, out); });
    printf("read ceiling: plain 16-byte loads, 6.17 GB        %7.3f ms  %.2f TB/s\n", ms, bytes / ms / 1e9);
    float cp = time_ms([&] { CK(cudaMemcpyAsync(p + bytes / 2, p, bytes / 2, cudaMemcpyDeviceToDevice)); });
    printf("read ceiling: cudaMemcpy D2D of half (read+write)  %7.3f ms  %.2f TB/s read+write\n", cp, bytes / cp / 1e9);
    for (int bps : {3, 4}) {
        size_t warps = (size_t)sms * bps * 4, per = (ntiles + warps - 1) / warps;
        ms = time_ms([&] { tc_pattern<0><<<sms * bps, 128>>>(p, ntiles, per, out); });
        printf("read ceiling: tc pattern, %d blocks/SM              %7.3f ms  %.2f TB/s\n", bps, ms, bytes / ms / 1e9);
        ms = time_ms([&] { tc_pattern<2><<<sms * bps, 128>>>(p, ntiles, per, out); });
        printf("read ceiling: tc pattern + L2 prefetch 2 ahead, %d/SM %7.3f ms  %.2f TB/s\n", bps, ms, bytes / ms / 1e9);
        ms = time_ms([&] { tc_pattern<4><<<sms * bps, 128>>>(p, ntiles, per, out); });
        printf("read ceiling: tc pattern + L2 prefetch 4 ahead, %d/SM %7.3f ms  %.2f TB/s\n", bps, ms, bytes / ms / 1e9);
    }
    CK(cudaDeviceSynchronize());
    CK(cudaFree(p));
    /* host cost of asking the driver where a pointer lies, as the backend does per tensor */
    std::vector<void *> bufs(434);
    for (auto &b : bufs) CK(cudaMalloc(&b, 1 << 20));
    cudaPointerAttributes a;
    std::vector<double> us;
    for (int rep = 0; rep < 5; rep++) {
        auto t0 = std::chrono::steady_clock::now();
        for (void *b : bufs) CK(cudaPointerGetAttributes(&a, (char *)b + 64));
        auto t1 = std::chrono::steady_clock::now();
        us.push_back(std::chrono::duration<double, std::micro>(t1 - t0).count());
    }
    std::sort(us.begin(), us.end());
    printf("host: cudaPointerGetAttributes on 434 allocations     %7.3f ms  (%.2f us each)\n",
           us[2] / 1e3, us[2] / 434);
    return 0;
}
