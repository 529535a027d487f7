/*
 * Digest every tensor of a checkpoint on N threads. SHA-256 is sequential, so a tensor is one
 * work item; the fast digest is not, so with it alone large tensors are split into ranges whose
 * partials add up. Items go largest first so the longest tensor starts at once.
 */
#include "digest.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#define RANGE_ELEMS (16u * 1024u * 1024u)

typedef struct item {
    size_t tensor;
    uint64_t begin, end; /* element range */
} item;

typedef struct part {
    ws_digest digest;
    ws_value_stats stats;
} part;

typedef struct pool {
    const ws_ckpt *ckpt;
    const ws_hash_options *opt;
    item *items;
    size_t nitems;
    part *parts; /* one per item */
    atomic_size_t next;
    pthread_mutex_t lock;
    uint64_t done, total;
    ws_err rc;
    ws_error err;
} pool;

static int cmp_item_size(const void *a, const void *b) {
    uint64_t x = ((const item *)a)->end - ((const item *)a)->begin;
    uint64_t y = ((const item *)b)->end - ((const item *)b)->begin;
    return x < y ? 1 : x > y ? -1 : 0;
}

static void *worker(void *arg) {
    pool *p = arg;
    for (;;) {
        size_t i = atomic_fetch_add(&p->next, 1);
        if (i >= p->nitems) break;
        const item *it = &p->items[i];
        const ws_tensor *t = ws_ckpt_tensor(p->ckpt, it->tensor);
        wsi_sink s;
        ws_error e;
        ws_err rc = wsi_sink_init(&s, p->opt->algos, ws_canonical_dtype(t->dtype, p->opt->canon),
                                  p->opt->key, &e);
        if (rc == WS_OK) {
            size_t esz = ws_dtype_size(t->dtype);
            /* feed in slices so progress moves inside a large tensor */
            uint64_t at = it->begin;
            while (at < it->end) {
                uint64_t n = it->end - at < RANGE_ELEMS / 4 ? it->end - at : RANGE_ELEMS / 4;
                const uint8_t *src = (const uint8_t *)t->data + at * esz;
                s.release = p->ckpt;
                wsi_sink_feed(&s, t->dtype, p->opt->canon, at, src, n, &p->parts[i].stats);
                at += n;
                if (p->opt->progress) {
                    pthread_mutex_lock(&p->lock);
                    p->done += n * esz;
                    p->opt->progress(p->opt->progress_user, p->done, p->total);
                    pthread_mutex_unlock(&p->lock);
                }
            }
            rc = wsi_sink_final(&s, &p->parts[i].digest, &e);
        }
        wsi_sink_destroy(&s);
        if (rc != WS_OK) {
            pthread_mutex_lock(&p->lock);
            if (p->rc == WS_OK) {
                p->rc = rc;
                p->err = e;
            }
            pthread_mutex_unlock(&p->lock);
        }
    }
    return NULL;
}

