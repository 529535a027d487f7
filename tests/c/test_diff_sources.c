/*
 * diff reads both sides through sources (ws_diff_dump_read, ws_diff_checkpoints_read): pread
 * and mapped reads give the same report, byte for byte, over families x tp; a difference
 * planted in the reference is found and named (element, engine tensor, rank); a reference
 * file cut short after it was opened is WS_ERR_IO naming it in both modes, never SIGBUS and
 * never a match.
 */
#include "check.h"
#include "hf_fixture.h"
#include "weightsum.h"
#include "weightsum_experimental.h"

#include <fcntl.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static const char *cfg_json =
    "{\"model_type\": \"qwen2\", \"hidden_size\": 64, \"intermediate_size\": 96,"
    " \"vocab_size\": 256, \"num_hidden_layers\": 2, \"num_attention_heads\": 4,"
    " \"num_key_value_heads\": 2, \"tie_word_embeddings\": false}";

static uint64_t rng = 0x9e3779b97f4a7c15ull;
static uint32_t rnd(void) {
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (uint32_t)rng;
}

/* Norms and biases F32, matrices bf16 (tests/c/hf_fixture.h writes them). */
static ws_dtype hf_dtype(const ws_hf_desc *d) { return d->ndim == 1 ? WS_F32 : WS_BF16; }
static float hf_value(void) { return (float)(rnd() % 20000) / 1000.0f - 10.0f; }

/* The HF checkpoint of layout hf (random bf16 matrices, f32 vectors) at path. */
static void write_hf(const ws_layout *hf, const char *path) {
    CHECK_OK(write_random_hf(hf, path, hf_dtype, hf_value, NULL));
}

typedef struct fixture {
    char dir[256], hfpath[300], dumpdir[300];
    ws_model_config *cfg;
    ws_layout *hf, *l;
    ws_dump *dump;
} fixture;

static bool setup(fixture *f, const char *family, int tp) {
    memset(f, 0, sizeof *f);
    CHECK_OK(ws_model_config_parse(cfg_json, strlen(cfg_json), "cfg", &f->cfg, NULL));
    if (ws_layout_create(family, f->cfg, tp, &f->l, NULL) != WS_OK) {
        ws_model_config_free(f->cfg);
        return false; /* a combination the family cannot lay out */
    }
    snprintf(f->dir, sizeof f->dir, "/tmp/ws_diffsrc_XXXXXX");
    CHECK(mkdtemp(f->dir) != NULL);
    snprintf(f->hfpath, sizeof f->hfpath, "%s/model.safetensors", f->dir);
    snprintf(f->dumpdir, sizeof f->dumpdir, "%s/dump", f->dir);
    CHECK(mkdir(f->dumpdir, 0700) == 0);
    CHECK_OK(ws_layout_create("hf", f->cfg, 1, &f->hf, NULL));
    write_hf(f->hf, f->hfpath);
    ws_ckpt *c = NULL;
    CHECK_OK(ws_ckpt_open(f->hfpath, &c, NULL));
    CHECK_OK(ws_shard_checkpoint(c, f->l, f->dumpdir, NULL));
    ws_ckpt_free(c);
    CHECK_OK(ws_dump_open(f->dumpdir, &f->dump, NULL));
    return true;
}

static void teardown(fixture *f) {
    ws_dump_free(f->dump);
    ws_layout_free(f->l);
    ws_layout_free(f->hf);
    ws_model_config_free(f->cfg);
    char cmd[400];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", f->dir);
    CHECK(system(cmd) == 0);
}

/* The report of diffing the reference at path against the dump (read_mode), as JSON (NULL
 * on error, e filled). */
static char *diff_json(const fixture *f, const char *path, int mode, ws_err *rc, ws_error *e) {
    ws_ckpt *c = NULL;
    ws_report *r = ws_report_new();
    char *js = NULL;
    *rc = ws_ckpt_open(path, &c, e);
    if (*rc == WS_OK) *rc = ws_diff_dump_read(c, f->l, f->dump, WS_CANON_BF16, mode, NULL, NULL, r, e);
    if (*rc == WS_OK) CHECK_OK(ws_report_to_json(r, &js, NULL));
    ws_report_free(r);
    ws_ckpt_free(c);
    return js;
}

