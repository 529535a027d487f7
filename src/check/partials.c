/*
 * Plans and the partials of one rank (ws_plan_create, ws_partials_compute): every byte read
 * through the rank's source, every piece's fast digest a raw sum at its global unit indices,
 * so the sums of all ranks, merged anywhere, add up to each canonical tensor's digest. The
 * piece at the canonical tensor's origin (row 0, column 0; in every replica, so replicas still
 * compare equal) also carries the tensor's seal (docs/fast-digest.md, "Sealing"): the
 * replica-0 pieces then add up to the sealed digest manifests hold, and whoever merges and
 * judges needs no key.
 */
#include "partials.h"
#include "layout_internal.h"

#include "digest.h"
#include "source.h"

#include <openssl/evp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- plans ---------------------------------------------------------------------------- */

static void fp_str(EVP_MD_CTX *h, const char *s) {
    EVP_DigestUpdate(h, s ? s : "", s ? strlen(s) + 1 : 1);
}
static void fp_u64(EVP_MD_CTX *h, uint64_t v) {
    uint8_t b[8];
    for (int i = 0; i < 8; i++) b[i] = (uint8_t)(v >> (8 * i));
    EVP_DigestUpdate(h, b, 8);
}

/* SHA-256 of everything the layout says, so partials of another layout are refused. */
static ws_err fingerprint(const ws_layout *l, uint8_t fp[WSI_FP_BYTES], ws_error *err) {
    EVP_MD_CTX *h = EVP_MD_CTX_new();
    if (!h || EVP_DigestInit_ex(h, EVP_sha256(), NULL) != 1) {
        EVP_MD_CTX_free(h);
        return wsi_fail(err, WS_ERR_CRYPTO, NULL, NULL, -1, "EVP SHA-256 init failed");
    }
    fp_str(h, "weightsum-plan-v1");
    fp_str(h, ws_layout_family(l));
    fp_u64(h, (uint64_t)ws_layout_rank_count(l));
    fp_u64(h, (uint64_t)ws_layout_zero_padding(l));
    size_t nh = ws_layout_hf_count(l), nl = ws_layout_local_count(l), np = ws_layout_piece_count(l);
    fp_u64(h, nh);
    for (size_t i = 0; i < nh; i++) {
        const ws_hf_desc *d = ws_layout_hf(l, i);
        fp_str(h, d->name);
        fp_str(h, d->tied_to);
        fp_u64(h, (uint64_t)d->ndim);
        for (int k = 0; k < d->ndim; k++) fp_u64(h, d->shape[k]);
    }
    fp_u64(h, nl);
    for (size_t i = 0; i < nl; i++) {
        const ws_local_desc *d = ws_layout_local(l, i);
        fp_str(h, d->name);
        fp_u64(h, (uint64_t)d->rank);
        fp_u64(h, (uint64_t)d->ndim);
        for (int k = 0; k < d->ndim; k++) fp_u64(h, d->shape[k]);
    }
    fp_u64(h, np);
    for (size_t i = 0; i < np; i++) {
        const ws_piece *p = ws_layout_piece(l, i);
        uint64_t f[] = {p->hf, p->local, p->replica, p->rows, p->cols, p->t_row0,
                        p->t_col0, p->t_cols, p->l_row0, p->l_col0, p->l_cols};
        for (size_t k = 0; k < sizeof f / sizeof f[0]; k++) fp_u64(h, f[k]);
    }
    uint8_t d[32];
    unsigned len = 0;
    int ok = EVP_DigestFinal_ex(h, d, &len);
    EVP_MD_CTX_free(h);
    if (ok != 1) return wsi_fail(err, WS_ERR_CRYPTO, NULL, NULL, -1, "EVP SHA-256 failed");
    memcpy(fp, d, WSI_FP_BYTES);
    return WS_OK;
}

typedef struct hole_acc {
    wsi_hole *v;
    size_t n, cap;
    bool nomem;
} hole_acc;

static void collect_hole(void *ctx, const wsi_hole *h) {
    hole_acc *a = ctx;
    if (a->n == a->cap) {
        size_t cap = a->cap ? 2 * a->cap : 16;
        wsi_hole *g = realloc(a->v, cap * sizeof *g);
        if (!g) {
            a->nomem = true;
            return;
        }
        a->v = g;
        a->cap = cap;
    }
    a->v[a->n++] = *h;
}

