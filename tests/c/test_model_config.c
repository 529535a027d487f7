/* ws_model_config_parse / _load: real HF configs, defaults, and every kind of bad input, read
 * back through the getters. */
#include "weightsum.h"

#include "check.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* What the getters say of a config, field by field (zero when there is none). */
typedef struct cfgv {
    char model_type[64];
    uint64_t hidden_size, intermediate_size, vocab_size, num_layers, num_heads, num_kv_heads,
        head_dim;
    int tie_word_embeddings, attention_bias, qk_norm;
    uint64_t num_experts, moe_intermediate_size, shared_expert_intermediate_size,
        n_shared_experts, first_k_dense_replace, decoder_sparse_step;
    uint32_t mlp_only_layers[WS_CFG_MAX_MLP_ONLY_LAYERS];
    uint32_t n_mlp_only_layers;
    int router_bias;
    uint32_t fp8_block_n, fp8_block_k;
} cfgv;

static void read_cfg(const ws_model_config *p, cfgv *c) {
    memset(c, 0, sizeof *c);
    if (!p) return;
    snprintf(c->model_type, sizeof c->model_type, "%s", ws_model_config_model_type(p));
#define G(k) ws_model_config_get(p, WS_CFG_##k)
    c->hidden_size = (uint64_t)G(HIDDEN_SIZE);
    c->intermediate_size = (uint64_t)G(INTERMEDIATE_SIZE);
    c->vocab_size = (uint64_t)G(VOCAB_SIZE);
    c->num_layers = (uint64_t)G(NUM_LAYERS);
    c->num_heads = (uint64_t)G(NUM_HEADS);
    c->num_kv_heads = (uint64_t)G(NUM_KV_HEADS);
    c->head_dim = (uint64_t)G(HEAD_DIM);
    c->tie_word_embeddings = (int)G(TIE_WORD_EMBEDDINGS);
    c->attention_bias = (int)G(ATTENTION_BIAS);
    c->qk_norm = (int)G(QK_NORM);
    c->num_experts = (uint64_t)G(NUM_EXPERTS);
    c->moe_intermediate_size = (uint64_t)G(MOE_INTERMEDIATE_SIZE);
    c->shared_expert_intermediate_size = (uint64_t)G(SHARED_EXPERT_INTERMEDIATE_SIZE);
    c->n_shared_experts = (uint64_t)G(N_SHARED_EXPERTS);
    c->first_k_dense_replace = (uint64_t)G(FIRST_K_DENSE_REPLACE);
    c->decoder_sparse_step = (uint64_t)G(DECODER_SPARSE_STEP);
    c->router_bias = (int)G(ROUTER_BIAS);
    c->fp8_block_n = (uint32_t)G(FP8_BLOCK_N);
    c->fp8_block_k = (uint32_t)G(FP8_BLOCK_K);
#undef G
    size_t n = 0;
    const uint32_t *only = ws_model_config_mlp_only_layers(p, &n);
    CHECK(only != NULL && n <= WS_CFG_MAX_MLP_ONLY_LAYERS);
    if (n > WS_CFG_MAX_MLP_ONLY_LAYERS) n = 0;
    if (n) memcpy(c->mlp_only_layers, only, n * sizeof *only);
    c->n_mlp_only_layers = (uint32_t)n;
}

/* Parse json (len bytes) into c through a new object, which is freed; *c zero on failure, and
 * a failed parse hands no object out. */
static ws_err parse_len(const char *json, size_t len, const char *label, cfgv *c, ws_error *e) {
    ws_model_config *p = (ws_model_config *)&p; /* must be reset to NULL on failure */
    ws_err r = ws_model_config_parse(json, len, label, &p, e);
    CHECK((r == WS_OK) == (p != NULL));
    read_cfg(r == WS_OK ? p : NULL, c);
    if (r == WS_OK) ws_model_config_free(p);
    return r;
}

static ws_err parse(const char *json, cfgv *c, ws_error *e) {
    ws_error_clear(e);
    return parse_len(json, strlen(json), "config.json", c, e);
}

