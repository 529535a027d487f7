/* Matching a dump to a layout, and the checks that need no digest (see dump_resolve.h). */
#include "dump_resolve.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void wsi_dumpview_report(wsi_dumpview *v, ws_status s, const char *tensor, const char *local,
                         int rank, int64_t row0, int64_t row1, const char *fmt, ...) {
    char detail[768];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(detail, sizeof detail, fmt, ap);
    va_end(ap);
    ws_finding f = {.status = s, .tensor = tensor, .local = local, .rank = rank, .row0 = row0,
                    .row1 = row1, .detail = detail};
    pthread_mutex_lock(&v->lock);
    ws_report_add(v->r, &f);
    pthread_mutex_unlock(&v->lock);
}

/* HF tensor that a local tensor holds (its first piece's), for naming findings. */
static const char *hf_of_local(const ws_layout *l, size_t local) {
    for (size_t i = 0; i < ws_layout_piece_count(l); i++)
        if (ws_layout_piece(l, i)->local == local)
            return ws_layout_hf(l, ws_layout_piece(l, i)->hf)->name;
    return "";
}

/* Rows of a local tensor that no piece covers (vocab padding) must be zero. */
static void check_padding(wsi_dumpview *v, size_t li, const uint8_t *covered) {
    const ws_local_desc *ld = ws_layout_local(v->l, li);
    const ws_tensor *t = v->loc[li];
    uint64_t rows, cols;
    wsi_view(ld->ndim, ld->shape, &rows, &cols);
    size_t rowbytes = cols * ws_dtype_size(t->dtype);
    uint64_t first = UINT64_MAX, bad_rows = 0, pad0 = UINT64_MAX, pad1 = 0;
    for (uint64_t r = 0; r < rows; r++) {
        if (covered[r]) continue;
        if (pad0 == UINT64_MAX) pad0 = r;
        pad1 = r + 1;
        const uint8_t *p = (const uint8_t *)t->data + r * rowbytes;
        bool zero = true;
        for (size_t k = 0; k < rowbytes && zero; k++) zero = p[k] == 0;
        if (!zero) {
            bad_rows++;
            if (first == UINT64_MAX) first = r;
        }
    }
    if (bad_rows)
        wsi_dumpview_report(v, WS_PADDING_NONZERO, hf_of_local(v->l, li), ld->name, ld->rank, -1,
                            -1,
                            "padding rows %llu..%llu of the local tensor must be zero; %llu of "
                            "them are not, the first is local row %llu",
                            (unsigned long long)pad0, (unsigned long long)pad1,
                            (unsigned long long)bad_rows, (unsigned long long)first);
}

