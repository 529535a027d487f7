/*
 * Tensors in place (ws_view): digests and SGLang hashes of host or CUDA tensors with any
 * strides, without a contiguous copy. Views become rectangles (device_backend.h); CUDA ones
 * go to the device backend in one batch per call, host ones are read where they lie.
 */
#include "device_views.h"

#include "device_loader.h"
#include "fastdigest.h"

#include <openssl/evp.h>
#include <stdlib.h>
#include <string.h>

static const char *vname(const ws_view *v) { return v->name ? v->name : NULL; }

ws_err wsi_view_numel(const ws_view *v, uint64_t *numel, ws_error *err) {
    if (!v || v->ndim < 0 || v->ndim > WS_MAX_DIMS || (v->ndim && !v->shape))
        return wsi_fail(err, WS_ERR_ARG, NULL, v ? vname(v) : NULL, -1,
                        "view: ndim must be 0..%d with a shape", WS_MAX_DIMS);
    uint64_t n = 1;
    for (int d = 0; d < v->ndim; d++)
        if (!wsi_mul_u64(n, v->shape[d], &n))
            return wsi_fail(err, WS_ERR_LIMIT, NULL, vname(v), -1, "view: numel overflows");
    *numel = n;
    return WS_OK;
}

ws_err wsi_view_rects(const ws_view *v, ws_canon c, wsi_dev_rect **out, size_t *n_out,
                      ws_error *err) {
    *out = NULL;
    *n_out = 0;
    uint64_t numel;
    ws_err rc = wsi_view_numel(v, &numel, err);
    if (rc) return rc;
    if ((unsigned)v->dtype >= WS_DTYPE__COUNT)
        return wsi_fail(err, WS_ERR_DTYPE, NULL, vname(v), -1, "view: invalid dtype %d",
                        (int)v->dtype);
    if (numel == 0) return WS_OK;
    if (!v->data) return wsi_fail(err, WS_ERR_ARG, NULL, vname(v), -1, "view: NULL data");
    size_t es = ws_dtype_size(v->dtype);
    uint64_t units = ws_dtype_units(ws_canonical_dtype(v->dtype, c));
    /* dims of size > 1 with their strides, adjacent ones merged when contiguous */
    uint64_t dim[WS_MAX_DIMS];
    int64_t str[WS_MAX_DIMS];
    int k = 0;
    int64_t cstride = 1;
    int64_t cs[WS_MAX_DIMS];
    for (int d = v->ndim - 1; d >= 0; d--) {
        cs[d] = cstride;
        cstride *= (int64_t)v->shape[d];
    }
    for (int d = 0; d < v->ndim; d++) {
        int64_t s = v->strides ? v->strides[d] : cs[d];
        if (v->shape[d] == 1) continue;
        if (s < 0)
            return wsi_fail(err, WS_ERR_ARG, NULL, vname(v), -1,
                            "view: negative stride %lld in dim %d", (long long)s, d);
        if (k > 0 && str[k - 1] == s * (int64_t)v->shape[d]) {
            dim[k - 1] *= v->shape[d];
            str[k - 1] = s;
            continue;
        }
        dim[k] = v->shape[d];
        str[k] = s;
        k++;
    }
    /* the byte span must not wrap: max offset = sum (dim - 1) * stride */
    uint64_t span = 0;
    for (int d = 0; d < k; d++) {
        uint64_t t;
        if (!wsi_mul_u64(dim[d] - 1, (uint64_t)str[d], &t) || !wsi_add_u64(span, t, &span))
            return wsi_fail(err, WS_ERR_LIMIT, NULL, vname(v), -1, "view: strides overflow");
    }
    if (span > (UINT64_MAX / es) / 2)
        return wsi_fail(err, WS_ERR_LIMIT, NULL, vname(v), -1, "view: strides overflow");
    uint64_t rows = 1, cols = 1, nrect = 1;
    int64_t rs = 0, cstr = 1;
    if (k >= 1) {
        cols = dim[k - 1];
        cstr = str[k - 1];
    }
    if (k >= 2) {
        rows = dim[k - 2];
        rs = str[k - 2];
    }
    for (int d = 0; d + 2 < k; d++) nrect *= dim[d];
    if (nrect > WSI_VIEW_MAX_RECTS)
        return wsi_fail(err, WS_ERR_LIMIT, NULL, vname(v), -1,
                        "view: %llu rectangles (its outer dims do not merge); at most %llu",
                        (unsigned long long)nrect, (unsigned long long)WSI_VIEW_MAX_RECTS);
    wsi_dev_rect *r = calloc(nrect, sizeof *r);
    if (!r) return wsi_fail(err, WS_ERR_NOMEM, NULL, vname(v), -1, "view: out of memory");
    uint64_t idx[WS_MAX_DIMS] = {0};
    for (uint64_t i = 0; i < nrect; i++) {
        int64_t off = 0;
        for (int d = 0; d + 2 < k; d++) off += (int64_t)idx[d] * str[d];
        r[i].ptr = (const uint8_t *)v->data + off * (int64_t)es;
        r[i].dtype = v->dtype;
        r[i].rows = rows;
        r[i].cols = cols;
        r[i].row_stride = rs;
        r[i].col_stride = cstr;
        r[i].hf_unit0 = i * rows * cols * units;
        r[i].hf_row_units = cols * units;
        for (int d = k - 3; d >= 0; d--) { /* next outer index, last dim fastest */
            if (++idx[d] < dim[d]) break;
            idx[d] = 0;
        }
    }
    *out = r;
    *n_out = nrect;
    return WS_OK;
}

