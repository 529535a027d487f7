/*
 * Sources, partials and the incremental hasher: a rank's partials are the same from its dump
 * file (pread and mmap) and from host buffers (contiguous and strided); partials of every rank
 * computed separately, serialised, merged and judged match the trainer's manifest and find
 * planted corruptions (a stale replica, a flipped element, padding, a missing tensor), naming
 * tensor, rank and rows; malformed byte forms are refused; a file truncated while it is read
 * is an error naming it; the hasher gives ws_digest_buffer's digests in pieces.
 */
#include "check.h"
#include "hf_fixture.h"
#include "weightsum.h"
#include "weightsum_experimental.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static const char *cfg_json =
    "{\"model_type\": \"qwen2\", \"hidden_size\": 64, \"intermediate_size\": 96,"
    " \"vocab_size\": 250, \"num_hidden_layers\": 2, \"num_attention_heads\": 4,"
    " \"num_key_value_heads\": 2, \"tie_word_embeddings\": false}";

static uint64_t rng = 88172645463325252ull;
static uint32_t rnd(void) {
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (uint32_t)rng;
}

/* Norms and biases F32, matrices bf16. */
static ws_dtype hf_dtype(const ws_hf_desc *d) { return d->ndim == 1 ? WS_F32 : WS_BF16; }
static float hf_value(void) { return (float)(rnd() % 20000) / 1000.0f - 10.0f; }

/* Write the HF checkpoint of layout hf (random bf16 / f32 values) to path. */
static void write_hf(const ws_layout *hf, const char *path) {
    CHECK_OK(write_random_hf(hf, path, hf_dtype, hf_value, NULL));
}

typedef struct fixture {
    char dir[256], hfpath[300], dumpdir[300];
    ws_model_config *cfg;
    ws_layout *hf, *l;
    ws_plan *plan;
    ws_ckpt *ckpt;
    ws_dump *dump;
    ws_fastkey *key;
    ws_manifest *expected; /* the trainer's fast manifest */
    ws_canon canon;        /* of the manifest and the partials */
} fixture;

static void setup_cfg(fixture *f, const char *family, int tp, const char *json) {
    memset(f, 0, sizeof *f);
    snprintf(f->dir, sizeof f->dir, "/tmp/ws_partials_XXXXXX");
    CHECK(mkdtemp(f->dir) != NULL);
    snprintf(f->hfpath, sizeof f->hfpath, "%s/model.safetensors", f->dir);
    snprintf(f->dumpdir, sizeof f->dumpdir, "%s/dump", f->dir);
    CHECK(mkdir(f->dumpdir, 0700) == 0);
    CHECK_OK(ws_model_config_parse(json, strlen(json), "cfg", &f->cfg, NULL));
    CHECK_OK(ws_layout_create("hf", f->cfg, 1, &f->hf, NULL));
    CHECK_OK(ws_layout_create(family, f->cfg, tp, &f->l, NULL));
    write_hf(f->hf, f->hfpath);
    CHECK_OK(ws_ckpt_open(f->hfpath, &f->ckpt, NULL));
    CHECK_OK(ws_shard_checkpoint(f->ckpt, f->l, f->dumpdir, NULL));
    CHECK_OK(ws_dump_open(f->dumpdir, &f->dump, NULL));
    CHECK_OK(ws_plan_create(f->l, &f->plan, NULL));
    CHECK_OK(ws_fastkey_create(WS_FAST_DEFAULT_SEED, strlen(WS_FAST_DEFAULT_SEED), &f->key, NULL));
    ws_hash_options *o = check_hash_options(WS_CANON_BF16, WS_ALGO_FAST, f->key, 1);
    CHECK_OK(ws_hash_checkpoint(f->ckpt, o, "trainer", &f->expected, NULL));
    ws_hash_options_free(o);
    f->canon = WS_CANON_BF16;
}

static void setup(fixture *f, const char *family, int tp) { setup_cfg(f, family, tp, cfg_json); }

/* The trainer's manifest again, under another canonical policy (the partials follow it). */
static void rehash(fixture *f, ws_canon canon) {
    ws_manifest_free(f->expected);
    ws_hash_options *o = check_hash_options(canon, WS_ALGO_FAST, f->key, 1);
    CHECK_OK(ws_hash_checkpoint(f->ckpt, o, "trainer", &f->expected, NULL));
    ws_hash_options_free(o);
    f->canon = canon;
}

static void teardown(fixture *f) {
    ws_manifest_free(f->expected);
    ws_fastkey_free(f->key);
    ws_plan_free(f->plan);
    ws_dump_free(f->dump);
    ws_ckpt_free(f->ckpt);
    ws_layout_free(f->l);
    ws_layout_free(f->hf);
    ws_model_config_free(f->cfg);
    char cmd[400];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", f->dir);
    CHECK(system(cmd) == 0);
}

