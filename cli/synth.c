/* Synthetic checkpoints: deterministic HF tensors for a model config, for the demo, the tests
 * and the benchmarks (weightsum synth). Values are small pseudo-random numbers; norms sit
 * near 1, as in a trained model. */
#include "synth.h"
#include "weightsum_experimental.h" /* ws_f32_to_bf16 */

#include <stdlib.h>
#include <string.h>

static uint64_t mix(uint64_t x) {
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdull;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ull;
    return x ^ (x >> 33);
}

static uint64_t name_seed(const char *name, uint64_t seed) {
    uint64_t h = 1469598103934665603ull ^ seed;
    for (; *name; name++) h = (h ^ (uint8_t)*name) * 1099511628211ull;
    return mix(h);
}

static void fill(void *data, ws_dtype dt, uint64_t n, uint64_t seed, bool norm) {
    uint64_t s = seed;
    for (uint64_t i = 0; i < n; i++) {
        s = mix(s + 0x9e3779b97f4a7c15ull);
        float v = (float)((int64_t)(s % 20001) - 10000) * 5e-6f;
        if (norm) v += 1.0f;
        if (dt == WS_F32) memcpy((float *)data + i, &v, 4);
        else {
            uint16_t b = ws_f32_to_bf16(v);
            memcpy((uint16_t *)data + i, &b, 2);
        }
    }
}

ws_err synth_checkpoint(const ws_model_config *cfg, ws_dtype dt, uint64_t seed,
                        const char *path, void (*progress)(void *, uint64_t, uint64_t),
                        void *progress_user, ws_error *err) {
    ws_layout *l = NULL;
    ws_err rc = ws_layout_create("hf", cfg, 1, &l, err);
    if (rc != WS_OK) return rc;
    size_t n = ws_layout_hf_count(l), k = 0;
    ws_tensor_spec *specs = calloc(n ? n : 1, sizeof *specs);
    if (!specs) {
        ws_layout_free(l);
        return WS_ERR_NOMEM;
    }
    uint64_t total = 0, done = 0; /* bytes, for progress: made, then written (the last tenth) */
    for (size_t i = 0; i < n; i++) {
        const ws_hf_desc *h = ws_layout_hf(l, i);
        uint64_t numel = 1;
        for (int d = 0; d < h->ndim; d++) numel *= h->shape[d];
        if (!h->tied_to) total += numel * ws_dtype_size(dt);
    }
    total += total / 10;
    for (size_t i = 0; i < n && rc == WS_OK; i++) {
        const ws_hf_desc *h = ws_layout_hf(l, i);
        if (h->tied_to) continue; /* save_pretrained drops tied weights too */
        uint64_t numel = 1;
        for (int d = 0; d < h->ndim; d++) numel *= h->shape[d];
        void *data = malloc(numel * ws_dtype_size(dt) + 1);
        if (!data) {
            rc = WS_ERR_NOMEM;
            break;
        }
        fill(data, dt, numel, name_seed(h->name, seed), strstr(h->name, "norm") != NULL);
        specs[k] = (ws_tensor_spec){.name = h->name, .dtype = dt, .ndim = h->ndim, .data = data};
        memcpy(specs[k].shape, h->shape, sizeof specs[k].shape);
        k++;
        done += numel * ws_dtype_size(dt);
        if (progress) progress(progress_user, done, total);
    }
    if (rc == WS_OK) rc = ws_safetensors_write(path, specs, k, "{\"format\":\"pt\"}", err);
    if (rc == WS_OK && progress) progress(progress_user, total, total);
    for (size_t i = 0; i < k; i++) free((void *)specs[i].data);
    free(specs);
    ws_layout_free(l);
    return rc;
}