void ws_plan_free(ws_plan *p) {
    if (!p) return;
    wsi_plans_free(p->plans, p->nh);
    free(p->holes);
    free(p->hole0);
    free(p->twin);
    for (size_t i = 0; p->covered && i < p->nl; i++) free(p->covered[i]);
    free(p->covered);
    free(p);
}

ws_err ws_plan_create(const ws_layout *l, ws_plan **out, ws_error *err) {
    if (!l || !out) return wsi_fail(err, WS_ERR_ARG, NULL, NULL, -1, "NULL argument");
    *out = NULL;
    ws_plan *p = calloc(1, sizeof *p);
    if (!p) return wsi_fail(err, WS_ERR_NOMEM, NULL, NULL, -1, "out of memory");
    p->l = l;
    p->nh = ws_layout_hf_count(l);
    p->nl = ws_layout_local_count(l);
    p->np = ws_layout_piece_count(l);
    p->tp = ws_layout_rank_count(l); /* global ranks: tp x pp (x ep) */
    ws_err rc = fingerprint(l, p->fp, err);
    if (rc == WS_OK) rc = wsi_plans_build(l, &p->plans, err);
    hole_acc acc = {0};
    p->hole0 = calloc(p->nh + 1, sizeof *p->hole0);
    p->twin = malloc((p->np + 1) * sizeof *p->twin);
    p->covered = calloc(p->nl + 1, sizeof *p->covered);
    if (rc == WS_OK && (!p->hole0 || !p->twin || !p->covered))
        rc = wsi_fail(err, WS_ERR_NOMEM, NULL, NULL, -1, "out of memory");
    for (size_t h = 0; h < p->nh && rc == WS_OK; h++) {
        p->hole0[h] = acc.n;
        rc = wsi_sweep(l, &p->plans[h], 0, p->plans[h].rows, NULL, &acc, collect_hole);
        if (rc == WS_OK && acc.nomem) rc = wsi_fail(err, WS_ERR_NOMEM, NULL, NULL, -1, "out of memory");
    }
    if (rc == WS_OK) {
        p->hole0[p->nh] = acc.n;
        p->holes = acc.v;
    } else {
        free(acc.v);
    }
    for (size_t i = 0; i < p->np && rc == WS_OK; i++) {
        const ws_piece *c = ws_layout_piece(l, i);
        p->twin[i] = c->replica ? UINT32_MAX : (uint32_t)i;
        if (!c->replica) continue;
        const wsi_plan *pl = &p->plans[c->hf];
        for (size_t k = 0; k < pl->n_primary; k++) {
            const ws_piece *q = ws_layout_piece(l, pl->primary[k]);
            if (q->t_row0 == c->t_row0 && q->t_col0 == c->t_col0 && q->rows == c->rows &&
                q->cols == c->cols) {
                p->twin[i] = pl->primary[k];
                break;
            }
        }
    }
    for (size_t i = 0; i < p->np && rc == WS_OK; i++) {
        const ws_piece *c = ws_layout_piece(l, i);
        if (!p->covered[c->local]) {
            uint64_t rows, cols;
            const ws_local_desc *ld = ws_layout_local(l, c->local);
            wsi_view(ld->ndim, ld->shape, &rows, &cols);
            if (!(p->covered[c->local] = calloc(rows + 1, 1))) {
                rc = wsi_fail(err, WS_ERR_NOMEM, NULL, NULL, -1, "out of memory");
                break;
            }
        }
        memset(p->covered[c->local] + c->l_row0, 1, c->rows);
    }
    if (rc != WS_OK) {
        ws_plan_free(p);
        return rc;
    }
    *out = p;
    return WS_OK;
}

/* ---- partials ------------------------------------------------------------------------- */

