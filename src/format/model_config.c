/*
 * Model config: the few numbers of a HF config.json that a layout needs (docs/layouts.md).
 * Defaults follow transformers' LlamaConfig / MistralConfig / Qwen2Config / Qwen3Config, and for
 * MoE models Qwen2MoeConfig / Qwen3MoeConfig / Glm4MoeConfig.
 */
#include "layout_internal.h"

#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CONFIG_MAX_BYTES (16u * 1024u * 1024u)
#define QWEN3_DEFAULT_HEAD_DIM 128 /* Qwen3Config(head_dim=128) */

/* Upper bounds far above any released model; past them a config is garbage. */
typedef struct limit {
    const char *key;
    size_t offset;
    uint64_t max;
} limit;

#define FIELD(f) offsetof(ws_model_config, f)
static const limit limits[] = {
    {"hidden_size", FIELD(hidden_size), 1u << 20},
    {"intermediate_size", FIELD(intermediate_size), 1u << 24},
    {"vocab_size", FIELD(vocab_size), 1u << 28},
    {"num_hidden_layers", FIELD(num_layers), 1u << 16},
    {"num_attention_heads", FIELD(num_heads), 1u << 16},
    {"num_key_value_heads", FIELD(num_kv_heads), 1u << 16},
    {"head_dim", FIELD(head_dim), 1u << 16},
};
#define N_LIMITS (sizeof limits / sizeof limits[0])

static uint64_t field(const ws_model_config *c, size_t off) {
    uint64_t v;
    memcpy(&v, (const char *)c + off, sizeof v);
    return v;
}

ws_err wsl_config_check(const ws_model_config *cfg, ws_err code, const char *label, ws_error *err) {
    if (!memchr(cfg->model_type, '\0', sizeof cfg->model_type) || !cfg->model_type[0])
        return wsi_fail(err, code, label, NULL, -1, "config key 'model_type': empty or too long");
    for (size_t i = 0; i < N_LIMITS; i++) {
        uint64_t v = field(cfg, limits[i].offset);
        if (v == 0 || v > limits[i].max)
            return wsi_fail(err, code, label, NULL, -1,
                            "config key '%s': %llu is out of range [1, %llu]", limits[i].key,
                            (unsigned long long)v, (unsigned long long)limits[i].max);
    }
    /* MoE fields: all zero for a dense model. */
    const struct {
        const char *key;
        uint64_t v, max;
    } moe[] = {{"num_experts", cfg->num_experts, 1u << 16},
               {"moe_intermediate_size", cfg->moe_intermediate_size, 1u << 24},
               {"shared_expert_intermediate_size", cfg->shared_expert_intermediate_size, 1u << 24},
               {"n_shared_experts", cfg->n_shared_experts, 1u << 8},
               {"decoder_sparse_step", cfg->decoder_sparse_step, 1u << 16}};
    for (size_t i = 0; i < sizeof moe / sizeof moe[0]; i++)
        if (moe[i].v > moe[i].max)
            return wsi_fail(err, code, label, NULL, -1,
                            "config key '%s': %llu is out of range [0, %llu]", moe[i].key,
                            (unsigned long long)moe[i].v, (unsigned long long)moe[i].max);
    if (cfg->num_experts && !cfg->moe_intermediate_size)
        return wsi_fail(err, code, label, NULL, -1,
                        "config key 'moe_intermediate_size': 0 with %llu experts",
                        (unsigned long long)cfg->num_experts);
    if (cfg->n_mlp_only_layers > sizeof cfg->mlp_only_layers / sizeof cfg->mlp_only_layers[0])
        return wsi_fail(err, code, label, NULL, -1, "config key 'mlp_only_layers': too many");
    if ((cfg->fp8_block_n == 0) != (cfg->fp8_block_k == 0) || cfg->fp8_block_n > 1u << 16 ||
        cfg->fp8_block_k > 1u << 16)
        return wsi_fail(err, code, label, NULL, -1,
                        "config key 'weight_block_size': [%u, %u] is not a block shape",
                        cfg->fp8_block_n, cfg->fp8_block_k);
    if (cfg->num_kv_heads > cfg->num_heads || cfg->num_heads % cfg->num_kv_heads)
        return wsi_fail(err, code, label, NULL, -1,
                        "config key 'num_key_value_heads': %llu does not divide "
                        "num_attention_heads %llu",
                        (unsigned long long)cfg->num_kv_heads, (unsigned long long)cfg->num_heads);
    return WS_OK;
}

