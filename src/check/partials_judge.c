/*
 * Judging merged partials (ws_partials_judge, ws_partials_manifest): the structural findings
 * (missing ranks and tensors, wrong shapes, unexpected tensors, non-zero padding, coverage),
 * each canonical tensor's fast digest as the sum of its replica-0 pieces' partials, every
 * replica piece against its replica-0 twin, then per tensor against the trainer's manifest.
 */
#include "partials.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct judge {
    const wsi_build_opts *o;
    const ws_plan *p;
    const ws_partials *pa;
    ws_report *r;
    ws_err rc;
    ws_error *err;
} judge;

static void say(judge *j, ws_status s, const char *tensor, const char *local, int rank,
                int64_t row0, int64_t row1, const char *fmt, ...)
    __attribute__((format(printf, 8, 9)));
static void say(judge *j, ws_status s, const char *tensor, const char *local, int rank,
                int64_t row0, int64_t row1, const char *fmt, ...) {
    if (j->rc != WS_OK || !j->r) return;
    char detail[768];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(detail, sizeof detail, fmt, ap);
    va_end(ap);
    j->rc = wsi_report_add(j->r, s, tensor, local, rank, row0, row1, detail, j->err);
}

/* HF tensor a local tensor holds (its first piece's), for naming findings. */
static const char *hf_of_local(const ws_layout *l, size_t local) {
    for (size_t i = 0; i < ws_layout_piece_count(l); i++)
        if (ws_layout_piece(l, i)->local == local)
            return ws_layout_hf(l, ws_layout_piece(l, i)->hf)->name;
    return "";
}

static ws_err check_same_plan(const ws_plan *p, const ws_partials *pa, ws_error *err) {
    if (memcmp(p->fp, pa->fp, WSI_FP_BYTES) != 0 || pa->np != p->np || pa->nl != p->nl ||
        pa->tp != (uint32_t)p->tp)
        return wsi_fail(err, WS_ERR_ARG, NULL, NULL, -1,
                        "partials of another layout (family, tp or config differ from the "
                        "plan's)");
    return WS_OK;
}

/* Findings that need no digest: ranks without partials, local tensors missing / misshapen,
 * engine tensors that map to nothing, aliases that differ, padding, coverage. */
static void structural(judge *j) {
    const ws_plan *p = j->p;
    const ws_partials *pa = j->pa;
    const ws_layout *l = p->l;
    for (int rank = 0; rank < p->tp; rank++)
        if (!pa->ranks[rank])
            say(j, WS_MISSING, "", NULL, rank, -1, -1,
                "no model-rank-%d-part-*.safetensors file: rank %d's tensors are missing", rank,
                rank);
    for (size_t i = 0; i < pa->nextras; i++) {
        const wsi_extra *e = &pa->extras[i];
        if (e->status == WS_MATCH) continue; /* the name a local was read under: no finding */
        if (e->status == WS_UNEXPECTED)
            say(j, WS_UNEXPECTED, e->name, e->name, e->rank, -1, -1,
                "engine tensor maps to nothing in the %s layout", ws_layout_family(l));
        else if (e->status == WS_MISMATCH || e->status == WS_SHAPE_DIFFERS)
            /* an engine buffer of known values (vLLM's _expert_map); other is the detail */
            say(j, (ws_status)e->status, e->name, e->name, e->rank, -1, -1, "%s",
                e->other ? e->other : "");
        else
            say(j, WS_REPLICA_MISMATCH, hf_of_local(l, e->local), e->name, e->rank, -1, -1,
                "'%s' and '%s' are one tied tensor but differ", e->name, e->other);
    }
    for (size_t li = 0; li < p->nl; li++) {
        const ws_local_desc *ld = ws_layout_local(l, li);
        const wsi_local_fact *f = &pa->locals[li];
        if (f->state == WSI_LOCAL_BAD_SHAPE) {
            char se[160], sa[160], sz[96];
            wsi_shape_str(ld->ndim, ld->shape, se, sizeof se);
            wsi_shape_str(f->ndim, f->shape, sa, sizeof sa);
            say(j, WS_SHAPE_DIFFERS, hf_of_local(l, li), wsi_partials_local_name(pa, l, (uint32_t)li),
                ld->rank, -1, -1, "local shape %s expected for %s, %s found", se,
                wsi_layout_sizes(l, sz, sizeof sz), sa);
        } else if (f->state == WSI_LOCAL_MISSING) {
            say(j, WS_MISSING, hf_of_local(l, li), ld->name, ld->rank, -1, -1,
                "engine tensor absent from rank %d's files", ld->rank);
        } else if (f->state == WSI_LOCAL_OK && f->pad_bad) {
            say(j, WS_PADDING_NONZERO, hf_of_local(l, li),
                wsi_partials_local_name(pa, l, (uint32_t)li), ld->rank, -1, -1,
                "padding rows %llu..%llu of the local tensor must be zero; %llu of them are "
                "not, the first is local row %llu",
                (unsigned long long)f->pad0, (unsigned long long)f->pad1,
                (unsigned long long)f->pad_bad, (unsigned long long)f->pad_first);
        }
    }
}

