/*
 * Predicted "checksum" answers from the trainer's tensors where they lie (ws_view): host
 * views go through ws_expect_create; CUDA views have their SGLang gpu_tensor_hash answers
 * computed on the GPU by ws_sglang_expect_views, one launch per rank, from the HF tensors in
 * place (the local tensors are never built); the expectation around them (names, holds, the
 * per-GPU and per-engine checksums) is the one ws_expect_create writes.
 */
#include "expect.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct views_arg {
    const ws_view *v;
    const ws_tensor *ts; /* ts[i] describes v[i] */
    size_t n;
    void *stream;
} views_arg;

static ws_err device_hashes(void *arg, const ws_layout *l, const ws_tensor *const *hf,
                            uint64_t *out, ws_error *err) {
    const views_arg *a = arg;
    size_t nh = ws_layout_hf_count(l), nl = ws_layout_local_count(l);
    int ranks = 0;
    for (size_t i = 0; i < nl; i++)
        if (ws_layout_local(l, i)->rank + 1 > ranks) ranks = ws_layout_local(l, i)->rank + 1;
    ws_view *hv = calloc(nh + 1, sizeof *hv);
    uint64_t *one = calloc(nl + 1, sizeof *one);
    ws_err rc = hv && one ? WS_OK : wsi_fail(err, WS_ERR_NOMEM, NULL, NULL, -1, "out of memory");
    for (size_t h = 0; rc == WS_OK && h < nh; h++) {
        if (!hf[h]) continue; /* tied: no piece reads it */
        const ws_view *v = &a->v[hf[h] - a->ts];
        hv[h] = *v;
        hv[h].strides = NULL; /* checked C-contiguous by the caller */
    }
    for (int r = 0; rc == WS_OK && r < ranks; r++) {
        size_t k = 0;
        for (size_t i = 0; i < nl; i++) k += ws_layout_local(l, i)->rank == r;
        rc = ws_sglang_expect_views(l, r, hv, nh, WS_DTYPE__COUNT, a->stream, one, k, err);
        k = 0;
        for (size_t i = 0; rc == WS_OK && i < nl; i++)
            if (ws_layout_local(l, i)->rank == r) out[i] = one[k++];
    }
    free(hv);
    free(one);
    return rc;
}

static bool c_contiguous(const ws_view *v) {
    if (!v->strides) return true;
    int64_t cs = 1;
    for (int d = v->ndim - 1; d >= 0; d--) {
        if (v->shape[d] != 1 && v->strides[d] != cs) return false;
        cs *= (int64_t)v->shape[d];
    }
    return true;
}

ws_err ws_expect_create_views(const ws_layout *l, const ws_view *v, size_t n, ws_engine engine,
                              ws_sglang_path path, const char *source, void *stream,
                              int threads, ws_expect **out, ws_error *err) {
    if (!out) return wsi_fail(err, WS_ERR_ARG, NULL, NULL, -1, "NULL argument");
    *out = NULL;
    if (!l || (!v && n)) return wsi_fail(err, WS_ERR_ARG, NULL, NULL, -1, "NULL argument");
    ws_tensor *ts = calloc(n + 1, sizeof *ts);
    if (!ts) return wsi_fail(err, WS_ERR_NOMEM, NULL, NULL, -1, "out of memory");
    ws_err rc = WS_OK;
    int device = -2; /* none seen yet */
    for (size_t i = 0; rc == WS_OK && i < n; i++) {
        const ws_view *x = &v[i];
        if (!x->name || x->ndim < 0 || x->ndim > WS_MAX_DIMS || (x->ndim && !x->shape)) {
            rc = wsi_fail(err, WS_ERR_ARG, NULL, x->name, -1, "a view without name or shape");
            break;
        }
        if (device == -2) device = x->device;
        if ((x->device >= 0) != (device >= 0) || (device >= 0 && x->device != device)) {
            rc = wsi_fail(err, WS_ERR_ARG, NULL, x->name, -1,
                          "the tensors must all be on one CUDA device or all in host memory");
            break;
        }
        if (!c_contiguous(x)) {
            rc = wsi_fail(err, WS_ERR_ARG, NULL, x->name, -1,
                          "must be C-contiguous (an engine rank's pieces are read as HF rows)");
            break;
        }
        ws_tensor *t = &ts[i];
        t->name = x->name;
        t->dtype = x->dtype;
        t->ndim = x->ndim;
        t->numel = 1;
        for (int d = 0; d < x->ndim; d++) t->numel *= (t->shape[d] = x->shape[d]);
        t->nbytes = t->numel * ws_dtype_size(x->dtype);
        t->data = x->data;
    }
    if (rc == WS_OK && device >= 0 && (engine != WS_ENGINE_SGLANG || path != WS_SGLANG_CUDA))
        rc = wsi_fail(err, WS_ERR_ARG, NULL, NULL, -1,
                      "from CUDA tensors only SGLang's gpu_tensor_hash answers are computed "
                      "(vLLM's and SGLang's CPU answers are SHA-256 streams: pass host tensors)");
    if (rc == WS_OK) {
        views_arg a = {v, ts, n, stream};
        rc = wsp_expect_create_with(l, ts, n, engine, path, source, threads,
                                    device >= 0 ? device_hashes : NULL, &a, out, err);
    }
    free(ts);
    return rc;
}