/* ---- parsing ---------------------------------------------------------------------------- */

static ws_err bad_key(ws_error *err, const char *label, const char *key, const char *what) {
    return wsi_fail(err, WS_ERR_JSON, label, NULL, -1, "config key '%s': %s", key, what);
}

/* A positive integer. *present is false when the key is absent or null. */
static ws_err get_uint(json_t *root, const char *key, bool required, uint64_t *out, bool *present,
                       const char *label, ws_error *err) {
    json_t *v = json_object_get(root, key);
    *present = false;
    if (!v || json_is_null(v)) {
        if (required)
            return bad_key(err, label, key,
                           v ? "null, expected a positive integer" : "missing (required)");
        return WS_OK;
    }
    if (!json_is_integer(v)) return bad_key(err, label, key, "expected a positive integer");
    json_int_t n = json_integer_value(v);
    if (n <= 0)
        return wsi_fail(err, WS_ERR_JSON, label, NULL, -1,
                        "config key '%s': %lld, expected a positive integer", key, (long long)n);
    *out = (uint64_t)n;
    *present = true;
    return WS_OK;
}

/* A boolean; absent or null leaves *out at its default. */
static ws_err get_bool(json_t *root, const char *key, int *out, const char *label, ws_error *err) {
    json_t *v = json_object_get(root, key);
    if (!v || json_is_null(v)) return WS_OK;
    if (!json_is_boolean(v)) return bad_key(err, label, key, "expected true or false");
    *out = json_is_true(v);
    return WS_OK;
}

/* A non-negative integer with a default. */
static ws_err get_count(json_t *root, const char *key, uint64_t dflt, uint64_t *out,
                        const char *label, ws_error *err) {
    json_t *v = json_object_get(root, key);
    *out = dflt;
    if (!v || json_is_null(v)) return WS_OK;
    if (!json_is_integer(v) || json_integer_value(v) < 0)
        return bad_key(err, label, key, "expected a non-negative integer");
    *out = (uint64_t)json_integer_value(v);
    return WS_OK;
}

/* MoE keys of qwen2_moe, qwen3_moe and glm4_moe, with their configs' defaults. */
static ws_err parse_moe(json_t *root, const char *label, ws_model_config *c, ws_error *err) {
    bool q2 = strcmp(c->model_type, "qwen2_moe") == 0, q3 = strcmp(c->model_type, "qwen3_moe") == 0;
    bool glm = strcmp(c->model_type, "glm4_moe") == 0;
    ws_err e;
    if (q2 || q3) {
        /* Qwen2MoeConfig: 60 experts of 1408, shared expert 5632; Qwen3MoeConfig: 128 of 768 */
        if ((e = get_count(root, "num_experts", q2 ? 60 : 128, &c->num_experts, label, err)) ||
            (e = get_count(root, "moe_intermediate_size", q2 ? 1408 : 768,
                           &c->moe_intermediate_size, label, err)) ||
            (e = get_count(root, "decoder_sparse_step", 1, &c->decoder_sparse_step, label, err)))
            return e;
        if (q2 && (e = get_count(root, "shared_expert_intermediate_size", 5632,
                                 &c->shared_expert_intermediate_size, label, err)))
            return e;
        if (c->decoder_sparse_step == 0)
            return bad_key(err, label, "decoder_sparse_step", "0, expected a positive integer");
        json_t *only = json_object_get(root, "mlp_only_layers");
        if (only && !json_is_null(only)) {
            if (!json_is_array(only))
                return bad_key(err, label, "mlp_only_layers", "expected a list of layer indices");
            size_t n = json_array_size(only);
            if (n > sizeof c->mlp_only_layers / sizeof c->mlp_only_layers[0])
                return wsi_fail(err, WS_ERR_LIMIT, label, NULL, -1,
                                "config key 'mlp_only_layers': %zu layers, more than %zu", n,
                                sizeof c->mlp_only_layers / sizeof c->mlp_only_layers[0]);
            for (size_t i = 0; i < n; i++) {
                json_t *x = json_array_get(only, i);
                if (!json_is_integer(x) || json_integer_value(x) < 0 ||
                    (uint64_t)json_integer_value(x) >= c->num_layers)
                    return bad_key(err, label, "mlp_only_layers",
                                   "expected layer indices below num_hidden_layers");
                c->mlp_only_layers[i] = (uint32_t)json_integer_value(x);
            }
            c->n_mlp_only_layers = (uint32_t)n;
        }
    } else if (glm) {
        /* Glm4MoeConfig: 128 routed experts of 1408, 1 shared, first_k_dense_replace 1; the
         * router's e_score_correction_bias is a persistent buffer, so checkpoints hold it. */
        if ((e = get_count(root, "n_routed_experts", 128, &c->num_experts, label, err)) ||
            (e = get_count(root, "moe_intermediate_size", 1408, &c->moe_intermediate_size, label,
                           err)) ||
            (e = get_count(root, "n_shared_experts", 1, &c->n_shared_experts, label, err)) ||
            (e = get_count(root, "first_k_dense_replace", 1, &c->first_k_dense_replace, label,
                           err)))
            return e;
        int qk = 0;
        if ((e = get_bool(root, "use_qk_norm", &qk, label, err))) return e;
        c->qk_norm = qk;
        c->router_bias = 1;
    }
    return WS_OK;
}

