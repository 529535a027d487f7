/* Sources: creating them, finding their tensors, and the one read call (see source.h). */
#include "source.h"

#include <stddef.h>
#include <stdlib.h>
#include <string.h>

void wsi_readbuf_free(wsi_readbuf *b) {
    free(b->p);
    b->p = NULL;
    b->cap = 0;
}

ws_err wsi_readbuf_reserve(wsi_readbuf *b, size_t n, ws_error *err) {
    if (b->cap >= n) return WS_OK;
    uint8_t *p = realloc(b->p, n);
    if (!p) return wsi_fail(err, WS_ERR_NOMEM, NULL, NULL, -1, "out of memory");
    b->p = p;
    b->cap = n;
    return WS_OK;
}

static int cmp_name(const ws_source *s, size_t i, const char *name) {
    return strcmp(s->t[i].name, name);
}

/* Index of the first tensor whose name is >= name. */
static size_t lower_bound(const ws_source *s, const char *name) {
    size_t lo = 0, hi = s->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (cmp_name(s, mid, name) < 0) lo = mid + 1;
        else hi = mid;
    }
    return lo;
}

const wsi_src_tensor *wsi_source_find(const ws_source *s, const char *name) {
    if (!s || !name) return NULL;
    size_t i = lower_bound(s, name);
    return i < s->n && cmp_name(s, i, name) == 0 ? &s->t[i] : NULL;
}

ws_err wsi_source_insert(ws_source *s, const wsi_src_tensor *t, ws_error *err) {
    size_t i = lower_bound(s, t->name);
    if (i < s->n && cmp_name(s, i, t->name) == 0)
        return wsi_fail(err, WS_ERR_ARG, NULL, t->name, -1, "tensor added twice to one source");
    if (s->n == s->cap) {
        size_t cap = s->cap ? 2 * s->cap : 16;
        wsi_src_tensor *g = realloc(s->t, cap * sizeof *g);
        if (!g) return wsi_fail(err, WS_ERR_NOMEM, NULL, NULL, -1, "out of memory");
        s->t = g;
        s->cap = cap;
    }
    memmove(&s->t[i + 1], &s->t[i], (s->n - i) * sizeof *s->t);
    s->t[i] = *t;
    s->n++;
    return WS_OK;
}

ws_err ws_source_host_create(ws_source **out, ws_error *err) {
    if (!out) return wsi_fail(err, WS_ERR_ARG, NULL, NULL, -1, "NULL argument");
    *out = calloc(1, sizeof **out);
    if (!*out) return wsi_fail(err, WS_ERR_NOMEM, NULL, NULL, -1, "out of memory");
    (*out)->rank = -1;
    return WS_OK;
}

void ws_source_free(ws_source *s) {
    if (!s) return;
    wsi_read_ahead_free(s->ahead); /* before the caller may close the files it reads */
    for (size_t i = 0; i < s->n; i++)
        if (s->t[i].kind != WSI_SRC_FILE) free((char *)s->t[i].name);
    free(s->t);
    free(s);
}

/* Validate a caller's tensor description and fill t (name copied). */
static ws_err describe(ws_source *s, const char *name, ws_dtype dtype, int ndim,
                       const uint64_t *shape, const int64_t *strides, const void *data,
                       wsi_src_kind kind, wsi_src_tensor *t, ws_error *err) {
    if (!s || !name)
        return wsi_fail(err, WS_ERR_ARG, NULL, NULL, -1, "NULL source or name");
    if (ws_dtype_size(dtype) == 0)
        return wsi_fail(err, WS_ERR_ARG, NULL, name, -1, "invalid dtype %d", (int)dtype);
    if (ndim < 0 || ndim > WS_MAX_DIMS || (ndim > 0 && !shape))
        return wsi_fail(err, WS_ERR_ARG, NULL, name, -1, "ndim %d out of range 0..%d", ndim,
                        WS_MAX_DIMS);
    memset(t, 0, sizeof *t);
    t->dtype = dtype;
    t->ndim = ndim;
    t->kind = kind;
    t->data = data;
    t->fd = -1;
    uint64_t numel = 1;
    for (int d = 0; d < ndim; d++) {
        t->shape[d] = shape[d];
        if (!wsi_mul_u64(numel, shape[d], &numel))
            return wsi_fail(err, WS_ERR_LIMIT, NULL, name, -1, "element count overflows");
    }
    uint64_t bytes;
    if (!wsi_mul_u64(numel, ws_dtype_size(dtype), &bytes) || bytes > (uint64_t)PTRDIFF_MAX)
        return wsi_fail(err, WS_ERR_LIMIT, NULL, name, -1, "tensor too large for memory");
    t->numel = numel;
    if (numel > 0 && !data)
        return wsi_fail(err, WS_ERR_ARG, NULL, name, -1, "NULL data for a non-empty tensor");
    /* C-contiguous strides, then the caller's */
    int64_t acc = 1;
    for (int d = ndim - 1; d >= 0; d--) {
        t->strides[d] = acc;
        acc *= (int64_t)(shape[d] ? shape[d] : 1);
    }
    t->contiguous = true;
    if (strides)
        for (int d = 0; d < ndim; d++) {
            if (shape[d] > 1 && strides[d] != t->strides[d]) t->contiguous = false;
            t->strides[d] = strides[d];
        }
    if (!t->contiguous && numel > 0)
        for (int d = 0; d < ndim; d++) { /* offsets of every element must not overflow */
            int64_t span;
            if (__builtin_mul_overflow(t->strides[d], (int64_t)(shape[d] - 1), &span) ||
                span > PTRDIFF_MAX / 16 || span < -(PTRDIFF_MAX / 16))
                return wsi_fail(err, WS_ERR_LIMIT, NULL, name, -1, "strides overflow");
        }
    char *copy = wsi_strdup(name);
    if (!copy) return wsi_fail(err, WS_ERR_NOMEM, NULL, NULL, -1, "out of memory");
    t->name = copy;
    return WS_OK;
}

