/*
 * Internal: plans and partials (ws_plan, ws_partials in weightsum.h). A plan is what a layout
 * asks of every rank, computed once: the pieces per canonical tensor, the coverage holes, the
 * replica-0 twin of every replica piece, the rows of every local tensor no piece covers. The
 * partials of a rank are what it found: per piece a raw fast-digest sum and NaN/Inf counts,
 * per local tensor its state and shape, and the engine tensors that map to nothing.
 */
#ifndef WS_PARTIALS_H
#define WS_PARTIALS_H
#include "pieces.h"

#define WSI_FP_BYTES 16

struct ws_plan {
    const ws_layout *l;
    wsi_plan *plans;          /* per HF tensor */
    size_t nh, nl, np;
    int tp;
    uint8_t fp[WSI_FP_BYTES]; /* fingerprint of the layout: partials of another are refused */
    wsi_hole *holes;          /* coverage problems, grouped by HF tensor */
    size_t *hole0;            /* per HF tensor: first index into holes (nh + 1 entries) */
    uint32_t *twin;           /* per piece: its replica-0 piece of the same rectangle, or
                                 UINT32_MAX (replica 0 pieces: themselves) */
    uint8_t **covered;        /* per local tensor: 1 per row some piece covers */
};

typedef enum wsi_local_state {
    WSI_LOCAL_UNSEEN = 0,     /* its rank was not computed */
    WSI_LOCAL_OK = 1,
    WSI_LOCAL_MISSING = 2,
    WSI_LOCAL_BAD_SHAPE = 3,
} wsi_local_state;

typedef struct wsi_piece_part {
    uint8_t done;
    ws_fast fast;             /* raw sum at the piece's global unit indices */
    ws_value_stats stats;
} wsi_piece_part;

typedef struct wsi_local_fact {
    uint8_t state;            /* wsi_local_state */
    uint8_t dtype;            /* stored dtype (OK, BAD_SHAPE) */
    uint8_t ndim;             /* shape found (BAD_SHAPE, OK) */
    uint64_t shape[WS_MAX_DIMS];
    uint64_t pad_bad, pad_first, pad0, pad1; /* padding rows: non-zero count, first, range */
} wsi_local_fact;

/* Something a rank holds that its layout does not expect, two names of one tied tensor
 * whose bytes differ, or (status WS_MATCH, no finding) the name a local tensor was read
 * under when the rank saved it under an alias (a tied lm_head.weight): findings name that. */
typedef struct wsi_extra {
    uint8_t status;           /* WS_UNEXPECTED / WS_REPLICA_MISMATCH / WS_MATCH (read as) */
    int32_t rank;
    uint32_t local;           /* REPLICA_MISMATCH: the local tensor */
    char *name, *other;
} wsi_extra;

struct ws_partials {
    uint8_t fp[WSI_FP_BYTES];
    uint32_t np, nl, tp;
    uint8_t canon;
    char key_id[17];
    uint8_t *ranks;           /* per rank: 1 when computed */
    wsi_piece_part *pieces;
    wsi_local_fact *locals;
    wsi_extra *extras;
    size_t nextras, cap_extras;
};

/* ws_partials_compute with more control (the dump checks use it): want (per piece, NULL: all)
 * says which pieces to digest; pieces are spread over `threads` threads; bound (nl entries,
 * may be NULL) receives the source tensor bound to each local tensor of the rank. */
typedef struct wsi_compute_opts {
    const uint8_t *want;
    bool no_padding;          /* leave the padding scans to the caller */
    int threads;
    const struct wsi_src_tensor **bound;
} wsi_compute_opts;
WSI_HIDDEN ws_err wsi_partials_compute_ex(const ws_plan *p, int rank, const ws_source *src,
                                          const ws_fastkey *key, ws_canon canon,
                                          const wsi_compute_opts *o, ws_partials **out,
                                          ws_error *err);

/* Structural and replica findings into r and the manifest of every tensor that can be
 * rebuilt. digests false: entries carry no digest (pieces were not all digested; SHA-256 is
 * added by the caller). replica_detail (may be NULL) words a replica finding from the bytes:
 * it fills detail and rows and returns true, or false to keep the digest-level words. */
typedef bool (*wsi_replica_detail_fn)(void *ctx, uint32_t copy, uint32_t twin, char *detail,
                                      size_t n, int64_t *row0, int64_t *row1);
typedef struct wsi_build_opts {
    bool digests;
    wsi_replica_detail_fn replica_detail;
    void *ctx;
} wsi_build_opts;
WSI_HIDDEN ws_err wsi_partials_build(const ws_plan *p, const ws_partials *pa, const char *source,
                                     ws_report *r, const wsi_build_opts *o, ws_manifest **out,
                                     ws_error *err);

/* Add the canonical tensor's seal to the raw partial of piece pc when it sits at the tensor's
 * origin (row 0, column 0); other pieces stay raw. */
WSI_HIDDEN ws_err wsi_piece_seal(const ws_layout *l, const ws_piece *pc, const ws_fastkey *key,
                                 ws_dtype cdt, ws_fast *fast, ws_error *err);

/* An empty set of partials shaped like p / like another set. */
WSI_HIDDEN ws_err wsi_partials_alloc(uint32_t np, uint32_t nl, uint32_t tp, ws_partials **out,
                                     ws_error *err);
/* The name local tensor `local` was read under: its alias when the rank saved it so, else
 * the layout's name. */
WSI_HIDDEN const char *wsi_partials_local_name(const ws_partials *pa, const ws_layout *l,
                                               uint32_t local);
WSI_HIDDEN ws_err wsi_partials_add_extra(ws_partials *pa, ws_status s, int rank, uint32_t local,
                                         const char *name, const char *other, ws_error *err);
#endif
