/*
 * Write what each rank of a layout holds after loading a HF checkpoint (ws_shard_checkpoint):
 * every local tensor is assembled from its pieces' rectangles, padding left zero, and saved
 * in the sharded_state format under the engine's names.
 */
#include "internal.h"
#include "pieces.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* weightsum-layout.json: {"family", "tp"}, and "ep", "pp" when either is above 1 or an option
 * below is set, SGLang's options ("attn_dp", "dp_lm_head", "moe_dense_tp", "fused_shared_experts")
 * when not the default, and the expert map when the layout has one (rows of each physical slot's
 * logical expert). */
static ws_err write_hint(const ws_layout *l, const char *dir, ws_error *err) {
    char path[4096];
    snprintf(path, sizeof path, "%s/weightsum-layout.json", dir);
    long ep = ws_layout_parallel(l, WS_PAR_EP), pp = ws_layout_parallel(l, WS_PAR_PP);
    long adp = ws_layout_parallel(l, WS_PAR_ATTN_DP), dlh = ws_layout_parallel(l, WS_PAR_DP_LM_HEAD),
         mdt = ws_layout_parallel(l, WS_PAR_MOE_DENSE_TP),
         fse = ws_layout_parallel(l, WS_PAR_FUSED_SHARED);
    bool opts = adp > 1 || dlh || mdt || fse;
    size_t rows, phys;
    const int32_t *map = ws_layout_expert_map(l, &rows, &phys);
    /* every entry below 65536: at most 6 bytes ("65535,") each, plus the brackets of a row */
    size_t cap = 256 + (map ? rows * (phys * 7 + 4) : 0);
    char *text = malloc(cap);
    if (!text) return wsi_fail(err, WS_ERR_NOMEM, path, NULL, -1, "out of memory");
    size_t n;
    if (ep == 1 && pp == 1 && !map && !opts) /* the tp-only form, unchanged */
        n = (size_t)snprintf(text, cap, "{\"family\": \"%s\", \"tp\": %d}\n",
                             ws_layout_family(l), ws_layout_tp(l));
    else
        n = (size_t)snprintf(text, cap, "{\"family\": \"%s\", \"tp\": %d, \"ep\": %ld, \"pp\": %ld",
                             ws_layout_family(l), ws_layout_tp(l), ep, pp);
    if (adp > 1) n += (size_t)snprintf(text + n, cap - n, ", \"attn_dp\": %ld", adp);
    if (dlh) n += (size_t)snprintf(text + n, cap - n, ", \"dp_lm_head\": %ld", dlh);
    if (mdt) n += (size_t)snprintf(text + n, cap - n, ", \"moe_dense_tp\": %ld", mdt);
    if (fse) n += (size_t)snprintf(text + n, cap - n, ", \"fused_shared_experts\": %ld", fse);
    if (map) {
        n += (size_t)snprintf(text + n, cap - n, ", \"expert_map\": [");
        for (size_t r = 0; r < rows; r++) {
            n += (size_t)snprintf(text + n, cap - n, "%s[", r ? ", " : "");
            for (size_t q = 0; q < phys; q++)
                n += (size_t)snprintf(text + n, cap - n, "%s%d", q ? "," : "",
                                      (int)map[r * phys + q]);
            n += (size_t)snprintf(text + n, cap - n, "]");
        }
        n += (size_t)snprintf(text + n, cap - n, "]");
    }
    if (ep != 1 || pp != 1 || map || opts) n += (size_t)snprintf(text + n, cap - n, "}\n");
    ws_err e = ws_write_file_atomic(path, text, n, err);
    free(text);
    return e;
}

