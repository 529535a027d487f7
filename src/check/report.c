/* Reports: the findings of a comparison, as values and as JSON. */
#include "internal.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>

struct ws_report {
    ws_finding *items;
    size_t count, cap;
    uint64_t matched;
};

static const char *const status_names[WS_STATUS__COUNT] = {
    "match",   "mismatch", "missing", "unexpected", "shape", "dtype", "replica_mismatch",
    "padding", "coverage", "not_comparable"};

const char *ws_status_name(ws_status s) {
    return (unsigned)s < WS_STATUS__COUNT ? status_names[s] : "unknown";
}

ws_report *ws_report_new(void) { return calloc(1, sizeof(ws_report)); }

void ws_report_free(ws_report *r) {
    if (!r) return;
    for (size_t i = 0; i < r->count; i++) {
        free((char *)r->items[i].tensor);
        free((char *)r->items[i].local);
        free((char *)r->items[i].detail);
    }
    free(r->items);
    free(r);
}

ws_err ws_report_add(ws_report *r, const ws_finding *f) {
    if (!r || !f) return WS_ERR_ARG;
    if (r->count == r->cap) {
        size_t cap = r->cap ? 2 * r->cap : 16;
        ws_finding *g = realloc(r->items, cap * sizeof *g);
        if (!g) return WS_ERR_NOMEM;
        r->items = g;
        r->cap = cap;
    }
    ws_finding c = *f;
    c.tensor = wsi_strdup(f->tensor ? f->tensor : "");
    c.local = wsi_strdup(f->local);
    c.detail = wsi_strdup(f->detail ? f->detail : "");
    if (!c.tensor || !c.detail || (f->local && !c.local)) {
        free((char *)c.tensor);
        free((char *)c.local);
        free((char *)c.detail);
        return WS_ERR_NOMEM;
    }
    r->items[r->count++] = c;
    return WS_OK;
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

ws_err ws_report_to_json(const ws_report *r, char **out, ws_error *err) {
    json_t *root = json_object(), *arr = json_array();
    json_object_set_new(root, "ok", json_boolean(ws_report_ok(r)));
    json_object_set_new(root, "matched", json_integer((json_int_t)r->matched));
    for (size_t i = 0; i < r->count; i++) {
        const ws_finding *f = &r->items[i];
        json_t *o = json_object();
        json_object_set_new(o, "status", json_string(ws_status_name(f->status)));
        json_object_set_new(o, "tensor", json_string(f->tensor));
        if (f->local) json_object_set_new(o, "local", json_string(f->local));
        if (f->rank >= 0) json_object_set_new(o, "rank", json_integer(f->rank));
        if (f->row0 >= 0)
            json_object_set_new(o, "rows", json_pack("[II]", (json_int_t)f->row0,
                                                     (json_int_t)f->row1));
        json_object_set_new(o, "detail", json_string(f->detail));
        json_array_append_new(arr, o);
    }
    json_object_set_new(root, "findings", arr);
    *out = json_dumps(root, JSON_INDENT(1));
    json_decref(root);
    return *out ? WS_OK : wsi_fail(err, WS_ERR_NOMEM, NULL, NULL, -1, "out of memory");
}
