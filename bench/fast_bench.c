/*
 * fast_bench: throughput of ws_fast_accumulate per kernel, with 1 and 2 threads (each thread
 * on its own half, halves combined with ws_fast_add), against a plain memory-read loop over
 * the same buffer. Built by bench/bench_fast.sh; prints "tool threads GB/s" rows (GB = 1e9 B).
 *
 *   fast_bench [--size-mib N] [--reps R]
 */
#define _POSIX_C_SOURCE 200809L
#include "weightsum_experimental.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

typedef struct job {
    const ws_fastkey *key;
    const uint8_t *data;
    size_t bytes;
    uint64_t unit_index;
    int unit_bytes;
    ws_fast out;
    ws_err rc;
    uint64_t sum; /* memory-read loop */
} job;

static void *run_fast(void *arg) {
    job *j = arg;
    memset(&j->out, 0, sizeof j->out);
    j->rc = ws_fast_accumulate(j->key, &j->out, j->unit_index, j->data,
                               j->bytes / (size_t)j->unit_bytes, j->unit_bytes, NULL);
    return NULL;
}

static void *run_read(void *arg) {
    job *j = arg;
    const uint64_t *p = (const uint64_t *)j->data;
    size_t n = j->bytes / 8;
    uint64_t s0 = 0, s1 = 0, s2 = 0, s3 = 0;
    size_t i = 0;
    for (; i + 4 <= n; i += 4) {
        s0 += p[i];
        s1 += p[i + 1];
        s2 += p[i + 2];
        s3 += p[i + 3];
    }
    for (; i < n; i++) s0 += p[i];
    j->sum = s0 + s1 + s2 + s3;
    return NULL;
}

/* Wall time of fn on nthreads parts of buf (halves for 2, cut at a 64-byte boundary); the
 * parts' digests combined with ws_fast_add into *digest, their sums into *sum. */
static double timed(void *(*fn)(void *), int nthreads, const ws_fastkey *key, const uint8_t *buf,
                    size_t bytes, int unit_bytes, ws_fast *digest, uint64_t *sum) {
    job jobs[2];
    pthread_t th[2];
    size_t half = bytes / 2 / 64 * 64;
    for (int t = 0; t < nthreads; t++) {
        size_t from = nthreads == 1 ? 0 : t * half;
        size_t to = nthreads == 1 || t == 1 ? bytes : half;
        jobs[t] = (job){.key = key, .data = buf + from, .bytes = to - from,
                        .unit_index = from / (size_t)unit_bytes, .unit_bytes = unit_bytes};
    }
    double t0 = now();
    for (int t = 1; t < nthreads; t++)
        if (pthread_create(&th[t], NULL, fn, &jobs[t]) != 0) return -1;
    fn(&jobs[0]);
    for (int t = 1; t < nthreads; t++) pthread_join(th[t], NULL);
    double dt = now() - t0;
    for (int t = 0; t < nthreads; t++)
        if (jobs[t].rc != WS_OK) return -1;
    if (digest) {
        memset(digest, 0, sizeof *digest);
        for (int t = 0; t < nthreads; t++) ws_fast_add(digest, &jobs[t].out, NULL);
    }
    if (sum) {
        *sum = 0;
        for (int t = 0; t < nthreads; t++) *sum += jobs[t].sum;
    }
    return dt;
}

