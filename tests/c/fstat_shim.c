/*
 * LD_PRELOAD shim for tests/py/test_read_modes.py: makes the mapped reader's SIGBUS window
 * happen every time. On the WS_SHIM_AT-th fstat of the file WS_SHIM_FILE (1: when it is
 * opened) it cuts the file to WS_SHIM_CUT bytes, and from then on fstat reports the size the
 * file had: the size check before each mapped chunk passes, the touch of a page past the new
 * end faults. Built by the test (cc -shared -fPIC); not part of the library.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

static dev_t dev;
static ino_t ino;
static off_t size;
static long at = 1, seen;
static const char *path;

__attribute__((constructor)) static void init(void) {
    path = getenv("WS_SHIM_FILE");
    struct stat st;
    if (!path || stat(path, &st) != 0) {
        path = NULL;
        return;
    }
    dev = st.st_dev, ino = st.st_ino, size = st.st_size;
    if (getenv("WS_SHIM_AT")) at = atol(getenv("WS_SHIM_AT"));
}

static void adjust(struct stat *st) {
    if (!path || st->st_dev != dev || st->st_ino != ino) return;
    if (++seen == at) {
        const char *cut = getenv("WS_SHIM_CUT");
        if (truncate(path, cut ? atol(cut) : 0) != 0) _exit(99);
    }
    if (seen >= at) st->st_size = size;
}

int fstat(int fd, struct stat *st) {
    static int (*real)(int, struct stat *);
    if (!real) real = (int (*)(int, struct stat *))dlsym(RTLD_NEXT, "fstat");
    int rc = real(fd, st);
    if (rc == 0) adjust(st);
    return rc;
}

int fstat64(int fd, struct stat64 *st) {
    static int (*real)(int, struct stat64 *);
    if (!real) real = (int (*)(int, struct stat64 *))dlsym(RTLD_NEXT, "fstat64");
    int rc = real(fd, st);
    if (rc == 0 && sizeof(struct stat64) == sizeof(struct stat)) adjust((struct stat *)st);
    return rc;
}