/* quantization_config: block FP8 (quant_method "fp8" with weight_block_size) is laid out; any
 * other quantisation would change every weight's shape and dtype, so it is refused. */
static ws_err parse_quantization(json_t *root, const char *label, ws_model_config *c,
                                 ws_error *err) {
    json_t *q = json_object_get(root, "quantization_config");
    if (!q || json_is_null(q)) return WS_OK;
    if (!json_is_object(q)) return bad_key(err, label, "quantization_config", "expected an object");
    const char *method = json_string_value(json_object_get(q, "quant_method"));
    if (!method || strcmp(method, "fp8") != 0)
        return wsi_fail(err, WS_ERR_LAYOUT, label, NULL, -1,
                        "config key 'quantization_config': quant_method '%.40s' is not laid out "
                        "(block FP8 only)",
                        method ? method : "(none)");
    json_t *bs = json_object_get(q, "weight_block_size");
    if (!json_is_array(bs) || json_array_size(bs) != 2 ||
        !json_is_integer(json_array_get(bs, 0)) || !json_is_integer(json_array_get(bs, 1)) ||
        json_integer_value(json_array_get(bs, 0)) < 1 ||
        json_integer_value(json_array_get(bs, 1)) < 1 ||
        json_integer_value(json_array_get(bs, 0)) > 65536 ||
        json_integer_value(json_array_get(bs, 1)) > 65536)
        return wsi_fail(err, WS_ERR_LAYOUT, label, NULL, -1,
                        "config key 'quantization_config': FP8 without a weight_block_size "
                        "[n, k] (per-tensor FP8) is not laid out");
    const char *fmt = json_string_value(json_object_get(q, "fmt"));
    if (fmt && strcmp(fmt, "e4m3") != 0)
        return wsi_fail(err, WS_ERR_LAYOUT, label, NULL, -1,
                        "config key 'quantization_config': fmt '%.20s', only e4m3 is laid out",
                        fmt);
    const char *sf = json_string_value(json_object_get(q, "scale_fmt"));
    if (sf && strcmp(sf, "ue8m0") == 0)
        return wsi_fail(err, WS_ERR_LAYOUT, label, NULL, -1,
                        "config key 'quantization_config': scale_fmt ue8m0: engines requantise "
                        "and pack such scales (int32 ue8m0 for DeepGEMM), which weightsum does "
                        "not reproduce");
    c->fp8_block_n = (uint32_t)json_integer_value(json_array_get(bs, 0));
    c->fp8_block_k = (uint32_t)json_integer_value(json_array_get(bs, 1));
    return WS_OK;
}

