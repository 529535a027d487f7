/*
 * Predict what each engine rank must answer to a "checksum" request (docs/http.md, "Checking
 * an unmodified engine"): from the trainer's HF tensors and a layout, every rank's local
 * tensors (fused, padded with zeros, replicated) are hashed the way the engine hashes them,
 * without building them: SGLang's gpu_tensor_hash takes each piece straight from the HF
 * tensor at its byte offset in the local tensor (padding is never materialised); the
 * in-order digests (SGLang's CPU path, vLLM's SHA-256) stream the local tensor through a
 * bounded chunk. The result is SGLang's own answer shape plus weightsum's fields, among them
 * what each local tensor holds, so that a judge can name HF tensors and rows.
 */
#include "expect.h"
#include "pieces.h"

#include <openssl/evp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define IMAGE_CHUNK (4u << 20)

const char *ws_engine_name(ws_engine e) {
    return e == WS_ENGINE_SGLANG ? "sglang" : e == WS_ENGINE_VLLM ? "vllm" : NULL;
}

ws_err ws_engine_from_name(const char *name, ws_engine *out) {
    if (!name || !out) return WS_ERR_ARG;
    if (strcmp(name, "sglang") == 0) *out = WS_ENGINE_SGLANG;
    else if (strcmp(name, "vllm") == 0) *out = WS_ENGINE_VLLM;
    else return WS_ERR_ARG;
    return WS_OK;
}

const char *wsp_hash_name(ws_engine e, ws_sglang_path p) {
    if (e == WS_ENGINE_VLLM) return "sha256";
    return p == WS_SGLANG_CPU ? "sha256_first8" : "gpu_tensor_hash";
}

/* One local tensor to hash. */
typedef struct job {
    size_t local;        /* layout index */
    const size_t *pieces; /* its pieces (layout indices) */
    size_t npieces;
    ws_dtype dtype;
    uint64_t numel, rows, cols; /* the local 2-D view */
    char hex[65];
    ws_err rc;
    ws_error err;
} job;

typedef struct ctx {
    const ws_layout *l;
    const ws_tensor **hf; /* per HF index, the trainer's tensor (NULL when tied) */
    const ws_ckpt *ck;    /* the checkpoint hf's tensors are mapped from, or NULL (memory) */
    job *jobs;
    size_t *order;
    ws_engine engine;
    ws_sglang_path path;
    const char (*given)[65]; /* per local tensor, answers computed elsewhere (device), or NULL */
    ws_progress_fn progress; /* may be NULL; called under lock */
    void *progress_user;
    pthread_mutex_t lock;
    uint64_t done, total; /* bytes of local tensors */
} ctx;

static uint64_t numel_of(int ndim, const uint64_t *shape) {
    uint64_t n = 1;
    for (int i = 0; i < ndim; i++) n *= shape[i];
    return n;
}

/* Check that piece p lies inside its HF tensor and its local tensor's views. */
static ws_err check_piece(const ctx *c, const job *j, const ws_piece *p, ws_error *err) {
    const ws_tensor *t = c->hf[p->hf];
    const char *local = ws_layout_local(c->l, j->local)->name;
    if (!t) return wsi_fail(err, WS_ERR_LAYOUT, NULL, local, -1, "a piece of a tied tensor");
    bool ok = p->t_cols && t->numel % p->t_cols == 0 && p->t_col0 + p->cols <= p->t_cols &&
              p->t_row0 + p->rows <= t->numel / p->t_cols && p->l_cols == j->cols &&
              p->l_col0 + p->cols <= j->cols && p->l_row0 + p->rows <= j->rows;
    if (!ok)
        return wsi_fail(err, WS_ERR_LAYOUT, NULL, local, -1,
                        "a piece of %s does not fit the tensors it joins", t->name);
    if (t->dtype != j->dtype)
        return wsi_fail(err, WS_ERR_DTYPE, NULL, local, -1,
                        "it joins %s (%s) with tensors of dtype %s: an engine holds one dtype",
                        t->name, ws_dtype_name(t->dtype), ws_dtype_name(j->dtype));
    return WS_OK;
}

