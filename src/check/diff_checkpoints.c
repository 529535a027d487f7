/* Checkpoint against checkpoint, element by element (ws_diff_checkpoints): the comparison
 * `weightsum diff A B` prints, in the library so the CLI and Python share it. Both sides are
 * read through file sources a chunk at a time (memory bounded by the chunk; a file that
 * shrinks while it is read is an error naming it, never SIGBUS). */
#include "digest.h"
#include "source.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static ws_err add(ws_report *r, ws_status s, const char *name, const char *detail,
                  ws_error *err) {
    ws_finding f = {.status = s, .tensor = name, .rank = -1, .row0 = -1, .row1 = -1,
                    .detail = detail};
    if (ws_report_add(r, &f) != WS_OK)
        return wsi_fail(err, WS_ERR_NOMEM, NULL, name, -1, "out of memory");
    return WS_OK;
}

/* Scratch of one comparison: the two sides' raw chunks and their canonical casts. */
typedef struct scratch {
    uint8_t *ra, *rb, *ca, *cb;
    wsi_readbuf ba, bb;
} scratch;

/* Elements per read: WSI_CHUNK_ELEMS, what the canonical casts take at once. */
#define CH ((uint64_t)WSI_CHUNK_ELEMS)

/* ws_diff_tensors of ta (in sa) and tb (in sb), read a chunk at a time. WS_ERR_SHAPE /
 * WS_ERR_DTYPE (with e filled) when not comparable; WS_ERR_IO naming the file that failed. */
static ws_err diff_tensor(const ws_source *sa, const wsi_src_tensor *ta, const ws_source *sb,
                          const wsi_src_tensor *tb, scratch *s, ws_diff *out, ws_error *err) {
    ws_diff_init(out);
    if (ta->ndim != tb->ndim || memcmp(ta->shape, tb->shape, sizeof(uint64_t) * (size_t)ta->ndim))
        return wsi_fail(err, WS_ERR_SHAPE, tb->file, tb->name, -1, "shapes differ");
    bool same = ta->dtype == tb->dtype;
    ws_dtype ca = ws_canonical_dtype(ta->dtype, WS_CANON_BF16);
    ws_dtype cb = ws_canonical_dtype(tb->dtype, WS_CANON_BF16);
    if (!same && ca != cb)
        return wsi_fail(err, WS_ERR_DTYPE, tb->file, tb->name, -1,
                        "dtypes %s and %s have no common canonical form",
                        ws_dtype_name(ta->dtype), ws_dtype_name(tb->dtype));
    ws_err rc = WS_OK;
    for (uint64_t at = 0; at < ta->numel && rc == WS_OK; at += CH) {
        uint64_t k = ta->numel - at < CH ? ta->numel - at : CH;
        rc = wsi_source_read(sa, ta, at, k, s->ra, &s->ba, err);
        if (rc == WS_OK) rc = wsi_source_read(sb, tb, at, k, s->rb, &s->bb, err);
        if (rc != WS_OK) break;
        if (same) {
            wsi_diff_update(out, ta->dtype, at, s->ra, s->rb, k);
            continue;
        }
        wsi_cast_to_canonical(ta->dtype, WS_CANON_BF16, s->ra, k, s->ca, NULL);
        wsi_cast_to_canonical(tb->dtype, WS_CANON_BF16, s->rb, k, s->cb, NULL);
        wsi_diff_update(out, ca, at, s->ca, s->cb, k);
    }
    return rc;
}