ws_err wsi_partials_alloc(uint32_t np, uint32_t nl, uint32_t tp, ws_partials **out,
                          ws_error *err) {
    ws_partials *pa = calloc(1, sizeof *pa);
    if (pa) {
        pa->np = np;
        pa->nl = nl;
        pa->tp = tp;
        pa->ranks = calloc(tp + 1, 1);
        pa->pieces = calloc((size_t)np + 1, sizeof *pa->pieces);
        pa->locals = calloc((size_t)nl + 1, sizeof *pa->locals);
    }
    if (!pa || !pa->ranks || !pa->pieces || !pa->locals) {
        ws_partials_free(pa);
        return wsi_fail(err, WS_ERR_NOMEM, NULL, NULL, -1, "out of memory");
    }
    *out = pa;
    return WS_OK;
}

void ws_partials_free(ws_partials *pa) {
    if (!pa) return;
    for (size_t i = 0; i < pa->nextras; i++) {
        free(pa->extras[i].name);
        free(pa->extras[i].other);
    }
    free(pa->extras);
    free(pa->ranks);
    free(pa->pieces);
    free(pa->locals);
    free(pa);
}

int ws_partials_rank_count(const ws_partials *pa) {
    int n = 0;
    for (uint32_t r = 0; pa && r < pa->tp; r++)
        if (pa->ranks[r]) n = (int)r + 1;
    return n;
}

int ws_partials_has_rank(const ws_partials *pa, int rank) {
    return pa && rank >= 0 && (uint32_t)rank < pa->tp && pa->ranks[rank];
}

const char *wsi_partials_local_name(const ws_partials *pa, const ws_layout *l, uint32_t local) {
    for (size_t i = 0; pa && i < pa->nextras; i++)
        if (pa->extras[i].status == WS_MATCH && pa->extras[i].local == local)
            return pa->extras[i].name;
    return ws_layout_local(l, local)->name;
}

ws_err wsi_partials_add_extra(ws_partials *pa, ws_status s, int rank, uint32_t local,
                              const char *name, const char *other, ws_error *err) {
    if (pa->nextras == pa->cap_extras) {
        size_t cap = pa->cap_extras ? 2 * pa->cap_extras : 8;
        wsi_extra *g = realloc(pa->extras, cap * sizeof *g);
        if (!g) return wsi_fail(err, WS_ERR_NOMEM, NULL, NULL, -1, "out of memory");
        pa->extras = g;
        pa->cap_extras = cap;
    }
    wsi_extra *e = &pa->extras[pa->nextras];
    e->status = (uint8_t)s;
    e->rank = rank;
    e->local = local;
    e->name = wsi_strdup(name);
    e->other = wsi_strdup(other ? other : "");
    if (!e->name || !e->other) {
        free(e->name);
        free(e->other);
        return wsi_fail(err, WS_ERR_NOMEM, NULL, NULL, -1, "out of memory");
    }
    pa->nextras++;
    return WS_OK;
}

/* A piece's rectangle fed into a fast-digest sink at its global element indices. */
typedef struct feed_ctx {
    wsi_sink *sink;
    ws_dtype dtype;
    ws_canon canon;
    uint64_t cols, t_cols, t0; /* rect columns, HF view columns, HF flat index of (0, 0) */
    ws_value_stats stats;
} feed_ctx;

static ws_err feed_rect(void *arg, uint64_t at, const void *data, uint64_t n) {
    feed_ctx *c = arg;
    const uint8_t *p = data;
    size_t es = ws_dtype_size(c->dtype);
    while (n > 0) {
        uint64_t r = at / c->cols, col = at % c->cols;
        /* a call may span rows of the rectangle; the HF view is contiguous across them only
         * when the rectangle is as wide as it */
        uint64_t take = c->cols == c->t_cols ? n : (c->cols - col < n ? c->cols - col : n);
        wsi_sink_feed(c->sink, c->dtype, c->canon, c->t0 + r * c->t_cols + col, p, take,
                      &c->stats);
        p += take * es;
        at += take;
        n -= take;
    }
    return WS_OK;
}

