/*
 * Tensors in place (ws_view) against the contiguous-buffer path: every dtype, contiguous,
 * transposed, stepped, permuted 3-D, size-1 dims, empty, odd element offsets, NaN/Inf payloads;
 * host views read in place and "device" views sent through the host-run fake backend (the
 * descriptors and dispatch the CUDA library receives, tested without a GPU). SGLang's hash of
 * views, and a rank's SGLang answers predicted from HF tensors, against the hash of the
 * materialised local tensors. Planted changes must change the answers.
 */
#include "check.h"
#include "device_loader.h"
#include "device_views.h"

#include <stdlib.h>
#include <string.h>

static uint64_t rng = 0x1234567887654321ull;
static uint64_t rnd(void) {
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

static const ws_dtype all_dtypes[] = {WS_BOOL, WS_U8, WS_I8, WS_I16, WS_U16, WS_I32, WS_U32,
                                      WS_I64, WS_U64, WS_F16, WS_BF16, WS_F32, WS_F64,
                                      WS_F8_E4M3, WS_F8_E5M2};

/* random bytes; for floats every 37th element an all-ones exponent (NaN/Inf payloads) */
static void fill(ws_dtype t, uint8_t *p, size_t n) {
    size_t es = ws_dtype_size(t);
    for (size_t i = 0; i < n * es; i++) p[i] = (uint8_t)rnd();
    if (t == WS_BOOL)
        for (size_t i = 0; i < n; i++) p[i] &= 1;
    if (!ws_dtype_is_float(t)) return;
    for (size_t i = 0; i < n; i += 37) {
        uint8_t *e = p + i * es;
        switch (t) {
        case WS_F32: e[3] |= 0x7f; e[2] |= 0x80; if (i % 74 == 0) { e[0] = e[1] = 0; e[2] = 0x80; } break;
        case WS_F64: e[7] |= 0x7f; e[6] |= 0xf0; break;
        case WS_F16: e[1] |= 0x7c; break;
        case WS_BF16: e[1] |= 0x7f; e[0] |= 0x80; break;
        case WS_F8_E4M3: e[0] |= 0x7f; break;
        case WS_F8_E5M2: e[0] |= 0x7c; break;
        default: break;
        }
    }
}

/* C-order copy of a view */
static uint8_t *materialise(const ws_view *v, uint64_t numel) {
    size_t es = ws_dtype_size(v->dtype);
    uint8_t *out = malloc(numel * es + 1);
    uint64_t idx[WS_MAX_DIMS] = {0};
    for (uint64_t i = 0; i < numel; i++) {
        int64_t off = 0;
        for (int d = 0; d < v->ndim; d++) off += (int64_t)idx[d] * v->strides[d];
        memcpy(out + i * es, (const uint8_t *)v->data + off * (int64_t)es, es);
        for (int d = v->ndim - 1; d >= 0; d--) {
            if (++idx[d] < v->shape[d]) break;
            idx[d] = 0;
        }
    }
    return out;
}

typedef struct shape_case {
    int ndim;
    uint64_t shape[4];
    int64_t strides[4]; /* over a base buffer */
    uint64_t base_elems;
    uint64_t offset; /* elements */
} shape_case;

static const shape_case cases[] = {
    {1, {1000}, {1}, 1003, 3},                       /* contiguous, odd offset */
    {2, {37, 41}, {41, 1}, 37 * 41, 0},              /* contiguous 2-D */
    {2, {41, 37}, {1, 41}, 37 * 41, 0},              /* transposed */
    {2, {13, 50}, {103, 2}, 13 * 103 + 5, 1},        /* stepped columns, padded rows */
    {3, {5, 7, 9}, {1, 45, 5}, 5 * 7 * 9, 0},        /* permuted 3-D */
    {4, {3, 1, 33, 1}, {70, 999, 2, 5}, 3 * 70, 2},  /* size-1 dims, stepped */
    {2, {0, 5}, {5, 1}, 1, 0},                       /* empty */
    {0, {0}, {0}, 1, 0},                             /* scalar */
    {2, {3, 2500}, {2600, 1}, 3 * 2600, 7},          /* rows across block boundaries */
};

static void test_views(void) {
    ws_fastkey *key;
    CHECK_OK(ws_fastkey_create("views", 5, &key, NULL));
    for (size_t di = 0; di < sizeof all_dtypes / sizeof *all_dtypes; di++)
        for (size_t ci = 0; ci < sizeof cases / sizeof *cases; ci++)
            for (int canon = 0; canon < 2; canon++) {
                ws_dtype t = all_dtypes[di];
                const shape_case *sc = &cases[ci];
                size_t es = ws_dtype_size(t);
                uint8_t *base = malloc(sc->base_elems * es + 8);
                fill(t, base, sc->base_elems);
                ws_view v = {"case", t, sc->ndim, sc->shape, sc->strides, base + sc->offset * es, -1};
                uint64_t numel;
                CHECK_OK(wsi_view_numel(&v, &numel, NULL));
                uint8_t *flat = materialise(&v, numel);
                ws_digest ref, got;
                ws_value_stats rst = {0, 0}, gst;
                ws_error err;
                CHECK_OK(ws_digest_buffer(t, (ws_canon)canon, flat, sc->ndim, sc->shape,
                                          WS_ALGO_SHA256 | WS_ALGO_FAST, key, &ref, &rst, &err));
                for (int dev = -1; dev <= 0; dev++) {
                    v.device = dev;
                    memset(&got, 0xab, sizeof got);
                    ws_err rc = ws_digest_views(&v, 1, (ws_canon)canon, WS_ALGO_SHA256 | WS_ALGO_FAST,
                                                key, NULL, 1, &got, &gst, &err);
                    CHECK(rc == WS_OK);
                    if (rc) fprintf(stderr, "%s\n", err.what);
                    bool same = memcmp(got.sha256, ref.sha256, 32) == 0 &&
                                memcmp(&got.fast, &ref.fast, sizeof ref.fast) == 0 &&
                                gst.nan == rst.nan && gst.inf == rst.inf;
                    CHECK(same);
                    if (!same)
                        fprintf(stderr, "  dtype %s case %zu canon %d device %d\n",
                                ws_dtype_name(t), ci, canon, dev);
                    uint64_t hs, want;
                    CHECK_OK(ws_sglang_hash(WS_SGLANG_CUDA, flat, numel * es, &want, NULL));
                    CHECK_OK(ws_sglang_hash_views(&v, 1, NULL, &hs, NULL));
                    CHECK(hs == want);
                }
                /* one changed element changes both digests (not for empty views) */
                if (numel && canon == 1) {
                    uint64_t e = rnd() % numel, idx[4], rest = e;
                    int64_t off = 0;
                    for (int d = sc->ndim - 1; d >= 0; d--) {
                        idx[d] = rest % sc->shape[d];
                        rest /= sc->shape[d];
                        off += (int64_t)idx[d] * sc->strides[d];
                    }
                    ((uint8_t *)v.data)[off * (int64_t)es] ^= 1;
                    for (int dev = -1; dev <= 0; dev++) {
                        v.device = dev;
                        CHECK_OK(ws_digest_views(&v, 1, WS_CANON_NATIVE,
                                                 WS_ALGO_SHA256 | WS_ALGO_FAST, key, NULL, 1,
                                                 &got, NULL, NULL));
                        CHECK(memcmp(got.sha256, ref.sha256, 32) != 0);
                        CHECK(memcmp(&got.fast, &ref.fast, sizeof ref.fast) != 0);
                    }
                }
                free(flat);
                free(base);
            }
    ws_fastkey_free(key);
}

/* A batch of views of mixed devices answers what each alone does. */
static void test_batch(void) {
    ws_fastkey *key;
    CHECK_OK(ws_fastkey_create(NULL, 0, &key, NULL));
    enum { N = 12 };
    ws_view v[N];
    uint8_t *bufs[N];
    uint64_t shapes[N][2];
    int64_t strides[N][2];
    for (int i = 0; i < N; i++) {
        ws_dtype t = all_dtypes[i % 15];
        shapes[i][0] = 1 + rnd() % 9;
        shapes[i][1] = 1 + rnd() % 3000;
        strides[i][0] = (int64_t)shapes[i][1] + (i % 3);
        strides[i][1] = 1;
        size_t n = shapes[i][0] * (uint64_t)strides[i][0];
        bufs[i] = malloc(n * ws_dtype_size(t));
        fill(t, bufs[i], n);
        v[i] = (ws_view){NULL, t, 2, shapes[i], strides[i], bufs[i], i % 2 ? 0 : -1};
    }
    ws_digest all[N], one;
    uint64_t hall[N], hone;
    CHECK_OK(ws_digest_views(v, N, WS_CANON_BF16, WS_ALGO_SHA256 | WS_ALGO_FAST, key, NULL, 0,
                             all, NULL, NULL));
    CHECK_OK(ws_sglang_hash_views(v, N, NULL, hall, NULL));
    for (int i = 0; i < N; i++) {
        CHECK_OK(ws_digest_views(&v[i], 1, WS_CANON_BF16, WS_ALGO_SHA256 | WS_ALGO_FAST, key,
                                 NULL, 1, &one, NULL, NULL));
        CHECK(memcmp(&one, &all[i], sizeof one) == 0);
        CHECK_OK(ws_sglang_hash_views(&v[i], 1, NULL, &hone, NULL));
        CHECK(hone == hall[i]);
        free(bufs[i]);
    }
    ws_fastkey_free(key);
}

static void test_refusals(void) {
    uint64_t shape[2] = {4, 4};
    int64_t neg[2] = {-4, 1};
    uint16_t data[16] = {0};
    ws_view v = {"neg", WS_BF16, 2, shape, neg, data + 12, -1};
    ws_digest d;
    ws_error err;
    ws_fastkey *key;
    CHECK_OK(ws_fastkey_create(NULL, 0, &key, NULL));
    CHECK(ws_digest_views(&v, 1, WS_CANON_BF16, WS_ALGO_FAST, key, NULL, 1, &d, NULL, &err) ==
          WS_ERR_ARG);
    CHECK(strstr(err.what, "negative stride") && strcmp(err.tensor, "neg") == 0);
    v.strides = NULL;
    v.ndim = 9;
    CHECK(ws_digest_views(&v, 1, WS_CANON_BF16, WS_ALGO_FAST, key, NULL, 1, &d, NULL, &err) ==
          WS_ERR_ARG);
    v.ndim = 2;
    CHECK(ws_digest_views(&v, 1, WS_CANON_BF16, WS_ALGO_FAST, NULL, NULL, 1, &d, NULL, &err) ==
          WS_ERR_ARG);
    v.dtype = WS_DTYPE__COUNT;
    CHECK(ws_digest_views(&v, 1, WS_CANON_BF16, WS_ALGO_FAST, key, NULL, 1, &d, NULL, &err) ==
          WS_ERR_DTYPE);
    ws_fastkey_free(key);
}

/* The rank's answers from HF tensors equal the hash of the local tensors built by hand. */
static void test_expect(void) {
    const char *json =
        "{\"model_type\": \"qwen2\", \"hidden_size\": 64, \"intermediate_size\": 96,"
        " \"num_hidden_layers\": 2, \"num_attention_heads\": 4, \"num_key_value_heads\": 2,"
        " \"vocab_size\": 301, \"tie_word_embeddings\": false}";
    ws_model_config *cfg = NULL;
    CHECK_OK(ws_model_config_parse(json, strlen(json), "test", &cfg, NULL));
    for (int src_f32 = 0; src_f32 < 2; src_f32++) {
        ws_layout *l;
        CHECK_OK(ws_layout_create("sglang", cfg, 2, &l, NULL));
        size_t nh = ws_layout_hf_count(l), np = ws_layout_piece_count(l);
        ws_view *hv = calloc(nh, sizeof *hv);
        uint8_t **hb = calloc(nh, sizeof *hb);
        ws_dtype ht = src_f32 ? WS_F32 : WS_BF16;
        size_t hs = ws_dtype_size(ht);
        for (size_t i = 0; i < nh; i++) {
            const ws_hf_desc *d = ws_layout_hf(l, i);
            uint64_t n = 1;
            for (int k = 0; k < d->ndim; k++) n *= d->shape[k];
            hb[i] = malloc(n * hs);
            fill(WS_U8, hb[i], n * hs);
            if (src_f32) /* finite f32 values */
                for (uint64_t k = 0; k < n; k++) ((float *)hb[i])[k] = (float)(rnd() % 20001) / 7.0f - 1400.0f;
            hv[i] = (ws_view){d->name, ht, d->ndim, d->shape, NULL, hb[i], -1};
        }
        for (int rank = 0; rank < 2; rank++) {
            /* by hand: each local tensor's bytes from its pieces, zero elsewhere */
            size_t nl = ws_layout_local_count(l), nt = 0;
            uint64_t *want = calloc(nl, sizeof *want), *got = calloc(nl, sizeof *got);
            for (size_t i = 0; i < nl; i++) {
                const ws_local_desc *d = ws_layout_local(l, i);
                if (d->rank != rank) continue;
                uint64_t n = 1;
                for (int k = 0; k < d->ndim; k++) n *= d->shape[k];
                uint16_t *img = calloc(n + 1, 2);
                for (size_t p = 0; p < np; p++) {
                    const ws_piece *pc = ws_layout_piece(l, p);
                    if (pc->local != i) continue;
                    for (uint64_t r = 0; r < pc->rows; r++)
                        for (uint64_t c = 0; c < pc->cols; c++) {
                            uint64_t s = (pc->t_row0 + r) * pc->t_cols + pc->t_col0 + c;
                            uint64_t t = (pc->l_row0 + r) * pc->l_cols + pc->l_col0 + c;
                            if (src_f32) img[t] = ws_f32_to_bf16(((float *)hb[pc->hf])[s]);
                            else memcpy(&img[t], hb[pc->hf] + 2 * s, 2);
                        }
                }
                CHECK_OK(ws_sglang_hash(WS_SGLANG_CUDA, img, n * 2, &want[nt++], NULL));
                free(img);
            }
            for (int dev = -1; dev <= 0; dev++) {
                for (size_t i = 0; i < nh; i++) hv[i].device = dev;
                ws_error err;
                ws_err rc = ws_sglang_expect_views(l, rank, hv, nh, WS_BF16, NULL, got, nt, &err);
                CHECK(rc == WS_OK);
                if (rc) fprintf(stderr, "%s: %s\n", err.tensor, err.what);
                CHECK(memcmp(got, want, nt * sizeof *got) == 0);
            }
            /* a changed HF byte changes some answer of some rank */
            if (rank == 0) {
                hb[0][hs - 1] ^= 0x40; /* the top byte: survives the bf16 cast */
                CHECK_OK(ws_sglang_expect_views(l, rank, hv, nh, WS_BF16, NULL, got, nt, NULL));
                bool differs = memcmp(got, want, nt * sizeof *got) != 0;
                hb[0][hs - 1] ^= 0x40; /* the top byte: survives the bf16 cast */
                uint64_t tmp[256];
                CHECK_OK(ws_sglang_expect_views(l, 1, hv, nh, WS_BF16, NULL, tmp, nt, NULL));
                (void)tmp;
                CHECK(differs || nt == 0);
            }
            CHECK(ws_sglang_expect_views(l, rank, hv, nh, WS_BF16, NULL, got, nt + 1, NULL) ==
                  WS_ERR_ARG);
            free(want);
            free(got);
        }
        /* the whole expectation from "device" views (ws_expect_create_views) is the one
         * ws_expect_create writes from the same tensors in host memory */
        ws_tensor *ts = calloc(nh, sizeof *ts);
        for (size_t i = 0; i < nh; i++) {
            const ws_hf_desc *d = ws_layout_hf(l, i);
            ts[i] = (ws_tensor){.name = d->name, .dtype = ht, .ndim = d->ndim, .numel = 1,
                                .data = hb[i]};
            for (int k = 0; k < d->ndim; k++) ts[i].numel *= (ts[i].shape[k] = d->shape[k]);
            ts[i].nbytes = ts[i].numel * hs;
            hv[i].device = 0;
        }
        ws_expect *eh = NULL, *ed = NULL;
        char *jh = NULL, *jd = NULL;
        CHECK_OK(ws_expect_create(l, ts, nh, WS_ENGINE_SGLANG, WS_SGLANG_CUDA, "t", 1, &eh, NULL));
        CHECK_OK(ws_expect_create_views(l, hv, nh, WS_ENGINE_SGLANG, WS_SGLANG_CUDA, "t", NULL, 1,
                                        &ed, NULL));
        CHECK_OK(ws_expect_to_json(eh, &jh, NULL));
        CHECK_OK(ws_expect_to_json(ed, &jd, NULL));
        CHECK(jh && jd && strcmp(jh, jd) == 0);
        ws_free(jd);
        ws_expect_free(ed);
        ed = NULL;
        hb[1][0] ^= 0x80; /* a changed element changes the device-computed expectation */
        CHECK_OK(ws_expect_create_views(l, hv, nh, WS_ENGINE_SGLANG, WS_SGLANG_CUDA, "t", NULL, 1,
                                        &ed, NULL));
        CHECK_OK(ws_expect_to_json(ed, &jd, NULL));
        CHECK(jh && jd && strcmp(jh, jd) != 0);
        hb[1][0] ^= 0x80;
        ws_free(jd);
        ws_free(jh);
        ws_expect_free(ed);
        ws_expect_free(eh);
        ws_error err;
        /* vLLM's SHA-256 answers from "device" views: the image streamed by the backend
         * (test_expect_views.c checks every layout) */
        CHECK_OK(ws_expect_create(l, ts, nh, WS_ENGINE_VLLM, WS_SGLANG_CUDA, "t", 1, &eh, NULL));
        CHECK_OK(ws_expect_create_views(l, hv, nh, WS_ENGINE_VLLM, WS_SGLANG_CUDA, "t", NULL, 1,
                                        &ed, NULL));
        CHECK_OK(ws_expect_to_json(eh, &jh, NULL));
        CHECK_OK(ws_expect_to_json(ed, &jd, NULL));
        CHECK(jh && jd && strcmp(jh, jd) == 0);
        ws_free(jh);
        ws_free(jd);
        ws_expect_free(eh);
        ws_expect_free(ed);
        ed = NULL;
        CHECK(ws_expect_create_views(l, hv, nh - 1, WS_ENGINE_SGLANG, WS_SGLANG_CUDA, "t", NULL, 1,
                                     &ed, &err) == WS_ERR_NOTFOUND &&
              strcmp(err.tensor, ws_layout_hf(l, nh - 1)->name) == 0);
        hv[1].device = -1; /* host and device views mixed */
        CHECK(ws_expect_create_views(l, hv, nh, WS_ENGINE_SGLANG, WS_SGLANG_CUDA, "t", NULL, 1, &ed,
                                     &err) == WS_ERR_ARG);
        hv[1].device = 0;
        free(ts);
        for (size_t i = 0; i < nh; i++) free(hb[i]);
        free(hb);
        free(hv);
        ws_layout_free(l);
    }
    ws_model_config_free(cfg);
}

int main(void) {
    setenv(WSI_DEVICE_LIB_ENV, WS_BINARY_DIR "/fake_device_backend.so", 1);
    const wsi_device_backend *b = wsi_device_backend_get(NULL);
    CHECK(b && strcmp(b->name, "fake") == 0);
    test_views();
    test_batch();
    test_refusals();
    test_expect();
    return check_report("test_device_views");
}
