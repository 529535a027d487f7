/* Internal: files that appear complete or not at all. */
#ifndef WS_ATOMIC_FILE_H
#define WS_ATOMIC_FILE_H
#include "internal.h"

typedef struct wsi_atomic {
    int fd;
    char *path;
    char *tmp;
} wsi_atomic;

WSI_HIDDEN ws_err wsi_atomic_open(wsi_atomic *a, const char *path, ws_error *err);
WSI_HIDDEN ws_err wsi_atomic_write(wsi_atomic *a, const void *data, size_t len, ws_error *err);
/* fsync + rename; frees a either way. */
WSI_HIDDEN ws_err wsi_atomic_commit(wsi_atomic *a, ws_error *err);
WSI_HIDDEN void wsi_atomic_abort(wsi_atomic *a);
#endif
