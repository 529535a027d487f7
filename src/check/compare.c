/* Manifest against manifest: the verdict per tensor. */
#include "internal.h"
#include "report_values.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void wsi_shape_str(int ndim, const uint64_t *shape, char *buf, size_t n) {
    size_t len = (size_t)snprintf(buf, n, "[");
    for (int d = 0; d < ndim && len < n; d++)
        len += (size_t)snprintf(buf + len, n - len, d ? ", %llu" : "%llu",
                                (unsigned long long)shape[d]);
    if (len < n) snprintf(buf + len, n - len, "]");
}

ws_status wsi_compare_entry(const ws_manifest_entry *e, const ws_manifest_entry *a,
                            bool same_key, char *detail, size_t n) {
    if (e->ndim >= 0 && a->ndim >= 0 &&
        (e->ndim != a->ndim || memcmp(e->shape, a->shape, sizeof(uint64_t) * (size_t)e->ndim))) {
        char se[160], sa[160];
        wsi_shape_str(e->ndim, e->shape, se, sizeof se);
        wsi_shape_str(a->ndim, a->shape, sa, sizeof sa);
        snprintf(detail, n, "shape %s expected, %s found", se, sa);
        return WS_SHAPE_DIFFERS;
    }
    if (ws_dtype_name(e->canonical_dtype) && ws_dtype_name(a->canonical_dtype) &&
        e->canonical_dtype != a->canonical_dtype) {
        snprintf(detail, n, "canonical dtype %s expected, %s found",
                 ws_dtype_name(e->canonical_dtype), ws_dtype_name(a->canonical_dtype));
        return WS_DTYPE_DIFFERS;
    }
    /* Every digest both sides hold is compared: a manifest whose sha256 is right and whose
     * fast digest is wrong (or the reverse) contradicts itself, and that is a finding too. */
    unsigned both = e->digest.algos & a->digest.algos;
    if (!same_key) both &= ~(unsigned)WS_ALGO_FAST;
    bool sha_bad = (both & WS_ALGO_SHA256) && memcmp(e->digest.sha256, a->digest.sha256, 32);
    bool fast_bad = (both & WS_ALGO_FAST) &&
                    memcmp(&e->digest.fast, &a->digest.fast, sizeof e->digest.fast);
    char he[65], ha[65];
    if (sha_bad) {
        ws_sha256_hex(e->digest.sha256, he);
        ws_sha256_hex(a->digest.sha256, ha);
        snprintf(detail, n, "sha256 %s expected, %s found%s", he, ha,
                 (both & WS_ALGO_FAST) && !fast_bad
                     ? " (the fast digest matches: the expected digests disagree)"
                     : "");
        return WS_MISMATCH;
    }
    if (fast_bad) {
        ws_fast_hex(&e->digest.fast, he);
        ws_fast_hex(&a->digest.fast, ha);
        snprintf(detail, n, "fast digest %s expected, %s found%s", he, ha,
                 both & WS_ALGO_SHA256 ? " (the sha256 matches: the expected digests disagree)"
                                       : "");
        return WS_MISMATCH;
    }
    if (!both) {
        snprintf(detail, n, "no digest algorithm (and key) in common between the two sides");
        return WS_NOT_COMPARABLE;
    }
    detail[0] = 0;
    return WS_MATCH;
}

ws_err wsi_check_comparable(const ws_manifest *exp, const ws_manifest *act, bool *same_key,
                            ws_error *err) {
    if (ws_manifest_canon(exp) != ws_manifest_canon(act))
        return wsi_fail(err, WS_ERR_ARG, NULL, NULL, -1,
                        "canonical policies differ (%s vs %s): digests are not comparable",
                        ws_canon_name(ws_manifest_canon(exp)),
                        ws_canon_name(ws_manifest_canon(act)));
    const char *ke = ws_manifest_key_id(exp), *ka = ws_manifest_key_id(act);
    /* a line-form manifest carries no key id: it was made with the key the caller holds */
    *same_key = !ke || !ka || strcmp(ke, ka) == 0;
    return WS_OK;
}

/* Stored wider than bf16: the bf16 cast drops bits of it. */
static bool wider_than_bf16(ws_dtype d) { return d == WS_F16 || d == WS_F32 || d == WS_F64; }

