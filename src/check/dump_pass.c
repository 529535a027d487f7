/*
 * ws_hash_dump in one read of every byte (see wsi_hash_dump_pass in dump_check.h).
 *
 * The dump is bound once (dump_check.c, deferred: nothing read yet). Local tensors and the
 * canonical tensors whose pieces they hold form groups (a fused qkv_proj and its q, k, v; a
 * dim-1 shard's ranks and their tensor); each group is one job. Within a group the canonical
 * tensors' runs (wsi_sweep: canonical order, which SHA-256 needs) are merged into one schedule
 * that also walks every local tensor in its own order, so the same bytes feed, as they pass:
 * the canonical SHA-256, the piece's fast partial (at its global unit indices) and the local
 * tensor's own digest. Bytes no run reads (replica pieces, padding rows, pieces of a tensor not
 * rebuilt) are read as segments, in local order, where they fall between runs or after the
 * last. Small runs (a dim-1 shard's rows) are batched: the rows of each local tensor in a batch
 * are read by one read into a reused buffer, not one read per row. Only when a local tensor's
 * bytes cannot be met in its order (its canonical tensors' runs cross) is it read a second
 * time, for its own digest.
 */
#include "dump_check.h"

#include "digest.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SMALL_RUN (256u << 10) /* bytes: runs below are batched, larger ones streamed */
#define BATCH (1u << 20)       /* bytes of small runs read per batch: stays in L2 until fed */

enum { E_RUN = 0, E_SEG = 1 };

/* One step of a group's schedule. */
typedef struct entry {
    uint8_t kind;
    uint8_t feed_local; /* RUN: the local tensor's own digest takes it (in its order);
                           SEG: likewise; reset: start that digest again first */
    uint8_t reset;
    uint32_t local;
    uint32_t slot;      /* RUN: its canonical tensor's slot in the group */
    uint32_t piece;     /* RUN */
    uint64_t t_at;      /* RUN */
    uint64_t l_at, n;   /* RUN: the run; SEG: [l_at, l_at + n) of the local tensor */
    uint64_t parts_from; /* SEG: pieces and padding take its elements from here on */
} entry;

/* Per local tensor of the pass. */
typedef struct lstate {
    uint64_t cursor;    /* elements met in order so far */
    uint64_t done_upto; /* broken: pieces and padding saw everything below */
    bool broken;
    bool has_sink;
    wsi_sink sink;
    uint64_t pad_bad, pad_first, pad_last;
} lstate;

typedef struct pass {
    wsi_dumpcheck *c;
    bool sha;
    unsigned lalgos;
    uint8_t *want;      /* per piece: fast partial wanted */
    uint8_t *sched;     /* per piece: read by runs (replica 0 of a swept tensor) */
    uint8_t *swept;     /* per HF: its SHA-256 is computed */
    ws_dtype *hf_cdt;   /* per HF: canonical dtype (swept) */
    ws_digest *hf_sha;
    ws_value_stats *hf_stats;
    lstate *ls;
    size_t *lp0;        /* per local: its pieces lp[lp0[li] .. lp0[li + 1]) */
    uint32_t *lp;
    size_t *g0;         /* per group: members gm[g0[g] .. g0[g + 1]), HF as h, locals as nh + li */
    uint32_t *gm;
    size_t ng;
    size_t *order;      /* groups, largest first */
    ws_digest **local;
    ws_err rc;
    ws_error err;
} pass;

typedef struct worker {
    pass *ps;
    uint8_t *scratch;
    wsi_sink *hf;       /* per slot */
    uint32_t *hfs;      /* slot -> HF */
    size_t nhf;
    wsi_readbuf buf;
    uint8_t *batch;
    size_t batch_cap;
    ws_error err;
} worker;

static const wsi_src_tensor *bound_of(const pass *ps, uint32_t li) { return ps->c->bound[li]; }

static const ws_source *src_of(const pass *ps, uint32_t li) {
    return ps->c->src[ws_layout_local(ps->c->l, li)->rank];
}

/* ---- feeding -------------------------------------------------------------------------- */

/* The canonical rule of a piece's bytes: the policy as its canonical tensor takes it
 * (ws_canon_for_tensor: block-FP8 scales and fp32 router buffers keep their stored bytes). */
static ws_canon piece_rule(const wsi_dumpcheck *c, uint32_t pi, ws_dtype dt) {
    return ws_canon_for_tensor(ws_layout_hf(c->l, ws_layout_piece(c->l, pi)->hf)->name, dt,
                               c->canon);
}

/* The rule of a local tensor's own digest: on the engine's name, as protocol_ranks.c does. */
static ws_canon local_rule(const wsi_dumpcheck *c, const wsi_src_tensor *t) {
    return ws_canon_for_tensor(t->name, t->dtype, c->canon);
}