static ws_err parse_root(json_t *root, const char *label, ws_model_config *c, ws_error *err) {
    if (!json_is_object(root))
        return wsi_fail(err, WS_ERR_JSON, label, NULL, -1, "config is not a JSON object");

    json_t *mt = json_object_get(root, "model_type");
    if (!mt) return bad_key(err, label, "model_type", "missing (required)");
    if (!json_is_string(mt)) return bad_key(err, label, "model_type", "expected a string");
    size_t n = json_string_length(mt);
    if (n == 0 || n >= sizeof c->model_type || memchr(json_string_value(mt), '\0', n))
        return bad_key(err, label, "model_type", "empty, too long or holds a NUL");
    memcpy(c->model_type, json_string_value(mt), n);

    static const struct {
        const char *key;
        size_t offset;
    } required[] = {
        {"hidden_size", FIELD(hidden_size)},       {"intermediate_size", FIELD(intermediate_size)},
        {"vocab_size", FIELD(vocab_size)},         {"num_hidden_layers", FIELD(num_layers)},
        {"num_attention_heads", FIELD(num_heads)},
    };
    bool present;
    for (size_t i = 0; i < sizeof required / sizeof required[0]; i++) {
        uint64_t v;
        ws_err e = get_uint(root, required[i].key, true, &v, &present, label, err);
        if (e) return e;
        memcpy((char *)c + required[i].offset, &v, sizeof v);
    }

    ws_err e = get_uint(root, "num_key_value_heads", false, &c->num_kv_heads, &present, label, err);
    if (e) return e;
    if (!present) c->num_kv_heads = c->num_heads;

    bool qwen2 = strcmp(c->model_type, "qwen2") == 0, qwen3 = strcmp(c->model_type, "qwen3") == 0;
    json_t *hd = json_object_get(root, "head_dim");
    e = get_uint(root, "head_dim", false, &c->head_dim, &present, label, err);
    if (e) return e;
    if (!present) {
        /* Qwen3Config's own default is 128; the others fall back to hidden / heads. An explicit
         * null means "derive it" everywhere. */
        if (qwen3 && !hd)
            c->head_dim = QWEN3_DEFAULT_HEAD_DIM;
        else
            c->head_dim = c->hidden_size / c->num_heads;
        if (c->head_dim == 0)
            return bad_key(err, label, "head_dim",
                           "absent, and hidden_size / num_attention_heads is 0");
    }

    if ((e = get_bool(root, "tie_word_embeddings", &c->tie_word_embeddings, label, err))) return e;
    if ((e = get_bool(root, "attention_bias", &c->attention_bias, label, err))) return e;
    if (qwen2) c->attention_bias = 1; /* Qwen2Attention: q/k/v bias always */
    if (strcmp(c->model_type, "qwen2_moe") == 0) { /* Qwen2MoeAttention: bias=config.qkv_bias */
        c->attention_bias = 1;
        if ((e = get_bool(root, "qkv_bias", &c->attention_bias, label, err))) return e;
    }
    c->qk_norm = qwen3 || strcmp(c->model_type, "qwen3_moe") == 0;

    if ((e = parse_moe(root, label, c, err))) return e;

    if ((e = parse_quantization(root, label, c, err))) return e;

    int mlp_bias = 0;
    if ((e = get_bool(root, "mlp_bias", &mlp_bias, label, err))) return e;
    if (mlp_bias)
        return wsi_fail(err, WS_ERR_LAYOUT, label, NULL, -1,
                        "config key 'mlp_bias': true, and no layout describes MLP biases");

    return wsl_config_check(c, WS_ERR_JSON, label, err);
}

ws_err wsi_model_config_parse_into(const char *json, size_t len, const char *label,
                                  ws_model_config *out, ws_error *err) {
    if (!out || (!json && len))
        return wsi_fail(err, WS_ERR_ARG, label, NULL, -1,
                        "ws_model_config_parse: json and out must not be NULL");
    memset(out, 0, sizeof *out);
    json_error_t je;
    json_t *root = json_loadb(json ? json : "", len, JSON_REJECT_DUPLICATES, &je);
    if (!root)
        return wsi_fail(err, WS_ERR_JSON, label, NULL, je.position,
                        "invalid JSON at line %d column %d: %s", je.line, je.column, je.text);
    ws_model_config c;
    memset(&c, 0, sizeof c);
    ws_err e = parse_root(root, label, &c, err);
    json_decref(root);
    if (!e) *out = c;
    return e;
}