static ws_err load(const char *path, cfgv *c, ws_error *e) {
    ws_model_config *p = (ws_model_config *)&p;
    ws_err r = ws_model_config_load(path, &p, e);
    CHECK((r == WS_OK) == (p != NULL));
    read_cfg(r == WS_OK ? p : NULL, c);
    if (r == WS_OK) ws_model_config_free(p);
    return r;
}

/* Llama-3.1-8B's config.json, abridged only of nothing that matters. */
static const char *llama3_8b =
    "{\"architectures\": [\"LlamaForCausalLM\"], \"attention_bias\": false,"
    " \"attention_dropout\": 0.0, \"bos_token_id\": 128000, \"eos_token_id\": [128001, 128008],"
    " \"hidden_act\": \"silu\", \"hidden_size\": 4096, \"initializer_range\": 0.02,"
    " \"intermediate_size\": 14336, \"max_position_embeddings\": 131072, \"mlp_bias\": false,"
    " \"model_type\": \"llama\", \"num_attention_heads\": 32, \"num_hidden_layers\": 32,"
    " \"num_key_value_heads\": 8, \"pretraining_tp\": 1, \"rms_norm_eps\": 1e-05,"
    " \"rope_scaling\": {\"factor\": 8.0, \"high_freq_factor\": 4.0, \"low_freq_factor\": 1.0,"
    " \"original_max_position_embeddings\": 8192, \"rope_type\": \"llama3\"},"
    " \"rope_theta\": 500000.0, \"tie_word_embeddings\": false, \"torch_dtype\": \"bfloat16\","
    " \"transformers_version\": \"4.43.0.dev0\", \"use_cache\": true, \"vocab_size\": 128256}";

static const char *llama32_1b =
    "{\"architectures\": [\"LlamaForCausalLM\"], \"head_dim\": 64, \"hidden_size\": 2048,"
    " \"intermediate_size\": 8192, \"model_type\": \"llama\", \"num_attention_heads\": 32,"
    " \"num_hidden_layers\": 16, \"num_key_value_heads\": 8, \"tie_word_embeddings\": true,"
    " \"vocab_size\": 128256}";

static const char *qwen25_7b =
    "{\"architectures\": [\"Qwen2ForCausalLM\"], \"attention_dropout\": 0.0,"
    " \"bos_token_id\": 151643, \"eos_token_id\": 151645, \"hidden_act\": \"silu\","
    " \"hidden_size\": 3584, \"initializer_range\": 0.02, \"intermediate_size\": 18944,"
    " \"max_position_embeddings\": 32768, \"max_window_layers\": 28, \"model_type\": \"qwen2\","
    " \"num_attention_heads\": 28, \"num_hidden_layers\": 28, \"num_key_value_heads\": 4,"
    " \"rms_norm_eps\": 1e-06, \"rope_theta\": 1000000.0, \"sliding_window\": 131072,"
    " \"tie_word_embeddings\": false, \"torch_dtype\": \"bfloat16\", \"use_cache\": true,"
    " \"use_sliding_window\": false, \"vocab_size\": 152064}";

static const char *qwen3_8b =
    "{\"architectures\": [\"Qwen3ForCausalLM\"], \"attention_bias\": false,"
    " \"attention_dropout\": 0.0, \"head_dim\": 128, \"hidden_act\": \"silu\","
    " \"hidden_size\": 4096, \"intermediate_size\": 12288, \"max_position_embeddings\": 40960,"
    " \"max_window_layers\": 36, \"model_type\": \"qwen3\", \"num_attention_heads\": 32,"
    " \"num_hidden_layers\": 36, \"num_key_value_heads\": 8, \"rms_norm_eps\": 1e-06,"
    " \"rope_scaling\": null, \"rope_theta\": 1000000, \"sliding_window\": null,"
    " \"tie_word_embeddings\": false, \"vocab_size\": 151936}";

