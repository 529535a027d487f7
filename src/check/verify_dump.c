/*
 * Verify an engine dump against the trainer's manifest (ws_verify_dump): digest what the dump
 * holds, compare per canonical tensor, and say where a mismatch lives — the engine tensors and
 * ranks that hold the tensor and, given the reference checkpoint, the first differing element.
 */
#include "digest.h"
#include "dump_check.h"
#include "report_values.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* "held by X rows a..b on rank r; ..." for the replica-0 pieces of HF tensor h. */
static void holders(const wsi_dumpcheck *v, uint32_t h, char *buf, size_t n, const char **local,
                    int *rank) {
    const wsi_plan *p = &v->plan->plans[h];
    size_t len = (size_t)snprintf(buf, n, "held by ");
    *local = NULL;
    *rank = -1;
    for (size_t i = 0; i < p->n_primary && len < n; i++) {
        const ws_piece *pc = ws_layout_piece(v->l, p->primary[i]);
        const ws_local_desc *ld = ws_layout_local(v->l, pc->local);
        const char *name = wsi_dumpcheck_local_name(v, pc->local);
        if (i == 0) {
            *local = name;
            *rank = ld->rank;
        } else if (*rank != ld->rank) {
            *rank = -1;
        }
        if (i == 4) {
            len += (size_t)snprintf(buf + len, n - len, "; and %zu more pieces", p->n_primary - 4);
            break;
        }
        len += (size_t)snprintf(buf + len, n - len, "%s%s rows %llu..%llu on rank %d",
                                i ? "; " : "", name, (unsigned long long)pc->l_row0,
                                (unsigned long long)(pc->l_row0 + pc->rows), ld->rank);
    }
}

/* The replica-0 pieces of HF tensor h as holders (the finding's held_by); at most max. */
static size_t holder_list(const wsi_dumpcheck *v, uint32_t h, ws_holder *out, size_t max) {
    const wsi_plan *p = &v->plan->plans[h];
    size_t n = 0;
    for (size_t i = 0; i < p->n_primary && n < max; i++) {
        const ws_piece *pc = ws_layout_piece(v->l, p->primary[i]);
        const ws_local_desc *ld = ws_layout_local(v->l, pc->local);
        out[n++] = (ws_holder){.local = wsi_dumpcheck_local_name(v, pc->local), .rank = ld->rank, .row0 = (int64_t)pc->l_row0,
                               .row1 = (int64_t)(pc->l_row0 + pc->rows)};
    }
    return n;
}

typedef struct locate_ctx {
    const wsi_dumpcheck *v;
    const ws_tensor *ref;
    const ws_source *ref_src;    /* the reference's bytes, read a chunk at a time */
    const wsi_src_tensor *ref_t;
    uint8_t *rr;                 /* its raw chunk */
    wsi_readbuf ref_buf;
    ws_canon policy, canon; /* the run's policy; the reference tensor's rule under it */
    ws_dtype cdt;
    uint64_t cols;
    uint8_t *ba, *bb;
    wsi_readbuf buf;
    ws_error err;
    ws_diff d;
    uint64_t first_piece, first_local_at, row0, row1;
} locate_ctx;

typedef struct chunk_ctx {
    locate_ctx *c;
    const wsi_run *run;
    uint64_t base;  /* elements of the run before this read; c->rr holds the reference's */
    ws_dtype dtype;
    ws_canon canon; /* the local tensor's rule (c->canon is the reference's) */
} chunk_ctx;

