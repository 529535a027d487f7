/* Fast digest: AVX2 kernel (compiled with -mavx2). Units are zero-extended to 64-bit lanes
 * and multiplied by the zero-extended keys with vpmuludq into 64-bit accumulators. */
#include "fastdigest.h"

#if defined(__x86_64__)
#include <immintrin.h>
#include <string.h>

static inline uint64_t hsum256(__m256i v) {
    __m128i s = _mm_add_epi64(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    return (uint64_t)_mm_cvtsi128_si64(s) + (uint64_t)_mm_extract_epi64(s, 1);
}

/* Four units at p, zero-extended to 64 bits. */
static inline __m256i load4_u16(const uint8_t *p) {
    return _mm256_cvtepu16_epi64(_mm_loadl_epi64((const __m128i *)p));
}
static inline __m256i load4_u8(const uint8_t *p) {
    int32_t w;
    memcpy(&w, p, 4);
    return _mm256_cvtepu8_epi64(_mm_cvtsi32_si128(w));
}

#define PREFETCH(p) _mm_prefetch((const char *)(p) + WSI_FAST_PREFETCH, _MM_HINT_T1)
#define KEY(t, i) _mm256_loadu_si256((const __m256i *)((t) + (i)))
#define STEP(a0, a1, a2, u, i)                                        \
    do {                                                              \
        a0 = _mm256_add_epi64(a0, _mm256_mul_epu32((u), KEY(k0, i))); \
        a1 = _mm256_add_epi64(a1, _mm256_mul_epu32((u), KEY(k1, i))); \
        a2 = _mm256_add_epi64(a2, _mm256_mul_epu32((u), KEY(k2, i))); \
    } while (0)

void wsi_fast_run_avx2(const struct ws_fastkey *k, size_t off, const void *data, size_t n,
                       int unit_bytes, uint64_t sums[WS_FAST_LANES]) {
    const uint8_t *p = data;
    const uint64_t *k0 = k->k[0] + off, *k1 = k->k[1] + off, *k2 = k->k[2] + off;
    /* two accumulator sets: shorter dependency chains */
    __m256i a0 = _mm256_setzero_si256(), a1 = a0, a2 = a0;
    __m256i b0 = a0, b1 = a0, b2 = a0;
    size_t i = 0;
    if (unit_bytes == 2) {
        for (; i + 16 <= n; i += 16) {
            const uint8_t *q = p + 2 * i;
            if ((i & 16) == 0) PREFETCH(q); /* once per 64-byte line */
            __m256i u0 = load4_u16(q), u1 = load4_u16(q + 8);
            __m256i u2 = load4_u16(q + 16), u3 = load4_u16(q + 24);
            STEP(a0, a1, a2, u0, i);
            STEP(b0, b1, b2, u1, i + 4);
            STEP(a0, a1, a2, u2, i + 8);
            STEP(b0, b1, b2, u3, i + 12);
        }
        for (; i + 4 <= n; i += 4) STEP(a0, a1, a2, load4_u16(p + 2 * i), i);
    } else {
        for (; i + 16 <= n; i += 16) {
            const uint8_t *q = p + i;
            if ((i & 48) == 0) PREFETCH(q);
            __m256i u0 = load4_u8(q), u1 = load4_u8(q + 4);
            __m256i u2 = load4_u8(q + 8), u3 = load4_u8(q + 12);
            STEP(a0, a1, a2, u0, i);
            STEP(b0, b1, b2, u1, i + 4);
            STEP(a0, a1, a2, u2, i + 8);
            STEP(b0, b1, b2, u3, i + 12);
        }
        for (; i + 4 <= n; i += 4) STEP(a0, a1, a2, load4_u8(p + i), i);
    }
    uint64_t tail[WS_FAST_LANES] = {0, 0, 0};
    if (i < n) wsi_fast_run_scalar(k, off + i, p + i * (size_t)unit_bytes, n - i, unit_bytes, tail);
    sums[0] = hsum256(_mm256_add_epi64(a0, b0)) + tail[0];
    sums[1] = hsum256(_mm256_add_epi64(a1, b1)) + tail[1];
    sums[2] = hsum256(_mm256_add_epi64(a2, b2)) + tail[2];
}
#endif
