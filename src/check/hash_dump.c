/*
 * Digest the canonical tensors of a layout from the pieces an engine dump holds (see
 * ws_hash_dump in weightsum.h). One work item per canonical tensor, largest first: its
 * replica-0 pieces are swept in canonical order into the digest sink, then each replica is
 * compared with replica 0 of the same rectangle.
 */
#include "digest.h"
#include "dump_resolve.h"

#include <stdlib.h>
#include <string.h>

typedef struct job {
    wsi_dumpview *v;
    const ws_hash_options *opt;
    uint32_t *order;          /* HF indices, largest first */
    ws_manifest_entry *ents;  /* per HF tensor */
    bool *have;               /* per HF tensor: digest computed */
    uint64_t done, total;
    ws_err rc;
    ws_error err;
} job;

/* Let go of the pages that hold rows [0, t_row) of T in each of its pieces: resident memory
 * stays bounded by the work in flight, not by tensor or dump size. Only mappings are dropped,
 * so a page still needed simply faults back in. */
static void release_rows(const wsi_dumpview *v, const wsi_plan *p, uint64_t t_row) {
    for (size_t k = 0; k < p->n_primary; k++) {
        const ws_piece *pc = ws_layout_piece(v->l, p->primary[k]);
        const ws_tensor *t = v->loc[pc->local];
        if (!t || t_row <= pc->t_row0) continue;
        uint64_t rows = t_row - pc->t_row0 < pc->rows ? t_row - pc->t_row0 : pc->rows;
        size_t es = ws_dtype_size(t->dtype);
        const uint8_t *a = (const uint8_t *)t->data + pc->l_row0 * pc->l_cols * es;
        wsi_ckpt_release(ws_dump_rank(v->d, ws_layout_local(v->l, pc->local)->rank), a,
                         rows * pc->l_cols * es);
    }
}

typedef struct sweep_ctx {
    job *j;
    wsi_sink *sink;
    ws_dtype dtype;
    ws_value_stats stats;
    const ws_hf_desc *hf;
    const wsi_plan *plan;
    uint64_t since; /* bytes fed since pages were last let go of */
} sweep_ctx;

static ws_err feed_run(void *arg, const wsi_run *run) {
    sweep_ctx *s = arg;
    const ws_tensor *t = s->j->v->loc[run->local];
    const uint8_t *p = wsi_run_data(s->j->v, run);
    wsi_sink *sink = s->sink;
    sink->release = ws_dump_rank(s->j->v->d, ws_layout_local(s->j->v->l, run->local)->rank);
    wsi_sink_feed(sink, t->dtype, s->j->opt->canon, run->t_at, p, run->n, &s->stats);
    /* Short runs (dim-1 shards, row by row) are let go of in bulk: every 8 MiB, the rows of
     * every piece above the current row. */
    s->since += run->n * ws_dtype_size(t->dtype);
    if (s->since >= (8u << 20)) {
        release_rows(s->j->v, s->plan, run->t_at / (s->plan->cols ? s->plan->cols : 1));
        s->since = 0;
    }
    return WS_OK;
}

static void hole(void *arg, const wsi_hole *h) {
    sweep_ctx *s = arg;
    wsi_dumpview_report(s->j->v, WS_COVERAGE_GAP, s->hf->name, NULL, -1, (int64_t)h->row0,
                        (int64_t)h->row1, "%s: rows %llu..%llu, columns %llu..%llu",
                        h->overlap ? "covered twice" : "covered by no piece",
                        (unsigned long long)h->row0, (unsigned long long)h->row1,
                        (unsigned long long)h->col0, (unsigned long long)h->col1);
}

