/* A parallel for-loop over work items on N threads, the calling thread included. Items are
 * taken in index order, so callers sort them largest first. */
#include "internal.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>

typedef struct loop {
    size_t n;
    atomic_size_t next;
    wsi_item_fn fn;
    void *ctx;
} loop;

static void *run_items(void *arg) {
    loop *lp = arg;
    for (;;) {
        size_t i = atomic_fetch_add(&lp->next, 1);
        if (i >= lp->n) break;
        lp->fn(lp->ctx, i);
    }
    return NULL;
}

void wsi_parallel_for(size_t n, int threads, wsi_item_fn fn, void *ctx) {
    loop lp = {.n = n, .fn = fn, .ctx = ctx};
    atomic_init(&lp.next, 0);
    int nth = threads > 0 ? threads : wsi_cpu_count();
    if ((size_t)nth > n) nth = n ? (int)n : 1;
    pthread_t *th = calloc((size_t)nth, sizeof *th);
    int started = 0;
    /* Threads that cannot start simply leave more items to the others. */
    for (int i = 1; th && i < nth; i++) {
        if (pthread_create(&th[started], NULL, run_items, &lp) != 0) break;
        started++;
    }
    run_items(&lp);
    for (int i = 0; i < started; i++) pthread_join(th[i], NULL);
    free(th);
}
