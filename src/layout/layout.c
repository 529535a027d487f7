/*
 * The ws_layout object: storage for HF tensors, local tensors and pieces, the builder the
 * families use, lookups by name, and the family registry. Families live in layout_*.c.
 */
#include "layout_internal.h"

#include <limits.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Names live in a chain of blocks, so the pointers handed out never move. */
typedef struct name_block {
    struct name_block *next;
    size_t used, cap;
    char data[];
} name_block;

/* Open-addressing index: slot holds tensor index + 1, 0 when empty. */
typedef struct index_table {
    uint32_t *slot;
    size_t mask;
} index_table;

/* Another name under which an engine may present a local tensor (see wsl_add_alias). */
typedef struct alias {
    const char *name;
    int rank;
    uint32_t local;
} alias;

/* A block of memory a family asked for (wsl_alloc), freed with the layout. */
typedef struct owned_block {
    struct owned_block *next;
    max_align_t data[];
} owned_block;

/* A global rank's coordinates. */
typedef struct rank_coord {
    int tp, ep, pp, moe_tp, attn_dp;
} rank_coord;

#define WSL_MAX_RANKS 65536

struct ws_layout {
    const char *family;
    int tp;
    long par[WS_PAR__COUNT];
    int n_ranks;
    rank_coord *coord;
    owned_block *owned;
    ws_hf_desc *hf;
    size_t n_hf, cap_hf;
    ws_local_desc *loc;
    size_t n_loc, cap_loc;
    ws_piece *pc;
    size_t n_pc, cap_pc;
    alias *al;
    size_t n_al, cap_al;
    ws_buffer_desc *buf; /* engine buffers of known values (vLLM's _expert_map) */
    size_t n_buf, cap_buf;
    const int32_t *emap; /* the expert map used (owned block), or NULL */
    size_t emap_rows, emap_physical;
    name_block *names;
    index_table hf_index, loc_index, al_index;
    ws_error *err; /* while building */
};

typedef struct family_entry {
    const char *name;
    wsl_build_fn build;
    bool zero_padding; /* the engine zeroes its padding rows (Megatron trains them) */
} family_entry;

static const family_entry families[] = {
    {"hf", wsl_build_hf, true},
    {"sglang", wsl_build_sglang, true},
    {"vllm", wsl_build_vllm, true},
    {"megatron", wsl_build_megatron, false},
    {"transformers", wsl_build_transformers, true},
};
#define N_FAMILIES (sizeof families / sizeof families[0])

static const char *const family_names[N_FAMILIES + 1] = {"hf", "sglang", "vllm", "megatron",
                                                         "transformers", NULL};

const char *const *ws_layout_families(void) { return family_names; }

/* ---- storage ---------------------------------------------------------------------------- */

static ws_err nomem(ws_layout *l) {
    return wsi_fail(l->err, WS_ERR_NOMEM, NULL, NULL, -1, "layout '%s': out of memory", l->family);
}

static const char *name_store(ws_layout *l, const char *s, size_t n) {
    name_block *b = l->names;
    if (!b || b->cap - b->used < n + 1) {
        size_t cap = n + 1 > 65536 ? n + 1 : 65536;
        name_block *nb = malloc(sizeof *nb + cap);
        if (!nb) return NULL;
        nb->next = b;
        nb->used = 0;
        nb->cap = cap;
        l->names = nb;
        b = nb;
    }
    char *d = b->data + b->used;
    memcpy(d, s, n);
    d[n] = '\0';
    b->used += n + 1;
    return d;
}

/* Grow *arr (of elem-sized items, *cap of them) to hold one more. */
static bool grow(void **arr, size_t *cap, size_t n, size_t elem) {
    if (n < *cap) return true;
    size_t nc = *cap ? *cap * 2 : 64;
    void *p = realloc(*arr, nc * elem);
    if (!p) return false;
    *arr = p;
    *cap = nc;
    return true;
}

uint64_t wsl_view_rows(int ndim, const uint64_t *shape) {
    if (ndim <= 0) return 1;
    if (ndim <= 2) return shape[0];
    uint64_t r = 1;
    for (int i = 0; i < ndim - 1; i++)
        r *= shape[i];
    return r;
}

uint64_t wsl_view_cols(int ndim, const uint64_t *shape) {
    if (ndim >= 3) return shape[ndim - 1];
    uint64_t c = 1;
    for (int i = 1; i < ndim; i++)
        c *= shape[i];
    return c;
}

void *wsl_alloc(ws_layout *l, size_t bytes) {
    if (bytes > SIZE_MAX - sizeof(owned_block)) {
        nomem(l);
        return NULL;
    }
    owned_block *b = calloc(1, sizeof *b + bytes);
    if (!b) {
        nomem(l);
        return NULL;
    }
    b->next = l->owned;
    l->owned = b;
    return b->data;
}