/* Can every replica-0 piece be read, and do they agree on the canonical dtype? */
static bool usable(job *j, const wsi_plan *p, const ws_hf_desc *hf, ws_dtype *dtype) {
    wsi_dumpview *v = j->v;
    for (size_t i = 0; i < p->n_primary; i++) {
        const ws_piece *pc = ws_layout_piece(v->l, p->primary[i]);
        const ws_local_desc *ld = ws_layout_local(v->l, pc->local);
        if (!v->loc[pc->local]) {
            wsi_dumpview_report(v, WS_MISSING, hf->name, ld->name, ld->rank, (int64_t)pc->t_row0,
                                (int64_t)(pc->t_row0 + pc->rows),
                                "cannot be rebuilt: engine tensor %s on rank %d %s", ld->name,
                                ld->rank, v->why_missing[pc->local]);
            return false;
        }
        ws_dtype dt = v->loc[pc->local]->dtype;
        if (i == 0) *dtype = dt;
        else if (ws_canonical_dtype(dt, j->opt->canon) != ws_canonical_dtype(*dtype, j->opt->canon)) {
            wsi_dumpview_report(v, WS_DTYPE_DIFFERS, hf->name, ld->name, ld->rank, -1, -1,
                                "pieces disagree on dtype: %s here, %s elsewhere",
                                ws_dtype_name(dt), ws_dtype_name(*dtype));
            return false;
        }
    }
    return true;
}

/* Replica k of a rectangle against replica 0 of the same rectangle, in canonical values. */
static void check_copy(job *j, const wsi_plan *p, uint32_t copy, uint8_t *ba, uint8_t *bb) {
    wsi_dumpview *v = j->v;
    const ws_layout *l = v->l;
    const ws_piece *c = ws_layout_piece(l, copy), *o = NULL;
    for (size_t i = 0; i < p->n_primary && !o; i++) {
        const ws_piece *q = ws_layout_piece(l, p->primary[i]);
        if (q->t_row0 == c->t_row0 && q->t_col0 == c->t_col0 && q->rows == c->rows &&
            q->cols == c->cols)
            o = q;
    }
    const ws_local_desc *cd = ws_layout_local(l, c->local);
    const ws_hf_desc *hf = ws_layout_hf(l, c->hf);
    if (!o || !v->loc[c->local] || !v->loc[o->local]) {
        if (o && !v->loc[c->local])
            wsi_dumpview_report(v, WS_MISSING, hf->name, cd->name, cd->rank, (int64_t)c->t_row0,
                                (int64_t)(c->t_row0 + c->rows),
                                "replica %u cannot be checked: engine tensor %s", c->replica,
                                v->why_missing[c->local]);
        return;
    }
    const ws_tensor *tc = v->loc[c->local], *to = v->loc[o->local];
    ws_dtype cdt = ws_canonical_dtype(tc->dtype, j->opt->canon);
    if (cdt != ws_canonical_dtype(to->dtype, j->opt->canon)) {
        wsi_dumpview_report(v, WS_DTYPE_DIFFERS, hf->name, cd->name, cd->rank, -1, -1,
                            "replica %u is %s, replica 0 is %s", c->replica,
                            ws_dtype_name(tc->dtype), ws_dtype_name(to->dtype));
        return;
    }
    ws_diff d;
    ws_diff_init(&d);
    size_t sc = ws_dtype_size(tc->dtype), so = ws_dtype_size(to->dtype);
    uint64_t first_row = 0, last_row = 0, prev = 0;
    for (uint64_t r = 0; r < c->rows; r++) {
        const uint8_t *pc = (const uint8_t *)tc->data + ((c->l_row0 + r) * c->l_cols + c->l_col0) * sc;
        const uint8_t *po = (const uint8_t *)to->data + ((o->l_row0 + r) * o->l_cols + o->l_col0) * so;
        for (uint64_t k = 0; k < c->cols; k += WSI_CHUNK_ELEMS) {
            uint64_t n = c->cols - k < WSI_CHUNK_ELEMS ? c->cols - k : WSI_CHUNK_ELEMS;
            wsi_cast_to_canonical(to->dtype, j->opt->canon, po + k * so, n, ba, NULL);
            wsi_cast_to_canonical(tc->dtype, j->opt->canon, pc + k * sc, n, bb, NULL);
            wsi_diff_update(&d, cdt, r * c->cols + k, ba, bb, n);
        }
        if (d.differ != prev) {
            if (!prev) first_row = r;
            last_row = r;
            prev = d.differ;
        }
    }
    if (!d.differ) return;
    const ws_local_desc *od = ws_layout_local(l, o->local);
    uint64_t fr = c->t_row0 + d.first / c->cols, fc = c->t_col0 + d.first % c->cols;
    wsi_dumpview_report(v, WS_REPLICA_MISMATCH, hf->name, cd->name, cd->rank,
                        (int64_t)(c->t_row0 + first_row), (int64_t)(c->t_row0 + last_row + 1),
                        "replica %u differs from replica 0 (%s on rank %d): %llu of %llu elements; "
                        "first at row %llu, column %llu of %s: %.9g (replica 0) vs %.9g",
                        c->replica, od->name, od->rank, (unsigned long long)d.differ,
                        (unsigned long long)d.compared, (unsigned long long)fr,
                        (unsigned long long)fc, hf->name, d.first_a, d.first_b);
}

