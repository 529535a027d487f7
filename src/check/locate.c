/*
 * Localisation by exchanging range digests (ws_locate): each side digests ranges of its own
 * canonical elements with the fast digest, whose value for a range does not depend on how a
 * side shards or stores the tensor. Comparing range digests and recursing into the ranges that
 * differ finds the differing elements in log_fanout(numel) rounds, moving only digests and, at
 * the end, the few differing values.
 */
#include "digest.h"
#include "dump_resolve.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct ws_side {
    const ws_ckpt *ckpt;  /* a checkpoint side, or */
    wsi_dumpview view;    /* a dump side (view.l != NULL) */
    ws_report *own;       /* findings of the dump view (structural checks belong to verify) */
    ws_canon canon;
    const ws_fastkey *key;
};

ws_err ws_side_checkpoint(const ws_ckpt *c, ws_canon canon, const ws_fastkey *key,
                          ws_side **out, ws_error *err) {
    *out = NULL;
    if (!c || !key) return wsi_fail(err, WS_ERR_ARG, NULL, NULL, -1, "a side needs a checkpoint and a key");
    ws_side *s = calloc(1, sizeof *s);
    if (!s) return wsi_fail(err, WS_ERR_NOMEM, NULL, NULL, -1, "out of memory");
    s->ckpt = c;
    s->canon = canon;
    s->key = key;
    *out = s;
    return WS_OK;
}

ws_err ws_side_dump(const ws_layout *l, const ws_dump *d, ws_canon canon, const ws_fastkey *key,
                    ws_side **out, ws_error *err) {
    *out = NULL;
    if (!l || !d || !key) return wsi_fail(err, WS_ERR_ARG, NULL, NULL, -1, "a side needs a layout, a dump and a key");
    ws_side *s = calloc(1, sizeof *s);
    if (!s || !(s->own = ws_report_new())) {
        free(s);
        return wsi_fail(err, WS_ERR_NOMEM, NULL, NULL, -1, "out of memory");
    }
    s->canon = canon;
    s->key = key;
    ws_err rc = wsi_dumpview_open(&s->view, l, d, s->own, err);
    if (rc != WS_OK) {
        ws_side_free(s);
        return rc;
    }
    *out = s;
    return WS_OK;
}

void ws_side_free(ws_side *s) {
    if (!s) return;
    if (s->view.l) wsi_dumpview_close(&s->view);
    ws_report_free(s->own);
    free(s);
}

/* The dump side's HF index for a tensor (through ties), or -1. */
static long dump_hf(const ws_side *s, const char *tensor) {
    long h = ws_layout_find_hf(s->view.l, tensor);
    if (h >= 0 && ws_layout_hf(s->view.l, (size_t)h)->tied_to)
        h = ws_layout_find_hf(s->view.l, ws_layout_hf(s->view.l, (size_t)h)->tied_to);
    return h;
}

ws_err ws_side_numel(const ws_side *s, const char *tensor, uint64_t *numel, ws_error *err) {
    if (s->ckpt) {
        const ws_tensor *t = ws_ckpt_find(s->ckpt, tensor);
        if (!t) return wsi_fail(err, WS_ERR_NOTFOUND, NULL, tensor, -1, "no such tensor");
        *numel = t->numel;
        return WS_OK;
    }
    long h = dump_hf(s, tensor);
    if (h < 0) return wsi_fail(err, WS_ERR_NOTFOUND, NULL, tensor, -1, "no such tensor in the layout");
    *numel = s->view.plans[h].rows * s->view.plans[h].cols;
    return WS_OK;
}

typedef struct range_ctx {
    const ws_side *s;
    wsi_sink *sink;
    const char *tensor; /* its name picks the canonical rule (ws_canon_for_tensor) */
    uint64_t begin, end;
    bool missing;
} range_ctx;

/* Feed the part of a run that falls inside [begin, end). */
static ws_err feed_clipped(void *arg, const wsi_run *run) {
    range_ctx *c = arg;
    uint64_t a = run->t_at > c->begin ? run->t_at : c->begin;
    uint64_t b = run->t_at + run->n < c->end ? run->t_at + run->n : c->end;
    if (a >= b) return WS_OK;
    const ws_tensor *t = c->s->view.loc[run->local];
    if (!t) {
        c->missing = true;
        return WS_OK;
    }
    const uint8_t *p = (const uint8_t *)t->data + (run->l_at + (a - run->t_at)) * ws_dtype_size(t->dtype);
    wsi_sink_feed(c->sink, t->dtype, ws_canon_for_tensor(c->tensor, t->dtype, c->s->canon), a, p,
                  b - a, NULL);
    return WS_OK;
}

