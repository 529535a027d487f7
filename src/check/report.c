/* Reports: the findings of a comparison, as values and as JSON. */
#include "internal.h"
#include "report_values.h"

#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void wsi_report_vaddf(ws_report *r, void *lock, ws_status s, const char *tensor,
                      const char *local, int rank, int64_t row0, int64_t row1, const char *fmt,
                      va_list ap) {
    char detail[768];
    vsnprintf(detail, sizeof detail, fmt, ap);
    ws_finding f = {.status = s, .tensor = tensor, .local = local, .rank = rank, .row0 = row0,
                    .row1 = row1, .detail = detail};
    if (lock) pthread_mutex_lock(lock);
    if (r) ws_report_add(r, &f);
    if (lock) pthread_mutex_unlock(lock);
}

struct ws_report {
    ws_finding *items;
    size_t count, cap;
    uint64_t matched;
    ws_warning *warn;
    size_t nwarn;
};

static const char *const status_names[WS_STATUS__COUNT] = {
    "match",   "mismatch", "missing", "unexpected", "shape", "dtype", "replica_mismatch",
    "padding", "coverage", "not_comparable"};

const char *ws_status_name(ws_status s) {
    return (unsigned)s < WS_STATUS__COUNT ? status_names[s] : "unknown";
}

ws_report *ws_report_new(void) { return calloc(1, sizeof(ws_report)); }

/* Free what ws_report_add copied into f. */
static void finding_free(ws_finding *f) {
    free((char *)f->tensor);
    free((char *)f->local);
    free((char *)f->detail);
    free((char *)f->algorithm);
    free((char *)f->expected);
    free((char *)f->found);
    for (size_t k = 0; f->holders && k < f->nholders; k++) free((char *)f->holders[k].local);
    free((ws_holder *)f->holders);
}

static void warning_free(ws_warning *w) {
    free((char *)w->kind);
    free((char *)w->detail);
    for (size_t k = 0; w->names && k < w->nnames; k++) free((char *)w->names[k]);
    free((char **)w->names);
}

void ws_report_free(ws_report *r) {
    if (!r) return;
    for (size_t i = 0; i < r->count; i++) finding_free(&r->items[i]);
    for (size_t i = 0; i < r->nwarn; i++) warning_free(&r->warn[i]);
    free(r->warn);
    free(r->items);
    free(r);
}

/* dst = src (copied), or NULL; false when a copy failed. */
static bool copy_str(const char **dst, const char *src) {
    *dst = wsi_strdup(src);
    return !src || *dst;
}

ws_err ws_report_add(ws_report *r, const ws_finding *f) {
    if (!r || !f) return WS_ERR_ARG;
    if (f->nholders && !f->holders) return WS_ERR_ARG;
    if (r->count == r->cap) {
        size_t cap = r->cap ? 2 * r->cap : 16;
        ws_finding *g = realloc(r->items, cap * sizeof *g);
        if (!g) return WS_ERR_NOMEM;
        r->items = g;
        r->cap = cap;
    }
    ws_finding c = *f;
    c.holders = NULL;
    c.nholders = 0;
    /* every copy is tried (no short circuit), so a failure frees a finding with no junk */
    bool ok = true;
    ok &= copy_str(&c.tensor, f->tensor ? f->tensor : "");
    ok &= copy_str(&c.local, f->local);
    ok &= copy_str(&c.detail, f->detail ? f->detail : "");
    ok &= copy_str(&c.algorithm, f->algorithm);
    ok &= copy_str(&c.expected, f->expected);
    ok &= copy_str(&c.found, f->found);
    if (ok && f->nholders) {
        ws_holder *h = calloc(f->nholders, sizeof *h);
        ok = h != NULL;
        for (size_t k = 0; ok && k < f->nholders; k++) {
            h[k] = f->holders[k];
            ok = copy_str(&h[k].local, f->holders[k].local);
            c.nholders = k + 1;
        }
        c.holders = h;
    }
    if (c.ndim < 0 || c.ndim > WS_MAX_DIMS) c.ndim = 0;
    if (!ok) {
        finding_free(&c);
        return WS_ERR_NOMEM;
    }
    r->items[r->count++] = c;
    return WS_OK;
}