static void digest_one(void *arg, size_t i) {
    job *j = arg;
    wsi_dumpview *v = j->v;
    uint32_t h = j->order[i];
    const wsi_plan *p = &v->plans[h];
    const ws_hf_desc *hf = ws_layout_hf(v->l, h);
    if (hf->tied_to) return;
    ws_dtype dtype = WS_F32;
    wsi_sink sink;
    ws_error e;
    uint8_t *ba = malloc((size_t)WSI_CHUNK_ELEMS * 8), *bb = malloc((size_t)WSI_CHUNK_ELEMS * 8);
    ws_err rc = ba && bb ? WS_OK : WS_ERR_NOMEM;
    for (size_t k = 0; k < p->n_copies && rc == WS_OK; k++) check_copy(j, p, p->copies[k], ba, bb);
    if (rc == WS_OK && usable(j, p, hf, &dtype)) {
        rc = wsi_sink_init(&sink, j->opt->algos, ws_canonical_dtype(dtype, j->opt->canon),
                           j->opt->key, &e);
        if (rc == WS_OK) {
            sweep_ctx s = {.j = j, .sink = &sink, .dtype = dtype, .hf = hf, .plan = p};
            if (j->opt->algos == WS_ALGO_FAST) {
                /* The fast digest adds up per piece in any order: no canonical-order walk,
                 * each piece read straight through; the sweep only checks coverage. */
                rc = wsi_sweep(v->l, p, 0, p->rows, NULL, &s, hole);
                for (size_t k = 0; k < p->n_primary && rc == WS_OK; k++)
                    rc = wsi_piece_runs(v->l, p->primary[k], feed_run, &s);
            } else {
                rc = wsi_sweep(v->l, p, 0, p->rows, feed_run, &s, hole);
            }
            ws_manifest_entry *en = &j->ents[h];
            if (rc == WS_OK) rc = wsi_sink_final(&sink, &en->digest, &e);
            if (rc == WS_OK) /* pieces add up to the raw digest: seal with the HF shape */
                rc = wsi_digest_seal(&en->digest, j->opt->key, sink.cdtype, hf->ndim, hf->shape,
                                     hf->name, &e);
            en->stats = s.stats;
            en->name = (char *)hf->name;
            en->dtype = dtype;
            en->canonical_dtype = ws_canonical_dtype(dtype, j->opt->canon);
            en->ndim = hf->ndim;
            memcpy(en->shape, hf->shape, sizeof en->shape);
            j->have[h] = rc == WS_OK;
            wsi_sink_destroy(&sink);
            release_rows(v, p, p->rows);
        }
    }
    free(ba);
    free(bb);
    pthread_mutex_lock(&v->lock);
    if (rc != WS_OK && j->rc == WS_OK) {
        j->rc = rc;
        if (rc == WS_ERR_NOMEM) wsi_fail(&j->err, rc, NULL, hf->name, -1, "out of memory");
        else j->err = e;
    }
    j->done += p->rows * p->cols;
    if (j->opt->progress) j->opt->progress(j->opt->progress_user, j->done, j->total);
    pthread_mutex_unlock(&v->lock);
}

