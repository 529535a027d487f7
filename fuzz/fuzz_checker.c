/*
 * Fuzz target: the weights_checker handler (ws_checker_handle), which parses network input.
 * LLVMFuzzerInitialize writes a small qwen2 checkpoint (F32, pseudo-random), shards it for
 * sglang tp=2 into a temporary directory and creates a checker for it; every input is then one
 * request body (not NUL-terminated: over-reads show under ASan). Besides "never crash, leak or
 * hang", two properties of the contract are checked, and a violation aborts:
 *   - the response is a JSON object whose "success" is true exactly when the status is 200,
 *     and the status is one of 200, 400, 413, 500;
 *   - a 200 to "compare_checksum" with an object of HF digests (the trainer's form) means each
 *     digest sent is the right one: a wrong digest that is answered 200 is a false match.
 * With WS_FUZZ_WRITE_SEEDS=DIR set, Initialize also writes seed requests (with the real
 * digests) into DIR: that is how fuzz/corpus/checker/ was started.
 */
#include "weightsum.h"
#include "../tests/c/digests_json.h" /* digests_of, shared with test_protocol */
#include "../tests/c/hf_fixture.h"   /* write_random_hf, shared with the C tests */

#include <jansson.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

static const char config_json[] =
    "{\"model_type\": \"qwen2\", \"hidden_size\": 16, \"intermediate_size\": 24, "
    "\"num_hidden_layers\": 1, \"num_attention_heads\": 4, \"num_key_value_heads\": 2, "
    "\"vocab_size\": 40, \"tie_word_embeddings\": false, \"head_dim\": 4}";

static char dir[64], dump[128];
static ws_checker *checker;
static ws_manifest *truth_sha, *truth_fast; /* the right digests of every HF tensor */

static void cleanup(void) {
    ws_checker_free(checker);
    ws_manifest_free(truth_sha);
    ws_manifest_free(truth_fast);
    if (dir[0]) {
        char cmd[128];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
        if (system(cmd) != 0) fprintf(stderr, "fuzz_checker: could not remove %s\n", dir);
    }
}

static void die(const char *what, const ws_error *err) {
    char line[1024] = "";
    if (err) ws_error_format(err, line, sizeof line);
    fprintf(stderr, "fuzz_checker: %s: %s\n", what, line);
    abort();
}

static void write_text(const char *path, const char *text) {
    FILE *f = fopen(path, "w");
    if (!f || fputs(text, f) < 0 || fclose(f) != 0) die(path, NULL);
}

static void write_seed(const char *seeds, const char *name, json_t *req) {
    char path[512], *text = json_dumps(req, JSON_COMPACT | JSON_SORT_KEYS);
    snprintf(path, sizeof path, "%s/%s", seeds, name);
    write_text(path, text);
    free(text);
    json_decref(req);
}

static void write_seeds(const char *seeds) {
    write_seed(seeds, "checksum", json_pack("{s:s}", "action", "checksum"));
    write_seed(seeds, "checksum_native", json_pack("{s:s,s:s}", "action", "checksum", "canonical", "native"));
    write_seed(seeds, "compare_sha", json_pack("{s:s,s:o}", "action", "compare_checksum", "checksums", digests_of(truth_sha)));
    write_seed(seeds, "compare_fast", json_pack("{s:s,s:o,s:s}", "action", "compare_checksum", "checksums", digests_of(truth_fast), "canonical", "bf16"));
    /* the per-rank form, from the handler's own checksum answer */
    char *text = NULL;
    int status = 0;
    const char q[] = "{\"action\":\"checksum\"}";
    if (ws_checker_handle(checker, q, sizeof q - 1, &text, &status) != WS_OK || status != 200)
        die("checksum seed", NULL);
    json_error_t je;
    json_t *ans = json_loads(text, 0, &je), *list = json_array(), *ranks = json_object_get(ans, "ranks");
    size_t i;
    json_t *rk;
    json_array_foreach(ranks, i, rk) json_array_append(list, json_object_get(rk, "checksums"));
    write_seed(seeds, "compare_ranks", json_pack("{s:s,s:o,s:i}", "action", "compare_checksum", "checksums", list, "rank_offset", 0));
    json_decref(ans);
    ws_free(text);
}