/* Assemble one local tensor into a new zeroed *out, from the HF tensors of its pieces. */
static ws_err assemble(const ws_ckpt *c, const ws_layout *l, size_t li, uint8_t **out,
                       ws_dtype *dtype, ws_error *err) {
    const ws_local_desc *ld = ws_layout_local(l, li);
    bool have = false, *have_dtype = &have;
    uint8_t *buf = NULL;
    uint64_t numel = 1;
    for (int d = 0; d < ld->ndim; d++) numel *= ld->shape[d];
    *out = NULL;
    for (size_t i = 0; i < ws_layout_piece_count(l); i++) {
        const ws_piece *p = ws_layout_piece(l, i);
        if (p->local != li) continue;
        const ws_hf_desc *hd = ws_layout_hf(l, p->hf);
        const ws_tensor *t = ws_ckpt_find(c, hd->name);
        if (!t)
            return wsi_fail(err, WS_ERR_NOTFOUND, NULL, hd->name, -1,
                            "the checkpoint lacks this tensor, needed for %s on rank %d",
                            ld->name, ld->rank);
        if (t->ndim != hd->ndim || memcmp(t->shape, hd->shape, sizeof(uint64_t) * (size_t)t->ndim)) {
            char a[160], b[160];
            wsi_shape_str(hd->ndim, hd->shape, a, sizeof a);
            wsi_shape_str(t->ndim, t->shape, b, sizeof b);
            return wsi_fail(err, WS_ERR_SHAPE, t->file, t->name, -1,
                            "the config says shape %s, the checkpoint has %s", a, b);
        }
        if (*have_dtype && t->dtype != *dtype)
            return wsi_fail(err, WS_ERR_DTYPE, t->file, t->name, -1,
                            "%s fuses tensors of different dtypes (%s and %s)", ld->name,
                            ws_dtype_name(*dtype), ws_dtype_name(t->dtype));
        *dtype = t->dtype;
        *have_dtype = true;
        if (!buf && !(*out = buf = calloc(numel * ws_dtype_size(t->dtype) + 1, 1)))
            return wsi_fail(err, WS_ERR_NOMEM, NULL, ld->name, -1, "out of memory");
        size_t es = ws_dtype_size(t->dtype);
        if (p->rows == 0) continue;
        /* the checkpoint's mapping is read: a file cut meanwhile is an error, never SIGBUS */
        uint64_t a = (p->t_row0 * p->t_cols + p->t_col0) * es;
        uint64_t b = ((p->t_row0 + p->rows - 1) * p->t_cols + p->t_col0 + p->cols) * es;
        wsi_touch prev;
        ws_err rc = wsi_ckpt_touch_begin(c, t, a, b - a, &prev, err);
        if (rc != WS_OK) return rc; /* the caller frees *out */
        for (uint64_t r = 0; r < p->rows; r++)
            memcpy(buf + ((p->l_row0 + r) * p->l_cols + p->l_col0) * es,
                   (const uint8_t *)t->data + ((p->t_row0 + r) * p->t_cols + p->t_col0) * es,
                   p->cols * es);
        wsi_ckpt_touch_end(&prev);
    }
    if (!buf && !(*out = calloc(numel * ws_dtype_size(*dtype) + 1, 1)))
        return wsi_fail(err, WS_ERR_NOMEM, NULL, ld->name, -1, "out of memory");
    return WS_OK;
}

ws_err ws_shard_checkpoint(const ws_ckpt *c, const ws_layout *l, const char *dir,
                           ws_error *err) {
    size_t nl = ws_layout_local_count(l);
    ws_err rc = WS_OK;
    for (int rank = 0; rank < ws_layout_rank_count(l) && rc == WS_OK; rank++) {
        ws_tensor_spec *specs = calloc(nl + 1, sizeof *specs);
        size_t n = 0;
        if (!specs) return wsi_fail(err, WS_ERR_NOMEM, NULL, NULL, -1, "out of memory");
        for (size_t li = 0; li < nl && rc == WS_OK; li++) {
            const ws_local_desc *ld = ws_layout_local(l, li);
            if (ld->rank != rank) continue;
            uint8_t *buf = NULL;
            ws_dtype dt = WS_F32;
            rc = assemble(c, l, li, &buf, &dt, err);
            specs[n] = (ws_tensor_spec){.name = ld->name, .dtype = dt, .ndim = ld->ndim, .data = buf};
            memcpy(specs[n].shape, ld->shape, sizeof specs[n].shape);
            n++;
        }
        /* engine buffers of known values (vLLM's _expert_map), as its state_dict() has them */
        size_t nb = ws_layout_buffer_count(l);
        ws_tensor_spec *more = rc == WS_OK ? realloc(specs, (nl + nb + 1) * sizeof *specs) : NULL;
        if (rc == WS_OK && !more) rc = wsi_fail(err, WS_ERR_NOMEM, NULL, NULL, -1, "out of memory");
        if (more) specs = more;
        size_t n_weights = n;
        for (size_t b = 0; b < nb && rc == WS_OK; b++) {
            const ws_buffer_desc *bd = ws_layout_buffer(l, b);
            if (bd->rank != rank) continue;
            specs[n] = (ws_tensor_spec){.name = bd->name, .dtype = bd->dtype, .ndim = bd->ndim,
                                        .data = bd->values};
            memcpy(specs[n].shape, bd->shape, sizeof specs[n].shape);
            n++;
        }
        if (rc == WS_OK) {
            char path[4096];
            snprintf(path, sizeof path, "%s/model-rank-%d-part-0.safetensors", dir, rank);
            rc = ws_safetensors_write(path, specs, n, "{\"format\":\"pt\"}", err);
        }
        for (size_t i = 0; i < n_weights; i++) free((void *)specs[i].data);
        free(specs);
    }
    if (rc == WS_OK) rc = write_hint(l, dir, err);
    return rc;
}
