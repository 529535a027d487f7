/* Fast digest internals: the key layout and the kernel interface (docs/fast-digest.md). */
#ifndef WS_FASTDIGEST_H
#define WS_FASTDIGEST_H

#include "internal.h"

/* Block size B in units and the prime p = 2^61 - 1. Both are part of the file format. */
#define WSI_FAST_B 1024u
#define WSI_FAST_P ((UINT64_C(1) << 61) - 1)

/*
 * Keys of one seed, in the forms the kernels want. Allocated 64-byte aligned.
 *  - k: the 32-bit keys zero-extended to 64 bits, fed straight to vpmuludq (24 KiB, in L1).
 *  - kw: each key split into 11-bit pieces, K = kw0 + kw1 * 2^11 + kw2 * 2^22, as 16-bit
 *    words for vpdpwssd / vpmaddwd (18 KiB). Pieces are small enough that 16 steps of
 *    products with signed 16-bit units fit in 32-bit sums (see fastdigest_avx512.c).
 *  - kprefix: kprefix[l][i] = K_l[0] + ... + K_l[i-1], to undo the signed-unit bias.
 */
#define WSI_FAST_PIECES 3
#define WSI_FAST_PIECE_BITS 11
struct ws_fastkey {
    uint64_t k[WS_FAST_LANES][WSI_FAST_B];                   /* K_l[i], nonzero, < 2^32 */
    int16_t kw[WS_FAST_LANES][WSI_FAST_PIECES][WSI_FAST_B]; /* 11-bit pieces of K_l[i] */
    uint64_t kprefix[WS_FAST_LANES][WSI_FAST_B + 1];         /* prefix sums of K_l */
    uint64_t y[WS_FAST_LANES];                               /* y_l in [1, p) */
    uint64_t ysq[WS_FAST_LANES][64];                         /* y_l^(2^i) mod p */
    char id[17]; /* first 16 hex digits of SHA-256(seed) */
};

/* Fill kw, kprefix and ysq from k and y (done by ws_fastkey_create; tests use it on made-up
 * keys). */
WSI_HIDDEN void wsi_fastkey_expand(struct ws_fastkey *k);

/* Software prefetch distance of the SIMD kernels (into L2, so the keys keep L1), in bytes
 * ahead of the units being read:
 * the hardware prefetchers stop at 4 KiB page boundaries, a streaming pass should not. */
#ifndef WSI_FAST_PREFETCH
#define WSI_FAST_PREFETCH 8192
#endif

/*
 * A kernel computes the exact inner sums of one run of units inside one block:
 *   sums[l] = sum_{i < n} K_l[off + i] * u_i        for l < WS_FAST_LANES,
 * where off + n <= WSI_FAST_B, u_i is byte i (unit_bytes 1) or the little-endian u16 at byte
 * 2i (unit_bytes 2) of data, any alignment. Each sum is < 2^10 * 2^32 * 2^16 = 2^58.
 */
typedef void (*wsi_fast_run_fn)(const struct ws_fastkey *k, size_t off, const void *data,
                                size_t n, int unit_bytes, uint64_t sums[WS_FAST_LANES]);

WSI_HIDDEN void wsi_fast_run_scalar(const struct ws_fastkey *k, size_t off, const void *data,
                                    size_t n, int unit_bytes, uint64_t sums[WS_FAST_LANES]);
#if defined(__x86_64__)
#define WSI_FAST_HAVE_X86 1
WSI_HIDDEN void wsi_fast_run_avx2(const struct ws_fastkey *k, size_t off, const void *data,
                                  size_t n, int unit_bytes, uint64_t sums[WS_FAST_LANES]);
WSI_HIDDEN void wsi_fast_run_avx512(const struct ws_fastkey *k, size_t off, const void *data,
                                    size_t n, int unit_bytes, uint64_t sums[WS_FAST_LANES]);
WSI_HIDDEN void wsi_fast_run_avx512vnni(const struct ws_fastkey *k, size_t off,
                                        const void *data, size_t n, int unit_bytes,
                                        uint64_t sums[WS_FAST_LANES]);
#endif

/* The seal block (fast_seal.c, docs/fast-digest.md "Sealing"): 16-bit units
 *   tag, dtype code, ndim, then each dim as 4 units (least significant first),
 * at block index M = ceil(units / B). The tag is nonzero, so every seal block is. */
#define WSI_FAST_SEAL_TAG 0x5357u
#define WSI_FAST_SEAL_MAX (3 + 4 * WS_MAX_DIMS)
/* The seal's units as little-endian bytes into out, and its block index M; returns the number
 * of units, or -1 for an invalid dtype or ndim or a shape whose units overflow. */
WSI_HIDDEN int wsi_fast_seal_units(ws_dtype canonical_dtype, int ndim, const uint64_t *shape,
                                   uint8_t out[WSI_FAST_SEAL_MAX * 2], uint64_t *block);

#endif