/* Serialised bytes of a rank's partials from source s (NULL on error). */
static void *bytes_of(fixture *f, int rank, const ws_source *s, size_t *len) {
    ws_partials *pa = NULL;
    void *b = NULL;
    ws_error e;
    if (ws_partials_compute(f->plan, rank, s, f->key, f->canon, &pa, &e) != WS_OK) {
        fprintf(stderr, "compute: %s\n", e.what);
        return NULL;
    }
    CHECK_OK(ws_partials_serialize(pa, &b, len, NULL));
    ws_partials_free(pa);
    return b;
}

/* Host copies of rank r's dump tensors; optionally strided (rows padded to twice the width). */
typedef struct hostcopy {
    ws_source *src;
    void *bufs[256];
    size_t n;
} hostcopy;

static void host_of(fixture *f, int rank, bool strided, hostcopy *h) {
    memset(h, 0, sizeof *h);
    CHECK_OK(ws_source_host_create(&h->src, NULL));
    const ws_ckpt *c = ws_dump_rank(f->dump, rank);
    for (size_t i = 0; i < ws_ckpt_count(c) && h->n < 256; i++) {
        const ws_tensor *t = ws_ckpt_tensor(c, i);
        size_t es = ws_dtype_size(t->dtype);
        if (!strided || t->ndim != 2) {
            void *b = malloc(t->nbytes + 1);
            memcpy(b, t->data, t->nbytes);
            h->bufs[h->n++] = b;
            CHECK_OK(ws_source_add(h->src, t->name, t->dtype, t->ndim, t->shape, NULL, b, NULL));
            continue;
        }
        uint64_t rows = t->shape[0], cols = t->shape[1];
        uint8_t *b = calloc(rows * cols * 2 + 1, es);
        for (uint64_t r = 0; r < rows; r++)
            memcpy(b + r * 2 * cols * es, (const uint8_t *)t->data + r * cols * es, cols * es);
        h->bufs[h->n++] = b;
        int64_t st[2] = {(int64_t)(2 * cols), 1};
        CHECK_OK(ws_source_add(h->src, t->name, t->dtype, 2, t->shape, st, b, NULL));
    }
}

static void host_free(hostcopy *h) {
    ws_source_free(h->src);
    for (size_t i = 0; i < h->n; i++) free(h->bufs[i]);
}

/* Judge partials of every rank computed separately from sources src[rank] and passed through
 * their byte form. */
static ws_report *judge_sources(fixture *f, ws_source **src) {
    int tp = ws_layout_tp(f->l);
    ws_partials *merged = NULL;
    ws_report *r = ws_report_new();
    for (int rank = 0; rank < tp; rank++) {
        if (!src[rank]) continue;
        size_t len = 0;
        void *b = bytes_of(f, rank, src[rank], &len);
        CHECK(b != NULL);
        ws_partials *pa = NULL;
        CHECK_OK(ws_partials_deserialize(b, len, &pa, NULL));
        ws_free(b);
        if (!merged) merged = pa;
        else {
            CHECK_OK(ws_partials_merge(merged, pa, NULL));
            ws_partials_free(pa);
        }
    }
    if (!merged) { /* no rank at all: an empty set judged alone */
        ws_source *s = NULL;
        CHECK_OK(ws_source_host_create(&s, NULL));
        CHECK_OK(ws_partials_compute(f->plan, 0, s, f->key, f->canon, &merged, NULL));
        ws_source_free(s);
    }
    CHECK_OK(ws_partials_judge(f->plan, merged, f->expected, r, NULL));
    ws_partials_free(merged);
    return r;
}

static bool has_finding(const ws_report *r, ws_status s, const char *tensor, int rank) {
    for (size_t i = 0; i < ws_report_count(r); i++) {
        const ws_finding *fi = ws_report_at(r, i);
        if (fi->status == s && strcmp(fi->tensor, tensor) == 0 && (rank < 0 || fi->rank == rank))
            return true;
    }
    return false;
}

/* The finding of status s about tensor (NULL: none). */
static const ws_finding *finding_of(const ws_report *r, ws_status s, const char *tensor) {
    for (size_t i = 0; i < ws_report_count(r); i++) {
        const ws_finding *fi = ws_report_at(r, i);
        if (fi->status == s && strcmp(fi->tensor, tensor) == 0) return fi;
    }
    return NULL;
}

/* A warning of this kind that names tensor. */
static bool has_warning(const ws_report *r, const char *kind, const char *tensor) {
    for (size_t i = 0; i < ws_report_warning_count(r); i++) {
        const ws_warning *w = ws_report_warning_at(r, i);
        if (strcmp(w->kind, kind) != 0) continue;
        for (size_t k = 0; k < w->nnames; k++)
            if (strcmp(w->names[k], tensor) == 0) return true;
    }
    return false;
}

