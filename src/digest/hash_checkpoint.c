/*
 * Digest every tensor of a checkpoint on N threads. SHA-256 is sequential, so a tensor is one
 * work item; the fast digest is not, so with it alone large tensors are split into ranges whose
 * partials add up. Items go largest first so the longest tensor starts at once.
 */
#include "digest.h"
#include "hash_options.h"
#include "source.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#define RANGE_ELEMS (16u * 1024u * 1024u)

typedef struct item {
    size_t tensor;
    uint64_t begin, end; /* element range */
    const char *file;    /* where it starts: file, byte offset */
    uint64_t at;
} item;

typedef struct part {
    ws_digest digest;
    ws_value_stats stats;
} part;

typedef struct job {
    const ws_ckpt *ckpt;
    ws_source *src;       /* every byte read through it: a file cut while read is an error */
    const ws_hash_options *opt;
    item *items;
    size_t nitems;
    part *parts; /* one per item */
    pthread_mutex_t lock; /* guards done, the progress callback, rc and err */
    uint64_t done, total;
    ws_err rc;
    ws_error err;
} job;

/* Items in file order: one thread then reads each file front to back, which the kernel's
 * read-ahead follows (largest first, the many equal 16M-element ranges of a fast hash came in
 * qsort's order, and a cold read jumped about the file). */
static int cmp_item_place(const void *a, const void *b) {
    const item *x = a, *y = b;
    int c = strcmp(x->file ? x->file : "", y->file ? y->file : "");
    return c ? c : x->at < y->at ? -1 : x->at > y->at;
}

/* Largest first (the longest starts at once on several threads), ties in file order. */
static int cmp_item_size(const void *a, const void *b) {
    uint64_t x = ((const item *)a)->end - ((const item *)a)->begin;
    uint64_t y = ((const item *)b)->end - ((const item *)b)->begin;
    return x < y ? 1 : x > y ? -1 : cmp_item_place(a, b);
}

typedef struct feed_slice {
    wsi_sink *sink;
    ws_dtype dtype;
    ws_canon canon;
    uint64_t at;
    ws_value_stats *stats;
} feed_slice;

static ws_err feed_at(void *arg, uint64_t at, const void *data, uint64_t n) {
    feed_slice *f = arg;
    wsi_sink_feed(f->sink, f->dtype, f->canon, f->at + at, data, n, f->stats);
    return WS_OK;
}

static void digest_item(void *arg, size_t i) {
    job *j = arg;
    const item *it = &j->items[i];
    const ws_tensor *t = ws_ckpt_tensor(j->ckpt, it->tensor);
    wsi_sink s;
    ws_error e;
    ws_canon canon = ws_canon_for_tensor(t->name, t->dtype, j->opt->canon);
    ws_err rc = wsi_sink_init(&s, j->opt->algos, ws_canonical_dtype(t->dtype, canon), j->opt->key, &e);
    const wsi_src_tensor *st = wsi_source_find(j->src, t->name);
    wsi_readbuf buf = {0};
    if (rc == WS_OK) {
        size_t esz = ws_dtype_size(t->dtype);
        /* feed in slices so progress moves inside a large tensor */
        for (uint64_t at = it->begin; at < it->end && rc == WS_OK;) {
            uint64_t n = it->end - at < RANGE_ELEMS / 4 ? it->end - at : RANGE_ELEMS / 4;
            feed_slice f = {&s, t->dtype, canon, at, &j->parts[i].stats};
            rc = wsi_source_rect(j->src, st, 0, at, 1, n, st->numel, &buf, feed_at, &f, &e);
            at += n;
            if (j->opt->progress) {
                pthread_mutex_lock(&j->lock);
                j->done += n * esz;
                j->opt->progress(j->opt->progress_user, j->done, j->total);
                pthread_mutex_unlock(&j->lock);
            }
        }
        if (rc == WS_OK) rc = wsi_sink_final(&s, &j->parts[i].digest, &e);
    }
    wsi_readbuf_free(&buf);
    wsi_sink_destroy(&s);
    if (rc != WS_OK) {
        pthread_mutex_lock(&j->lock);
        if (j->rc == WS_OK) {
            j->rc = rc;
            j->err = e;
        }
        pthread_mutex_unlock(&j->lock);
    }
}