/* Whole-tensor fast digest of the stored bytes (to compare two names of one tied tensor). */
static ws_err native_digest(const ws_source *src, const wsi_src_tensor *t, const ws_fastkey *key,
                            wsi_readbuf *buf, ws_fast *out, ws_error *err) {
    wsi_sink sink;
    ws_err rc = wsi_sink_init(&sink, WS_ALGO_FAST, t->dtype, key, err);
    if (rc != WS_OK) return rc;
    feed_ctx c = {.sink = &sink, .dtype = t->dtype, .canon = WS_CANON_NATIVE,
                  .cols = t->numel ? t->numel : 1, .t_cols = t->numel ? t->numel : 1};
    rc = wsi_source_rect(src, t, 0, 0, 1, t->numel, t->numel, buf, feed_rect, &c, err);
    out->lane[0] = out->lane[1] = out->lane[2] = 0;
    if (rc == WS_OK) *out = sink.fast;
    wsi_sink_destroy(&sink);
    return rc;
}

/* An engine buffer of known values (vLLM's _expert_map): its bytes, a few hundred, read to
 * the host and judged here, so a wrong entry travels as an extra with its one-line detail. */
static ws_err judge_buffer(ws_partials *pa, const ws_source *src, const wsi_src_tensor *t,
                           const ws_buffer_desc *b, int rank, wsi_readbuf *buf, ws_error *err) {
    char detail[448];
    void *data = NULL;
    bool fits = t->dtype == b->dtype && t->ndim == b->ndim && t->shape[0] == b->shape[0];
    if (fits && !(data = malloc((size_t)t->numel * ws_dtype_size(t->dtype) + 1)))
        return wsi_fail(err, WS_ERR_NOMEM, NULL, t->name, -1, "out of memory");
    ws_err rc = fits ? wsi_source_read(src, t, 0, t->numel, data, buf, err) : WS_OK;
    ws_status s = rc == WS_OK ? wsl_buffer_judge(b, t->dtype, t->ndim, t->shape, data, detail,
                                                 sizeof detail)
                              : WS_MATCH;
    free(data);
    if (rc == WS_OK && s != WS_MATCH)
        rc = wsi_partials_add_extra(pa, s, rank, UINT32_MAX, t->name, detail, err);
    return rc;
}

typedef struct pad_ctx {
    size_t rowbytes;
    uint64_t cols;
    uint64_t bad, first, row0; /* rows found non-zero, the first, row of the call's start */
    uint64_t last_bad;
} pad_ctx;

static ws_err pad_scan(void *arg, uint64_t at, const void *data, uint64_t n) {
    pad_ctx *c = arg;
    size_t es = c->rowbytes / (c->cols ? c->cols : 1);
    const uint8_t *p = data;
    for (uint64_t k = 0; k < n; k++) {
        uint64_t row = c->row0 + (at + k) / c->cols;
        bool zero = true;
        for (size_t b = 0; b < es && zero; b++) zero = p[k * es + b] == 0;
        if (!zero && (c->bad == 0 || row != c->last_bad)) {
            if (c->bad == 0) c->first = row;
            c->bad++;
            c->last_bad = row;
        }
    }
    return WS_OK;
}

/* Rows of local tensor li that no piece covers must be zero (engines that zero padding). */
static ws_err check_padding(const ws_plan *p, ws_partials *pa, uint32_t li, const ws_source *src,
                            const wsi_src_tensor *t, wsi_readbuf *buf, ws_error *err) {
    const ws_local_desc *ld = ws_layout_local(p->l, li);
    uint64_t rows, cols;
    wsi_view(ld->ndim, ld->shape, &rows, &cols);
    wsi_local_fact *f = &pa->locals[li];
    pad_ctx c = {.rowbytes = cols * ws_dtype_size(t->dtype), .cols = cols};
    ws_err rc = WS_OK;
    bool any = false;
    for (uint64_t r = 0; r < rows && rc == WS_OK;) {
        if (p->covered[li][r]) {
            r++;
            continue;
        }
        uint64_t e = r;
        while (e < rows && !p->covered[li][e]) e++;
        if (!any) f->pad0 = r;
        any = true;
        f->pad1 = e;
        c.row0 = r;
        rc = wsi_source_rect(src, t, r, 0, e - r, cols, cols, buf, pad_scan, &c, err);
        r = e;
    }
    f->pad_bad = c.bad;
    f->pad_first = c.first;
    return rc;
}

static bool same_shape(const wsi_src_tensor *t, const ws_local_desc *ld) {
    return t->ndim == ld->ndim &&
           memcmp(t->shape, ld->shape, sizeof(uint64_t) * (size_t)ld->ndim) == 0;
}