ws_err wsl_set_ranks(ws_layout *l, uint64_t n) {
    if (n < 1 || n > WSL_MAX_RANKS)
        return wsi_fail(l->err, WS_ERR_LIMIT, NULL, NULL, -1,
                        "layout '%s': %llu ranks, more than the limit of %d", l->family,
                        (unsigned long long)n, WSL_MAX_RANKS);
    if (l->n_loc)
        return wsi_fail(l->err, WS_ERR_LAYOUT, NULL, NULL, -1,
                        "layout '%s': internal error: ranks set after tensors", l->family);
    rank_coord *c = wsl_alloc(l, (size_t)n * sizeof *c);
    if (!c) return WS_ERR_NOMEM;
    for (int r = 0; r < (int)n; r++)
        c[r] = (rank_coord){.tp = r, .moe_tp = r};
    l->coord = c;
    l->n_ranks = (int)n;
    return WS_OK;
}

void wsl_set_coord(ws_layout *l, int rank, int tp_rank, int ep_rank, int pp_rank,
                   int moe_tp_rank) {
    if (rank >= 0 && rank < l->n_ranks)
        l->coord[rank] = (rank_coord){.tp = tp_rank, .ep = ep_rank, .pp = pp_rank,
                                      .moe_tp = moe_tp_rank};
}

void wsl_set_moe_tp(ws_layout *l, int moe_tp) { l->par[WS_PAR_MOE_TP] = moe_tp; }

void wsl_set_attn_dp_coord(ws_layout *l, int rank, int attn_dp_rank) {
    if (rank >= 0 && rank < l->n_ranks) l->coord[rank].attn_dp = attn_dp_rank;
}

void wsl_pp_layers(uint64_t L, int pp, int s, uint64_t *first, uint64_t *end) {
    uint64_t P = (uint64_t)pp, S = (uint64_t)s, base = L / P, rem = L % P;
    if (S >= P - rem) { /* the last rem stages hold one layer more */
        *first = S * (base + 1) - (P - rem);
        *end = *first + base + 1;
    } else {
        *first = S * base;
        *end = *first + base;
    }
}

/* Format a name into buf; false if it does not fit. */
static bool format_name(char *buf, const char *fmt, va_list ap) {
    int n = vsnprintf(buf, WSL_MAX_NAME, fmt, ap);
    return n > 0 && n < WSL_MAX_NAME;
}

static ws_err check_dims(ws_layout *l, const char *name, int ndim, uint64_t d0, uint64_t d1,
                         uint64_t d2) {
    uint64_t numel;
    if ((ndim < 1 || ndim > 3) || d0 == 0 || (ndim >= 2 && d1 == 0) || (ndim == 3 && d2 == 0) ||
        !wsi_mul_u64(d0, ndim >= 2 ? d1 : 1, &numel) ||
        !wsi_mul_u64(numel, ndim == 3 ? d2 : 1, &numel))
        return wsi_fail(l->err, WS_ERR_LAYOUT, NULL, name, -1,
                        "layout '%s': invalid shape for this tensor", l->family);
    return WS_OK;
}

/* The prologue of every add: the printf name into buf, and the dims checked. */
static ws_err name_and_dims(ws_layout *l, char *buf, int ndim, uint64_t d0, uint64_t d1,
                            uint64_t d2, const char *fmt, va_list ap) {
    if (!format_name(buf, fmt, ap))
        return wsi_fail(l->err, WS_ERR_LIMIT, NULL, NULL, -1, "layout '%s': tensor name too long",
                        l->family);
    return check_dims(l, buf, ndim, d0, d1, d2);
}

ws_err wsl_add_hf(ws_layout *l, uint32_t *idx, long tied, int ndim, uint64_t d0, uint64_t d1,
                  const char *fmt, ...) {
    char buf[WSL_MAX_NAME];
    va_list ap;
    va_start(ap, fmt);
    ws_err e = (ndim == 1 || ndim == 2) ? name_and_dims(l, buf, ndim, d0, d1, 1, fmt, ap)
                                        : name_and_dims(l, buf, 0, 0, 0, 0, fmt, ap);
    va_end(ap);
    if (e) return e;
    if (l->n_hf >= WSL_MAX_TENSORS)
        return wsi_fail(l->err, WS_ERR_LIMIT, NULL, NULL, -1,
                        "layout '%s': more than %u HF tensors", l->family, WSL_MAX_TENSORS);
    if (tied >= 0 && (size_t)tied >= l->n_hf)
        return wsi_fail(l->err, WS_ERR_LAYOUT, NULL, buf, -1,
                        "layout '%s': tied to an unknown tensor", l->family);
    if (!grow((void **)&l->hf, &l->cap_hf, l->n_hf, sizeof *l->hf)) return nomem(l);
    const char *name = name_store(l, buf, strlen(buf));
    if (!name) return nomem(l);
    ws_hf_desc *d = &l->hf[l->n_hf];
    memset(d, 0, sizeof *d);
    d->name = name;
    d->ndim = ndim;
    d->shape[0] = d0;
    if (ndim == 2) d->shape[1] = d1;
    d->tied_to = tied >= 0 ? l->hf[tied].name : NULL;
    *idx = (uint32_t)l->n_hf++;
    return WS_OK;
}