ws_err wsi_model_config_load_into(const char *path, ws_model_config *out, ws_error *err) {
    if (!path || !out)
        return wsi_fail(err, WS_ERR_ARG, NULL, NULL, -1,
                        "ws_model_config_load: path and out must not be NULL");
    memset(out, 0, sizeof *out);
    char *buf;
    size_t n;
    ws_err e = wsi_read_file(path, false, CONFIG_MAX_BYTES, "a config.json", &buf, &n, err);
    if (e) return e;
    e = wsi_model_config_parse_into(buf, n, path, out, err);
    free(buf);
    return e;
}

/* ---- the opaque object ------------------------------------------------------------------ */

ws_err ws_model_config_create(ws_model_config **out, ws_error *err) {
    if (!out)
        return wsi_fail(err, WS_ERR_ARG, NULL, NULL, -1, "ws_model_config_create: out is NULL");
    *out = calloc(1, sizeof **out);
    if (!*out) return wsi_fail(err, WS_ERR_NOMEM, NULL, NULL, -1, "out of memory");
    return WS_OK;
}

void ws_model_config_free(ws_model_config *c) { free(c); }

/* Parse or load into a new object (*out NULL on failure). */
static ws_err new_config(const char *json, size_t len, const char *label, const char *path,
                         ws_model_config **out, ws_error *err) {
    if (!out)
        return wsi_fail(err, WS_ERR_ARG, path ? path : label, NULL, -1,
                        "ws_model_config_%s: out is NULL", path ? "load" : "parse");
    *out = NULL;
    ws_model_config *c = malloc(sizeof *c);
    if (!c) return wsi_fail(err, WS_ERR_NOMEM, NULL, NULL, -1, "out of memory");
    ws_err e = path ? wsi_model_config_load_into(path, c, err)
             : wsi_model_config_parse_into(json, len, label, c, err);
    if (e) {
        free(c);
        return e;
    }
    *out = c;
    return WS_OK;
}

ws_err ws_model_config_parse(const char *json, size_t len, const char *label,
                             ws_model_config **out, ws_error *err) {
    return new_config(json, len, label, NULL, out, err);
}

ws_err ws_model_config_load(const char *path, ws_model_config **out, ws_error *err) {
    if (!path || !out) {
        if (out) *out = NULL;
        return wsi_fail(err, WS_ERR_ARG, NULL, NULL, -1,
                        "ws_model_config_load: path and out must not be NULL");
    }
    return new_config(NULL, 0, NULL, path, out, err);
}

typedef struct cfg_key {
    const char *name;
    size_t offset;
    unsigned size; /* 8: uint64_t, 4: uint32_t, 0: int flag */
    uint64_t max;
} cfg_key;

#define U64(f, m) {#f, FIELD(f), 8, m}
#define FLAG(f) {#f, FIELD(f), 0, 1}
static const cfg_key cfg_keys[WS_CFG__COUNT] = {
    [WS_CFG_HIDDEN_SIZE] = U64(hidden_size, 1u << 20),
    [WS_CFG_INTERMEDIATE_SIZE] = U64(intermediate_size, 1u << 24),
    [WS_CFG_VOCAB_SIZE] = U64(vocab_size, 1u << 28),
    [WS_CFG_NUM_LAYERS] = U64(num_layers, 1u << 16),
    [WS_CFG_NUM_HEADS] = U64(num_heads, 1u << 16),
    [WS_CFG_NUM_KV_HEADS] = U64(num_kv_heads, 1u << 16),
    [WS_CFG_HEAD_DIM] = U64(head_dim, 1u << 16),
    [WS_CFG_TIE_WORD_EMBEDDINGS] = FLAG(tie_word_embeddings),
    [WS_CFG_ATTENTION_BIAS] = FLAG(attention_bias),
    [WS_CFG_QK_NORM] = FLAG(qk_norm),
    [WS_CFG_NUM_EXPERTS] = U64(num_experts, 1u << 16),
    [WS_CFG_MOE_INTERMEDIATE_SIZE] = U64(moe_intermediate_size, 1u << 24),
    [WS_CFG_SHARED_EXPERT_INTERMEDIATE_SIZE] = U64(shared_expert_intermediate_size, 1u << 24),
    [WS_CFG_N_SHARED_EXPERTS] = U64(n_shared_experts, 1u << 8),
    [WS_CFG_FIRST_K_DENSE_REPLACE] = U64(first_k_dense_replace, 1u << 16),
    [WS_CFG_DECODER_SPARSE_STEP] = U64(decoder_sparse_step, 1u << 16),
    [WS_CFG_ROUTER_BIAS] = FLAG(router_bias),
    [WS_CFG_FP8_BLOCK_N] = {"fp8_block_n", FIELD(fp8_block_n), 4, 1u << 16},
    [WS_CFG_FP8_BLOCK_K] = {"fp8_block_k", FIELD(fp8_block_k), 4, 1u << 16},
};
#undef U64
#undef FLAG

