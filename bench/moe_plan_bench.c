/* Layout and plan building for an MoE model over tp x ep (x pp): time and peak memory.
 *   moe_plan_bench CONFIG FAMILY TP EP PP */
#include "weightsum.h"
#include "weightsum_experimental.h"

#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <time.h>

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static long rss_kib(void) {
    struct rusage u;
    getrusage(RUSAGE_SELF, &u);
    return u.ru_maxrss;
}

int main(int argc, char **argv) {
    if (argc != 6) {
        fprintf(stderr, "usage: moe_plan_bench CONFIG FAMILY TP EP PP\n");
        return 2;
    }
    ws_error e;
    ws_model_config *cfg = NULL;
    ws_parallel *par = NULL;
    long v[3] = {atol(argv[3]), atol(argv[4]), atol(argv[5])};
    if (ws_model_config_load(argv[1], &cfg, &e) || ws_parallel_create(&par, &e) ||
        ws_parallel_set(par, WS_PAR_TP, v[0], &e) || ws_parallel_set(par, WS_PAR_EP, v[1], &e) ||
        ws_parallel_set(par, WS_PAR_PP, v[2], &e)) {
        fprintf(stderr, "%s\n", e.what);
        return 2;
    }
    long rss0 = rss_kib();
    double t0 = now();
    ws_layout *l = NULL;
    if (ws_layout_create_parallel(argv[2], cfg, par, &l, &e)) {
        fprintf(stderr, "%s\n", e.what);
        return 2;
    }
    double t1 = now();
    long rss1 = rss_kib();
    ws_plan *p = NULL;
    if (ws_plan_create(l, &p, &e)) {
        fprintf(stderr, "%s\n", e.what);
        return 2;
    }
    double t2 = now();
    long rss2 = rss_kib();
    printf("%s %s tp=%ld ep=%ld pp=%ld: %d ranks, %zu HF tensors, %zu local tensors, %zu pieces\n",
           argv[1], argv[2], v[0], v[1], v[2], ws_layout_rank_count(l), ws_layout_hf_count(l),
           ws_layout_local_count(l), ws_layout_piece_count(l));
    printf("  layout: %.3f s, peak RSS +%.1f MiB; plan (ws_plan_create): %.3f s, peak RSS +%.1f MiB"
           " (total peak %.1f MiB)\n",
           t1 - t0, (double)(rss1 - rss0) / 1024, t2 - t1, (double)(rss2 - rss1) / 1024,
           (double)rss2 / 1024);
    ws_plan_free(p);
    ws_layout_free(l);
    ws_parallel_free(par);
    ws_model_config_free(cfg);
    return 0;
}
