/*
 * The fast digest of many rectangles in one launch (docs/fast-digest.md, device_backend.h).
 *
 * Work is cut into tasks: one task is the part of one rectangle row that falls in one global
 * block of B = 1024 units. A warp takes a contiguous range of tasks; each of its threads
 * reads 4 groups of 8 consecutive units (16-byte loads where the row allows), multiplies them
 * by the block's keys (shared memory) into exact 64-bit sums (< 2^53 per thread), and adds
 * y^m * sum (mod p) to its own running lane values, y^m advancing by one multiply from block
 * to block. When the warp leaves a rectangle its lanes are summed (mod p) and added to the
 * rectangle's result as 32-bit halves by atomics, so any number of warps may share one.
 * NaN/Inf counts of the stored elements come from the same pass.
 */
#include "device_cast.cuh"
#include "device_state.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <vector>

#define FB 1024u
#define FP ((1ull << 61) - 1)
#define WARPS_PER_BLOCK 8

enum : uint32_t { MODE_RAW16 = 0, MODE_RAW8 = 1, MODE_CAST = 2 };

struct FRect {
    const uint8_t *ptr;
    int64_t row_stride_b, col_stride_b;
    uint64_t rows, cols;
    uint64_t j0, row_units;
    uint64_t tpr, task0;
    uint32_t dt, mode, es, ushift;
    uint32_t out, vec; /* vec: columns contiguous (col stride = element size) */
    uint32_t hot;      /* HOT_*: a fast path for whole blocks, or HOT_NONE */
    uint32_t special;  /* HOT_RAW16_2 floats: the exponent mask in both halves, else 0 */
};

enum : uint32_t { HOT_NONE = 0, HOT_RAW16_2 = 1, HOT_CAST_F32 = 2 };

/* The tensor-core path (fast_tc_kernel): whole blocks of 2-byte units, 16 blocks per warp-wide
 * tile, each block one row of an 8-bit matrix product (see the comment above the kernel). */
#define TC_ROWS 16u   /* blocks per tile: the MMA's M */
#define TC_STAGES 8u  /* 256-byte stages per 2048-byte block row */
#define TC_WARPS 4
#define TC_BIMG (TC_STAGES * WS_FAST_LANES * 4u * 32u) /* uint4 words of the key image */

struct KeyDev {
    uint32_t k[WS_FAST_LANES][FB];
    uint64_t y[WS_FAST_LANES];
    uint64_t ysq[WS_FAST_LANES][64];
    /* the keys as the MMA's B fragments, in the order the warp reads them (tc_bimg) */
    uint4 bimg[TC_BIMG];
};

__device__ __forceinline__ uint64_t mulmod(uint64_t a, uint64_t b) {
    uint64_t lo = a * b, hi = __umul64hi(a, b);
    uint64_t r = (lo & FP) + ((lo >> 61) | (hi << 3));
    return r >= FP ? r - FP : r;
}
__device__ __forceinline__ uint64_t addmod(uint64_t a, uint64_t b) {
    uint64_t r = a + b;
    return r >= FP ? r - FP : r;
}

/* One unit at row-relative unit index q, by the general rule (any stride). */
__device__ __forceinline__ uint32_t unit_at(const FRect &R, const uint8_t *rowbase, uint64_t q,
                                            uint32_t &nan, uint32_t &inf) {
    uint64_t e = q >> R.ushift;
    uint32_t s = (uint32_t)(q & ((1u << R.ushift) - 1));
    const uint8_t *p = rowbase + (int64_t)e * R.col_stride_b;
    uint64_t bits = load_bits(p, R.es);
    if (s == 0 && dt_is_float(R.dt)) classify(R.dt, bits, nan, inf);
    if (R.mode == MODE_CAST) return to_bf16(R.dt, bits);
    if (R.mode == MODE_RAW8) return (uint32_t)bits & 0xffu;
    return (uint32_t)(bits >> (16 * s)) & 0xffffu;
}

/* 8 units starting at row-relative unit q (a multiple of 8 units from an element boundary),
 * all inside the row, columns contiguous and the address aligned (checked per task). */
