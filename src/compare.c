/* Manifest against manifest: the verdict per tensor. */
#include "internal.h"

#include <stdio.h>
#include <string.h>

static void shape_str(const ws_manifest_entry *e, char *buf, size_t n) {
    size_t len = (size_t)snprintf(buf, n, "[");
    for (int d = 0; d < e->ndim && len < n; d++)
        len += (size_t)snprintf(buf + len, n - len, d ? ", %llu" : "%llu",
                                (unsigned long long)e->shape[d]);
    if (len < n) snprintf(buf + len, n - len, "]");
}

static ws_err add(ws_report *r, ws_status s, const char *tensor, const char *detail) {
    ws_finding f = {.status = s, .tensor = tensor, .rank = -1, .row0 = -1, .row1 = -1,
                    .detail = detail};
    return ws_report_add(r, &f);
}

ws_err ws_compare_manifests(const ws_manifest *exp, const ws_manifest *act, ws_report *r,
                            ws_error *err) {
    if (!exp || !act || !r) return wsi_fail(err, WS_ERR_ARG, NULL, NULL, -1, "NULL argument");
    if (ws_manifest_canon(exp) != ws_manifest_canon(act))
        return wsi_fail(err, WS_ERR_ARG, NULL, NULL, -1,
                        "canonical policies differ (%s vs %s): digests are not comparable",
                        ws_canon_name(ws_manifest_canon(exp)),
                        ws_canon_name(ws_manifest_canon(act)));
    const char *ke = ws_manifest_key_id(exp), *ka = ws_manifest_key_id(act);
    /* a line-form manifest carries no key id: it was made with the key the caller holds */
    bool same_key = !ke || !ka || strcmp(ke, ka) == 0;
    char detail[512];
    ws_err rc = WS_OK;
    for (size_t i = 0; i < ws_manifest_count(exp) && rc == WS_OK; i++) {
        const ws_manifest_entry *e = ws_manifest_entry_at(exp, i);
        const ws_manifest_entry *a = ws_manifest_find(act, e->name);
        if (!a) {
            rc = add(r, WS_MISSING, e->name, "expected tensor is absent");
            continue;
        }
        if (e->ndim >= 0 && a->ndim >= 0 &&
            (e->ndim != a->ndim || memcmp(e->shape, a->shape, sizeof(uint64_t) * (size_t)e->ndim))) {
            char se[128], sa[128];
            shape_str(e, se, sizeof se);
            shape_str(a, sa, sizeof sa);
            snprintf(detail, sizeof detail, "shape %s expected, %s found", se, sa);
            rc = add(r, WS_SHAPE_DIFFERS, e->name, detail);
            continue;
        }
        if (ws_dtype_name(e->canonical_dtype) && ws_dtype_name(a->canonical_dtype) &&
            e->canonical_dtype != a->canonical_dtype) {
            snprintf(detail, sizeof detail, "canonical dtype %s expected, %s found",
                     ws_dtype_name(e->canonical_dtype), ws_dtype_name(a->canonical_dtype));
            rc = add(r, WS_DTYPE_DIFFERS, e->name, detail);
            continue;
        }
        bool compared = false, equal = true;
        char he[65], ha[65];
        if ((e->digest.algos & a->digest.algos & WS_ALGO_SHA256)) {
            compared = true;
            if (memcmp(e->digest.sha256, a->digest.sha256, 32) != 0) {
                equal = false;
                ws_sha256_hex(e->digest.sha256, he);
                ws_sha256_hex(a->digest.sha256, ha);
                snprintf(detail, sizeof detail, "sha256 %s expected, %s found", he, ha);
            }
        }
        if ((e->digest.algos & a->digest.algos & WS_ALGO_FAST) && same_key) {
            compared = true;
            if (memcmp(&e->digest.fast, &a->digest.fast, sizeof e->digest.fast) != 0 && equal) {
                equal = false;
                ws_fast_hex(&e->digest.fast, he);
                ws_fast_hex(&a->digest.fast, ha);
                snprintf(detail, sizeof detail, "fast digest %s expected, %s found", he, ha);
            }
        }
        if (!compared)
            rc = add(r, WS_NOT_COMPARABLE, e->name,
                     "no digest algorithm (and key) in common between the two sides");
        else if (!equal)
            rc = add(r, WS_MISMATCH, e->name, detail);
        else
            ws_report_count_match(r, 1);
    }
    for (size_t i = 0; i < ws_manifest_count(act) && rc == WS_OK; i++) {
        const ws_manifest_entry *a = ws_manifest_entry_at(act, i);
        if (!ws_manifest_find(exp, a->name))
            rc = add(r, WS_UNEXPECTED, a->name, "tensor present but not in the expected manifest");
    }
    return rc == WS_OK ? WS_OK : wsi_fail(err, rc, NULL, NULL, -1, "out of memory");
}