static void feed_piece(worker *w, uint32_t pi, ws_dtype dt, uint64_t hf_at, const void *data,
                       uint64_t n) {
    const wsi_dumpcheck *c = w->ps->c;
    wsi_piece_part *pp = &c->pa->pieces[pi];
    ws_canon rule = piece_rule(c, pi, dt);
    wsi_sink s = {.algos = WS_ALGO_FAST, .cdtype = ws_canonical_dtype(dt, rule),
                  .key = c->key, .fast = pp->fast, .scratch = w->scratch};
    wsi_sink_feed(&s, dt, rule, hf_at, data, n, &pp->stats);
    pp->fast = s.fast;
}

static void take_run(worker *w, const entry *e, uint64_t k, const void *data, uint64_t m) {
    pass *ps = w->ps;
    const wsi_src_tensor *t = bound_of(ps, e->local);
    ws_dtype dt = t->dtype;
    wsi_sink *hf = &w->hf[e->slot];
    if (hf->sha)
        wsi_sink_feed(hf, dt, piece_rule(ps->c, e->piece, dt), e->t_at + k, data, m,
                      &ps->hf_stats[w->hfs[e->slot]]);
    if (ps->want[e->piece]) feed_piece(w, e->piece, dt, e->t_at + k, data, m);
    lstate *ls = &ps->ls[e->local];
    if (e->feed_local && ls->has_sink)
        wsi_sink_feed(&ls->sink, dt, local_rule(ps->c, t), e->l_at + k, data, m, NULL);
}

typedef struct run_ctx {
    worker *w;
    const entry *e;
} run_ctx;

static ws_err run_chunk(void *arg, uint64_t at, const void *data, uint64_t n) {
    run_ctx *r = arg;
    take_run(r->w, r->e, at, data, n);
    return WS_OK;
}

typedef struct seg_ctx {
    worker *w;
    const entry *e;
    uint64_t lcols;     /* the local tensor's view columns */
} seg_ctx;

static ws_err seg_chunk(void *arg, uint64_t at, const void *data, uint64_t m) {
    seg_ctx *g = arg;
    pass *ps = g->w->ps;
    const wsi_dumpcheck *c = ps->c;
    const entry *e = g->e;
    uint32_t li = e->local;
    const wsi_src_tensor *t = bound_of(ps, li);
    size_t es = ws_dtype_size(t->dtype);
    const uint8_t *p = data;
    uint64_t x = e->l_at + at;
    lstate *ls = &ps->ls[li];
    if (e->feed_local && ls->has_sink)
        wsi_sink_feed(&ls->sink, t->dtype, local_rule(c, t), x, data, m, NULL);
    uint64_t lo = x > e->parts_from ? x : e->parts_from, hi = x + m;
    if (lo >= hi) return WS_OK;
    for (size_t k = ps->lp0[li]; k < ps->lp0[li + 1]; k++) {
        uint32_t pi = ps->lp[k];
        if (ps->sched[pi] || !ps->want[pi]) continue;
        const ws_piece *pc = ws_layout_piece(c->l, pi);
        if (pc->cols == pc->l_cols && pc->cols == pc->t_cols) { /* contiguous on both sides */
            uint64_t a = pc->l_row0 * pc->l_cols, b = a + pc->rows * pc->cols;
            uint64_t s = a > lo ? a : lo, f = b < hi ? b : hi;
            if (s < f) feed_piece(g->w, pi, t->dtype, pc->t_row0 * pc->t_cols + (s - a), p + (s - x) * es, f - s);
            continue;
        }
        if (pc->rows == 0 || pc->cols == 0) continue;
        uint64_t r0 = lo / pc->l_cols, r1 = (hi - 1) / pc->l_cols;
        if (r0 < pc->l_row0) r0 = pc->l_row0;
        if (r1 > pc->l_row0 + pc->rows - 1) r1 = pc->l_row0 + pc->rows - 1;
        for (uint64_t r = r0; r <= r1 && r0 <= r1; r++) {
            uint64_t a = r * pc->l_cols + pc->l_col0, b = a + pc->cols;
            uint64_t s = a > lo ? a : lo, f = b < hi ? b : hi;
            if (s < f)
                feed_piece(g->w, pi, t->dtype,
                           (pc->t_row0 + r - pc->l_row0) * pc->t_cols + pc->t_col0 + (s - a),
                           p + (s - x) * es, f - s);
        }
    }
    const uint8_t *cov = c->plan->covered[li];
    if (ws_layout_zero_padding(c->l) && cov && g->lcols) {
        for (uint64_t r = lo / g->lcols; r * g->lcols < hi; r++) {
            if (cov[r]) continue;
            uint64_t a = r * g->lcols, b = a + g->lcols;
            uint64_t s = a > lo ? a : lo, f = b < hi ? b : hi;
            bool zero = true;
            for (const uint8_t *q = p + (s - x) * es, *end = p + (f - x) * es; q < end && zero; q++)
                zero = *q == 0;
            if (!zero && (ls->pad_bad == 0 || r != ls->pad_last)) {
                if (ls->pad_bad == 0) ls->pad_first = r;
                ls->pad_bad++;
                ls->pad_last = r;
            }
        }
    }
    return WS_OK;
}