static const wsi_plan *sort_plans; /* for qsort; set under the caller's single thread */
static int cmp_size_desc(const void *a, const void *b) {
    const wsi_plan *x = &sort_plans[*(const uint32_t *)a], *y = &sort_plans[*(const uint32_t *)b];
    uint64_t sx = x->rows * x->cols, sy = y->rows * y->cols;
    return sx < sy ? 1 : sx > sy ? -1 : 0;
}

ws_err wsi_hash_dump_view(wsi_dumpview *v, const ws_hash_options *opt, const char *source,
                          ws_manifest **out, ws_error *err) {
    *out = NULL;
    ws_hash_options o = *opt;
    if (!o.algos) o.algos = WS_ALGO_SHA256;
    if ((o.algos & WS_ALGO_FAST) && !o.key)
        return wsi_fail(err, WS_ERR_ARG, NULL, NULL, -1, "fast digest requested without a key");
    size_t nh = ws_layout_hf_count(v->l);
    job j = {.v = v, .opt = &o};
    j.order = malloc((nh + 1) * sizeof *j.order);
    j.ents = calloc(nh + 1, sizeof *j.ents);
    j.have = calloc(nh + 1, sizeof *j.have);
    ws_err rc = WS_OK;
    if (!j.order || !j.ents || !j.have) rc = wsi_fail(err, WS_ERR_NOMEM, NULL, NULL, -1, "out of memory");
    if (rc == WS_OK) {
        for (size_t h = 0; h < nh; h++) {
            j.order[h] = (uint32_t)h;
            j.total += v->plans[h].rows * v->plans[h].cols;
        }
        static pthread_mutex_t sort_lock = PTHREAD_MUTEX_INITIALIZER;
        pthread_mutex_lock(&sort_lock);
        sort_plans = v->plans;
        qsort(j.order, nh, sizeof *j.order, cmp_size_desc);
        pthread_mutex_unlock(&sort_lock);
        wsi_parallel_for(nh, o.threads, digest_one, &j);
        if (j.rc != WS_OK) {
            rc = j.rc;
            if (err) *err = j.err;
        }
    }
    ws_manifest *m = NULL;
    if (rc == WS_OK) {
        m = ws_manifest_new(o.canon, o.algos, o.key ? ws_fastkey_id(o.key) : NULL, source);
        if (!m) rc = wsi_fail(err, WS_ERR_NOMEM, NULL, NULL, -1, "out of memory");
    }
    for (size_t h = 0; h < nh && rc == WS_OK; h++)
        if (j.have[h] && ws_manifest_add(m, &j.ents[h]) != WS_OK)
            rc = wsi_fail(err, WS_ERR_NOMEM, NULL, NULL, -1, "out of memory");
    free(j.order);
    free(j.ents);
    free(j.have);
    if (rc != WS_OK) {
        ws_manifest_free(m);
        return rc;
    }
    *out = m;
    return WS_OK;
}

ws_err ws_hash_dump(const ws_layout *l, const ws_dump *d, const ws_hash_options *opt,
                    const char *source, ws_manifest **out, ws_report *r, ws_error *err) {
    *out = NULL;
    ws_report *own = r ? NULL : ws_report_new();
    wsi_dumpview v;
    ws_err rc = wsi_dumpview_open(&v, l, d, r ? r : own, err);
    if (rc == WS_OK) rc = wsi_hash_dump_view(&v, opt, source, out, err);
    wsi_dumpview_close(&v);
    ws_report_free(own);
    return rc;
}