/* Rows r0 <= r < r1 of piece p are about to be read from its HF tensor's mapping: the file
 * must still hold them, and they are this thread's touch until wsi_ckpt_touch_end(prev). */
static ws_err touch_rows(const ctx *c, const ws_piece *p, uint64_t r0, uint64_t r1, size_t es,
                         wsi_touch *prev, ws_error *err) {
    uint64_t a = ((p->t_row0 + r0) * p->t_cols + p->t_col0) * es;
    uint64_t b = ((p->t_row0 + r1 - 1) * p->t_cols + p->t_col0 + p->cols) * es;
    return wsi_ckpt_touch_begin(c->ck, c->hf[p->hf], a, b - a, prev, err);
}

/* gpu_tensor_hash: every piece's bytes given at their offsets in the local tensor. */
static ws_err hash_direct(const ctx *c, job *j, ws_error *err) {
    size_t es = ws_dtype_size(j->dtype);
    ws_sglang_hasher *h = NULL;
    ws_err rc = ws_sglang_hasher_create(WS_SGLANG_CUDA, j->numel * es, &h, err);
    for (size_t k = 0; rc == WS_OK && k < j->npieces; k++) {
        const ws_piece *p = ws_layout_piece(c->l, j->pieces[k]);
        const uint8_t *src = c->hf[p->hf]->data;
        wsi_touch prev;
        if (p->rows == 0 || (rc = touch_rows(c, p, 0, p->rows, es, &prev, err)) != WS_OK) continue;
        bool whole = p->cols == p->t_cols && p->cols == j->cols; /* whole rows on both sides */
        if (whole)
            rc = ws_sglang_hasher_update(h, p->l_row0 * j->cols * es, src + p->t_row0 * p->t_cols * es,
                                         (size_t)(p->rows * p->cols * es), err);
        for (uint64_t r = 0; !whole && rc == WS_OK && r < p->rows; r++)
            rc = ws_sglang_hasher_update(h, ((p->l_row0 + r) * j->cols + p->l_col0) * es,
                                         src + ((p->t_row0 + r) * p->t_cols + p->t_col0) * es,
                                         (size_t)(p->cols * es), err);
        wsi_ckpt_touch_end(&prev);
    }
    uint64_t v = 0;
    if (rc == WS_OK) rc = ws_sglang_hasher_final(h, &v, err);
    ws_sglang_hasher_free(h);
    if (rc == WS_OK) ws_sglang_hex(v, j->hex);
    return rc;
}