int main(int argc, char **argv) {
    size_t mib = 1024;
    int reps = 3;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--size-mib") == 0 && i + 1 < argc)
            mib = strtoull(argv[++i], NULL, 10);
        else if (strcmp(argv[i], "--reps") == 0 && i + 1 < argc)
            reps = atoi(argv[++i]);
        else {
            fprintf(stderr, "usage: fast_bench [--size-mib N] [--reps R]\n");
            return 2;
        }
    }
    if (mib == 0 || reps < 1) return 2;
    size_t bytes = mib << 20;
    uint8_t *buf = aligned_alloc(4096, bytes);
    if (!buf) {
        fprintf(stderr, "fast_bench: cannot allocate %zu MiB\n", mib);
        return 2;
    }
    uint64_t x = 0x9E3779B97F4A7C15u; /* splitmix64: random, incompressible data */
    for (size_t i = 0; i < bytes / 8; i++) {
        uint64_t z = (x += 0x9E3779B97F4A7C15u);
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9u;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBu;
        z ^= z >> 31;
        memcpy(buf + 8 * i, &z, 8);
    }
    ws_fastkey *key = NULL;
    if (ws_fastkey_create(WS_FAST_DEFAULT_SEED, strlen(WS_FAST_DEFAULT_SEED), &key, NULL) !=
        WS_OK) {
        fprintf(stderr, "fast_bench: key derivation failed\n");
        return 2;
    }
    ws_fast_set_kernel("auto");
    printf("# buffer %zu MiB, best of %d; GB = 1e9 bytes; kernel auto picks: %s\n", mib, reps,
           ws_fast_kernel());
    printf("%-28s %7s %8s\n", "tool", "threads", "GB/s");

    /* Variants: memory read, then each kernel on 16-bit units, then the best on byte units;
     * each with 1 and 2 threads. Repetitions go round all variants, so a burst of load from
     * elsewhere on the machine does not hit one variant only; each keeps its best time. */
    static const char *const kernels[] = {"scalar", "avx2", "avx512", "avx512vnni"};
    enum { NK = sizeof kernels / sizeof kernels[0], MAXV = 2 * NK + 4 };
    struct variant {
        char name[64];
        int kernel; /* -1: memory read */
        int unit_bytes, threads;
        double best;
        ws_fast digest;
    } v[MAXV];
    int nv = 0, best_kernel = -1;
    for (int k = 0; k < NK; k++)
        if (ws_fast_set_kernel(kernels[k]) == WS_OK) best_kernel = k;
    for (int nt = 1; nt <= 2; nt++)
        v[nv++] = (struct variant){.kernel = -1, .unit_bytes = 8, .threads = nt};
    snprintf(v[0].name, sizeof v[0].name, "memory-read (sum u64)");
    snprintf(v[1].name, sizeof v[1].name, "memory-read (sum u64)");
    for (int ub = 2; ub >= 1; ub--)
        for (int k = 0; k < NK; k++) {
            if (ws_fast_set_kernel(kernels[k]) != WS_OK || (ub == 1 && k != best_kernel)) continue;
            for (int nt = 1; nt <= 2; nt++) {
                v[nv] = (struct variant){.kernel = k, .unit_bytes = ub, .threads = nt};
                snprintf(v[nv].name, sizeof v[nv].name, "fast-%s%s", kernels[k],
                         ub == 1 ? " (u8 units)" : "");
                nv++;
            }
        }
    for (int i = 0; i < nv; i++) v[i].best = 1e30;
    uint64_t sums[2] = {0, 0};
    for (int r = 0; r < reps; r++)
        for (int i = 0; i < nv; i++) {
            double dt;
            if (v[i].kernel < 0) {
                dt = timed(run_read, v[i].threads, key, buf, bytes, 8, NULL,
                           &sums[v[i].threads - 1]);
            } else {
                ws_fast_set_kernel(kernels[v[i].kernel]);
                dt = timed(run_fast, v[i].threads, key, buf, bytes, v[i].unit_bytes,
                           &v[i].digest, NULL);
            }
            if (dt > 0 && dt < v[i].best) v[i].best = dt;
        }
    for (int i = 0; i < nv; i++)
        printf("%-28s %7d %8.2f\n", v[i].name, v[i].threads, (double)bytes / v[i].best / 1e9);
    if (sums[0] != sums[1]) printf("# memory-read sums differ!\n");

    ws_fast ref = {{0, 0, 0}};
    int have_ref = 0, bad = 0;
    for (int i = 0; i < nv; i++) {
        if (v[i].kernel < 0 || v[i].unit_bytes != 2) continue;
        if (!have_ref) ref = v[i].digest, have_ref = 1;
        else if (memcmp(&ref, &v[i].digest, sizeof ref) != 0) bad = 1;
    }
    ws_fast_set_kernel("auto");
    char hex[49];
    ws_fast_hex(&ref, hex);
    printf("# fast digest of the buffer (u16 units): %s; all kernels/threads agree: %s\n", hex,
           bad ? "NO" : "yes");
    ws_fastkey_free(key);
    free(buf);
    return bad ? 1 : 0;
}