static ws_err add_local(ws_layout *l, uint32_t *idx, int rank, int ndim, uint64_t d0,
                        uint64_t d1, uint64_t d2, const char *fmt, va_list ap) {
    char buf[WSL_MAX_NAME];
    ws_err e = name_and_dims(l, buf, ndim, d0, d1, d2, fmt, ap);
    if (e) return e;
    if (rank < 0 || rank >= l->n_ranks)
        return wsi_fail(l->err, WS_ERR_LAYOUT, NULL, buf, -1, "layout '%s': rank %d out of range",
                        l->family, rank);
    if (l->n_loc >= WSL_MAX_TENSORS)
        return wsi_fail(l->err, WS_ERR_LIMIT, NULL, NULL, -1,
                        "layout '%s': more than %u local tensors", l->family, WSL_MAX_TENSORS);
    if (!grow((void **)&l->loc, &l->cap_loc, l->n_loc, sizeof *l->loc)) return nomem(l);
    const char *name = name_store(l, buf, strlen(buf));
    if (!name) return nomem(l);
    ws_local_desc *d = &l->loc[l->n_loc];
    memset(d, 0, sizeof *d);
    d->name = name;
    d->rank = rank;
    d->ndim = ndim;
    d->shape[0] = d0;
    if (ndim >= 2) d->shape[1] = d1;
    if (ndim == 3) d->shape[2] = d2;
    *idx = (uint32_t)l->n_loc++;
    return WS_OK;
}

ws_err wsl_add_local(ws_layout *l, uint32_t *idx, int rank, int ndim, uint64_t d0, uint64_t d1,
                     const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    ws_err e = (ndim == 1 || ndim == 2) ? add_local(l, idx, rank, ndim, d0, d1, 1, fmt, ap)
                                        : add_local(l, idx, rank, 0, 0, 0, 0, fmt, ap);
    va_end(ap);
    return e;
}

ws_err wsl_add_local3(ws_layout *l, uint32_t *idx, int rank, uint64_t d0, uint64_t d1,
                      uint64_t d2, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    ws_err e = add_local(l, idx, rank, 3, d0, d1, d2, fmt, ap);
    va_end(ap);
    return e;
}

ws_err wsl_add_alias(ws_layout *l, uint32_t local, const char *fmt, ...) {
    char buf[WSL_MAX_NAME];
    va_list ap;
    va_start(ap, fmt);
    bool ok = format_name(buf, fmt, ap);
    va_end(ap);
    if (!ok || local >= l->n_loc)
        return wsi_fail(l->err, WS_ERR_LAYOUT, NULL, NULL, -1, "layout '%s': bad alias", l->family);
    if (!grow((void **)&l->al, &l->cap_al, l->n_al, sizeof *l->al)) return nomem(l);
    const char *name = name_store(l, buf, strlen(buf));
    if (!name) return nomem(l);
    l->al[l->n_al++] = (alias){.name = name, .rank = l->loc[local].rank, .local = local};
    return WS_OK;
}

/* a + b <= limit, without overflow. */
static bool fits(uint64_t a, uint64_t b, uint64_t limit) { return b <= limit && a <= limit - b; }

ws_err wsl_add_piece(ws_layout *l, uint32_t hf, uint32_t local, uint32_t replica, uint64_t rows,
                     uint64_t cols, uint64_t t_row0, uint64_t t_col0, uint64_t l_row0,
                     uint64_t l_col0) {
    if (hf >= l->n_hf || local >= l->n_loc)
        return wsi_fail(l->err, WS_ERR_LAYOUT, NULL, NULL, -1,
                        "layout '%s': piece names an unknown tensor", l->family);
    const ws_hf_desc *t = &l->hf[hf];
    const ws_local_desc *d = &l->loc[local];
    uint64_t tr = wsl_view_rows(t->ndim, t->shape), tc = wsl_view_cols(t->ndim, t->shape);
    uint64_t lr = wsl_view_rows(d->ndim, d->shape), lc = wsl_view_cols(d->ndim, d->shape);
    if (rows == 0 || cols == 0 || t->tied_to || !fits(t_row0, rows, tr) ||
        !fits(t_col0, cols, tc) || !fits(l_row0, rows, lr) || !fits(l_col0, cols, lc))
        return wsi_fail(l->err, WS_ERR_LAYOUT, NULL, d->name, -1,
                        "layout '%s': piece %llux%llu at (%llu,%llu) of '%s' does not fit",
                        l->family, (unsigned long long)rows, (unsigned long long)cols,
                        (unsigned long long)t_row0, (unsigned long long)t_col0, t->name);
    if (l->n_pc >= WSL_MAX_PIECES)
        return wsi_fail(l->err, WS_ERR_LIMIT, NULL, NULL, -1,
                        "layout '%s': more than %u pieces (too many layers x ranks)", l->family,
                        WSL_MAX_PIECES);
    if (!grow((void **)&l->pc, &l->cap_pc, l->n_pc, sizeof *l->pc)) return nomem(l);
    l->pc[l->n_pc++] = (ws_piece){.hf = hf,
                                  .local = local,
                                  .replica = replica,
                                  .rows = rows,
                                  .cols = cols,
                                  .t_row0 = t_row0,
                                  .t_col0 = t_col0,
                                  .t_cols = tc,
                                  .l_row0 = l_row0,
                                  .l_col0 = l_col0,
                                  .l_cols = lc};
    return WS_OK;
}

ws_err wsl_set_expert_map(ws_layout *l, const int32_t *map, size_t rows, size_t physical) {
    int32_t *m = wsl_alloc(l, rows * physical * sizeof *m + 1);
    if (!m) return WS_ERR_NOMEM;
    memcpy(m, map, rows * physical * sizeof *m);
    l->emap = m;
    l->emap_rows = rows;
    l->emap_physical = physical;
    return WS_OK;
}