/* Flip the top exponent bit of bf16 element i of tensor name in the file at path. */
static void flip(const char *path, const char *name, uint64_t i) {
    ws_ckpt *c = NULL;
    CHECK_OK(ws_ckpt_open(path, &c, NULL));
    const ws_tensor *t = ws_ckpt_find(c, name);
    CHECK(t && t->dtype == WS_BF16);
    uint64_t off = t ? t->file_offset + 2 * i : 0;
    ws_ckpt_free(c);
    int fd = open(path, O_RDWR);
    uint16_t v = 0;
    CHECK(fd >= 0 && pread(fd, &v, 2, (off_t)off) == 2);
    v ^= 0x4000;
    CHECK(pwrite(fd, &v, 2, (off_t)off) == 2);
    close(fd);
}

/* The rank whose replica-0 piece holds element i of HF tensor name (from the layout). */
static int holder_rank(const ws_layout *l, const char *name, uint64_t i) {
    long h = ws_layout_find_hf(l, name);
    const ws_hf_desc *hf = ws_layout_hf(l, (size_t)h);
    uint64_t cols = hf->ndim == 2 ? hf->shape[1] : 1, row = i / cols, col = i % cols;
    for (size_t k = 0; k < ws_layout_piece_count(l); k++) {
        const ws_piece *p = ws_layout_piece(l, k);
        if ((long)p->hf == h && !p->replica && row >= p->t_row0 && row < p->t_row0 + p->rows &&
            col >= p->t_col0 && col < p->t_col0 + p->cols)
            return ws_layout_local(l, p->local)->rank;
    }
    return -2;
}

static void test_modes_agree(const char *family, int tp) {
    fixture f;
    if (!setup(&f, family, tp)) return;
    ws_err rc;
    ws_error e;
    char *a = diff_json(&f, f.hfpath, WS_READ_PREAD, &rc, &e);
    char *b = diff_json(&f, f.hfpath, WS_READ_MMAP, &rc, &e);
    CHECK(a && b && strcmp(a, b) == 0);
    CHECK(a && strstr(a, "\"mismatch\"") == NULL);
    free(a);
    free(b);
    /* a difference planted in the reference: found, the same in both modes, named */
    const char *name = "model.layers.1.mlp.down_proj.weight"; /* [64, 96], a dim-1 shard */
    uint64_t at = 40 * 96 + 95;
    flip(f.hfpath, name, at);
    for (int mode = WS_READ_PREAD; mode <= WS_READ_MMAP; mode++) {
        ws_ckpt *c = NULL;
        ws_report *r = ws_report_new();
        CHECK_OK(ws_ckpt_open(f.hfpath, &c, NULL));
        CHECK_OK(ws_diff_dump_read(c, f.l, f.dump, WS_CANON_BF16, mode, NULL, NULL, r, NULL));
        CHECK(!ws_report_ok(r) && ws_report_count(r) == 1);
        const ws_finding *x = ws_report_count(r) ? ws_report_at(r, 0) : NULL;
        CHECK(x && x->status == WS_MISMATCH && strcmp(x->tensor, name) == 0);
        CHECK(x && x->has_element && x->element == at && x->differ == 1);
        CHECK(x && x->coords[0] == 40 && x->coords[1] == 95);
        CHECK(x && x->local && x->rank == holder_rank(f.l, name, at));
        if (x && x->rank != holder_rank(f.l, name, at))
            fprintf(stderr, "%s tp=%d: rank %d, layout says %d\n", family, tp, x->rank,
                    holder_rank(f.l, name, at));
        ws_report_free(r);
        ws_ckpt_free(c);
    }
    a = diff_json(&f, f.hfpath, WS_READ_PREAD, &rc, &e);
    b = diff_json(&f, f.hfpath, WS_READ_MMAP, &rc, &e);
    CHECK(a && b && strcmp(a, b) == 0);
    free(a);
    free(b);
    teardown(&f);
}

/* The reference cut short after it was opened: WS_ERR_IO naming it, in both modes, for
 * ws_diff_dump_read and ws_diff_checkpoints_read alike. */