/* The host copy of tensor `name` in h (host_of's copy of the rank's dump, not strided). */
static void *host_buf(fixture *f, int rank, hostcopy *h, const char *name) {
    const ws_ckpt *c = ws_dump_rank(f->dump, rank);
    for (size_t i = 0; i < h->n; i++)
        if (strcmp(ws_ckpt_tensor(c, i)->name, name) == 0) return h->bufs[i];
    CHECK(!"tensor not in the host copy");
    return NULL;
}

static void dump_report(const ws_report *r) {
    for (size_t i = 0; i < ws_report_count(r); i++) {
        const ws_finding *fi = ws_report_at(r, i);
        fprintf(stderr, "  %s %s %s rank %d: %s\n", ws_status_name(fi->status), fi->tensor,
                fi->local ? fi->local : "-", fi->rank, fi->detail);
    }
}

static void test_sources_agree(const char *family, int tp) {
    fixture f;
    setup(&f, family, tp);
    ws_source *dump_src[8] = {0}, *host_src[8] = {0};
    hostcopy hc[8], hs[8];
    for (int rank = 0; rank < tp; rank++) {
        ws_source *sp = NULL, *sm = NULL;
        CHECK_OK(ws_source_dump(f.dump, rank, WS_READ_PREAD, &sp, NULL));
        CHECK_OK(ws_source_dump(f.dump, rank, WS_READ_MMAP, &sm, NULL));
        host_of(&f, rank, false, &hc[rank]);
        host_of(&f, rank, true, &hs[rank]);
        size_t l1 = 0, l2 = 0, l3 = 0, l4 = 0;
        void *b1 = bytes_of(&f, rank, sp, &l1), *b2 = bytes_of(&f, rank, sm, &l2);
        void *b3 = bytes_of(&f, rank, hc[rank].src, &l3), *b4 = bytes_of(&f, rank, hs[rank].src, &l4);
        CHECK(b1 && b2 && b3 && b4);
        CHECK(l1 == l2 && l1 == l3 && l1 == l4);
        CHECK(b1 && b2 && memcmp(b1, b2, l1) == 0);
        CHECK(b1 && b3 && memcmp(b1, b3, l1) == 0);
        CHECK(b1 && b4 && memcmp(b1, b4, l1) == 0);
        ws_free(b1), ws_free(b2), ws_free(b3), ws_free(b4);
        dump_src[rank] = sp;
        host_src[rank] = hc[rank].src;
        ws_source_free(sm);
    }
    /* merged partials give the single-process fast digests and a clean verdict */
    ws_report *r = judge_sources(&f, dump_src);
    CHECK(ws_report_ok(r));
    CHECK(ws_report_matched(r) == ws_manifest_count(f.expected));
    if (!ws_report_ok(r)) dump_report(r);
    ws_report_free(r);
    ws_manifest *viahash = NULL, *viapart = NULL;
    ws_hash_options *o = check_hash_options(WS_CANON_BF16, WS_ALGO_FAST, f.key, 1);
    CHECK_OK(ws_hash_dump(f.l, f.dump, o, "dump", &viahash, NULL, NULL));
    ws_hash_options_free(o);
    {
        ws_partials *m = NULL;
        for (int rank = 0; rank < tp; rank++) {
            ws_partials *pa = NULL;
            CHECK_OK(ws_partials_compute(f.plan, rank, dump_src[rank], f.key, WS_CANON_BF16, &pa, NULL));
            if (!m) m = pa;
            else {
                CHECK(ws_partials_merge(m, m, NULL) == WS_ERR_ARG); /* a rank twice */
                CHECK_OK(ws_partials_merge(m, pa, NULL));
                ws_partials_free(pa);
            }
        }
        CHECK(ws_partials_rank_count(m) == tp);
        CHECK_OK(ws_partials_manifest(f.plan, m, "dump", &viapart, NULL, NULL));
        ws_partials_free(m);
    }
    CHECK(viahash && viapart && ws_manifest_count(viahash) == ws_manifest_count(viapart));
    for (size_t i = 0; viahash && viapart && i < ws_manifest_count(viahash); i++) {
        const ws_manifest_entry *a = ws_manifest_entry_at(viahash, i);
        const ws_manifest_entry *b = ws_manifest_find(viapart, a->name);
        CHECK(b && memcmp(&a->digest.fast, &b->digest.fast, sizeof a->digest.fast) == 0);
    }
    ws_manifest_free(viahash);
    ws_manifest_free(viapart);

    /* a missing rank */
    ws_source *keep = dump_src[tp - 1];
    dump_src[tp - 1] = NULL;
    r = judge_sources(&f, dump_src);
    CHECK(has_finding(r, WS_MISSING, "", tp - 1));
    ws_report_free(r);
    dump_src[tp - 1] = keep;
    for (int rank = 0; rank < tp; rank++) {
        ws_source_free(dump_src[rank]);
        host_free(&hs[rank]);
    }
    (void)host_src;

    /* corruptions planted in host copies, found from partials alone */
    if (tp == 4 && strcmp(family, "sglang") == 0) {
        /* 2 kv heads over 4 ranks: rank 1's k rows are a replica of rank 0's */
        const char *qkv = "model.layers.1.self_attn.qkv_proj.weight";
        const char *hfk = "model.layers.1.self_attn.k_proj.weight";
        const ws_ckpt *c1 = ws_dump_rank(f.dump, 1);
        const ws_tensor *t = ws_ckpt_find(c1, qkv);
        CHECK(t != NULL);
        size_t idx = 0;
        for (size_t i = 0; i < hc[1].n; i++)
            if (ws_ckpt_tensor(c1, i) == t) idx = i;
        /* q rows on rank 1: heads/tp = 1 head of 16 rows; k starts at row 16 */
        uint16_t *qkvb = hc[1].bufs[idx];
        qkvb[(16 + 3) * 64 + 5] ^= 0x0100; /* k row 3 of the replica */
        ws_source *srcs[8] = {0};
        for (int rank = 0; rank < tp; rank++) srcs[rank] = hc[rank].src;
        r = judge_sources(&f, srcs);
        CHECK(has_finding(r, WS_REPLICA_MISMATCH, hfk, 1));
        CHECK(!has_finding(r, WS_MISMATCH, hfk, -1)); /* replica 0 is right */
        ws_report_free(r);
        qkvb[(16 + 3) * 64 + 5] ^= 0x0100;
        /* the same flip on rank 0 (replica 0): a mismatch and a replica finding */
        const ws_ckpt *c0 = ws_dump_rank(f.dump, 0);
        for (size_t i = 0; i < hc[0].n; i++)
            if (strcmp(ws_ckpt_tensor(c0, i)->name, qkv) == 0) idx = i;
        uint16_t *q0 = hc[0].bufs[idx];
        q0[(16 + 3) * 64 + 5] ^= 0x0100;
        r = judge_sources(&f, srcs);
        CHECK(has_finding(r, WS_MISMATCH, hfk, -1));
        CHECK(has_finding(r, WS_REPLICA_MISMATCH, hfk, 1));
        ws_report_free(r);
        q0[(16 + 3) * 64 + 5] ^= 0x0100;
        /* garbage in the vocab padding of rank 3 (250 rows over 4 ranks: padded to 256) */
        const ws_ckpt *c3 = ws_dump_rank(f.dump, 3);
        for (size_t i = 0; i < hc[3].n; i++)
            if (strcmp(ws_ckpt_tensor(c3, i)->name, "model.embed_tokens.weight") == 0) idx = i;
        const ws_tensor *emb = ws_ckpt_find(c3, "model.embed_tokens.weight");
        uint16_t *eb = hc[3].bufs[idx];
        eb[(emb->shape[0] - 1) * 64 + 7] = 0x3f80;
        r = judge_sources(&f, srcs);
        CHECK(has_finding(r, WS_PADDING_NONZERO, "model.embed_tokens.weight", 3));
        CHECK(ws_report_count(r) == 1);
        if (ws_report_count(r) != 1) dump_report(r);
        ws_report_free(r);
        eb[(emb->shape[0] - 1) * 64 + 7] = 0;
    }
    for (int rank = 0; rank < tp; rank++) host_free(&hc[rank]);
    teardown(&f);
}

