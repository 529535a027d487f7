/*
 * The byte image of an engine's local tensor (fused, zero-padded; what vLLM's SHA-256 and
 * SGLang's CPU-path hash read) as rectangles of the HF tensors it is built from, so that the
 * device backend's SHA-256 pipeline can stream it from the HF tensors where they lie, never
 * building it (expect_views.c). The order is expect.c's hash_image order, byte for byte: rows
 * of the local [rows, cols] view, each row's columns from the last piece in layout order that
 * covers them (hash_image copies the pieces in that order), zero where none does.
 */
#include "device_views.h"
#include "expect.h"
#include "pieces.h"

#include <stdlib.h>
#include <string.h>

typedef struct rect_list {
    wsi_dev_rect *r;
    size_t n, cap;
} rect_list;

static ws_err push(rect_list *v, const wsi_dev_rect *r, const char *local, ws_error *err) {
    if (v->n == v->cap) {
        if (v->n >= WSI_VIEW_MAX_RECTS)
            return wsi_fail(err, WS_ERR_LIMIT, NULL, local, -1,
                            "its image needs more than %llu rectangles (pieces split its rows "
                            "into many column segments)",
                            (unsigned long long)WSI_VIEW_MAX_RECTS);
        size_t cap = v->cap ? v->cap * 2 : 16;
        wsi_dev_rect *g = realloc(v->r, cap * sizeof *g);
        if (!g) return wsi_fail(err, WS_ERR_NOMEM, NULL, local, -1, "out of memory");
        v->r = g;
        v->cap = cap;
    }
    v->r[v->n++] = *r;
    return WS_OK;
}

static int cmp_u64(const void *a, const void *b) {
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* Sort and drop repeats; returns the new count. */
static size_t unique(uint64_t *e, size_t n) {
    qsort(e, n, sizeof *e, cmp_u64);
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        if (k == 0 || e[i] != e[k - 1]) e[k++] = e[i];
    return k;
}

/* One column segment of a band: [c0, c1) from piece `owner` (index into the local's pieces),
 * or zero (owner SIZE_MAX). */
typedef struct seg {
    uint64_t c0, c1;
    size_t owner;
} seg;

/* Rows [r0, r0 + nrows) of segment s as a rectangle. */
static wsi_dev_rect seg_rect(const ws_layout *l, const size_t *pieces,
                             const ws_tensor *const *hf, ws_dtype dt, const seg *s,
                             uint64_t r0, uint64_t nrows) {
    wsi_dev_rect r = {.ptr = NULL, .dtype = dt, .rows = nrows, .cols = s->c1 - s->c0,
                      .row_stride = 0, .col_stride = 0};
    if (s->owner == SIZE_MAX) return r; /* zeros */
    const ws_piece *p = ws_layout_piece(l, pieces[s->owner]);
    size_t es = ws_dtype_size(dt);
    uint64_t tr = p->t_row0 + (r0 - p->l_row0), tc = p->t_col0 + (s->c0 - p->l_col0);
    r.ptr = (const uint8_t *)hf[p->hf]->data + (tr * p->t_cols + tc) * es;
    r.row_stride = (int64_t)p->t_cols;
    r.col_stride = 1;
    return r;
}

ws_err wsp_image_rects(const ws_layout *l, size_t local, const size_t *pieces, size_t np,
                       const ws_tensor *const *hf, wsi_dev_rect **out, size_t *n_out,
                       ws_error *err) {
    *out = NULL;
    *n_out = 0;
    const ws_local_desc *ld = ws_layout_local(l, local);
    uint64_t rows, cols;
    wsi_view(ld->ndim, ld->shape, &rows, &cols);
    if (!rows || !cols) return WS_OK;
    ws_dtype dt = np ? hf[ws_layout_piece(l, pieces[0])->hf]->dtype : WS_U8;
    uint64_t *re = malloc((2 * np + 2) * sizeof *re), *ce = malloc((2 * np + 2) * sizeof *ce);
    size_t *cover = malloc((np + 1) * sizeof *cover);
    seg *segs = malloc((2 * np + 2) * sizeof *segs);
    rect_list v = {0};
    ws_err rc = re && ce && cover && segs ? WS_OK
                                          : wsi_fail(err, WS_ERR_NOMEM, NULL, ld->name, -1,
                                                     "out of memory");
    size_t nre = 0;
    if (rc == WS_OK) {
        re[nre++] = 0;
        re[nre++] = rows;
        for (size_t k = 0; k < np; k++) {
            const ws_piece *p = ws_layout_piece(l, pieces[k]);
            if (!p->rows || !p->cols) continue;
            re[nre++] = p->l_row0;
            re[nre++] = p->l_row0 + p->rows;
        }
        nre = unique(re, nre);
    }
    /* bands of rows between consecutive piece edges: the same pieces cover every row of one */
    for (size_t b = 0; rc == WS_OK && b + 1 < nre; b++) {
        uint64_t a = re[b], z = re[b + 1];
        size_t nc = 0, nce = 0;
        ce[nce++] = 0;
        ce[nce++] = cols;
        for (size_t k = 0; k < np; k++) {
            const ws_piece *p = ws_layout_piece(l, pieces[k]);
            if (!p->rows || !p->cols || p->l_row0 > a || a >= p->l_row0 + p->rows) continue;
            cover[nc++] = k;
            ce[nce++] = p->l_col0;
            ce[nce++] = p->l_col0 + p->cols;
        }
        nce = unique(ce, nce);
        size_t ns = 0;
        for (size_t e = 0; e + 1 < nce; e++) {
            size_t owner = SIZE_MAX; /* the last piece covering [ce[e], ce[e + 1]) */
            for (size_t i = 0; i < nc; i++) {
                const ws_piece *p = ws_layout_piece(l, pieces[cover[i]]);
                if (p->l_col0 <= ce[e] && ce[e] < p->l_col0 + p->cols) owner = cover[i];
            }
            if (ns && segs[ns - 1].owner == owner) { /* the same piece (or zeros) goes on */
                segs[ns - 1].c1 = ce[e + 1];
                continue;
            }
            segs[ns++] = (seg){ce[e], ce[e + 1], owner};
        }
        if (ns == 1) { /* the band is one rectangle */
            wsi_dev_rect r = seg_rect(l, pieces, hf, dt, &segs[0], a, z - a);
            rc = push(&v, &r, ld->name, err);
            continue;
        }
        for (uint64_t row = a; rc == WS_OK && row < z; row++)
            for (size_t s = 0; rc == WS_OK && s < ns; s++) {
                wsi_dev_rect r = seg_rect(l, pieces, hf, dt, &segs[s], row, 1);
                rc = push(&v, &r, ld->name, err);
            }
    }
    free(re);
    free(ce);
    free(cover);
    free(segs);
    if (rc != WS_OK) {
        free(v.r);
        return rc;
    }
    *out = v.r;
    *n_out = v.n;
    return WS_OK;
}