/* n elements of a run, read from the dump, against the reference's at the same place. */
static ws_err locate_chunk(void *arg, uint64_t at, const void *data, uint64_t n) {
    chunk_ctx *x = arg;
    locate_ctx *c = x->c;
    const wsi_run *run = x->run;
    uint64_t t_at = run->t_at + x->base + at;
    wsi_cast_to_canonical(c->ref->dtype, c->canon, c->rr + at * ws_dtype_size(c->ref->dtype), n,
                         c->ba, NULL);
    wsi_cast_to_canonical(x->dtype, x->canon, data, n, c->bb, NULL);
    uint64_t before = c->d.differ, first = c->d.first;
    wsi_diff_update(&c->d, c->cdt, t_at, c->ba, c->bb, n);
    if (c->d.differ == before) return WS_OK;
    if (c->d.first != first) {
        c->first_piece = run->piece;
        c->first_local_at = run->l_at + (c->d.first - run->t_at);
    }
    uint64_t r0 = t_at / c->cols, r1 = (t_at + n - 1) / c->cols + 1;
    if (before == 0 || r0 < c->row0) c->row0 = r0;
    if (r1 > c->row1) c->row1 = r1;
    return WS_OK;
}

/* A run in chunks: the reference's elements read first, then the dump's compared with them in
 * the dump's read callback. One file read at a time, never one inside another: a mapped read
 * records the one range its thread touches (ws_mapped_read_current), which a nested read would
 * end early, leaving the outer touch unguarded. */
static ws_err locate_run(void *arg, const wsi_run *run) {
    locate_ctx *c = arg;
    ws_dtype dt = c->v->bound[run->local]->dtype;
    const char *name = ws_layout_hf(c->v->l, ws_layout_piece(c->v->l, run->piece)->hf)->name;
    chunk_ctx x = {c, run, 0, dt, ws_canon_for_tensor(name, dt, c->policy)};
    ws_err rc = WS_OK;
    for (uint64_t k = 0; k < run->n && rc == WS_OK; k += WSI_CHUNK_ELEMS) {
        uint64_t n = run->n - k < WSI_CHUNK_ELEMS ? run->n - k : WSI_CHUNK_ELEMS;
        x.base = k;
        rc = wsi_source_read(c->ref_src, c->ref_t, run->t_at + k, n, c->rr, &c->ref_buf, &c->err);
        if (rc == WS_OK)
            rc = wsi_dumpcheck_read(c->v, run->local, run->l_at + k, n, &c->buf, locate_chunk, &x,
                                    &c->err);
    }
    return rc;
}

/* Compare T, rebuilt from the dump's pieces, with the reference tensor element by element.
 * Returns false (with why) when they cannot be compared. */
static ws_err compare_with_reference(wsi_dumpcheck *v, uint32_t h, const ws_tensor *ref,
                                     const ws_source *ref_src, ws_canon canon, locate_ctx *c,
                                     const char **why, ws_error *err) {
    const ws_hf_desc *hf = ws_layout_hf(v->l, h);
    const wsi_plan *p = &v->plan->plans[h];
    memset(c, 0, sizeof *c);
    ws_diff_init(&c->d);
    if (ref->ndim != hf->ndim || memcmp(ref->shape, hf->shape, sizeof(uint64_t) * (size_t)hf->ndim)) {
        *why = "the reference tensor has another shape";
        return WS_OK;
    }
    c->v = v;
    c->ref = ref;
    c->ref_src = ref_src;
    c->ref_t = wsi_source_find(ref_src, ref->name);
    c->policy = canon;
    c->canon = ws_canon_for_tensor(hf->name, ref->dtype, canon);
    c->cols = p->cols ? p->cols : 1;
    c->cdt = ws_canonical_dtype(ref->dtype, c->canon);
    for (size_t i = 0; i < p->n_primary; i++) {
        const wsi_src_tensor *t = v->bound[ws_layout_piece(v->l, p->primary[i])->local];
        if (!t) {
            *why = "an engine tensor holding it is missing";
            return WS_OK;
        }
        if (ws_canonical_dtype(t->dtype, ws_canon_for_tensor(hf->name, t->dtype, canon)) != c->cdt) {
            *why = "the reference's dtype cannot be compared element by element";
            return WS_OK;
        }
    }
    c->ba = malloc((size_t)WSI_CHUNK_ELEMS * 8);
    c->bb = malloc((size_t)WSI_CHUNK_ELEMS * 8);
    c->rr = malloc((size_t)WSI_CHUNK_ELEMS * 8);
    ws_err rc = c->ba && c->bb && c->rr && c->ref_t
                    ? wsi_sweep(v->l, p, 0, p->rows, locate_run, c, NULL)
                    : WS_ERR_NOMEM;
    free(c->ba);
    free(c->bb);
    free(c->rr);
    wsi_readbuf_free(&c->buf);
    wsi_readbuf_free(&c->ref_buf);
    if (rc == WS_ERR_NOMEM) return wsi_fail(err, rc, NULL, hf->name, -1, "out of memory");
    if (rc != WS_OK && err) *err = c->err;
    return rc;
}