ws_err wsl_add_buffer_i32(ws_layout *l, int rank, uint64_t n, const int32_t *values,
                          const char *fmt, ...) {
    char name[WSL_MAX_NAME];
    va_list ap;
    va_start(ap, fmt);
    bool ok = format_name(name, fmt, ap);
    va_end(ap);
    if (!ok)
        return wsi_fail(l->err, WS_ERR_LIMIT, NULL, NULL, -1, "layout '%s': name too long",
                        l->family);
    int32_t *v = wsl_alloc(l, (size_t)n * sizeof *v + 1);
    const char *nm = v ? name_store(l, name, strlen(name)) : NULL;
    if (!v || !nm || !grow((void **)&l->buf, &l->cap_buf, l->n_buf, sizeof *l->buf))
        return nomem(l);
    memcpy(v, values, (size_t)n * sizeof *v);
    l->buf[l->n_buf++] = (ws_buffer_desc){
        .name = nm, .rank = rank, .dtype = WS_I32, .ndim = 1, .shape = {n}, .values = v};
    return WS_OK;
}

ws_status wsl_buffer_judge(const ws_buffer_desc *b, ws_dtype dtype, int ndim,
                           const uint64_t *shape, const void *data, char *detail, size_t cap) {
    uint64_t n = b->shape[0];
    if (dtype != b->dtype || ndim != b->ndim || shape[0] != n) {
        char se[160], sa[160];
        wsi_shape_str(b->ndim, b->shape, se, sizeof se);
        wsi_shape_str(ndim, shape, sa, sizeof sa);
        snprintf(detail, cap, "engine buffer %s %s expected, %s %s found",
                 ws_dtype_name(b->dtype), se, ws_dtype_name(dtype), sa);
        return WS_SHAPE_DIFFERS;
    }
    uint64_t bad = 0, first = 0;
    int32_t want = 0, got = 0;
    for (uint64_t k = 0; k < n; k++) {
        int32_t x;
        memcpy(&x, (const uint8_t *)data + k * sizeof x, sizeof x);
        if (x != b->values[k] && bad++ == 0) first = k, want = b->values[k], got = x;
    }
    if (!bad) return WS_MATCH;
    /* a wrong entry of vLLM's _expert_map routes that physical expert's tokens to another
     * local slot (or drops them) */
    snprintf(detail, cap,
             "%llu of %llu entries differ from the layout's expert placement; the first, "
             "physical expert %llu, should be %s%d, the dump says %d",
             (unsigned long long)bad, (unsigned long long)n, (unsigned long long)first,
             want < 0 ? "-1 (not on this rank), not " : "local slot ", (int)want, (int)got);
    return WS_MISMATCH;
}

ws_err wsl_expect(ws_layout *l, uint64_t pieces) {
    if (pieces > WSL_MAX_PIECES)
        return wsi_fail(l->err, WS_ERR_LIMIT, NULL, NULL, -1,
                        "layout '%s', tp %d: %llu pieces, more than the limit of %u", l->family,
                        l->tp, (unsigned long long)pieces, WSL_MAX_PIECES);
    if (pieces > l->cap_pc) {
        ws_piece *p = realloc(l->pc, pieces * sizeof *p);
        if (!p) return nomem(l);
        l->pc = p;
        l->cap_pc = pieces;
    }
    return WS_OK;
}

ws_err wsl_piece_full(ws_layout *l, uint32_t hf, uint32_t local, uint32_t replica) {
    const ws_hf_desc *t = &l->hf[hf];
    return wsl_add_piece(l, hf, local, replica, wsl_view_rows(t->ndim, t->shape),
                         wsl_view_cols(t->ndim, t->shape), 0, 0, 0, 0);
}

ws_err wsl_piece_rows(ws_layout *l, uint32_t hf, uint32_t local, uint32_t replica, uint64_t t_row0,
                      uint64_t l_row0, uint64_t rows) {
    const ws_hf_desc *t = &l->hf[hf];
    return wsl_add_piece(l, hf, local, replica, rows, wsl_view_cols(t->ndim, t->shape), t_row0, 0,
                         l_row0, 0);
}

ws_err wsl_piece_cols(ws_layout *l, uint32_t hf, uint32_t local, uint32_t replica, uint64_t t_col0,
                      uint64_t l_col0, uint64_t cols) {
    const ws_hf_desc *t = &l->hf[hf];
    return wsl_add_piece(l, hf, local, replica, wsl_view_rows(t->ndim, t->shape), cols, 0, t_col0,
                         0, l_col0);
}

static ws_err add_replica(ws_layout *l, int rank, uint32_t replica, uint32_t hf,
                          const char *fmt, va_list ap) {
    char buf[WSL_MAX_NAME];
    bool ok = format_name(buf, fmt, ap);
    if (!ok || hf >= l->n_hf)
        return wsi_fail(l->err, WS_ERR_LAYOUT, NULL, NULL, -1, "layout '%s': bad replica",
                        l->family);
    const ws_hf_desc *t = &l->hf[hf];
    uint32_t loc;
    ws_err e = wsl_add_local(l, &loc, rank, t->ndim, t->shape[0], t->ndim == 2 ? t->shape[1] : 0,
                             "%s", buf);
    return e ? e : wsl_piece_full(l, hf, loc, replica);
}

