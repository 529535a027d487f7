/* Walking pieces: plans per canonical tensor and the canonical-order sweep (see pieces.h). */
#include "pieces.h"

#include <stdlib.h>
#include <string.h>

void wsi_view(int ndim, const uint64_t *shape, uint64_t *rows, uint64_t *cols) {
    uint64_t numel = 1;
    for (int d = 0; d < ndim; d++) numel *= shape[d];
    if (ndim == 0) *rows = 1, *cols = 1;
    else if (ndim == 1) *rows = shape[0], *cols = 1;
    else if (ndim == 2) *rows = shape[0], *cols = shape[0] ? shape[1] : 0;
    else *cols = shape[ndim - 1], *rows = shape[ndim - 1] ? numel / shape[ndim - 1] : 0;
}

static const ws_layout *sort_layout; /* qsort has no context argument; guarded by sort_lock */
#include <pthread.h>
static pthread_mutex_t sort_lock = PTHREAD_MUTEX_INITIALIZER;

static int cmp_piece_pos(const void *a, const void *b) {
    const ws_piece *x = ws_layout_piece(sort_layout, *(const uint32_t *)a);
    const ws_piece *y = ws_layout_piece(sort_layout, *(const uint32_t *)b);
    if (x->t_row0 != y->t_row0) return x->t_row0 < y->t_row0 ? -1 : 1;
    if (x->t_col0 != y->t_col0) return x->t_col0 < y->t_col0 ? -1 : 1;
    return 0;
}

void wsi_plans_free(wsi_plan *plans, size_t n) {
    if (!plans) return;
    for (size_t i = 0; i < n; i++) {
        free(plans[i].primary);
        free(plans[i].copies);
    }
    free(plans);
}

ws_err wsi_plans_build(const ws_layout *l, wsi_plan **out, ws_error *err) {
    size_t nh = ws_layout_hf_count(l), np = ws_layout_piece_count(l);
    wsi_plan *plans = calloc(nh ? nh : 1, sizeof *plans);
    size_t *n0 = calloc(nh ? nh : 1, sizeof *n0), *nk = calloc(nh ? nh : 1, sizeof *nk);
    ws_err rc = WS_OK;
    if (!plans || !n0 || !nk) {
        rc = wsi_fail(err, WS_ERR_NOMEM, NULL, NULL, -1, "out of memory");
        goto done;
    }
    for (size_t i = 0; i < np; i++) {
        const ws_piece *p = ws_layout_piece(l, i);
        (p->replica ? nk : n0)[p->hf]++;
    }
    for (size_t h = 0; h < nh && rc == WS_OK; h++) {
        const ws_hf_desc *d = ws_layout_hf(l, h);
        plans[h].hf = (uint32_t)h;
        wsi_view(d->ndim, d->shape, &plans[h].rows, &plans[h].cols);
        plans[h].primary = malloc((n0[h] + 1) * sizeof(uint32_t));
        plans[h].copies = malloc((nk[h] + 1) * sizeof(uint32_t));
        if (!plans[h].primary || !plans[h].copies)
            rc = wsi_fail(err, WS_ERR_NOMEM, NULL, NULL, -1, "out of memory");
    }
    for (size_t i = 0; i < np && rc == WS_OK; i++) {
        const ws_piece *p = ws_layout_piece(l, i);
        wsi_plan *pl = &plans[p->hf];
        if (p->replica) pl->copies[pl->n_copies++] = (uint32_t)i;
        else pl->primary[pl->n_primary++] = (uint32_t)i;
    }
    if (rc == WS_OK) {
        pthread_mutex_lock(&sort_lock);
        sort_layout = l;
        for (size_t h = 0; h < nh; h++)
            qsort(plans[h].primary, plans[h].n_primary, sizeof(uint32_t), cmp_piece_pos);
        pthread_mutex_unlock(&sort_lock);
    }
done:
    free(n0);
    free(nk);
    if (rc != WS_OK) {
        wsi_plans_free(plans, nh);
        return rc;
    }
    *out = plans;
    return WS_OK;
}