/* ---- the schedule of a group ---------------------------------------------------------- */

typedef struct vec {
    entry *v;
    size_t n, cap;
} vec;

static bool push(vec *q, const entry *e) {
    if (q->n == q->cap) {
        size_t cap = q->cap ? 2 * q->cap : 64;
        entry *g = realloc(q->v, cap * sizeof *g);
        if (!g) return false;
        q->v = g;
        q->cap = cap;
    }
    q->v[q->n++] = *e;
    return true;
}

typedef struct collect {
    vec *q;
    uint32_t slot;
    bool nomem;
} collect;

static ws_err collect_run(void *arg, const wsi_run *r) {
    collect *k = arg;
    entry e = {.kind = E_RUN, .local = r->local, .slot = k->slot, .piece = r->piece,
               .t_at = r->t_at, .l_at = r->l_at, .n = r->n};
    if (!push(k->q, &e)) {
        k->nomem = true;
        return WS_ERR_NOMEM;
    }
    return WS_OK;
}

/* No run still to come reads [from, to) of local li: it may be read now, as a segment. */
static bool gap_free(const pass *ps, uint32_t li, uint64_t from, uint64_t to) {
    const ws_layout *l = ps->c->l;
    for (size_t k = ps->lp0[li]; k < ps->lp0[li + 1]; k++) {
        const ws_piece *pc = ws_layout_piece(l, ps->lp[k]);
        if (!ps->sched[ps->lp[k]] || pc->rows == 0 || pc->cols == 0) continue;
        uint64_t a = pc->l_row0 * pc->l_cols + pc->l_col0;
        uint64_t b = (pc->l_row0 + pc->rows - 1) * pc->l_cols + pc->l_col0 + pc->cols;
        if (a < to && b > from) return false;
    }
    return true;
}

/* Merge the runs of the group's canonical tensors (each in its canonical order) so that every
 * local tensor is met in its own order where it can be; then the segments left. */
static ws_err schedule(worker *w, const uint32_t *locals, size_t nloc, vec *out) {
    pass *ps = w->ps;
    const wsi_dumpcheck *c = ps->c;
    vec *runs = calloc(w->nhf + 1, sizeof *runs);
    size_t *head = calloc(w->nhf + 1, sizeof *head);
    ws_err rc = runs && head ? WS_OK : WS_ERR_NOMEM;
    for (size_t s = 0; s < w->nhf && rc == WS_OK; s++) {
        collect k = {.q = &runs[s], .slot = (uint32_t)s};
        const wsi_plan *p = &c->plan->plans[w->hfs[s]];
        rc = wsi_sweep(c->l, p, 0, p->rows, collect_run, &k, NULL);
        if (k.nomem) rc = WS_ERR_NOMEM;
    }
    while (rc == WS_OK) {
        bool progress = false, left = false;
        for (size_t s = 0; s < w->nhf && rc == WS_OK; s++) {
            for (; head[s] < runs[s].n; head[s]++) {
                entry e = runs[s].v[head[s]];
                lstate *ls = &ps->ls[e.local];
                if (!ls->broken && e.l_at != ls->cursor) break;
                e.feed_local = !ls->broken;
                if (!ls->broken) ls->cursor += e.n;
                if (!push(out, &e)) rc = WS_ERR_NOMEM;
                progress = true;
            }
            if (head[s] < runs[s].n) left = true;
        }
        if (!left || rc != WS_OK) break;
        if (progress) continue;
        /* Every next run waits for its local tensor: read ahead what no run needs, or give up
         * that tensor's order (its own digest then reads it again at the end). */
        for (size_t s = 0; s < w->nhf; s++) {
            if (head[s] >= runs[s].n) continue;
            const entry *e = &runs[s].v[head[s]];
            lstate *ls = &ps->ls[e->local];
            if (e->l_at > ls->cursor && gap_free(ps, e->local, ls->cursor, e->l_at)) {
                entry g = {.kind = E_SEG, .feed_local = 1, .local = e->local, .l_at = ls->cursor,
                           .n = e->l_at - ls->cursor, .parts_from = ls->cursor};
                ls->cursor = e->l_at;
                if (!push(out, &g)) rc = WS_ERR_NOMEM;
            } else {
                ls->broken = true;
                ls->done_upto = ls->cursor;
            }
            break;
        }
    }
    for (size_t s = 0; runs && s < w->nhf; s++) free(runs[s].v);
    free(runs);
    free(head);
    for (size_t k = 0; k < nloc && rc == WS_OK; k++) {
        uint32_t li = locals[k];
        lstate *ls = &ps->ls[li];
        uint64_t numel = bound_of(ps, li)->numel;
        entry g = {.kind = E_SEG, .feed_local = 1, .local = li};
        if (ls->broken) {
            /* its own digest starts again from 0; pieces and padding from where they stopped */
            g.reset = ls->has_sink;
            g.l_at = ls->has_sink ? 0 : ls->done_upto;
            g.feed_local = ls->has_sink;
            g.parts_from = ls->done_upto;
        } else {
            g.l_at = g.parts_from = ls->cursor;
        }
        g.n = numel - g.l_at;
        if (g.n && !push(out, &g)) rc = WS_ERR_NOMEM;
    }
    return rc;
}

