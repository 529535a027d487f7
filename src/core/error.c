/* Error values: names, detail filling, one-line formatting. */
#include "internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char *const err_names[WS_ERR__COUNT] = {
    [WS_OK] = "WS_OK",
    [WS_ERR_NOMEM] = "WS_ERR_NOMEM",
    [WS_ERR_IO] = "WS_ERR_IO",
    [WS_ERR_FORMAT] = "WS_ERR_FORMAT",
    [WS_ERR_DTYPE] = "WS_ERR_DTYPE",
    [WS_ERR_JSON] = "WS_ERR_JSON",
    [WS_ERR_ARG] = "WS_ERR_ARG",
    [WS_ERR_NOTFOUND] = "WS_ERR_NOTFOUND",
    [WS_ERR_CRYPTO] = "WS_ERR_CRYPTO",
    [WS_ERR_LAYOUT] = "WS_ERR_LAYOUT",
    [WS_ERR_COVERAGE] = "WS_ERR_COVERAGE",
    [WS_ERR_LIMIT] = "WS_ERR_LIMIT",
    [WS_ERR_THREAD] = "WS_ERR_THREAD",
    [WS_ERR_SHAPE] = "WS_ERR_SHAPE",
    [WS_ERR_REMOTE] = "WS_ERR_REMOTE",
};

const char *ws_version(void) { return WS_VERSION_STRING; }
unsigned ws_version_number(void) { return WS_VERSION_NUMBER; }

const char *ws_err_name(ws_err e) {
    if ((unsigned)e < WS_ERR__COUNT && err_names[e]) return err_names[e];
    return "WS_ERR_UNKNOWN";
}

void ws_error_clear(ws_error *err) {
    if (!err) return;
    memset(err, 0, sizeof *err);
    err->offset = -1;
}

ws_err wsi_fail(ws_error *err, ws_err code, const char *file, const char *tensor,
                int64_t offset, const char *fmt, ...) {
    if (!err) return code;
    ws_error_clear(err);
    err->code = code;
    if (file) snprintf(err->file, sizeof err->file, "%s", file);
    if (tensor) snprintf(err->tensor, sizeof err->tensor, "%s", tensor);
    err->offset = offset;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err->what, sizeof err->what, fmt, ap);
    va_end(ap);
    return code;
}

int ws_error_format(const ws_error *err, char *buf, size_t size) {
    if (!err) return snprintf(buf, size, "no error");
    char off[40] = "";
    if (err->offset >= 0) snprintf(off, sizeof off, "offset %lld: ", (long long)err->offset);
    return snprintf(buf, size, "%s%s%s%s%s%s%s", err->file, err->file[0] ? ": " : "",
                    err->tensor[0] ? "tensor '" : "", err->tensor,
                    err->tensor[0] ? "': " : "", off,
                    err->what[0] ? err->what : ws_err_name(err->code));
}

char *wsi_strdup(const char *s) {
    if (!s) return NULL;
    size_t n = strlen(s) + 1;
    char *d = malloc(n);
    if (d) memcpy(d, s, n);
    return d;
}

int wsi_cpu_count(void) {
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (int)n : 1;
}