/* Add the canonical tensor's seal to the partial of the piece at its origin (see above). */
ws_err wsi_piece_seal(const ws_layout *l, const ws_piece *pc, const ws_fastkey *key,
                      ws_dtype cdt, ws_fast *fast, ws_error *err) {
    if (pc->t_row0 != 0 || pc->t_col0 != 0) return WS_OK;
    const ws_hf_desc *hf = ws_layout_hf(l, pc->hf);
    ws_digest d = {.algos = WS_ALGO_FAST, .fast = *fast};
    ws_err rc = wsi_digest_seal(&d, key, cdt, hf->ndim, hf->shape, hf->name, err);
    if (rc == WS_OK) *fast = d.fast;
    return rc;
}

/* The canonical rule of a piece: the run's policy as its canonical tensor takes it
 * (ws_canon_for_tensor: block-FP8 scales and fp32 router buffers keep their stored bytes). */
static ws_canon piece_canon(const ws_layout *l, const ws_piece *pc, ws_dtype dt, ws_canon policy) {
    return ws_canon_for_tensor(ws_layout_hf(l, pc->hf)->name, dt, policy);
}

/* Device pieces: their rectangles to the backend, one call per canonical rule in use. */
static ws_err device_pieces(const ws_plan *p, ws_partials *pa, const ws_source *src,
                            const wsi_src_tensor **bound, int rank, const ws_fastkey *key,
                            ws_canon canon, ws_error *err) {
    size_t n = 0;
    for (size_t i = 0; i < p->np; i++) {
        const ws_piece *pc = ws_layout_piece(p->l, i);
        const wsi_src_tensor *t = bound[pc->local];
        if (t && t->kind == WSI_SRC_DEVICE && ws_layout_local(p->l, pc->local)->rank == rank) n++;
    }
    if (n == 0) return WS_OK;
    wsi_dev_rect *rects = calloc(n, sizeof *rects);
    uint32_t *which = calloc(n, sizeof *which);
    ws_fast *out = calloc(n, sizeof *out);
    ws_value_stats *st = calloc(n, sizeof *st);
    ws_err rc = WS_OK;
    if (!rects || !which || !out || !st) rc = wsi_fail(err, WS_ERR_NOMEM, NULL, NULL, -1, "out of memory");
    /* the backend takes one policy per call: the run's, then native for the exact tensors */
    ws_canon rules[2] = {canon, WS_CANON_NATIVE};
    for (int pass = 0; pass < (canon == WS_CANON_NATIVE ? 1 : 2) && rc == WS_OK; pass++) {
        ws_canon c = rules[pass];
        size_t k = 0;
        void *stream = NULL;
        for (size_t i = 0; i < p->np; i++) {
            const ws_piece *pc = ws_layout_piece(p->l, i);
            const wsi_src_tensor *t = bound[pc->local];
            if (!t || t->kind != WSI_SRC_DEVICE || ws_layout_local(p->l, pc->local)->rank != rank ||
                piece_canon(p->l, pc, t->dtype, canon) != c)
                continue;
            int64_t rs, cs;
            wsi_view_strides(t, &rs, &cs);
            unsigned units = ws_dtype_units(ws_canonical_dtype(t->dtype, c));
            size_t es = ws_dtype_size(t->dtype);
            rects[k] = (wsi_dev_rect){
                .ptr = (const uint8_t *)t->data +
                       ((int64_t)pc->l_row0 * rs + (int64_t)pc->l_col0 * cs) * (int64_t)es,
                .dtype = t->dtype, .rows = pc->rows, .cols = pc->cols, .row_stride = rs,
                .col_stride = cs, .hf_unit0 = (pc->t_row0 * pc->t_cols + pc->t_col0) * units,
                .hf_row_units = pc->t_cols * units};
            if (!stream) stream = t->stream;
            which[k++] = (uint32_t)i;
        }
        if (k == 0) continue;
        rc = src->dev->fast_rects(key, rects, k, c, out, st, stream, err);
        for (size_t i = 0; i < k && rc == WS_OK; i++) {
            rc = wsi_piece_seal(p->l, ws_layout_piece(p->l, which[i]), key,
                             ws_canonical_dtype(rects[i].dtype, c), &out[i], err);
            pa->pieces[which[i]].done = 1;
            pa->pieces[which[i]].fast = out[i];
            pa->pieces[which[i]].stats = st[i];
        }
    }
    free(rects);
    free(which);
    free(out);
    free(st);
    return rc;
}