ws_err wsl_add_replicated(ws_layout *l, int rank, uint32_t hf, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    ws_err e = add_replica(l, rank, (uint32_t)rank, hf, fmt, ap);
    va_end(ap);
    return e;
}

ws_err wsl_add_replica(ws_layout *l, int rank, uint32_t replica, uint32_t hf, const char *fmt,
                       ...) {
    va_list ap;
    va_start(ap, fmt);
    ws_err e = add_replica(l, rank, replica, hf, fmt, ap);
    va_end(ap);
    return e;
}

/* One dimension of a scale piece: a weight piece's [t0, +n) of N HF rows (or columns) at local
 * l0 in blocks of b. A piece over the whole extent maps to all ceil(N/b) scale rows (and stacked
 * experts' local starts l0 = k*N to k*ceil(N/b)); any other must be whole blocks. */
static bool scale_dim(uint64_t t0, uint64_t n, uint64_t N, uint64_t l0, uint64_t b, uint64_t *st0,
                      uint64_t *sn, uint64_t *sl0) {
    if (t0 == 0 && n == N && (l0 % b == 0 || l0 % N == 0)) {
        /* a whole tensor at a block boundary (MLA's [q_a ; kv_a], whose scales are concatenated
         * as the weights are) or as the k-th of stacked ones */
        *st0 = 0;
        *sn = (N + b - 1) / b;
        *sl0 = l0 % b == 0 ? l0 / b : l0 / N * *sn;
        return true;
    }
    if (t0 % b || n % b || l0 % b) return false;
    *st0 = t0 / b, *sn = n / b, *sl0 = l0 / b;
    return true;
}

ws_err wsl_add_scale(ws_layout *l, const wsl_dense *m, uint32_t w) {
    if (!m->fp8) return WS_OK;
    /* a copy: adding the scale tensor may move l->loc (ASan caught the stale pointer) */
    const ws_local_desc dw = l->loc[w], *d = &dw;
    uint64_t bn = m->bn, bk = m->bk;
    uint32_t s;
    if (d->ndim == 3)
        WSL_TRY(wsl_add_local3(l, &s, d->rank, d->shape[0], (d->shape[1] + bn - 1) / bn,
                               (d->shape[2] + bk - 1) / bk, "%s_scale_inv", d->name));
    else
        WSL_TRY(wsl_add_local(l, &s, d->rank, 2, (d->shape[0] + bn - 1) / bn,
                              (d->shape[1] + bk - 1) / bk, "%s_scale_inv", d->name));
    size_t first = l->n_pc;
    while (first > 0 && l->pc[first - 1].local == w)
        first--;
    size_t last = l->n_pc;
    for (size_t i = first; i < last; i++) {
        ws_piece p = l->pc[i]; /* a copy: adding pieces may move the array */
        const ws_hf_desc *t = &l->hf[p.hf];
        uint32_t hs = p.hf + 1;
        if (hs >= l->n_hf || strncmp(l->hf[hs].name, t->name, strlen(t->name)) != 0 ||
            strcmp(l->hf[hs].name + strlen(t->name), "_scale_inv") != 0)
            return wsi_fail(l->err, WS_ERR_LAYOUT, NULL, t->name, -1,
                            "layout '%s': internal error: no weight_scale_inv after this weight",
                            l->family);
        uint64_t N = t->shape[0], K = t->ndim == 2 ? t->shape[1] : 1;
        uint64_t tr, nr, lr, tc, nc, lc;
        /* the local view's rows: for a stacked [E, R, C] tensor l_row0 = e*R + r */
        uint64_t lrow = p.l_row0, lrows_per = d->ndim == 3 ? d->shape[1] : 0;
        bool ok;
        if (lrows_per) {
            uint64_t e = lrow / lrows_per, r = lrow % lrows_per, sper = (lrows_per + bn - 1) / bn;
            uint64_t x;
            ok = scale_dim(p.t_row0, p.rows, N, r, bn, &tr, &nr, &x);
            lr = e * sper + x;
        } else {
            ok = scale_dim(p.t_row0, p.rows, N, lrow, bn, &tr, &nr, &lr);
        }
        ok = ok && scale_dim(p.t_col0, p.cols, K, p.l_col0, bk, &tc, &nc, &lc);
        if (!ok)
            return wsl_reject(l,
                              "block FP8: %s rows [%llu, +%llu) columns [%llu, +%llu) are not "
                              "whole %ux%u blocks (the engines refuse a partition that is not "
                              "divisible by weight_block_size)",
                              t->name, (unsigned long long)p.t_row0, (unsigned long long)p.rows,
                              (unsigned long long)p.t_col0, (unsigned long long)p.cols, m->bn,
                              m->bk);
        WSL_TRY(wsl_add_piece(l, hs, s, p.replica, nr, nc, tr, tc, lr, lc));
    }
    return WS_OK;
}

