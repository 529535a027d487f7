/* SGLang's tensor hash, per-word kernel: AVX2, 8 words per step, two steps interleaved. The
 * index terms i * C + S advance by adding 8 * C, so only the fmix32 rounds multiply. */
#include "sglang_hash.h"

#if defined(__x86_64__)
#include <immintrin.h>

static inline __m256i fmix8(__m256i x) {
    x = _mm256_xor_si256(x, _mm256_srli_epi32(x, 16));
    x = _mm256_mullo_epi32(x, _mm256_set1_epi32((int)WSI_SGL_FM1));
    x = _mm256_xor_si256(x, _mm256_srli_epi32(x, 13));
    x = _mm256_mullo_epi32(x, _mm256_set1_epi32((int)WSI_SGL_FM2));
    return _mm256_xor_si256(x, _mm256_srli_epi32(x, 16));
}

static inline __m256i rotl8(__m256i x, int r) {
    return _mm256_or_si256(_mm256_slli_epi32(x, r), _mm256_srli_epi32(x, 32 - r));
}

static inline uint32_t hsum8(__m256i v) {
    __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4E));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xB1));
    return (uint32_t)_mm_cvtsi128_si32(s);
}

void wsi_sgl_run_avx2(const void *data, uint32_t idx0, size_t n, uint32_t sums[2]) {
    const uint8_t *p = data;
    size_t k = 0;
    if (n >= 16) {
        const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
        __m256i iv = _mm256_add_epi32(_mm256_set1_epi32((int)idx0), lane);
        __m256i m1 = _mm256_add_epi32(_mm256_mullo_epi32(iv, _mm256_set1_epi32((int)WSI_SGL_POS1)),
                                      _mm256_set1_epi32((int)WSI_SGL_S1));
        __m256i m2 = _mm256_add_epi32(_mm256_mullo_epi32(iv, _mm256_set1_epi32((int)WSI_SGL_POS2)),
                                      _mm256_set1_epi32((int)WSI_SGL_S2));
        const __m256i d8 = _mm256_set1_epi32(8);
        const __m256i d1 = _mm256_set1_epi32((int)(8u * WSI_SGL_POS1));
        const __m256i d2 = _mm256_set1_epi32((int)(8u * WSI_SGL_POS2));
        __m256i a0 = _mm256_setzero_si256(), b0 = a0, a1 = a0, b1 = a0;
        for (; k + 16 <= n; k += 16) {
            __m256i w0 = _mm256_loadu_si256((const __m256i *)(p + 4 * k));
            __m256i w1 = _mm256_loadu_si256((const __m256i *)(p + 4 * k + 32));
            __m256i iv1 = _mm256_add_epi32(iv, d8);
            __m256i m1b = _mm256_add_epi32(m1, d1), m2b = _mm256_add_epi32(m2, d2);
            a0 = _mm256_add_epi32(a0, fmix8(_mm256_xor_si256(w0, _mm256_xor_si256(m1, rotl8(iv, 15)))));
            b0 = _mm256_add_epi32(b0, fmix8(_mm256_xor_si256(w0, _mm256_xor_si256(m2, rotl8(iv, 13)))));
            a1 = _mm256_add_epi32(a1, fmix8(_mm256_xor_si256(w1, _mm256_xor_si256(m1b, rotl8(iv1, 15)))));
            b1 = _mm256_add_epi32(b1, fmix8(_mm256_xor_si256(w1, _mm256_xor_si256(m2b, rotl8(iv1, 13)))));
            iv = _mm256_add_epi32(iv1, d8);
            m1 = _mm256_add_epi32(m1b, d1);
            m2 = _mm256_add_epi32(m2b, d2);
        }
        sums[0] += hsum8(_mm256_add_epi32(a0, a1));
        sums[1] += hsum8(_mm256_add_epi32(b0, b1));
    }
    if (k < n) wsi_sgl_run_scalar(p + 4 * k, idx0 + (uint32_t)k, n - k, sums);
}
#endif