/* SHA-256 of the local tensor, built a chunk of rows at a time (zero where no piece is). */
static ws_err hash_image(const ctx *c, job *j, ws_error *err) {
    size_t es = ws_dtype_size(j->dtype);
    uint64_t row_bytes = j->cols * es;
    uint64_t per = row_bytes >= IMAGE_CHUNK ? 1 : IMAGE_CHUNK / row_bytes;
    uint8_t *buf = malloc((size_t)(per * row_bytes) + 1);
    EVP_MD_CTX *sha = EVP_MD_CTX_new();
    ws_err rc = buf && sha ? WS_OK : wsi_fail(err, WS_ERR_NOMEM, NULL, NULL, -1, "out of memory");
    if (rc == WS_OK && EVP_DigestInit_ex(sha, EVP_sha256(), NULL) != 1)
        rc = wsi_fail(err, WS_ERR_CRYPTO, NULL, NULL, -1, "SHA-256 could not start");
    for (uint64_t r0 = 0; rc == WS_OK && r0 < j->rows; r0 += per) {
        uint64_t r1 = r0 + per < j->rows ? r0 + per : j->rows;
        memset(buf, 0, (size_t)((r1 - r0) * row_bytes));
        for (size_t k = 0; rc == WS_OK && k < j->npieces; k++) {
            const ws_piece *p = ws_layout_piece(c->l, j->pieces[k]);
            uint64_t a = p->l_row0 > r0 ? p->l_row0 : r0;
            uint64_t b = p->l_row0 + p->rows < r1 ? p->l_row0 + p->rows : r1;
            const uint8_t *src = c->hf[p->hf]->data;
            wsi_touch prev;
            if (a >= b || (rc = touch_rows(c, p, a - p->l_row0, b - p->l_row0, es, &prev, err)) != WS_OK)
                continue;
            for (uint64_t r = a; r < b; r++)
                memcpy(buf + ((r - r0) * j->cols + p->l_col0) * es,
                       src + ((p->t_row0 + r - p->l_row0) * p->t_cols + p->t_col0) * es,
                       (size_t)(p->cols * es));
            wsi_ckpt_touch_end(&prev);
        }
        if (rc == WS_OK && EVP_DigestUpdate(sha, buf, (size_t)((r1 - r0) * row_bytes)) != 1)
            rc = wsi_fail(err, WS_ERR_CRYPTO, NULL, NULL, -1, "SHA-256 failed");
    }
    uint8_t md[32];
    unsigned len = 0;
    if (rc == WS_OK && (EVP_DigestFinal_ex(sha, md, &len) != 1 || len != 32))
        rc = wsi_fail(err, WS_ERR_CRYPTO, NULL, NULL, -1, "SHA-256 failed");
    if (rc == WS_OK) wsp_image_hex(c->engine, md, j->hex);
    EVP_MD_CTX_free(sha);
    free(buf);
    return rc;
}

void wsp_image_hex(ws_engine e, const uint8_t md[32], char hex[65]) {
    if (e == WS_ENGINE_VLLM) {
        ws_sha256_hex(md, hex);
        return;
    }
    uint64_t v = 0; /* SGLang's CPU path: the first 8 bytes, big-endian */
    for (int i = 0; i < 8; i++) v = v << 8 | md[i];
    ws_sglang_hex(v, hex);
}

static void run_job(void *arg, size_t k) {
    ctx *c = arg;
    job *j = &c->jobs[c->order[k]];
    ws_error_clear(&j->err);
    j->rc = WS_OK;
    if (c->given) { /* hashed where the tensors lie (expect_views.c) */
        memcpy(j->hex, c->given[j->local], sizeof j->hex);
        return;
    }
    bool direct = c->engine == WS_ENGINE_SGLANG && c->path == WS_SGLANG_CUDA;
    j->rc = direct ? hash_direct(c, j, &j->err) : hash_image(c, j, &j->err);
    if (c->progress) {
        pthread_mutex_lock(&c->lock);
        c->done += j->numel * ws_dtype_size(j->dtype);
        c->progress(c->progress_user, c->done, c->total);
        pthread_mutex_unlock(&c->lock);
    }
}

static int cmp_tensor_name(const void *a, const void *b) {
    return strcmp((*(const ws_tensor *const *)a)->name, (*(const ws_tensor *const *)b)->name);
}

typedef struct sized {
    uint64_t numel;
    size_t i;
} sized;

static int larger_first(const void *a, const void *b) {
    const sized *x = a, *y = b;
    if (x->numel != y->numel) return x->numel > y->numel ? -1 : 1;
    return x->i < y->i ? -1 : x->i > y->i;
}

/* "[a, b]" as a JSON pair. */
static json_t *pair(uint64_t a, uint64_t b) { return json_pack("[II]", (json_int_t)a, (json_int_t)b); }