__device__ __forceinline__ void load8_vec(const FRect &R, const uint8_t *rowbase, uint64_t q,
                                          uint32_t u[8], uint32_t &nan, uint32_t &inf) {
    bool fl = dt_is_float(R.dt);
    if (R.mode == MODE_RAW16) {
        uint4 v = __ldcs((const uint4 *)(rowbase + 2 * q));
        uint32_t w[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
        for (int i = 0; i < 4; i++) {
            u[2 * i] = w[i] & 0xffffu;
            u[2 * i + 1] = w[i] >> 16;
        }
        if (fl) {
            if (R.es == 2) {
#pragma unroll
                for (int i = 0; i < 8; i++) classify(R.dt, u[i], nan, inf);
            } else if (R.es == 4) {
#pragma unroll
                for (int i = 0; i < 4; i++) classify(R.dt, w[i], nan, inf);
            } else {
                classify(R.dt, (uint64_t)w[1] << 32 | w[0], nan, inf);
                classify(R.dt, (uint64_t)w[3] << 32 | w[2], nan, inf);
            }
        }
    } else if (R.mode == MODE_RAW8) {
        uint2 v = __ldcs((const uint2 *)(rowbase + q));
#pragma unroll
        for (int i = 0; i < 4; i++) {
            u[i] = (v.x >> (8 * i)) & 0xffu;
            u[4 + i] = (v.y >> (8 * i)) & 0xffu;
        }
        if (fl) {
#pragma unroll
            for (int i = 0; i < 8; i++) classify(R.dt, u[i], nan, inf);
        }
    } else { /* MODE_CAST: 8 elements of es bytes */
        const uint8_t *p = rowbase + q * R.es;
        uint64_t bits[8];
        if (R.es == 4) {
            uint4 a = __ldcs((const uint4 *)p), b = __ldcs((const uint4 *)(p + 16));
            bits[0] = a.x; bits[1] = a.y; bits[2] = a.z; bits[3] = a.w;
            bits[4] = b.x; bits[5] = b.y; bits[6] = b.z; bits[7] = b.w;
        } else if (R.es == 2) {
            uint4 a = __ldcs((const uint4 *)p);
            uint32_t w[4] = {a.x, a.y, a.z, a.w};
#pragma unroll
            for (int i = 0; i < 4; i++) {
                bits[2 * i] = w[i] & 0xffffu;
                bits[2 * i + 1] = w[i] >> 16;
            }
        } else if (R.es == 8) {
#pragma unroll
            for (int i = 0; i < 4; i++) {
                uint4 a = __ldcs((const uint4 *)(p + 16 * i));
                bits[2 * i] = (uint64_t)a.y << 32 | a.x;
                bits[2 * i + 1] = (uint64_t)a.w << 32 | a.z;
            }
        } else {
            uint2 a = __ldcs((const uint2 *)p);
#pragma unroll
            for (int i = 0; i < 4; i++) {
                bits[i] = (a.x >> (8 * i)) & 0xffu;
                bits[4 + i] = (a.y >> (8 * i)) & 0xffu;
            }
        }
#pragma unroll
        for (int i = 0; i < 8; i++) {
            classify(R.dt, bits[i], nan, inf);
            u[i] = to_bf16(R.dt, bits[i]);
        }
    }
}

__device__ __forceinline__ uint64_t pow_y(const uint64_t *ysq, uint64_t e) {
    uint64_t r = 1;
    for (int i = 0; e; i++, e >>= 1)
        if (e & 1) r = mulmod(r, ysq[i]);
    return r;
}

__device__ void flush(const FRect &R, uint64_t acc[3], uint32_t nan, uint32_t inf,
                      unsigned long long *res) {
#pragma unroll
    for (int off = 16; off; off >>= 1)
#pragma unroll
        for (int l = 0; l < 3; l++) acc[l] = addmod(acc[l], __shfl_xor_sync(0xffffffffu, acc[l], off));
    nan = __reduce_add_sync(0xffffffffu, nan);
    inf = __reduce_add_sync(0xffffffffu, inf);
    if ((threadIdx.x & 31) == 0) {
        unsigned long long *r = res + 8 * (size_t)R.out;
#pragma unroll
        for (int l = 0; l < 3; l++) {
            if (!acc[l]) continue;
            atomicAdd(&r[2 * l], (unsigned long long)(acc[l] & 0xffffffffu));
            atomicAdd(&r[2 * l + 1], (unsigned long long)(acc[l] >> 32));
        }
        if (nan) atomicAdd(&r[6], (unsigned long long)nan);
        if (inf) atomicAdd(&r[7], (unsigned long long)inf);
    }
#pragma unroll
    for (int l = 0; l < 3; l++) acc[l] = 0;
}

/* Any task: partial blocks, strides, every dtype and mode (the reference path). */
__device__ __noinline__ void task_general(const FRect &R, const uint8_t *rowbase, uint64_t b,
                                          uint64_t lo, uint64_t hi, uint64_t j0,
                                          const uint32_t (*K)[FB], uint32_t lane, uint64_t &s0,
                                          uint64_t &s1, uint64_t &s2, uint32_t &nan,
                                          uint32_t &inf) {
            /* bytes of stored data per unit when columns are contiguous */
            const uint32_t bpu = R.mode == MODE_CAST ? R.es : (R.mode == MODE_RAW8 ? 1 : 2);
            const uint32_t align = R.mode == MODE_RAW8 || (R.mode == MODE_CAST && R.es == 1) ? 8 : 16;
            const bool vec = R.vec && (((uintptr_t)rowbase - j0 * bpu) % align) == 0;
            uint32_t u[4][8];
#pragma unroll
            for (int it = 0; it < 4; it++) {
                const uint64_t g = b * FB + 256 * it + 8 * lane;
                if (vec && g >= lo && g + 8 <= hi) {
                    load8_vec(R, rowbase, g - j0, u[it], nan, inf);
                } else {
#pragma unroll
                    for (int k = 0; k < 8; k++) {
                        const uint64_t j = g + k;
                        u[it][k] = (j >= lo && j < hi) ? unit_at(R, rowbase, j - j0, nan, inf) : 0;
                    }
                }
            }
#pragma unroll
            for (int it = 0; it < 4; it++) {
                const uint32_t off = 256 * it + 8 * lane;
                const uint4 a0 = *(const uint4 *)&K[0][off], b0 = *(const uint4 *)&K[0][off + 4];
                const uint4 a1 = *(const uint4 *)&K[1][off], b1 = *(const uint4 *)&K[1][off + 4];
                const uint4 a2 = *(const uint4 *)&K[2][off], b2 = *(const uint4 *)&K[2][off + 4];
                const uint32_t k0[8] = {a0.x, a0.y, a0.z, a0.w, b0.x, b0.y, b0.z, b0.w};
                const uint32_t k1[8] = {a1.x, a1.y, a1.z, a1.w, b1.x, b1.y, b1.z, b1.w};
                const uint32_t k2[8] = {a2.x, a2.y, a2.z, a2.w, b2.x, b2.y, b2.z, b2.w};
#pragma unroll
                for (int k = 0; k < 8; k++) {
                    s0 += (uint64_t)k0[k] * u[it][k];
                    s1 += (uint64_t)k1[k] * u[it][k];
                    s2 += (uint64_t)k2[k] * u[it][k];
                }
            }
}

/* A whole block of 2-byte units read as they are (bf16/f16/16-bit integers), rows aligned:
 * 4 independent 16-byte loads per thread, NaN/Inf counted only when a prefilter sees an
 * all-ones exponent. p: the block's first unit. */
__device__ __forceinline__ void task_raw16(const FRect &R, const uint8_t *p, const uint32_t (*K)[FB],
                                           uint32_t lane, uint64_t &s0, uint64_t &s1,
                                           uint64_t &s2, uint32_t &nan, uint32_t &inf) {
    const uint4 *q = (const uint4 *)p + lane;
    uint4 v[4];
#pragma unroll
    for (int it = 0; it < 4; it++) v[it] = __ldcs(q + 32 * it);
    if (R.special) {
        const uint32_t M = R.special, m = M & 0xffffu;
        uint32_t hit = 0;
#pragma unroll
        for (int it = 0; it < 4; it++)
            hit |= __vcmpeq2(v[it].x & M, M) | __vcmpeq2(v[it].y & M, M) |
                   __vcmpeq2(v[it].z & M, M) | __vcmpeq2(v[it].w & M, M);
        if (hit) {
#pragma unroll
            for (int it = 0; it < 4; it++) {
                const uint32_t w[4] = {v[it].x, v[it].y, v[it].z, v[it].w};
#pragma unroll
                for (int i = 0; i < 8; i++) {
                    uint32_t u = (w[i / 2] >> (16 * (i & 1))) & 0x7fffu;
                    nan += u > m;
                    inf += u == m;
                }
            }
        }
    }
#pragma unroll
    for (int it = 0; it < 4; it++) {
        const uint32_t off = 256 * it + 8 * lane;
        const uint32_t w[4] = {v[it].x, v[it].y, v[it].z, v[it].w};
#pragma unroll
        for (int h = 0; h < 2; h++) {
            const uint4 a0 = *(const uint4 *)&K[0][off + 4 * h];
            const uint4 a1 = *(const uint4 *)&K[1][off + 4 * h];
            const uint4 a2 = *(const uint4 *)&K[2][off + 4 * h];
            const uint32_t u0 = w[2 * h] & 0xffffu, u1 = w[2 * h] >> 16;
            const uint32_t u2 = w[2 * h + 1] & 0xffffu, u3 = w[2 * h + 1] >> 16;
            s0 += (uint64_t)a0.x * u0 + (uint64_t)a0.y * u1 + (uint64_t)a0.z * u2 + (uint64_t)a0.w * u3;
            s1 += (uint64_t)a1.x * u0 + (uint64_t)a1.y * u1 + (uint64_t)a1.z * u2 + (uint64_t)a1.w * u3;
            s2 += (uint64_t)a2.x * u0 + (uint64_t)a2.y * u1 + (uint64_t)a2.z * u2 + (uint64_t)a2.w * u3;
        }
    }
}

/* A whole block of F32 elements cast to bf16 units, rows aligned: 8 independent 16-byte loads. */
__device__ __forceinline__ void task_cast_f32(const uint8_t *p, const uint32_t (*K)[FB],
                                              uint32_t lane, uint64_t &s0, uint64_t &s1,
                                              uint64_t &s2, uint32_t &nan, uint32_t &inf) {
    const uint4 *q = (const uint4 *)p + 2 * lane;
    uint4 v[8];
#pragma unroll
    for (int it = 0; it < 4; it++) {
        v[2 * it] = __ldcs(q + 64 * it);
        v[2 * it + 1] = __ldcs(q + 64 * it + 1);
    }
    uint32_t hit = 0;
#pragma unroll
    for (int i = 0; i < 8; i++)
        hit |= ((v[i].x & 0x7f800000u) == 0x7f800000u) | ((v[i].y & 0x7f800000u) == 0x7f800000u) |
               ((v[i].z & 0x7f800000u) == 0x7f800000u) | ((v[i].w & 0x7f800000u) == 0x7f800000u);
    if (hit) {
#pragma unroll
        for (int i = 0; i < 8; i++) {
            const uint32_t w[4] = {v[i].x, v[i].y, v[i].z, v[i].w};
#pragma unroll
            for (int k = 0; k < 4; k++) {
                uint32_t m = w[k] & 0x7fffffffu;
                nan += m > 0x7f800000u;
                inf += m == 0x7f800000u;
            }
        }
    }
#pragma unroll
    for (int it = 0; it < 4; it++) {
        const uint32_t off = 256 * it + 8 * lane;
#pragma unroll
        for (int h = 0; h < 2; h++) {
            const uint4 x = v[2 * it + h];
            const uint4 a0 = *(const uint4 *)&K[0][off + 4 * h];
            const uint4 a1 = *(const uint4 *)&K[1][off + 4 * h];
            const uint4 a2 = *(const uint4 *)&K[2][off + 4 * h];
            const uint32_t u0 = bf16_from_f32_bits(x.x), u1 = bf16_from_f32_bits(x.y);
            const uint32_t u2 = bf16_from_f32_bits(x.z), u3 = bf16_from_f32_bits(x.w);
            s0 += (uint64_t)a0.x * u0 + (uint64_t)a0.y * u1 + (uint64_t)a0.z * u2 + (uint64_t)a0.w * u3;
            s1 += (uint64_t)a1.x * u0 + (uint64_t)a1.y * u1 + (uint64_t)a1.z * u2 + (uint64_t)a1.w * u3;
            s2 += (uint64_t)a2.x * u0 + (uint64_t)a2.y * u1 + (uint64_t)a2.z * u2 + (uint64_t)a2.w * u3;
        }
    }
}

__global__ void __launch_bounds__(32 * WARPS_PER_BLOCK)
fast_kernel(const FRect *__restrict__ rects, uint32_t nrects, uint64_t ntasks, uint64_t per_warp,
            const KeyDev *__restrict__ key, unsigned long long *res) {
    __shared__ __align__(16) uint32_t K[3][FB];
    __shared__ uint64_t YSQ[3][64];
    for (uint32_t i = threadIdx.x; i < 3 * FB; i += blockDim.x) (&K[0][0])[i] = (&key->k[0][0])[i];
    for (uint32_t i = threadIdx.x; i < 3 * 64; i += blockDim.x) (&YSQ[0][0])[i] = (&key->ysq[0][0])[i];
    __syncthreads();

    const uint32_t lane = threadIdx.x & 31;
    const uint64_t warp = (uint64_t)blockIdx.x * WARPS_PER_BLOCK + (threadIdx.x >> 5);
    uint64_t t = warp * per_warp;
    if (t >= ntasks) return;
    const uint64_t tend = min(t + per_warp, ntasks);

    /* the rectangle holding task t: the last one whose task0 <= t */
    uint32_t lo_i = 0, hi_i = nrects;
    while (hi_i - lo_i > 1) {
        uint32_t mid = (lo_i + hi_i) / 2;
        if (rects[mid].task0 <= t) lo_i = mid;
        else hi_i = mid;
    }
    uint32_t ri = lo_i;
    FRect R = rects[ri];
    uint64_t rend = R.task0 + R.rows * R.tpr;
    uint64_t row = (t - R.task0) / R.tpr, ti = (t - R.task0) % R.tpr;

    uint64_t acc[3] = {0, 0, 0}, yp[3] = {1, 1, 1};
    uint64_t prev_b = ~0ull;
    uint32_t nan = 0, inf = 0;
    const uint64_t y0 = key->y[0], y1 = key->y[1], y2 = key->y[2];

    for (; t < tend; t++) {
        while (t >= rend) {
            flush(R, acc, nan, inf, res);
            nan = inf = 0;
            R = rects[++ri];
            rend = R.task0 + R.rows * R.tpr;
            row = 0;
            ti = 0;
            prev_b = ~0ull;
        }
        const uint64_t j0 = R.j0 + row * R.row_units;
        const uint64_t L = R.cols << R.ushift;
        const uint64_t b = (j0 / FB) + ti;
        const uint64_t lo = max(j0, b * FB), hi = min(j0 + L, (b + 1) * FB);
        if (lo < hi) {
            if (prev_b != ~0ull && b == prev_b + 1) {
                yp[0] = mulmod(yp[0], y0);
                yp[1] = mulmod(yp[1], y1);
                yp[2] = mulmod(yp[2], y2);
            } else {
                yp[0] = pow_y(YSQ[0], b);
                yp[1] = pow_y(YSQ[1], b);
                yp[2] = pow_y(YSQ[2], b);
            }
            prev_b = b;
            const uint8_t *rowbase = R.ptr + (int64_t)row * R.row_stride_b;
            uint64_t s0 = 0, s1 = 0, s2 = 0;
            const bool full = lo == b * FB && hi == (b + 1) * FB;
            if (full && R.hot == HOT_RAW16_2 && (((uintptr_t)rowbase - j0 * 2) % 16) == 0)
                task_raw16(R, rowbase + 2 * (b * FB - j0), K, lane, s0, s1, s2, nan, inf);
            else if (full && R.hot == HOT_CAST_F32 && (((uintptr_t)rowbase - j0 * 4) % 16) == 0)
                task_cast_f32(rowbase + 4 * (b * FB - j0), K, lane, s0, s1, s2, nan, inf);
            else
                task_general(R, rowbase, b, lo, hi, j0, K, lane, s0, s1, s2, nan, inf);
            /* s < 32 * 2^32 * 2^16 = 2^53 < p: no reduction needed before the multiply */
            acc[0] = addmod(acc[0], mulmod(yp[0], s0));
            acc[1] = addmod(acc[1], mulmod(yp[1], s1));
            acc[2] = addmod(acc[2], mulmod(yp[2], s2));
        }
        if (++ti == R.tpr) {
            ti = 0;
            row++;
        }
    }
    flush(R, acc, nan, inf, res);
}

/* ---- the tensor-core path ----
 *
 * The inner sum of a block, s_l = sum_j K_l[j] u_j over its 1024 16-bit units, is split by bytes:
 * u_j = u0_j + 2^8 u1_j and K_l[j] = sum_b 2^(8b) K_lb[j], so s_l = sum_{a<2,b<4} 2^(8(a+b)) S_lab
 * with S_lab = sum_j u_a,j K_lb,j, an exact sum of 8-bit products (< 1024 * 255 * 255 < 2^31).
 * For 16 blocks at once that is an 8-bit matrix product: A = the blocks' bytes as they lie in
 * memory (16 rows of 2048 bytes), B = 2048 x 24 (lane l, byte parity a, key byte b), B[p][(l,a,b)]
 * = byte b of K_l[p/2] when p % 2 == a, else 0; mma.sync m16n8k32 u8 x u8 -> s32, one n-tile of
 * 8 columns (a, b) per lane. The k order inside a block is free (the sum does not care), so each
 * thread reads 16-byte vectors and uses them as A fragments directly; B is laid out to match
 * (tc_pos), once per key, and read from shared memory. The epilogue turns a thread's columns
 * into its share of s_l (exact 64-bit), multiplies by y^m mod p and keeps running lanes; lanes
 * are reduced per piece like the general kernel's. NaN/Inf counts from the same loads. */

/* Byte position inside a block row of byte i of register q (0..15) of a thread's stage (thread
 * t = lane % 4 of its group of 4; stage S of 8): the thread's four 16-byte loads of the row sit
 * 64 bytes apart, the group's four threads side by side. */
__host__ __device__ __forceinline__ uint32_t tc_pos(uint32_t t, uint32_t S, uint32_t q, uint32_t i) {
    return 256u * S + 64u * (q >> 2) + 16u * t + 4u * (q & 3u) + i;
}

struct TPiece {
    const uint8_t *base; /* the piece's first whole block, 16-byte aligned */
    uint64_t b0, nblk;   /* its first block's global index, whole blocks */
    uint64_t tile0;      /* first tile (of TC_ROWS blocks) in the launch */
    uint32_t out, special; /* result slot; exponent mask in both halves (0: no NaN/Inf) */
};

__device__ __forceinline__ void mma_u8(int c[4], uint32_t a0, uint32_t a1, uint32_t a2,
                                       uint32_t a3, uint32_t b0, uint32_t b1) {
    asm("mma.sync.aligned.m16n8k32.row.col.s32.u8.u8.s32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
        "{%8,%9}, {%0,%1,%2,%3};\n"
        : "+r"(c[0]), "+r"(c[1]), "+r"(c[2]), "+r"(c[3])
        : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

/* One stage: the thread's 4 vectors of row g (X[0..3]) and of row g + 8 (X[4..7]). */
__device__ __forceinline__ void tc_load(uint4 X[8], const uint8_t *pg, const uint8_t *ph, bool vg,
                                        bool vh, uint32_t S) {
    const uint4 z = make_uint4(0, 0, 0, 0);
#pragma unroll
    for (int c = 0; c < 4; c++) {
        X[c] = vg ? __ldcs((const uint4 *)(pg + 256u * S + 64u * c)) : z;
        X[4 + c] = vh ? __ldcs((const uint4 *)(ph + 256u * S + 64u * c)) : z;
    }
}

__device__ __forceinline__ void tc_compute(const uint4 X[8], const uint4 *__restrict__ BS, uint32_t S,
                                           uint32_t lane, int C[3][4], uint32_t special,
                                           uint32_t &nan, uint32_t &inf) {
#pragma unroll
    for (int pr = 0; pr < 4; pr++) {
#pragma unroll
        for (int l = 0; l < 3; l++) {
            const uint4 b = BS[((S * 3u + l) * 4u + pr) * 32u + lane];
            mma_u8(C[l], X[pr].x, X[4 + pr].x, X[pr].y, X[4 + pr].y, b.x, b.y);
            mma_u8(C[l], X[pr].z, X[4 + pr].z, X[pr].w, X[4 + pr].w, b.z, b.w);
        }
    }
    if (special) {
        /* a half h of w & M is M's half m only when h + (0x8000 - m) reaches bit 15 */
        const uint32_t m = special & 0xffffu, add = (0x8000u - m) * 0x10001u;
        uint32_t hit = 0;
#pragma unroll
        for (int i = 0; i < 8; i++)
            hit |= ((X[i].x & special) + add) | ((X[i].y & special) + add) |
                   ((X[i].z & special) + add) | ((X[i].w & special) + add);
        if (hit & 0x80008000u) {
#pragma unroll
            for (int i = 0; i < 8; i++) {
                const uint32_t w[4] = {X[i].x, X[i].y, X[i].z, X[i].w};
#pragma unroll
                for (int k = 0; k < 8; k++) {
                    const uint32_t u = (w[k / 2] >> (16 * (k & 1))) & 0x7fffu;
                    nan += u > m;
                    inf += u == m;
                }
            }
        }
    }
}

__device__ __forceinline__ void tc_flush(uint32_t out, uint64_t acc[3], uint32_t nan, uint32_t inf,
                                         unsigned long long *res) {
#pragma unroll
    for (int off = 16; off; off >>= 1)
#pragma unroll
        for (int l = 0; l < 3; l++) acc[l] = addmod(acc[l], __shfl_xor_sync(0xffffffffu, acc[l], off));
    nan = __reduce_add_sync(0xffffffffu, nan);
    inf = __reduce_add_sync(0xffffffffu, inf);
    if ((threadIdx.x & 31) == 0) {
        unsigned long long *r = res + 8 * (size_t)out;
#pragma unroll
        for (int l = 0; l < 3; l++) {
            if (!acc[l]) continue;
            atomicAdd(&r[2 * l], (unsigned long long)(acc[l] & 0xffffffffu));
            atomicAdd(&r[2 * l + 1], (unsigned long long)(acc[l] >> 32));
        }
        if (nan) atomicAdd(&r[6], (unsigned long long)nan);
        if (inf) atomicAdd(&r[7], (unsigned long long)inf);
    }
#pragma unroll
    for (int l = 0; l < 3; l++) acc[l] = 0;
}

__device__ __forceinline__ uint64_t pow_y_global(const uint64_t *__restrict__ ysq, uint64_t e) {
    uint64_t r = 1;
    for (int i = 0; e; i++, e >>= 1)
        if (e & 1) r = mulmod(r, __ldg(ysq + i));
    return r;
}

__global__ void __launch_bounds__(32 * TC_WARPS)
fast_tc_kernel(const TPiece *__restrict__ pieces, uint32_t np, uint64_t ntiles, uint64_t per_warp,
               const KeyDev *__restrict__ key, unsigned long long *res) {
    extern __shared__ uint4 BS[]; /* TC_BIMG words: the key image */
    for (uint32_t i = threadIdx.x; i < TC_BIMG; i += blockDim.x) BS[i] = key->bimg[i];
    __syncthreads();

    const uint32_t lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
    const uint64_t warp = (uint64_t)blockIdx.x * TC_WARPS + (threadIdx.x >> 5);
    uint64_t tile = warp * per_warp;
    if (tile >= ntiles) return;
    const uint64_t tend = min(tile + per_warp, ntiles);

    uint32_t lo_i = 0, hi_i = np;
    while (hi_i - lo_i > 1) {
        uint32_t mid = (lo_i + hi_i) / 2;
        if (pieces[mid].tile0 <= tile) lo_i = mid;
        else hi_i = mid;
    }
    uint32_t pi = lo_i;
    TPiece P = pieces[pi];
    uint64_t k = tile - P.tile0; /* tile index inside the piece */

    /* this thread's two rows (blocks) of the tile */
    uint64_t rg = k * TC_ROWS + g, rh = rg + 8;
    bool vg = rg < P.nblk, vh = rh < P.nblk;
    const uint8_t *pg = P.base + 2048u * rg + 16u * t, *ph = P.base + 2048u * rh + 16u * t;

    uint64_t yg[3], yh[3], y8[3], y16[3];
#pragma unroll
    for (int l = 0; l < 3; l++) {
        y8[l] = __ldg(&key->ysq[l][3]);
        y16[l] = __ldg(&key->ysq[l][4]);
        yg[l] = pow_y_global(key->ysq[l], P.b0 + rg);
        yh[l] = mulmod(yg[l], y8[l]);
    }
    uint64_t acc[3] = {0, 0, 0};
    uint32_t nan = 0, inf = 0;
    /* the share of s_l in this thread's two columns of each n-tile: (a, b) = (t / 2, 2 (t % 2) + e) */
    const uint32_t sh = 8u * ((t >> 1) + 2u * (t & 1));

    uint4 X[8], Y[8];
    tc_load(X, pg, ph, vg, vh, 0);
    for (;;) {
        int C[3][4] = {{0, 0, 0, 0}, {0, 0, 0, 0}, {0, 0, 0, 0}};
        /* the next tile (its first stage is loaded before this tile's last stage is used) */
        const bool more = tile + 1 < tend;
        uint32_t npi = pi;
        uint64_t nk = k + 1;
        if (more && nk * TC_ROWS >= P.nblk) {
            npi = pi + 1;
            nk = 0;
        }
        const TPiece &NP = pieces[npi];
        const uint64_t nrg = nk * TC_ROWS + g, nrh = nrg + 8;
        const uint64_t nblk = npi == pi ? P.nblk : NP.nblk;
        const uint8_t *nbase = npi == pi ? P.base : NP.base;
        const bool nvg = more && nrg < nblk, nvh = more && nrh < nblk;
        const uint8_t *npg = nbase + 2048u * nrg + 16u * t, *nph = nbase + 2048u * nrh + 16u * t;
#pragma unroll
        for (uint32_t S = 0; S < TC_STAGES; S += 2) {
            tc_load(Y, pg, ph, vg, vh, S + 1);
            tc_compute(X, BS, S, lane, C, P.special, nan, inf);
            if (S + 2 < TC_STAGES) tc_load(X, pg, ph, vg, vh, S + 2);
            else tc_load(X, npg, nph, nvg, nvh, 0);
            tc_compute(Y, BS, S + 1, lane, C, P.special, nan, inf);
        }
#pragma unroll
        for (int l = 0; l < 3; l++) {
            const uint64_t part_g = ((uint64_t)(uint32_t)C[l][0] << sh) + ((uint64_t)(uint32_t)C[l][1] << (sh + 8));
            const uint64_t part_h = ((uint64_t)(uint32_t)C[l][2] << sh) + ((uint64_t)(uint32_t)C[l][3] << (sh + 8));
            acc[l] = addmod(acc[l], addmod(mulmod(yg[l], part_g), mulmod(yh[l], part_h)));
        }
        if (!more) break;
        tile++;
        if (npi != pi) {
            tc_flush(P.out, acc, nan, inf, res);
            nan = inf = 0;
            pi = npi;
            P = pieces[pi];
#pragma unroll
            for (int l = 0; l < 3; l++) {
                yg[l] = pow_y_global(key->ysq[l], P.b0 + nrg);
                yh[l] = mulmod(yg[l], y8[l]);
            }
        } else {
#pragma unroll
            for (int l = 0; l < 3; l++) {
                yg[l] = mulmod(yg[l], y16[l]);
                yh[l] = mulmod(yh[l], y16[l]);
            }
        }
        k = nk;
        vg = nvg;
        vh = nvh;
        pg = npg;
        ph = nph;
    }
    tc_flush(P.out, acc, nan, inf, res);
}

/* The key image: for thread (n = lane / 4, t = lane % 4) of stage S, lane l and k-steps 2pr and
 * 2pr + 1, the B fragments {b0, b1} of each: byte i of b_r pairs with byte i of the A register
 * q = 2s + r (tc_compute), i.e. block byte p = tc_pos(t, S, q, i); column n = 4a + b. */
static void tc_bimg(const struct ws_fastkey *key, uint4 *img) {
    for (uint32_t S = 0; S < TC_STAGES; S++)
        for (uint32_t l = 0; l < 3; l++)
            for (uint32_t pr = 0; pr < 4; pr++)
                for (uint32_t lane = 0; lane < 32; lane++) {
                    const uint32_t n = lane >> 2, t = lane & 3, a = n >> 2, b = n & 3;
                    uint32_t w[4];
                    for (uint32_t h = 0; h < 2; h++)
                        for (uint32_t r = 0; r < 2; r++) {
                            const uint32_t q = 2 * (2 * pr + h) + r;
                            uint32_t v = 0;
                            for (uint32_t i = 0; i < 4; i++) {
                                const uint32_t p = tc_pos(t, S, q, i);
                                const uint32_t kb = (p & 1) == a ? (uint32_t)(key->k[l][p >> 1] >> (8 * b)) & 0xffu : 0;
                                v |= kb << (8 * i);
                            }
                            w[2 * h + r] = v;
                        }
                    img[((S * 3 + l) * 4 + pr) * 32 + lane] = make_uint4(w[0], w[1], w[2], w[3]);
                }
}

/* ---- host side ---- */

static ws_err upload_key(wsc_device_state *st, const struct ws_fastkey *key, cudaStream_t s,
                         ws_error *err) {
    if (st->key_valid && memcmp(st->key_k, key->k, sizeof st->key_k) == 0 &&
        memcmp(st->key_y, key->y, sizeof st->key_y) == 0)
        return WS_OK;
    if (!st->key_dev) WSC_TRY(cudaMalloc(&st->key_dev, sizeof(KeyDev)));
    KeyDev *h = nullptr;
    WSC_TRY(cudaMallocHost((void **)&h, sizeof(KeyDev)));
    for (int l = 0; l < 3; l++) {
        for (unsigned i = 0; i < FB; i++) h->k[l][i] = (uint32_t)key->k[l][i];
        h->y[l] = key->y[l];
        for (int i = 0; i < 64; i++) h->ysq[l][i] = key->ysq[l][i];
    }
    tc_bimg(key, h->bimg);
    cudaError_t e = cudaMemcpyAsync(st->key_dev, h, sizeof(KeyDev), cudaMemcpyHostToDevice, s);
    if (e == cudaSuccess) e = cudaStreamSynchronize(s);
    cudaFreeHost(h);
    WSC_TRY(e);
    memcpy(st->key_k, key->k, sizeof st->key_k);
    memcpy(st->key_y, key->y, sizeof st->key_y);
    st->key_valid = true;
    return WS_OK;
}

/* Fill a device rectangle from the contract's; WS_ERR_* for what the kernel cannot take. */
static ws_err describe(const wsi_dev_rect *r, size_t i, ws_canon canon, FRect *f, ws_error *err) {
    unsigned es = wsc_dtype_size(r->dtype);
    if (!es) return wsc_fail(err, WS_ERR_DTYPE, "CUDA fast digest: rect %zu: unknown dtype %d", i, (int)r->dtype);
    ws_dtype cd = wsc_canonical(r->dtype, canon);
    unsigned cs = wsc_dtype_size(cd);
    unsigned units = cs <= 2 ? 1 : cs / 2;
    memset(f, 0, sizeof *f);
    f->ptr = (const uint8_t *)r->ptr;
    f->row_stride_b = r->row_stride * (int64_t)es;
    f->col_stride_b = r->col_stride * (int64_t)es;
    f->rows = r->rows;
    f->cols = r->cols;
    f->j0 = r->hf_unit0;
    f->row_units = r->hf_row_units;
    f->dt = (uint32_t)r->dtype;
    f->es = es;
    f->mode = cd != r->dtype ? MODE_CAST : (cs == 1 ? MODE_RAW8 : MODE_RAW16);
    f->ushift = units == 1 ? 0 : units == 2 ? 1 : 2;
    f->vec = r->col_stride == 1 || r->cols == 1;
    f->hot = HOT_NONE;
    /* rows that follow each other both in memory and in the HF tensor: one long row */
    if (r->rows > 1 && r->col_stride == 1 && r->row_stride == (int64_t)r->cols &&
        r->hf_row_units == r->cols * units && r->cols <= UINT64_MAX / r->rows) {
        f->cols = r->rows * r->cols;
        f->rows = 1;
        f->vec = 1;
    }
    if (f->vec && (r->col_stride == 1 || f->cols == 1)) {
        if (f->mode == MODE_RAW16 && es == 2) {
            f->hot = HOT_RAW16_2;
            f->special = r->dtype == WS_BF16 ? 0x7f807f80u : r->dtype == WS_F16 ? 0x7c007c00u : 0;
        } else if (f->mode == MODE_CAST && r->dtype == WS_F32) {
            f->hot = HOT_CAST_F32;
        }
    }
    if (r->rows && r->cols) {
        if (!r->ptr || (uintptr_t)r->ptr % es)
            return wsc_fail(err, WS_ERR_ARG, "CUDA fast digest: rect %zu: pointer %p not aligned to its %u-byte elements", i, r->ptr, es);
        if (r->hf_unit0 % units || r->hf_row_units % units)
            return wsc_fail(err, WS_ERR_ARG, "CUDA fast digest: rect %zu: unit index not at an element boundary", i);
        if (r->rows > 1 && r->hf_row_units < r->cols * units)
            return wsc_fail(err, WS_ERR_ARG, "CUDA fast digest: rect %zu: rows overlap in the HF tensor", i);
        uint64_t L = f->cols * units;
        if (f->rows == 1)
            f->tpr = (r->hf_unit0 + L - 1) / FB - r->hf_unit0 / FB + 1;
        else if (r->hf_unit0 % FB == 0 && r->hf_row_units % FB == 0)
            f->tpr = (L + FB - 1) / FB;
        else
            f->tpr = (L + FB - 1) / FB + 1;
    }
    return WS_OK;
}

static void finish(const unsigned long long *r, ws_fast *out, ws_value_stats *st) {
    for (int l = 0; l < 3; l++) {
        unsigned __int128 v = ((unsigned __int128)r[2 * l + 1] << 32) + r[2 * l];
        out->lane[l] = (uint64_t)(v % FP);
    }
    if (st) {
        st->nan = r[6];
        st->inf = r[7];
    }
}

static uint64_t rect_tpr(const FRect &f) {
    const uint64_t L = f.cols << f.ushift;
    return (f.j0 + L - 1) / FB - f.j0 / FB + 1;
}

/* Split the rects the tensor-core kernel takes (whole 16-byte-aligned blocks of contiguous
 * 2-byte units) into its pieces, keeping their partial head and tail blocks, and every other
 * rect, for the general kernel. */
static void split_for_tc(const std::vector<FRect> &f, bool tc, std::vector<FRect> &gen,
                         std::vector<TPiece> &tp, uint64_t &tasks, uint64_t &tiles) {
    tasks = tiles = 0;
    auto add_gen = [&](FRect r) {
        if (!r.rows || !r.cols) return;
        if (r.rows == 1) r.tpr = rect_tpr(r);
        r.task0 = tasks;
        tasks += r.rows * r.tpr;
        gen.push_back(r);
    };
    for (const FRect &r : f) {
        if (!r.rows || !r.tpr) continue;
        if (tc && r.hot == HOT_RAW16_2 && r.rows == 1 && r.es == 2 && r.col_stride_b == 2) {
            const uint64_t fb0 = (r.j0 + FB - 1) / FB, fb1 = (r.j0 + r.cols) / FB;
            const uint8_t *base = r.ptr + 2 * (fb0 * FB - r.j0);
            if (fb1 > fb0 && (uintptr_t)base % 16 == 0) {
                TPiece p;
                p.base = base;
                p.b0 = fb0;
                p.nblk = fb1 - fb0;
                p.tile0 = tiles;
                p.out = r.out;
                p.special = r.special;
                tiles += (p.nblk + TC_ROWS - 1) / TC_ROWS;
                tp.push_back(p);
                FRect h = r, t = r;
                h.cols = fb0 * FB - r.j0;
                add_gen(h);
                t.ptr = r.ptr + 2 * (fb1 * FB - r.j0);
                t.j0 = fb1 * FB;
                t.cols = r.j0 + r.cols - fb1 * FB;
                add_gen(t);
                continue;
            }
        }
        add_gen(r);
    }
}

/* WEIGHTSUM_CUDA_FAST=general: the general kernel only (for comparing the two paths). */
static bool tc_allowed(const wsc_device_state *st) {
    const char *e = getenv("WEIGHTSUM_CUDA_FAST");
    return st->cc_major >= 8 && !(e && strcmp(e, "general") == 0);
}

typedef void (*tc_kernel_fn)(const TPiece *, uint32_t, uint64_t, uint64_t, const KeyDev *,
                             unsigned long long *);

/* Launch one tensor-core kernel over all tiles: as many blocks as fit on the device at once,
 * each warp a contiguous range of tiles. */
static ws_err launch_tc(tc_kernel_fn k, int warps_per_block, wsc_device_state *st,
                        const TPiece *pd, size_t np, uint64_t tiles, cudaStream_t s, ws_error *err) {
    const int smem = (int)(TC_BIMG * sizeof(uint4));
    WSC_TRY(cudaFuncSetAttribute((const void *)k, cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
    int per_sm = 0;
    WSC_TRY(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, (const void *)k, 32 * warps_per_block, smem));
    uint64_t blocks = (uint64_t)st->sms * (per_sm > 0 ? per_sm : 1);
    uint64_t need = (tiles + warps_per_block - 1) / warps_per_block;
    if (blocks > need) blocks = need;
    uint64_t warps = blocks * warps_per_block;
    uint64_t per_warp = (tiles + warps - 1) / warps;
    k<<<(unsigned)blocks, 32 * warps_per_block, smem, s>>>(pd, (uint32_t)np, tiles, per_warp,
                                                          (const KeyDev *)st->key_dev,
                                                          (unsigned long long *)st->result.dev);
    WSC_TRY(cudaGetLastError());
    return WS_OK;
}

ws_err wsc_fast_rects(const struct ws_fastkey *key, const wsi_dev_rect *rects, size_t n,
                      ws_canon canon, ws_fast *out, ws_value_stats *stats, void *stream,
                      ws_error *err) {
    if (n && (!key || !rects || !out)) return wsc_fail(err, WS_ERR_ARG, "CUDA fast digest: NULL argument");
    std::vector<FRect> f(n);
    uint64_t all = 0;
    const void *first = nullptr;
    for (size_t i = 0; i < n; i++) {
        ws_err rc = describe(&rects[i], i, canon, &f[i], err);
        if (rc) return rc;
        f[i].out = (uint32_t)i;
        all += f[i].rows * f[i].tpr;
        if (!first && f[i].rows && f[i].tpr) first = rects[i].ptr;
    }
    for (size_t i = 0; i < n; i++) {
        out[i] = ws_fast{{0, 0, 0}};
        if (stats) stats[i] = ws_value_stats{0, 0};
    }
    if (!all) return WS_OK;
    int dev = -1;
    ws_err rc = wsc_use_device_of(first, &dev, err);
    if (rc) return rc;
    wsc_device_check on(dev);
    for (size_t i = 0; i < n; i++)
        if (f[i].rows && f[i].tpr && !on.on_device(rects[i].ptr))
            return wsc_fail(err, WS_ERR_ARG, "CUDA fast digest: rect %zu is not on device %d like the first", i, dev);
    if (n > UINT32_MAX) return wsc_fail(err, WS_ERR_LIMIT, "CUDA fast digest: too many rects");
    wsc_device_state *st = wsc_state(err);
    if (!st) return err ? err->code : WS_ERR_IO;
    std::vector<FRect> gen;
    std::vector<TPiece> tp;
    uint64_t tasks = 0, tiles = 0;
    gen.reserve(n + 8);
    split_for_tc(f, tc_allowed(st), gen, tp, tasks, tiles);
    if (gen.size() > UINT32_MAX || tp.size() > UINT32_MAX)
        return wsc_fail(err, WS_ERR_LIMIT, "CUDA fast digest: too many rects");
    std::lock_guard<std::mutex> g(st->mu);
    cudaStream_t s = (cudaStream_t)stream;
    if ((rc = upload_key(st, key, s, err))) return rc;
    size_t gbytes = (gen.size() * sizeof(FRect) + 255) / 256 * 256, pbytes = tp.size() * sizeof(TPiece);
    size_t rbytes = n * 8 * sizeof(unsigned long long);
    if ((rc = wsc_buf_reserve(&st->desc, gbytes + pbytes, err)) ||
        (rc = wsc_buf_reserve(&st->result, rbytes, err)))
        return rc;
    if (!gen.empty()) memcpy(st->desc.host, gen.data(), gen.size() * sizeof(FRect));
    if (!tp.empty()) memcpy((char *)st->desc.host + gbytes, tp.data(), pbytes);
    WSC_TRY(cudaMemcpyAsync(st->desc.dev, st->desc.host, gbytes + pbytes, cudaMemcpyHostToDevice, s));
    WSC_TRY(cudaMemsetAsync(st->result.dev, 0, rbytes, s));
    if (tiles) {
        const TPiece *pd = (const TPiece *)((char *)st->desc.dev + gbytes);
        rc = launch_tc(fast_tc_kernel, TC_WARPS, st, pd, tp.size(), tiles, s, err);
        if (rc) return rc;
    }
    if (tasks) {
        int per_sm = 0;
        WSC_TRY(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, fast_kernel, 32 * WARPS_PER_BLOCK, 0));
        uint64_t blocks = (uint64_t)st->sms * (per_sm > 0 ? per_sm : 1);
        uint64_t need = (tasks + WARPS_PER_BLOCK - 1) / WARPS_PER_BLOCK;
        if (blocks > need) blocks = need;
        uint64_t warps = blocks * WARPS_PER_BLOCK;
        uint64_t per_warp = (tasks + warps - 1) / warps;
        fast_kernel<<<(unsigned)blocks, 32 * WARPS_PER_BLOCK, 0, s>>>(
            (const FRect *)st->desc.dev, (uint32_t)gen.size(), tasks, per_warp,
            (const KeyDev *)st->key_dev, (unsigned long long *)st->result.dev);
        WSC_TRY(cudaGetLastError());
    }
    WSC_TRY(cudaMemcpyAsync(st->result.host, st->result.dev, rbytes, cudaMemcpyDeviceToHost, s));
    WSC_TRY(cudaStreamSynchronize(s));
    const unsigned long long *r = (const unsigned long long *)st->result.host;
    for (size_t i = 0; i < n; i++) finish(r + 8 * i, &out[i], stats ? &stats[i] : nullptr);
    return WS_OK;
}
