/* ws_checker_create_parallel with a dump on disk: a size of par is the caller's word, 1
 * included. tp=1 said for a TP=2 dump is WS_ERR_LAYOUT naming both sizes (it was silently
 * replaced by weightsum-layout.json's tp 2), with or without that file, and under
 * WS_LAYOUT_FORCE it is never a TP=2 checker either; a size flagged WS_LAYOUT_DUMP_* comes from
 * the dump. */
#include "check.h"
#include "hf_fixture.h"
#include "weightsum.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static const char *config_json =
    "{\"model_type\": \"qwen2\", \"hidden_size\": 64, \"intermediate_size\": 96,"
    " \"vocab_size\": 256, \"num_hidden_layers\": 2, \"num_attention_heads\": 4,"
    " \"num_key_value_heads\": 2, \"tie_word_embeddings\": false}";

static float value(void) {
    static uint32_t s = 12345;
    s = s * 1103515245u + 12345u;
    return (float)(s >> 16) / 65536.0f - 0.5f;
}

static ws_parallel *par_of(int tp, int ep) {
    ws_parallel *p = NULL;
    CHECK_OK(ws_parallel_create(&p, NULL));
    CHECK_OK(ws_parallel_set(p, WS_PAR_TP, tp, NULL));
    CHECK_OK(ws_parallel_set(p, WS_PAR_EP, ep, NULL));
    return p;
}

/* The tp the checker's checksum answer reports, or -1. */
static int served_tp(ws_checker *c) {
    const char *q = "{\"action\": \"checksum\", \"algorithm\": \"sha256\"}";
    char *text = NULL;
    int st = 0;
    CHECK_OK(ws_checker_handle(c, q, strlen(q), &text, &st));
    json_t *r = text ? json_loads(text, 0, NULL) : NULL;
    int tp = st == 200 && r ? (int)json_integer_value(json_object_get(r, "tp")) : -1;
    json_decref(r);
    ws_free(text);
    return tp;
}

/* Create from par and flags; the tp served, or -1 with err filled. */
static int create(const char *dir, const char *cfg, int tp, int ep, unsigned flags,
                  ws_error *err) {
    ws_parallel *p = par_of(tp, ep);
    ws_checker *c = NULL;
    ws_err rc = ws_checker_create_parallel(dir, "sglang", p, cfg, flags, WS_CANON_BF16, NULL, 1,
                                           &c, err);
    ws_parallel_free(p);
    int got = rc == WS_OK ? served_tp(c) : -1;
    CHECK((rc == WS_OK) == (c != NULL));
    ws_checker_free(c);
    return got;
}

int main(void) {
    char dir[64], dump[128], cfg_path[128], ckpt_path[128], lj[200];
    snprintf(dir, sizeof dir, "/tmp/ws-test-checker-sizes-XXXXXX");
    CHECK(mkdtemp(dir) != NULL);
    snprintf(dump, sizeof dump, "%s/engine", dir);
    snprintf(cfg_path, sizeof cfg_path, "%s/config.json", dir);
    snprintf(ckpt_path, sizeof ckpt_path, "%s/model.safetensors", dir);
    snprintf(lj, sizeof lj, "%s/weightsum-layout.json", dump);
    CHECK(mkdir(dump, 0755) == 0);
    FILE *f = fopen(cfg_path, "w");
    CHECK(f && fputs(config_json, f) >= 0 && fclose(f) == 0);
    ws_model_config *cfg = NULL;
    CHECK_OK(ws_model_config_parse(config_json, strlen(config_json), "config", &cfg, NULL));
    ws_layout *hf = NULL, *l = NULL;
    CHECK_OK(ws_layout_create("hf", cfg, 1, &hf, NULL));
    CHECK_OK(write_random_hf(hf, ckpt_path, hf_all_f32, value, NULL));
    ws_ckpt *ck = NULL;
    CHECK_OK(ws_ckpt_open(ckpt_path, &ck, NULL));
    CHECK_OK(ws_layout_create("sglang", cfg, 2, &l, NULL));
    CHECK_OK(ws_shard_checkpoint(ck, l, dump, NULL)); /* a TP=2 dump with weightsum-layout.json */

    ws_error e;
    /* tp=1 said: named, not replaced by the file's tp 2 */
    CHECK(create(dump, cfg_path, 1, 1, 0, &e) == -1 && e.code == WS_ERR_LAYOUT);
    CHECK(strstr(e.what, "tp 2") && strstr(e.what, "--tp 1"));
    /* forced: the caller's tp=1 or an error, never the file's tp 2 */
    int forced = create(dump, cfg_path, 1, 1, WS_LAYOUT_FORCE, &e);
    CHECK(forced == -1 || forced == 1);
    CHECK(forced != -1 || e.code == WS_ERR_LAYOUT);
    /* tp left to the dump (the CLI without --tp): the file's; tp=2 said: served */
    CHECK(create(dump, cfg_path, 1, 1, WS_LAYOUT_DUMP_TP, &e) == 2);
    CHECK(create(dump, cfg_path, 2, 1, 0, &e) == 2);
    CHECK(create(dump, cfg_path, 2, 1, WS_LAYOUT_DUMP_TP | WS_LAYOUT_DUMP_EP, &e) == 2);
    /* ep=2 said against a dump whose file says none (ep 1): named */
    CHECK(create(dump, cfg_path, 2, 2, 0, &e) == -1 && e.code == WS_ERR_LAYOUT);
    CHECK(strstr(e.what, "--ep 2") != NULL);

    /* no weightsum-layout.json: tp=1 said for two rank files is a mistake named too */
    CHECK(unlink(lj) == 0);
    CHECK(create(dump, cfg_path, 1, 1, 0, &e) == -1 && e.code == WS_ERR_LAYOUT);
    CHECK(strstr(e.what, "tp=1") || strstr(e.what, "--tp 2"));
    CHECK(create(dump, cfg_path, 1, 1, WS_LAYOUT_DUMP_TP, &e) == 2);

    ws_ckpt_free(ck);
    ws_layout_free(l);
    ws_layout_free(hf);
    ws_model_config_free(cfg);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    CHECK(system(cmd) == 0);
    return check_report("test_checker_sizes");
}
