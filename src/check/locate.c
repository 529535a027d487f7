/*
 * Localisation by exchanging range digests (ws_locate): each side digests ranges of its own
 * canonical elements with the fast digest, whose value for a range does not depend on how a
 * side shards or stores the tensor. Comparing range digests and recursing into the ranges that
 * differ finds the differing elements in log_fanout(numel) rounds, moving only digests and, at
 * the end, the few differing values.
 */
#include "digest.h"
#include "dump_check.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Every byte a side reads goes through a source (pread into reused buffers): a file that
 * shrinks while a side reads it is an error naming it, never SIGBUS. */
struct ws_side {
    const ws_ckpt *ckpt;  /* a checkpoint side, read through ck_src, or */
    ws_source *ck_src;
    wsi_dumpcheck dc;     /* a dump side (dc.l != NULL): a source per rank, tensors bound */
    ws_hash_options opt;  /* dc's */
    ws_report *own;       /* findings of binding the dump (structural checks belong to verify) */
    ws_canon canon;
    const ws_fastkey *key;
};

ws_err ws_side_checkpoint(const ws_ckpt *c, ws_canon canon, const ws_fastkey *key,
                          ws_side **out, ws_error *err) {
    if (!out) return wsi_fail(err, WS_ERR_ARG, NULL, NULL, -1, "NULL argument");
    *out = NULL;
    if (!c || !key) return wsi_fail(err, WS_ERR_ARG, NULL, NULL, -1, "a side needs a checkpoint and a key");
    ws_side *s = calloc(1, sizeof *s);
    if (!s) return wsi_fail(err, WS_ERR_NOMEM, NULL, NULL, -1, "out of memory");
    s->ckpt = c;
    s->canon = canon;
    s->key = key;
    ws_err rc = wsi_source_ckpt(c, WS_READ_DEFAULT, &s->ck_src, err);
    if (rc != WS_OK) {
        ws_side_free(s);
        return rc;
    }
    *out = s;
    return WS_OK;
}

ws_err ws_side_dump(const ws_layout *l, const ws_dump *d, ws_canon canon, const ws_fastkey *key,
                    ws_side **out, ws_error *err) {
    if (!out) return wsi_fail(err, WS_ERR_ARG, NULL, NULL, -1, "NULL argument");
    *out = NULL;
    if (!l || !d || !key) return wsi_fail(err, WS_ERR_ARG, NULL, NULL, -1, "a side needs a layout, a dump and a key");
    ws_side *s = calloc(1, sizeof *s);
    if (!s || !(s->own = ws_report_new())) {
        free(s);
        return wsi_fail(err, WS_ERR_NOMEM, NULL, NULL, -1, "out of memory");
    }
    s->canon = canon;
    s->key = key;
    s->opt = (ws_hash_options){.canon = canon, .algos = WS_ALGO_FAST, .key = key, .threads = 1};
    /* bound, not digested: no piece hashed, no padding scanned */
    ws_err rc = wsi_dumpcheck_bind(&s->dc, l, d, &s->opt, s->own, true, err);
    if (rc != WS_OK) {
        ws_side_free(s);
        return rc;
    }
    *out = s;
    return WS_OK;
}

void ws_side_free(ws_side *s) {
    if (!s) return;
    if (s->dc.l) wsi_dumpcheck_close(&s->dc);
    ws_source_free(s->ck_src);
    ws_report_free(s->own);
    free(s);
}

/* The dump side's HF index for a tensor (through ties), or -1. */
static long dump_hf(const ws_side *s, const char *tensor) {
    long h = ws_layout_find_hf(s->dc.l, tensor);
    if (h >= 0 && ws_layout_hf(s->dc.l, (size_t)h)->tied_to)
        h = ws_layout_find_hf(s->dc.l, ws_layout_hf(s->dc.l, (size_t)h)->tied_to);
    return h;
}

ws_err ws_side_numel(const ws_side *s, const char *tensor, uint64_t *numel, ws_error *err) {
    if (!s || !tensor || !numel) return wsi_fail(err, WS_ERR_ARG, NULL, NULL, -1, "NULL argument");
    if (s->ckpt) {
        const ws_tensor *t = ws_ckpt_find(s->ckpt, tensor);
        if (!t) return wsi_fail(err, WS_ERR_NOTFOUND, NULL, tensor, -1, "no such tensor");
        *numel = t->numel;
        return WS_OK;
    }
    long h = dump_hf(s, tensor);
    if (h < 0) return wsi_fail(err, WS_ERR_NOTFOUND, NULL, tensor, -1, "no such tensor in the layout");
    *numel = s->dc.plan->plans[h].rows * s->dc.plan->plans[h].cols;
    return WS_OK;
}