/* ---- executing it --------------------------------------------------------------------- */

static ws_err grow(worker *w, size_t n, ws_error *err) {
    if (w->batch_cap >= n) return WS_OK;
    uint8_t *p = realloc(w->batch, n);
    if (!p) return wsi_fail(err, WS_ERR_NOMEM, NULL, NULL, -1, "out of memory");
    w->batch = p;
    w->batch_cap = n;
    return WS_OK;
}

static size_t esize(const pass *ps, const entry *e) { return ws_dtype_size(bound_of(ps, e->local)->dtype); }

/* Small runs e[0..n): each local tensor's runs read by one read of their span (when the span
 * is not much more than the runs), else run by run; then fed in schedule order. */
static ws_err run_batch(worker *w, const entry *e, size_t n, ws_error *err) {
    pass *ps = w->ps;
    size_t *off = malloc(n * sizeof *off);
    uint32_t *loc = malloc(n * sizeof *loc);
    if (!off || !loc) {
        free(off);
        free(loc);
        return wsi_fail(err, WS_ERR_NOMEM, NULL, NULL, -1, "out of memory");
    }
    size_t nloc = 0, used = 0;
    ws_err rc = WS_OK;
    for (size_t i = 0; i < n; i++) {
        size_t k = 0;
        while (k < nloc && loc[k] != e[i].local) k++;
        if (k == nloc) loc[nloc++] = e[i].local;
    }
    for (size_t k = 0; k < nloc && rc == WS_OK; k++) {
        uint32_t li = loc[k];
        const wsi_src_tensor *t = bound_of(ps, li);
        size_t es = ws_dtype_size(t->dtype);
        uint64_t lo = UINT64_MAX, hi = 0, sum = 0;
        for (size_t i = 0; i < n; i++)
            if (e[i].local == li) {
                if (e[i].l_at < lo) lo = e[i].l_at;
                if (e[i].l_at + e[i].n > hi) hi = e[i].l_at + e[i].n;
                sum += e[i].n;
            }
        bool span = (hi - lo) <= 2 * sum + (64u << 10) / es;
        size_t need = (size_t)((span ? hi - lo : sum) * es);
        rc = grow(w, used + need, err);
        if (rc != WS_OK) break;
        if (span) {
            rc = wsi_source_read(src_of(ps, li), t, lo, hi - lo, w->batch + used, &w->buf, err);
            for (size_t i = 0; i < n; i++)
                if (e[i].local == li) off[i] = used + (size_t)((e[i].l_at - lo) * es);
        } else {
            size_t at = used;
            for (size_t i = 0; i < n && rc == WS_OK; i++)
                if (e[i].local == li) {
                    rc = wsi_source_read(src_of(ps, li), t, e[i].l_at, e[i].n, w->batch + at, &w->buf, err);
                    off[i] = at;
                    at += (size_t)(e[i].n * es);
                }
        }
        used += need;
    }
    for (size_t i = 0; i < n && rc == WS_OK; i++) take_run(w, &e[i], 0, w->batch + off[i], e[i].n);
    free(off);
    free(loc);
    return rc;
}

static ws_err lsink_open(worker *w, uint32_t li, ws_error *err) {
    pass *ps = w->ps;
    lstate *ls = &ps->ls[li];
    ls->has_sink = false;
    if (!ps->lalgos) return WS_OK;
    const wsi_src_tensor *t = bound_of(ps, li);
    ws_err rc = wsi_sink_init_shared(&ls->sink, ps->lalgos,
                                     ws_canonical_dtype(t->dtype, local_rule(ps->c, t)),
                                     ps->c->key, w->scratch, err);
    ls->has_sink = rc == WS_OK;
    return rc;
}

