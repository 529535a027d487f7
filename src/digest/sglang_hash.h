/*
 * SGLang's tensor hash (the "checksum" of /weights_checker), internals: the per-word kernels
 * and their dispatch. The algorithm is SGLang's gpu_tensor_hash (sglang 0.5.x,
 * python/sglang/kernels/ops/memory/gpu_tensor_hash.py), re-implemented from its source:
 *
 *   the tensor's bytes, zero-padded to a multiple of 4, are little-endian u32 words w_i;
 *   p1(i) = (i * 0x27D4EB2D + S1) ^ rotl(i, 15),  p2(i) = (i * 0x165667B1 + S2) ^ rotl(i, 13)
 *   (i mod 2^32, S1 = seed, S2 = (seed * 0x9E3779B1) ^ 0xDEADBEEF, seed 0x243F6A88);
 *   per tile t of 8192 words: A = sum fmix32(w_i ^ p1(i)), B = sum fmix32(w_i ^ p2(i)) (mod
 *   2^32, over the words of the tile), nb = 4 * words (mod 2^32),
 *   tile_t = fmix32(A ^ nb) << 32 | fmix32(B ^ nb);
 *   hash = splitmix64 finaliser of (sum of tile_t mod 2^64); 0 bytes hash to 0.
 *
 * fmix32 is MurmurHash3's finaliser. Every per-word term depends on the word and its index
 * only, so a tile's sums add up from runs of words fed in any order: this is what lets the
 * streaming hasher take a local tensor as pieces at byte offsets (sglang_hash.c).
 */
#ifndef WS_SGLANG_HASH_H
#define WS_SGLANG_HASH_H

#include "internal.h"

#define WSI_SGL_TILE_WORDS 8192u
#define WSI_SGL_SEED 0x243F6A88u
#define WSI_SGL_S1 WSI_SGL_SEED
#define WSI_SGL_S2 ((uint32_t)(WSI_SGL_SEED * 0x9E3779B1u) ^ 0xDEADBEEFu)
#define WSI_SGL_POS1 0x27D4EB2Du
#define WSI_SGL_POS2 0x165667B1u
#define WSI_SGL_FM1 0x85EBCA6Bu
#define WSI_SGL_FM2 0xC2B2AE35u

static inline uint32_t wsi_sgl_fmix32(uint32_t x) {
    x ^= x >> 16;
    x *= WSI_SGL_FM1;
    x ^= x >> 13;
    x *= WSI_SGL_FM2;
    x ^= x >> 16;
    return x;
}

static inline uint32_t wsi_sgl_rotl(uint32_t x, int r) { return (x << r) | (x >> (32 - r)); }

/*
 * A kernel adds, for the n little-endian u32 words at data (any alignment) whose word indices
 * are idx0, idx0 + 1, ... (mod 2^32):
 *   sums[0] += sum fmix32(w ^ p1(idx)),  sums[1] += sum fmix32(w ^ p2(idx))  (mod 2^32).
 */
typedef void (*wsi_sgl_run_fn)(const void *data, uint32_t idx0, size_t n, uint32_t sums[2]);

WSI_HIDDEN void wsi_sgl_run_scalar(const void *data, uint32_t idx0, size_t n, uint32_t sums[2]);
#if defined(__x86_64__)
#define WSI_SGL_HAVE_X86 1
WSI_HIDDEN void wsi_sgl_run_avx2(const void *data, uint32_t idx0, size_t n, uint32_t sums[2]);
WSI_HIDDEN void wsi_sgl_run_avx512(const void *data, uint32_t idx0, size_t n, uint32_t sums[2]);
#endif

/* The kernel in use (chosen once from the CPU, or forced by ws_sglang_set_kernel). */
WSI_HIDDEN wsi_sgl_run_fn wsi_sgl_kernel(void);

/* The 64-bit value of one tile from its two sums and the tensor's word count. */
static inline uint64_t wsi_sgl_tile(uint32_t a, uint32_t b, uint64_t words) {
    uint32_t nb = (uint32_t)(words * 4u);
    return (uint64_t)wsi_sgl_fmix32(a ^ nb) << 32 | wsi_sgl_fmix32(b ^ nb);
}

static inline uint64_t wsi_sgl_final(uint64_t x) {
    x ^= x >> 30;
    x *= UINT64_C(0xBF58476D1CE4E5B9);
    x ^= x >> 27;
    x *= UINT64_C(0x94D049BB133111EB);
    x ^= x >> 31;
    return x;
}

#endif
