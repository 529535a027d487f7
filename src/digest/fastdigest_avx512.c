/* Fast digest: AVX-512 kernels (this file is compiled with -mavx512f -mavx512bw -mavx2).
 *
 * "avx512": units zero-extended to 64-bit lanes (vpmovzx) times the zero-extended keys with
 * vpmuludq into 64-bit accumulators: 3 multiplies and 3 adds per 8 units.
 *
 * "avx512vnni": 32 units per vpdpwssd. vpdpwssd multiplies signed 16-bit words, so a unit u
 * is fed as u' = u - 2^15 (u XOR 0x8000) and each key as three 11-bit pieces
 * K = k0 + k1 * 2^11 + k2 * 2^22 (struct ws_fastkey.kw); then
 *     sum K*u = sum_q 2^(11q) * sum k_q*u'  +  2^15 * sum K,
 * the last term from the prefix sums of K. One vpdpwssd step adds two products of magnitude
 * <= 2^15 * 2047 to each 32-bit sum, so 16 steps stay below 2^31: every 16 steps (512 units)
 * the 32-bit sums are sign-extended into 64-bit ones. Byte units (< 2^8) need no bias.
 * 9 vpdpwssd per 32 units instead of 12 vpmuludq + 12 vpaddq per 32.
 */
#include "fastdigest.h"

#if defined(__x86_64__)
#include "avx512_reduce.h"
#include <immintrin.h>

#define PREFETCH(p) _mm_prefetch((const char *)(p) + WSI_FAST_PREFETCH, _MM_HINT_T1)

/* Eight units at p, zero-extended to 64 bits. */
static inline __m512i load8_u16(const uint8_t *p) {
    return _mm512_cvtepu16_epi64(_mm_loadu_si128((const __m128i *)p));
}
static inline __m512i load8_u8(const uint8_t *p) {
    return _mm512_cvtepu8_epi64(_mm_loadl_epi64((const __m128i *)p));
}

#define KEY(t, i) _mm512_loadu_si512((const void *)((t) + (i)))
#define STEP(a0, a1, a2, u, i)                                        \
    do {                                                              \
        a0 = _mm512_add_epi64(a0, _mm512_mul_epu32((u), KEY(k0, i))); \
        a1 = _mm512_add_epi64(a1, _mm512_mul_epu32((u), KEY(k1, i))); \
        a2 = _mm512_add_epi64(a2, _mm512_mul_epu32((u), KEY(k2, i))); \
    } while (0)

void wsi_fast_run_avx512(const struct ws_fastkey *k, size_t off, const void *data, size_t n,
                         int unit_bytes, uint64_t sums[WS_FAST_LANES]) {
    const uint8_t *p = data;
    const uint64_t *k0 = k->k[0] + off, *k1 = k->k[1] + off, *k2 = k->k[2] + off;
    __m512i a0 = _mm512_setzero_si512(), a1 = a0, a2 = a0;
    __m512i b0 = a0, b1 = a0, b2 = a0;
    size_t i = 0;
    if (unit_bytes == 2) {
        for (; i + 32 <= n; i += 32) {
            const uint8_t *q = p + 2 * i;
            PREFETCH(q);
            __m512i u0 = load8_u16(q), u1 = load8_u16(q + 16);
            __m512i u2 = load8_u16(q + 32), u3 = load8_u16(q + 48);
            STEP(a0, a1, a2, u0, i);
            STEP(b0, b1, b2, u1, i + 8);
            STEP(a0, a1, a2, u2, i + 16);
            STEP(b0, b1, b2, u3, i + 24);
        }
        for (; i + 8 <= n; i += 8) STEP(a0, a1, a2, load8_u16(p + 2 * i), i);
    } else {
        for (; i + 32 <= n; i += 32) {
            const uint8_t *q = p + i;
            if ((i & 63) == 0) PREFETCH(q);
            __m512i u0 = load8_u8(q), u1 = load8_u8(q + 8);
            __m512i u2 = load8_u8(q + 16), u3 = load8_u8(q + 24);
            STEP(a0, a1, a2, u0, i);
            STEP(b0, b1, b2, u1, i + 8);
            STEP(a0, a1, a2, u2, i + 16);
            STEP(b0, b1, b2, u3, i + 24);
        }
        for (; i + 8 <= n; i += 8) STEP(a0, a1, a2, load8_u8(p + i), i);
    }
    uint64_t tail[WS_FAST_LANES] = {0, 0, 0};
    if (i < n) wsi_fast_run_scalar(k, off + i, p + i * (size_t)unit_bytes, n - i, unit_bytes, tail);
    sums[0] = wsi_hsum_u64x8(_mm512_add_epi64(a0, b0)) + tail[0];
    sums[1] = wsi_hsum_u64x8(_mm512_add_epi64(a1, b1)) + tail[1];
    sums[2] = wsi_hsum_u64x8(_mm512_add_epi64(a2, b2)) + tail[2];
}

/* ------------------------------------------------------------------------------------------ */
/* avx512vnni                                                                                  */
/* ------------------------------------------------------------------------------------------ */