/* Report the differences found by compare_with_reference as one finding. */
static void report_located(wsi_dumpcheck *v, uint32_t h, const locate_ctx *c) {
    const ws_hf_desc *hf = ws_layout_hf(v->l, h);
    const ws_piece *pc = ws_layout_piece(v->l, (size_t)c->first_piece);
    const ws_local_desc *ld = ws_layout_local(v->l, pc->local);
    uint64_t tco[WS_MAX_DIMS], lco[WS_MAX_DIMS];
    wsi_unravel(c->d.first, hf->ndim, hf->shape, tco);
    wsi_unravel(c->first_local_at, ld->ndim, ld->shape, lco);
    char ts[160], ls[160];
    wsi_shape_str(hf->ndim, tco, ts, sizeof ts);
    wsi_shape_str(ld->ndim, lco, ls, sizeof ls);
    char detail[768];
    snprintf(detail, sizeof detail,
             "%llu of %llu elements differ; first at %llu %s: %.9g expected, %.9g "
             "found, element %s of %s on rank %d; max abs %.6g, max ulp %llu",
             (unsigned long long)c->d.differ, (unsigned long long)c->d.compared,
             (unsigned long long)c->d.first, ts, c->d.first_a, c->d.first_b, ls,
             wsi_dumpcheck_local_name(v, pc->local), ld->rank, c->d.max_abs,
             (unsigned long long)c->d.max_ulp);
    ws_finding f = {.status = WS_MISMATCH, .tensor = hf->name,
                    .local = wsi_dumpcheck_local_name(v, pc->local),
                    .rank = ld->rank, .row0 = (int64_t)(c->d.first / c->cols),
                    .row1 = (int64_t)c->row1, .detail = detail};
    wsi_finding_element(&f, c->d.first, hf->ndim, hf->shape, c->d.first_a, c->d.first_b,
                        c->d.differ);
    wsi_dumpcheck_add(v, &f);
}

/* The two sides of range-digest localisation, bound once per verify (not per mismatch). */
typedef struct sides {
    ws_fastkey *own;
    ws_side *a, *b;
    ws_err rc;
    ws_error e;
    bool tried;
} sides;

static void sides_free(sides *s) {
    ws_side_free(s->a);
    ws_side_free(s->b);
    ws_fastkey_free(s->own);
}

/* Locate a digest mismatch by exchanging range digests with the reference (ws_locate): the
 * reference plays the trainer's side, the dump the engine's. */