ws_err ws_report_warn(ws_report *r, const ws_warning *w) {
    if (!r || !w || !w->kind || !w->detail || (w->nnames && !w->names)) return WS_ERR_ARG;
    ws_warning *g = realloc(r->warn, (r->nwarn + 1) * sizeof *g);
    if (!g) return WS_ERR_NOMEM;
    r->warn = g;
    ws_warning c = {.kind = wsi_strdup(w->kind), .detail = wsi_strdup(w->detail)};
    const char **names = w->nnames ? calloc(w->nnames, sizeof *names) : NULL;
    bool ok = c.kind && c.detail && (!w->nnames || names);
    c.names = names;
    for (size_t k = 0; ok && k < w->nnames; k++) {
        ok = copy_str(&names[k], w->names[k] ? w->names[k] : "");
        c.nnames = k + 1;
    }
    if (!ok) {
        warning_free(&c);
        return WS_ERR_NOMEM;
    }
    r->warn[r->nwarn++] = c;
    return WS_OK;
}
size_t ws_report_warning_count(const ws_report *r) { return r ? r->nwarn : 0; }
const ws_warning *ws_report_warning_at(const ws_report *r, size_t i) {
    return r && i < r->nwarn ? &r->warn[i] : NULL;
}

ws_err ws_report_count_match(ws_report *r, uint64_t n) {
    if (!r) return WS_ERR_ARG;
    r->matched = n > UINT64_MAX - r->matched ? UINT64_MAX : r->matched + n;
    return WS_OK;
}
size_t ws_report_count(const ws_report *r) { return r ? r->count : 0; }
const ws_finding *ws_report_at(const ws_report *r, size_t i) {
    return r && i < r->count ? &r->items[i] : NULL;
}
uint64_t ws_report_matched(const ws_report *r) { return r ? r->matched : 0; }
int ws_report_ok(const ws_report *r) { return r && r->count == 0; }

/* The values of f (algorithm, digests, element, holders) as fields of o. */
static void values_to_json(const ws_finding *f, json_t *o) {
    if (f->algorithm) json_object_set_new(o, "algorithm", json_string(f->algorithm));
    if (f->expected) json_object_set_new(o, "expected", json_string(f->expected));
    if (f->found) json_object_set_new(o, "found", json_string(f->found));
    if (f->has_element) {
        json_t *co = json_array();
        for (int d = 0; d < f->ndim; d++)
            json_array_append_new(co, json_integer((json_int_t)f->coords[d]));
        json_object_set_new(o, "element",
                            json_pack("{s:I, s:o, s:f, s:f}", "index", (json_int_t)f->element,
                                      "coords", co, "expected", f->expected_value, "found",
                                      f->found_value));
    }
    if (f->differ) json_object_set_new(o, "differ", json_integer((json_int_t)f->differ));
    if (f->nholders) {
        json_t *held = json_array(), *ranks = json_array();
        for (size_t k = 0; k < f->nholders; k++) {
            const ws_holder *h = &f->holders[k];
            json_array_append_new(held, json_pack("{s:s, s:i, s:[II]}", "local", h->local ? h->local : "",
                                                  "rank", h->rank, "rows", (json_int_t)h->row0,
                                                  (json_int_t)h->row1));
            bool seen = false;
            for (size_t j = 0; j < k; j++) seen |= f->holders[j].rank == h->rank;
            if (!seen) json_array_append_new(ranks, json_integer(h->rank));
        }
        json_object_set_new(o, "held_by", held);
        json_object_set_new(o, "ranks", ranks);
    }
}