/* What local tensor j holds: its HF segments and its zero rows. */
static json_t *holds_json(const ctx *c, const job *j) {
    const ws_local_desc *ld = ws_layout_local(c->l, j->local);
    json_t *o = json_object(), *shape = json_array(), *segs = json_array(), *zero = json_array();
    for (int i = 0; i < ld->ndim; i++) json_array_append_new(shape, json_integer((json_int_t)ld->shape[i]));
    uint8_t *covered = calloc((size_t)j->rows + 1, 1);
    for (size_t k = 0; k < j->npieces; k++) {
        const ws_piece *p = ws_layout_piece(c->l, j->pieces[k]);
        json_t *s = json_object();
        json_object_set_new(s, "tensor", json_string(ws_layout_hf(c->l, p->hf)->name));
        json_object_set_new(s, "rows", pair(p->t_row0, p->t_row0 + p->rows));
        if (p->cols != p->t_cols) json_object_set_new(s, "cols", pair(p->t_col0, p->t_col0 + p->cols));
        json_object_set_new(s, "local_rows", pair(p->l_row0, p->l_row0 + p->rows));
        if (p->cols != j->cols) json_object_set_new(s, "local_cols", pair(p->l_col0, p->l_col0 + p->cols));
        if (p->replica) json_object_set_new(s, "replica", json_integer(p->replica));
        json_array_append_new(segs, s);
        for (uint64_t r = p->l_row0; covered && r < p->l_row0 + p->rows; r++) covered[r] = 1;
    }
    for (uint64_t r = 0; covered && r < j->rows;) {
        if (covered[r]) { r++; continue; }
        uint64_t e = r;
        while (e < j->rows && !covered[e]) e++;
        json_array_append_new(zero, pair(r, e));
        r = e;
    }
    free(covered);
    json_object_set_new(o, "shape", shape);
    json_object_set_new(o, "dtype", json_string(ws_dtype_name(j->dtype)));
    json_object_set_new(o, "segments", segs);
    if (json_array_size(zero)) json_object_set_new(o, "zero_rows", zero);
    else json_decref(zero);
    return o;
}

static ws_err build_json(const ctx *c, size_t njobs, const char *source, json_t **out,
                         ws_error *err) {
    const ws_layout *l = c->l;
    int tp = ws_layout_tp(l), nranks = ws_layout_rank_count(l);
    long pp = ws_layout_parallel(l, WS_PAR_PP);
    json_t *root = json_object(), *ranks = json_array(), *holds = json_array();
    json_t *vllm = c->engine == WS_ENGINE_VLLM ? json_object() : NULL;
    json_object_set_new(root, "format", json_string("weightsum-expect"));
    json_object_set_new(root, "version", json_integer(1));
    json_object_set_new(root, "tool", json_string("weightsum " WS_VERSION_STRING));
    json_object_set_new(root, "engine", json_string(ws_engine_name(c->engine)));
    json_object_set_new(root, "hash", json_string(wsp_hash_name(c->engine, c->path)));
    json_object_set_new(root, "layout", json_string(ws_layout_family(l)));
    json_object_set_new(root, "tp", json_integer(tp));
    if (pp > 1) json_object_set_new(root, "pp", json_integer(pp)); /* (pp 1: as before) */
    long adp = ws_layout_parallel(l, WS_PAR_ATTN_DP);
    if (adp > 1) json_object_set_new(root, "attn_dp", json_integer(adp));
    json_object_set_new(root, "source", json_string(source ? source : ""));
    json_object_set_new(root, "success", json_true());
    json_object_set_new(root, "message", json_string("Success."));
    EVP_MD_CTX *eng = EVP_MD_CTX_new();
    bool ok = root && ranks && holds && eng && EVP_DigestInit_ex(eng, EVP_sha256(), NULL) == 1;
    for (int r = 0; ok && r < nranks; r++) {
        json_t *sums = json_object(), *hold = json_object();
        for (size_t k = 0; k < njobs; k++) {
            const job *j = &c->jobs[k];
            const ws_local_desc *ld = ws_layout_local(l, j->local);
            if (ld->rank != r) continue;
            if (vllm) {
                char key[600];
                snprintf(key, sizeof key, "%d:%s", r, ld->name);
                json_object_set_new(vllm, key, json_string(j->hex));
            }
            json_object_set_new(sums, ld->name, json_string(j->hex));
            json_object_set_new(hold, ld->name, holds_json(c, j));
        }
        char pg[65];
        ok = wsp_per_gpu_checksum(sums, pg) && EVP_DigestUpdate(eng, pg, 64) == 1;
        json_t *info = json_array();
        if (info) json_array_append_new(info, wsp_parallelism_info(l, r, true));
        json_t *o = json_object();
        json_object_set_new(o, "checksums", sums);
        json_object_set_new(o, "per_gpu_checksum", json_string(pg));
        json_object_set_new(o, "parallelism_info", info);
        ok = ok && info && json_array_append_new(ranks, o) == 0 && json_array_append_new(holds, hold) == 0;
    }
    uint8_t md[32];
    unsigned len = 0;
    char hex[65];
    ok = ok && EVP_DigestFinal_ex(eng, md, &len) == 1 && len == 32;
    EVP_MD_CTX_free(eng);
    if (ok) ws_sha256_hex(md, hex);
    if (ok && c->engine == WS_ENGINE_SGLANG) {
        json_object_set_new(root, "ranks", ranks);
        json_object_set_new(root, "per_engine_checksum", json_string(hex));
    } else {
        json_decref(ranks);
        if (ok) json_object_set_new(root, "checksums", vllm);
        vllm = NULL;
    }
    json_decref(vllm);
    if (ok) json_object_set_new(root, "holds", holds);
    else json_decref(holds);
    if (!ok) {
        json_decref(root);
        return wsi_fail(err, WS_ERR_NOMEM, NULL, NULL, -1, "out of memory");
    }
    *out = root;
    return WS_OK;
}

