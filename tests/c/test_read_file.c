/*
 * Whole-file reads (src/core/read_file.c) as manifests and configs use them: a read error, an
 * allocation failure or a size limit is an error naming the file, never a truncated buffer
 * parsed as if it were the whole file. ws_manifest_load used to treat a failed realloc as end
 * of file and parse the first 64 KiB: a line manifest cut there is a valid, shorter manifest.
 * This executable is linked with -Wl,--wrap=realloc (CMakeLists.txt) to make realloc fail.
 */
#include "check.h"
#include "internal.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

void *__real_realloc(void *p, size_t n);
static int fail_realloc;
void *__wrap_realloc(void *p, size_t n) { return fail_realloc ? NULL : __real_realloc(p, n); }

static char dir[64];

static void write_bytes(const char *path, const char *data, size_t n) {
    FILE *f = fopen(path, "wb");
    CHECK(f && fwrite(data, 1, n, f) == n);
    if (f) fclose(f);
}

static void test_allocation_failure_is_an_error(void) {
    /* 2000 lines of 64 hex digits: 150 KB, past the first 64 KiB buffer */
    enum { N = 2000 };
    char path[128];
    snprintf(path, sizeof path, "%s/big.sha256", dir);
    size_t cap = (size_t)N * 100, len = 0;
    char *text = malloc(cap);
    for (int i = 0; i < N; i++) {
        len += (size_t)snprintf(text + len, cap - len, "%064x  tensor.%04d.weight\n", i, i);
    }
    write_bytes(path, text, len);
    free(text);

    ws_manifest *m = NULL;
    ws_error err;
    CHECK_OK(ws_manifest_load(path, &m, &err));
    CHECK(ws_manifest_count(m) == N);
    ws_manifest_free(m);

    m = NULL;
    fail_realloc = 1;
    ws_err rc = ws_manifest_load(path, &m, &err);
    fail_realloc = 0;
    CHECK(rc == WS_ERR_NOMEM && m == NULL);
    CHECK(strcmp(err.file, path) == 0 && strstr(err.what, "out of memory"));
}

static void test_read_errors_and_limits(void) {
    char *buf = NULL;
    size_t len = 0;
    ws_error err;
    /* a directory opens but cannot be read: an I/O error, not an empty file */
    CHECK(wsi_read_file(dir, false, 1 << 20, "a manifest", &buf, &len, &err) == WS_ERR_IO);
    CHECK(buf == NULL && strstr(err.what, "read failed") && strcmp(err.file, dir) == 0);
    ws_manifest *m = NULL;
    CHECK(ws_manifest_load(dir, &m, &err) == WS_ERR_IO && m == NULL);
    ws_model_config *cfg = NULL;
    CHECK(ws_model_config_load(dir, &cfg, &err) == WS_ERR_IO && cfg == NULL);
    char missing[128];
    snprintf(missing, sizeof missing, "%s/missing", dir);
    CHECK(wsi_read_file(missing, false, 100, "x", &buf, &len, &err) == WS_ERR_IO);
    CHECK(strstr(err.what, "cannot open"));
    /* exactly the limit is fine, one byte more is WS_ERR_LIMIT; the buffer is NUL-terminated */
    char path[128], data[101];
    memset(data, 'a', sizeof data);
    snprintf(path, sizeof path, "%s/hundred", dir);
    write_bytes(path, data, 100);
    CHECK_OK(wsi_read_file(path, false, 100, "x", &buf, &len, &err));
    CHECK(len == 100 && buf && buf[100] == '\0');
    free(buf);
    write_bytes(path, data, 101);
    CHECK(wsi_read_file(path, false, 100, "a test file", &buf, &len, &err) == WS_ERR_LIMIT);
    CHECK(buf == NULL && strstr(err.what, "not a test file"));
    /* "-" is a file name unless the caller asks for standard input */
    CHECK(wsi_read_file("-", false, 100, "x", &buf, &len, &err) == WS_ERR_IO);
}

int main(void) {
    snprintf(dir, sizeof dir, "/tmp/ws-test-readfile-XXXXXX");
    CHECK(mkdtemp(dir) != NULL);
    test_allocation_failure_is_an_error();
    test_read_errors_and_limits();
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    CHECK(system(cmd) == 0);
    return check_report("test_read_file");
}
