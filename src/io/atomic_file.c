/* Atomic output: write to a temporary file beside the target, fsync, rename over it. */
#include "atomic_file.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

ws_err wsi_atomic_open(wsi_atomic *a, const char *path, ws_error *err) {
    memset(a, 0, sizeof *a);
    a->fd = -1;
    size_t n = strlen(path) + 32;
    a->path = wsi_strdup(path);
    a->tmp = malloc(n);
    if (!a->path || !a->tmp) {
        free(a->path);
        free(a->tmp);
        return wsi_fail(err, WS_ERR_NOMEM, path, NULL, -1, "out of memory");
    }
    snprintf(a->tmp, n, "%s.tmp.XXXXXX", path);
    a->fd = mkstemp(a->tmp);
    if (a->fd < 0) {
        ws_err rc = wsi_fail(err, WS_ERR_IO, path, NULL, -1, "cannot create a temporary file: %s",
                             strerror(errno));
        free(a->path);
        free(a->tmp);
        return rc;
    }
    return WS_OK;
}

ws_err wsi_atomic_write(wsi_atomic *a, const void *data, size_t len, ws_error *err) {
    const char *p = data;
    while (len > 0) {
        ssize_t w = write(a->fd, p, len);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0)
            return wsi_fail(err, WS_ERR_IO, a->path, NULL, -1, "write failed: %s",
                            strerror(errno));
        p += w;
        len -= (size_t)w;
    }
    return WS_OK;
}

ws_err wsi_atomic_commit(wsi_atomic *a, ws_error *err) {
    ws_err rc = WS_OK;
    if (fchmod(a->fd, 0644) != 0 || fsync(a->fd) != 0)
        rc = wsi_fail(err, WS_ERR_IO, a->path, NULL, -1, "fsync failed: %s", strerror(errno));
    if (close(a->fd) != 0 && rc == WS_OK)
        rc = wsi_fail(err, WS_ERR_IO, a->path, NULL, -1, "close failed: %s", strerror(errno));
    a->fd = -1;
    if (rc == WS_OK && rename(a->tmp, a->path) != 0)
        rc = wsi_fail(err, WS_ERR_IO, a->path, NULL, -1, "rename failed: %s", strerror(errno));
    if (rc != WS_OK) unlink(a->tmp);
    free(a->tmp);
    free(a->path);
    a->tmp = a->path = NULL;
    return rc;
}

void wsi_atomic_abort(wsi_atomic *a) {
    if (a->fd >= 0) close(a->fd);
    if (a->tmp) unlink(a->tmp);
    free(a->tmp);
    free(a->path);
    a->fd = -1;
    a->tmp = a->path = NULL;
}

ws_err ws_write_file_atomic(const char *path, const void *data, size_t len, ws_error *err) {
    wsi_atomic a;
    ws_err rc = wsi_atomic_open(&a, path, err);
    if (rc != WS_OK) return rc;
    rc = wsi_atomic_write(&a, data, len, err);
    if (rc != WS_OK) {
        wsi_atomic_abort(&a);
        return rc;
    }
    return wsi_atomic_commit(&a, err);
}
