/*
 * The SHA-256 answers (vLLM's, SGLang's CPU path) predicted from "device" views: each local
 * tensor's image described as rectangles of the HF tensors (expect_image.c) and streamed by the
 * device backend's SHA-256 entry (here the host-run fake backend, which reads the same
 * descriptors the CUDA library gets) must give the expectation ws_expect_create writes from
 * host memory, byte for byte: dense, fused qkv / gate_up, padded vocab, tied embeddings, MoE,
 * over every family and tp 1, 2, 4. The rectangles alone, hashed here on the host, must give
 * each local tensor's answer too, and a changed HF element must change the answer of exactly
 * the local tensors whose image holds it.
 */
#include "check.h"
#include "device_loader.h"
#include "device_views.h"
#include "expect.h"
#include "layout_internal.h"

#include <openssl/evp.h>
#include <stdlib.h>
#include <string.h>

static uint64_t rng = 0x9e3779b97f4a7c15ull;
static uint64_t rnd(void) {
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

typedef struct model {
    const char *name, *json;
} model;

static const model models[] = {
    {"dense-padded-vocab",
     "{\"model_type\": \"qwen2\", \"hidden_size\": 64, \"intermediate_size\": 96,"
     " \"num_hidden_layers\": 2, \"num_attention_heads\": 4, \"num_key_value_heads\": 2,"
     " \"vocab_size\": 301, \"tie_word_embeddings\": false}"},
    {"dense-tied",
     "{\"model_type\": \"qwen2\", \"hidden_size\": 64, \"intermediate_size\": 80,"
     " \"num_hidden_layers\": 1, \"num_attention_heads\": 8, \"num_key_value_heads\": 1,"
     " \"vocab_size\": 250, \"tie_word_embeddings\": true}"},
    {"qwen3-moe",
     "{\"model_type\": \"qwen3_moe\", \"hidden_size\": 64, \"intermediate_size\": 96,"
     " \"num_hidden_layers\": 2, \"num_attention_heads\": 8, \"num_key_value_heads\": 4,"
     " \"head_dim\": 8, \"vocab_size\": 1000, \"tie_word_embeddings\": false,"
     " \"moe_intermediate_size\": 32, \"num_experts\": 8}"},
    {"qwen2-moe-shared",
     "{\"model_type\": \"qwen2_moe\", \"hidden_size\": 64, \"intermediate_size\": 96,"
     " \"num_hidden_layers\": 2, \"num_attention_heads\": 8, \"num_key_value_heads\": 4,"
     " \"head_dim\": 8, \"vocab_size\": 1000, \"tie_word_embeddings\": true,"
     " \"moe_intermediate_size\": 32, \"num_experts\": 4,"
     " \"shared_expert_intermediate_size\": 64}"},
};

static const char *const families[] = {"sglang", "vllm", "hf", "megatron"};

/* The host-side SHA-256 of rectangles (NULL ptr: zeros), as a backend streams them. */
static void host_rects_sha(const wsi_dev_rect *r, size_t n, uint8_t md[32]) {
    EVP_MD_CTX *c = EVP_MD_CTX_new();
    CHECK(c && EVP_DigestInit_ex(c, EVP_sha256(), NULL) == 1);
    static const uint8_t zero[8] = {0};
    for (size_t k = 0; k < n; k++) {
        size_t es = ws_dtype_size(r[k].dtype);
        for (uint64_t row = 0; row < r[k].rows; row++)
            for (uint64_t col = 0; col < r[k].cols; col++) {
                const uint8_t *p = r[k].ptr ? (const uint8_t *)r[k].ptr +
                                                  (row * r[k].row_stride + col * r[k].col_stride) * es
                                            : zero;
                EVP_DigestUpdate(c, p, es);
            }
    }
    unsigned len = 0;
    CHECK(EVP_DigestFinal_ex(c, md, &len) == 1 && len == 32);
    EVP_MD_CTX_free(c);
}

static char *expect_json(const ws_layout *l, const ws_tensor *ts, const ws_view *hv, size_t nh,
                         ws_engine e, ws_sglang_path path, bool device) {
    ws_expect *x = NULL;
    ws_error err;
    ws_err rc = device ? ws_expect_create_views(l, hv, nh, e, path, "t", NULL, 2, &x, &err)
                       : ws_expect_create(l, ts, nh, e, path, "t", 2, &x, &err);
    CHECK(rc == WS_OK);
    if (rc) {
        fprintf(stderr, "%s: %s: %s\n", device ? "device" : "host", err.tensor, err.what);
        return NULL;
    }
    char *j = NULL;
    CHECK_OK(ws_expect_to_json(x, &j, NULL));
    ws_expect_free(x);
    return j;
}

/* The answers of every rank's local tensors, name -> hex, from the expectation's JSON. */
static json_t *answers(const char *text, ws_engine e) {
    json_t *root = json_loads(text, 0, NULL);
    json_t *out = json_object();
    if (e == WS_ENGINE_VLLM) {
        json_object_update(out, json_object_get(root, "checksums"));
    } else {
        size_t i;
        json_t *r;
        json_array_foreach(json_object_get(root, "ranks"), i, r) {
            const char *k;
            json_t *v;
            json_object_foreach(json_object_get(r, "checksums"), k, v) {
                char key[600];
                snprintf(key, sizeof key, "%zu:%s", i, k);
                json_object_set(out, key, v);
            }
        }
    }
    json_decref(root);
    return out;
}

static size_t differing(json_t *a, json_t *b) {
    size_t n = 0;
    const char *k;
    json_t *v;
    json_object_foreach(a, k, v) n += !json_equal(v, json_object_get(b, k));
    return n;
}

static void one_layout(const model *m, const char *family, int tp, ws_dtype dt) {
    ws_model_config *cfg = NULL;
    CHECK_OK(ws_model_config_parse(m->json, strlen(m->json), m->name, &cfg, NULL));
    ws_layout *l = NULL;
    ws_err lrc = ws_layout_create(family, cfg, tp, &l, NULL);
    ws_model_config_free(cfg);
    if (lrc != WS_OK) return; /* the family cannot lay this config out: skip */
    size_t nh = ws_layout_hf_count(l), nl = ws_layout_local_count(l);
    ws_view *hv = calloc(nh, sizeof *hv);
    ws_tensor *ts = calloc(nh, sizeof *ts);
    uint8_t **hb = calloc(nh, sizeof *hb);
    size_t es = ws_dtype_size(dt), nt = 0;
    for (size_t i = 0; i < nh; i++) {
        const ws_hf_desc *d = ws_layout_hf(l, i);
        if (d->tied_to) continue; /* the trainer's tensors: tied ones are not given */
        uint64_t n = 1;
        for (int k = 0; k < d->ndim; k++) n *= d->shape[k];
        hb[nt] = malloc(n * es + 1);
        for (uint64_t k = 0; k < n * es; k++) hb[nt][k] = (uint8_t)rnd();
        hv[nt] = (ws_view){d->name, dt, d->ndim, d->shape, NULL, hb[nt], 0};
        ts[nt] = (ws_tensor){.name = d->name, .dtype = dt, .ndim = d->ndim, .numel = n,
                             .nbytes = n * es, .data = hb[nt]};
        for (int k = 0; k < d->ndim; k++) ts[nt].shape[k] = d->shape[k];
        nt++;
    }
    const struct {
        ws_engine e;
        ws_sglang_path p;
    } kinds[] = {{WS_ENGINE_VLLM, WS_SGLANG_CUDA}, {WS_ENGINE_SGLANG, WS_SGLANG_CPU}};
    for (size_t k = 0; k < 2; k++) {
        char *jh = expect_json(l, ts, hv, nt, kinds[k].e, kinds[k].p, false);
        char *jd = expect_json(l, ts, hv, nt, kinds[k].e, kinds[k].p, true);
        CHECK(jh && jd && strcmp(jh, jd) == 0);
        if (jh && jd && strcmp(jh, jd) != 0)
            fprintf(stderr, "%s %s tp %d engine %d: device and host expectations differ\n",
                    m->name, family, tp, (int)kinds[k].e);
        /* a changed element changes the answers of the local tensors whose image holds it:
         * for a piece of the first non-tied HF tensor, the local tensor it lies in */
        json_t *before = jd ? answers(jd, kinds[k].e) : json_object();
        size_t h = 0;
        const ws_piece *p = NULL;
        for (size_t i = 0; i < ws_layout_piece_count(l) && !p; i++) {
            const ws_piece *q = ws_layout_piece(l, i);
            if (q->rows && q->cols && strcmp(ws_layout_hf(l, q->hf)->name, ts[h].name) == 0) p = q;
        }
        CHECK(p != NULL);
        if (p) {
            size_t off = ((p->t_row0 + p->rows - 1) * p->t_cols + p->t_col0 + p->cols - 1) * es;
            hb[h][off] ^= 0x21;
            char *jx = expect_json(l, ts, hv, nt, kinds[k].e, kinds[k].p, true);
            json_t *after = jx ? answers(jx, kinds[k].e) : json_object();
            size_t copies = 0; /* local tensors holding that element (replicas count) */
            for (size_t i = 0; i < ws_layout_piece_count(l); i++) {
                const ws_piece *q = ws_layout_piece(l, i);
                uint64_t r = p->t_row0 + p->rows - 1, c = p->t_col0 + p->cols - 1;
                copies += q->hf == p->hf && q->t_row0 <= r && r < q->t_row0 + q->rows &&
                          q->t_col0 <= c && c < q->t_col0 + q->cols;
            }
            CHECK(copies > 0 && differing(before, after) == copies);
            json_decref(after);
            ws_free(jx);
            hb[h][off] ^= 0x21;
        }
        json_decref(before);
        ws_free(jh);
        ws_free(jd);
    }
    /* the rectangles alone give each local tensor's image (hashed here on the host) */
    size_t np = ws_layout_piece_count(l);
    size_t *mine = malloc((np + 1) * sizeof *mine);
    const ws_tensor **hfp = calloc(nh, sizeof *hfp);
    for (size_t i = 0; i < nh; i++)
        for (size_t t = 0; t < nt; t++)
            if (strcmp(ts[t].name, ws_layout_hf(l, i)->name) == 0) hfp[i] = &ts[t];
    ws_expect *x = NULL;
    CHECK_OK(ws_expect_create(l, ts, nt, WS_ENGINE_VLLM, WS_SGLANG_CUDA, "t", 1, &x, NULL));
    char *text = NULL;
    CHECK_OK(ws_expect_to_json(x, &text, NULL));
    json_t *want = answers(text, WS_ENGINE_VLLM);
    for (size_t i = 0; i < nl; i++) {
        size_t k = 0;
        for (size_t q = 0; q < np; q++)
            if (ws_layout_piece(l, q)->local == i) mine[k++] = q;
        wsi_dev_rect *r = NULL;
        size_t n = 0;
        CHECK_OK(wsp_image_rects(l, i, mine, k, hfp, &r, &n, NULL));
        uint8_t md[32];
        char hex[65], key[600];
        host_rects_sha(r, n, md);
        ws_sha256_hex(md, hex);
        const ws_local_desc *ld = ws_layout_local(l, i);
        snprintf(key, sizeof key, "%d:%s", ld->rank, ld->name);
        const char *w = json_string_value(json_object_get(want, key));
        CHECK(w && strcmp(w, hex) == 0);
        free(r);
    }
    json_decref(want);
    ws_free(text);
    ws_expect_free(x);
    free(mine);
    free(hfp);
    for (size_t i = 0; i < nt; i++) free(hb[i]);
    free(hb);
    free(hv);
    free(ts);
    ws_layout_free(l);
}

/* An image no engine layout builds yet: local rows whose columns come from several pieces
 * and zeros, a piece that overwrites part of an earlier one (the later wins, as the host image
 * writes them), rows of zeros. The rectangles (one per row and segment there) against the image
 * written out by hand, on the host and through the backend's entry. */
static void test_segments(void) {
    const char *json = models[0].json;
    ws_model_config *cfg = NULL;
    CHECK_OK(ws_model_config_parse(json, strlen(json), "t", &cfg, NULL));
    ws_layout *l;
    CHECK_OK(ws_layout_create("hf", cfg, 1, &l, NULL));
    ws_model_config_free(cfg);
    long x = ws_layout_find_hf(l, "model.layers.0.mlp.down_proj.weight"); /* [64, 96] */
    long y = ws_layout_find_hf(l, "model.layers.0.mlp.up_proj.weight");   /* [96, 64] */
    CHECK(x >= 0 && y >= 0);
    uint32_t loc = 0;
    const uint64_t R = 12, C = 10;
    CHECK_OK(wsl_add_local(l, &loc, 0, 2, R, C, "synthetic"));
    struct {
        uint32_t hf;
        uint64_t rows, cols, tr, tc, lr, lc;
    } pcs[] = {
        {(uint32_t)x, 5, 4, 3, 7, 1, 0},  /* rows 1..6, cols 0..4 */
        {(uint32_t)y, 4, 3, 10, 2, 3, 6}, /* rows 3..7, cols 6..9: a zero gap at cols 4..6 */
        {(uint32_t)x, 2, 3, 40, 50, 2, 2}, /* overwrites rows 2..4, cols 2..5 of the first */
        {(uint32_t)y, 2, 10, 60, 0, 9, 0}, /* whole rows 9..11; rows 0, 7, 8, 11 stay zero */
    };
    size_t base = ws_layout_piece_count(l), np = sizeof pcs / sizeof *pcs;
    for (size_t i = 0; i < np; i++)
        CHECK_OK(wsl_add_piece(l, pcs[i].hf, loc, 0, pcs[i].rows, pcs[i].cols, pcs[i].tr,
                               pcs[i].tc, pcs[i].lr, pcs[i].lc));
    size_t nh = ws_layout_hf_count(l);
    ws_tensor *ts = calloc(nh, sizeof *ts);
    const ws_tensor **hfp = calloc(nh, sizeof *hfp);
    for (long h = 0; h < (long)nh; h++) {
        if (h != x && h != y) continue;
        const ws_hf_desc *d = ws_layout_hf(l, (size_t)h);
        ts[h] = (ws_tensor){.name = d->name, .dtype = WS_F32, .ndim = 2,
                            .numel = d->shape[0] * d->shape[1]};
        ts[h].shape[0] = d->shape[0];
        ts[h].shape[1] = d->shape[1];
        ts[h].nbytes = ts[h].numel * 4;
        float *v = malloc(ts[h].nbytes);
        for (uint64_t k = 0; k < ts[h].numel; k++) v[k] = (float)(rnd() % 100000) + 1.0f;
        ts[h].data = v;
        hfp[h] = &ts[h];
    }
    float img[12 * 10] = {0};
    for (size_t i = 0; i < np; i++) /* in layout order: a later piece overwrites */
        for (uint64_t r = 0; r < pcs[i].rows; r++)
            for (uint64_t c = 0; c < pcs[i].cols; c++)
                img[(pcs[i].lr + r) * C + pcs[i].lc + c] =
                    ((const float *)ts[pcs[i].hf].data)[(pcs[i].tr + r) * ts[pcs[i].hf].shape[1] +
                                                        pcs[i].tc + c];
    uint8_t want[32], got[32], dev[32];
    unsigned len = 0;
    EVP_Digest(img, sizeof img, want, &len, EVP_sha256(), NULL);
    size_t idx[4] = {base, base + 1, base + 2, base + 3};
    wsi_dev_rect *r = NULL;
    size_t n = 0;
    CHECK_OK(wsp_image_rects(l, loc, idx, np, hfp, &r, &n, NULL));
    CHECK(n > 6); /* rows of several segments: a rectangle per row and segment */
    size_t zeros = 0;
    for (size_t k = 0; k < n; k++) zeros += r[k].ptr == NULL;
    CHECK(zeros >= 3);
    host_rects_sha(r, n, got);
    CHECK(memcmp(got, want, 32) == 0);
    const wsi_device_backend *b = wsi_device_backend_get(NULL);
    wsi_dev_tensor t = {0, n};
    CHECK_OK(b->sha256_rects(r, n, &t, 1, WS_CANON_NATIVE, 1, &dev, NULL, NULL, NULL));
    CHECK(memcmp(dev, want, 32) == 0);
    /* the answer moves with one element of each piece, and with none of the gaps */
    for (size_t i = 0; i < np; i++) {
        float *v = (float *)ts[pcs[i].hf].data;
        uint64_t at = (pcs[i].tr + pcs[i].rows - 1) * ts[pcs[i].hf].shape[1] + pcs[i].tc;
        v[at] += 1.0f;
        host_rects_sha(r, n, got);
        v[at] -= 1.0f;
        /* piece 0's last row, first column, lies under piece 2 only for rows 2..4: row 5 here */
        CHECK(memcmp(got, want, 32) != 0);
    }
    /* an element of piece 0 that piece 2 overwrites (local (2, 2)) is in no answer */
    float *v0 = (float *)ts[x].data;
    v0[(3 + 1) * 96 + 7 + 2] += 1.0f;
    host_rects_sha(r, n, got);
    CHECK(memcmp(got, want, 32) == 0);
    v0[(3 + 1) * 96 + 7 + 2] -= 1.0f;
    free(r);
    for (size_t h = 0; h < nh; h++) free((void *)ts[h].data);
    free(ts);
    free(hfp);
    ws_layout_free(l);
}

/* What the device path refuses, named, before it reads device memory. */
static void test_refusals(void) {
    const char *json = models[0].json;
    ws_model_config *cfg = NULL;
    CHECK_OK(ws_model_config_parse(json, strlen(json), "t", &cfg, NULL));
    ws_layout *l;
    CHECK_OK(ws_layout_create("sglang", cfg, 2, &l, NULL));
    ws_model_config_free(cfg);
    size_t nh = ws_layout_hf_count(l);
    ws_view *hv = calloc(nh, sizeof *hv);
    uint8_t **hb = calloc(nh, sizeof *hb);
    for (size_t i = 0; i < nh; i++) {
        const ws_hf_desc *d = ws_layout_hf(l, i);
        uint64_t n = 1;
        for (int k = 0; k < d->ndim; k++) n *= d->shape[k];
        hb[i] = calloc(n + 1, 2);
        hv[i] = (ws_view){d->name, WS_BF16, d->ndim, d->shape, NULL, hb[i], 0};
    }
    ws_expect *x = NULL;
    ws_error err;
    /* host and device views mixed: refused, for the SHA-256 answers too */
    hv[1].device = -1;
    CHECK(ws_expect_create_views(l, hv, nh, WS_ENGINE_VLLM, WS_SGLANG_CUDA, "t", NULL, 1, &x,
                                 &err) == WS_ERR_ARG && !x);
    hv[1].device = 0;
    /* a tensor of the wrong shape is named before anything reads device memory */
    uint64_t bad[2] = {3, 3};
    const uint64_t *keep = hv[2].shape;
    int nd = hv[2].ndim;
    hv[2].shape = bad;
    hv[2].ndim = 2;
    CHECK(ws_expect_create_views(l, hv, nh, WS_ENGINE_SGLANG, WS_SGLANG_CPU, "t", NULL, 1, &x,
                                 &err) == WS_ERR_SHAPE && !x);
    CHECK(strcmp(err.tensor, ws_layout_hf(l, 2)->name) == 0);
    hv[2].shape = keep;
    hv[2].ndim = nd;
    /* a strided device view: refused (the pieces are read as HF rows) */
    int64_t st[2] = {1, (int64_t)ws_layout_hf(l, 0)->shape[0]};
    hv[0].strides = st;
    CHECK(ws_expect_create_views(l, hv, nh, WS_ENGINE_VLLM, WS_SGLANG_CUDA, "t", NULL, 1, &x,
                                 &err) == WS_ERR_ARG && !x && strstr(err.what, "C-contiguous"));
    hv[0].strides = NULL;
    CHECK_OK(ws_expect_create_views(l, hv, nh, WS_ENGINE_VLLM, WS_SGLANG_CUDA, "t", NULL, 1, &x,
                                    &err));
    ws_expect_free(x);
    for (size_t i = 0; i < nh; i++) free(hb[i]);
    free(hb);
    free(hv);
    ws_layout_free(l);
}

int main(void) {
    setenv(WSI_DEVICE_LIB_ENV, WS_BINARY_DIR "/fake_device_backend.so", 1);
    const wsi_device_backend *b = wsi_device_backend_get(NULL);
    CHECK(b && strcmp(b->name, "fake") == 0);
    const int tps[] = {1, 2, 4};
    for (size_t m = 0; m < sizeof models / sizeof *models; m++)
        for (size_t f = 0; f < sizeof families / sizeof *families; f++)
            for (size_t t = 0; t < 3; t++)
                one_layout(&models[m], families[f], tps[t], m % 2 ? WS_F32 : WS_BF16);
    test_segments();
    test_refusals();
    return check_report("test_expect_views");
}
