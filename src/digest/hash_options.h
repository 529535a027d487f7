/* Internal: the hash options' fields (ws_hash_options is opaque to callers; weightsum.h gives
 * its constructor, setters and getters). The library's own paths fill one on the stack. */
#ifndef WS_HASH_OPTIONS_H
#define WS_HASH_OPTIONS_H
#include "internal.h"

struct ws_hash_options {
    ws_canon canon;
    unsigned algos;           /* WS_ALGO_* (0 means SHA-256) */
    const ws_fastkey *key;    /* required for WS_ALGO_FAST */
    int threads;              /* <= 0: all cores */
    ws_progress_fn progress;  /* may be NULL */
    void *progress_user;
    int read_mode;            /* WS_READ_* of dump files (0: the default) */
};

#endif
