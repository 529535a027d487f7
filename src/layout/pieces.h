/*
 * Internal: walking the pieces of a layout. A canonical tensor T is rebuilt from its replica-0
 * pieces without ever being materialised: the sweep visits T's rows in order and, within a
 * band of rows where the same pieces are active, emits runs of contiguous elements in
 * canonical (row-major) order. Dim-0 shards come out as one run per piece; dim-1 shards
 * interleave row by row. Gaps and overlaps are reported, not skipped.
 */
#ifndef WS_PIECES_H
#define WS_PIECES_H
#include "internal.h"

/* A run: n elements at canonical flat index t_at of T are elements l_at.. of local tensor
 * `local` (a flat index into the local tensor), from piece `piece`. */
typedef struct wsi_run {
    uint64_t t_at;
    uint32_t local;
    uint64_t l_at;
    uint64_t n;
    uint32_t piece;
} wsi_run;

typedef ws_err (*wsi_run_fn)(void *ctx, const wsi_run *run);

/* A gap or overlap in T: rows [row0, row1), columns [col0, col1) of T's 2-D view. */
typedef struct wsi_hole {
    bool overlap;
    uint64_t row0, row1, col0, col1;
} wsi_hole;

/* The pieces of one canonical tensor. */
typedef struct wsi_plan {
    uint32_t hf;
    uint64_t rows, cols;    /* T's 2-D view */
    uint32_t *primary;      /* replica-0 pieces sorted by (t_row0, t_col0) */
    size_t n_primary;
    uint32_t *copies;       /* replica > 0 pieces */
    size_t n_copies;
} wsi_plan;

/* Plans for every HF tensor of l (index = HF index). */
WSI_HIDDEN ws_err wsi_plans_build(const ws_layout *l, wsi_plan **out, ws_error *err);
WSI_HIDDEN void wsi_plans_free(wsi_plan *plans, size_t n);

/*
 * Emit T's runs in canonical order; rows [row_begin, row_end) of T only. Coverage problems
 * are reported through hole_fn (may be NULL) and their elements skipped; a run callback
 * error stops the walk and is returned. run_fn NULL: check coverage only.
 */
WSI_HIDDEN ws_err wsi_sweep(const ws_layout *l, const wsi_plan *p, uint64_t row_begin,
                            uint64_t row_end, wsi_run_fn run_fn, void *ctx,
                            void (*hole_fn)(void *ctx, const wsi_hole *h));

/* Emit the runs of one piece, row by row (for replica comparison). */
WSI_HIDDEN ws_err wsi_piece_runs(const ws_layout *l, uint32_t piece, wsi_run_fn run_fn, void *ctx);

/* Rows and columns of a tensor's 2-D view, as layouts define it. */
WSI_HIDDEN void wsi_view(int ndim, const uint64_t *shape, uint64_t *rows, uint64_t *cols);
#endif