/* Elements read from a source, fed to the sink at canonical index base + at. */
typedef struct feed_ctx {
    wsi_sink *sink;
    ws_dtype dtype;
    ws_canon canon;
    uint64_t base;
} feed_ctx;

static ws_err feed(void *arg, uint64_t at, const void *data, uint64_t n) {
    feed_ctx *f = arg;
    wsi_sink_feed(f->sink, f->dtype, f->canon, f->base + at, data, n, NULL);
    return WS_OK;
}

typedef struct range_ctx {
    const ws_side *s;
    wsi_sink *sink;
    const char *tensor; /* its name picks the canonical rule (ws_canon_for_tensor) */
    uint64_t begin, end;
    bool missing;
    wsi_readbuf buf;
    ws_error *err;
} range_ctx;

/* Feed the part of a run that falls inside [begin, end). */
static ws_err feed_clipped(void *arg, const wsi_run *run) {
    range_ctx *c = arg;
    uint64_t a = run->t_at > c->begin ? run->t_at : c->begin;
    uint64_t b = run->t_at + run->n < c->end ? run->t_at + run->n : c->end;
    if (a >= b) return WS_OK;
    const wsi_src_tensor *t = c->s->dc.bound[run->local];
    if (!t) {
        c->missing = true;
        return WS_OK;
    }
    feed_ctx f = {c->sink, t->dtype, ws_canon_for_tensor(c->tensor, t->dtype, c->s->canon), a};
    return wsi_dumpcheck_read(&c->s->dc, run->local, run->l_at + (a - run->t_at), b - a, &c->buf,
                              feed, &f, c->err);
}

/* The checkpoint side's tensor called name, as its source holds it, or NULL. */
static const wsi_src_tensor *ckpt_tensor(const ws_side *s, const char *name) {
    return ws_ckpt_find(s->ckpt, name) ? wsi_source_find(s->ck_src, name) : NULL;
}

ws_err ws_side_range_digest(const ws_side *s, const char *tensor, uint64_t begin, uint64_t end,
                            ws_fast *out, ws_error *err) {
    uint64_t numel;
    ws_err rc = ws_side_numel(s, tensor, &numel, err);
    if (rc != WS_OK) return rc;
    if (!out) return wsi_fail(err, WS_ERR_ARG, NULL, tensor, -1, "NULL argument");
    if (begin > end || end > numel)
        return wsi_fail(err, WS_ERR_ARG, NULL, tensor, -1, "range %llu..%llu outside 0..%llu",
                        (unsigned long long)begin, (unsigned long long)end,
                        (unsigned long long)numel);
    wsi_sink sink;
    ws_dtype dt;
    const wsi_src_tensor *t = s->ckpt ? ckpt_tensor(s, tensor) : NULL;
    if (s->ckpt && !t) return wsi_fail(err, WS_ERR_NOTFOUND, NULL, tensor, -1, "no such tensor");
    long h = s->ckpt ? -1 : dump_hf(s, tensor);
    if (t) dt = t->dtype;
    else {
        const wsi_plan *p = &s->dc.plan->plans[h];
        const wsi_src_tensor *lt =
            p->n_primary ? s->dc.bound[ws_layout_piece(s->dc.l, p->primary[0])->local] : NULL;
        if (!lt) return wsi_fail(err, WS_ERR_NOTFOUND, NULL, tensor, -1, "the dump cannot rebuild it");
        dt = lt->dtype;
    }
    ws_canon canon = ws_canon_for_tensor(tensor, dt, s->canon);
    rc = wsi_sink_init(&sink, WS_ALGO_FAST, ws_canonical_dtype(dt, canon), s->key, err);
    if (rc != WS_OK) return rc;
    wsi_readbuf buf = {0};
    if (t && begin < end) {
        feed_ctx f = {&sink, t->dtype, canon, begin};
        rc = wsi_source_rect(s->ck_src, t, 0, begin, 1, end - begin, t->numel, &buf, feed, &f,
                             err);
    } else if (!t && begin < end) {
        const wsi_plan *p = &s->dc.plan->plans[h];
        range_ctx c = {.s = s, .sink = &sink, .tensor = tensor, .begin = begin, .end = end,
                       .err = err};
        uint64_t cols = p->cols ? p->cols : 1;
        rc = wsi_sweep(s->dc.l, p, begin / cols, (end - 1) / cols + 1, feed_clipped, &c, NULL);
        wsi_readbuf_free(&c.buf);
        if (rc == WS_OK && c.missing)
            rc = wsi_fail(err, WS_ERR_NOTFOUND, NULL, tensor, -1, "the dump cannot rebuild it");
    }
    wsi_readbuf_free(&buf);
    ws_digest d;
    if (rc == WS_OK) rc = wsi_sink_final(&sink, &d, err);
    wsi_sink_destroy(&sink);
    if (rc == WS_OK) *out = d.fast;
    return rc;
}

