/* Loading the device backend (see device_backend.h): dlopen libweightsum_cuda.so once, on the
 * first device buffer, and check its ABI. A minimal loader; the cuda/ build may refine where
 * it looks. */
#include "device_backend.h"
#include "internal.h"

#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

static pthread_once_t once = PTHREAD_ONCE_INIT;
static const wsi_device_backend *backend;
static char why[400];

static void load(void) {
    void *h = dlopen("libweightsum_cuda.so", RTLD_NOW | RTLD_LOCAL);
    if (!h) {
        snprintf(why, sizeof why, "no device backend: cannot load libweightsum_cuda.so (%s)",
                 dlerror());
        return;
    }
    wsi_device_backend_fn fn = NULL;
    void *sym = dlsym(h, WSI_DEVICE_BACKEND_SYMBOL);
    memcpy(&fn, &sym, sizeof fn);
    const wsi_device_backend *b = fn ? fn() : NULL;
    if (!b || b->abi != WSI_DEVICE_BACKEND_ABI) {
        snprintf(why, sizeof why, "no device backend: libweightsum_cuda.so %s",
                 !fn ? "lacks " WSI_DEVICE_BACKEND_SYMBOL : "has another ABI version");
        return;
    }
    backend = b;
}

const wsi_device_backend *wsi_device_backend_get(ws_error *err) {
    pthread_once(&once, load);
    if (!backend) wsi_fail(err, WS_ERR_NOTFOUND, NULL, NULL, -1, "%s", why);
    return backend;
}