static const char *why_missing(uint8_t state) {
    return state == WSI_LOCAL_BAD_SHAPE ? "has the wrong shape" : "is missing";
}

/* Replica k of a rectangle against replica 0 of the same rectangle. */
static void check_copies(judge *j, size_t h) {
    const ws_plan *p = j->p;
    const ws_layout *l = p->l;
    const wsi_plan *pl = &p->plans[h];
    const ws_hf_desc *hf = ws_layout_hf(l, h);
    for (size_t k = 0; k < pl->n_copies; k++) {
        uint32_t ci = pl->copies[k], oi = p->twin[ci];
        if (oi == UINT32_MAX) continue;
        const ws_piece *c = ws_layout_piece(l, ci), *o = ws_layout_piece(l, oi);
        const ws_local_desc *cd = ws_layout_local(l, c->local), *od = ws_layout_local(l, o->local);
        const wsi_local_fact *fc = &j->pa->locals[c->local], *fo = &j->pa->locals[o->local];
        const char *cname = wsi_partials_local_name(j->pa, l, c->local);
        const char *oname = wsi_partials_local_name(j->pa, l, o->local);
        if (fc->state != WSI_LOCAL_OK || fo->state != WSI_LOCAL_OK) {
            if (fo->state == WSI_LOCAL_OK)
                say(j, WS_MISSING, hf->name, cname, cd->rank, (int64_t)c->t_row0,
                    (int64_t)(c->t_row0 + c->rows),
                    "replica %u cannot be checked: engine tensor %s", c->replica,
                    why_missing(fc->state));
            continue;
        }
        ws_canon policy = (ws_canon)j->pa->canon;
        ws_dtype dc = (ws_dtype)fc->dtype, dd = (ws_dtype)fo->dtype;
        if (ws_canonical_dtype(dc, ws_canon_for_tensor(hf->name, dc, policy)) !=
            ws_canonical_dtype(dd, ws_canon_for_tensor(hf->name, dd, policy))) {
            say(j, WS_DTYPE_DIFFERS, hf->name, cname, cd->rank, -1, -1,
                "replica %u is %s, replica 0 is %s", c->replica, ws_dtype_name((ws_dtype)fc->dtype),
                ws_dtype_name((ws_dtype)fo->dtype));
            continue;
        }
        const wsi_piece_part *pc = &j->pa->pieces[ci], *po = &j->pa->pieces[oi];
        if (!pc->done || !po->done) continue;
        if (memcmp(&pc->fast, &po->fast, sizeof pc->fast) == 0) continue;
        char detail[600];
        int64_t r0 = (int64_t)c->t_row0, r1 = (int64_t)(c->t_row0 + c->rows);
        if (j->o && j->o->replica_detail &&
            j->o->replica_detail(j->o->ctx, ci, oi, detail, sizeof detail, &r0, &r1))
            say(j, WS_REPLICA_MISMATCH, hf->name, cname, cd->rank, r0, r1, "%s", detail);
        else
            say(j, WS_REPLICA_MISMATCH, hf->name, cname, cd->rank, (int64_t)c->t_row0,
                (int64_t)(c->t_row0 + c->rows),
                "replica %u differs from replica 0 (%s on rank %d): rows %llu..%llu of %s "
                "(their fast digests differ)",
                c->replica, oname, od->rank, (unsigned long long)c->t_row0,
                (unsigned long long)(c->t_row0 + c->rows), hf->name);
    }
}

/* The digest of HF tensor h from its replica-0 pieces, or false (reported) when it cannot be
 * rebuilt. */
