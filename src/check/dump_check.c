/* Checking an engine dump through sources and partials (see dump_check.h). */
#include "dump_check.h"

#include "digest.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void wsi_dumpcheck_report(wsi_dumpcheck *c, ws_status s, const char *tensor, const char *local,
                          int rank, int64_t row0, int64_t row1, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    wsi_report_vaddf(c->r, &c->lock, s, tensor, local, rank, row0, row1, fmt, ap);
    va_end(ap);
}

void wsi_dumpcheck_add(wsi_dumpcheck *c, const ws_finding *f) {
    pthread_mutex_lock(&c->lock);
    if (c->r) ws_report_add(c->r, f);
    pthread_mutex_unlock(&c->lock);
}

void wsi_dumpcheck_progress(wsi_dumpcheck *c, uint64_t n) {
    pthread_mutex_lock(&c->lock);
    c->done += n;
    if (c->opt->progress) c->opt->progress(c->opt->progress_user, c->done, c->total);
    pthread_mutex_unlock(&c->lock);
}

ws_err wsi_dumpcheck_read(const wsi_dumpcheck *c, uint32_t local, uint64_t l_at, uint64_t n,
                          wsi_readbuf *buf, wsi_rect_fn fn, void *ctx, ws_error *err) {
    const wsi_src_tensor *t = c->bound[local];
    const ws_source *s = c->src[ws_layout_local(c->l, local)->rank];
    return wsi_source_rect(s, t, 0, l_at, 1, n, t->numel, buf, fn, ctx, err);
}

/* ---- replica findings in the words of the bytes -------------------------------------- */

typedef struct castbuf {
    ws_dtype dtype;
    ws_canon canon;
    uint8_t *dst;
} castbuf;

static ws_err cast_into(void *arg, uint64_t at, const void *data, uint64_t n) {
    castbuf *b = arg;
    size_t ces = ws_dtype_size(ws_canonical_dtype(b->dtype, b->canon));
    wsi_cast_to_canonical(b->dtype, b->canon, data, (size_t)n, b->dst + at * ces, NULL);
    return WS_OK;
}

/* The first differing element of a replica piece and its twin, read row by row. */
static bool replica_detail(void *arg, uint32_t copy, uint32_t twin, char *detail, size_t n,
                           int64_t *row0, int64_t *row1) {
    wsi_dumpcheck *c = arg;
    const ws_layout *l = c->l;
    const ws_piece *cp = ws_layout_piece(l, copy), *op = ws_layout_piece(l, twin);
    const wsi_src_tensor *tc = c->bound[cp->local], *to = c->bound[op->local];
    if (!tc || !to) return false;
    const char *hf_name = ws_layout_hf(l, cp->hf)->name;
    ws_canon canon_c = ws_canon_for_tensor(hf_name, tc->dtype, c->canon);
    ws_canon canon_o = ws_canon_for_tensor(hf_name, to->dtype, c->canon);
    ws_dtype cdt = ws_canonical_dtype(tc->dtype, canon_c);
    if (ws_canonical_dtype(to->dtype, canon_o) != cdt) return false;
    size_t ces = ws_dtype_size(cdt);
    uint8_t *ba = malloc(cp->cols * ces + 1), *bb = malloc(cp->cols * ces + 1);
    wsi_readbuf buf = {0};
    ws_diff d;
    ws_diff_init(&d);
    ws_error e;
    bool ok = ba && bb;
    uint64_t first_row = 0, last_row = 0, prev = 0;
    const ws_source *sc = c->src[ws_layout_local(l, cp->local)->rank];
    const ws_source *so = c->src[ws_layout_local(l, op->local)->rank];
    for (uint64_t r = 0; ok && r < cp->rows; r++) {
        castbuf xa = {to->dtype, canon_o, ba}, xb = {tc->dtype, canon_c, bb};
        ok = wsi_source_rect(so, to, op->l_row0 + r, op->l_col0, 1, op->cols, op->l_cols, &buf,
                             cast_into, &xa, &e) == WS_OK &&
             wsi_source_rect(sc, tc, cp->l_row0 + r, cp->l_col0, 1, cp->cols, cp->l_cols, &buf,
                             cast_into, &xb, &e) == WS_OK;
        if (!ok) break;
        wsi_diff_update(&d, cdt, r * cp->cols, ba, bb, cp->cols);
        if (d.differ != prev) {
            if (!prev) first_row = r;
            last_row = r;
            prev = d.differ;
        }
    }
    free(ba);
    free(bb);
    wsi_readbuf_free(&buf);
    if (!ok || !d.differ) return false;
    const ws_hf_desc *hf = ws_layout_hf(l, cp->hf);
    const ws_local_desc *od = ws_layout_local(l, op->local);
    uint64_t fr = cp->t_row0 + d.first / cp->cols, fc = cp->t_col0 + d.first % cp->cols;
    *row0 = (int64_t)(cp->t_row0 + first_row);
    *row1 = (int64_t)(cp->t_row0 + last_row + 1);
    /* the copy's own element too: in a stacked expert tensor its first index is the slot */
    const ws_local_desc *cd = ws_layout_local(l, cp->local);
    uint64_t li = (cp->l_row0 + d.first / cp->cols) * cp->l_cols + cp->l_col0 + d.first % cp->cols;
    uint64_t co[WS_MAX_DIMS];
    char cs[160];
    wsi_unravel(li, cd->ndim, cd->shape, co);
    wsi_shape_str(cd->ndim, co, cs, sizeof cs);
    snprintf(detail, n,
             "replica %u differs from replica 0 (%s on rank %d): %llu of %llu elements; first at "
             "row %llu, column %llu of %s (element %s of %s): %.9g (replica 0) vs %.9g",
             cp->replica, wsi_dumpcheck_local_name(c, op->local), od->rank, (unsigned long long)d.differ,
             (unsigned long long)d.compared, (unsigned long long)fr, (unsigned long long)fc,
             hf->name, cs, wsi_dumpcheck_local_name(c, cp->local), d.first_a, d.first_b);
    return true;
}