/* The mismatch finding of tensor t with differences d. */
static ws_err add_mismatch(ws_report *r, const ws_tensor *t, const ws_diff *d, ws_error *err) {
    uint64_t co[WS_MAX_DIMS];
    char cs[200], detail[512];
    wsi_unravel(d->first, t->ndim, t->shape, co);
    wsi_shape_str(t->ndim, co, cs, sizeof cs);
    snprintf(detail, sizeof detail,
             "%llu of %llu elements differ; first at %llu %s: %.9g vs %.9g; max abs %.6g, "
             "max ulp %llu",
             (unsigned long long)d->differ, (unsigned long long)d->compared,
             (unsigned long long)d->first, cs, d->first_a, d->first_b, d->max_abs,
             (unsigned long long)d->max_ulp);
    ws_finding f = {.status = WS_MISMATCH, .tensor = t->name, .rank = -1, .row0 = -1,
                    .row1 = -1, .detail = detail, .has_element = 1, .element = d->first,
                    .ndim = t->ndim, .expected_value = d->first_a,
                    .found_value = d->first_b, .differ = d->differ};
    for (int k = 0; k < t->ndim; k++) f.coords[k] = co[k];
    if (ws_report_add(r, &f) != WS_OK)
        return wsi_fail(err, WS_ERR_NOMEM, NULL, t->name, -1, "out of memory");
    return WS_OK;
}

ws_err ws_diff_checkpoints_read(const ws_ckpt *a, const ws_ckpt *b, int read_mode,
                                ws_progress_fn progress, void *progress_user, ws_report *r,
                                ws_error *err) {
    if (!a || !b || !r) return wsi_fail(err, WS_ERR_ARG, NULL, NULL, -1, "NULL argument");
    ws_source *sa = NULL, *sb = NULL;
    ws_err rc = wsi_source_ckpt(a, read_mode, &sa, err);
    if (rc == WS_OK) rc = wsi_source_ckpt(b, read_mode, &sb, err);
    scratch s = {0};
    if (rc == WS_OK) {
        s.ra = malloc(CH * 8);
        s.rb = malloc(CH * 8);
        s.ca = malloc(CH * 2);
        s.cb = malloc(CH * 2);
        if (!s.ra || !s.rb || !s.ca || !s.cb)
            rc = wsi_fail(err, WS_ERR_NOMEM, NULL, NULL, -1, "out of memory");
    }
    uint64_t total = 0, done = 0;
    for (size_t i = 0; i < ws_ckpt_count(a); i++) total += ws_ckpt_tensor(a, i)->nbytes;
    for (size_t i = 0; i < ws_ckpt_count(a) && rc == WS_OK; i++) {
        const ws_tensor *ta = ws_ckpt_tensor(a, i);
        if (progress) progress(progress_user, done, total);
        done += ta->nbytes;
        if (!ws_ckpt_find(b, ta->name)) {
            rc = add(r, WS_MISSING, ta->name, "only in A", err);
            continue;
        }
        ws_diff d;
        ws_error e;
        ws_err dr = diff_tensor(sa, wsi_source_find(sa, ta->name), sb,
                                wsi_source_find(sb, ta->name), &s, &d, &e);
        if (dr == WS_ERR_SHAPE || dr == WS_ERR_DTYPE)
            rc = add(r, dr == WS_ERR_SHAPE ? WS_SHAPE_DIFFERS : WS_DTYPE_DIFFERS, ta->name, e.what,
                     err);
        else if (dr != WS_OK) {
            if (err) *err = e;
            rc = dr;
        } else if (d.differ == 0)
            ws_report_count_match(r, 1);
        else
            rc = add_mismatch(r, ta, &d, err);
    }
    for (size_t i = 0; i < ws_ckpt_count(b) && rc == WS_OK; i++)
        if (!ws_ckpt_find(a, ws_ckpt_tensor(b, i)->name))
            rc = add(r, WS_UNEXPECTED, ws_ckpt_tensor(b, i)->name, "only in B", err);
    free(s.ra);
    free(s.rb);
    free(s.ca);
    free(s.cb);
    wsi_readbuf_free(&s.ba);
    wsi_readbuf_free(&s.bb);
    ws_source_free(sa);
    ws_source_free(sb);
    return rc;
}

ws_err ws_diff_checkpoints(const ws_ckpt *a, const ws_ckpt *b, ws_progress_fn progress,
                           void *progress_user, ws_report *r, ws_error *err) {
    return ws_diff_checkpoints_read(a, b, WS_READ_DEFAULT, progress, progress_user, r, err);
}