static ws_err execute(worker *w, const vec *q, ws_error *err) {
    pass *ps = w->ps;
    ws_err rc = WS_OK;
    for (size_t i = 0; i < q->n && rc == WS_OK;) {
        const entry *e = &q->v[i];
        const wsi_src_tensor *t = bound_of(ps, e->local);
        const ws_source *s = src_of(ps, e->local);
        if (e->kind == E_SEG) {
            if (e->reset) {
                wsi_sink_destroy_shared(&ps->ls[e->local].sink);
                rc = lsink_open(w, e->local, err);
            }
            const ws_local_desc *ld = ws_layout_local(ps->c->l, e->local);
            uint64_t rows, cols;
            wsi_view(ld->ndim, ld->shape, &rows, &cols);
            seg_ctx g = {.w = w, .e = e, .lcols = cols};
            if (rc == WS_OK)
                rc = wsi_source_rect(s, t, 0, e->l_at, 1, e->n, t->numel, &w->buf, seg_chunk, &g, err);
            i++;
            continue;
        }
        if (e->n * esize(ps, e) >= SMALL_RUN) {
            run_ctx r = {w, e};
            rc = wsi_source_rect(s, t, 0, e->l_at, 1, e->n, t->numel, &w->buf, run_chunk, &r, err);
            i++;
            continue;
        }
        size_t j = i;
        uint64_t bytes = 0;
        while (j < q->n && q->v[j].kind == E_RUN && q->v[j].n * esize(ps, &q->v[j]) < SMALL_RUN &&
               (j == i || bytes + q->v[j].n * esize(ps, &q->v[j]) <= BATCH)) {
            bytes += q->v[j].n * esize(ps, &q->v[j]);
            j++;
        }
        rc = run_batch(w, &q->v[i], j - i, err);
        i = j;
    }
    return rc;
}

/* ---- one group ------------------------------------------------------------------------ */

static uint64_t first_local_at(const wsi_dumpcheck *c, uint32_t h) {
    const wsi_plan *p = &c->plan->plans[h];
    uint64_t best = UINT64_MAX;
    for (size_t k = 0; k < p->n_primary; k++) {
        const ws_piece *pc = ws_layout_piece(c->l, p->primary[k]);
        uint64_t a = pc->l_row0 * pc->l_cols + pc->l_col0;
        if (a < best) best = a;
    }
    return best;
}

static ws_err group_run(worker *w, size_t g, ws_error *err) {
    pass *ps = w->ps;
    wsi_dumpcheck *c = ps->c;
    size_t nh = c->plan->nh, m = ps->g0[g + 1] - ps->g0[g];
    const uint32_t *mem = &ps->gm[ps->g0[g]];
    uint32_t *locals = malloc((m + 1) * sizeof *locals);
    w->hfs = malloc((m + 1) * sizeof *w->hfs);
    w->hf = calloc(m + 1, sizeof *w->hf);
    w->nhf = 0;
    size_t nloc = 0;
    vec q = {0};
    ws_err rc = locals && w->hfs && w->hf ? WS_OK
                                          : wsi_fail(err, WS_ERR_NOMEM, NULL, NULL, -1, "out of memory");
    for (size_t k = 0; k < m && rc == WS_OK; k++) {
        if (mem[k] < nh && ps->swept[mem[k]]) w->hfs[w->nhf++] = mem[k];
        else if (mem[k] >= nh && bound_of(ps, mem[k] - (uint32_t)nh)) locals[nloc++] = mem[k] - (uint32_t)nh;
    }
    /* canonical tensors in the order their bytes sit in the local tensors (q, k, v) */
    for (size_t i = 1; i < w->nhf; i++) {
        uint32_t v = w->hfs[i];
        size_t j = i;
        while (j > 0 && first_local_at(c, w->hfs[j - 1]) > first_local_at(c, v)) {
            w->hfs[j] = w->hfs[j - 1];
            j--;
        }
        w->hfs[j] = v;
    }
    for (size_t s = 0; s < w->nhf && rc == WS_OK; s++)
        rc = wsi_sink_init_shared(&w->hf[s], WS_ALGO_SHA256, ps->hf_cdt[w->hfs[s]], NULL, w->scratch, err);
    for (size_t k = 0; k < nloc && rc == WS_OK; k++) rc = lsink_open(w, locals[k], err);
    if (rc == WS_OK) {
        rc = schedule(w, locals, nloc, &q);
        if (rc == WS_ERR_NOMEM) wsi_fail(err, rc, NULL, NULL, -1, "out of memory");
    }
    if (rc == WS_OK) rc = execute(w, &q, err);
    free(q.v);
    uint64_t done = 0;
    for (size_t s = 0; s < w->nhf; s++) {
        uint32_t h = w->hfs[s];
        if (rc == WS_OK && w->hf[s].sha) rc = wsi_sink_final(&w->hf[s], &ps->hf_sha[h], err);
        wsi_sink_destroy_shared(&w->hf[s]);
        done += c->plan->plans[h].rows * c->plan->plans[h].cols;
    }
    for (size_t k = 0; k < nloc; k++) {
        uint32_t li = locals[k];
        lstate *ls = &ps->ls[li];
        const wsi_src_tensor *t = bound_of(ps, li);
        if (ls->has_sink && rc == WS_OK) {
            ws_digest dg;
            rc = wsi_sink_final(&ls->sink, &dg, err);
            if (rc == WS_OK) rc = wsi_digest_seal(&dg, c->key, ls->sink.cdtype, t->ndim, t->shape, t->name, err);
            const ws_source *s = src_of(ps, li);
            size_t idx = (size_t)(t - s->t);
            int rank = ws_layout_local(c->l, li)->rank;
            const ws_ckpt *ck = ws_dump_rank(c->d, rank);
            if (rc == WS_OK && ps->local && idx < ws_ckpt_count(ck) &&
                strcmp(ws_ckpt_tensor(ck, idx)->name, t->name) == 0)
                ps->local[rank][idx] = dg;
        }
        if (ls->has_sink) wsi_sink_destroy_shared(&ls->sink);
        ls->has_sink = false;
        wsi_local_fact *f = &c->pa->locals[li];
        const uint8_t *cov = c->plan->covered[li];
        if (ws_layout_zero_padding(c->l) && cov) {
            const ws_local_desc *ld = ws_layout_local(c->l, li);
            uint64_t rows, cols;
            wsi_view(ld->ndim, ld->shape, &rows, &cols);
            bool any = false;
            for (uint64_t r = 0; r < rows; r++)
                if (!cov[r]) {
                    if (!any) f->pad0 = r;
                    any = true;
                    f->pad1 = r + 1;
                }
            f->pad_bad = ls->pad_bad;
            f->pad_first = ls->pad_first;
        }
        for (size_t k2 = ps->lp0[li]; k2 < ps->lp0[li + 1] && rc == WS_OK; k2++) {
            uint32_t pi = ps->lp[k2];
            if (!ps->want[pi]) continue;
            const ws_piece *pc = ws_layout_piece(c->l, pi);
            wsi_piece_part *pp = &c->pa->pieces[pi];
            rc = wsi_piece_seal(c->l, pc, c->key,
                                ws_canonical_dtype(t->dtype, piece_rule(c, pi, t->dtype)),
                                &pp->fast, err);
            pp->done = 1;
            if (c->fast && !pc->replica) done += pc->rows * pc->cols;
        }
    }
    free(locals);
    free(w->hfs);
    free(w->hf);
    w->hfs = NULL;
    w->hf = NULL;
    if (rc == WS_OK) wsi_dumpcheck_progress(c, done);
    return rc;
}