static void locate(wsi_dumpcheck *v, uint32_t h, const ws_ckpt *reference,
                   const ws_hash_options *opt, const char *digest_detail,
                   const ws_finding *base, sides *sd) {
    const ws_hf_desc *hf = ws_layout_hf(v->l, h);
    ws_location loc;
    ws_error e;
    if (!sd->tried) {
        sd->tried = true;
        const ws_fastkey *key = opt->key;
        sd->rc = WS_OK;
        if (!key) {
            sd->rc = ws_fastkey_create(WS_FAST_DEFAULT_SEED, strlen(WS_FAST_DEFAULT_SEED),
                                       &sd->own, &sd->e);
            key = sd->own;
        }
        if (sd->rc == WS_OK) sd->rc = ws_side_checkpoint(reference, opt->canon, key, &sd->a, &sd->e);
        if (sd->rc == WS_OK) sd->rc = ws_side_dump(v->l, v->d, opt->canon, key, &sd->b, &sd->e);
    }
    ws_err rc = sd->rc;
    if (rc != WS_OK) e = sd->e;
    else rc = ws_locate(sd->a, sd->b, hf->name, 16, 64, &loc, &e);
    if (rc != WS_OK) {
        wsi_dumpcheck_report(v, WS_MISMATCH, hf->name, NULL, -1, -1, -1, "%s; cannot locate: %s",
                             digest_detail, e.what);
    } else if (loc.found == 0) {
        wsi_dumpcheck_report(v, WS_MISMATCH, hf->name, NULL, -1, -1, -1,
                             "%s; but every element equals the reference's (is the reference "
                             "the trainer's checkpoint?)",
                             digest_detail);
    } else {
        uint64_t co[WS_MAX_DIMS];
        char cs[160];
        wsi_unravel(loc.first, hf->ndim, hf->shape, co);
        wsi_shape_str(hf->ndim, co, cs, sizeof cs);
        const wsi_plan *p = &v->plan->plans[h];
        uint64_t cols = p->cols ? p->cols : 1;
        /* the holder of the first element, for the finding's fields */
        const char *local = NULL;
        int rank = -1;
        for (size_t k = 0; k < p->n_primary; k++) {
            const ws_piece *pc = ws_layout_piece(v->l, p->primary[k]);
            uint64_t row = loc.first / cols, col = loc.first % cols;
            if (row >= pc->t_row0 && row < pc->t_row0 + pc->rows && col >= pc->t_col0 &&
                col < pc->t_col0 + pc->cols) {
                local = wsi_dumpcheck_local_name(v, pc->local);
                rank = ws_layout_local(v->l, pc->local)->rank;
            }
        }
        char detail[768];
        snprintf(detail, sizeof detail,
                 "%s%llu %s; first at %llu %s: %.9g expected, %.9g found, "
                 "%s (located by range digests: %llu rounds, %llu digests per side)",
                 loc.more ? "at least " : "", (unsigned long long)loc.found,
                 loc.found == 1 && !loc.more ? "element differs" : "elements differ",
                 (unsigned long long)loc.first, cs, loc.value_a, loc.value_b, loc.where_b,
                 (unsigned long long)loc.rounds, (unsigned long long)loc.digests);
        ws_finding f = *base;
        f.local = local;
        f.rank = rank;
        f.row0 = (int64_t)(loc.first / cols);
        f.row1 = (int64_t)(loc.first / cols + 1);
        f.detail = detail;
        wsi_finding_element(&f, loc.first, hf->ndim, hf->shape, loc.value_a, loc.value_b,
                            loc.more ? 0 : loc.found);
        wsi_dumpcheck_add(v, &f);
    }
}

/* diff's progress over its two phases, in bytes: the replica pieces (and their replica-0
 * twins) read from the dump, then the reference compared. */
typedef struct diff_progress {
    ws_progress_fn fn;
    void *user;
    uint64_t rep_elems, rep_bytes, total;
} diff_progress;

/* The dump check counts elements of the replica pieces: as bytes of the same pieces. */
static void replica_progress(void *user, uint64_t done, uint64_t total_elems) {
    const diff_progress *p = user;
    (void)total_elems;
    uint64_t b = p->rep_elems ? (uint64_t)((double)p->rep_bytes * ((double)done / (double)p->rep_elems)) : 0;
    p->fn(p->user, b < p->rep_bytes ? b : p->rep_bytes, p->total);
}