/* ---- binding ------------------------------------------------------------------------- */

const char *wsi_dumpcheck_local_name(const wsi_dumpcheck *c, uint32_t local) {
    const wsi_src_tensor *t = c->bound ? c->bound[local] : NULL;
    return t ? t->name : ws_layout_local(c->l, local)->name;
}

void wsi_dumpcheck_close(wsi_dumpcheck *c) {
    if (c->plan)
        for (int rank = 0; c->src && rank < c->plan->tp; rank++) ws_source_free(c->src[rank]);
    free(c->src);
    free(c->bound);
    ws_partials_free(c->pa);
    ws_manifest_free(c->rebuilt);
    ws_plan_free(c->plan);
    ws_fastkey_free(c->own_key);
    pthread_mutex_destroy(&c->lock);
    memset(c, 0, sizeof *c);
}

/* Files that look like rank files but that the engines never load: a warning naming them. */
static ws_err warn_ignored(const ws_dump *d, ws_report *r, ws_error *err) {
    size_t n = ws_dump_ignored_count(d);
    const char **names = calloc(n, sizeof *names);
    if (!names) return wsi_fail(err, WS_ERR_NOMEM, NULL, NULL, -1, "out of memory");
    char line[1024];
    size_t len = (size_t)snprintf(line, sizeof line,
                                  "%zu %s like %s but vLLM and SGLang would never load %s "
                                  "(their loaders glob model-rank-{rank}-part-*.safetensors, the "
                                  "rank without leading zeros), so neither does this check:",
                                  n, n == 1 ? "file looks" : "files look",
                                  n == 1 ? "a rank file" : "rank files", n == 1 ? "it" : "them");
    for (size_t i = 0; i < n; i++) {
        names[i] = ws_dump_ignored(d, i);
        if (len < sizeof line) {
            if (i == 4 && n > 5) {
                len += (size_t)snprintf(line + len, sizeof line - len, " and %zu more", n - 4);
                len = sizeof line;
            } else {
                len += (size_t)snprintf(line + len, sizeof line - len, "%s %s", i ? "," : "",
                                        names[i]);
            }
        }
    }
    ws_warning w = {.kind = "ignored_rank_files", .detail = line, .nnames = n, .names = names};
    ws_err rc = ws_report_warn(r, &w);
    free(names);
    return rc == WS_OK ? WS_OK : wsi_fail(err, rc, NULL, NULL, -1, "out of memory");
}

