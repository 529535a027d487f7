/* ws_checker_create_parallel: an SGLang MoE engine at TP=2, EP=2 served before its dump exists
 * (the layout from the parallel config alone, no weightsum-layout.json ever written) checks the
 * dump the weight sync then writes: a `checksum` answer as `expect` predicts it, a
 * compare_checksum that matches; a tp-only checker cannot read that dump; and experts swapped
 * between two slots of one rank are caught and named (tensor and rank). */
#include "check.h"
#include "digests_json.h"
#include "hf_fixture.h"
#include "weightsum.h"

#include <jansson.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static const char *config_json =
    "{\"model_type\": \"qwen3_moe\", \"hidden_size\": 64, \"intermediate_size\": 96,"
    " \"vocab_size\": 1000, \"num_hidden_layers\": 2, \"num_attention_heads\": 8,"
    " \"num_key_value_heads\": 4, \"head_dim\": 8, \"num_experts\": 8,"
    " \"moe_intermediate_size\": 32, \"decoder_sparse_step\": 1,"
    " \"tie_word_embeddings\": false}";

static char dir[64], dump[128], cfg_path[128], ckpt_path[128];

static void write_text(const char *path, const char *text) {
    FILE *f = fopen(path, "w");
    CHECK(f && fputs(text, f) >= 0 && fclose(f) == 0);
}

static uint64_t rng = 0x2545F4914F6CDD1Dull;
static float next_float(void) {
    rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
    return (float)((int64_t)(rng >> 40) - (1 << 23)) / (float)(1 << 27);
}

/* The trainer's HF checkpoint: every tensor of the hf layout, random F32 values. */
static void write_checkpoint(const ws_model_config *cfg) {
    ws_layout *hf = NULL;
    CHECK_OK(ws_layout_create("hf", cfg, 1, &hf, NULL));
    CHECK_OK(write_random_hf(hf, ckpt_path, hf_all_f32, next_float, NULL));
    ws_layout_free(hf);
}

static ws_parallel *par_of(long tp, long ep) {
    ws_parallel *p = NULL;
    CHECK_OK(ws_parallel_create(&p, NULL));
    CHECK_OK(ws_parallel_set(p, WS_PAR_TP, tp, NULL));
    CHECK_OK(ws_parallel_set(p, WS_PAR_EP, ep, NULL));
    return p;
}

/* One request to c: the parsed answer (caller decrefs) and its status. */
static json_t *ask(ws_checker *c, const char *body, int *status, char **raw) {
    char *text = NULL;
    *status = -1;
    CHECK_OK(ws_checker_handle(c, body, strlen(body), &text, status));
    json_error_t je;
    json_t *r = text ? json_loads(text, 0, &je) : NULL;
    CHECK(json_is_object(r));
    CHECK(json_is_true(json_object_get(r, "success")) == (*status == 200));
    if (raw) *raw = text;
    else ws_free(text);
    return r;
}

/* compare_checksum of the trainer's full-tensor digests. */
static json_t *compare(ws_checker *c, const ws_manifest *m, int *status) {
    json_t *sums = json_object();
    for (size_t i = 0; i < ws_manifest_count(m); i++) {
        const ws_manifest_entry *e = ws_manifest_entry_at(m, i);
        char hex[65];
        ws_sha256_hex(e->digest.sha256, hex);
        json_object_set_new(sums, e->name, json_string(hex));
    }
    json_t *req = json_pack("{s:s,s:o}", "action", "compare_checksum", "checksums", sums);
    char *body = json_dumps(req, JSON_COMPACT);
    json_decref(req);
    json_t *r = ask(c, body, status, NULL);
    free(body);
    return r;
}

/* Some item of the list names tensor on rank (by "rank" or among "ranks"). */
static bool names(json_t *r, const char *list, const char *tensor, int rank) {
    json_t *it, *rk;
    size_t i, j;
    json_array_foreach(json_object_get(r, list), i, it) {
        const char *t = json_string_value(json_object_get(it, "tensor"));
        if (!t || strcmp(t, tensor) != 0) continue;
        if (json_is_integer(json_object_get(it, "rank")) &&
            json_integer_value(json_object_get(it, "rank")) == rank)
            return true;
        json_array_foreach(json_object_get(it, "ranks"), j, rk) if (json_integer_value(rk) == rank) return true;
    }
    return false;
}