ws_err wsl_piece_vocab(ws_layout *l, uint32_t hf, uint32_t local, int r, uint64_t per_rank,
                       uint64_t V) {
    uint64_t first = (uint64_t)r * per_rank;
    if (first >= V) return WS_OK; /* all padding */
    uint64_t n = V - first < per_rank ? V - first : per_rank;
    return wsl_piece_rows(l, hf, local, 0, first, 0, n);
}

ws_err wsl_reject(ws_layout *l, const char *fmt, ...) {
    char what[448];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    if (l->par[WS_PAR_ATTN_DP] > 1)
        return wsi_fail(l->err, WS_ERR_LAYOUT, NULL, NULL, -1,
                        "layout '%s', tp %d, attn-dp %ld, ep %ld, pp %ld: %s", l->family, l->tp,
                        l->par[WS_PAR_ATTN_DP], l->par[WS_PAR_EP], l->par[WS_PAR_PP], what);
    if (l->par[WS_PAR_EP] > 1 || l->par[WS_PAR_PP] > 1)
        return wsi_fail(l->err, WS_ERR_LAYOUT, NULL, NULL, -1, "layout '%s', tp %d, ep %ld, pp %ld: %s",
                        l->family, l->tp, l->par[WS_PAR_EP], l->par[WS_PAR_PP], what);
    return wsi_fail(l->err, WS_ERR_LAYOUT, NULL, NULL, -1, "layout '%s', tp %d: %s", l->family,
                    l->tp, what);
}

/* ---- lookup ------------------------------------------------------------------------------ */

static uint64_t hash_name(const char *s, int rank) {
    uint64_t h = 1469598103934665603ull ^ (uint64_t)(uint32_t)rank * 0x9E3779B97F4A7C15ull;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return h ^ (h >> 29);
}

/* Build an index over n names (rank_of may be NULL); WS_ERR_LAYOUT on a duplicate. */
static ws_err index_build(ws_layout *l, index_table *t, size_t n,
                          const char *(*name_of)(const ws_layout *, size_t),
                          int (*rank_of)(const ws_layout *, size_t)) {
    size_t cap = 16;
    while (cap < 2 * n)
        cap *= 2;
    t->slot = calloc(cap, sizeof *t->slot);
    if (!t->slot) return nomem(l);
    t->mask = cap - 1;
    for (size_t i = 0; i < n; i++) {
        const char *name = name_of(l, i);
        int rank = rank_of ? rank_of(l, i) : 0;
        size_t s = (size_t)hash_name(name, rank) & t->mask;
        while (t->slot[s]) {
            size_t j = t->slot[s] - 1;
            if (strcmp(name_of(l, j), name) == 0 && (!rank_of || rank_of(l, j) == rank))
                return wsi_fail(l->err, WS_ERR_LAYOUT, NULL, name, -1,
                                "layout '%s': tensor listed twice (rank %d)", l->family, rank);
            s = (s + 1) & t->mask;
        }
        t->slot[s] = (uint32_t)(i + 1);
    }
    return WS_OK;
}

static const char *hf_name_of(const ws_layout *l, size_t i) { return l->hf[i].name; }
static const char *loc_name_of(const ws_layout *l, size_t i) { return l->loc[i].name; }
static int loc_rank_of(const ws_layout *l, size_t i) { return l->loc[i].rank; }
static const char *al_name_of(const ws_layout *l, size_t i) { return l->al[i].name; }
static int al_rank_of(const ws_layout *l, size_t i) { return l->al[i].rank; }

/* Index of name (and rank, when rank_of is given) in t, or -1. */
static long index_find(const ws_layout *l, const index_table *t, const char *name, int rank,
                       const char *(*name_of)(const ws_layout *, size_t),
                       int (*rank_of)(const ws_layout *, size_t)) {
    if (!t->slot || !name) return -1;
    size_t s = (size_t)hash_name(name, rank_of ? rank : 0) & t->mask;
    while (t->slot[s]) {
        size_t j = t->slot[s] - 1;
        if ((!rank_of || rank_of(l, j) == rank) && strcmp(name_of(l, j), name) == 0) return (long)j;
        s = (s + 1) & t->mask;
    }
    return -1;
}

long ws_layout_find_hf(const ws_layout *l, const char *name) {
    return l ? index_find(l, &l->hf_index, name, 0, hf_name_of, NULL) : -1;
}

/* A local tensor by its name, or by an alias an engine gives it (a tied lm_head.weight). */
long ws_layout_find_local(const ws_layout *l, int rank, const char *name) {
    if (!l) return -1;
    long j = index_find(l, &l->loc_index, name, rank, loc_name_of, loc_rank_of);
    if (j < 0 && l->n_al) {
        long a = index_find(l, &l->al_index, name, rank, al_name_of, al_rank_of);
        if (a >= 0) j = (long)l->al[a].local;
    }
    return j;
}

/* ---- create / free / accessors ----------------------------------------------------------- */

void ws_layout_free(ws_layout *l) {
    if (!l) return;
    free(l->hf);
    free(l->loc);
    free(l->pc);
    free(l->al);
    free(l->buf);
    free(l->hf_index.slot);
    free(l->loc_index.slot);
    free(l->al_index.slot);
    for (owned_block *b = l->owned; b;) {
        owned_block *n = b->next;
        free(b);
        b = n;
    }
    for (name_block *b = l->names; b;) {
        name_block *n = b->next;
        free(b);
        b = n;
    }
    free(l);
}