ws_err ws_model_config_set(ws_model_config *c, ws_cfg_key key, long value, ws_error *err) {
    if (!c) return wsi_fail(err, WS_ERR_ARG, NULL, NULL, -1, "ws_model_config_set: c is NULL");
    if ((int)key < 0 || key >= WS_CFG__COUNT)
        return wsi_fail(err, WS_ERR_ARG, NULL, NULL, -1, "ws_model_config_set: unknown key %d",
                        (int)key);
    const cfg_key *k = &cfg_keys[key];
    if (value < 0 || (uint64_t)value > k->max)
        return wsi_fail(err, WS_ERR_ARG, NULL, NULL, -1,
                        "config key '%s': %ld is out of range [0, %llu]", k->name, value,
                        (unsigned long long)k->max);
    char *at = (char *)c + k->offset;
    if (k->size == 8) {
        uint64_t v = (uint64_t)value;
        memcpy(at, &v, sizeof v);
    } else if (k->size == 4) {
        uint32_t v = (uint32_t)value;
        memcpy(at, &v, sizeof v);
    } else {
        int v = (int)value;
        memcpy(at, &v, sizeof v);
    }
    return WS_OK;
}

long ws_model_config_get(const ws_model_config *c, ws_cfg_key key) {
    if (!c || (int)key < 0 || key >= WS_CFG__COUNT) return -1;
    const cfg_key *k = &cfg_keys[key];
    const char *at = (const char *)c + k->offset;
    if (k->size == 8) return (long)field(c, k->offset);
    if (k->size == 4) {
        uint32_t v;
        memcpy(&v, at, sizeof v);
        return (long)v;
    }
    int v;
    memcpy(&v, at, sizeof v);
    return v;
}

ws_err ws_model_config_set_model_type(ws_model_config *c, const char *model_type,
                                      ws_error *err) {
    if (!c || !model_type)
        return wsi_fail(err, WS_ERR_ARG, NULL, NULL, -1,
                        "ws_model_config_set_model_type: c and model_type must not be NULL");
    size_t n = strlen(model_type);
    if (n == 0 || n >= sizeof c->model_type)
        return wsi_fail(err, WS_ERR_ARG, NULL, NULL, -1,
                        "config key 'model_type': empty or longer than %zu bytes",
                        sizeof c->model_type - 1);
    memset(c->model_type, 0, sizeof c->model_type);
    memcpy(c->model_type, model_type, n);
    return WS_OK;
}

const char *ws_model_config_model_type(const ws_model_config *c) {
    return c ? c->model_type : NULL;
}

ws_err ws_model_config_set_mlp_only_layers(ws_model_config *c, const uint32_t *layers, size_t n,
                                           ws_error *err) {
    if (!c || (!layers && n))
        return wsi_fail(err, WS_ERR_ARG, NULL, NULL, -1,
                        "ws_model_config_set_mlp_only_layers: c and layers must not be NULL");
    if (n > WS_CFG_MAX_MLP_ONLY_LAYERS)
        return wsi_fail(err, WS_ERR_ARG, NULL, NULL, -1,
                        "config key 'mlp_only_layers': %zu layers, more than %d", n,
                        WS_CFG_MAX_MLP_ONLY_LAYERS);
    if (n) memcpy(c->mlp_only_layers, layers, n * sizeof *layers);
    c->n_mlp_only_layers = (uint32_t)n;
    return WS_OK;
}

const uint32_t *ws_model_config_mlp_only_layers(const ws_model_config *c, size_t *n) {
    if (n) *n = c ? c->n_mlp_only_layers : 0;
    return c ? c->mlp_only_layers : NULL;
}