/* The manifest: each tensor's parts combined (fast digests add up), in checkpoint order. */
static ws_err collect(const job *j, const char *source, ws_manifest **out, ws_error *err) {
    const ws_hash_options *o = j->opt;
    size_t nt = ws_ckpt_count(j->ckpt);
    ws_manifest *m = ws_manifest_new(o->canon, o->algos, o->key ? ws_fastkey_id(o->key) : NULL, source);
    ws_manifest_entry *ents = calloc(nt + 1, sizeof *ents);
    ws_err rc = m && ents ? WS_OK : wsi_fail(err, WS_ERR_NOMEM, NULL, NULL, -1, "out of memory");
    for (size_t i = 0; i < j->nitems && rc == WS_OK; i++) {
        ws_manifest_entry *e = &ents[j->items[i].tensor];
        const part *pt = &j->parts[i];
        e->digest.algos = pt->digest.algos;
        if (pt->digest.algos & WS_ALGO_SHA256) memcpy(e->digest.sha256, pt->digest.sha256, 32);
        if (pt->digest.algos & WS_ALGO_FAST) wsi_fast_add(&e->digest.fast, &pt->digest.fast);
        e->stats.nan += pt->stats.nan;
        e->stats.inf += pt->stats.inf;
    }
    for (size_t i = 0; i < nt && rc == WS_OK; i++) {
        const ws_tensor *t = ws_ckpt_tensor(j->ckpt, i);
        ws_manifest_entry *e = &ents[i];
        e->name = (char *)t->name;
        e->dtype = t->dtype;
        e->canonical_dtype =
            ws_canonical_dtype(t->dtype, ws_canon_for_tensor(t->name, t->dtype, o->canon));
        e->ndim = t->ndim;
        memcpy(e->shape, t->shape, sizeof e->shape);
        /* the parts add up to the raw digest; the tensor's digest is it sealed */
        rc = wsi_digest_seal(&e->digest, o->key, e->canonical_dtype, t->ndim, t->shape, t->name, err);
        if (rc != WS_OK) break;
        if (ws_manifest_add(m, e) != WS_OK)
            rc = wsi_fail(err, WS_ERR_NOMEM, NULL, NULL, -1, "out of memory");
    }
    free(ents);
    if (rc != WS_OK) {
        ws_manifest_free(m);
        return rc;
    }
    *out = m;
    return WS_OK;
}

ws_err ws_hash_checkpoint(const ws_ckpt *c, const ws_hash_options *opt, const char *source,
                          ws_manifest **out, ws_error *err) {
    if (!c || !opt || !out)
        return wsi_fail(err, WS_ERR_ARG, NULL, NULL, -1,
                        "ws_hash_checkpoint: c, opt and out must not be NULL");
    *out = NULL;
    ws_hash_options o = *opt;
    if (!o.algos) o.algos = WS_ALGO_SHA256;
    if ((o.algos & WS_ALGO_FAST) && !o.key)
        return wsi_fail(err, WS_ERR_ARG, NULL, NULL, -1, "fast digest requested without a key");
    bool split = !(o.algos & WS_ALGO_SHA256);
    size_t nt = ws_ckpt_count(c), cap = nt + 1;
    job j;
    memset(&j, 0, sizeof j);
    j.ckpt = c;
    j.opt = &o;
    for (size_t i = 0; i < nt && split; i++) cap += ws_ckpt_tensor(c, i)->numel / RANGE_ELEMS;
    j.items = calloc(cap, sizeof *j.items);
    j.parts = calloc(cap, sizeof *j.parts);
    ws_err rc = WS_OK;
    if (!j.items || !j.parts) rc = wsi_fail(err, WS_ERR_NOMEM, NULL, NULL, -1, "out of memory");
    for (size_t i = 0; i < nt && rc == WS_OK; i++) {
        const ws_tensor *t = ws_ckpt_tensor(c, i);
        j.total += t->nbytes;
        uint64_t step = split ? RANGE_ELEMS : (t->numel ? t->numel : 1), b = 0;
        do {
            uint64_t e = t->numel - b < step ? t->numel : b + step;
            j.items[j.nitems++] = (item){i, b, e, t->file, t->file_offset + b * ws_dtype_size(t->dtype)};
            b = e;
        } while (b < t->numel);
    }
    if (rc == WS_OK) rc = wsi_source_ckpt(c, WS_READ_DEFAULT, &j.src, err);
    if (rc == WS_OK) {
        int nth = o.threads > 0 ? o.threads : wsi_cpu_count();
        qsort(j.items, j.nitems, sizeof *j.items, nth == 1 ? cmp_item_place : cmp_item_size);
        pthread_mutex_init(&j.lock, NULL);
        wsi_parallel_for(j.nitems, o.threads, digest_item, &j);
        pthread_mutex_destroy(&j.lock);
        if (j.rc != WS_OK) {
            rc = j.rc;
            if (err) *err = j.err;
        }
    }
    if (rc == WS_OK) rc = collect(&j, source, out, err);
    ws_source_free(j.src);
    free(j.items);
    free(j.parts);
    return rc;
}
