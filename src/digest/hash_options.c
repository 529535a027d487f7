/*
 * Hash options (ws_hash_options): policy, algorithms, key, threads and progress of a hashing
 * call, as an opaque object so it can grow without breaking callers.
 */
#include "hash_options.h"

#include <limits.h>
#include <stdlib.h>

static const char *const key_names[WS_HASH__COUNT] = {
    [WS_HASH_CANON] = "canon",
    [WS_HASH_ALGOS] = "algos",
    [WS_HASH_THREADS] = "threads",
};

ws_err ws_hash_options_create(ws_hash_options **out, ws_error *err) {
    if (!out)
        return wsi_fail(err, WS_ERR_ARG, NULL, NULL, -1, "ws_hash_options_create: out is NULL");
    *out = calloc(1, sizeof **out);
    if (!*out) return wsi_fail(err, WS_ERR_NOMEM, NULL, NULL, -1, "out of memory");
    (*out)->canon = WS_CANON_BF16;
    (*out)->algos = WS_ALGO_SHA256;
    return WS_OK;
}

void ws_hash_options_free(ws_hash_options *o) { free(o); }

ws_err ws_hash_options_set(ws_hash_options *o, ws_hash_key key, long value, ws_error *err) {
    if (!o) return wsi_fail(err, WS_ERR_ARG, NULL, NULL, -1, "ws_hash_options_set: o is NULL");
    if ((int)key < 0 || key >= WS_HASH__COUNT)
        return wsi_fail(err, WS_ERR_ARG, NULL, NULL, -1, "ws_hash_options_set: unknown key %d",
                        (int)key);
    bool ok;
    switch (key) {
    case WS_HASH_CANON: ok = value == WS_CANON_BF16 || value == WS_CANON_NATIVE; break;
    case WS_HASH_ALGOS: ok = value > 0 && !(value & ~(long)(WS_ALGO_SHA256 | WS_ALGO_FAST)); break;
    default: ok = value >= INT_MIN && value <= 4096; break; /* threads: <= 0 all cores */
    }
    if (!ok)
        return wsi_fail(err, WS_ERR_ARG, NULL, NULL, -1, "hash option '%s': %ld is out of range",
                        key_names[key], value);
    switch (key) {
    case WS_HASH_CANON: o->canon = (ws_canon)value; break;
    case WS_HASH_ALGOS: o->algos = (unsigned)value; break;
    default: o->threads = (int)value; break;
    }
    return WS_OK;
}

long ws_hash_options_get(const ws_hash_options *o, ws_hash_key key) {
    if (!o) return -1;
    switch (key) {
    case WS_HASH_CANON: return o->canon;
    case WS_HASH_ALGOS: return o->algos ? o->algos : WS_ALGO_SHA256;
    case WS_HASH_THREADS: return o->threads;
    default: return -1;
    }
}

ws_err ws_hash_options_set_key(ws_hash_options *o, const ws_fastkey *key, ws_error *err) {
    if (!o)
        return wsi_fail(err, WS_ERR_ARG, NULL, NULL, -1, "ws_hash_options_set_key: o is NULL");
    o->key = key;
    return WS_OK;
}

const ws_fastkey *ws_hash_options_key(const ws_hash_options *o) { return o ? o->key : NULL; }

ws_err ws_hash_options_set_progress(ws_hash_options *o, ws_progress_fn progress, void *user,
                                    ws_error *err) {
    if (!o)
        return wsi_fail(err, WS_ERR_ARG, NULL, NULL, -1,
                        "ws_hash_options_set_progress: o is NULL");
    o->progress = progress;
    o->progress_user = user;
    return WS_OK;
}