/* Swap expert slots 0 and 1 of layer `layer`'s w13 and w2 in rank `rank`'s file: the experts
 * sit in each other's place, every byte still there. */
static void swap_expert_slots(int rank, int layer) {
    char path[200], w13[96], w2[96];
    snprintf(path, sizeof path, "%s/model-rank-%d-part-0.safetensors", dump, rank);
    snprintf(w13, sizeof w13, "model.layers.%d.mlp.experts.w13_weight", layer);
    snprintf(w2, sizeof w2, "model.layers.%d.mlp.experts.w2_weight", layer);
    ws_ckpt *c = NULL;
    CHECK_OK(ws_ckpt_open(path, &c, NULL));
    if (!c) return;
    size_t n = ws_ckpt_count(c), swapped = 0;
    ws_tensor_spec *specs = calloc(n, sizeof *specs);
    void **bufs = calloc(n, sizeof *bufs);
    for (size_t i = 0; i < n; i++) {
        const ws_tensor *t = ws_ckpt_tensor(c, i);
        bufs[i] = malloc(t->nbytes ? t->nbytes : 1);
        memcpy(bufs[i], t->data, t->nbytes);
        if (strcmp(t->name, w13) == 0 || strcmp(t->name, w2) == 0) {
            CHECK(t->ndim == 3 && t->shape[0] >= 2);
            size_t slot = (size_t)(t->nbytes / t->shape[0]);
            uint8_t *tmp = malloc(slot), *b = bufs[i];
            memcpy(tmp, b, slot);
            memmove(b, b + slot, slot);
            memcpy(b + slot, tmp, slot);
            free(tmp);
            swapped++;
        }
        specs[i] = (ws_tensor_spec){.name = t->name, .dtype = t->dtype, .ndim = t->ndim,
                                    .data = bufs[i]};
        memcpy(specs[i].shape, t->shape, sizeof t->shape);
    }
    CHECK(swapped == 2);
    CHECK_OK(ws_safetensors_write(path, specs, n, NULL, NULL));
    for (size_t i = 0; i < n; i++) free(bufs[i]);
    free(bufs);
    free(specs);
    ws_ckpt_free(c);
}