/* A missing local tensor, a misshapen one and an unexpected one, from host sources. */
static void test_structure(void) {
    fixture f;
    setup(&f, "vllm", 2);
    ws_source *s[2] = {0};
    hostcopy h[2];
    for (int rank = 0; rank < 2; rank++) {
        memset(&h[rank], 0, sizeof h[rank]);
        CHECK_OK(ws_source_host_create(&h[rank].src, NULL));
        const ws_ckpt *c = ws_dump_rank(f.dump, rank);
        for (size_t i = 0; i < ws_ckpt_count(c); i++) {
            const ws_tensor *t = ws_ckpt_tensor(c, i);
            if (rank == 1 && strcmp(t->name, "model.norm.weight") == 0) continue;
            uint64_t shape[WS_MAX_DIMS];
            memcpy(shape, t->shape, sizeof shape);
            if (rank == 0 && strcmp(t->name, "model.layers.0.mlp.down_proj.weight") == 0) {
                shape[0] = t->shape[1], shape[1] = t->shape[0]; /* transposed */
            }
            CHECK_OK(ws_source_add(h[rank].src, t->name, t->dtype, t->ndim, shape, NULL, t->data, NULL));
        }
        uint64_t one = 4;
        float junk[4] = {0};
        if (rank == 1) CHECK_OK(ws_source_add(h[rank].src, "extra.weight", WS_F32, 1, &one, NULL, junk, NULL));
        CHECK(ws_source_add(h[rank].src, "extra2", WS_F32, 1, &one, NULL, NULL, NULL) == WS_ERR_ARG);
        s[rank] = h[rank].src;
    }
    ws_report *r = judge_sources(&f, s);
    CHECK(has_finding(r, WS_MISSING, "model.norm.weight", 1));
    CHECK(has_finding(r, WS_SHAPE_DIFFERS, "model.layers.0.mlp.down_proj.weight", 0));
    CHECK(has_finding(r, WS_MISSING, "model.layers.0.mlp.down_proj.weight", 0));
    CHECK(has_finding(r, WS_UNEXPECTED, "extra.weight", 1));
    ws_report_free(r);
    ws_source_free(s[0]);
    ws_source_free(s[1]);
    teardown(&f);
}

