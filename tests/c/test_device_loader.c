/*
 * The device backend loader: found through WEIGHTSUM_CUDA_LIB (file or folder), a clear
 * WS_ERR_NOTFOUND naming what was tried when absent, libraries without the symbol or with
 * another ABI refused, one answer for concurrent first calls. The loader runs once per
 * process, so each case runs in a child process.
 */
#include "check.h"
#include "device_loader.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define FAKE WS_BINARY_DIR "/fake_device_backend.so"
#define FAKE_ABI99 WS_BINARY_DIR "/fake_device_backend_abi99.so"
#define NO_SYMBOL WS_BINARY_DIR "/libweightsum.so"

/* Run fn in a child with WEIGHTSUM_CUDA_LIB = env (NULL: unset); its exit status. */
static int in_child(const char *env, int (*fn)(void)) {
    pid_t pid = fork();
    if (pid == 0) {
        if (env) setenv(WSI_DEVICE_LIB_ENV, env, 1);
        else unsetenv(WSI_DEVICE_LIB_ENV);
        _exit(fn());
    }
    int status = 0;
    waitpid(pid, &status, 0);
    return WIFEXITED(status) ? WEXITSTATUS(status) : 100;
}

static int expect_fake(void) {
    ws_error err;
    const wsi_device_backend *b = wsi_device_backend_get(&err);
    if (!b || strcmp(b->name, "fake") != 0 || b->abi != WSI_DEVICE_BACKEND_ABI) return 1;
    if (wsi_device_backend_get(NULL) != b) return 2; /* once: the same table again */
    return 0;
}

/* Absent: NOTFOUND, the message names the variable and the path tried. */
static const char *want_in_message;
static int expect_notfound(void) {
    ws_error err;
    ws_error_clear(&err);
    if (wsi_device_backend_get(&err) != NULL) return 1;
    if (err.code != WS_ERR_NOTFOUND) return 2;
    if (!strstr(err.what, want_in_message)) return 3;
    if (wsi_device_backend_get(&err) != NULL || err.code != WS_ERR_NOTFOUND) return 4;
    return 0;
}

static const wsi_device_backend *seen[8];
static void *grab(void *arg) {
    seen[(intptr_t)arg] = wsi_device_backend_get(NULL);
    return NULL;
}
static int expect_same_from_threads(void) {
    pthread_t th[8];
    for (intptr_t i = 0; i < 8; i++)
        if (pthread_create(&th[i], NULL, grab, (void *)i)) return 1;
    for (int i = 0; i < 8; i++) pthread_join(th[i], NULL);
    for (int i = 0; i < 8; i++)
        if (!seen[i] || seen[i] != seen[0]) return 2;
    return strcmp(seen[0]->name, "fake") == 0 ? 0 : 3;
}

int main(void) {
    CHECK(in_child(FAKE, expect_fake) == 0);
    CHECK(in_child(WS_BINARY_DIR "/fake_device_backend.so", expect_same_from_threads) == 0);

    want_in_message = "/nonexistent/libweightsum_cuda.so (absent)";
    CHECK(in_child("/nonexistent/libweightsum_cuda.so", expect_notfound) == 0);
    want_in_message = WSI_DEVICE_LIB_ENV;
    CHECK(in_child("/nonexistent/libweightsum_cuda.so", expect_notfound) == 0);
    /* a folder: the library's file name is appended */
    want_in_message = "/nonexistent-dir-xyz";
    CHECK(in_child("/nonexistent-dir-xyz", expect_notfound) == 0);
    want_in_message = "no " WSI_DEVICE_BACKEND_SYMBOL " symbol";
    CHECK(in_child(NO_SYMBOL, expect_notfound) == 0);
    want_in_message = "ABI 99, this library needs 1";
    CHECK(in_child(FAKE_ABI99, expect_notfound) == 0);
    /* unset: beside this test program (the build folder) is tried, the message says how to
     * get one; in a build with CUDA the real library is there and loads (any answer but a
     * crash is right, so only the not-found wording is checked when it is not) */
    want_in_message = "not found";
    int unset = in_child(NULL, expect_notfound);
    CHECK(unset == 0 || unset == 1);
    return check_report("test_device_loader");
}
