/* Horizontal sums of AVX-512 vectors in unsigned (wrapping) arithmetic. GCC's
 * _mm512_reduce_add_epi32/epi64 end in a signed scalar add, which overflows (undefined
 * behaviour, reported by UBSan) on the wrapping sums these kernels keep. Include only from
 * files compiled with -mavx512f. */
#ifndef WS_AVX512_REDUCE_H
#define WS_AVX512_REDUCE_H
#include <immintrin.h>
#include <stdint.h>

static inline uint32_t wsi_hsum_u32x16(__m512i v) {
    uint32_t a[16], s = 0;
    _mm512_storeu_si512((void *)a, v);
    for (int i = 0; i < 16; i++) s += a[i];
    return s;
}

static inline uint64_t wsi_hsum_u64x8(__m512i v) {
    uint64_t a[8], s = 0;
    _mm512_storeu_si512((void *)a, v);
    for (int i = 0; i < 8; i++) s += a[i];
    return s;
}
#endif
