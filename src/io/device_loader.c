/*
 * The device backend loader: dlopen libweightsum_cuda.so once, only when a caller hands the
 * library a device buffer, so the core never links or includes CUDA (device_backend.h).
 */
#include "device_loader.h"

#include <dlfcn.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static pthread_once_t load_once = PTHREAD_ONCE_INIT;
static const wsi_device_backend *loaded;
static ws_err load_code = WS_ERR_NOTFOUND;
static char load_what[512];

static bool is_dir(const char *p) {
    struct stat st;
    return stat(p, &st) == 0 && S_ISDIR(st.st_mode);
}

/* Append "; path: reason" to the list of places tried (truncated quietly when long). */
static void note(char *tried, size_t n, const char *path, const char *why) {
    size_t used = strlen(tried);
    if (used + 1 >= n) return;
    snprintf(tried + used, n - used, "%s%s (%s)", used ? "; " : "", path, why);
}

/* Try one file; true when it gave a usable table (stored in `loaded`). */
static bool try_open(const char *path, char *tried, size_t n) {
    void *h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (!h) {
        const char *e = dlerror();
        /* the common case, an absent file, in few words */
        note(tried, n, path, access(path, F_OK) != 0 && strchr(path, '/') ? "absent"
                                                                           : (e ? e : "dlopen"));
        return false;
    }
    wsi_device_backend_fn get = (wsi_device_backend_fn)dlsym(h, WSI_DEVICE_BACKEND_SYMBOL);
    if (!get) {
        note(tried, n, path, "no " WSI_DEVICE_BACKEND_SYMBOL " symbol");
        dlclose(h);
        return false;
    }
    const wsi_device_backend *b = get();
    if (!b || b->abi != WSI_DEVICE_BACKEND_ABI) {
        char why[64];
        snprintf(why, sizeof why, "ABI %d, this library needs %d", b ? b->abi : -1,
                 WSI_DEVICE_BACKEND_ABI);
        note(tried, n, path, why);
        dlclose(h);
        return false;
    }
    loaded = b; /* kept open for the life of the process */
    return true;
}

/* dir/libweightsum_cuda.so of the folder holding file `of`, tried unless seen already. */
static bool try_beside(const char *of, char *seen, size_t seen_n, char *tried, size_t n) {
    char path[PATH_MAX];
    const char *slash = of ? strrchr(of, '/') : NULL;
    if (!slash) return false;
    int len = snprintf(path, sizeof path, "%.*s/%s", (int)(slash - of), of, WSI_DEVICE_LIB_NAME);
    if (len < 0 || (size_t)len >= sizeof path) return false;
    if (strcmp(seen, path) == 0) return false;
    snprintf(seen, seen_n, "%s", path);
    return try_open(path, tried, n);
}

static void load(void) {
    char tried[400] = "";
    const char *env = getenv(WSI_DEVICE_LIB_ENV);
    if (env && *env) {
        char path[PATH_MAX];
        if (is_dir(env))
            snprintf(path, sizeof path, "%s/%s", env, WSI_DEVICE_LIB_NAME);
        else
            snprintf(path, sizeof path, "%s", env);
        if (try_open(path, tried, sizeof tried)) return;
        snprintf(load_what, sizeof load_what,
                 "CUDA backend not loaded from $" WSI_DEVICE_LIB_ENV ": %s", tried);
        return;
    }
    char seen[PATH_MAX] = "";
    Dl_info info;
    if (dladdr((void *)&wsi_device_backend_get, &info) && info.dli_fname &&
        try_beside(info.dli_fname, seen, sizeof seen, tried, sizeof tried))
        return;
    char exe[PATH_MAX];
    ssize_t len = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (len > 0) {
        exe[len] = '\0';
        if (try_beside(exe, seen, sizeof seen, tried, sizeof tried)) return;
    }
    if (try_open(WSI_DEVICE_LIB_NAME, tried, sizeof tried)) return;
    snprintf(load_what, sizeof load_what,
             "CUDA backend " WSI_DEVICE_LIB_NAME " not found (build weightsum where nvcc is "
             "installed, cmake -DWS_CUDA=ON, or set " WSI_DEVICE_LIB_ENV "); tried: %s",
             tried);
}

const wsi_device_backend *wsi_device_backend_get(ws_error *err) {
    pthread_once(&load_once, load);
    if (!loaded) wsi_fail(err, load_code, NULL, NULL, -1, "%s", load_what);
    return loaded;
}