ws_err ws_hash_checkpoint(const ws_ckpt *c, const ws_hash_options *opt, const char *source,
                          ws_manifest **out, ws_error *err) {
    *out = NULL;
    ws_hash_options o = *opt;
    if (!o.algos) o.algos = WS_ALGO_SHA256;
    if ((o.algos & WS_ALGO_FAST) && !o.key)
        return wsi_fail(err, WS_ERR_ARG, NULL, NULL, -1, "fast digest requested without a key");
    bool split = !(o.algos & WS_ALGO_SHA256);
    size_t nt = ws_ckpt_count(c), cap = nt + 1;
    pool p;
    memset(&p, 0, sizeof p);
    p.ckpt = c;
    p.opt = &o;
    for (size_t i = 0; i < nt && split; i++) cap += ws_ckpt_tensor(c, i)->numel / RANGE_ELEMS;
    p.items = calloc(cap, sizeof *p.items);
    p.parts = calloc(cap, sizeof *p.parts);
    if (!p.items || !p.parts) {
        free(p.items);
        free(p.parts);
        return wsi_fail(err, WS_ERR_NOMEM, NULL, NULL, -1, "out of memory");
    }
    for (size_t i = 0; i < nt; i++) {
        const ws_tensor *t = ws_ckpt_tensor(c, i);
        p.total += t->nbytes;
        uint64_t step = split ? RANGE_ELEMS : (t->numel ? t->numel : 1);
        uint64_t b = 0;
        do {
            uint64_t e = t->numel - b < step ? t->numel : b + step;
            p.items[p.nitems++] = (item){i, b, e};
            b = e;
        } while (b < t->numel);
    }
    qsort(p.items, p.nitems, sizeof *p.items, cmp_item_size);
    pthread_mutex_init(&p.lock, NULL);
    int nth = o.threads > 0 ? o.threads : wsi_cpu_count();
    if ((size_t)nth > p.nitems) nth = p.nitems ? (int)p.nitems : 1;
    pthread_t *th = calloc((size_t)nth, sizeof *th);
    int started = 0;
    ws_err rc = WS_OK;
    if (!th) rc = wsi_fail(err, WS_ERR_NOMEM, NULL, NULL, -1, "out of memory");
    for (int i = 1; i < nth && rc == WS_OK; i++) {
        if (pthread_create(&th[i], NULL, worker, &p) != 0) break; /* run with fewer threads */
        started++;
    }
    if (rc == WS_OK) worker(&p);
    for (int i = 1; i <= started; i++) pthread_join(th[i], NULL);
    free(th);
    pthread_mutex_destroy(&p.lock);
    if (rc == WS_OK && p.rc != WS_OK) {
        rc = p.rc;
        if (err) *err = p.err;
    }
    ws_manifest *m = NULL;
    if (rc == WS_OK) {
        m = ws_manifest_new(o.canon, o.algos, o.key ? ws_fastkey_id(o.key) : NULL, source);
        if (!m) rc = wsi_fail(err, WS_ERR_NOMEM, NULL, NULL, -1, "out of memory");
    }
    /* Combine the parts of each tensor (sorted back by tensor index). */
    ws_manifest_entry *ents = rc == WS_OK ? calloc(nt + 1, sizeof *ents) : NULL;
    if (rc == WS_OK && !ents) rc = wsi_fail(err, WS_ERR_NOMEM, NULL, NULL, -1, "out of memory");
    for (size_t i = 0; i < p.nitems && rc == WS_OK; i++) {
        ws_manifest_entry *e = &ents[p.items[i].tensor];
        const part *pt = &p.parts[i];
        e->digest.algos = pt->digest.algos;
        if (pt->digest.algos & WS_ALGO_SHA256) memcpy(e->digest.sha256, pt->digest.sha256, 32);
        if (pt->digest.algos & WS_ALGO_FAST) ws_fast_add(&e->digest.fast, &pt->digest.fast);
        e->stats.nan += pt->stats.nan;
        e->stats.inf += pt->stats.inf;
    }
    for (size_t i = 0; i < nt && rc == WS_OK; i++) {
        const ws_tensor *t = ws_ckpt_tensor(c, i);
        ws_manifest_entry *e = &ents[i];
        e->name = (char *)t->name;
        e->dtype = t->dtype;
        e->canonical_dtype = ws_canonical_dtype(t->dtype, o.canon);
        e->ndim = t->ndim;
        memcpy(e->shape, t->shape, sizeof e->shape);
        if (ws_manifest_add(m, e) != WS_OK)
            rc = wsi_fail(err, WS_ERR_NOMEM, NULL, NULL, -1, "out of memory");
    }
    free(ents);
    free(p.items);
    free(p.parts);
    if (rc != WS_OK) {
        ws_manifest_free(m);
        return rc;
    }
    *out = m;
    return WS_OK;
}