static void test_valid(void) {
    cfgv c;
    ws_error e;
    CHECK_OK(parse(llama3_8b, &c, &e));
    CHECK(strcmp(c.model_type, "llama") == 0);
    CHECK(c.hidden_size == 4096 && c.intermediate_size == 14336 && c.vocab_size == 128256);
    CHECK(c.num_layers == 32 && c.num_heads == 32 && c.num_kv_heads == 8);
    CHECK(c.head_dim == 128); /* 4096 / 32 */
    CHECK(!c.tie_word_embeddings && !c.attention_bias && !c.qk_norm);

    CHECK_OK(parse(llama32_1b, &c, &e));
    CHECK(c.head_dim == 64 && c.tie_word_embeddings == 1 && c.num_layers == 16);

    CHECK_OK(parse(qwen25_7b, &c, &e));
    CHECK(strcmp(c.model_type, "qwen2") == 0);
    CHECK(c.hidden_size == 3584 && c.num_heads == 28 && c.num_kv_heads == 4);
    CHECK(c.head_dim == 128 && c.vocab_size == 152064);
    CHECK(c.attention_bias == 1); /* qwen2: q/k/v bias always, though the key is absent */
    CHECK(c.qk_norm == 0 && c.tie_word_embeddings == 0);

    CHECK_OK(parse(qwen3_8b, &c, &e));
    CHECK(strcmp(c.model_type, "qwen3") == 0);
    CHECK(c.qk_norm == 1 && c.attention_bias == 0 && c.head_dim == 128);
    CHECK(c.num_layers == 36 && c.intermediate_size == 12288);

    /* Defaults: kv heads = heads, head_dim = hidden / heads, untied, no bias. */
    CHECK_OK(parse("{\"model_type\":\"mistral\",\"hidden_size\":64,\"intermediate_size\":128,"
                   "\"vocab_size\":200,\"num_hidden_layers\":2,\"num_attention_heads\":8,"
                   "\"num_key_value_heads\":null,\"head_dim\":null}",
                   &c, &e));
    CHECK(c.num_kv_heads == 8 && c.head_dim == 8 && !c.tie_word_embeddings && !c.attention_bias &&
          !c.qk_norm);
    /* Llama with attention_bias. */
    CHECK_OK(parse("{\"model_type\":\"llama\",\"hidden_size\":64,\"intermediate_size\":128,"
                   "\"vocab_size\":200,\"num_hidden_layers\":2,\"num_attention_heads\":8,"
                   "\"attention_bias\":true,\"tie_word_embeddings\":true}",
                   &c, &e));
    CHECK(c.attention_bias == 1 && c.tie_word_embeddings == 1);
    /* qwen2 bias stays on even if a config says false (Qwen2Attention ignores the key). */
    CHECK_OK(parse("{\"model_type\":\"qwen2\",\"hidden_size\":64,\"intermediate_size\":128,"
                   "\"vocab_size\":200,\"num_hidden_layers\":2,\"num_attention_heads\":8,"
                   "\"attention_bias\":false}",
                   &c, &e));
    CHECK(c.attention_bias == 1);
    /* Qwen3Config's head_dim default is 128, not hidden / heads; null means derive it. */
    CHECK_OK(parse("{\"model_type\":\"qwen3\",\"hidden_size\":64,\"intermediate_size\":128,"
                   "\"vocab_size\":200,\"num_hidden_layers\":2,\"num_attention_heads\":8}",
                   &c, &e));
    CHECK(c.head_dim == 128 && c.qk_norm == 1);
    CHECK_OK(parse("{\"model_type\":\"qwen3\",\"hidden_size\":64,\"intermediate_size\":128,"
                   "\"vocab_size\":200,\"num_hidden_layers\":2,\"num_attention_heads\":8,"
                   "\"head_dim\":null}",
                   &c, &e));
    CHECK(c.head_dim == 8);
    /* Unknown model types parse (layouts decide what they support). */
    CHECK_OK(parse("{\"model_type\":\"qwen3_moe\",\"hidden_size\":64,\"intermediate_size\":128,"
                   "\"vocab_size\":200,\"num_hidden_layers\":2,\"num_attention_heads\":8,"
                   "\"num_experts\":8}",
                   &c, &e));
    /* Not NUL-terminated input: the parser only reads len bytes. */
    char buf[512];
    size_t n = strlen(llama32_1b);
    memcpy(buf, llama32_1b, n);
    memset(buf + n, 'x', sizeof buf - n);
    ws_error_clear(&e);
    CHECK_OK(parse_len(buf, n, NULL, &c, &e));
    CHECK(c.hidden_size == 2048);
}