/* ---- host views ---- */

typedef struct host_job {
    const ws_view *v;
    ws_canon c;
    unsigned algos;
    const ws_fastkey *key;
    ws_digest *out;
    ws_value_stats *stats;
    ws_err *rc;
    ws_error *errs;
} host_job;

#define HOST_CHUNK 16384 /* elements cast at a time */

static ws_err host_one(const ws_view *v, ws_canon c, unsigned algos, const ws_fastkey *key,
                       ws_digest *out, ws_value_stats *stats, ws_error *err) {
    wsi_dev_rect *rects = NULL;
    size_t n = 0;
    ws_err rc = wsi_view_rects(v, c, &rects, &n, err);
    if (rc) return rc;
    memset(out, 0, sizeof *out);
    out->algos = algos;
    if (stats) stats->nan = stats->inf = 0;
    ws_dtype cd = ws_canonical_dtype(v->dtype, c);
    size_t es = ws_dtype_size(v->dtype), cs = ws_dtype_size(cd);
    unsigned units = ws_dtype_units(cd);
    int ub = cs == 1 ? 1 : 2;
    /* one contiguous rectangle: the buffer path as it is */
    if (n == 0 || (n == 1 && (rects[0].col_stride == 1 || rects[0].cols == 1) &&
                   (rects[0].rows == 1 || rects[0].row_stride == (int64_t)rects[0].cols))) {
        rc = ws_digest_buffer(v->dtype, c, n ? rects[0].ptr : NULL, v->ndim, v->shape, algos,
                              key, out, stats, err);
        free(rects);
        if (rc && err && v->name && !err->tensor[0])
            snprintf(err->tensor, sizeof err->tensor, "%s", v->name);
        return rc;
    }
    uint8_t *src = malloc(HOST_CHUNK * es), *dst = malloc(HOST_CHUNK * cs);
    EVP_MD_CTX *ctx = (algos & WS_ALGO_SHA256) ? EVP_MD_CTX_new() : NULL;
    if (!src || !dst || ((algos & WS_ALGO_SHA256) && !ctx)) {
        rc = wsi_fail(err, WS_ERR_NOMEM, NULL, vname(v), -1, "out of memory");
        goto done;
    }
    if (ctx && EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) != 1) {
        rc = wsi_fail(err, WS_ERR_CRYPTO, NULL, vname(v), -1, "SHA-256 init failed");
        goto done;
    }
    ws_value_stats st = {0, 0};
    for (size_t i = 0; i < n && !rc; i++) {
        const wsi_dev_rect *r = &rects[i];
        for (uint64_t row = 0; row < r->rows && !rc; row++) {
            const uint8_t *base = (const uint8_t *)r->ptr + (int64_t)row * r->row_stride * (int64_t)es;
            for (uint64_t c0 = 0; c0 < r->cols && !rc; c0 += HOST_CHUNK) {
                uint64_t m = r->cols - c0 < HOST_CHUNK ? r->cols - c0 : HOST_CHUNK;
                const uint8_t *p = base + (int64_t)c0 * r->col_stride * (int64_t)es;
                if (r->col_stride != 1) {
                    for (uint64_t e = 0; e < m; e++)
                        memcpy(src + e * es, p + (int64_t)e * r->col_stride * (int64_t)es, es);
                    p = src;
                }
                rc = ws_cast_to_canonical(v->dtype, c, p, m, dst, &st, err);
                if (rc) break;
                if (ctx && EVP_DigestUpdate(ctx, dst, m * cs) != 1)
                    rc = wsi_fail(err, WS_ERR_CRYPTO, NULL, vname(v), -1, "SHA-256 failed");
                if (algos & WS_ALGO_FAST)
                    wsi_fast_accumulate(key, &out->fast,
                                        r->hf_unit0 + row * r->hf_row_units + c0 * units, dst,
                                        m * units, ub);
            }
        }
    }
    if (!rc && (algos & WS_ALGO_FAST)) /* the tensor-level digest binds dtype and shape */
        rc = ws_fast_seal(key, &out->fast, cd, v->ndim, v->shape);
    if (!rc && ctx) {
        unsigned len = 0;
        if (EVP_DigestFinal_ex(ctx, out->sha256, &len) != 1 || len != 32)
            rc = wsi_fail(err, WS_ERR_CRYPTO, NULL, vname(v), -1, "SHA-256 failed");
    }
    if (!rc && stats) *stats = st;