/* Every truncation and every corrupted byte of a serialised set is refused or decoded, never
 * a crash; a valid set round-trips byte for byte. */
static void test_wire(void) {
    fixture f;
    setup(&f, "sglang", 2);
    ws_source *s = NULL;
    CHECK_OK(ws_source_dump(f.dump, 1, 0, &s, NULL));
    size_t len = 0;
    uint8_t *b = bytes_of(&f, 1, s, &len);
    CHECK(b != NULL && len > 0);
    ws_partials *pa = NULL;
    for (size_t n = 0; b && n < len; n += 1 + n / 64) {
        ws_error e;
        CHECK(ws_partials_deserialize(b, n, &pa, &e) == WS_ERR_FORMAT);
    }
    for (size_t i = 0; b && i < len; i += 1 + i / 32) {
        uint8_t save = b[i];
        b[i] ^= 0xff;
        if (ws_partials_deserialize(b, len, &pa, NULL) == WS_OK) ws_partials_free(pa);
        b[i] = save;
    }
    CHECK_OK(ws_partials_deserialize(b, len, &pa, NULL));
    void *b2 = NULL;
    size_t l2 = 0;
    CHECK_OK(ws_partials_serialize(pa, &b2, &l2, NULL));
    CHECK(l2 == len && memcmp(b, b2, len) == 0);
    /* partials of another layout are refused */
    ws_layout *other = NULL;
    ws_plan *op = NULL;
    CHECK_OK(ws_layout_create("vllm", f.cfg, 2, &other, NULL));
    CHECK_OK(ws_plan_create(other, &op, NULL));
    ws_report *r = ws_report_new();
    CHECK(ws_partials_judge(op, pa, f.expected, r, NULL) == WS_ERR_ARG);
    ws_report_free(r);
    ws_plan_free(op);
    ws_layout_free(other);
    ws_partials_free(pa);
    ws_free(b);
    ws_free(b2);
    ws_source_free(s);
    teardown(&f);
}

/* A rank file cut short after the dump was opened: an I/O error naming it, from both read
 * modes, never SIGBUS. */
static void test_truncated_while_read(void) {
    fixture f;
    setup(&f, "sglang", 2);
    const ws_ckpt *c = ws_dump_rank(f.dump, 0);
    const char *file = ws_ckpt_tensor(c, 0)->file;
    off_t keep = 4096 + 64;
    CHECK(truncate(file, keep) == 0);
    for (int mode = WS_READ_PREAD; mode <= WS_READ_MMAP; mode++) {
        ws_source *s = NULL;
        ws_partials *pa = NULL;
        ws_error e;
        CHECK_OK(ws_source_dump(f.dump, 0, mode, &s, NULL));
        ws_err rc = ws_partials_compute(f.plan, 0, s, f.key, WS_CANON_BF16, &pa, &e);
        CHECK(rc == WS_ERR_IO);
        CHECK(rc != WS_ERR_IO || strcmp(e.file, file) == 0);
        CHECK(rc != WS_ERR_IO || strstr(e.what, "shrank") != NULL);
        ws_partials_free(pa);
        ws_source_free(s);
    }
    teardown(&f);
}