static void group_item(void *arg, size_t i) {
    pass *ps = arg;
    wsi_dumpcheck *c = ps->c;
    pthread_mutex_lock(&c->lock);
    bool stop = ps->rc != WS_OK;
    pthread_mutex_unlock(&c->lock);
    if (stop) return;
    worker w = {.ps = ps};
    ws_err rc = WS_OK;
    w.scratch = malloc((size_t)WSI_CHUNK_ELEMS * 8);
    if (!w.scratch) rc = wsi_fail(&w.err, WS_ERR_NOMEM, NULL, NULL, -1, "out of memory");
    if (rc == WS_OK) rc = group_run(&w, ps->order[i], &w.err);
    free(w.scratch);
    free(w.batch);
    wsi_readbuf_free(&w.buf);
    if (rc != WS_OK) {
        pthread_mutex_lock(&c->lock);
        if (ps->rc == WS_OK) {
            ps->rc = rc;
            ps->err = w.err;
        }
        pthread_mutex_unlock(&c->lock);
    }
}

/* ---- groups --------------------------------------------------------------------------- */

static uint32_t find(uint32_t *up, uint32_t x) {
    while (up[x] != x) x = up[x] = up[up[x]];
    return x;
}

static const uint64_t *sort_bytes; /* qsort context, guarded by sort_lock */
static pthread_mutex_t sort_lock = PTHREAD_MUTEX_INITIALIZER;
static int larger(const void *a, const void *b) {
    uint64_t x = sort_bytes[*(const size_t *)a], y = sort_bytes[*(const size_t *)b];
    if (x != y) return x < y ? 1 : -1;
    return *(const size_t *)a < *(const size_t *)b ? -1 : 1;
}