static int cmp_u64(const void *a, const void *b) {
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static void report_hole(void (*hole_fn)(void *, const wsi_hole *), void *ctx, bool overlap,
                        uint64_t r0, uint64_t r1, uint64_t c0, uint64_t c1) {
    if (!hole_fn) return;
    wsi_hole h = {overlap, r0, r1, c0, c1};
    hole_fn(ctx, &h);
}

ws_err wsi_sweep(const ws_layout *l, const wsi_plan *p, uint64_t row_begin, uint64_t row_end,
                 wsi_run_fn run_fn, void *ctx, void (*hole_fn)(void *ctx, const wsi_hole *h)) {
    if (row_end > p->rows) row_end = p->rows;
    if (row_begin >= row_end || p->cols == 0) return WS_OK;
    /* Row boundaries: band edges are where some piece starts or ends. */
    size_t nb = 0;
    uint64_t *bounds = malloc((2 * p->n_primary + 2) * sizeof *bounds);
    uint32_t *active = malloc((p->n_primary + 1) * sizeof *active);
    if (!bounds || !active) {
        free(bounds);
        free(active);
        return WS_ERR_NOMEM;
    }
    bounds[nb++] = row_begin;
    bounds[nb++] = row_end;
    for (size_t i = 0; i < p->n_primary; i++) {
        const ws_piece *pc = ws_layout_piece(l, p->primary[i]);
        uint64_t a = pc->t_row0, b = pc->t_row0 + pc->rows;
        if (a > row_begin && a < row_end) bounds[nb++] = a;
        if (b > row_begin && b < row_end) bounds[nb++] = b;
    }
    qsort(bounds, nb, sizeof *bounds, cmp_u64);
    ws_err rc = WS_OK;
    for (size_t bi = 0; bi + 1 < nb && rc == WS_OK; bi++) {
        uint64_t a = bounds[bi], b = bounds[bi + 1];
        if (a == b) continue;
        /* Active pieces in this band, in column order (primary is sorted by row, then col). */
        size_t na = 0;
        for (size_t i = 0; i < p->n_primary; i++) {
            const ws_piece *pc = ws_layout_piece(l, p->primary[i]);
            if (pc->t_row0 <= a && pc->t_row0 + pc->rows >= b) active[na++] = p->primary[i];
        }
        /* sort active by column (insertion sort: a band has few pieces) */
        for (size_t i = 1; i < na; i++) {
            uint32_t v = active[i];
            size_t j = i;
            while (j > 0 && ws_layout_piece(l, active[j - 1])->t_col0 > ws_layout_piece(l, v)->t_col0) {
                active[j] = active[j - 1];
                j--;
            }
            active[j] = v;
        }
        /* Coverage of [0, cols): report gaps and overlaps once per band. */
        uint64_t c = 0;
        for (size_t i = 0; i < na; i++) {
            const ws_piece *pc = ws_layout_piece(l, active[i]);
            if (pc->t_col0 > c) report_hole(hole_fn, ctx, false, a, b, c, pc->t_col0);
            if (pc->t_col0 < c) report_hole(hole_fn, ctx, true, a, b, pc->t_col0, c);
            if (pc->t_col0 + pc->cols > c) c = pc->t_col0 + pc->cols;
        }
        if (c < p->cols) report_hole(hole_fn, ctx, false, a, b, c, p->cols);
        if (!run_fn) continue; /* coverage only */
        if (na == 1) {
            const ws_piece *pc = ws_layout_piece(l, active[0]);
            if (pc->t_col0 == 0 && pc->cols == p->cols && pc->l_col0 == 0 &&
                pc->l_cols == pc->cols) {
                /* the whole band is one contiguous run of the local tensor */
                wsi_run r = {.t_at = a * p->cols, .local = pc->local,
                             .l_at = (pc->l_row0 + (a - pc->t_row0)) * pc->l_cols,
                             .n = (b - a) * p->cols, .piece = active[0]};
                rc = run_fn(ctx, &r);
                continue;
            }
        }
        for (uint64_t row = a; row < b && rc == WS_OK; row++) {
            uint64_t next_col = 0;
            for (size_t i = 0; i < na && rc == WS_OK; i++) {
                const ws_piece *pc = ws_layout_piece(l, active[i]);
                uint64_t c0 = pc->t_col0 < next_col ? next_col : pc->t_col0; /* skip overlap */
                if (c0 >= pc->t_col0 + pc->cols) continue;
                uint64_t skip = c0 - pc->t_col0;
                wsi_run r = {.t_at = row * p->cols + c0, .local = pc->local,
                             .l_at = (pc->l_row0 + (row - pc->t_row0)) * pc->l_cols + pc->l_col0 +
                                     skip,
                             .n = pc->cols - skip, .piece = active[i]};
                rc = run_fn(ctx, &r);
                next_col = pc->t_col0 + pc->cols;
            }
        }
    }
    free(bounds);
    free(active);
    return rc;
}

ws_err wsi_piece_runs(const ws_layout *l, uint32_t piece, wsi_run_fn run_fn, void *ctx) {
    const ws_piece *pc = ws_layout_piece(l, piece);
    const ws_hf_desc *d = ws_layout_hf(l, pc->hf);
    uint64_t rows, cols;
    wsi_view(d->ndim, d->shape, &rows, &cols);
    if (pc->cols == cols && pc->cols == pc->l_cols) { /* rows contiguous on both sides */
        wsi_run r = {.t_at = pc->t_row0 * cols, .local = pc->local, .l_at = pc->l_row0 * pc->l_cols,
                     .n = pc->rows * pc->cols, .piece = piece};
        return run_fn(ctx, &r);
    }
    ws_err rc = WS_OK;
    for (uint64_t i = 0; i < pc->rows && rc == WS_OK; i++) {
        wsi_run r = {.t_at = (pc->t_row0 + i) * cols + pc->t_col0, .local = pc->local,
                     .l_at = (pc->l_row0 + i) * pc->l_cols + pc->l_col0, .n = pc->cols,
                     .piece = piece};
        rc = run_fn(ctx, &r);
    }
    return rc;
}