/* One piece's partial: its rectangle read through the source into a fast-digest sink. */
static ws_err piece_partial(const ws_layout *l, const ws_piece *pc, const ws_source *src,
                            const wsi_src_tensor *t,
                            const ws_fastkey *key, ws_canon canon, wsi_readbuf *buf,
                            wsi_piece_part *out, ws_error *err) {
    wsi_sink sink;
    canon = piece_canon(l, pc, t->dtype, canon);
    ws_err rc = wsi_sink_init(&sink, WS_ALGO_FAST, ws_canonical_dtype(t->dtype, canon), key, err);
    if (rc != WS_OK) return rc;
    feed_ctx c = {.sink = &sink, .dtype = t->dtype, .canon = canon, .cols = pc->cols,
                  .t_cols = pc->t_cols, .t0 = pc->t_row0 * pc->t_cols + pc->t_col0};
    rc = wsi_source_rect(src, t, pc->l_row0, pc->l_col0, pc->rows, pc->cols, pc->l_cols, buf,
                         feed_rect, &c, err);
    if (rc == WS_OK) rc = wsi_piece_seal(l, pc, key, sink.cdtype, &sink.fast, err);
    if (rc == WS_OK) {
        out->done = 1;
        out->fast = sink.fast;
        out->stats = c.stats;
    }
    wsi_sink_destroy(&sink);
    return rc;
}

/* Host and file pieces (and padding scans) spread over threads, largest first. */
typedef struct par {
    const ws_plan *p;
    ws_partials *pa;
    const ws_source *src;
    const wsi_src_tensor **bound;
    const ws_fastkey *key;
    ws_canon canon;
    uint32_t *items;          /* piece index, or UINT32_MAX - local for a padding scan */
    pthread_mutex_t lock;
    ws_err rc;
    ws_error err;
} par;

static void par_item(void *arg, size_t i) {
    par *w = arg;
    pthread_mutex_lock(&w->lock);
    bool stop = w->rc != WS_OK;
    pthread_mutex_unlock(&w->lock);
    if (stop) return;
    wsi_readbuf buf = {0};
    ws_error e;
    ws_err rc;
    uint32_t it = w->items[i];
    if (it < w->p->np) {
        const ws_piece *pc = ws_layout_piece(w->p->l, it);
        wsi_piece_part part = {0};
        rc = piece_partial(w->p->l, pc, w->src, w->bound[pc->local], w->key, w->canon, &buf, &part, &e);
        w->pa->pieces[it] = part; /* each item writes its own slot */
    } else {
        uint32_t li = UINT32_MAX - it;
        rc = check_padding(w->p, w->pa, li, w->src, w->bound[li], &buf, &e);
    }
    wsi_readbuf_free(&buf);
    if (rc != WS_OK) {
        pthread_mutex_lock(&w->lock);
        if (w->rc == WS_OK) {
            w->rc = rc;
            w->err = e;
        }
        pthread_mutex_unlock(&w->lock);
    }
}

/* qsort context, guarded by sort_lock */
static const ws_layout *sort_l;
static const wsi_src_tensor *const *sort_bound;
static bool sort_by_place;
static pthread_mutex_t sort_lock = PTHREAD_MUTEX_INITIALIZER;
static uint64_t item_size(uint32_t it) {
    if (it >= ws_layout_piece_count(sort_l)) return 0; /* padding scans: small, last */
    const ws_piece *pc = ws_layout_piece(sort_l, it);
    return pc->rows * pc->cols;
}
/* Where an item's reads begin: its local tensor's file and the byte of its first element
 * there (a padding scan: the tensor's start). */