int main(void) {
    snprintf(dir, sizeof dir, "/tmp/ws-test-checker-ep-XXXXXX");
    CHECK(mkdtemp(dir) != NULL);
    snprintf(dump, sizeof dump, "%s/engine", dir);
    snprintf(cfg_path, sizeof cfg_path, "%s/config.json", dir);
    snprintf(ckpt_path, sizeof ckpt_path, "%s/model.safetensors", dir);
    CHECK(mkdir(dump, 0755) == 0);
    write_text(cfg_path, config_json);
    ws_model_config *cfg = NULL;
    CHECK_OK(ws_model_config_parse(config_json, strlen(config_json), "config", &cfg, NULL));
    write_checkpoint(cfg);
    ws_ckpt *ck = NULL;
    CHECK_OK(ws_ckpt_open(ckpt_path, &ck, NULL));
    ws_hash_options *o = check_hash_options(WS_CANON_BF16, WS_ALGO_SHA256, NULL, 1);
    ws_manifest *man = NULL;
    CHECK_OK(ws_hash_checkpoint(ck, o, "trainer", &man, NULL));
    ws_hash_options_free(o);

    /* Served before the engine wrote anything: the flags say the whole layout. */
    ws_parallel *par = par_of(2, 2);
    ws_checker *ep = NULL, *tp_only = NULL;
    ws_error err;
    CHECK_OK(ws_checker_create_parallel(dump, "sglang", par, cfg_path, 0, WS_CANON_BF16, NULL, 1,
                                        &ep, &err));
    CHECK_OK(ws_checker_create(dump, "sglang", 2, cfg_path, WS_CANON_BF16, NULL, 1, &tp_only,
                               &err));
    /* no dump, no family: nothing says the layout */
    ws_checker *none = (ws_checker *)dir;
    CHECK(ws_checker_create_parallel(dump, NULL, par, cfg_path, 0, WS_CANON_BF16, NULL, 1, &none,
                                     &err) != WS_OK &&
          none == NULL);
    /* a parallel configuration this family cannot use is said at start-up */
    ws_parallel *bad = par_of(2, 4);
    CHECK(ws_checker_create_parallel(dump, "sglang", bad, cfg_path, 0, WS_CANON_BF16, NULL, 1,
                                     &none, &err) == WS_ERR_LAYOUT);
    ws_parallel_free(bad);

    /* The weight sync writes the EP=2 dump (and no weightsum-layout.json). */
    ws_layout *l = NULL;
    CHECK_OK(ws_layout_create_parallel("sglang", cfg, par, &l, NULL));
    CHECK(ws_layout_rank_count(l) == 2 && ws_layout_parallel(l, WS_PAR_MOE_TP) == 1);
    CHECK_OK(ws_shard_checkpoint(ck, l, dump, NULL));
    char lj[200];
    snprintf(lj, sizeof lj, "%s/weightsum-layout.json", dump);
    CHECK(unlink(lj) == 0);

    /* checksum: every HF tensor's digest as the trainer's, rank answers as expect predicts */
    int st;
    char *raw = NULL;
    json_t *r = ask(ep, "{\"action\": \"checksum\", \"algorithm\": \"sha256\"}", &st, &raw);
    CHECK(st == 200);
    CHECK(digests_equal(json_object_get(r, "checksums"), man));
    CHECK(json_array_size(json_object_get(r, "ranks")) == 2);
    json_decref(r);
    ws_free(raw);
    r = ask(ep, "{\"action\": \"checksum\"}", &st, &raw); /* what expect asks */
    CHECK(st == 200);
    json_decref(r);
    ws_expect *ex = NULL;
    CHECK_OK(ws_expect_checkpoint(l, ck, WS_ENGINE_SGLANG, WS_SGLANG_CUDA, "trainer", 1, &ex,
                                  NULL));
    ws_report *rep = ws_report_new();
    CHECK_OK(ws_expect_judge(ex, raw, strlen(raw), st, NULL, 0, rep, &err));
    CHECK(ws_report_ok(rep) && ws_report_matched(rep) > 0);
    ws_report_free(rep);
    ws_free(raw);

    /* compare_checksum: all match */
    r = compare(ep, man, &st);
    CHECK(st == 200);
    CHECK(json_integer_value(json_object_get(r, "matched")) == (json_int_t)ws_manifest_count(man));
    json_decref(r);

    /* the tp-only checker (what serve built before --ep) cannot vouch for this dump */
    r = compare(tp_only, man, &st);
    CHECK(st != 200);
    json_decref(r);

    /* Experts 4 and 5 (rank 1's slots 0 and 1 of layer 0) swapped: caught, named, and only
     * they. */
    swap_expert_slots(1, 0);
    r = compare(ep, man, &st);
    CHECK(st == 400);
    const char *parts[] = {"gate_proj", "up_proj", "down_proj"};
    for (int e = 4; e <= 5; e++)
        for (size_t k = 0; k < 3; k++) {
            char name[96];
            snprintf(name, sizeof name, "model.layers.0.mlp.experts.%d.%s.weight", e, parts[k]);
            CHECK(names(r, "mismatched", name, 1));
        }
    CHECK(json_array_size(json_object_get(r, "mismatched")) == 6);
    CHECK(!names(r, "mismatched", "model.layers.0.mlp.experts.6.gate_proj.weight", 1));
    CHECK(!names(r, "mismatched", "model.layers.1.mlp.experts.4.gate_proj.weight", 1));
    json_decref(r);
    /* and the engine's own checksum answer no longer fits the prediction, naming the rank */
    r = ask(ep, "{\"action\": \"checksum\"}", &st, &raw);
    json_decref(r);
    rep = ws_report_new();
    CHECK_OK(ws_expect_judge(ex, raw, strlen(raw), st, NULL, 0, rep, &err));
    CHECK(!ws_report_ok(rep));
    bool w13_named = false;
    for (size_t i = 0; i < ws_report_count(rep); i++) {
        const ws_finding *f = ws_report_at(rep, i);
        if (f->rank == 1 && f->local &&
            strcmp(f->local, "model.layers.0.mlp.experts.w13_weight") == 0)
            w13_named = true;
        CHECK(f->rank == 1);
    }
    CHECK(w13_named);
    ws_report_free(rep);
    ws_free(raw);

    ws_expect_free(ex);
    ws_checker_free(ep);
    ws_checker_free(tp_only);
    ws_layout_free(l);
    ws_parallel_free(par);
    ws_manifest_free(man);
    ws_ckpt_free(ck);
    ws_model_config_free(cfg);
    char cmd[200];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    CHECK(system(cmd) == 0);
    return check_report("test_checker_parallel");
}