/* A small valid config with one key replaced (or removed when value is NULL). */
static const char *const keys[] = {
    "model_type",          "hidden_size",         "intermediate_size",   "vocab_size",
    "num_hidden_layers",   "num_attention_heads", "num_key_value_heads", "head_dim",
    "tie_word_embeddings", "attention_bias"};
static const char *const vals[] = {"\"llama\"", "64", "128", "200",   "2",
                                   "8",         "2",  "8",   "false", "false"};
#define NKEYS (sizeof keys / sizeof keys[0])

static void build(char *out, size_t size, const char *key, const char *value) {
    size_t n = (size_t)snprintf(out, size, "{");
    bool first = true;
    for (size_t i = 0; i < NKEYS; i++) {
        const char *v = vals[i];
        if (strcmp(keys[i], key) == 0) {
            if (!value) continue;
            v = value;
        }
        n += (size_t)snprintf(out + n, size - n, "%s\"%s\": %s", first ? "" : ", ", keys[i], v);
        first = false;
    }
    snprintf(out + n, size - n, "}");
}

static void expect_err(const char *json, ws_err code, const char *mention) {
    cfgv c;
    ws_error e;
    memset(&c, 0xAB, sizeof c);
    ws_err r = parse(json, &c, &e);
    CHECK(r == code);
    CHECK(e.code == code);
    CHECK(strcmp(e.file, "config.json") == 0);
    if (mention && !strstr(e.what, mention)) {
        fprintf(stderr, "error '%s' does not mention '%s' (input %s)\n", e.what, mention, json);
        CHECK(0);
    }
    if (r != code) fprintf(stderr, "input %s gave %s: %s\n", json, ws_err_name(r), e.what);
    /* No object is handed out on failure (parse_len checks it). */
    CHECK(c.hidden_size == 0 && c.model_type[0] == '\0');
}