json_t *wsi_report_warnings_json(const ws_report *r) {
    if (!r || !r->nwarn) return NULL;
    json_t *wa = json_array();
    for (size_t i = 0; wa && i < r->nwarn; i++) {
        const ws_warning *w = &r->warn[i];
        json_t *names = json_array();
        for (size_t k = 0; k < w->nnames; k++)
            json_array_append_new(names, json_string(w->names[k]));
        json_array_append_new(wa, json_pack("{s:s, s:s, s:I, s:o}", "kind", w->kind, "detail",
                                            w->detail, "count", (json_int_t)w->nnames,
                                            "names", names));
    }
    return wa;
}

ws_err ws_report_to_json(const ws_report *r, char **out, ws_error *err) {
    if (!r || !out) return wsi_fail(err, WS_ERR_ARG, NULL, NULL, -1, "NULL argument");
    json_t *root = json_object(), *arr = json_array(), *counts = json_object();
    json_object_set_new(root, "format", json_string("weightsum-report"));
    json_object_set_new(root, "version", json_integer(WSI_REPORT_JSON_VERSION));
    json_object_set_new(root, "ok", json_boolean(ws_report_ok(r)));
    json_object_set_new(root, "matched", json_integer((json_int_t)r->matched));
    uint64_t n[WS_STATUS__COUNT] = {0};
    for (size_t i = 0; i < r->count; i++) {
        const ws_finding *f = &r->items[i];
        if ((unsigned)f->status < WS_STATUS__COUNT) n[f->status]++;
        json_t *o = json_object();
        json_object_set_new(o, "status", json_string(ws_status_name(f->status)));
        json_object_set_new(o, "tensor", json_string(f->tensor));
        if (f->local) json_object_set_new(o, "local", json_string(f->local));
        if (f->rank >= 0) json_object_set_new(o, "rank", json_integer(f->rank));
        if (f->row0 >= 0)
            json_object_set_new(o, "rows", json_pack("[II]", (json_int_t)f->row0,
                                                     (json_int_t)f->row1));
        json_object_set_new(o, "detail", json_string(f->detail));
        values_to_json(f, o);
        json_array_append_new(arr, o);
    }
    for (int s = 1; s < WS_STATUS__COUNT; s++)
        if (n[s]) json_object_set_new(counts, ws_status_name((ws_status)s), json_integer((json_int_t)n[s]));
    json_object_set_new(root, "counts", counts);
    json_object_set_new(root, "findings", arr);
    json_t *wa = wsi_report_warnings_json(r);
    if (wa) json_object_set_new(root, "warnings", wa); /* reports without keep their exact form */
    *out = json_dumps(root, JSON_INDENT(1));
    json_decref(root);
    return *out ? WS_OK : wsi_fail(err, WS_ERR_NOMEM, NULL, NULL, -1, "out of memory");
}

void wsi_finding_digests(ws_finding *f, const ws_manifest_entry *e, const ws_manifest_entry *a,
                         bool same_key, char he[65], char ha[65]) {
    unsigned both = e->digest.algos & a->digest.algos;
    if ((both & WS_ALGO_SHA256) && memcmp(e->digest.sha256, a->digest.sha256, 32) != 0) {
        ws_sha256_hex(e->digest.sha256, he);
        ws_sha256_hex(a->digest.sha256, ha);
        f->algorithm = "sha256";
    } else if ((both & WS_ALGO_FAST) && same_key &&
               memcmp(&e->digest.fast, &a->digest.fast, sizeof e->digest.fast) != 0) {
        ws_fast_hex(&e->digest.fast, he);
        ws_fast_hex(&a->digest.fast, ha);
        f->algorithm = "fast";
    } else {
        return;
    }
    f->expected = he;
    f->found = ha;
}

void wsi_finding_element(ws_finding *f, uint64_t element, int ndim, const uint64_t *shape,
                         double expected, double found, uint64_t differ) {
    f->has_element = 1;
    f->element = element;
    f->ndim = ndim > WS_MAX_DIMS ? WS_MAX_DIMS : ndim;
    wsi_unravel(element, f->ndim, shape, f->coords);
    f->expected_value = expected;
    f->found_value = found;
    f->differ = differ;
}