static bool rebuild(judge *j, size_t h, ws_manifest_entry *en) {
    const ws_plan *p = j->p;
    const ws_layout *l = p->l;
    const wsi_plan *pl = &p->plans[h];
    const ws_hf_desc *hf = ws_layout_hf(l, h);
    ws_canon policy = (ws_canon)j->pa->canon;
    for (size_t k = p->hole0[h]; k < p->hole0[h + 1]; k++) {
        const wsi_hole *ho = &p->holes[k];
        say(j, WS_COVERAGE_GAP, hf->name, NULL, -1, (int64_t)ho->row0, (int64_t)ho->row1,
            "%s: rows %llu..%llu, columns %llu..%llu",
            ho->overlap ? "covered twice" : "covered by no piece", (unsigned long long)ho->row0,
            (unsigned long long)ho->row1, (unsigned long long)ho->col0,
            (unsigned long long)ho->col1);
    }
    ws_dtype dtype = WS_F32;
    memset(en, 0, sizeof *en);
    for (size_t k = 0; k < pl->n_primary; k++) {
        const ws_piece *pc = ws_layout_piece(l, pl->primary[k]);
        const ws_local_desc *ld = ws_layout_local(l, pc->local);
        const wsi_local_fact *f = &j->pa->locals[pc->local];
        if (f->state != WSI_LOCAL_OK) {
            say(j, WS_MISSING, hf->name, wsi_partials_local_name(j->pa, l, pc->local), ld->rank,
                (int64_t)pc->t_row0,
                (int64_t)(pc->t_row0 + pc->rows), "cannot be rebuilt: engine tensor %s on rank %d %s",
                wsi_partials_local_name(j->pa, l, pc->local), ld->rank, why_missing(f->state));
            return false;
        }
        ws_dtype dt = (ws_dtype)f->dtype;
        if (k == 0) dtype = dt;
        else if (ws_canonical_dtype(dt, ws_canon_for_tensor(hf->name, dt, policy)) !=
                 ws_canonical_dtype(dtype, ws_canon_for_tensor(hf->name, dtype, policy))) {
            say(j, WS_DTYPE_DIFFERS, hf->name, wsi_partials_local_name(j->pa, l, pc->local),
                ld->rank, -1, -1, "pieces disagree on dtype: %s here, %s elsewhere", ws_dtype_name(dt),
                ws_dtype_name(dtype));
            return false;
        }
        const wsi_piece_part *pp = &j->pa->pieces[pl->primary[k]];
        if (j->o && !j->o->digests) continue;
        if (!pp->done) return false; /* (cannot happen for a local that is OK) */
        ws_fast_add(&en->digest.fast, &pp->fast, NULL);
        en->stats.nan += pp->stats.nan;
        en->stats.inf += pp->stats.inf;
    }
    en->name = (char *)hf->name;
    en->digest.algos = j->o && !j->o->digests ? 0 : WS_ALGO_FAST;
    en->dtype = dtype;
    en->canonical_dtype = ws_canonical_dtype(dtype, ws_canon_for_tensor(hf->name, dtype, policy));
    en->ndim = hf->ndim;
    memcpy(en->shape, hf->shape, sizeof en->shape);
    return true;
}

/* Structural and replica findings into j, and the manifest of what can be rebuilt. */
ws_err wsi_partials_build(const ws_plan *p, const ws_partials *pa, const char *source,
                          ws_report *r, const wsi_build_opts *o, ws_manifest **out,
                          ws_error *err) {
    *out = NULL;
    ws_err rc = check_same_plan(p, pa, err);
    if (rc != WS_OK) return rc;
    judge j = {.o = o, .p = p, .pa = pa, .r = r, .rc = WS_OK, .err = err};
    ws_manifest *m = ws_manifest_new((ws_canon)pa->canon, WS_ALGO_FAST, pa->key_id, source);
    if (!m) return wsi_fail(err, WS_ERR_NOMEM, NULL, NULL, -1, "out of memory");
    structural(&j);
    for (size_t h = 0; h < p->nh && j.rc == WS_OK; h++) {
        if (ws_layout_hf(p->l, h)->tied_to) continue;
        check_copies(&j, h);
        ws_manifest_entry en;
        if (rebuild(&j, h, &en) && j.rc == WS_OK && ws_manifest_add(m, &en) != WS_OK)
            j.rc = wsi_fail(err, WS_ERR_NOMEM, NULL, NULL, -1, "out of memory");
    }
    if (j.rc != WS_OK) {
        ws_manifest_free(m);
        return j.rc;
    }
    *out = m;
    return WS_OK;
}

