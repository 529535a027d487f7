/* The trainer's HF checkpoint for a test: every tensor of an hf layout (tied aliases left out,
 * as HF saves them), values from the caller's generator, in the dtype the caller picks per
 * tensor. Shared by the C tests and the checker fuzz target so that each writes its model the
 * same way; each keeps its own generator, so its data (and what its assertions name) stay its
 * own. Returns the writer's error; the caller decides whether that fails a test or the run. */
#ifndef WS_TEST_HF_FIXTURE_H
#define WS_TEST_HF_FIXTURE_H
#include "weightsum.h"
#include "weightsum_experimental.h" /* ws_f32_to_bf16 */

#include <stdlib.h>
#include <string.h>

typedef ws_dtype (*hf_dtype_fn)(const ws_hf_desc *d);
typedef float (*hf_value_fn)(void);

/* Every tensor F32 (the dtype_of of the tests that check casts from F32). */
static inline ws_dtype hf_all_f32(const ws_hf_desc *d) {
    (void)d;
    return WS_F32;
}

static inline ws_err write_random_hf(const ws_layout *hf, const char *path, hf_dtype_fn dtype_of,
                                     hf_value_fn value, ws_error *err) {
    size_t n = ws_layout_hf_count(hf), k = 0;
    ws_tensor_spec *specs = calloc(n ? n : 1, sizeof *specs);
    void **bufs = calloc(n ? n : 1, sizeof *bufs);
    ws_err rc = specs && bufs ? WS_OK : WS_ERR_NOMEM;
    for (size_t i = 0; i < n && rc == WS_OK; i++) {
        const ws_hf_desc *d = ws_layout_hf(hf, i);
        if (d->tied_to) continue;
        uint64_t numel = 1;
        for (int j = 0; j < d->ndim; j++) numel *= d->shape[j];
        ws_dtype dt = dtype_of(d);
        uint8_t *b = malloc(numel * ws_dtype_size(dt) + 1);
        if (!b) {
            rc = WS_ERR_NOMEM;
            break;
        }
        for (uint64_t e = 0; e < numel; e++) {
            float f = value();
            if (dt == WS_BF16) {
                uint16_t v = ws_f32_to_bf16(f);
                memcpy(b + 2 * e, &v, 2);
            } else {
                memcpy(b + 4 * e, &f, 4);
            }
        }
        bufs[k] = b;
        specs[k] = (ws_tensor_spec){.name = d->name, .dtype = dt, .ndim = d->ndim, .data = b};
        memcpy(specs[k].shape, d->shape, sizeof specs[k].shape);
        k++;
    }
    if (rc == WS_OK) rc = ws_safetensors_write(path, specs, k, NULL, err);
    for (size_t i = 0; i < k; i++) free(bufs[i]);
    free(bufs);
    free(specs);
    return rc;
}
#endif
