/*
 * Expert maps in JSON (docs/layouts.md, "Expert maps"): each physical expert slot's logical
 * expert, as SGLang's --init-expert-location file gives it ({"physical_to_logical_map": [[...]]},
 * one row per layer) and as weightsum-layout.json records it ("expert_map").
 */
#include "layout_internal.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>

static ws_err bad(ws_error *err, const char *label, const char *what) {
    return wsi_fail(err, WS_ERR_JSON, label, NULL, -1, "expert map: %s", what);
}

/* One row: a list of non-negative integers; *physical is set by the first row. */
static ws_err row_of(json_t *row, size_t r, const char *label, int32_t *out, size_t physical,
                     ws_error *err) {
    if (!json_is_array(row) || json_array_size(row) != physical)
        return wsi_fail(err, WS_ERR_JSON, label, NULL, -1,
                        "expert map: row %zu is not a list of %zu slots (every row lists every "
                        "physical slot)",
                        r, physical);
    for (size_t p = 0; p < physical; p++) {
        json_t *v = json_array_get(row, p);
        if (!json_is_integer(v) || json_integer_value(v) < 0 ||
            json_integer_value(v) >= WSL_MAX_EXPERT_SLOTS)
            return wsi_fail(err, WS_ERR_JSON, label, NULL, -1,
                            "expert map: row %zu slot %zu is not a logical expert index", r, p);
        out[p] = (int32_t)json_integer_value(v);
    }
    return WS_OK;
}

ws_err wsl_expert_map_from_json(const void *json_value, const char *label, int32_t **out,
                                size_t *rows, size_t *physical, ws_error *err) {
    json_t *v = (json_t *)json_value;
    *out = NULL;
    *rows = *physical = 0;
    if (json_is_object(v)) v = json_object_get(v, "physical_to_logical_map");
    if (!json_is_array(v) || json_array_size(v) == 0)
        return bad(err, label,
                   "expected {\"physical_to_logical_map\": [[...], ...]} or a non-empty list");
    bool nested = json_is_array(json_array_get(v, 0));
    size_t nr = nested ? json_array_size(v) : 1;
    size_t np = nested ? json_array_size(json_array_get(v, 0)) : json_array_size(v);
    if (np == 0 || np > WSL_MAX_EXPERT_SLOTS || nr > WSL_MAX_EXPERT_SLOTS)
        return bad(err, label, "between 1 and 65536 slots per row, and rows, expected");
    int32_t *m = malloc(nr * np * sizeof *m);
    if (!m) return wsi_fail(err, WS_ERR_NOMEM, label, NULL, -1, "out of memory");
    ws_err e = WS_OK;
    for (size_t r = 0; r < nr && !e; r++)
        e = row_of(nested ? json_array_get(v, r) : v, r, label, m + r * np, np, err);
    if (e) {
        free(m);
        return e;
    }
    *out = m;
    *rows = nr;
    *physical = np;
    return WS_OK;
}

ws_err ws_parallel_parse_expert_map(ws_parallel *p, const char *json, size_t len,
                                    const char *label, ws_error *err) {
    if (!p || (!json && len))
        return wsi_fail(err, WS_ERR_ARG, label, NULL, -1,
                        "ws_parallel_parse_expert_map: p and json must not be NULL");
    json_error_t je;
    json_t *root = json_loadb(json ? json : "", len, JSON_REJECT_DUPLICATES, &je);
    if (!root)
        return wsi_fail(err, WS_ERR_JSON, label, NULL, je.position,
                        "invalid JSON at line %d column %d: %s", je.line, je.column, je.text);
    int32_t *m;
    size_t rows, physical;
    ws_err e = wsl_expert_map_from_json(root, label, &m, &rows, &physical, err);
    json_decref(root);
    if (e) return e;
    e = ws_parallel_set_expert_map(p, rows, physical, m, err);
    free(m);
    return e;
}
