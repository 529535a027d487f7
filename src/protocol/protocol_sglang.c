/*
 * "checksum" as SGLang answers it (sglang/srt/utils/weight_checker.py _compute_checksum, the
 * scheduler's gather, tokenizer_control_mixin.check_weights): per rank, SGLang's tensor hash of
 * every tensor the rank holds under its engine name, as 16 hex digits; per_gpu_checksum over
 * the sorted names and values; parallelism_info as a list of role dicts; per_engine_checksum
 * over the ranks' per_gpu_checksum in rank order. Names SGLang never hashes (non-persistent
 * buffers: rotary caches and the like) and those matching skip_tensor_list are left out. A
 * dump holds only a target model, so selector "draft" finds no runner and answers no ranks,
 * as SGLang does.
 */
#include "protocol.h"
#include "source.h"

#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* sglang weight_checker._NON_PERSISTENT_BUFFER_PATTERNS */
static const char *const non_persistent[] = {"cos_sin_cache", "cos_cache", "sin_cache",
                                             "inv_freq", "freqs_cis", "expert_mask_gpu"};

bool wsp_sglang_skips(const char *name, json_t *skip_list) {
    for (size_t i = 0; i < sizeof non_persistent / sizeof *non_persistent; i++)
        if (strstr(name, non_persistent[i])) return true;
    size_t k;
    json_t *s;
    json_array_foreach(skip_list, k, s)
        if (json_string_value(s) && strstr(name, json_string_value(s))) return true;
    return false;
}

typedef struct item {
    const ws_source *src;      /* the rank's files, read in the process's read mode */
    const wsi_src_tensor *t;
    const char *name; /* the engine's name (an alias mapped to the layout's local name) */
    int rank;
    char hex[17];
    ws_err rc;
    ws_error err;
} item;

typedef struct feed {
    ws_sglang_hasher *h;
    size_t es;
    ws_error *err;
} feed;

static ws_err feed_bytes(void *arg, uint64_t at, const void *data, uint64_t n) {
    feed *f = arg;
    return ws_sglang_hasher_update(f->h, at * f->es, data, (size_t)(n * f->es), f->err);
}

/* SGLang's tensor hash of one tensor, streamed from the rank's source (a file cut meanwhile is
 * an error naming it, in either read mode). */
static void hash_one(void *arg, size_t i) {
    item *it = &((item *)arg)[i];
    const wsi_src_tensor *t = it->t;
    if (!t) {
        it->rc = wsi_fail(&it->err, WS_ERR_NOTFOUND, NULL, it->name, -1, "not in its rank's source");
        return;
    }
    feed f = {.es = ws_dtype_size(t->dtype), .err = &it->err};
    wsi_readbuf buf = {0};
    it->rc = ws_sglang_hasher_create(WS_SGLANG_CUDA, t->numel * f.es, &f.h, &it->err);
    if (it->rc == WS_OK && t->numel)
        it->rc = wsi_source_rect(it->src, t, 0, 0, 1, t->numel, t->numel, &buf, feed_bytes, &f,
                                 &it->err);
    uint64_t v = 0;
    if (it->rc == WS_OK) it->rc = ws_sglang_hasher_final(f.h, &v, &it->err);
    ws_sglang_hasher_free(f.h);
    wsi_readbuf_free(&buf);
    ws_sglang_hex(v, it->hex);
}