/* Canonical value of element i of source tensor t (policy rule for tensor). */
static ws_err element_value(const ws_source *src, const wsi_src_tensor *t, const char *tensor,
                            ws_canon policy, uint64_t i, double *value, ws_error *err) {
    uint8_t raw[8], canon[8];
    wsi_readbuf buf = {0};
    ws_err rc = wsi_source_read(src, t, i, 1, raw, &buf, err);
    wsi_readbuf_free(&buf);
    if (rc != WS_OK) return rc;
    ws_canon rule = ws_canon_for_tensor(tensor, t->dtype, policy);
    wsi_cast_to_canonical(t->dtype, rule, raw, 1, canon, NULL);
    *value = ws_element_as_double(ws_canonical_dtype(t->dtype, rule), canon, 0);
    return WS_OK;
}

ws_err ws_side_element(const ws_side *s, const char *tensor, uint64_t i, double *value,
                       char *where, size_t where_size, ws_error *err) {
    uint64_t numel;
    ws_err rc = ws_side_numel(s, tensor, &numel, err);
    if (rc != WS_OK) return rc;
    if (!value) return wsi_fail(err, WS_ERR_ARG, NULL, tensor, -1, "NULL argument");
    if (i >= numel) return wsi_fail(err, WS_ERR_ARG, NULL, tensor, -1, "element %llu out of range", (unsigned long long)i);
    uint64_t co[WS_MAX_DIMS];
    char cs[160];
    if (s->ckpt) {
        const ws_tensor *t = ws_ckpt_find(s->ckpt, tensor);
        const wsi_src_tensor *st = ckpt_tensor(s, tensor);
        if (!st) return wsi_fail(err, WS_ERR_NOTFOUND, NULL, tensor, -1, "no such tensor");
        rc = element_value(s->ck_src, st, tensor, s->canon, i, value, err);
        if (rc != WS_OK) return rc;
        wsi_unravel(i, t->ndim, t->shape, co);
        wsi_shape_str(t->ndim, co, cs, sizeof cs);
        if (where) snprintf(where, where_size, "element %s", cs);
        return WS_OK;
    }
    long h = dump_hf(s, tensor);
    const wsi_plan *p = &s->dc.plan->plans[h];
    uint64_t cols = p->cols ? p->cols : 1, row = i / cols, col = i % cols;
    for (size_t k = 0; k < p->n_primary; k++) {
        const ws_piece *pc = ws_layout_piece(s->dc.l, p->primary[k]);
        if (row < pc->t_row0 || row >= pc->t_row0 + pc->rows || col < pc->t_col0 ||
            col >= pc->t_col0 + pc->cols)
            continue;
        const wsi_src_tensor *t = s->dc.bound[pc->local];
        const ws_local_desc *ld = ws_layout_local(s->dc.l, pc->local);
        if (!t) return wsi_fail(err, WS_ERR_NOTFOUND, NULL, tensor, -1, "%s on rank %d is missing", ld->name, ld->rank);
        uint64_t li = (pc->l_row0 + row - pc->t_row0) * pc->l_cols + pc->l_col0 + (col - pc->t_col0);
        rc = element_value(s->dc.src[ld->rank], t, tensor, s->canon, li, value, err);
        if (rc != WS_OK) return rc;
        wsi_unravel(li, ld->ndim, ld->shape, co);
        wsi_shape_str(ld->ndim, co, cs, sizeof cs);
        if (where) /* the name the bytes were read under (a tied embedding: lm_head.weight) */
            snprintf(where, where_size, "element %s of %s on rank %d", cs,
                     wsi_dumpcheck_local_name(&s->dc, pc->local), ld->rank);
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