done:
    EVP_MD_CTX_free(ctx);
    free(src);
    free(dst);
    free(rects);
    return rc;
}

static void host_item(void *ctx, size_t i) {
    host_job *j = ctx;
    ws_error_clear(&j->errs[i]);
    j->rc[i] = host_one(&j->v[i], j->c, j->algos, j->key, &j->out[i],
                        j->stats ? &j->stats[i] : NULL, &j->errs[i]);
}

/* ---- device views ---- */

static const wsi_device_backend *backend(const ws_view *v, ws_error *err) {
    const wsi_device_backend *b = wsi_device_backend_get(err);
    if (!b && err && v && v->name) snprintf(err->tensor, sizeof err->tensor, "%s", v->name);
    return b;
}

/* Rectangles of the views listed in idx (n of them), concatenated; first[k] = index of view
 * idx[k]'s first rectangle, count[k] their number. */
static ws_err gather_rects(const ws_view *v, const size_t *idx, size_t n, ws_canon c,
                           wsi_dev_rect **all, size_t *total, size_t *first, size_t *count,
                           ws_error *err) {
    *all = NULL;
    *total = 0;
    size_t cap = 0;
    for (size_t k = 0; k < n; k++) {
        wsi_dev_rect *r;
        size_t m;
        ws_err rc = wsi_view_rects(&v[idx[k]], c, &r, &m, err);
        if (rc) {
            free(*all);
            *all = NULL;
            return rc;
        }
        if (*total + m > cap) {
            size_t nc = cap ? cap : 64;
            while (nc < *total + m) nc *= 2;
            wsi_dev_rect *g = realloc(*all, nc * sizeof *g);
            if (!g) {
                free(r);
                free(*all);
                *all = NULL;
                return wsi_fail(err, WS_ERR_NOMEM, NULL, NULL, -1, "out of memory");
            }
            *all = g;
            cap = nc;
        }
        if (m) memcpy(*all + *total, r, m * sizeof *r);
        free(r);
        first[k] = *total;
        count[k] = m;
        *total += m;
    }
    return WS_OK;
}