ws_err wsi_dumpcheck_bind(wsi_dumpcheck *c, const ws_layout *l, const ws_dump *d,
                          const ws_hash_options *opt, ws_report *r, bool defer, ws_error *err) {
    memset(c, 0, sizeof *c);
    pthread_mutex_init(&c->lock, NULL);
    c->l = l;
    c->d = d;
    c->r = r;
    c->opt = opt;
    c->canon = opt->canon;
    unsigned algos = opt->algos ? opt->algos : WS_ALGO_SHA256;
    c->fast = algos & WS_ALGO_FAST;
    if (c->fast && !opt->key)
        return wsi_fail(err, WS_ERR_ARG, NULL, NULL, -1, "fast digest requested without a key");
    ws_err rc = WS_OK;
    c->key = opt->key;
    if (!c->key) { /* the replica check compares fast digests, whatever the manifest holds */
        rc = ws_fastkey_create(WS_FAST_DEFAULT_SEED, strlen(WS_FAST_DEFAULT_SEED), &c->own_key,
                               err);
        c->key = c->own_key;
    }
    if (rc == WS_OK) rc = ws_plan_create(l, &c->plan, err);
    if (rc == WS_OK && r && ws_dump_ignored_count(d)) rc = warn_ignored(d, r, err);
    if (rc != WS_OK) return rc;
    int tp = c->plan->tp;
    c->src = calloc((size_t)tp + 1, sizeof *c->src);
    c->bound = calloc(c->plan->nl + 1, sizeof *c->bound);
    /* deferred: no piece digested, no padding scanned (the caller's pass does it all) */
    uint8_t *want = c->fast && !defer ? NULL : calloc(c->plan->np + 1, 1);
    if (!c->src || !c->bound || ((!c->fast || defer) && !want))
        rc = wsi_fail(err, WS_ERR_NOMEM, NULL, NULL, -1, "out of memory");
    for (size_t i = 0; want && !defer && i < c->plan->np; i++)
        if (c->plan->twin[i] != i && c->plan->twin[i] != UINT32_MAX)
            want[i] = want[c->plan->twin[i]] = 1;
    for (size_t h = 0; h < c->plan->nh; h++)
        c->total += c->plan->plans[h].rows * c->plan->plans[h].cols *
                    ((algos & WS_ALGO_SHA256 ? 1 : 0) + (c->fast ? 1 : 0));
    for (int rank = tp; rank < ws_dump_rank_count(d); rank++)
        if (ws_dump_rank(d, rank))
            wsi_dumpcheck_report(c, WS_UNEXPECTED, "", NULL, rank, -1, -1,
                                 "a file for rank %d, but the layout has only %d ranks", rank, tp);
    for (int rank = 0; rank < tp && rc == WS_OK; rank++) {
        if (!ws_dump_rank(d, rank)) continue;
        ws_partials *pa = NULL;
        wsi_compute_opts co = {.want = want, .no_padding = defer, .threads = opt->threads,
                               .bound = c->bound};
        rc = ws_source_dump(d, rank, opt->read_mode, &c->src[rank], err);
        if (rc == WS_OK)
            rc = wsi_partials_compute_ex(c->plan, rank, c->src[rank], c->key, c->canon, &co, &pa,
                                         err);
        if (rc == WS_OK && c->pa) {
            rc = ws_partials_merge(c->pa, pa, err);
            ws_partials_free(pa);
        } else if (rc == WS_OK) {
            c->pa = pa;
        }
        if (rc == WS_OK && !defer) { /* elements digested on this rank */
            uint64_t n = 0;
            for (size_t i = 0; i < c->plan->np; i++) {
                const ws_piece *pc = ws_layout_piece(l, i);
                if (ws_layout_local(l, pc->local)->rank == rank &&
                    (want ? want[i] : !pc->replica))
                    n += pc->rows * pc->cols;
            }
            wsi_dumpcheck_progress(c, n);
        }
    }
    free(want);
    if (rc == WS_OK && !c->pa) { /* not one rank file: every rank is missing */
        rc = wsi_partials_alloc((uint32_t)c->plan->np, (uint32_t)c->plan->nl, (uint32_t)tp, &c->pa,
                                err);
        if (rc == WS_OK) {
            memcpy(c->pa->fp, c->plan->fp, WSI_FP_BYTES);
            c->pa->canon = (uint8_t)c->canon;
            snprintf(c->pa->key_id, sizeof c->pa->key_id, "%s", ws_fastkey_id(c->key));
        }
    }
    return rc;
}

ws_err wsi_dumpcheck_build(wsi_dumpcheck *c, ws_error *err) {
    wsi_build_opts bo = {.digests = c->fast, .replica_detail = replica_detail, .ctx = c};
    ws_report *own = c->r ? NULL : ws_report_new();
    if (!c->r && !own) return wsi_fail(err, WS_ERR_NOMEM, NULL, NULL, -1, "out of memory");
    ws_err rc = wsi_partials_build(c->plan, c->pa, "dump", c->r ? c->r : own, &bo, &c->rebuilt,
                                   err);
    ws_report_free(own);
    return rc;
}

ws_err wsi_dumpcheck_open(wsi_dumpcheck *c, const ws_layout *l, const ws_dump *d,
                          const ws_hash_options *opt, ws_report *r, ws_error *err) {
    ws_err rc = wsi_dumpcheck_bind(c, l, d, opt, r, false, err);
    return rc == WS_OK ? wsi_dumpcheck_build(c, err) : rc;
}
