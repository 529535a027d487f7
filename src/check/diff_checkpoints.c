/* Checkpoint against checkpoint, element by element (ws_diff_checkpoints): the comparison
 * `weightsum diff A B` prints, in the library so the CLI and Python share it. */
#include "internal.h"

#include <stdio.h>

static ws_err add(ws_report *r, ws_status s, const char *name, const char *detail,
                  ws_error *err) {
    ws_finding f = {.status = s, .tensor = name, .rank = -1, .row0 = -1, .row1 = -1,
                    .detail = detail};
    if (ws_report_add(r, &f) != WS_OK)
        return wsi_fail(err, WS_ERR_NOMEM, NULL, name, -1, "out of memory");
    return WS_OK;
}

ws_err ws_diff_checkpoints(const ws_ckpt *a, const ws_ckpt *b, ws_progress_fn progress,
                           void *progress_user, ws_report *r, ws_error *err) {
    if (!a || !b || !r) return wsi_fail(err, WS_ERR_ARG, NULL, NULL, -1, "NULL argument");
    uint64_t total = 0, done = 0;
    for (size_t i = 0; i < ws_ckpt_count(a); i++) total += ws_ckpt_tensor(a, i)->nbytes;
    ws_err rc = WS_OK;
    for (size_t i = 0; i < ws_ckpt_count(a) && rc == WS_OK; i++) {
        const ws_tensor *ta = ws_ckpt_tensor(a, i), *tb = ws_ckpt_find(b, ta->name);
        if (progress) progress(progress_user, done, total);
        done += ta->nbytes;
        if (!tb) {
            rc = add(r, WS_MISSING, ta->name, "only in A", err);
            continue;
        }
        ws_diff d;
        ws_error e;
        ws_err dr = ws_diff_tensors(ta, tb, &d, &e);
        if (dr == WS_ERR_SHAPE || dr == WS_ERR_DTYPE) {
            rc = add(r, dr == WS_ERR_SHAPE ? WS_SHAPE_DIFFERS : WS_DTYPE_DIFFERS, ta->name, e.what,
                     err);
            continue;
        }
        if (dr != WS_OK) {
            if (err) *err = e;
            return dr;
        }
        if (d.differ == 0) {
            ws_report_count_match(r, 1);
            continue;
        }
        uint64_t co[WS_MAX_DIMS];
        char cs[200], detail[512];
        wsi_unravel(d.first, ta->ndim, ta->shape, co);
        wsi_shape_str(ta->ndim, co, cs, sizeof cs);
        snprintf(detail, sizeof detail,
                 "%llu of %llu elements differ; first at %llu %s: %.9g vs %.9g; max abs %.6g, "
                 "max ulp %llu",
                 (unsigned long long)d.differ, (unsigned long long)d.compared,
                 (unsigned long long)d.first, cs, d.first_a, d.first_b, d.max_abs,
                 (unsigned long long)d.max_ulp);
        ws_finding f = {.status = WS_MISMATCH, .tensor = ta->name, .rank = -1, .row0 = -1,
                        .row1 = -1, .detail = detail, .has_element = 1, .element = d.first,
                        .ndim = ta->ndim, .expected_value = d.first_a,
                        .found_value = d.first_b, .differ = d.differ};
        for (int k = 0; k < ta->ndim; k++) f.coords[k] = co[k];
        if (ws_report_add(r, &f) != WS_OK)
            rc = wsi_fail(err, WS_ERR_NOMEM, NULL, ta->name, -1, "out of memory");
    }
    for (size_t i = 0; i < ws_ckpt_count(b) && rc == WS_OK; i++)
        if (!ws_ckpt_find(a, ws_ckpt_tensor(b, i)->name))
            rc = add(r, WS_UNEXPECTED, ws_ckpt_tensor(b, i)->name, "only in B", err);
    return rc;
}
