/* Reading a whole (small) file into memory: manifests, configs, request bodies. One place that
 * tells end of file from a read error, an allocation failure or a size limit, so no caller
 * parses a truncated buffer as if it were the whole file. */
#include "internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

ws_err wsi_read_file(const char *path, bool dash_is_stdin, size_t max_bytes, const char *what,
                     char **out, size_t *len, ws_error *err) {
    *out = NULL;
    *len = 0;
    bool use_stdin = dash_is_stdin && strcmp(path, "-") == 0;
    const char *label = use_stdin ? "<stdin>" : path;
    FILE *f = use_stdin ? stdin : fopen(path, "rb");
    if (!f) return wsi_fail(err, WS_ERR_IO, path, NULL, -1, "cannot open: %s", strerror(errno));
    size_t cap = max_bytes < (1u << 16) ? max_bytes : (1u << 16), n = 0;
    char *buf = malloc(cap + 1);
    ws_err rc = buf ? WS_OK : wsi_fail(err, WS_ERR_NOMEM, label, NULL, -1, "out of memory");
    while (rc == WS_OK) {
        if (n == cap) {
            if (cap >= max_bytes) {
                char probe;
                if (fread(&probe, 1, 1, f) == 0 && !ferror(f)) break; /* exactly max_bytes */
                rc = wsi_fail(err, WS_ERR_LIMIT, label, NULL, -1, "larger than %zu bytes: not %s",
                              max_bytes, what);
                break;
            }
            size_t grow = cap <= max_bytes / 2 ? cap * 2 : max_bytes;
            char *g = realloc(buf, grow + 1);
            if (!g) {
                rc = wsi_fail(err, WS_ERR_NOMEM, label, NULL, -1,
                              "out of memory reading %s (%zu bytes)", what, grow);
                break;
            }
            buf = g;
            cap = grow;
        }
        size_t got = fread(buf + n, 1, cap - n, f);
        n += got;
        if (got == 0) {
            if (ferror(f))
                rc = wsi_fail(err, WS_ERR_IO, label, NULL, (int64_t)n, "read failed: %s",
                              strerror(errno));
            break;
        }
    }
    if (!use_stdin) fclose(f);
    if (rc != WS_OK) {
        free(buf);
        return rc;
    }
    buf[n] = '\0';
    *out = buf;
    *len = n;
    return WS_OK;
}