/* Checks every layout must pass, whatever its family did: tied tensors match their target. */
static ws_err finish(ws_layout *l) {
    ws_err e = index_build(l, &l->hf_index, l->n_hf, hf_name_of, NULL);
    if (!e) e = index_build(l, &l->loc_index, l->n_loc, loc_name_of, loc_rank_of);
    if (!e) e = index_build(l, &l->al_index, l->n_al, al_name_of, al_rank_of);
    if (e) return e;
    for (size_t i = 0; i < l->n_al; i++)
        if (index_find(l, &l->loc_index, l->al[i].name, l->al[i].rank, loc_name_of, loc_rank_of) >=
            0)
            return wsi_fail(l->err, WS_ERR_LAYOUT, NULL, l->al[i].name, -1,
                            "layout '%s': alias shadows a tensor of rank %d", l->family,
                            l->al[i].rank);
    for (size_t i = 0; i < l->n_hf; i++) {
        const ws_hf_desc *d = &l->hf[i];
        if (!d->tied_to) continue;
        long j = ws_layout_find_hf(l, d->tied_to);
        if (j < 0 || l->hf[j].ndim != d->ndim ||
            memcmp(l->hf[j].shape, d->shape, sizeof d->shape) != 0)
            return wsi_fail(l->err, WS_ERR_LAYOUT, NULL, d->name, -1,
                            "layout '%s': tied to '%s' of another shape", l->family, d->tied_to);
    }
    return WS_OK;
}

ws_err ws_layout_create_parallel(const char *family, const ws_model_config *cfg,
                                 const ws_parallel *par, ws_layout **out, ws_error *err) {
    if (out) *out = NULL;
    if (!family || !cfg || !out)
        return wsi_fail(err, WS_ERR_ARG, NULL, NULL, -1,
                        "ws_layout_create: family, cfg and out must not be NULL");
    const family_entry *f = NULL;
    for (size_t i = 0; i < N_FAMILIES; i++)
        if (strcmp(families[i].name, family) == 0) f = &families[i];
    if (!f) {
        char known[256] = "";
        for (size_t i = 0; i < N_FAMILIES; i++)
            snprintf(known + strlen(known), sizeof known - strlen(known), "%s%s", i ? ", " : "",
                     families[i].name);
        return wsi_fail(err, WS_ERR_ARG, NULL, NULL, -1,
                        "unknown layout family '%.64s' (known: %s)", family, known);
    }
    long v[WS_PAR__COUNT];
    wsl_parallel_defaults(v);
    if (par) memcpy(v, wsl_parallel_values(par), sizeof v);
    v[WS_PAR_MOE_TP] = v[WS_PAR_TP]; /* experts sharded like the dense MLP until a family says */
    if (v[WS_PAR_TP] < 1 || v[WS_PAR_TP] > INT_MAX)
        return wsi_fail(err, WS_ERR_ARG, NULL, NULL, -1,
                        "layout '%s': tensor-parallel size %ld, must be >= 1", f->name,
                        v[WS_PAR_TP]);
    ws_err e = wsl_config_check(cfg, WS_ERR_ARG, NULL, err);
    if (e) return e;

    ws_layout *l = calloc(1, sizeof *l);
    if (!l) return wsi_fail(err, WS_ERR_NOMEM, NULL, NULL, -1, "layout: out of memory");
    l->family = f->name;
    l->tp = (int)v[WS_PAR_TP];
    memcpy(l->par, v, sizeof v);
    l->err = err;
    wsl_par p = {.tp = (int)v[WS_PAR_TP],
                 .ep = (int)v[WS_PAR_EP],
                 .pp = (int)v[WS_PAR_PP],
                 .placement = (int)v[WS_PAR_EXPERT_PLACEMENT],
                 .up_first = (int)v[WS_PAR_W13_UP_FIRST],
                 .fused_shared = (int)v[WS_PAR_FUSED_SHARED],
                 .sequential = (int)v[WS_PAR_MEGATRON_SEQUENTIAL],
                 .redundant = v[WS_PAR_REDUNDANT_EXPERTS],
                 .attn_dp = (int)v[WS_PAR_ATTN_DP],
                 .dp_lm_head = (int)v[WS_PAR_DP_LM_HEAD],
                 .moe_dense_tp = v[WS_PAR_MOE_DENSE_TP]};
    p.emap = ws_parallel_expert_map(par, &p.emap_rows, &p.emap_physical);
    if ((p.emap || p.redundant) && strcmp(f->name, "sglang") != 0 && strcmp(f->name, "vllm") != 0) {
        ws_layout_free(l);
        return wsi_fail(err, WS_ERR_LAYOUT, NULL, NULL, -1,
                        "layout '%s': expert maps and redundant experts (EPLB) are SGLang and "
                        "vLLM options",
                        f->name);
    }
    if ((p.attn_dp > 1 || p.dp_lm_head || p.moe_dense_tp) && strcmp(f->name, "sglang") != 0) {
        ws_layout_free(l);
        return wsi_fail(err, WS_ERR_LAYOUT, NULL, NULL, -1,
                        "layout '%s': DP attention, the DP lm_head and moe_dense_tp_size are "
                        "SGLang options",
                        f->name);
    }
    /* tp ranks unless the family says otherwise (after its own checks of the sizes) */
    if (l->tp <= WSL_MAX_RANKS) e = wsl_set_ranks(l, (uint64_t)l->tp);
    if (!e) e = f->build(l, cfg, &p);
    if (!e) e = finish(l);
    l->err = NULL;
    if (e) {
        ws_layout_free(l);
        return e;
    }
    *out = l;
    return WS_OK;
}