ws_err ws_side_range_digest(const ws_side *s, const char *tensor, uint64_t begin, uint64_t end,
                            ws_fast *out, ws_error *err) {
    uint64_t numel;
    ws_err rc = ws_side_numel(s, tensor, &numel, err);
    if (rc != WS_OK) return rc;
    if (begin > end || end > numel)
        return wsi_fail(err, WS_ERR_ARG, NULL, tensor, -1, "range %llu..%llu outside 0..%llu",
                        (unsigned long long)begin, (unsigned long long)end,
                        (unsigned long long)numel);
    wsi_sink sink;
    ws_dtype dt;
    const ws_tensor *t = s->ckpt ? ws_ckpt_find(s->ckpt, tensor) : NULL;
    long h = s->ckpt ? -1 : dump_hf(s, tensor);
    if (t) dt = t->dtype;
    else {
        const wsi_plan *p = &s->view.plans[h];
        const ws_tensor *lt = p->n_primary ? s->view.loc[ws_layout_piece(s->view.l, p->primary[0])->local] : NULL;
        if (!lt) return wsi_fail(err, WS_ERR_NOTFOUND, NULL, tensor, -1, "the dump cannot rebuild it");
        dt = lt->dtype;
    }
    ws_canon canon = ws_canon_for_tensor(tensor, dt, s->canon);
    rc = wsi_sink_init(&sink, WS_ALGO_FAST, ws_canonical_dtype(dt, canon), s->key, err);
    if (rc != WS_OK) return rc;
    if (t) {
        size_t es = ws_dtype_size(t->dtype);
        wsi_sink_feed(&sink, t->dtype, canon, begin, (const uint8_t *)t->data + begin * es,
                      end - begin, NULL);
    } else if (begin < end) {
        const wsi_plan *p = &s->view.plans[h];
        range_ctx c = {.s = s, .sink = &sink, .tensor = tensor, .begin = begin, .end = end};
        uint64_t cols = p->cols ? p->cols : 1;
        rc = wsi_sweep(s->view.l, p, begin / cols, (end - 1) / cols + 1, feed_clipped, &c, NULL);
        if (rc == WS_OK && c.missing)
            rc = wsi_fail(err, WS_ERR_NOTFOUND, NULL, tensor, -1, "the dump cannot rebuild it");
    }
    ws_digest d;
    if (rc == WS_OK) rc = wsi_sink_final(&sink, &d, err);
    wsi_sink_destroy(&sink);
    if (rc == WS_OK) *out = d.fast;
    return rc;
}

ws_err ws_side_element(const ws_side *s, const char *tensor, uint64_t i, double *value,
                       char *where, size_t where_size, ws_error *err) {
    uint64_t numel;
    ws_err rc = ws_side_numel(s, tensor, &numel, err);
    if (rc != WS_OK) return rc;
    if (i >= numel) return wsi_fail(err, WS_ERR_ARG, NULL, tensor, -1, "element %llu out of range", (unsigned long long)i);
    uint8_t canon[8];
    uint64_t co[WS_MAX_DIMS];
    char cs[160];
    if (s->ckpt) {
        const ws_tensor *t = ws_ckpt_find(s->ckpt, tensor);
        size_t es = ws_dtype_size(t->dtype);
        ws_canon rule = ws_canon_for_tensor(tensor, t->dtype, s->canon);
        wsi_cast_to_canonical(t->dtype, rule, (const uint8_t *)t->data + i * es, 1, canon, NULL);
        *value = ws_element_as_double(ws_canonical_dtype(t->dtype, rule), canon, 0);
        wsi_unravel(i, t->ndim, t->shape, co);
        wsi_shape_str(t->ndim, co, cs, sizeof cs);
        if (where) snprintf(where, where_size, "element %s", cs);
        return WS_OK;
    }
    long h = dump_hf(s, tensor);
    const wsi_plan *p = &s->view.plans[h];
    uint64_t cols = p->cols ? p->cols : 1, row = i / cols, col = i % cols;
    for (size_t k = 0; k < p->n_primary; k++) {
        const ws_piece *pc = ws_layout_piece(s->view.l, p->primary[k]);
        if (row < pc->t_row0 || row >= pc->t_row0 + pc->rows || col < pc->t_col0 ||
            col >= pc->t_col0 + pc->cols)
            continue;
        const ws_tensor *t = s->view.loc[pc->local];
        const ws_local_desc *ld = ws_layout_local(s->view.l, pc->local);
        if (!t) return wsi_fail(err, WS_ERR_NOTFOUND, NULL, tensor, -1, "%s on rank %d is missing", ld->name, ld->rank);
        uint64_t li = (pc->l_row0 + row - pc->t_row0) * pc->l_cols + pc->l_col0 + (col - pc->t_col0);
        size_t es = ws_dtype_size(t->dtype);
        ws_canon rule = ws_canon_for_tensor(tensor, t->dtype, s->canon);
        wsi_cast_to_canonical(t->dtype, rule, (const uint8_t *)t->data + li * es, 1, canon, NULL);
        *value = ws_element_as_double(ws_canonical_dtype(t->dtype, rule), canon, 0);
        wsi_unravel(li, ld->ndim, ld->shape, co);
        wsi_shape_str(ld->ndim, co, cs, sizeof cs);
        if (where) snprintf(where, where_size, "element %s of %s on rank %d", cs, ld->name, ld->rank);
        return WS_OK;
    }
    return wsi_fail(err, WS_ERR_COVERAGE, NULL, tensor, -1, "no piece holds element %llu", (unsigned long long)i);
}

