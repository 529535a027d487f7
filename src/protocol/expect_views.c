/*
 * Predicted "checksum" answers from the trainer's tensors where they lie (ws_view): host
 * views go through ws_expect_create. From CUDA views, SGLang's gpu_tensor_hash answers are
 * computed on the GPU by ws_sglang_expect_views_ranks, every rank in one launch; the SHA-256
 * answers (vLLM's, SGLang's CPU path) stream each local tensor's image, described as rectangles of
 * the HF tensors (expect_image.c), through the backend's SHA-256 pipeline (gathered on the
 * GPU into its staging slots, copied to pinned host buffers, hashed on CPU threads; memory
 * bounded by the pipeline's slots, whatever the tensors' size). The local tensors are never
 * built, nothing else is copied to the host; the expectation around the answers (names, holds,
 * the per-GPU and per-engine checksums) is the one ws_expect_create writes.
 */
#include "device_loader.h"
#include "expect.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct views_arg {
    const ws_view *v;
    const ws_tensor *ts; /* ts[i] describes v[i] */
    size_t n;
    void *stream;
    ws_engine engine;
    int threads;
} views_arg;

static ws_err device_hashes(void *arg, const ws_layout *l, const ws_tensor *const *hf,
                            char (*out)[65], ws_error *err) {
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
    /* every rank in one launch: answers by rank, each rank's in layout order */
    int *rk = calloc((size_t)ranks + 1, sizeof *rk);
    if (rc == WS_OK && !rk) rc = wsi_fail(err, WS_ERR_NOMEM, NULL, NULL, -1, "out of memory");
    for (int r = 0; rc == WS_OK && r < ranks; r++) rk[r] = r;
    if (rc == WS_OK)
        rc = ws_sglang_expect_views_ranks(l, rk, (size_t)ranks, hv, nh, WS_DTYPE__COUNT, a->stream,
                                          one, nl, err);
    for (int r = 0, k = 0; rc == WS_OK && r < ranks; r++)
        for (size_t i = 0; i < nl; i++)
            if (ws_layout_local(l, i)->rank == r) ws_sglang_hex(one[k++], out[i]);
    free(rk);
    free(hv);
    free(one);
    return rc;
}

/* SHA-256 answers: every local tensor's image through the backend's pipeline, in one call (its
 * workers take the tensors largest first, each streamed in order through its two slots). */
static ws_err device_images(void *arg, const ws_layout *l, const ws_tensor *const *hf,
                            char (*out)[65], ws_error *err) {
    const views_arg *a = arg;
    const wsi_device_backend *b = wsi_device_backend_get(err);
    if (!b) return err && err->code ? err->code : WS_ERR_NOTFOUND;
    size_t nl = ws_layout_local_count(l), np = ws_layout_piece_count(l);
    size_t *start = calloc(nl + 2, sizeof *start), *by_local = malloc((np + 1) * sizeof *by_local);
    wsi_dev_tensor *tens = calloc(nl + 1, sizeof *tens);
    uint8_t (*md)[32] = calloc(nl + 1, sizeof *md);
    wsi_dev_rect *all = NULL;
    size_t total = 0, cap = 0;
    ws_err rc = start && by_local && tens && md
                    ? WS_OK
                    : wsi_fail(err, WS_ERR_NOMEM, NULL, NULL, -1, "out of memory");
    /* pieces grouped by local tensor, layout order kept (the order the host image uses) */
    for (size_t i = 0; rc == WS_OK && i < np; i++) start[ws_layout_piece(l, i)->local + 2]++;
    for (size_t i = 0; rc == WS_OK && i < nl; i++) start[i + 2] += start[i + 1];
    for (size_t i = 0; rc == WS_OK && i < np; i++)
        by_local[start[ws_layout_piece(l, i)->local + 1]++] = i;
    for (size_t i = 0; rc == WS_OK && i < nl; i++) {
        wsi_dev_rect *r = NULL;
        size_t m = 0;
        rc = wsp_image_rects(l, i, by_local + start[i], start[i + 1] - start[i], hf, &r, &m, err);
        if (rc == WS_OK && total + m > cap) {
            size_t nc = cap ? cap : 256;
            while (nc < total + m) nc *= 2;
            wsi_dev_rect *g = realloc(all, nc * sizeof *g);
            if (g) {
                all = g;
                cap = nc;
            } else {
                rc = wsi_fail(err, WS_ERR_NOMEM, NULL, NULL, -1, "out of memory");
            }
        }
        if (rc == WS_OK && m) memcpy(all + total, r, m * sizeof *r);
        tens[i] = (wsi_dev_tensor){total, m};
        total += rc == WS_OK ? m : 0;
        free(r);
    }
    if (rc == WS_OK)
        rc = b->sha256_rects(all, total, tens, nl, WS_CANON_NATIVE, a->threads, md, NULL,
                             a->stream, err);
    for (size_t i = 0; rc == WS_OK && i < nl; i++) wsp_image_hex(a->engine, md[i], out[i]);
    free(start);
    free(by_local);
    free(tens);
    free(md);
    free(all);
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
    if (rc == WS_OK) {
        views_arg a = {v, ts, n, stream, engine, threads};
        wsp_local_hashes_fn fn = NULL;
        if (device >= 0)
            fn = engine == WS_ENGINE_SGLANG && path == WS_SGLANG_CUDA ? device_hashes
                                                                      : device_images;
        rc = wsp_expect_create_with(l, ts, n, engine, path, source, threads, fn, &a, out, err);
    }
    free(ts);
    return rc;
}
