/*
 * Internal: checking an engine dump through sources and partials, shared by ws_hash_dump,
 * ws_verify_dump and ws_diff_dump. The dump is bound once: a source per rank file, the
 * partials of every rank (every piece when the fast digest is wanted, else the replica
 * pieces and their twins), the structural and replica findings, and the list of canonical
 * tensors that can be rebuilt. Every byte is read through the sources (a file that shrinks is
 * an error naming it, never SIGBUS).
 */
#ifndef WS_DUMP_CHECK_H
#define WS_DUMP_CHECK_H
#include "partials.h"
#include "source.h"
#include "hash_options.h"

#include <pthread.h>

typedef struct wsi_dumpcheck {
    const ws_layout *l;
    const ws_dump *d;
    ws_plan *plan;
    ws_source **src;               /* per rank < tp; NULL without a file */
    const wsi_src_tensor **bound;  /* per local tensor: its bytes, or NULL */
    ws_partials *pa;               /* every rank's, merged */
    ws_fastkey *own_key;
    const ws_fastkey *key;         /* the caller's, or own_key */
    ws_canon canon;
    bool fast;                     /* every piece digested: rebuilt carries fast digests */
    ws_manifest *rebuilt;          /* every canonical tensor that can be rebuilt */
    ws_report *r;
    pthread_mutex_t lock;          /* guards r and progress */
    uint64_t done, total;
    const ws_hash_options *opt;
} wsi_dumpcheck;

/* Bind dump d to layout l (opt: canon, algos, key, threads, progress); findings into r. */
WSI_HIDDEN ws_err wsi_dumpcheck_open(wsi_dumpcheck *c, const ws_layout *l, const ws_dump *d,
                                     const ws_hash_options *opt, ws_report *r, ws_error *err);
WSI_HIDDEN void wsi_dumpcheck_close(wsi_dumpcheck *c);
/* wsi_dumpcheck_open in two steps: bind (sources, partials; defer: no piece digested and no
 * padding scanned, for a caller that reads the bytes itself and fills c->pa), then build (the
 * structural and replica findings into r, c->rebuilt). */
WSI_HIDDEN ws_err wsi_dumpcheck_bind(wsi_dumpcheck *c, const ws_layout *l, const ws_dump *d,
                                     const ws_hash_options *opt, ws_report *r, bool defer,
                                     ws_error *err);
WSI_HIDDEN ws_err wsi_dumpcheck_build(wsi_dumpcheck *c, ws_error *err);
/* Thread-safe progress: n more elements done. */
WSI_HIDDEN void wsi_dumpcheck_progress(wsi_dumpcheck *c, uint64_t n);
/*
 * ws_hash_dump in one read of every byte (dump_pass.c): every piece's fast partial, every
 * padding row, every canonical tensor's SHA-256 (in canonical order) and, when local_algos is
 * set, the digest of every local tensor the layout binds, as ws_digest_tensor gives it, into
 * local[rank][i] (i: the tensor's index in the rank's checkpoint; entries it cannot give keep
 * algos 0). Answers equal ws_hash_dump's and ws_digest_tensor's.
 */
/* wsi_hash_dump_pass leaving c bound (close it with wsi_dumpcheck_close, whatever the
 * result), for a caller that goes on to locate or name holders (ws_verify_dump). */
WSI_HIDDEN ws_err wsi_dumpcheck_pass(wsi_dumpcheck *c, const ws_layout *l, const ws_dump *d,
                                     const ws_hash_options *opt, ws_report *r,
                                     const char *source, ws_manifest **out,
                                     unsigned local_algos, ws_digest **local, ws_error *err);
WSI_HIDDEN ws_err wsi_hash_dump_pass(const ws_layout *l, const ws_dump *d,
                                     const ws_hash_options *opt, const char *source,
                                     ws_manifest **out, ws_report *r, unsigned local_algos,
                                     ws_digest **local, ws_error *err);
/* Read n elements at flat index l_at of local tensor `local`: fn as for wsi_source_rect
 * (at counts from l_at). */
WSI_HIDDEN ws_err wsi_dumpcheck_read(const wsi_dumpcheck *c, uint32_t local, uint64_t l_at,
                                     uint64_t n, wsi_readbuf *buf, wsi_rect_fn fn, void *ctx,
                                     ws_error *err);
/* The name under which the dump holds local tensor `local`: the one read (a tied embedding
 * may be saved as lm_head.weight only), else the layout's. */
WSI_HIDDEN const char *wsi_dumpcheck_local_name(const wsi_dumpcheck *c, uint32_t local);
/* Thread-safe report append of a finding with its value fields. */
WSI_HIDDEN void wsi_dumpcheck_add(wsi_dumpcheck *c, const ws_finding *f);
/* Thread-safe report append. */
WSI_HIDDEN void wsi_dumpcheck_report(wsi_dumpcheck *c, ws_status s, const char *tensor,
                                     const char *local, int rank, int64_t row0, int64_t row1,
                                     const char *fmt, ...) __attribute__((format(printf, 8, 9)));
#endif
