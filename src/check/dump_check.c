/* Checking an engine dump through sources and partials (see dump_check.h). */
#include "dump_check.h"

#include "digest.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void wsi_dumpcheck_report(wsi_dumpcheck *c, ws_status s, const char *tensor, const char *local,
                          int rank, int64_t row0, int64_t row1, const char *fmt, ...) {
    char detail[768];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(detail, sizeof detail, fmt, ap);
    va_end(ap);
    ws_finding f = {.status = s, .tensor = tensor, .local = local, .rank = rank, .row0 = row0,
                    .row1 = row1, .detail = detail};
    pthread_mutex_lock(&c->lock);
    if (c->r) ws_report_add(c->r, &f);
    pthread_mutex_unlock(&c->lock);
}

void wsi_dumpcheck_add(wsi_dumpcheck *c, const ws_finding *f) {
    pthread_mutex_lock(&c->lock);
    if (c->r) ws_report_add(c->r, f);
    pthread_mutex_unlock(&c->lock);
}

static void progress(wsi_dumpcheck *c, uint64_t n) {
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
    snprintf(detail, n,
             "replica %u differs from replica 0 (%s on rank %d): %llu of %llu elements; first at "
             "row %llu, column %llu of %s: %.9g (replica 0) vs %.9g",
             cp->replica, wsi_dumpcheck_local_name(c, op->local), od->rank, (unsigned long long)d.differ,
             (unsigned long long)d.compared, (unsigned long long)fr, (unsigned long long)fc,
             hf->name, d.first_a, d.first_b);
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

ws_err wsi_dumpcheck_open(wsi_dumpcheck *c, const ws_layout *l, const ws_dump *d,
                          const ws_hash_options *opt, ws_report *r, ws_error *err) {
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
    uint8_t *want = c->fast ? NULL : calloc(c->plan->np + 1, 1);
    if (!c->src || !c->bound || (!c->fast && !want))
        rc = wsi_fail(err, WS_ERR_NOMEM, NULL, NULL, -1, "out of memory");
    for (size_t i = 0; want && i < c->plan->np; i++)
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
        wsi_compute_opts co = {.want = want, .threads = opt->threads, .bound = c->bound};
        rc = ws_source_dump(d, rank, WS_READ_DEFAULT, &c->src[rank], err);
        if (rc == WS_OK)
            rc = wsi_partials_compute_ex(c->plan, rank, c->src[rank], c->key, c->canon, &co, &pa,
                                         err);
        if (rc == WS_OK && c->pa) {
            rc = ws_partials_merge(c->pa, pa, err);
            ws_partials_free(pa);
        } else if (rc == WS_OK) {
            c->pa = pa;
        }
        if (rc == WS_OK && c->fast) {
            uint64_t n = 0;
            for (size_t i = 0; i < c->plan->np; i++) {
                const ws_piece *pc = ws_layout_piece(l, i);
                if (!pc->replica && ws_layout_local(l, pc->local)->rank == rank)
                    n += pc->rows * pc->cols;
            }
            progress(c, n);
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
    wsi_build_opts bo = {.digests = c->fast, .replica_detail = replica_detail, .ctx = c};
    ws_report *own = r ? NULL : ws_report_new();
    if (rc == WS_OK && !r && !own) rc = wsi_fail(err, WS_ERR_NOMEM, NULL, NULL, -1, "out of memory");
    if (rc == WS_OK) {
        pthread_mutex_lock(&c->lock); /* (one thread here; the report is shared later) */
        pthread_mutex_unlock(&c->lock);
        rc = wsi_partials_build(c->plan, c->pa, "dump", r ? r : own, &bo, &c->rebuilt, err);
    }
    ws_report_free(own);
    return rc;
}

/* ---- SHA-256: canonical order, read through the sources ------------------------------ */

typedef struct sha_job {
    wsi_dumpcheck *c;
    const ws_manifest_entry **ents; /* rebuilt entries, largest first */
    ws_digest *sha;                  /* per entry */
    ws_value_stats *stats;
    ws_err rc;
    ws_error err;
} sha_job;

typedef struct feed {
    wsi_sink *sink;
    ws_dtype dtype;
    ws_canon canon;
    uint64_t t_at;
    ws_value_stats *stats;
} feed;

static ws_err feed_at(void *arg, uint64_t at, const void *data, uint64_t n) {
    feed *f = arg;
    wsi_sink_feed(f->sink, f->dtype, f->canon, f->t_at + at, data, n, f->stats);
    return WS_OK;
}

typedef struct sweep_ctx {
    const wsi_dumpcheck *c;
    const char *hf_name; /* the canonical tensor swept: its name picks the canonical rule */
    wsi_sink *sink;
    wsi_readbuf buf;
    ws_value_stats stats;
    ws_error err;
} sweep_ctx;

static ws_err feed_run(void *arg, const wsi_run *run) {
    sweep_ctx *s = arg;
    const wsi_src_tensor *t = s->c->bound[run->local];
    feed f = {s->sink, t->dtype, ws_canon_for_tensor(s->hf_name, t->dtype, s->c->canon), run->t_at,
              &s->stats};
    return wsi_dumpcheck_read(s->c, run->local, run->l_at, run->n, &s->buf, feed_at, &f, &s->err);
}

static void sha_one(void *arg, size_t i) {
    sha_job *j = arg;
    wsi_dumpcheck *c = j->c;
    pthread_mutex_lock(&c->lock);
    bool stop = j->rc != WS_OK;
    pthread_mutex_unlock(&c->lock);
    if (stop) return;
    const ws_manifest_entry *en = j->ents[i];
    long h = ws_layout_find_hf(c->l, en->name);
    const wsi_plan *p = &c->plan->plans[h];
    wsi_sink sink;
    sweep_ctx s = {.c = c, .hf_name = en->name, .sink = &sink};
    ws_err rc = wsi_sink_init(&sink, WS_ALGO_SHA256, en->canonical_dtype, NULL, &s.err);
    if (rc == WS_OK) {
        rc = wsi_sweep(c->l, p, 0, p->rows, feed_run, &s, NULL);
        if (rc == WS_ERR_NOMEM && s.err.code != WS_ERR_NOMEM)
            wsi_fail(&s.err, rc, NULL, en->name, -1, "out of memory");
        if (rc == WS_OK) rc = wsi_sink_final(&sink, &j->sha[i], &s.err);
        j->stats[i] = s.stats;
        wsi_sink_destroy(&sink);
    }
    wsi_readbuf_free(&s.buf);
    if (rc != WS_OK) {
        pthread_mutex_lock(&c->lock);
        if (j->rc == WS_OK) {
            j->rc = rc;
            j->err = s.err;
        }
        pthread_mutex_unlock(&c->lock);
    }
    progress(c, p->rows * p->cols);
}

static const ws_manifest_entry **sort_ents;
static uint64_t ent_numel(const ws_manifest_entry *e) {
    uint64_t n = 1;
    for (int d = 0; d < e->ndim; d++) n *= e->shape[d];
    return n;
}
static int cmp_size(const void *a, const void *b) {
    uint64_t x = ent_numel(*(const ws_manifest_entry *const *)a);
    uint64_t y = ent_numel(*(const ws_manifest_entry *const *)b);
    return x < y ? 1 : x > y ? -1 : 0;
}

ws_err wsi_dumpcheck_manifest(wsi_dumpcheck *c, const char *source, ws_manifest **out,
                              ws_error *err) {
    *out = NULL;
    unsigned algos = c->opt->algos ? c->opt->algos : WS_ALGO_SHA256;
    size_t n = ws_manifest_count(c->rebuilt);
    sha_job j = {.c = c, .rc = WS_OK};
    j.ents = calloc(n + 1, sizeof *j.ents);
    j.sha = calloc(n + 1, sizeof *j.sha);
    j.stats = calloc(n + 1, sizeof *j.stats);
    ws_err rc = j.ents && j.sha && j.stats
                    ? WS_OK
                    : wsi_fail(err, WS_ERR_NOMEM, NULL, NULL, -1, "out of memory");
    for (size_t i = 0; i < n && rc == WS_OK; i++) j.ents[i] = ws_manifest_entry_at(c->rebuilt, i);
    if (rc == WS_OK && (algos & WS_ALGO_SHA256)) {
        static pthread_mutex_t sort_lock = PTHREAD_MUTEX_INITIALIZER;
        pthread_mutex_lock(&sort_lock);
        sort_ents = j.ents;
        qsort(j.ents, n, sizeof *j.ents, cmp_size);
        pthread_mutex_unlock(&sort_lock);
        wsi_parallel_for(n, c->opt->threads, sha_one, &j);
        if (j.rc != WS_OK) {
            rc = j.rc;
            if (err) *err = j.err;
        }
    }
    ws_manifest *m = NULL;
    if (rc == WS_OK) {
        m = ws_manifest_new(c->canon, algos, c->opt->key ? ws_fastkey_id(c->opt->key) : NULL,
                            source);
        if (!m) rc = wsi_fail(err, WS_ERR_NOMEM, NULL, NULL, -1, "out of memory");
    }
    for (size_t i = 0; i < n && rc == WS_OK; i++) {
        ws_manifest_entry e = *j.ents[i];
        e.digest.algos = algos;
        if (algos & WS_ALGO_SHA256) {
            memcpy(e.digest.sha256, j.sha[i].sha256, 32);
            e.stats = j.stats[i];
        }
        if (ws_manifest_add(m, &e) != WS_OK)
            rc = wsi_fail(err, WS_ERR_NOMEM, NULL, NULL, -1, "out of memory");
    }
    free(j.ents);
    free(j.sha);
    free(j.stats);
    if (rc != WS_OK) {
        ws_manifest_free(m);
        return rc;
    }
    *out = m;
    return WS_OK;
}
