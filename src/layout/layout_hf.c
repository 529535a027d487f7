/*
 * The canonical (HF transformers) tensors of dense decoder models — Llama, Mistral, Qwen2 /
 * Qwen2.5, Qwen3 — and the identity family "hf" that holds them as they are.
 */
#include "layout_internal.h"

#include <string.h>

static bool type_is(const ws_model_config *cfg, const char *t) {
    return strncmp(cfg->model_type, t, sizeof cfg->model_type) == 0;
}

ws_err wsl_dense_describe(ws_layout *l, const ws_model_config *cfg, wsl_dense *m) {
    memset(m, 0, sizeof *m);
    bool qwen2 = type_is(cfg, "qwen2");
    if (!qwen2 && !type_is(cfg, "llama") && !type_is(cfg, "mistral") && !type_is(cfg, "qwen3"))
        return wsl_reject(l,
                          "model_type '%.63s' is not a dense model this layout knows "
                          "(llama, mistral, qwen2, qwen3)",
                          cfg->model_type);
    m->H = cfg->hidden_size;
    m->I = cfg->intermediate_size;
    m->V = cfg->vocab_size;
    m->L = cfg->num_layers;
    m->nh = cfg->num_heads;
    m->nkv = cfg->num_kv_heads;
    m->hd = cfg->head_dim;
    m->qkv_bias = cfg->attention_bias != 0;
    /* HF Llama, Mistral and Qwen3 give o_proj a bias exactly when they give q/k/v one
     * (config.attention_bias); Qwen2's q/k/v bias is unconditional and its o_proj has none. */
    m->o_bias = m->qkv_bias && !qwen2;
    m->qk_norm = cfg->qk_norm != 0;
    m->tied = cfg->tie_word_embeddings != 0;
    int n = 0;
    for (int k = 0; k < WSL_KIND__COUNT; k++) {
        bool present = true;
        if (k == WSL_Q_B || k == WSL_K_B || k == WSL_V_B) present = m->qkv_bias;
        if (k == WSL_O_B) present = m->o_bias;
        if (k == WSL_Q_NORM || k == WSL_K_NORM) present = m->qk_norm;
        m->slot[k] = present ? n++ : -1;
    }
    m->per_layer = (uint32_t)n;
    return WS_OK;
}

static const char *const kind_suffix[WSL_KIND__COUNT] = {
    [WSL_Q_W] = "self_attn.q_proj.weight",
    [WSL_K_W] = "self_attn.k_proj.weight",
    [WSL_V_W] = "self_attn.v_proj.weight",
    [WSL_Q_B] = "self_attn.q_proj.bias",
    [WSL_K_B] = "self_attn.k_proj.bias",
    [WSL_V_B] = "self_attn.v_proj.bias",
    [WSL_O_W] = "self_attn.o_proj.weight",
    [WSL_O_B] = "self_attn.o_proj.bias",
    [WSL_Q_NORM] = "self_attn.q_norm.weight",
    [WSL_K_NORM] = "self_attn.k_norm.weight",
    [WSL_GATE] = "mlp.gate_proj.weight",
    [WSL_UP] = "mlp.up_proj.weight",
    [WSL_DOWN] = "mlp.down_proj.weight",
    [WSL_IN_NORM] = "input_layernorm.weight",
    [WSL_POST_NORM] = "post_attention_layernorm.weight",
};

/* HF shape of one per-layer tensor: ndim, d0, d1. */
static int kind_shape(const wsl_dense *m, int k, uint64_t *d0, uint64_t *d1) {
    uint64_t q = m->nh * m->hd, kv = m->nkv * m->hd;
    *d1 = 0;
    switch (k) {
    case WSL_Q_W: *d0 = q, *d1 = m->H; return 2;
    case WSL_K_W:
    case WSL_V_W: *d0 = kv, *d1 = m->H; return 2;
    case WSL_Q_B: *d0 = q; return 1;
    case WSL_K_B:
    case WSL_V_B: *d0 = kv; return 1;
    case WSL_O_W: *d0 = m->H, *d1 = q; return 2;
    case WSL_Q_NORM:
    case WSL_K_NORM: *d0 = m->hd; return 1;
    case WSL_GATE:
    case WSL_UP: *d0 = m->I, *d1 = m->H; return 2;
    case WSL_DOWN: *d0 = m->H, *d1 = m->I; return 2;
    default: *d0 = m->H; return 1; /* o_proj bias, layer norms */
    }
}

ws_err wsl_dense_add_hf(ws_layout *l, wsl_dense *m) {
    WSL_TRY(wsl_add_hf(l, &m->embed, -1, 2, m->V, m->H, "model.embed_tokens.weight"));
    m->layer0 = m->embed + 1;
    for (uint64_t i = 0; i < m->L; i++) {
        for (int k = 0; k < WSL_KIND__COUNT; k++) {
            if (m->slot[k] < 0) continue;
            uint64_t d0, d1;
            int nd = kind_shape(m, k, &d0, &d1);
            uint32_t idx;
            WSL_TRY(wsl_add_hf(l, &idx, -1, nd, d0, d1, "model.layers.%llu.%s",
                               (unsigned long long)i, kind_suffix[k]));
            if (idx != wsl_hf_at(m, i, (wsl_kind)k))
                return wsl_reject(l, "internal error: HF tensor order");
        }
    }
    WSL_TRY(wsl_add_hf(l, &m->norm, -1, 1, m->H, 0, "model.norm.weight"));
    return wsl_add_hf(l, &m->lm_head, m->tied ? (long)m->embed : -1, 2, m->V, m->H,
                      "lm_head.weight");
}

/* "hf": one rank holds every canonical tensor under its own name; a tied lm_head is absent. */
ws_err wsl_build_hf(ws_layout *l, const ws_model_config *cfg, int tp) {
    if (tp != 1) return wsl_reject(l, "the hf family is unsharded: tp must be 1");
    wsl_dense m;
    WSL_TRY(wsl_dense_describe(l, cfg, &m));
    WSL_TRY(wsl_expect(l, m.L * m.per_layer + 3));
    WSL_TRY(wsl_dense_add_hf(l, &m));
    size_t n = ws_layout_hf_count(l);
    for (size_t i = 0; i < n; i++) {
        const ws_hf_desc *d = ws_layout_hf(l, i);
        if (d->tied_to) continue;
        uint32_t loc;
        WSL_TRY(wsl_add_local(l, &loc, 0, d->ndim, d->shape[0], d->ndim == 2 ? d->shape[1] : 0,
                              "%s", d->name));
        WSL_TRY(wsl_piece_full(l, (uint32_t)i, loc, 0));
    }
    return WS_OK;
}