static void item_place(uint32_t it, const char **file, uint64_t *at) {
    size_t np = ws_layout_piece_count(sort_l);
    const ws_piece *pc = it < np ? ws_layout_piece(sort_l, it) : NULL;
    const wsi_src_tensor *t = sort_bound[pc ? pc->local : UINT32_MAX - it];
    *file = t->kind == WSI_SRC_FILE && t->file ? t->file : "";
    *at = t->file_offset;
    if (pc) *at += (pc->l_row0 * pc->l_cols + pc->l_col0) * ws_dtype_size(t->dtype);
}
static int cmp_place(uint32_t x, uint32_t y) {
    const char *fx, *fy;
    uint64_t ax, ay;
    item_place(x, &fx, &ax);
    item_place(y, &fy, &ay);
    int c = strcmp(fx, fy);
    return c ? c : ax < ay ? -1 : ax > ay;
}
/* One thread: file order, which the kernel's read-ahead follows on a cold file. Several:
 * largest first (the longest starts at once), ties in file order. */
static int cmp_items(const void *a, const void *b) {
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    if (sort_by_place) return cmp_place(x, y);
    uint64_t sx = item_size(x), sy = item_size(y);
    return sx < sy ? 1 : sx > sy ? -1 : cmp_place(x, y);
}

ws_err ws_partials_compute(const ws_plan *p, int rank, const ws_source *src,
                           const ws_fastkey *key, ws_canon canon, ws_partials **out,
                           ws_error *err) {
    return wsi_partials_compute_ex(p, rank, src, key, canon, NULL, out, err);
}