ws_err ws_diff_dump_read(const ws_ckpt *ref, const ws_layout *l, const ws_dump *d,
                         ws_canon canon, int read_mode, ws_progress_fn progress,
                         void *progress_user, ws_report *r, ws_error *err) {
    if (!ref || !l || !d || !r) return wsi_fail(err, WS_ERR_ARG, NULL, NULL, -1, "NULL argument");
    /* the dump bound once: structural findings and every replica against replica 0 */
    wsi_dumpcheck v;
    ws_hash_options opt = {.canon = canon, .algos = WS_ALGO_SHA256, .threads = 0,
                           .read_mode = read_mode};
    ws_source *ref_src = NULL; /* the reference read like the dump, never through pointers */
    ws_err src_rc = wsi_source_ckpt(ref, read_mode, &ref_src, err);
    if (src_rc != WS_OK) return src_rc;
    diff_progress dp = {.fn = progress, .user = progress_user};
    uint64_t done = 0, total = 0; /* bytes of the reference compared, for progress */
    for (size_t h = 0; progress && h < ws_layout_hf_count(l); h++) {
        const ws_tensor *t = ws_ckpt_find(ref, ws_layout_hf(l, h)->name);
        if (t) total += t->nbytes;
    }
    /* the replica check reads every replica piece and its replica-0 twin (at the reference's
     * element size, which is what the dump holds when the two agree) */
    if (progress) {
        ws_plan *pl = NULL; /* its twins: the replica-0 piece of each replica's rectangle */
        ws_err prc = ws_plan_create(l, &pl, err);
        uint8_t *read = prc == WS_OK ? calloc(pl->np + 1, 1) : NULL;
        if (prc == WS_OK && !read) prc = wsi_fail(err, WS_ERR_NOMEM, NULL, NULL, -1, "out of memory");
        for (size_t i = 0; read && i < pl->np; i++)
            if (pl->twin[i] != i && pl->twin[i] != UINT32_MAX) read[i] = read[pl->twin[i]] = 1;
        for (size_t i = 0; read && i < pl->np; i++) {
            if (!read[i]) continue;
            const ws_piece *pc = ws_layout_piece(l, i);
            const ws_tensor *t = ws_ckpt_find(ref, ws_layout_hf(l, pc->hf)->name);
            uint64_t es = t && t->numel ? t->nbytes / t->numel : 2;
            dp.rep_elems += pc->rows * pc->cols;
            dp.rep_bytes += pc->rows * pc->cols * es;
        }
        free(read);
        ws_plan_free(pl);
        if (prc != WS_OK) {
            ws_source_free(ref_src);
            return prc;
        }
    }
    dp.total = total + dp.rep_bytes;
    if (progress) {
        opt.progress = replica_progress;
        opt.progress_user = &dp;
        progress(progress_user, 0, dp.total);
    }
    ws_err rc = wsi_dumpcheck_open(&v, l, d, &opt, r, err);
    done = dp.rep_bytes;
    total = dp.total;
    for (size_t h = 0; rc == WS_OK && h < ws_layout_hf_count(l); h++) {
        const ws_hf_desc *hf = ws_layout_hf(l, h);
        const ws_tensor *t = ws_ckpt_find(ref, hf->name);
        if (progress) progress(progress_user, done, total); /* the tensors before this one */
        if (t) done += t->nbytes;
        uint32_t src = (uint32_t)h; /* a tied tensor is compared with what the engine ties it to */
        if (hf->tied_to) {
            if (!t) continue; /* save_pretrained leaves tied tensors out */
            src = (uint32_t)ws_layout_find_hf(l, hf->tied_to);
        }
        if (!t) {
            wsi_dumpcheck_report(&v, WS_UNEXPECTED, hf->name, NULL, -1, -1, -1,
                                "only in the engine dump");
            continue;
        }
        locate_ctx c;
        const char *why = NULL;
        rc = compare_with_reference(&v, src, t, ref_src, canon, &c, &why, err);
        if (rc != WS_OK) break;
        if (why)
            wsi_dumpcheck_report(&v, WS_NOT_COMPARABLE, hf->name, NULL, -1, -1, -1, "%s", why);
        else if (c.d.differ) report_located(&v, src, &c);
        else ws_report_count_match(r, 1);
    }
    for (size_t i = 0; rc == WS_OK && i < ws_ckpt_count(ref); i++) {
        const char *name = ws_ckpt_tensor(ref, i)->name;
        if (ws_layout_find_hf(l, name) < 0)
            wsi_dumpcheck_report(&v, WS_MISSING, name, NULL, -1, -1, -1,
                                "only in the checkpoint: the layout holds no such tensor");
    }
    if (rc == WS_OK && progress) progress(progress_user, done, total);
    wsi_dumpcheck_close(&v);
    ws_source_free(ref_src);
    return rc;
}