ws_err wsi_dumpview_open(wsi_dumpview *v, const ws_layout *l, const ws_dump *d, ws_report *r,
                         ws_error *err) {
    memset(v, 0, sizeof *v);
    v->l = l;
    v->d = d;
    v->r = r;
    pthread_mutex_init(&v->lock, NULL);
    size_t nl = ws_layout_local_count(l);
    v->loc = calloc(nl + 1, sizeof *v->loc);
    v->why_missing = calloc(nl + 1, sizeof *v->why_missing);
    if (!v->loc || !v->why_missing) return wsi_fail(err, WS_ERR_NOMEM, NULL, NULL, -1, "out of memory");
    ws_err rc = wsi_plans_build(l, &v->plans, err);
    if (rc != WS_OK) return rc;
    int tp = ws_layout_rank_count(l); /* global ranks: tp x pp (x ep for megatron) */
    for (int rank = 0; rank < tp; rank++)
        if (!ws_dump_rank(d, rank))
            wsi_dumpview_report(v, WS_MISSING, "", NULL, rank, -1, -1,
                                "no model-rank-%d-part-*.safetensors file: rank %d's tensors are "
                                "missing",
                                rank, rank);
    for (int rank = tp; rank < ws_dump_rank_count(d); rank++)
        if (ws_dump_rank(d, rank))
            wsi_dumpview_report(v, WS_UNEXPECTED, "", NULL, rank, -1, -1,
                                "a file for rank %d, but the layout has only %d ranks", rank, tp);
    /* Match dump tensors to local tensors. */
    for (int rank = 0; rank < tp && rank < ws_dump_rank_count(d); rank++) {
        const ws_ckpt *c = ws_dump_rank(d, rank);
        for (size_t i = 0; c && i < ws_ckpt_count(c); i++) {
            const ws_tensor *t = ws_ckpt_tensor(c, i);
            long li = ws_layout_find_local(l, rank, t->name);
            if (li < 0) {
                wsi_dumpview_report(v, WS_UNEXPECTED, t->name, t->name, rank, -1, -1,
                                    "engine tensor maps to nothing in the %s layout",
                                    ws_layout_family(l));
                continue;
            }
            const ws_local_desc *ld = ws_layout_local(l, (size_t)li);
            if (v->loc[li]) {
                /* an alias present beside its tensor (a tied lm_head saved twice): equal bytes */
                const ws_tensor *o = v->loc[li];
                if (o->nbytes != t->nbytes || o->dtype != t->dtype ||
                    memcmp(o->data, t->data, t->nbytes) != 0)
                    wsi_dumpview_report(v, WS_REPLICA_MISMATCH, hf_of_local(l, (size_t)li),
                                        t->name, rank, -1, -1,
                                        "'%s' and '%s' are one tied tensor but differ", t->name,
                                        o->name);
                continue;
            }
            if (t->ndim != ld->ndim ||
                memcmp(t->shape, ld->shape, sizeof(uint64_t) * (size_t)ld->ndim) != 0) {
                char se[160], sa[160];
                wsi_shape_str(ld->ndim, ld->shape, se, sizeof se);
                wsi_shape_str(t->ndim, t->shape, sa, sizeof sa);
                wsi_dumpview_report(v, WS_SHAPE_DIFFERS, hf_of_local(l, (size_t)li), ld->name, rank,
                                    -1, -1, "local shape %s expected for %s tp=%d, %s found", se,
                                    ws_layout_family(l), tp, sa);
                v->why_missing[li] = "has the wrong shape";
                continue;
            }
            v->loc[li] = t;
        }
    }
    for (size_t li = 0; li < nl; li++) {
        const ws_local_desc *ld = ws_layout_local(l, li);
        if (v->loc[li] || v->why_missing[li]) continue;
        v->why_missing[li] = "is missing";
        if (ws_dump_rank(d, ld->rank)) /* a missing rank file was reported once above */
            wsi_dumpview_report(v, WS_MISSING, hf_of_local(l, li), ld->name, ld->rank, -1, -1,
                                "engine tensor absent from rank %d's files", ld->rank);
    }
    /* Padding: rows of each present local tensor that no piece covers. */
    uint8_t **covered = calloc(nl + 1, sizeof *covered);
    if (!covered) return wsi_fail(err, WS_ERR_NOMEM, NULL, NULL, -1, "out of memory");
    for (size_t i = 0; i < ws_layout_piece_count(l) && rc == WS_OK; i++) {
        const ws_piece *p = ws_layout_piece(l, i);
        if (!v->loc[p->local]) continue;
        if (!covered[p->local]) {
            uint64_t rows, cols;
            const ws_local_desc *ld = ws_layout_local(l, p->local);
            wsi_view(ld->ndim, ld->shape, &rows, &cols);
            covered[p->local] = calloc(rows + 1, 1);
            if (!covered[p->local]) {
                rc = wsi_fail(err, WS_ERR_NOMEM, NULL, NULL, -1, "out of memory");
                break;
            }
        }
        memset(covered[p->local] + p->l_row0, 1, p->rows);
    }
    for (size_t li = 0; li < nl && rc == WS_OK && ws_layout_zero_padding(l); li++)
        if (covered[li]) check_padding(v, li, covered[li]);
    for (size_t li = 0; li < nl; li++) free(covered[li]);
    free(covered);
    return rc;
}

void wsi_dumpview_close(wsi_dumpview *v) {
    wsi_plans_free(v->plans, ws_layout_hf_count(v->l));
    free(v->loc);
    free(v->why_missing);
    pthread_mutex_destroy(&v->lock);
    memset(v, 0, sizeof *v);
}