static void test_hasher(void) {
    ws_fastkey *key = NULL;
    CHECK_OK(ws_fastkey_create("k", 1, &key, NULL));
    enum { N = 10007 };
    float *v = malloc(N * sizeof *v);
    for (int i = 0; i < N; i++) v[i] = (float)(rnd() % 1000) - 500.0f;
    v[17] = 0.0f / 0.0f;
    for (int canon = 0; canon < 2; canon++) {
        ws_digest want, got;
        ws_value_stats st;
        uint64_t shape[2] = {N, 1};
        CHECK_OK(ws_digest_buffer(WS_F32, (ws_canon)canon, v, 2, shape,
                                  WS_ALGO_SHA256 | WS_ALGO_FAST, key, &want, NULL, NULL));
        ws_hasher *h = NULL;
        CHECK_OK(ws_hasher_create(WS_F32, 2, shape, (ws_canon)canon, WS_ALGO_SHA256 | WS_ALGO_FAST, key, &h, NULL));
        for (uint64_t at = 0; at < N; at += 1000)
            CHECK_OK(ws_hasher_update(h, at, v + at, at + 1000 <= N ? 1000 : N - at, NULL));
        CHECK_OK(ws_hasher_final(h, &got, &st, NULL));
        CHECK(memcmp(got.sha256, want.sha256, 32) == 0);
        CHECK(memcmp(&got.fast, &want.fast, sizeof got.fast) == 0);
        CHECK(st.nan == 1);
        CHECK(ws_hasher_final(h, &got, NULL, NULL) == WS_ERR_ARG);
        ws_hasher_free(h);
        /* fast digest: pieces in any order */
        CHECK_OK(ws_hasher_create(WS_F32, 2, shape, (ws_canon)canon, WS_ALGO_FAST, key, &h, NULL));
        CHECK_OK(ws_hasher_update(h, 5000, v + 5000, N - 5000, NULL));
        CHECK_OK(ws_hasher_update(h, 0, v, 5000, NULL));
        CHECK_OK(ws_hasher_final(h, &got, NULL, NULL));
        CHECK(memcmp(&got.fast, &want.fast, sizeof got.fast) == 0);
        ws_hasher_free(h);
        /* SHA-256 refuses elements out of order */
        CHECK_OK(ws_hasher_create(WS_F32, 2, shape, (ws_canon)canon, WS_ALGO_SHA256, NULL, &h, NULL));
        CHECK(ws_hasher_update(h, 5, v + 5, 10, NULL) == WS_ERR_ARG);
        ws_hasher_free(h);
    }
    ws_hasher *h = NULL;
    uint64_t one[1] = {N}, big[2] = {UINT64_MAX, 2};
    CHECK(ws_hasher_create(WS_F32, 1, one, WS_CANON_BF16, WS_ALGO_FAST, NULL, &h, NULL) == WS_ERR_ARG);
    CHECK(ws_hasher_create(WS_DTYPE__COUNT, 1, one, WS_CANON_BF16, WS_ALGO_SHA256, NULL, &h, NULL) == WS_ERR_ARG);
    CHECK(ws_hasher_create(WS_F32, 1, one, WS_CANON_BF16, 0, NULL, &h, NULL) == WS_ERR_ARG);
    CHECK(ws_hasher_create(WS_F32, 1, NULL, WS_CANON_BF16, WS_ALGO_SHA256, NULL, &h, NULL) == WS_ERR_ARG);
    CHECK(ws_hasher_create(WS_F32, 2, big, WS_CANON_BF16, WS_ALGO_SHA256, NULL, &h, NULL) == WS_ERR_LIMIT);
    /* the shape is part of the fast digest, and bounds what may be fed */
    ws_digest flat, tall;
    for (int k = 0; k < 2; k++) {
        uint64_t s2[2] = {N, 1};
        CHECK_OK(ws_hasher_create(WS_F32, k ? 2 : 1, k ? s2 : one, WS_CANON_BF16, WS_ALGO_FAST, key, &h, NULL));
        CHECK(ws_hasher_update(h, 1, v, N, NULL) == WS_ERR_ARG);
        CHECK_OK(ws_hasher_update(h, 0, v, N, NULL));
        CHECK_OK(ws_hasher_final(h, k ? &tall : &flat, NULL, NULL));
        ws_hasher_free(h);
    }
    CHECK(memcmp(&flat.fast, &tall.fast, sizeof flat.fast) != 0);
    free(v);
    ws_fastkey_free(key);
}

/* Without libweightsum_cuda.so a device tensor is refused with a clear error. */
static void test_device_absent(void) {
    ws_source *s = NULL;
    CHECK_OK(ws_source_host_create(&s, NULL));
    uint64_t shape = 4;
    ws_error e;
    ws_err rc = ws_source_add_device(s, "x", WS_F32, 1, &shape, NULL, (void *)0x1000, NULL, &e);
    if (rc != WS_OK) {
        CHECK(rc == WS_ERR_NOTFOUND);
        CHECK(strstr(e.what, "libweightsum_cuda.so") != NULL);
    }
    ws_source_free(s);
}