static ws_err device_digests(const ws_view *v, const size_t *idx, size_t n, ws_canon c,
                             unsigned algos, const ws_fastkey *key, void *stream, int threads,
                             ws_digest *out, ws_value_stats *stats, ws_error *err) {
    const wsi_device_backend *b = backend(&v[idx[0]], err);
    if (!b) return err ? err->code : WS_ERR_NOTFOUND;
    wsi_dev_rect *rects = NULL;
    size_t total = 0;
    size_t *first = calloc(n, sizeof *first), *count = calloc(n, sizeof *count);
    ws_fast *fast = NULL;
    ws_value_stats *rst = NULL, *sst = NULL;
    uint8_t (*sha)[32] = NULL;
    wsi_dev_tensor *tens = NULL;
    ws_err rc = WS_OK;
    if (!first || !count) {
        rc = wsi_fail(err, WS_ERR_NOMEM, NULL, NULL, -1, "out of memory");
        goto done;
    }
    if ((rc = gather_rects(v, idx, n, c, &rects, &total, first, count, err))) goto done;
    for (size_t k = 0; k < n; k++) {
        memset(&out[idx[k]], 0, sizeof out[idx[k]]);
        out[idx[k]].algos = algos;
        if (stats) stats[idx[k]].nan = stats[idx[k]].inf = 0;
    }
    bool have_stats = false;
    if (algos & WS_ALGO_FAST) {
        fast = calloc(total ? total : 1, sizeof *fast);
        rst = calloc(total ? total : 1, sizeof *rst);
        if (!fast || !rst) {
            rc = wsi_fail(err, WS_ERR_NOMEM, NULL, NULL, -1, "out of memory");
            goto done;
        }
        if (total && (rc = b->fast_rects(key, rects, total, c, fast, rst, stream, err))) goto done;
        for (size_t k = 0; k < n; k++) {
            ws_digest *d = &out[idx[k]];
            for (size_t r = first[k]; r < first[k] + count[k]; r++) {
                wsi_fast_add(&d->fast, &fast[r]);
                if (stats) {
                    stats[idx[k]].nan += rst[r].nan;
                    stats[idx[k]].inf += rst[r].inf;
                }
            }
            const ws_view *vk = &v[idx[k]]; /* the tensor-level digest binds dtype and shape */
            if ((rc = ws_fast_seal(key, &d->fast, ws_canonical_dtype(vk->dtype, c), vk->ndim,
                                   vk->shape))) {
                wsi_fail(err, rc, NULL, vk->name, -1, "fast digest: cannot seal the shape");
                goto done;
            }
        }
        have_stats = true;
    }
    if (algos & WS_ALGO_SHA256) {
        sha = calloc(n, sizeof *sha);
        sst = calloc(n, sizeof *sst);
        tens = calloc(n, sizeof *tens);
        if (!sha || !sst || !tens) {
            rc = wsi_fail(err, WS_ERR_NOMEM, NULL, NULL, -1, "out of memory");
            goto done;
        }
        for (size_t k = 0; k < n; k++) {
            tens[k].rect0 = first[k];
            tens[k].n_rects = count[k];
        }
        if ((rc = b->sha256_rects(rects, total, tens, n, c, threads, sha, sst, stream, err)))
            goto done;
        for (size_t k = 0; k < n; k++) {
            memcpy(out[idx[k]].sha256, sha[k], 32);
            if (stats && !have_stats) stats[idx[k]] = sst[k];
        }
    }
done:
    free(rects);
    free(first);
    free(count);
    free(fast);
    free(rst);
    free(sha);
    free(sst);
    free(tens);
    return rc;
}

ws_err ws_digest_views(const ws_view *v, size_t n, ws_canon c, unsigned algos,
                       const ws_fastkey *key, void *stream, int threads, ws_digest *out,
                       ws_value_stats *stats, ws_error *err) {
    if (n && (!v || !out)) return wsi_fail(err, WS_ERR_ARG, NULL, NULL, -1, "NULL views or output");
    if (!algos || (algos & ~(unsigned)(WS_ALGO_SHA256 | WS_ALGO_FAST)))
        return wsi_fail(err, WS_ERR_ARG, NULL, NULL, -1, "algos must be WS_ALGO_SHA256 and/or WS_ALGO_FAST");
    if ((algos & WS_ALGO_FAST) && !key)
        return wsi_fail(err, WS_ERR_ARG, NULL, NULL, -1, "fast digest needs a key");
    if (c != WS_CANON_BF16 && c != WS_CANON_NATIVE)
        return wsi_fail(err, WS_ERR_ARG, NULL, NULL, -1, "unknown canonical policy %d", (int)c);
    size_t *dev = malloc((n ? n : 1) * sizeof *dev), *host = malloc((n ? n : 1) * sizeof *host);
    ws_err *rcs = calloc(n ? n : 1, sizeof *rcs);
    ws_error *errs = calloc(n ? n : 1, sizeof *errs);
    ws_view *hv = malloc((n ? n : 1) * sizeof *hv);
    ws_digest *hout = malloc((n ? n : 1) * sizeof *hout);
    ws_value_stats *hst = malloc((n ? n : 1) * sizeof *hst);
    ws_err rc = WS_OK;
    if (!dev || !host || !rcs || !errs || !hv || !hout || !hst) {
        rc = wsi_fail(err, WS_ERR_NOMEM, NULL, NULL, -1, "out of memory");
        goto done;
    }
    size_t nd = 0, nh = 0;
    for (size_t i = 0; i < n; i++) {
        if (v[i].device >= 0) dev[nd++] = i;
        else host[nh++] = i;
    }
    if (nd && (rc = device_digests(v, dev, nd, c, algos, key, stream, threads, out, stats, err)))
        goto done;
    if (nh) {
        for (size_t k = 0; k < nh; k++) hv[k] = v[host[k]];
        host_job j = {hv, c, algos, key, hout, hst, rcs, errs};
        wsi_parallel_for(nh, threads, host_item, &j);
        for (size_t k = 0; k < nh; k++) {
            if (rcs[k]) {
                if (err) *err = errs[k];
                rc = rcs[k];
                goto done;
            }
            out[host[k]] = hout[k];
            if (stats) stats[host[k]] = hst[k];
        }
    }
done:
    free(dev);
    free(host);
    free(rcs);
    free(errs);
    free(hv);
    free(hout);
    free(hst);
    return rc;
}

