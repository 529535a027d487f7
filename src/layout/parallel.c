/*
 * The parallel configuration (ws_parallel): sizes and engine options a layout is built for,
 * as an opaque object so it can grow without breaking callers (docs/layouts.md).
 */
#include "layout_internal.h"

#include <stdlib.h>
#include <string.h>

struct ws_parallel {
    long v[WS_PAR__COUNT];
    int32_t *map; /* expert map: rows x physical, or NULL */
    size_t map_rows, map_physical;
};

#define MAX_SIZE 4096 /* ep, pp, attn_dp */
#include <limits.h>

void wsl_parallel_defaults(long v[WS_PAR__COUNT]) {
    for (int k = 0; k < WS_PAR__COUNT; k++)
        v[k] = 0;
    v[WS_PAR_TP] = v[WS_PAR_EP] = v[WS_PAR_PP] = v[WS_PAR_MOE_TP] = v[WS_PAR_ATTN_DP] = 1;
}

const long *wsl_parallel_values(const ws_parallel *p) { return p ? p->v : NULL; }

ws_err ws_parallel_create(ws_parallel **out, ws_error *err) {
    if (!out)
        return wsi_fail(err, WS_ERR_ARG, NULL, NULL, -1, "ws_parallel_create: out is NULL");
    *out = malloc(sizeof **out);
    if (!*out) return wsi_fail(err, WS_ERR_NOMEM, NULL, NULL, -1, "out of memory");
    wsl_parallel_defaults((*out)->v);
    (*out)->map = NULL;
    (*out)->map_rows = (*out)->map_physical = 0;
    return WS_OK;
}

void ws_parallel_free(ws_parallel *p) {
    if (p) free(p->map);
    free(p);
}

ws_err ws_parallel_set_expert_map(ws_parallel *p, size_t rows, size_t physical,
                                  const int32_t *map, ws_error *err) {
    if (!p) return wsi_fail(err, WS_ERR_ARG, NULL, NULL, -1, "ws_parallel_set_expert_map: p is NULL");
    if (rows == 0) {
        free(p->map);
        p->map = NULL;
        p->map_rows = p->map_physical = 0;
        return WS_OK;
    }
    if (!map || physical == 0 || physical > WSL_MAX_EXPERT_SLOTS || rows > WSL_MAX_EXPERT_SLOTS)
        return wsi_fail(err, WS_ERR_ARG, NULL, NULL, -1,
                        "expert map: %zu rows of %zu slots, expected 1..%d of 1..%d", rows,
                        physical, WSL_MAX_EXPERT_SLOTS, WSL_MAX_EXPERT_SLOTS);
    for (size_t i = 0; i < rows * physical; i++)
        if (map[i] < 0)
            return wsi_fail(err, WS_ERR_ARG, NULL, NULL, -1,
                            "expert map: row %zu slot %zu holds %d, not a logical expert",
                            i / physical, i % physical, (int)map[i]);
    int32_t *copy = malloc(rows * physical * sizeof *copy);
    if (!copy) return wsi_fail(err, WS_ERR_NOMEM, NULL, NULL, -1, "out of memory");
    memcpy(copy, map, rows * physical * sizeof *copy);
    free(p->map);
    p->map = copy;
    p->map_rows = rows;
    p->map_physical = physical;
    return WS_OK;
}

const int32_t *ws_parallel_expert_map(const ws_parallel *p, size_t *rows, size_t *physical) {
    if (rows) *rows = p ? p->map_rows : 0;
    if (physical) *physical = p ? p->map_physical : 0;
    return p ? p->map : NULL;
}

static const char *const key_names[WS_PAR__COUNT] = {
    [WS_PAR_TP] = "tp",
    [WS_PAR_EP] = "ep",
    [WS_PAR_PP] = "pp",
    [WS_PAR_MOE_TP] = "moe_tp",
    [WS_PAR_EXPERT_PLACEMENT] = "expert_placement",
    [WS_PAR_W13_UP_FIRST] = "w13_up_first",
    [WS_PAR_FUSED_SHARED] = "fused_shared_experts",
    [WS_PAR_MEGATRON_SEQUENTIAL] = "megatron_sequential_experts",
    [WS_PAR_REDUNDANT_EXPERTS] = "redundant_experts",
    [WS_PAR_ATTN_DP] = "attn_dp",
    [WS_PAR_DP_LM_HEAD] = "dp_lm_head",
    [WS_PAR_MOE_DENSE_TP] = "moe_dense_tp",
};

ws_err ws_parallel_set(ws_parallel *p, ws_par_key key, long value, ws_error *err) {
    if (!p) return wsi_fail(err, WS_ERR_ARG, NULL, NULL, -1, "ws_parallel_set: p is NULL");
    if ((int)key < 0 || key >= WS_PAR__COUNT)
        return wsi_fail(err, WS_ERR_ARG, NULL, NULL, -1, "ws_parallel_set: unknown key %d",
                        (int)key);
    if (key == WS_PAR_MOE_TP)
        return wsi_fail(err, WS_ERR_ARG, NULL, NULL, -1,
                        "parallel key 'moe_tp' is derived by the family (tp / ep), not set");
    bool ok;
    switch (key) {
    case WS_PAR_TP: ok = value >= 1 && value <= INT_MAX; break;
    case WS_PAR_EP:
    case WS_PAR_PP:
    case WS_PAR_ATTN_DP: ok = value >= 1 && value <= MAX_SIZE; break;
    /* 0 is SGLang's unset (None); the family checks it is 1 or tp (validation_hook) */
    case WS_PAR_MOE_DENSE_TP: ok = value >= 0 && value <= INT_MAX; break;
    case WS_PAR_REDUNDANT_EXPERTS: ok = value >= 0 && value <= WSL_MAX_EXPERT_SLOTS; break;
    case WS_PAR_EXPERT_PLACEMENT:
        ok = value == WS_EXPERTS_LINEAR || value == WS_EXPERTS_ROUND_ROBIN;
        break;
    default: ok = value == 0 || value == 1; break;
    }
    if (!ok)
        return wsi_fail(err, WS_ERR_ARG, NULL, NULL, -1, "parallel key '%s': %ld is out of range",
                        key_names[key], value);
    p->v[key] = value;
    return WS_OK;
}

long ws_parallel_get(const ws_parallel *p, ws_par_key key) {
    if (!p || (int)key < 0 || key >= WS_PAR__COUNT) return -1;
    return p->v[key];
}