static void test_bad_keys(void) {
    char json[1024];
    build(json, sizeof json, "", NULL);
    cfgv c;
    ws_error e;
    CHECK_OK(parse(json, &c, &e));

    /* Every required key: missing, null, string, float, zero, negative, bool, array. */
    const char *req[] = {"hidden_size", "intermediate_size", "vocab_size", "num_hidden_layers",
                         "num_attention_heads"};
    for (size_t i = 0; i < sizeof req / sizeof req[0]; i++) {
        const char *bad[] = {NULL, "null", "\"64\"", "64.0", "0", "-8", "true", "[64]", "{}"};
        for (size_t j = 0; j < sizeof bad / sizeof bad[0]; j++) {
            build(json, sizeof json, req[i], bad[j]);
            expect_err(json, WS_ERR_JSON, req[i]);
        }
    }
    /* Optional integers: present but wrong. */
    const char *opt[] = {"num_key_value_heads", "head_dim"};
    for (size_t i = 0; i < 2; i++) {
        const char *bad[] = {"\"8\"", "8.5", "0", "-1", "false", "[]"};
        for (size_t j = 0; j < sizeof bad / sizeof bad[0]; j++) {
            build(json, sizeof json, opt[i], bad[j]);
            expect_err(json, WS_ERR_JSON, opt[i]);
        }
    }
    /* Booleans. */
    const char *bools[] = {"tie_word_embeddings", "attention_bias"};
    for (size_t i = 0; i < 2; i++) {
        const char *bad[] = {"\"true\"", "1", "0", "[]"};
        for (size_t j = 0; j < sizeof bad / sizeof bad[0]; j++) {
            build(json, sizeof json, bools[i], bad[j]);
            expect_err(json, WS_ERR_JSON, bools[i]);
        }
    }
    /* model_type. */
    expect_err("{\"model_type\": \"a\\u0000b\", \"hidden_size\": 64}", WS_ERR_JSON, NULL);
    const char *mt[] = {
        NULL,
        "null",
        "3",
        "\"\"",
        "[\"llama\"]",
        "\"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\""};
    for (size_t j = 0; j < sizeof mt / sizeof mt[0]; j++) {
        build(json, sizeof json, "model_type", mt[j]);
        expect_err(json, WS_ERR_JSON, "model_type");
    }
    /* Absurd sizes. */
    build(json, sizeof json, "hidden_size", "1073741824");
    expect_err(json, WS_ERR_JSON, "hidden_size");
    build(json, sizeof json, "num_hidden_layers", "1000000000");
    expect_err(json, WS_ERR_JSON, "num_hidden_layers");
    build(json, sizeof json, "vocab_size", "9223372036854775807");
    expect_err(json, WS_ERR_JSON, "vocab_size");
    build(json, sizeof json, "vocab_size", "99999999999999999999999999");
    expect_err(json, WS_ERR_JSON, NULL); /* jansson: integer too big */
    build(json, sizeof json, "head_dim", "1000000");
    expect_err(json, WS_ERR_JSON, "head_dim");
    /* kv heads must divide heads. */
    build(json, sizeof json, "num_key_value_heads", "3");
    expect_err(json, WS_ERR_JSON, "num_key_value_heads");
    build(json, sizeof json, "num_key_value_heads", "16");
    expect_err(json, WS_ERR_JSON, "num_key_value_heads");
    /* hidden / heads = 0 with no head_dim. */
    expect_err("{\"model_type\":\"llama\",\"hidden_size\":4,\"intermediate_size\":8,"
               "\"vocab_size\":8,\"num_hidden_layers\":1,\"num_attention_heads\":8}",
               WS_ERR_JSON, "head_dim");
    /* MLP biases: no layout can describe them. */
    expect_err("{\"model_type\":\"llama\",\"hidden_size\":64,\"intermediate_size\":128,"
               "\"vocab_size\":200,\"num_hidden_layers\":2,\"num_attention_heads\":8,"
               "\"mlp_bias\":true}",
               WS_ERR_LAYOUT, "mlp_bias");
    expect_err("{\"model_type\":\"llama\",\"hidden_size\":64,\"intermediate_size\":128,"
               "\"vocab_size\":200,\"num_hidden_layers\":2,\"num_attention_heads\":8,"
               "\"mlp_bias\":\"no\"}",
               WS_ERR_JSON, "mlp_bias");
    /* A duplicate key is ambiguous: rejected. */
    expect_err("{\"model_type\":\"llama\",\"hidden_size\":64,\"hidden_size\":32,"
               "\"intermediate_size\":128,\"vocab_size\":200,\"num_hidden_layers\":2,"
               "\"num_attention_heads\":8}",
               WS_ERR_JSON, NULL);
}

