/* SGLang's tensor hash, per-word kernel: AVX-512F, 16 words per step, two steps interleaved,
 * the tail under a mask (masked-off lanes add nothing). vprold does the rotations. */
#include "sglang_hash.h"

#if defined(__x86_64__)
#include "avx512_reduce.h"
#include <immintrin.h>

static inline __m512i fmix16(__m512i x) {
    x = _mm512_xor_si512(x, _mm512_srli_epi32(x, 16));
    x = _mm512_mullo_epi32(x, _mm512_set1_epi32((int)WSI_SGL_FM1));
    x = _mm512_xor_si512(x, _mm512_srli_epi32(x, 13));
    x = _mm512_mullo_epi32(x, _mm512_set1_epi32((int)WSI_SGL_FM2));
    return _mm512_xor_si512(x, _mm512_srli_epi32(x, 16));
}

void wsi_sgl_run_avx512(const void *data, uint32_t idx0, size_t n, uint32_t sums[2]) {
    const uint8_t *p = data;
    const __m512i lane = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    __m512i iv = _mm512_add_epi32(_mm512_set1_epi32((int)idx0), lane);
    __m512i m1 = _mm512_add_epi32(_mm512_mullo_epi32(iv, _mm512_set1_epi32((int)WSI_SGL_POS1)),
                                  _mm512_set1_epi32((int)WSI_SGL_S1));
    __m512i m2 = _mm512_add_epi32(_mm512_mullo_epi32(iv, _mm512_set1_epi32((int)WSI_SGL_POS2)),
                                  _mm512_set1_epi32((int)WSI_SGL_S2));
    const __m512i d16 = _mm512_set1_epi32(16);
    const __m512i d1 = _mm512_set1_epi32((int)(16u * WSI_SGL_POS1));
    const __m512i d2 = _mm512_set1_epi32((int)(16u * WSI_SGL_POS2));
    __m512i a0 = _mm512_setzero_si512(), b0 = a0, a1 = a0, b1 = a0;
    size_t k = 0;
    for (; k + 32 <= n; k += 32) {
        __m512i w0 = _mm512_loadu_si512((const void *)(p + 4 * k));
        __m512i w1 = _mm512_loadu_si512((const void *)(p + 4 * k + 64));
        __m512i iv1 = _mm512_add_epi32(iv, d16);
        __m512i m1b = _mm512_add_epi32(m1, d1), m2b = _mm512_add_epi32(m2, d2);
        a0 = _mm512_add_epi32(a0, fmix16(_mm512_ternarylogic_epi32(w0, m1, _mm512_rol_epi32(iv, 15), 0x96)));
        b0 = _mm512_add_epi32(b0, fmix16(_mm512_ternarylogic_epi32(w0, m2, _mm512_rol_epi32(iv, 13), 0x96)));
        a1 = _mm512_add_epi32(a1, fmix16(_mm512_ternarylogic_epi32(w1, m1b, _mm512_rol_epi32(iv1, 15), 0x96)));
        b1 = _mm512_add_epi32(b1, fmix16(_mm512_ternarylogic_epi32(w1, m2b, _mm512_rol_epi32(iv1, 13), 0x96)));
        iv = _mm512_add_epi32(iv1, d16);
        m1 = _mm512_add_epi32(m1b, d1);
        m2 = _mm512_add_epi32(m2b, d2);
    }
    for (; k < n; k += 16) {
        size_t left = n - k;
        __mmask16 m = left >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << left) - 1);
        __m512i w = _mm512_maskz_loadu_epi32(m, (const void *)(p + 4 * k));
        a0 = _mm512_mask_add_epi32(a0, m, a0, fmix16(_mm512_ternarylogic_epi32(w, m1, _mm512_rol_epi32(iv, 15), 0x96)));
        b0 = _mm512_mask_add_epi32(b0, m, b0, fmix16(_mm512_ternarylogic_epi32(w, m2, _mm512_rol_epi32(iv, 13), 0x96)));
        iv = _mm512_add_epi32(iv, d16);
        m1 = _mm512_add_epi32(m1, d1);
        m2 = _mm512_add_epi32(m2, d2);
    }
    sums[0] += wsi_hsum_u32x16(_mm512_add_epi32(a0, a1));
    sums[1] += wsi_hsum_u32x16(_mm512_add_epi32(b0, b1));
}
#endif