static uint64_t rng = 0x9E3779B97F4A7C15ull;
static float next_float(void) {
    rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
    return (float)((int64_t)(rng >> 40) - (1 << 23)) / (float)(1 << 27);
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc;
    (void)argv;
    snprintf(dir, sizeof dir, "/tmp/ws-fuzz-checker-XXXXXX");
    if (!mkdtemp(dir)) die("mkdtemp", NULL);
    atexit(cleanup);
    snprintf(dump, sizeof dump, "%s/tp2", dir);
    char cfg_path[160], ckpt_path[160];
    snprintf(cfg_path, sizeof cfg_path, "%s/config.json", dump);
    snprintf(ckpt_path, sizeof ckpt_path, "%s/model.safetensors", dir);
    ws_error err;
    ws_model_config *cfg = NULL;
    if (ws_model_config_parse(config_json, strlen(config_json), "config", &cfg, &err)) die("config", &err);
    ws_layout *hf = NULL, *sg = NULL;
    if (ws_layout_create("hf", cfg, 1, &hf, &err)) die("layout hf", &err);
    if (write_random_hf(hf, ckpt_path, hf_all_f32, next_float, &err)) die("write", &err);
    ws_ckpt *c = NULL;
    if (ws_ckpt_open(ckpt_path, &c, &err)) die("open", &err);
    if (ws_layout_create("sglang", cfg, 2, &sg, &err)) die("layout sglang", &err);
    char cmd[200];
    snprintf(cmd, sizeof cmd, "mkdir -p '%s'", dump);
    if (system(cmd) != 0) die("mkdir", NULL);
    write_text(cfg_path, config_json);
    if (ws_shard_checkpoint(c, sg, dump, &err)) die("shard", &err);
    ws_fastkey *key = NULL;
    if (ws_fastkey_create(WS_FAST_DEFAULT_SEED, strlen(WS_FAST_DEFAULT_SEED), &key, &err)) die("key", &err);
    ws_hash_options *o1 = NULL, *o2 = NULL;
    if (ws_hash_options_create(&o1, &err) || ws_hash_options_set(o1, WS_HASH_THREADS, 1, &err) ||
        ws_hash_options_create(&o2, &err) || ws_hash_options_set(o2, WS_HASH_THREADS, 1, &err) ||
        ws_hash_options_set(o2, WS_HASH_ALGOS, WS_ALGO_FAST, &err) ||
        ws_hash_options_set_key(o2, key, &err))
        die("options", &err);
    if (ws_hash_checkpoint(c, o1, "ckpt", &truth_sha, &err)) die("hash", &err);
    if (ws_hash_checkpoint(c, o2, "ckpt", &truth_fast, &err)) die("hash", &err);
    ws_hash_options_free(o1);
    ws_hash_options_free(o2);
    ws_fastkey_free(key);
    ws_ckpt_free(c);
    ws_layout_free(sg);
    ws_layout_free(hf);
    ws_model_config_free(cfg);
    if (ws_checker_create(dump, "sglang", 2, cfg_path, WS_CANON_BF16, NULL, 1, &checker, &err))
        die("checker", &err);
    const char *seeds = getenv("WS_FUZZ_WRITE_SEEDS");
    if (seeds) write_seeds(seeds);
    return 0;
}

/* A 200 to compare_checksum with {HF name: hex}: every digest sent must be the right one. */
static void check_no_false_match(const uint8_t *data, size_t size) {
    json_error_t je;
    json_t *req = json_loadb((const char *)data, size, JSON_REJECT_DUPLICATES, &je);
    json_t *sums = json_object_get(req, "checksums");
    const char *canon = json_string_value(json_object_get(req, "canonical"));
    if (!json_is_object(sums) || (canon && strcmp(canon, "bf16") != 0)) {
        json_decref(req); /* the native policy's digests are not the ones held here */
        return;
    }
    const char *name;
    json_t *v;
    json_object_foreach(sums, name, v) {
        const char *hex = json_string_value(v);
        const ws_manifest *m = hex && strlen(hex) == 48 ? truth_fast : truth_sha;
        const ws_manifest_entry *e = ws_manifest_find(m, name);
        char want[65] = "";
        if (e && (e->digest.algos & WS_ALGO_SHA256)) ws_sha256_hex(e->digest.sha256, want);
        else if (e) ws_fast_hex(&e->digest.fast, want);
        if (!hex || !e || strcasecmp(hex, want) != 0) {
            fprintf(stderr, "FALSE MATCH: 200 for '%s' = '%s' (right: '%s')\n", name,
                    hex ? hex : "(not a string)", want);
            abort();
        }
    }
    json_decref(req);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char *text = NULL;
    int status = 0;
    if (ws_checker_handle(checker, (const char *)data, size, &text, &status) != WS_OK) {
        if (text || status != 500) abort(); /* only "no memory for a response" may fail */
        return 0;
    }
    json_error_t je;
    json_t *r = text ? json_loads(text, 0, &je) : NULL;
    json_t *ok = json_object_get(r, "success");
    if (!json_is_object(r) || !json_is_boolean(ok) || json_is_true(ok) != (status == 200) ||
        (status != 200 && status != 400 && status != 413 && status != 500)) {
        fprintf(stderr, "bad response (status %d): %s\n", status, text ? text : "(none)");
        abort();
    }
    json_decref(r);
    ws_free(text);
    if (status == 200) check_no_false_match(data, size);
    return 0;
}
