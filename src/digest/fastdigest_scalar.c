/* Fast digest: the portable reference kernel. Every other kernel must equal this one. */
#include "fastdigest.h"

void wsi_fast_run_scalar(const struct ws_fastkey *k, size_t off, const void *data, size_t n,
                         int unit_bytes, uint64_t sums[WS_FAST_LANES]) {
    const uint8_t *p = data;
    const uint64_t *k0 = k->k[0] + off, *k1 = k->k[1] + off, *k2 = k->k[2] + off;
    uint64_t s0 = 0, s1 = 0, s2 = 0;
    if (unit_bytes == 1) {
        for (size_t i = 0; i < n; i++) {
            uint64_t u = p[i];
            s0 += k0[i] * u;
            s1 += k1[i] * u;
            s2 += k2[i] * u;
        }
    } else {
        for (size_t i = 0; i < n; i++) {
            uint64_t u = (uint64_t)p[2 * i] | (uint64_t)p[2 * i + 1] << 8; /* little-endian */
            s0 += k0[i] * u;
            s1 += k1[i] * u;
            s2 += k2[i] * u;
        }
    }
    sums[0] = s0;
    sums[1] = s1;
    sums[2] = s2;
}