ws_err ws_diff_dump(const ws_ckpt *ref, const ws_layout *l, const ws_dump *d, ws_canon canon,
                    ws_progress_fn progress, void *progress_user, ws_report *r, ws_error *err) {
    return ws_diff_dump_read(ref, l, d, canon, WS_READ_DEFAULT, progress, progress_user, r, err);
}

ws_err ws_verify_dump(const ws_manifest *expected, const ws_layout *l, const ws_dump *d,
                      const ws_hash_options *opt, const ws_ckpt *reference, ws_report *r,
                      ws_error *err) {
    if (!expected || !l || !d || !opt || !r)
        return wsi_fail(err, WS_ERR_ARG, NULL, NULL, -1, "NULL argument");
    wsi_dumpcheck v;
    ws_manifest *actual = NULL;
    sides sd = {0};
    ws_err rc = wsi_dumpcheck_pass(&v, l, d, opt, r, "dump", &actual, 0, NULL, err);
    bool same_key = true;
    if (rc == WS_OK) rc = wsi_check_comparable(expected, actual, &same_key, err);
    char detail[512], held[512];
    for (size_t i = 0; rc == WS_OK && i < ws_manifest_count(expected); i++) {
        const ws_manifest_entry *e = ws_manifest_entry_at(expected, i);
        long h = ws_layout_find_hf(l, e->name);
        if (h < 0) {
            wsi_dumpcheck_report(&v, WS_MISSING, e->name, NULL, -1, -1, -1,
                                "the %s layout of this config holds no such tensor",
                                ws_layout_family(l));
            continue;
        }
        const ws_hf_desc *hf = ws_layout_hf(l, (size_t)h);
        const char *name = hf->tied_to ? hf->tied_to : hf->name;
        const ws_manifest_entry *a = ws_manifest_find(actual, name);
        if (!a) continue; /* could not be rebuilt: already reported with its reason */
        ws_status s = wsi_compare_entry(e, a, same_key, detail, sizeof detail);
        /* the finding's value fields: the digests, the holders */
        ws_finding f = {.status = s, .tensor = e->name, .rank = -1, .row0 = -1, .row1 = -1};
        char he[65], ha[65], line[1100];
        ws_holder hs[64];
        if (s == WS_MISMATCH) wsi_finding_digests(&f, e, a, same_key, he, ha);
        if (s == WS_MATCH) {
            ws_report_count_match(r, 1);
        } else if (hf->tied_to) {
            snprintf(line, sizeof line,
                     "the engine ties it to %s, which differs from the trainer's %s: %s",
                     hf->tied_to, e->name, detail);
            f.detail = line;
            wsi_dumpcheck_add(&v, &f);
        } else if (s == WS_MISMATCH && reference && ws_ckpt_find(reference, e->name)) {
            locate(&v, (uint32_t)h, reference, opt, detail, &f, &sd);
        } else {
            holders(&v, (uint32_t)h, held, sizeof held, &f.local, &f.rank);
            snprintf(line, sizeof line, "%s; %s", detail, held);
            f.detail = line;
            f.holders = hs;
            f.nholders = holder_list(&v, (uint32_t)h, hs, sizeof hs / sizeof hs[0]);
            wsi_dumpcheck_add(&v, &f);
        }
    }
    for (size_t i = 0; rc == WS_OK && i < ws_manifest_count(actual); i++) {
        const ws_manifest_entry *a = ws_manifest_entry_at(actual, i);
        if (!ws_manifest_find(expected, a->name))
            wsi_dumpcheck_report(&v, WS_UNEXPECTED, a->name, NULL, -1, -1, -1,
                                "the engine holds it but the trainer's manifest does not list it");
    }
    if (rc == WS_OK) rc = wsi_warn_unseen_bits(expected, actual, r, err);
    ws_manifest_free(actual);
    sides_free(&sd);
    wsi_dumpcheck_close(&v);
    return rc;
}