/* ---- SGLang's hash ---- */

/* Segments (dst dtype = src dtype) laying view v's bytes out in C order from byte 0. */
static ws_err view_segments(const ws_view *v, wsi_dev_segment **out, size_t *n_out,
                            ws_error *err) {
    wsi_dev_rect *r;
    size_t n;
    *out = NULL;
    *n_out = 0;
    ws_err rc = wsi_view_rects(v, WS_CANON_NATIVE, &r, &n, err);
    if (rc) return rc;
    size_t es = ws_dtype_size(v->dtype), m = 0;
    for (size_t i = 0; i < n; i++) m += r[i].col_stride == 1 || r[i].cols == 1 ? 1 : r[i].rows;
    wsi_dev_segment *s = calloc(m ? m : 1, sizeof *s);
    if (!s) {
        free(r);
        return wsi_fail(err, WS_ERR_NOMEM, NULL, vname(v), -1, "out of memory");
    }
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        uint64_t base = r[i].hf_unit0 / ws_dtype_units(v->dtype) * es; /* element -> byte */
        if (r[i].col_stride == 1 || r[i].cols == 1) {
            s[k++] = (wsi_dev_segment){r[i].ptr, v->dtype, v->dtype, r[i].rows, r[i].cols * es,
                                       r[i].row_stride * (int64_t)es, base, r[i].cols * es};
        } else { /* one segment per row, each element a segment row */
            for (uint64_t row = 0; row < r[i].rows; row++)
                s[k++] = (wsi_dev_segment){
                    (const uint8_t *)r[i].ptr + (int64_t)row * r[i].row_stride * (int64_t)es,
                    v->dtype, v->dtype, r[i].cols, es, r[i].col_stride * (int64_t)es,
                    base + row * r[i].cols * es, es};
        }
    }
    free(r);
    *out = s;
    *n_out = k;
    return WS_OK;
}

/* Host form of a batch: the streaming hasher fed each segment row (cast where dtypes differ). */
static ws_err host_segments_hash(const wsi_dev_segment *s, size_t n, uint64_t total,
                                 uint64_t *out, const char *name, ws_error *err) {
    ws_sglang_hasher *h = NULL;
    ws_err rc = ws_sglang_hasher_create(WS_SGLANG_CUDA, total, &h, err);
    uint8_t *buf = NULL;
    size_t cap = 0;
    for (size_t i = 0; i < n && !rc; i++) {
        size_t ds = ws_dtype_size(s[i].dst_dtype), ss = ws_dtype_size(s[i].src_dtype);
        for (uint64_t r = 0; r < s[i].rows && !rc; r++) {
            const uint8_t *src = (const uint8_t *)s[i].src + (int64_t)r * s[i].src_row_stride;
            const void *p = src;
            if (s[i].src_dtype != s[i].dst_dtype) {
                if (s[i].dst_dtype != WS_BF16 || !ws_dtype_is_float(s[i].src_dtype)) {
                    rc = wsi_fail(err, WS_ERR_DTYPE, NULL, name, -1,
                                  "SGLang hash: no cast from %s to %s",
                                  ws_dtype_name(s[i].src_dtype), ws_dtype_name(s[i].dst_dtype));
                    break;
                }
                if (s[i].row_bytes > cap) {
                    uint8_t *nb = realloc(buf, s[i].row_bytes);
                    if (!nb) {
                        rc = wsi_fail(err, WS_ERR_NOMEM, NULL, name, -1, "out of memory");
                        break;
                    }
                    buf = nb;
                    cap = s[i].row_bytes;
                }
                rc = ws_cast_to_canonical(s[i].src_dtype, WS_CANON_BF16, src,
                                          s[i].row_bytes / ds, buf, NULL, err);
                (void)ss;
                p = buf;
            }
            if (!rc)
                rc = ws_sglang_hasher_update(h, s[i].dst_offset + r * s[i].dst_row_stride, p,
                                             s[i].row_bytes, err);
        }
    }
    if (!rc) rc = ws_sglang_hasher_final(h, out, err);
    ws_sglang_hasher_free(h);
    free(buf);
    if (rc && err && name && !err->tensor[0]) snprintf(err->tensor, sizeof err->tensor, "%s", name);
    return rc;
}