static ws_err expect_create(const ws_layout *l, const ws_ckpt *ck, const ws_tensor *tensors,
                            size_t n, ws_engine engine, ws_sglang_path path, const char *source,
                            int threads, ws_progress_fn progress, void *progress_user,
                            wsp_local_hashes_fn hashes, void *arg, ws_expect **out,
                            ws_error *err) {
    if (!out) return wsi_fail(err, WS_ERR_ARG, NULL, NULL, -1, "NULL argument");
    *out = NULL;
    if (!l || (!tensors && n)) return wsi_fail(err, WS_ERR_ARG, NULL, NULL, -1, "NULL argument");
    if (!ws_engine_name(engine)) return wsi_fail(err, WS_ERR_ARG, NULL, NULL, -1, "invalid engine");
    if (path != WS_SGLANG_CUDA && path != WS_SGLANG_CPU)
        return wsi_fail(err, WS_ERR_ARG, NULL, NULL, -1, "invalid SGLang hash path");
    size_t nh = ws_layout_hf_count(l), nl = ws_layout_local_count(l), np = ws_layout_piece_count(l);
    ctx c = {.l = l, .ck = ck, .engine = engine, .path = path, .progress = progress,
             .progress_user = progress_user};
    const ws_tensor **sorted = malloc((n + 1) * sizeof *sorted);
    c.hf = calloc(nh + 1, sizeof *c.hf);
    c.jobs = calloc(nl + 1, sizeof *c.jobs);
    c.order = malloc((nl + 1) * sizeof *c.order);
    size_t *count = calloc(nl + 1, sizeof *count), *start = calloc(nl + 2, sizeof *start);
    size_t *by_local = malloc((np + 1) * sizeof *by_local);
    ws_err rc = sorted && c.hf && c.jobs && c.order && count && start && by_local
                    ? WS_OK
                    : wsi_fail(err, WS_ERR_NOMEM, NULL, NULL, -1, "out of memory");
    /* the trainer's tensors by name */
    for (size_t i = 0; rc == WS_OK && i < n; i++) {
        if (!tensors[i].name || (!tensors[i].data && tensors[i].nbytes) || !ws_dtype_size(tensors[i].dtype))
            rc = wsi_fail(err, WS_ERR_ARG, NULL, tensors[i].name, -1, "a tensor without name, data or dtype");
        else if (tensors[i].nbytes != tensors[i].numel * ws_dtype_size(tensors[i].dtype) ||
                 tensors[i].numel != numel_of(tensors[i].ndim, tensors[i].shape))
            rc = wsi_fail(err, WS_ERR_SHAPE, NULL, tensors[i].name, -1,
                          "its byte count, element count and shape disagree");
        sorted[i] = &tensors[i];
    }
    if (rc == WS_OK && n) qsort(sorted, n, sizeof *sorted, cmp_tensor_name);
    for (size_t i = 1; rc == WS_OK && i < n; i++)
        if (strcmp(sorted[i - 1]->name, sorted[i]->name) == 0)
            rc = wsi_fail(err, WS_ERR_ARG, NULL, sorted[i]->name, -1, "given twice");
    for (size_t h = 0; rc == WS_OK && h < nh; h++) {
        const ws_hf_desc *d = ws_layout_hf(l, h);
        if (d->tied_to) continue;
        ws_tensor key = {.name = d->name};
        const ws_tensor *kp = &key, **f = n ? bsearch(&kp, sorted, n, sizeof *sorted, cmp_tensor_name) : NULL;
        if (!f) {
            rc = wsi_fail(err, WS_ERR_NOTFOUND, source, d->name, -1,
                          "the layout needs this tensor and the trainer's tensors lack it");
            break;
        }
        bool same = (*f)->ndim == d->ndim;
        for (int i = 0; same && i < d->ndim; i++) same = (*f)->shape[i] == d->shape[i];
        char hs[128], ts[128];
        wsi_shape_str(d->ndim, d->shape, hs, sizeof hs);
        wsi_shape_str((*f)->ndim, (*f)->shape, ts, sizeof ts);
        if (!same)
            rc = wsi_fail(err, WS_ERR_SHAPE, source, d->name, -1, "shape %s, but the config gives %s", ts, hs);
        c.hf[h] = *f;
    }
    /* pieces grouped by local tensor (counting sort, layout order kept) */
    for (size_t i = 0; rc == WS_OK && i < np; i++) count[ws_layout_piece(l, i)->local]++;
    for (size_t i = 0; rc == WS_OK && i < nl; i++) start[i + 1] = start[i] + count[i];
    for (size_t i = 0; rc == WS_OK && i < nl; i++) count[i] = start[i];
    for (size_t i = 0; rc == WS_OK && i < np; i++) by_local[count[ws_layout_piece(l, i)->local]++] = i;
    for (size_t i = 0; rc == WS_OK && i < nl; i++) {
        const ws_local_desc *ld = ws_layout_local(l, i);
        job *j = &c.jobs[i];
        j->local = i;
        j->pieces = by_local + start[i];
        j->npieces = start[i + 1] - start[i];
        j->numel = numel_of(ld->ndim, ld->shape);
        wsi_view(ld->ndim, ld->shape, &j->rows, &j->cols); /* as the pieces see it (N-D: [*, last]) */
        if (!j->npieces) {
            rc = wsi_fail(err, WS_ERR_LAYOUT, NULL, ld->name, -1, "the layout puts nothing in it");
            break;
        }
        const ws_piece *p0 = ws_layout_piece(l, j->pieces[0]);
        if (!c.hf[p0->hf]) {
            rc = wsi_fail(err, WS_ERR_LAYOUT, NULL, ld->name, -1, "a piece of a tied tensor");
            break;
        }
        j->dtype = c.hf[p0->hf]->dtype;
        c.order[i] = i;
    }
    /* every piece inside its tensors, before anything reads them (here or where they lie) */
    for (size_t i = 0; rc == WS_OK && i < nl; i++)
        for (size_t k = 0; rc == WS_OK && k < c.jobs[i].npieces; k++)
            rc = check_piece(&c, &c.jobs[i], ws_layout_piece(l, c.jobs[i].pieces[k]), err);
    char (*given)[65] = NULL;
    if (rc == WS_OK && hashes) {
        given = calloc(nl + 1, sizeof *given);
        rc = given ? hashes(arg, l, c.hf, given, err)
                   : wsi_fail(err, WS_ERR_NOMEM, NULL, NULL, -1, "out of memory");
        c.given = (const char (*)[65])given;
    }
    if (rc == WS_OK) {
        sized *sz = malloc((nl + 1) * sizeof *sz); /* largest first: the last to start is small */
        if (sz) {
            for (size_t i = 0; i < nl; i++) sz[i] = (sized){c.jobs[i].numel, i};
            qsort(sz, nl, sizeof *sz, larger_first);
            for (size_t i = 0; i < nl; i++) c.order[i] = sz[i].i;
            free(sz);
        }
        for (size_t i = 0; i < nl; i++) c.total += c.jobs[i].numel * ws_dtype_size(c.jobs[i].dtype);
        pthread_mutex_init(&c.lock, NULL);
        if (progress) progress(progress_user, 0, c.total);
        wsi_parallel_for(nl, threads, run_job, &c);
        pthread_mutex_destroy(&c.lock);
        for (size_t i = 0; rc == WS_OK && i < nl; i++)
            if (c.jobs[i].rc != WS_OK) {
                rc = c.jobs[i].rc;
                if (err) *err = c.jobs[i].err;
            }
    }
    json_t *root = NULL;
    if (rc == WS_OK) rc = build_json(&c, nl, source, &root, err);
    if (rc == WS_OK) rc = wsp_expect_wrap(root, out, err);
    free(given);
    free(sorted);
    free(c.hf);
    free(c.jobs);
    free(c.order);
    free(count);
    free(start);
    free(by_local);
    return rc;
}