static ws_err make_groups(pass *ps, ws_error *err) {
    const wsi_dumpcheck *c = ps->c;
    const ws_layout *l = c->l;
    size_t nh = c->plan->nh, nl = c->plan->nl, np = c->plan->np, nn = nh + nl;
    uint32_t *up = malloc((nn + 1) * sizeof *up);
    size_t *gid = malloc((nn + 1) * sizeof *gid);
    ps->lp0 = calloc(nl + 2, sizeof *ps->lp0);
    ps->lp = malloc((np + 1) * sizeof *ps->lp);
    ps->g0 = calloc(nn + 2, sizeof *ps->g0);
    ps->gm = malloc((nn + 1) * sizeof *ps->gm);
    uint64_t *bytes = calloc(nn + 1, sizeof *bytes);
    ps->order = malloc((nn + 1) * sizeof *ps->order);
    ws_err rc = WS_OK;
    if (!up || !gid || !ps->lp0 || !ps->lp || !ps->g0 || !ps->gm || !bytes || !ps->order)
        rc = wsi_fail(err, WS_ERR_NOMEM, NULL, NULL, -1, "out of memory");
    for (size_t i = 0; rc == WS_OK && i < nn; i++) up[i] = (uint32_t)i;
    for (size_t i = 0; rc == WS_OK && i < np; i++) {
        const ws_piece *pc = ws_layout_piece(l, i);
        uint32_t a = find(up, pc->hf), b = find(up, (uint32_t)(nh + pc->local));
        if (a != b) up[a] = b;
        ps->lp0[pc->local + 1]++;
    }
    for (size_t li = 0; rc == WS_OK && li < nl; li++) ps->lp0[li + 1] += ps->lp0[li];
    size_t *lfill = rc == WS_OK ? calloc(nl + 1, sizeof *lfill) : NULL;
    if (rc == WS_OK && !lfill) rc = wsi_fail(err, WS_ERR_NOMEM, NULL, NULL, -1, "out of memory");
    for (size_t i = 0; rc == WS_OK && i < np; i++) {
        uint32_t li = ws_layout_piece(l, i)->local;
        ps->lp[ps->lp0[li] + lfill[li]++] = (uint32_t)i;
    }
    free(lfill);
    /* group ids in order of their roots; members listed per group */
    for (size_t i = 0; rc == WS_OK && i < nn; i++) gid[i] = SIZE_MAX;
    ps->ng = 0;
    for (size_t i = 0; rc == WS_OK && i < nn; i++) {
        uint32_t r = find(up, (uint32_t)i);
        if (gid[r] == SIZE_MAX) gid[r] = ps->ng++;
        ps->g0[gid[r] + 1]++;
        if (i >= nh && c->bound[i - nh]) bytes[gid[r]] += c->bound[i - nh]->numel;
    }
    for (size_t g = 0; rc == WS_OK && g < ps->ng; g++) ps->g0[g + 1] += ps->g0[g];
    size_t *fill = rc == WS_OK ? calloc(ps->ng + 1, sizeof *fill) : NULL;
    if (rc == WS_OK && !fill) rc = wsi_fail(err, WS_ERR_NOMEM, NULL, NULL, -1, "out of memory");
    for (size_t i = 0; rc == WS_OK && i < nn; i++) {
        size_t g = gid[find(up, (uint32_t)i)];
        ps->gm[ps->g0[g] + fill[g]++] = (uint32_t)i;
    }
    free(fill);
    for (size_t g = 0; rc == WS_OK && g < ps->ng; g++) ps->order[g] = g;
    if (rc == WS_OK) {
        pthread_mutex_lock(&sort_lock);
        sort_bytes = bytes;
        qsort(ps->order, ps->ng, sizeof *ps->order, larger);
        pthread_mutex_unlock(&sort_lock);
    }
    free(up);
    free(gid);
    free(bytes);
    return rc;
}

/* ---- the entry point ------------------------------------------------------------------ */

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

static void pass_free(pass *ps) {
    free(ps->want);
    free(ps->sched);
    free(ps->swept);
    free(ps->hf_cdt);
    free(ps->hf_sha);
    free(ps->hf_stats);
    free(ps->ls);
    free(ps->lp0);
    free(ps->lp);
    free(ps->g0);
    free(ps->gm);
    free(ps->order);
}