static void test_garbage(void) {
    const char *bad[] = {"",
                         " ",
                         "{",
                         "}",
                         "[]",
                         "null",
                         "42",
                         "\"x\"",
                         "{\"a\":}",
                         "{,}",
                         "{\"model_type\"",
                         "\xff\xfe",
                         "{}",
                         "[{\"model_type\":\"llama\"}]",
                         "{\"model_type\":\"llama\"} x"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        expect_err(bad[i], WS_ERR_JSON, NULL);
    /* Syntax errors carry a byte offset. */
    cfgv c;
    ws_error e;
    CHECK(parse("{\"model_type\": \"llama\",, }", &c, &e) == WS_ERR_JSON);
    CHECK(e.offset > 0);
    /* Embedded NUL byte. */
    ws_error_clear(&e);
    CHECK(parse_len("{\"a\":\0 1}", 9, "x", &c, &e) == WS_ERR_JSON);
    /* NULL arguments. */
    CHECK(parse_len(NULL, 5, "x", &c, &e) == WS_ERR_ARG);
    CHECK(ws_model_config_parse("{}", 2, "x", NULL, &e) == WS_ERR_ARG);
    CHECK(ws_model_config_load("x", NULL, &e) == WS_ERR_ARG);
    CHECK(parse_len(NULL, 0, "x", &c, NULL) == WS_ERR_JSON);
    CHECK(parse_len("{}", 2, NULL, &c, NULL) == WS_ERR_JSON);
}

/* Mutations of a valid config: every result is OK or a clean error, never a crash. */
static void test_mutations(void) {
    size_t n = strlen(qwen25_7b);
    char *buf = malloc(n + 1);
    uint64_t s = 0x9E3779B97F4A7C15ull;
    int ok = 0, bad = 0;
    for (int iter = 0; iter < 20000; iter++) {
        memcpy(buf, qwen25_7b, n + 1);
        size_t len = n;
        int edits = 1 + iter % 4;
        for (int k = 0; k < edits; k++) {
            s ^= s << 13, s ^= s >> 7, s ^= s << 17;
            size_t pos = (size_t)(s >> 8) % len;
            switch ((s >> 3) % 4) {
            case 0: buf[pos] = (char)(s >> 40); break; /* random byte */
            case 1: len = pos; break;                  /* truncate */
            case 2: buf[pos] = "{}[]\",:0123456789-e."[(s >> 20) % 20]; break;
            case 3: buf[pos] = '\0'; break; /* embedded NUL */
            }
            if (len == 0) len = 1;
        }
        cfgv c;
        ws_error e;
        ws_error_clear(&e);
        ws_err r = parse_len(buf, len, "m", &c, &e);
        if (r == WS_OK) {
            ok++;
            CHECK(c.hidden_size > 0 && c.num_kv_heads > 0 && c.num_heads % c.num_kv_heads == 0);
        } else {
            bad++;
            if (r != WS_ERR_JSON && r != WS_ERR_LAYOUT) CHECK(0);
            CHECK(e.what[0] != '\0');
        }
    }
    CHECK(ok > 0 && bad > 0);
    free(buf);
}

static void test_load(void) {
    char path[] = "/tmp/ws_test_config_XXXXXX";
    int fd = mkstemp(path);
    CHECK(fd >= 0);
    if (fd < 0) return;
    size_t n = strlen(qwen3_8b);
    CHECK(write(fd, qwen3_8b, n) == (ssize_t)n);
    close(fd);
    cfgv c;
    ws_error e;
    ws_error_clear(&e);
    CHECK_OK(load(path, &c, &e));
    CHECK(c.qk_norm == 1 && c.num_layers == 36);
    /* Errors name the file. */
    FILE *f = fopen(path, "w");
    fputs("{\"model_type\": \"qwen3\"}", f);
    fclose(f);
    CHECK(load(path, &c, &e) == WS_ERR_JSON);
    CHECK(strcmp(e.file, path) == 0 && strstr(e.what, "hidden_size"));
    unlink(path);
    CHECK(load(path, &c, &e) == WS_ERR_IO);
    CHECK(strcmp(e.file, path) == 0);
    CHECK(load("/", &c, &e) != WS_OK); /* a directory */
    CHECK(load(NULL, &c, &e) == WS_ERR_ARG);
    char fmt[600];
    CHECK(ws_error_format(&e, fmt, sizeof fmt) > 0);
}

/* Qwen3-30B-A3B's config.json (the keys a layout reads), GLM-4.5-Air's, and Qwen2-MoE defaults. */
static void test_moe(void) {
    cfgv c;
    ws_error e;
    CHECK_OK(parse("{\"model_type\": \"qwen3_moe\", \"hidden_size\": 2048, \"intermediate_size\":"
                   " 6144, \"vocab_size\": 151936, \"num_hidden_layers\": 48,"
                   " \"num_attention_heads\": 32, \"num_key_value_heads\": 4, \"head_dim\": 128,"
                   " \"num_experts\": 128, \"num_experts_per_tok\": 8, \"moe_intermediate_size\":"
                   " 768, \"decoder_sparse_step\": 1, \"mlp_only_layers\": [],"
                   " \"norm_topk_prob\": true, \"tie_word_embeddings\": false}",
                   &c, &e));
    CHECK(c.num_experts == 128 && c.moe_intermediate_size == 768 && c.decoder_sparse_step == 1);
    CHECK(c.qk_norm == 1 && c.attention_bias == 0 && c.n_mlp_only_layers == 0 && c.router_bias == 0);
    CHECK_OK(parse("{\"model_type\": \"glm4_moe\", \"hidden_size\": 4096, \"intermediate_size\":"
                   " 10944, \"vocab_size\": 151552, \"num_hidden_layers\": 46,"
                   " \"num_attention_heads\": 96, \"num_key_value_heads\": 8, \"head_dim\": 128,"
                   " \"attention_bias\": true, \"n_routed_experts\": 128, \"n_shared_experts\": 1,"
                   " \"moe_intermediate_size\": 1408, \"first_k_dense_replace\": 1,"
                   " \"use_qk_norm\": false, \"num_nextn_predict_layers\": 1}",
                   &c, &e));
    CHECK(c.num_experts == 128 && c.n_shared_experts == 1 && c.first_k_dense_replace == 1);
    CHECK(c.router_bias == 1 && c.attention_bias == 1 && c.qk_norm == 0);
    /* Qwen2MoeConfig defaults: 60 experts of 1408, shared 5632, q/k/v bias (qkv_bias) */
    CHECK_OK(parse("{\"model_type\": \"qwen2_moe\", \"hidden_size\": 64, \"intermediate_size\": 96,"
                   " \"vocab_size\": 100, \"num_hidden_layers\": 4, \"num_attention_heads\": 8,"
                   " \"mlp_only_layers\": [0, 3]}",
                   &c, &e));
    CHECK(c.num_experts == 60 && c.moe_intermediate_size == 1408 &&
          c.shared_expert_intermediate_size == 5632 && c.attention_bias == 1);
    CHECK(c.n_mlp_only_layers == 2 && c.mlp_only_layers[0] == 0 && c.mlp_only_layers[1] == 3);
    CHECK_OK(parse("{\"model_type\": \"qwen2_moe\", \"hidden_size\": 64, \"intermediate_size\": 96,"
                   " \"vocab_size\": 100, \"num_hidden_layers\": 4, \"num_attention_heads\": 8,"
                   " \"qkv_bias\": false}", &c, &e));
    CHECK(c.attention_bias == 0);
    /* bad MoE keys */
    static const char *bad[] = {
        "\"num_experts\": -1", "\"num_experts\": 1.5", "\"mlp_only_layers\": [4]",
        "\"mlp_only_layers\": 3", "\"mlp_only_layers\": [\"1\"]", "\"decoder_sparse_step\": 0",
        "\"num_experts\": 100000", "\"moe_intermediate_size\": 0",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char buf[512];
        snprintf(buf, sizeof buf,
                 "{\"model_type\": \"qwen3_moe\", \"hidden_size\": 64, \"intermediate_size\": 96,"
                 " \"vocab_size\": 100, \"num_hidden_layers\": 4, \"num_attention_heads\": 8, %s}",
                 bad[i]);
        ws_err r = parse(buf, &c, &e);
        CHECK(r == WS_ERR_JSON || r == WS_ERR_LIMIT);
        CHECK(strstr(e.what, "config key"));
    }
    /* a dense model ignores MoE keys it does not have */
    CHECK_OK(parse("{\"model_type\": \"llama\", \"hidden_size\": 64, \"intermediate_size\": 96,"
                   " \"vocab_size\": 100, \"num_hidden_layers\": 4, \"num_attention_heads\": 8,"
                   " \"num_experts\": 8}", &c, &e));
    CHECK(c.num_experts == 0);
}

int main(void) {
    test_valid();
    test_bad_keys();
    test_garbage();
    test_mutations();
    test_load();
    test_moe();
    return check_report("test_model_config");
}