ws_err wsp_sglang_checksum(const ws_checker *c, const ws_dump *d, json_t *skip_list,
                           bool draft_only, json_t **out, ws_error *err) {
    *out = NULL;
    json_t *root = json_object();
    if (!root) return wsi_fail(err, WS_ERR_NOMEM, NULL, NULL, -1, "out of memory");
    json_object_set_new(root, "success", json_true());
    json_object_set_new(root, "message", json_string("Success."));
    if (draft_only) { /* no draft runner: SGLang answers no payload at all */
        *out = root;
        return WS_OK;
    }
    int tp = ws_layout_rank_count(c->l); /* global ranks: tp x pp */
    size_t n = 0;
    for (int r = 0; r < tp; r++) {
        if (!ws_dump_rank(d, r)) {
            json_decref(root);
            return wsi_fail(err, WS_ERR_NOTFOUND, c->dir, NULL, -1,
                            "no model-rank-%d-part-*.safetensors file: rank %d cannot answer", r, r);
        }
        n += ws_ckpt_count(ws_dump_rank(d, r));
    }
    item *items = calloc(n + 1, sizeof *items);
    ws_source **srcs = calloc((size_t)tp + 1, sizeof *srcs);
    ws_err rc = items && srcs ? WS_OK : wsi_fail(err, WS_ERR_NOMEM, NULL, NULL, -1, "out of memory");
    size_t m = 0;
    for (int r = 0; rc == WS_OK && r < tp; r++) {
        const ws_ckpt *ck = ws_dump_rank(d, r);
        rc = ws_source_dump(d, r, WS_READ_DEFAULT, &srcs[r], err);
        for (size_t i = 0; rc == WS_OK && i < ws_ckpt_count(ck); i++) {
            const ws_tensor *t = ws_ckpt_tensor(ck, i);
            long li = ws_layout_find_local(c->l, r, t->name);
            const char *name = li >= 0 ? ws_layout_local(c->l, (size_t)li)->name : t->name;
            if (wsp_sglang_skips(name, skip_list)) continue;
            items[m++] = (item){.src = srcs[r], .t = wsi_source_find(srcs[r], t->name),
                                .name = name, .rank = r};
        }
    }
    if (rc == WS_OK) wsi_parallel_for(m, c->threads, hash_one, items);
    for (size_t i = 0; rc == WS_OK && i < m; i++)
        if (items[i].rc != WS_OK) {
            rc = items[i].rc;
            if (err) *err = items[i].err;
        }
    json_t *ranks = json_array();
    EVP_MD_CTX *eng = EVP_MD_CTX_new();
    if (rc == WS_OK && (!ranks || !eng || EVP_DigestInit_ex(eng, EVP_sha256(), NULL) != 1))
        rc = wsi_fail(err, WS_ERR_CRYPTO, NULL, NULL, -1, "SHA-256 could not start");
    size_t k = 0;
    for (int r = 0; rc == WS_OK && r < tp; r++) {
        json_t *sums = json_object();
        for (; k < m && items[k].rank == r; k++) json_object_set_new(sums, items[k].name, json_string(items[k].hex));
        char pg[65];
        if (!wsp_per_gpu_checksum(sums, pg) || EVP_DigestUpdate(eng, pg, 64) != 1)
            rc = wsi_fail(err, WS_ERR_CRYPTO, NULL, NULL, -1, "SHA-256 failed");
        json_t *o = json_object();
        json_object_set_new(o, "checksums", sums);
        json_object_set_new(o, "per_gpu_checksum", json_string(pg));
        json_t *info = json_array();
        json_array_append_new(info, wsp_parallelism_info(c->l, r, true));
        json_object_set_new(o, "parallelism_info", info);
        if (json_array_append_new(ranks, o) != 0) rc = wsi_fail(err, WS_ERR_NOMEM, NULL, NULL, -1, "out of memory");
    }
    uint8_t md[32];
    unsigned len = 0;
    char hex[65];
    if (rc == WS_OK && (EVP_DigestFinal_ex(eng, md, &len) != 1 || len != 32))
        rc = wsi_fail(err, WS_ERR_CRYPTO, NULL, NULL, -1, "SHA-256 failed");
    EVP_MD_CTX_free(eng);
    free(items);
    for (int r = 0; srcs && r < tp; r++) ws_source_free(srcs[r]);
    free(srcs);
    if (rc != WS_OK) {
        json_decref(ranks);
        json_decref(root);
        return rc;
    }
    ws_sha256_hex(md, hex);
    json_object_set_new(root, "ranks", ranks);
    json_object_set_new(root, "per_engine_checksum", json_string(hex));
    *out = root;
    return WS_OK;
}