/* segs/tensors built by the callers; device: run through the backend, else the host form. */
static ws_err run_segments(bool device, const wsi_dev_segment *segs, size_t n_segs,
                           const wsi_dev_sglang_tensor *t, size_t n, const char *const *names,
                           void *stream, uint64_t *out, ws_error *err) {
    if (device) {
        const wsi_device_backend *b = wsi_device_backend_get(err);
        if (!b) return err ? err->code : WS_ERR_NOTFOUND;
        return b->sglang_hash_batch(segs, n_segs, t, n, out, stream, err);
    }
    for (size_t i = 0; i < n; i++) {
        ws_err rc = host_segments_hash(segs + t[i].seg0, t[i].n_segs, t[i].total_bytes, &out[i],
                                       names ? names[i] : NULL, err);
        if (rc) return rc;
    }
    return WS_OK;
}

ws_err ws_sglang_hash_views(const ws_view *v, size_t n, void *stream, uint64_t *out,
                            ws_error *err) {
    if (n && (!v || !out)) return wsi_fail(err, WS_ERR_ARG, NULL, NULL, -1, "NULL views or output");
    ws_err rc = WS_OK;
    for (int pass = 0; pass < 2 && !rc; pass++) { /* 0: device views, 1: host views */
        wsi_dev_segment *segs = NULL;
        size_t ns = 0, cap = 0, nt = 0;
        wsi_dev_sglang_tensor *t = calloc(n ? n : 1, sizeof *t);
        size_t *which = calloc(n ? n : 1, sizeof *which);
        const char **names = calloc(n ? n : 1, sizeof *names);
        if (!t || !which || !names) rc = wsi_fail(err, WS_ERR_NOMEM, NULL, NULL, -1, "out of memory");
        for (size_t i = 0; i < n && !rc; i++) {
            if ((v[i].device >= 0) != (pass == 0)) continue;
            wsi_dev_segment *s;
            size_t m;
            uint64_t numel;
            if ((rc = wsi_view_numel(&v[i], &numel, err)) || (rc = view_segments(&v[i], &s, &m, err)))
                break;
            if (ns + m > cap) {
                size_t nc = cap ? cap : 64;
                while (nc < ns + m) nc *= 2;
                wsi_dev_segment *g = realloc(segs, nc * sizeof *g);
                if (!g) {
                    free(s);
                    rc = wsi_fail(err, WS_ERR_NOMEM, NULL, NULL, -1, "out of memory");
                    break;
                }
                segs = g;
                cap = nc;
            }
            if (m) memcpy(segs + ns, s, m * sizeof *s);
            free(s);
            t[nt] = (wsi_dev_sglang_tensor){ns, m, numel * ws_dtype_size(v[i].dtype)};
            names[nt] = v[i].name;
            which[nt++] = i;
            ns += m;
        }
        uint64_t *res = calloc(nt ? nt : 1, sizeof *res);
        if (!rc && !res) rc = wsi_fail(err, WS_ERR_NOMEM, NULL, NULL, -1, "out of memory");
        if (!rc && nt) rc = run_segments(pass == 0, segs, ns, t, nt, names, stream, res, err);
        for (size_t k = 0; !rc && k < nt; k++) out[which[k]] = res[k];
        free(res);
        free(segs);
        free(t);
        free(which);
        free(names);
    }
    return rc;
}

ws_err ws_sglang_expect_views(const ws_layout *l, int rank, const ws_view *hf, size_t n_hf,
                              ws_dtype engine_dtype, void *stream, uint64_t *out, size_t n_out,
                              ws_error *err) {
    return ws_sglang_expect_views_ranks(l, &rank, 1, hf, n_hf, engine_dtype, stream, out, n_out,
                                        err);
}