ws_err wsp_expect_create_with(const ws_layout *l, const ws_tensor *tensors, size_t n,
                              ws_engine engine, ws_sglang_path path, const char *source,
                              int threads, wsp_local_hashes_fn hashes, void *arg,
                              ws_expect **out, ws_error *err) {
    return expect_create(l, NULL, tensors, n, engine, path, source, threads, NULL, NULL, hashes, arg,
                         out, err);
}

ws_err ws_expect_create(const ws_layout *l, const ws_tensor *tensors, size_t n, ws_engine engine,
                        ws_sglang_path path, const char *source, int threads, ws_expect **out,
                        ws_error *err) {
    return expect_create(l, NULL, tensors, n, engine, path, source, threads, NULL, NULL, NULL, NULL, out,
                         err);
}

ws_err ws_expect_checkpoint(const ws_layout *l, const ws_ckpt *ck, ws_engine engine,
                            ws_sglang_path path, const char *source, int threads,
                            ws_expect **out, ws_error *err) {
    return ws_expect_checkpoint_progress(l, ck, engine, path, source, threads, NULL, NULL, out,
                                         err);
}

ws_err ws_expect_checkpoint_progress(const ws_layout *l, const ws_ckpt *ck, ws_engine engine,
                                     ws_sglang_path path, const char *source, int threads,
                                     ws_progress_fn progress, void *progress_user,
                                     ws_expect **out, ws_error *err) {
    if (!out) return wsi_fail(err, WS_ERR_ARG, NULL, NULL, -1, "NULL argument");
    *out = NULL;
    if (!ck) return wsi_fail(err, WS_ERR_ARG, NULL, NULL, -1, "NULL argument");
    size_t n = ws_ckpt_count(ck);
    ws_tensor *ts = malloc((n + 1) * sizeof *ts);
    if (!ts) return wsi_fail(err, WS_ERR_NOMEM, NULL, NULL, -1, "out of memory");
    for (size_t i = 0; i < n; i++) ts[i] = *ws_ckpt_tensor(ck, i);
    ws_err rc = expect_create(l, ck, ts, n, engine, path, source, threads, progress, progress_user,
                              NULL, NULL, out, err);
    free(ts);
    return rc;
}