static void test_reference_truncated(void) {
    fixture f;
    CHECK(setup(&f, "sglang", 2));
    char copy[400];
    snprintf(copy, sizeof copy, "%s/copy.safetensors", f.dir);
    char cmd[900];
    snprintf(cmd, sizeof cmd, "cp '%s' '%s'", f.hfpath, copy);
    CHECK(system(cmd) == 0);
    for (int mode = WS_READ_PREAD; mode <= WS_READ_MMAP; mode++)
        for (int against = 0; against < 2; against++) { /* the dump, then a checkpoint */
            CHECK(system(cmd) == 0);
            ws_ckpt *c = NULL, *o = NULL;
            CHECK_OK(ws_ckpt_open(copy, &c, NULL));
            CHECK_OK(ws_ckpt_open(f.hfpath, &o, NULL));
            CHECK(truncate(copy, 4096 + 64) == 0);
            ws_report *r = ws_report_new();
            ws_error e;
            ws_err rc = against ? ws_diff_checkpoints_read(c, o, mode, NULL, NULL, r, &e)
                                : ws_diff_dump_read(c, f.l, f.dump, WS_CANON_BF16, mode, NULL,
                                                    NULL, r, &e);
            CHECK(rc == WS_ERR_IO);
            CHECK(rc != WS_ERR_IO || strcmp(e.file, copy) == 0);
            CHECK(rc != WS_ERR_IO || strstr(e.what, "shrank") != NULL);
            /* the other side (B of a checkpoint diff) cut instead: named too */
            ws_report_free(r);
            ws_ckpt_free(c);
            ws_ckpt_free(o);
            if (!against) continue;
            CHECK(system(cmd) == 0);
            CHECK_OK(ws_ckpt_open(f.hfpath, &c, NULL));
            CHECK_OK(ws_ckpt_open(copy, &o, NULL));
            CHECK(truncate(copy, 4096 + 64) == 0);
            r = ws_report_new();
            rc = ws_diff_checkpoints_read(c, o, mode, NULL, NULL, r, &e);
            CHECK(rc == WS_ERR_IO && strcmp(e.file, copy) == 0);
            ws_report_free(r);
            ws_ckpt_free(c);
            ws_ckpt_free(o);
        }
    teardown(&f);
}

/* Checkpoint against checkpoint: identical reports from both modes, a planted flip named by
 * element, an unknown read mode refused. */
static void test_checkpoints(void) {
    fixture f;
    CHECK(setup(&f, "hf", 1));
    char copy[400], cmd[900];
    snprintf(copy, sizeof copy, "%s/copy.safetensors", f.dir);
    snprintf(cmd, sizeof cmd, "cp '%s' '%s'", f.hfpath, copy);
    CHECK(system(cmd) == 0);
    const char *name = "model.layers.0.self_attn.q_proj.weight";
    flip(copy, name, 1234);
    char *js[2] = {0};
    for (int mode = WS_READ_PREAD; mode <= WS_READ_MMAP; mode++) {
        ws_ckpt *a = NULL, *b = NULL;
        CHECK_OK(ws_ckpt_open(f.hfpath, &a, NULL));
        CHECK_OK(ws_ckpt_open(copy, &b, NULL));
        ws_report *r = ws_report_new();
        CHECK_OK(ws_diff_checkpoints_read(a, b, mode, NULL, NULL, r, NULL));
        CHECK(ws_report_count(r) == 1);
        const ws_finding *x = ws_report_count(r) ? ws_report_at(r, 0) : NULL;
        CHECK(x && x->status == WS_MISMATCH && strcmp(x->tensor, name) == 0);
        CHECK(x && x->element == 1234 && x->differ == 1);
        CHECK_OK(ws_report_to_json(r, &js[mode - 1], NULL));
        ws_report_free(r);
        r = ws_report_new();
        CHECK(ws_diff_checkpoints_read(a, b, 7, NULL, NULL, r, NULL) == WS_ERR_ARG);
        ws_report_free(r);
        ws_ckpt_free(a);
        ws_ckpt_free(b);
    }
    CHECK(js[0] && js[1] && strcmp(js[0], js[1]) == 0);
    free(js[0]);
    free(js[1]);
    teardown(&f);
}

int main(void) {
    const char *families[] = {"sglang", "vllm", "megatron", "transformers"};
    for (size_t i = 0; i < 4; i++)
        for (int tp = 1; tp <= 4; tp *= 2) test_modes_agree(families[i], tp);
    test_reference_truncated();
    test_checkpoints();
    return check_report("test_diff_sources");
}