ws_err ws_partials_manifest(const ws_plan *p, const ws_partials *merged, const char *source,
                            ws_manifest **out, ws_report *r, ws_error *err) {
    if (!p || !merged || !out) return wsi_fail(err, WS_ERR_ARG, NULL, NULL, -1, "NULL argument");
    return wsi_partials_build(p, merged, source ? source : "partials", r, NULL, out, err);
}

ws_err ws_partials_judge(const ws_plan *p, const ws_partials *merged,
                         const ws_manifest *expected, ws_report *r, ws_error *err) {
    if (!p || !merged || !expected || !r)
        return wsi_fail(err, WS_ERR_ARG, NULL, NULL, -1, "NULL argument");
    if (!(ws_manifest_algos(expected) & WS_ALGO_FAST))
        return wsi_fail(err, WS_ERR_ARG, NULL, NULL, -1,
                        "partials are judged on fast digests; the manifest holds none");
    ws_manifest *actual = NULL;
    ws_err rc = wsi_partials_build(p, merged, "partials", r, NULL, &actual, err);
    bool same_key = true;
    if (rc == WS_OK) rc = wsi_check_comparable(expected, actual, &same_key, err);
    if (rc == WS_OK && !same_key)
        rc = wsi_fail(err, WS_ERR_ARG, NULL, NULL, -1,
                      "the manifest's fast digests use key %s, the partials key %s",
                      ws_manifest_key_id(expected), merged->key_id);
    const ws_layout *l = p->l;
    char detail[512];
    judge j = {.p = p, .pa = merged, .r = r, .rc = rc, .err = err};
    for (size_t i = 0; j.rc == WS_OK && i < ws_manifest_count(expected); i++) {
        const ws_manifest_entry *e = ws_manifest_entry_at(expected, i);
        long h = ws_layout_find_hf(l, e->name);
        if (h < 0) {
            say(&j, WS_MISSING, e->name, NULL, -1, -1, -1,
                "the %s layout of this config holds no such tensor", ws_layout_family(l));
            continue;
        }
        const ws_hf_desc *hf = ws_layout_hf(l, (size_t)h);
        const char *name = hf->tied_to ? hf->tied_to : hf->name;
        const ws_manifest_entry *a = ws_manifest_find(actual, name);
        if (!a) continue; /* could not be rebuilt: already reported with its reason */
        ws_status s = wsi_compare_entry(e, a, same_key, detail, sizeof detail);
        if (s == WS_MATCH) {
            ws_report_count_match(r, 1);
        } else if (hf->tied_to) {
            say(&j, s, e->name, NULL, -1, -1, -1,
                "the engine ties it to %s, which differs from the trainer's %s: %s", hf->tied_to,
                e->name, detail);
        } else {
            /* name the holders: the replica-0 pieces, with their rows */
            const wsi_plan *pl = &p->plans[h];
            char held[512];
            size_t len = (size_t)snprintf(held, sizeof held, "held by ");
            const char *local = NULL;
            int rank = -1;
            for (size_t k = 0; k < pl->n_primary && len < sizeof held; k++) {
                const ws_piece *pc = ws_layout_piece(l, pl->primary[k]);
                const ws_local_desc *ld = ws_layout_local(l, pc->local);
                const char *read = wsi_partials_local_name(merged, l, pc->local);
                if (k == 0) local = read, rank = ld->rank;
                else if (rank != ld->rank) rank = -1;
                if (k == 4) {
                    len += (size_t)snprintf(held + len, sizeof held - len,
                                            "; and %zu more pieces", pl->n_primary - 4);
                    break;
                }
                len += (size_t)snprintf(held + len, sizeof held - len, "%s%s rows %llu..%llu on rank %d",
                                        k ? "; " : "", read, (unsigned long long)pc->l_row0,
                                        (unsigned long long)(pc->l_row0 + pc->rows), ld->rank);
            }
            say(&j, s, e->name, local, rank, -1, -1, "%s; %s", detail, held);
        }
    }
    for (size_t i = 0; j.rc == WS_OK && i < ws_manifest_count(actual); i++) {
        const ws_manifest_entry *a = ws_manifest_entry_at(actual, i);
        if (!ws_manifest_find(expected, a->name))
            say(&j, WS_UNEXPECTED, a->name, NULL, -1, -1, -1,
                "the engine holds it but the trainer's manifest does not list it");
    }
    /* bits both sides hold that the bf16 policy could not see: a warning, as verify gives */
    if (j.rc == WS_OK) j.rc = wsi_warn_unseen_bits(expected, actual, r, err);
    ws_manifest_free(actual);
    return j.rc;
}