/* Issue 9 item 7 for partials: trainer and engine both hold model.norm.weight as F32 (the
 * fixture writes 1-D tensors as F32); one low mantissa bit flipped on rank 0. Under the bf16
 * policy the flip is invisible: the report must say so (low_bits_unchecked, naming the
 * tensor), and under the native policy the same flip is a mismatch named on rank 0. */
static void test_low_bits_warned(void) {
    const char *norm = "model.norm.weight";
    fixture f;
    setup(&f, "sglang", 2);
    hostcopy h[2];
    ws_source *s[2];
    for (int rank = 0; rank < 2; rank++) {
        host_of(&f, rank, false, &h[rank]);
        s[rank] = h[rank].src;
    }
    CHECK(ws_ckpt_find(ws_dump_rank(f.dump, 0), norm)->dtype == WS_F32);
    ws_report *r = judge_sources(&f, s);
    CHECK(ws_report_ok(r));
    CHECK(has_warning(r, "low_bits_unchecked", norm));
    ws_report_free(r);
    uint32_t *nb = host_buf(&f, 0, &h[0], norm);
    nb[7] ^= 1u; /* the lowest mantissa bit of one element */
    r = judge_sources(&f, s);
    CHECK(ws_report_ok(r)); /* the documented policy: bf16 does not see it ... */
    CHECK(has_warning(r, "low_bits_unchecked", norm)); /* ... and the report says so */
    const ws_warning *w = ws_report_warning_count(r) ? ws_report_warning_at(r, 0) : NULL;
    CHECK(w && strstr(w->detail, "--canonical native") != NULL);
    ws_report_free(r);
    rehash(&f, WS_CANON_NATIVE);
    r = judge_sources(&f, s);
    CHECK(has_finding(r, WS_MISMATCH, norm, 0));
    CHECK(has_finding(r, WS_REPLICA_MISMATCH, norm, 1)); /* rank 1's copy is the old one */
    CHECK(!has_warning(r, "low_bits_unchecked", norm));
    if (!has_finding(r, WS_MISMATCH, norm, 0)) dump_report(r);
    ws_report_free(r);
    nb[7] ^= 1u;
    r = judge_sources(&f, s);
    CHECK(ws_report_ok(r) && ws_report_warning_count(r) == 0);
    ws_report_free(r);
    for (int rank = 0; rank < 2; rank++) host_free(&h[rank]);
    teardown(&f);
}

/* Host sources of a tied model's dump where every rank saved the embedding as lm_head.weight
 * (both: under both names); flip: one element of rank 1's lm_head.weight changed. */
static void host_tied(fixture *f, int rank, bool both, bool flip, hostcopy *h) {
    memset(h, 0, sizeof *h);
    CHECK_OK(ws_source_host_create(&h->src, NULL));
    const ws_ckpt *c = ws_dump_rank(f->dump, rank);
    for (size_t i = 0; i < ws_ckpt_count(c) && h->n < 255; i++) {
        const ws_tensor *t = ws_ckpt_tensor(c, i);
        bool emb = strcmp(t->name, "model.embed_tokens.weight") == 0;
        for (int copy = 0; copy < (emb && both ? 2 : 1); copy++) {
            uint16_t *b = malloc(t->nbytes + 1);
            memcpy(b, t->data, t->nbytes);
            const char *name = t->name;
            if (emb && (copy == 1 || !both)) {
                name = "lm_head.weight";
                if (flip && rank == 1) b[3 * 64 + 5] ^= 0x4000;
            }
            h->bufs[h->n++] = b;
            CHECK_OK(ws_source_add(h->src, name, t->dtype, t->ndim, t->shape, NULL, b, NULL));
        }
    }
}

/* Issue 9 item 9 for partials: a tied model (lm_head.weight tied to the embedding) whose ranks
 * saved the shared tensor as lm_head.weight, only rank 1's copy corrupted: the finding names
 * lm_head.weight (the tensor read) and rank 1, never the embedding as the holder. Saved under
 * both names, lm_head's copy corrupted: lm_head.weight on rank 1 again. */
