/* SGLang's tensor hash, per-word kernel: the portable reference (sglang_hash.h). */
#include "sglang_hash.h"

#include <string.h>

void wsi_sgl_run_scalar(const void *data, uint32_t idx0, size_t n, uint32_t sums[2]) {
    const uint8_t *p = data;
    uint32_t a = sums[0], b = sums[1], i = idx0;
    for (size_t k = 0; k < n; k++, i++) {
        uint32_t w = (uint32_t)p[4 * k] | (uint32_t)p[4 * k + 1] << 8 |
                     (uint32_t)p[4 * k + 2] << 16 | (uint32_t)p[4 * k + 3] << 24;
        uint32_t p1 = (i * WSI_SGL_POS1 + WSI_SGL_S1) ^ wsi_sgl_rotl(i, 15);
        uint32_t p2 = (i * WSI_SGL_POS2 + WSI_SGL_S2) ^ wsi_sgl_rotl(i, 13);
        a += wsi_sgl_fmix32(w ^ p1);
        b += wsi_sgl_fmix32(w ^ p2);
    }
    sums[0] = a;
    sums[1] = b;
}