ws_err ws_sglang_expect_views_ranks(const ws_layout *l, const int *ranks, size_t n_ranks,
                                    const ws_view *hf, size_t n_hf, ws_dtype engine_dtype,
                                    void *stream, uint64_t *out, size_t n_out, ws_error *err) {
    if (!l || (n_hf && !hf) || (n_out && !out) || (n_ranks && !ranks))
        return wsi_fail(err, WS_ERR_ARG, NULL, NULL, -1, "NULL layout, ranks, views or output");
    for (size_t a = 0; a < n_ranks; a++)
        for (size_t b = 0; b < a; b++)
            if (ranks[a] == ranks[b])
                return wsi_fail(err, WS_ERR_ARG, NULL, NULL, -1, "rank %d asked for twice",
                                ranks[a]);
    if (n_hf != ws_layout_hf_count(l))
        return wsi_fail(err, WS_ERR_ARG, NULL, NULL, -1, "%zu HF views for a layout of %zu HF tensors",
                        n_hf, ws_layout_hf_count(l));
    /* WS_DTYPE__COUNT: each local tensor holds its HF tensors' own dtype (ws_expect_create's
     * rule), else every local holds engine_dtype */
    bool as_hf = engine_dtype == WS_DTYPE__COUNT;
    if (!as_hf && !ws_dtype_size(engine_dtype))
        return wsi_fail(err, WS_ERR_DTYPE, NULL, NULL, -1, "invalid engine dtype");
    /* the rank's local tensors, in layout order: their index in out */
    size_t nl = ws_layout_local_count(l), nt = 0;
    long *slot = malloc((nl ? nl : 1) * sizeof *slot);
    wsi_dev_sglang_tensor *t = calloc(nl ? nl : 1, sizeof *t);
    const char **names = calloc(nl ? nl : 1, sizeof *names);
    uint64_t *numels = calloc(nl ? nl : 1, sizeof *numels);
    ws_dtype *ldt = calloc(nl ? nl : 1, sizeof *ldt); /* each local tensor's dtype */
    size_t np = ws_layout_piece_count(l);
    wsi_dev_segment *segs = calloc(np ? np : 1, sizeof *segs);
    ws_err rc = WS_OK;
    int device = -2; /* -2: none seen yet */
    if (!slot || !t || !segs || !names || !numels || !ldt) {
        rc = wsi_fail(err, WS_ERR_NOMEM, NULL, NULL, -1, "out of memory");
        goto done;
    }
    for (size_t i = 0; i < nl; i++) slot[i] = -1;
    /* out: the ranks in the order asked, each rank's local tensors in layout order */
    for (size_t a = 0; a < n_ranks; a++) {
        for (size_t i = 0; i < nl; i++) {
            const ws_local_desc *d = ws_layout_local(l, i);
            if (d->rank != ranks[a]) continue;
            uint64_t numel = 1;
            for (int k = 0; k < d->ndim; k++) numel *= d->shape[k];
            slot[i] = (long)nt;
            names[nt] = d->name;
            numels[nt] = numel;
            ldt[nt] = as_hf ? WS_DTYPE__COUNT : engine_dtype; /* as_hf: from its first piece */
            t[nt++].total_bytes = as_hf ? 0 : numel * ws_dtype_size(engine_dtype);
        }
    }
    if (nt != n_out) {
        if (n_ranks == 1)
            rc = wsi_fail(err, WS_ERR_ARG, NULL, NULL, -1,
                          "rank %d holds %zu local tensors, out has %zu", ranks[0], nt, n_out);
        else
            rc = wsi_fail(err, WS_ERR_ARG, NULL, NULL, -1,
                          "the %zu ranks asked hold %zu local tensors, out has %zu", n_ranks, nt,
                          n_out);
        goto done;
    }
    /* pieces grouped by local tensor: count, then place */
    size_t *fill = calloc(nt ? nt : 1, sizeof *fill);
    if (!fill) {
        rc = wsi_fail(err, WS_ERR_NOMEM, NULL, NULL, -1, "out of memory");
        goto done;
    }
    for (size_t p = 0; p < np; p++) {
        const ws_piece *pc = ws_layout_piece(l, p);
        if (slot[pc->local] >= 0) t[slot[pc->local]].n_segs++;
    }
    for (size_t k = 0, at = 0; k < nt; k++) {
        t[k].seg0 = at;
        at += t[k].n_segs;
    }
    size_t ns = 0;
    for (size_t p = 0; p < np && !rc; p++) {
        const ws_piece *pc = ws_layout_piece(l, p);
        long k = slot[pc->local];
        if (k < 0) continue;
        const ws_view *h = &hf[pc->hf];
        const char *hn = ws_layout_hf(l, pc->hf)->name;
        if (!h->data) {
            rc = wsi_fail(err, WS_ERR_ARG, NULL, hn, -1, "HF tensor needed by %s has no data",
                          names[k]);
            break;
        }
        {   /* the view must hold the layout's HF tensor: its pieces are read by offset */
            const ws_hf_desc *hd = ws_layout_hf(l, pc->hf);
            uint64_t want = 1, have;
            for (int d = 0; d < hd->ndim; d++) want *= hd->shape[d];
            if ((rc = wsi_view_numel(h, &have, err))) break;
            if (have != want) {
                rc = wsi_fail(err, WS_ERR_ARG, NULL, hn, -1,
                              "HF tensor has %llu elements, the layout's %llu",
                              (unsigned long long)have, (unsigned long long)want);
                break;
            }
        }
        if (device == -2) device = h->device;
        if ((h->device >= 0) != (device >= 0)) {
            rc = wsi_fail(err, WS_ERR_ARG, NULL, hn, -1,
                          "HF tensors must all be on the GPU or all on the host");
            break;
        }
        if (h->strides) { /* must be C-contiguous */
            int64_t cs = 1;
            for (int d = h->ndim - 1; d >= 0; d--) {
                if (h->shape[d] != 1 && h->strides[d] != cs) {
                    rc = wsi_fail(err, WS_ERR_ARG, NULL, hn, -1, "HF tensor must be C-contiguous");
                    break;
                }
                cs *= (int64_t)h->shape[d];
            }
            if (rc) break;
        }
        size_t ss = ws_dtype_size(h->dtype);
        if (ldt[k] == WS_DTYPE__COUNT) { /* as_hf, first piece of this local tensor */
            ldt[k] = h->dtype;
            t[k].total_bytes = numels[k] * ss;
        }
        ws_dtype ed = ldt[k];
        size_t es = ws_dtype_size(ed);
        if (as_hf && h->dtype != ed) {
            rc = wsi_fail(err, WS_ERR_DTYPE, NULL, names[k], -1,
                          "it joins %s (%s) with tensors of dtype %s: an engine holds one dtype",
                          hn, ws_dtype_name(h->dtype), ws_dtype_name(ed));
            break;
        }
        if (h->dtype != ed && !(ed == WS_BF16 && ws_dtype_is_float(h->dtype))) {
            rc = wsi_fail(err, WS_ERR_DTYPE, NULL, hn, -1, "HF %s cannot become engine %s",
                          ws_dtype_name(h->dtype), ws_dtype_name(ed));
            break;
        }
        wsi_dev_segment *s = &segs[t[k].seg0 + fill[k]++];
        s->src = (const uint8_t *)h->data + (pc->t_row0 * pc->t_cols + pc->t_col0) * ss;
        s->src_dtype = h->dtype;
        s->dst_dtype = ed;
        s->rows = pc->rows;
        s->row_bytes = pc->cols * es;
        s->src_row_stride = (int64_t)(pc->t_cols * ss);
        s->dst_offset = (pc->l_row0 * pc->l_cols + pc->l_col0) * es;
        s->dst_row_stride = pc->l_cols * es;
        ns++;
    }
    free(fill);
    if (!rc) rc = run_segments(device >= 0, segs, ns, t, nt, names, stream, out, err);
done:
    free(slot);
    free(t);
    free(names);
    free(numels);
    free(ldt);
    free(segs);
    return rc;
}

ws_err ws_device_memory(uint64_t *device_bytes, uint64_t *host_bytes, ws_error *err) {
    if (!device_bytes || !host_bytes) return wsi_fail(err, WS_ERR_ARG, NULL, NULL, -1, "NULL output");
    *device_bytes = *host_bytes = 0;
    ws_error e;
    const wsi_device_backend *b = wsi_device_backend_get(&e);
    if (!b) return WS_OK; /* never loaded: holds nothing */
    wsi_dev_memory m;
    ws_err rc = b->memory(&m, err);
    if (rc) return rc;
    *device_bytes = m.device_bytes;
    *host_bytes = m.host_bytes;
    return WS_OK;
}