ws_err ws_layout_create(const char *family, const ws_model_config *cfg, int tp, ws_layout **out,
                        ws_error *err) {
    if (out) *out = NULL;
    if (!family || !cfg || !out)
        return wsi_fail(err, WS_ERR_ARG, NULL, NULL, -1,
                        "ws_layout_create: family, cfg and out must not be NULL");
    if (tp < 1) {
        bool known = false;
        for (size_t i = 0; i < N_FAMILIES; i++)
            known |= strcmp(families[i].name, family) == 0;
        if (known)
            return wsi_fail(err, WS_ERR_ARG, NULL, NULL, -1,
                            "layout '%s': tensor-parallel size %d, must be >= 1", family, tp);
    }
    struct ws_parallel *p = NULL;
    ws_err e = ws_parallel_create(&p, err);
    if (!e && tp >= 1) e = ws_parallel_set(p, WS_PAR_TP, tp, err);
    if (!e) e = ws_layout_create_parallel(family, cfg, p, out, err);
    ws_parallel_free(p);
    return e;
}

const char *ws_layout_family(const ws_layout *l) { return l ? l->family : NULL; }

int ws_layout_zero_padding(const ws_layout *l) {
    for (size_t i = 0; l && i < N_FAMILIES; i++)
        if (strcmp(families[i].name, l->family) == 0) return families[i].zero_padding;
    return 1;
}
int ws_layout_tp(const ws_layout *l) { return l ? l->tp : 0; }
long ws_layout_parallel(const ws_layout *l, ws_par_key key) {
    if (!l || (int)key < 0 || key >= WS_PAR__COUNT) return -1;
    return l->par[key];
}
const char *wsi_layout_sizes(const ws_layout *l, char *buf, size_t n) {
    int k = snprintf(buf, n, "%s tp=%d", l->family, l->tp);
    if (k > 0 && (size_t)k < n && l->par[WS_PAR_ATTN_DP] > 1) /* SGLang DP attention */
        k += snprintf(buf + k, n - (size_t)k, " attn-dp=%ld", l->par[WS_PAR_ATTN_DP]);
    if (k > 0 && (size_t)k < n && l->par[WS_PAR_EP] > 1)
        k += snprintf(buf + k, n - (size_t)k, " ep=%ld", l->par[WS_PAR_EP]);
    if (k > 0 && (size_t)k < n && l->par[WS_PAR_PP] > 1)
        snprintf(buf + k, n - (size_t)k, " pp=%ld", l->par[WS_PAR_PP]);
    return buf;
}
int ws_layout_rank_count(const ws_layout *l) { return l ? l->n_ranks : 0; }
int ws_layout_rank_coord(const ws_layout *l, int rank, ws_par_key key) {
    if (!l || rank < 0 || rank >= l->n_ranks) return -1;
    const rank_coord *c = &l->coord[rank];
    switch (key) {
    case WS_PAR_TP: return c->tp;
    case WS_PAR_EP: return c->ep;
    case WS_PAR_PP: return c->pp;
    case WS_PAR_MOE_TP: return c->moe_tp;
    case WS_PAR_ATTN_DP: return c->attn_dp;
    default: return -1;
    }
}
size_t ws_layout_hf_count(const ws_layout *l) { return l ? l->n_hf : 0; }
const int32_t *ws_layout_expert_map(const ws_layout *l, size_t *rows, size_t *physical) {
    if (rows) *rows = l ? l->emap_rows : 0;
    if (physical) *physical = l ? l->emap_physical : 0;
    return l ? l->emap : NULL;
}
size_t ws_layout_buffer_count(const ws_layout *l) { return l ? l->n_buf : 0; }
const ws_buffer_desc *ws_layout_buffer(const ws_layout *l, size_t i) {
    return l && i < l->n_buf ? &l->buf[i] : NULL;
}
long ws_layout_find_buffer(const ws_layout *l, int rank, const char *name) {
    for (size_t i = 0; l && name && i < l->n_buf; i++)
        if (l->buf[i].rank == rank && strcmp(l->buf[i].name, name) == 0) return (long)i;
    return -1;
}
size_t ws_layout_local_count(const ws_layout *l) { return l ? l->n_loc : 0; }
size_t ws_layout_piece_count(const ws_layout *l) { return l ? l->n_pc : 0; }

const ws_hf_desc *ws_layout_hf(const ws_layout *l, size_t i) {
    return l && i < l->n_hf ? &l->hf[i] : NULL;
}
const ws_local_desc *ws_layout_local(const ws_layout *l, size_t i) {
    return l && i < l->n_loc ? &l->loc[i] : NULL;
}
const ws_piece *ws_layout_piece(const ws_layout *l, size_t i) {
    return l && i < l->n_pc ? &l->pc[i] : NULL;
}
