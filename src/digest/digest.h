/* Internal: a digest sink fed canonical bytes, and the cast-then-feed step every path shares
 * (whole tensors, pieces of engine shards, row bands). */
#ifndef WS_DIGEST_H
#define WS_DIGEST_H
#include "internal.h"

#include <openssl/evp.h>

/* Scratch for cast output: bounds memory by a chunk, never by a tensor. */
#define WSI_CHUNK_ELEMS (64u * 1024u)

typedef struct wsi_sink {
    unsigned algos;
    ws_dtype cdtype;          /* canonical dtype of what is fed */
    EVP_MD_CTX *sha;          /* fed strictly in element order */
    const ws_fastkey *key;
    ws_fast fast;             /* any order */
    uint8_t *scratch;         /* WSI_CHUNK_ELEMS * 8 bytes */
    const ws_ckpt *release;   /* when set, source pages of this checkpoint are let go once fed */
} wsi_sink;

WSI_HIDDEN ws_err wsi_sink_init(wsi_sink *s, unsigned algos, ws_dtype cdtype,
                                const ws_fastkey *key, ws_error *err);
WSI_HIDDEN void wsi_sink_destroy(wsi_sink *s);
/* wsi_sink_init with the caller's scratch (WSI_CHUNK_ELEMS * 8 bytes, outliving the sink): for
 * many sinks open at once on one thread. Destroy with wsi_sink_destroy_shared. */
WSI_HIDDEN ws_err wsi_sink_init_shared(wsi_sink *s, unsigned algos, ws_dtype cdtype,
                                       const ws_fastkey *key, uint8_t *scratch, ws_error *err);
WSI_HIDDEN void wsi_sink_destroy_shared(wsi_sink *s);
/* Feed n source elements of dtype src_dtype that sit at canonical element index `at`. */
WSI_HIDDEN void wsi_sink_feed(wsi_sink *s, ws_dtype src_dtype, ws_canon c, uint64_t at,
                              const void *src, uint64_t n, ws_value_stats *stats);
/* Finish: SHA-256 (if any) and the fast digest into out. */
WSI_HIDDEN ws_err wsi_sink_final(wsi_sink *s, ws_digest *out, ws_error *err);
/* Seal the fast digest of dg (when it has one) with the tensor's canonical dtype and shape:
 * every tensor-level fast digest is sealed, range digests stay raw (fast_seal.c). */
WSI_HIDDEN ws_err wsi_digest_seal(ws_digest *dg, const ws_fastkey *k, ws_dtype canonical_dtype,
                                  int ndim, const uint64_t *shape, const char *tensor,
                                  ws_error *err);
#endif