static void test_tied_names_the_tensor_read(void) {
    const char *tied_json =
        "{\"model_type\": \"qwen2\", \"hidden_size\": 64, \"intermediate_size\": 96,"
        " \"vocab_size\": 250, \"num_hidden_layers\": 1, \"num_attention_heads\": 4,"
        " \"num_key_value_heads\": 2, \"tie_word_embeddings\": true}";
    const char *emb = "model.embed_tokens.weight";
    fixture f;
    setup_cfg(&f, "sglang", 2, tied_json);
    for (int both = 0; both < 2; both++) {
        hostcopy h[2];
        ws_source *s[2];
        for (int rank = 0; rank < 2; rank++) {
            host_tied(&f, rank, both, false, &h[rank]);
            s[rank] = h[rank].src;
        }
        ws_report *r = judge_sources(&f, s);
        CHECK(ws_report_ok(r));
        if (!ws_report_ok(r)) dump_report(r);
        ws_report_free(r);
        for (int rank = 0; rank < 2; rank++) host_free(&h[rank]);
        for (int rank = 0; rank < 2; rank++) {
            host_tied(&f, rank, both, true, &h[rank]);
            s[rank] = h[rank].src;
        }
        r = judge_sources(&f, s);
        CHECK(!ws_report_ok(r));
        const ws_finding *fi = finding_of(r, both ? WS_REPLICA_MISMATCH : WS_MISMATCH, emb);
        CHECK(fi != NULL);
        CHECK(fi && fi->local && strcmp(fi->local, "lm_head.weight") == 0);
        if (both) {
            CHECK(fi && fi->rank == 1);
        } else {
            /* the rebuilt tensor spans both ranks: its holders are named, as read */
            CHECK(fi && strstr(fi->detail, "lm_head.weight rows 0..122 on rank 1") != NULL);
            CHECK(fi && strstr(fi->detail, "model.embed_tokens.weight rows") == NULL);
        }
        for (size_t i = 0; i < ws_report_count(r); i++) /* never the embedding as holder */
            CHECK(!ws_report_at(r, i)->local ||
                  strcmp(ws_report_at(r, i)->local, emb) != 0 || both);
        if (!fi) dump_report(r);
        ws_report_free(r);
        for (int rank = 0; rank < 2; rank++) host_free(&h[rank]);
    }
    teardown(&f);
}

typedef struct progress_log {
    uint64_t done[4096], total[4096];
    size_t n;
} progress_log;

static void log_progress(void *user, uint64_t done, uint64_t total) {
    progress_log *p = user;
    if (p->n < 4096) p->done[p->n] = done, p->total[p->n] = total, p->n++;
}

/* diff CKPT DUMP counts the replica comparison in its progress (issue 14 item 5): at sglang
 * tp=4 with 2 kv heads (k/v rows and norms replicated), the total is the reference's bytes
 * plus those of every replica piece and its replica-0 twin, the count reaches the replica
 * bytes before the reference is compared (it no longer sits at 0 meanwhile), never goes
 * back, and ends at the total. */
static void test_diff_progress_counts_replicas(void) {
    fixture f;
    setup(&f, "sglang", 4);
    uint64_t ref = 0, rep = 0;
    for (size_t i = 0; i < ws_ckpt_count(f.ckpt); i++) ref += ws_ckpt_tensor(f.ckpt, i)->nbytes;
    size_t np = ws_layout_piece_count(f.l);
    uint8_t *read = calloc(np, 1);
    for (size_t i = 0; i < np; i++) {
        const ws_piece *c = ws_layout_piece(f.l, i);
        if (!c->replica) continue;
        read[i] = 1;
        for (size_t k = 0; k < np; k++) {
            const ws_piece *q = ws_layout_piece(f.l, k);
            if (!q->replica && q->hf == c->hf && q->t_row0 == c->t_row0 && q->t_col0 == c->t_col0 &&
                q->rows == c->rows && q->cols == c->cols)
                read[k] = 1;
        }
    }
    for (size_t i = 0; i < np; i++) {
        const ws_piece *c = ws_layout_piece(f.l, i);
        const ws_tensor *t = ws_ckpt_find(f.ckpt, ws_layout_hf(f.l, c->hf)->name);
        if (read[i] && t) rep += c->rows * c->cols * (t->nbytes / t->numel);
    }
    free(read);
    CHECK(rep > 0);
    progress_log *lg = calloc(1, sizeof *lg);
    ws_report *r = ws_report_new();
    CHECK_OK(ws_diff_dump(f.ckpt, f.l, f.dump, WS_CANON_BF16, log_progress, lg, r, NULL));
    CHECK(ws_report_ok(r));
    CHECK(lg->n > 2);
    bool reached = false;
    for (size_t i = 0; i < lg->n; i++) {
        CHECK(lg->total[i] == ref + rep);
        CHECK(i == 0 || lg->done[i] >= lg->done[i - 1]);
        if (lg->done[i] == rep) reached = true;
    }
    CHECK(reached);
    CHECK(lg->n && lg->done[lg->n - 1] == ref + rep);
    free(lg);
    ws_report_free(r);
    teardown(&f);
}

int main(void) {
    test_hasher();
    test_diff_progress_counts_replicas();
    test_low_bits_warned();
    test_tied_names_the_tensor_read();
    test_sources_agree("sglang", 2);
    test_sources_agree("sglang", 4);
    test_sources_agree("vllm", 4);
    test_sources_agree("megatron", 2);
    test_sources_agree("transformers", 2);
    test_structure();
    test_wire();
    test_truncated_while_read();
    test_device_absent();
    return check_report("test_partials");
}