typedef struct range {
    uint64_t begin, end;
} range;

ws_err ws_locate(const ws_side *a, const ws_side *b, const char *tensor, unsigned fanout,
                 size_t max_elems, ws_location *out, ws_error *err) {
    memset(out, 0, sizeof *out);
    if (fanout < 2) fanout = 16;
    if (max_elems < 1) max_elems = 1;
    uint64_t na, nb;
    ws_err rc = ws_side_numel(a, tensor, &na, err);
    if (rc == WS_OK) rc = ws_side_numel(b, tensor, &nb, err);
    if (rc != WS_OK) return rc;
    if (na != nb)
        return wsi_fail(err, WS_ERR_SHAPE, NULL, tensor, -1, "%llu elements on one side, %llu on the other",
                        (unsigned long long)na, (unsigned long long)nb);
    out->numel = na;
    range *cur = malloc(sizeof *cur), *next = malloc(max_elems * fanout * sizeof *next);
    if (!cur || !next) {
        free(cur);
        free(next);
        return wsi_fail(err, WS_ERR_NOMEM, NULL, tensor, -1, "out of memory");
    }
    size_t ncur = 0;
    if (na > 0) cur[ncur++] = (range){0, na};
    out->first = UINT64_MAX;
    while (ncur > 0 && rc == WS_OK) {
        out->rounds++;
        size_t nnext = 0;
        for (size_t i = 0; i < ncur && rc == WS_OK; i++) {
            uint64_t len = cur[i].end - cur[i].begin, step = (len + fanout - 1) / fanout;
            for (uint64_t s = cur[i].begin; s < cur[i].end && rc == WS_OK; s += step) {
                uint64_t e = s + step < cur[i].end ? s + step : cur[i].end;
                ws_fast da, db;
                rc = ws_side_range_digest(a, tensor, s, e, &da, err);
                if (rc == WS_OK) rc = ws_side_range_digest(b, tensor, s, e, &db, err);
                out->digests++;
                if (rc != WS_OK || memcmp(&da, &db, sizeof da) == 0) continue;
                if (e - s == 1) {
                    if (s < out->first) out->first = s; /* rounds may find leaves out of order */
                    if (out->found < max_elems) out->found++;
                    else out->more = 1;
                } else if (nnext < max_elems) {
                    next[nnext++] = (range){s, e};
                } else {
                    out->more = 1;
                }
            }
        }
        range *t = cur;
        cur = next;
        next = realloc(t, max_elems * fanout * sizeof *next);
        if (!next) rc = wsi_fail(err, WS_ERR_NOMEM, NULL, tensor, -1, "out of memory");
        ncur = nnext;
        if (out->found >= max_elems) break;
    }
    free(cur);
    free(next);
    if (rc == WS_OK && out->found) {
        rc = ws_side_element(a, tensor, out->first, &out->value_a, NULL, 0, err);
        if (rc == WS_OK)
            rc = ws_side_element(b, tensor, out->first, &out->value_b, out->where_b,
                                 sizeof out->where_b, err);
    }
    return rc;
}