ws_err wsi_warn_unseen_bits(const ws_manifest *exp, const ws_manifest *act, ws_report *r,
                            ws_error *err) {
    if (ws_manifest_canon(exp) != WS_CANON_BF16) return WS_OK;
    size_t n = 0, cap = ws_manifest_count(exp);
    const char **names = calloc(cap + 1, sizeof *names);
    if (!names) return wsi_fail(err, WS_ERR_NOMEM, NULL, NULL, -1, "out of memory");
    ws_dtype de = WS_DTYPE__COUNT, da = WS_DTYPE__COUNT; /* the first one's, for the line */
    for (size_t i = 0; i < cap; i++) {
        const ws_manifest_entry *e = ws_manifest_entry_at(exp, i);
        const ws_manifest_entry *a = ws_manifest_find(act, e->name);
        /* what both sides are known to hold: the dtypes both manifests record (a line-form
         * manifest records none), each cast to bf16 */
        if (!a || !wider_than_bf16(e->dtype) || !wider_than_bf16(a->dtype) ||
            e->canonical_dtype != WS_BF16 || a->canonical_dtype != WS_BF16)
            continue;
        if (!n) de = e->dtype, da = a->dtype;
        names[n++] = e->name;
    }
    ws_err rc = WS_OK;
    if (n) {
        char line[640], held[200];
        if (de == da) snprintf(held, sizeof held, "%s: %s", names[0], ws_dtype_name(de));
        else snprintf(held, sizeof held, "%s: %s expected, %s found", names[0],
                      ws_dtype_name(de), ws_dtype_name(da));
        snprintf(line, sizeof line,
                 "%zu tensor%s stored wider than bf16 on both sides (%s%s) %s compared as "
                 "bf16, so differences in the low bits both sides hold were not seen; to "
                 "compare every bit, hash with --canonical native and verify against that",
                 n, n == 1 ? "" : "s", held, n > 1 ? ", ..." : "", n == 1 ? "was" : "were");
        ws_warning w = {.kind = "low_bits_unchecked", .detail = line, .nnames = n,
                        .names = names};
        if (ws_report_warn(r, &w) != WS_OK)
            rc = wsi_fail(err, WS_ERR_NOMEM, NULL, NULL, -1, "out of memory");
    }
    free(names);
    return rc;
}

ws_err wsi_report_add(ws_report *r, ws_status s, const char *tensor, const char *local,
                      int rank, int64_t row0, int64_t row1, const char *detail, ws_error *err) {
    ws_finding f = {.status = s, .tensor = tensor, .local = local, .rank = rank, .row0 = row0,
                    .row1 = row1, .detail = detail};
    if (ws_report_add(r, &f) != WS_OK)
        return wsi_fail(err, WS_ERR_NOMEM, NULL, tensor, -1, "out of memory");
    return WS_OK;
}

ws_err ws_compare_manifests(const ws_manifest *exp, const ws_manifest *act, ws_report *r,
                            ws_error *err) {
    if (!exp || !act || !r) return wsi_fail(err, WS_ERR_ARG, NULL, NULL, -1, "NULL argument");
    bool same_key;
    ws_err rc = wsi_check_comparable(exp, act, &same_key, err);
    char detail[512];
    for (size_t i = 0; i < ws_manifest_count(exp) && rc == WS_OK; i++) {
        const ws_manifest_entry *e = ws_manifest_entry_at(exp, i);
        const ws_manifest_entry *a = ws_manifest_find(act, e->name);
        if (!a) {
            rc = wsi_report_add(r, WS_MISSING, e->name, NULL, -1, -1, -1,
                                "expected tensor is absent", err);
            continue;
        }
        ws_status s = wsi_compare_entry(e, a, same_key, detail, sizeof detail);
        if (s == WS_MATCH) {
            ws_report_count_match(r, 1);
            continue;
        }
        ws_finding f = {.status = s, .tensor = e->name, .rank = -1, .row0 = -1, .row1 = -1,
                        .detail = detail};
        char he[65], ha[65];
        if (s == WS_MISMATCH) wsi_finding_digests(&f, e, a, same_key, he, ha);
        if (ws_report_add(r, &f) != WS_OK)
            rc = wsi_fail(err, WS_ERR_NOMEM, NULL, e->name, -1, "out of memory");
    }
    for (size_t i = 0; i < ws_manifest_count(act) && rc == WS_OK; i++) {
        const ws_manifest_entry *a = ws_manifest_entry_at(act, i);
        if (!ws_manifest_find(exp, a->name))
            rc = wsi_report_add(r, WS_UNEXPECTED, a->name, NULL, -1, -1, -1,
                                "tensor present but not in the expected manifest", err);
    }
    if (rc == WS_OK) rc = wsi_warn_unseen_bits(exp, act, r, err);
    return rc;
}