#define VNNI __attribute__((target("avx512f,avx512bw,avx512vnni")))

/* Sum of the two signed 32-bit halves of each 64-bit lane, as a signed 64-bit lane. */
VNNI static inline __m512i widen_pairs(__m512i a) {
    return _mm512_add_epi64(_mm512_srai_epi64(_mm512_slli_epi64(a, 32), 32),
                            _mm512_srai_epi64(a, 32));
}

/* 64-bit contribution of one lane's three piece sums. */
VNNI static inline __m512i combine(__m512i q0, __m512i q1, __m512i q2) {
    __m512i w = widen_pairs(q0);
    w = _mm512_add_epi64(w, _mm512_slli_epi64(widen_pairs(q1), WSI_FAST_PIECE_BITS));
    return _mm512_add_epi64(w, _mm512_slli_epi64(widen_pairs(q2), 2 * WSI_FAST_PIECE_BITS));
}

/* 32 units as signed words: u - 2^15 for 16-bit units, u for bytes. */
VNNI static inline __m512i units32(const uint8_t *p, size_t i, int unit_bytes) {
    if (unit_bytes == 2)
        return _mm512_xor_si512(_mm512_loadu_si512((const void *)(p + 2 * i)),
                                _mm512_set1_epi16((short)0x8000));
    return _mm512_cvtepu8_epi16(_mm256_loadu_si256((const __m256i *)(p + i)));
}
/* The same for the units selected by m; the others load as 0 (their keys load as 0 too, so
 * whatever they become adds nothing). */
VNNI static inline __m512i units32_masked(const uint8_t *p, size_t i, int unit_bytes,
                                          __mmask32 m) {
    if (unit_bytes == 2)
        return _mm512_xor_si512(_mm512_maskz_loadu_epi16(m, p + 2 * i),
                                _mm512_set1_epi16((short)0x8000));
    return _mm512_cvtepu8_epi16(_mm512_castsi512_si256(_mm512_maskz_loadu_epi8(m, p + i)));
}

#define KW(l, q, mask) _mm512_maskz_loadu_epi16((mask), &k->kw[l][q][off + i])
#define VSTEP(d, mask)                                           \
    do {                                                         \
        s00 = _mm512_dpwssd_epi32(s00, (d), KW(0, 0, mask)); \
        s01 = _mm512_dpwssd_epi32(s01, (d), KW(0, 1, mask)); \
        s02 = _mm512_dpwssd_epi32(s02, (d), KW(0, 2, mask)); \
        s10 = _mm512_dpwssd_epi32(s10, (d), KW(1, 0, mask)); \
        s11 = _mm512_dpwssd_epi32(s11, (d), KW(1, 1, mask)); \
        s12 = _mm512_dpwssd_epi32(s12, (d), KW(1, 2, mask)); \
        s20 = _mm512_dpwssd_epi32(s20, (d), KW(2, 0, mask)); \
        s21 = _mm512_dpwssd_epi32(s21, (d), KW(2, 1, mask)); \
        s22 = _mm512_dpwssd_epi32(s22, (d), KW(2, 2, mask)); \
    } while (0)

VNNI void wsi_fast_run_avx512vnni(const struct ws_fastkey *k, size_t off, const void *data,
                                  size_t n, int unit_bytes, uint64_t sums[WS_FAST_LANES]) {
    const uint8_t *p = data;
    __m512i w0 = _mm512_setzero_si512(), w1 = w0, w2 = w0;
    size_t i = 0;
    while (i < n) {
        size_t end = n - i > 512 ? i + 512 : n; /* 16 steps: the 32-bit sums cannot overflow */
        __m512i s00 = _mm512_setzero_si512(), s01 = s00, s02 = s00, s10 = s00, s11 = s00,
                s12 = s00, s20 = s00, s21 = s00, s22 = s00;
        for (; i + 32 <= end; i += 32) {
            if (unit_bytes == 2 || (i & 32) == 0) PREFETCH(p + i * (size_t)unit_bytes);
            __m512i d = units32(p, i, unit_bytes);
            VSTEP(d, 0xFFFFFFFFu);
        }
        if (i < end) { /* a last, partial step: its key loads are masked too */
            const __mmask32 m = (__mmask32)((1u << (end - i)) - 1);
            __m512i d = units32_masked(p, i, unit_bytes, m);
            VSTEP(d, m);
            i = end;
        }
        w0 = _mm512_add_epi64(w0, combine(s00, s01, s02));
        w1 = _mm512_add_epi64(w1, combine(s10, s11, s12));
        w2 = _mm512_add_epi64(w2, combine(s20, s21, s22));
    }
    /* Exact results in [0, 2^58); the 64-bit wrap-around cancels the negative partials. */
    uint64_t bias = unit_bytes == 2 ? 32768 : 0;
    const __m512i w[WS_FAST_LANES] = {w0, w1, w2};
    for (int l = 0; l < WS_FAST_LANES; l++)
        sums[l] = wsi_hsum_u64x8(w[l]) +
                  bias * (k->kprefix[l][off + n] - k->kprefix[l][off]);
}
#endif