ws_err ws_source_add(ws_source *s, const char *name, ws_dtype dtype, int ndim,
                     const uint64_t *shape, const int64_t *strides, const void *data,
                     ws_error *err) {
    wsi_src_tensor t;
    ws_err rc = describe(s, name, dtype, ndim, shape, strides, data, WSI_SRC_HOST, &t, err);
    if (rc == WS_OK && s->rank >= 0)
        rc = wsi_fail(err, WS_ERR_ARG, NULL, name, -1, "a dump's source takes no buffers");
    if (rc == WS_OK) rc = wsi_source_insert(s, &t, err);
    if (rc != WS_OK) free((char *)t.name);
    return rc;
}

ws_err ws_source_add_device(ws_source *s, const char *name, ws_dtype dtype, int ndim,
                            const uint64_t *shape, const int64_t *strides, const void *ptr,
                            void *stream, ws_error *err) {
    wsi_src_tensor t;
    ws_err rc = describe(s, name, dtype, ndim, shape, strides, ptr, WSI_SRC_DEVICE, &t, err);
    if (rc == WS_OK && s->rank >= 0)
        rc = wsi_fail(err, WS_ERR_ARG, NULL, name, -1, "a dump's source takes no buffers");
    if (rc == WS_OK && !s->dev) {
        s->dev = wsi_device_backend_get(err);
        if (!s->dev) rc = err ? err->code : WS_ERR_NOTFOUND;
    }
    if (rc == WS_OK) {
        t.stream = stream;
        int64_t rs, cs;
        if (t.numel > 0 && !wsi_view_strides(&t, &rs, &cs))
            rc = wsi_fail(err, WS_ERR_ARG, NULL, name, -1,
                          "device tensor strides must make its 2-D view [shape[0], rest] a "
                          "strided matrix");
    }
    if (rc == WS_OK) rc = wsi_source_insert(s, &t, err);
    if (rc != WS_OK) free((char *)t.name);
    return rc;
}

bool wsi_view_strides(const wsi_src_tensor *t, int64_t *row_stride, int64_t *col_stride) {
    if (t->ndim == 0) {
        *row_stride = 1, *col_stride = 1;
        return true;
    }
    if (t->ndim == 1) {
        *row_stride = t->strides[0], *col_stride = 1;
        return true;
    }
    *row_stride = t->strides[0];
    /* dims 1.. must collapse into one: stride[d] == stride[d+1] * shape[d+1] (size-1 dims
     * are free) */
    int64_t cs = 0;
    int last = -1;
    for (int d = t->ndim - 1; d >= 1; d--) {
        if (t->shape[d] == 1) continue;
        if (last < 0) cs = t->strides[d];
        else if (t->strides[d] != t->strides[last] * (int64_t)t->shape[last]) return false;
        last = d;
    }
    *col_stride = last < 0 ? 1 : cs;
    return true;
}

ws_err wsi_source_rect(const ws_source *s, const wsi_src_tensor *t, uint64_t row0,
                       uint64_t col0, uint64_t rows, uint64_t cols, uint64_t l_cols,
                       wsi_readbuf *buf, wsi_rect_fn fn, void *ctx, ws_error *err) {
    uint64_t end;
    if (col0 + cols > l_cols || !wsi_mul_u64(row0 + rows, l_cols, &end) || end > t->numel)
        return wsi_fail(err, WS_ERR_ARG, t->file, t->name, -1,
                        "rectangle outside the tensor's %llu elements",
                        (unsigned long long)t->numel);
    if (rows == 0 || cols == 0) return WS_OK;
    switch (t->kind) {
    case WSI_SRC_FILE:
        return wsi_file_rect(s, t, row0, col0, rows, cols, l_cols, buf, fn, ctx, err);
    case WSI_SRC_DEVICE:
        return wsi_device_rect(s, t, row0, col0, rows, cols, l_cols, buf, fn, ctx, err);
    default:
        return wsi_host_rect(t, row0, col0, rows, cols, l_cols, buf, fn, ctx, err);
    }
}

typedef struct copy_ctx {
    uint8_t *dst;
    size_t es;
} copy_ctx;

static ws_err copy_out(void *arg, uint64_t at, const void *data, uint64_t n) {
    copy_ctx *c = arg;
    memcpy(c->dst + at * c->es, data, (size_t)(n * c->es));
    return WS_OK;
}

ws_err wsi_source_read(const ws_source *s, const wsi_src_tensor *t, uint64_t at, uint64_t n,
                       void *dst, wsi_readbuf *buf, ws_error *err) {
    if (at > t->numel || n > t->numel - at)
        return wsi_fail(err, WS_ERR_ARG, t->file, t->name, -1,
                        "read outside the tensor's %llu elements", (unsigned long long)t->numel);
    if (n == 0) return WS_OK;
    if (wsi_file_pread_mode(s, t)) return wsi_file_read(s, t, at, n, dst, err);
    copy_ctx c = {dst, ws_dtype_size(t->dtype)};
    return wsi_source_rect(s, t, 0, at, 1, n, t->numel, buf, copy_out, &c, err);
}