ws_err wsi_dumpcheck_pass(wsi_dumpcheck *c, const ws_layout *l, const ws_dump *d,
                          const ws_hash_options *opt, ws_report *r, const char *source,
                          ws_manifest **out, unsigned local_algos, ws_digest **local,
                          ws_error *err) {
    *out = NULL;
    ws_err rc = wsi_dumpcheck_bind(c, l, d, opt, r, true, err);
    unsigned algos = opt->algos ? opt->algos : WS_ALGO_SHA256;
    pass ps = {.c = c, .sha = algos & WS_ALGO_SHA256, .lalgos = local_algos, .local = local};
    ws_manifest *pre = NULL;
    if (rc == WS_OK) { /* what can be rebuilt: structure only, no finding said yet */
        wsi_build_opts bo = {.digests = false};
        rc = wsi_partials_build(c->plan, c->pa, "dump", NULL, &bo, &pre, err);
    }
    size_t np = c->plan ? c->plan->np : 0, nh = c->plan ? c->plan->nh : 0, nl = c->plan ? c->plan->nl : 0;
    if (rc == WS_OK) {
        ps.want = calloc(np + 1, 1);
        ps.sched = calloc(np + 1, 1);
        ps.swept = calloc(nh + 1, 1);
        ps.hf_cdt = calloc(nh + 1, sizeof *ps.hf_cdt);
        ps.hf_sha = calloc(nh + 1, sizeof *ps.hf_sha);
        ps.hf_stats = calloc(nh + 1, sizeof *ps.hf_stats);
        ps.ls = calloc(nl + 1, sizeof *ps.ls);
        if (!ps.want || !ps.sched || !ps.swept || !ps.hf_cdt || !ps.hf_sha || !ps.hf_stats || !ps.ls)
            rc = wsi_fail(err, WS_ERR_NOMEM, NULL, NULL, -1, "out of memory");
    }
    for (size_t i = 0; rc == WS_OK && i < np; i++) {
        if (c->fast) ps.want[i] = 1;
        else if (c->plan->twin[i] != i && c->plan->twin[i] != UINT32_MAX)
            ps.want[i] = ps.want[c->plan->twin[i]] = 1;
    }
    for (size_t i = 0; rc == WS_OK && ps.sha && i < ws_manifest_count(pre); i++) {
        const ws_manifest_entry *en = ws_manifest_entry_at(pre, i);
        long h = ws_layout_find_hf(l, en->name);
        if (h < 0) continue;
        ps.swept[h] = 1;
        ps.hf_cdt[h] = en->canonical_dtype;
        const wsi_plan *p = &c->plan->plans[h];
        for (size_t k = 0; k < p->n_primary; k++) ps.sched[p->primary[k]] = 1;
    }
    ws_manifest_free(pre);
    if (rc == WS_OK) rc = make_groups(&ps, err);
    if (rc == WS_OK) {
        ps.rc = WS_OK;
        wsi_parallel_for(ps.ng, opt->threads, group_item, &ps);
        if (ps.rc != WS_OK) {
            rc = ps.rc;
            if (err) *err = ps.err;
        }
    }
    if (rc == WS_OK) rc = wsi_dumpcheck_build(c, err);
    /* the manifest: what could be rebuilt, with the digests asked for */
    size_t n = rc == WS_OK ? ws_manifest_count(c->rebuilt) : 0;
    const ws_manifest_entry **ents = rc == WS_OK ? calloc(n + 1, sizeof *ents) : NULL;
    ws_manifest *m = NULL;
    if (rc == WS_OK && !ents) rc = wsi_fail(err, WS_ERR_NOMEM, NULL, NULL, -1, "out of memory");
    for (size_t i = 0; rc == WS_OK && i < n; i++) ents[i] = ws_manifest_entry_at(c->rebuilt, i);
    if (rc == WS_OK && ps.sha) { /* (the order manifests were built in before: largest first) */
        pthread_mutex_lock(&sort_lock);
        qsort(ents, n, sizeof *ents, cmp_size);
        pthread_mutex_unlock(&sort_lock);
    }
    if (rc == WS_OK) {
        m = ws_manifest_new(c->canon, algos, opt->key ? ws_fastkey_id(opt->key) : NULL, source);
        if (!m) rc = wsi_fail(err, WS_ERR_NOMEM, NULL, NULL, -1, "out of memory");
    }
    for (size_t i = 0; rc == WS_OK && i < n; i++) {
        ws_manifest_entry e = *ents[i];
        e.digest.algos = algos;
        if (ps.sha) {
            long h = ws_layout_find_hf(l, e.name);
            memcpy(e.digest.sha256, ps.hf_sha[h].sha256, 32);
            e.stats = ps.hf_stats[h];
        }
        if (ws_manifest_add(m, &e) != WS_OK)
            rc = wsi_fail(err, WS_ERR_NOMEM, NULL, NULL, -1, "out of memory");
    }
    free(ents);
    pass_free(&ps);
    if (rc != WS_OK) {
        ws_manifest_free(m);
        return rc;
    }
    *out = m;
    return WS_OK;
}

ws_err wsi_hash_dump_pass(const ws_layout *l, const ws_dump *d, const ws_hash_options *opt,
                          const char *source, ws_manifest **out, ws_report *r,
                          unsigned local_algos, ws_digest **local, ws_error *err) {
    if (!out) return wsi_fail(err, WS_ERR_ARG, NULL, NULL, -1, "NULL argument");
    *out = NULL;
    if (!l || !d || !opt || (local_algos && !local))
        return wsi_fail(err, WS_ERR_ARG, NULL, NULL, -1, "NULL argument");
    wsi_dumpcheck c;
    ws_err rc = wsi_dumpcheck_pass(&c, l, d, opt, r, source, out, local_algos, local, err);
    wsi_dumpcheck_close(&c);
    return rc;
}