ws_err wsi_partials_compute_ex(const ws_plan *p, int rank, const ws_source *src,
                               const ws_fastkey *key, ws_canon canon, const wsi_compute_opts *o,
                               ws_partials **out, ws_error *err) {
    if (!p || !src || !out) return wsi_fail(err, WS_ERR_ARG, NULL, NULL, -1, "NULL argument");
    *out = NULL;
    if (!key) return wsi_fail(err, WS_ERR_ARG, NULL, NULL, -1, "partials need a fast-digest key");
    if (canon != WS_CANON_BF16 && canon != WS_CANON_NATIVE)
        return wsi_fail(err, WS_ERR_ARG, NULL, NULL, -1, "invalid canonical policy %d", (int)canon);
    if (rank < 0 || rank >= p->tp)
        return wsi_fail(err, WS_ERR_ARG, NULL, NULL, -1, "rank %d outside the layout's %d ranks",
                        rank, p->tp);
    const ws_layout *l = p->l;
    ws_partials *pa = NULL;
    ws_err rc = wsi_partials_alloc((uint32_t)p->np, (uint32_t)p->nl, (uint32_t)p->tp, &pa, err);
    if (rc != WS_OK) return rc;
    memcpy(pa->fp, p->fp, WSI_FP_BYTES);
    pa->canon = (uint8_t)canon;
    snprintf(pa->key_id, sizeof pa->key_id, "%s", ws_fastkey_id(key));
    pa->ranks[rank] = 1;
    const wsi_src_tensor **bound = calloc(p->nl + 1, sizeof *bound);
    wsi_readbuf buf = {0};
    if (!bound) rc = wsi_fail(err, WS_ERR_NOMEM, NULL, NULL, -1, "out of memory");
    /* Bind the source's tensors to the layout's local tensors of this rank: a tensor under
     * the local's own name first, then aliases (a tied tensor saved under both names). */
    for (int pass = 0; pass < 2 && rc == WS_OK; pass++)
        for (size_t i = 0; i < src->n && rc == WS_OK; i++) {
            const wsi_src_tensor *t = &src->t[i];
            long li = ws_layout_find_local(l, rank, t->name);
            long bi = li < 0 ? ws_layout_find_buffer(l, rank, t->name) : -1;
            if (bi >= 0) {
                if (pass == 0) rc = judge_buffer(pa, src, t, ws_layout_buffer(l, (size_t)bi), rank,
                                                 &buf, err);
                continue;
            }
            if (li < 0) {
                if (pass == 0)
                    rc = wsi_partials_add_extra(pa, WS_UNEXPECTED, rank, UINT32_MAX, t->name,
                                                NULL, err);
                continue;
            }
            const ws_local_desc *ld = ws_layout_local(l, (size_t)li);
            bool own = strcmp(ld->name, t->name) == 0;
            if (own != (pass == 0)) continue;
            wsi_local_fact *f = &pa->locals[li];
            if (bound[li] || f->state == WSI_LOCAL_BAD_SHAPE) {
                /* an alias beside its tensor: both names must hold the same bytes */
                const wsi_src_tensor *ot = bound[li];
                bool same = ot && ot->dtype == t->dtype && ot->numel == t->numel &&
                            same_shape(t, ld);
                if (same) {
                    ws_fast a, b;
                    rc = native_digest(src, ot, key, &buf, &a, err);
                    if (rc == WS_OK) rc = native_digest(src, t, key, &buf, &b, err);
                    same = rc == WS_OK && memcmp(&a, &b, sizeof a) == 0;
                }
                if (rc == WS_OK && !same)
                    rc = wsi_partials_add_extra(pa, WS_REPLICA_MISMATCH, rank, (uint32_t)li,
                                                t->name, ot ? ot->name : ld->name, err);
                continue;
            }
            /* saved under an alias only: findings name the tensor that was read */
            if (!own)
                rc = wsi_partials_add_extra(pa, WS_MATCH, rank, (uint32_t)li, t->name, ld->name,
                                            err);
            if (rc != WS_OK) break;
            f->dtype = (uint8_t)t->dtype;
            f->ndim = (uint8_t)t->ndim;
            memcpy(f->shape, t->shape, sizeof f->shape);
            if (!same_shape(t, ld)) {
                f->state = WSI_LOCAL_BAD_SHAPE;
                continue;
            }
            f->state = WSI_LOCAL_OK;
            bound[li] = t;
        }
    for (size_t li = 0; li < p->nl && rc == WS_OK; li++)
        if (ws_layout_local(l, li)->rank == rank && pa->locals[li].state == WSI_LOCAL_UNSEEN)
            pa->locals[li].state = WSI_LOCAL_MISSING;
    /* Every piece this rank holds: device ones in one call, host and file ones (and the
     * padding scans) spread over threads. */
    const uint8_t *want = o ? o->want : NULL;
    if (rc == WS_OK) rc = device_pieces(p, pa, src, bound, rank, key, canon, err);
    uint32_t *items = rc == WS_OK ? malloc((p->np + p->nl + 1) * sizeof *items) : NULL;
    size_t n = 0;
    if (rc == WS_OK && !items) rc = wsi_fail(err, WS_ERR_NOMEM, NULL, NULL, -1, "out of memory");
    for (size_t i = 0; i < p->np && rc == WS_OK; i++) {
        const ws_piece *pc = ws_layout_piece(l, i);
        const wsi_src_tensor *t = bound[pc->local];
        if (t && t->kind != WSI_SRC_DEVICE && (!want || want[i])) items[n++] = (uint32_t)i;
    }
    bool pad = ws_layout_zero_padding(l) && !(o && o->no_padding);
    for (size_t li = 0; li < p->nl && rc == WS_OK && pad; li++)
        if (bound[li] && p->covered[li]) items[n++] = UINT32_MAX - (uint32_t)li;
    if (rc == WS_OK) {
        int threads = o ? o->threads : 1;
        pthread_mutex_lock(&sort_lock);
        sort_l = l;
        sort_bound = bound;
        sort_by_place = (threads > 0 ? threads : wsi_cpu_count()) == 1;
        qsort(items, n, sizeof *items, cmp_items);
        pthread_mutex_unlock(&sort_lock);
        par w = {.p = p, .pa = pa, .src = src, .bound = bound, .key = key, .canon = canon,
                 .items = items, .rc = WS_OK};
        pthread_mutex_init(&w.lock, NULL);
        wsi_parallel_for(n, threads, par_item, &w);
        pthread_mutex_destroy(&w.lock);
        if (w.rc != WS_OK) {
            rc = w.rc;
            if (err) *err = w.err;
        }
    }
    free(items);
    for (size_t li = 0; rc == WS_OK && o && o->bound && li < p->nl; li++)
        if (bound[li]) o->bound[li] = bound[li];
    wsi_readbuf_free(&buf);
    free(bound);
    if (rc != WS_OK) {
        ws_partials_free(pa);
        return rc;
    }
    *out = pa;
    return WS_OK;
}
