/* SGLang's tensor hash on one core: every kernel on an in-memory buffer (best of --reps), the
 * streaming form in 1 MiB pieces, SGLang's CPU path (SHA-256), and memcpy of the same buffer
 * for scale. GB = 1e9 bytes; times are the thread's CPU time. Run by bench/bench_sglang.sh. */
#include "weightsum.h"
#include "weightsum_experimental.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* CPU time of this thread: on a shared machine the wall clock also counts other tenants' turns,
 * and "per core" is what is asked. */
static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

int main(int argc, char **argv) {
    size_t mib = 256;
    int reps = 3;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (strcmp(argv[i], "--size-mib") == 0) mib = (size_t)atol(argv[i + 1]);
        else if (strcmp(argv[i], "--reps") == 0) reps = atoi(argv[i + 1]);
    }
    size_t n = mib << 20;
    uint8_t *a = malloc(n), *b = malloc(n);
    if (!a || !b) return 2;
    uint64_t x = 88172645463325252u;
    for (size_t i = 0; i < n; i += 8) {
        x ^= x << 13; x ^= x >> 7; x ^= x << 17;
        memcpy(a + i, &x, 8);
    }
    memcpy(b, a, n);
    printf("| what | GB/s per core (thread CPU time, %zu MiB in memory, best of %d) | value |\n|---|---|---|\n", mib, reps);
    const char *kernels[] = {"scalar", "avx2", "avx512"};
    for (int k = 0; k < 3; k++) {
        if (ws_sglang_set_kernel(kernels[k]) != WS_OK) continue;
        double best = 1e30;
        uint64_t v = 0;
        for (int r = 0; r < reps; r++) {
            double t = now();
            if (ws_sglang_hash(WS_SGLANG_CUDA, a, n, &v, NULL) != WS_OK) return 2;
            t = now() - t;
            if (t < best) best = t;
        }
        printf("| gpu_tensor_hash, %s kernel | %.2f | %016llx |\n", kernels[k], (double)n / best / 1e9, (unsigned long long)v);
    }
    ws_sglang_set_kernel("auto");
    double best = 1e30;
    uint64_t v = 0;
    for (int r = 0; r < reps; r++) {
        double t = now();
        ws_sglang_hasher *h = NULL;
        if (ws_sglang_hasher_create(WS_SGLANG_CUDA, n, &h, NULL) != WS_OK) return 2;
        for (size_t at = 0; at < n; at += 1u << 20)
            if (ws_sglang_hasher_update(h, at, a + at, n - at < (1u << 20) ? n - at : (1u << 20), NULL) != WS_OK) return 2;
        if (ws_sglang_hasher_final(h, &v, NULL) != WS_OK) return 2;
        ws_sglang_hasher_free(h);
        t = now() - t;
        if (t < best) best = t;
    }
    printf("| gpu_tensor_hash streamed in 1 MiB pieces, %s | %.2f | %016llx |\n", ws_sglang_kernel(), (double)n / best / 1e9, (unsigned long long)v);
    best = 1e30;
    for (int r = 0; r < reps; r++) {
        double t = now();
        if (ws_sglang_hash(WS_SGLANG_CPU, a, n, &v, NULL) != WS_OK) return 2;
        t = now() - t;
        if (t < best) best = t;
    }
    printf("| CPU path (SHA-256, OpenSSL) | %.2f | %016llx |\n", (double)n / best / 1e9, (unsigned long long)v);
    best = 1e30;
    for (int r = 0; r < reps; r++) {
        double t = now();
        memcpy(b, a, n);
        t = now() - t;
        if (t < best) best = t;
    }
    printf("| memcpy (read + write) | %.2f | |\n", (double)n / best / 1e9);
    free(a);
    free(b);
    return 0;
}
