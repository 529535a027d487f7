/*
 * The canonical (HF transformers) tensors of the decoder models we lay out — dense Llama,
 * Mistral, Qwen2 / Qwen2.5, Qwen3, the MoE Qwen3-MoE, Qwen2-MoE and GLM-4.5 (glm4_moe), and
 * DeepSeek-V2 / V3 (multi-head latent attention, dense first layers, shared experts) —
 * and the identity family "hf" that holds them as they are.
 *
 * A model is a table: per layer kind (dense or MoE) which tensors it has (slot[kind][k]) and
 * their shapes (kind_shape); families walk that table rather than hard-coding a model.
 */
#include "layout_internal.h"

#include <string.h>

static bool type_is(const ws_model_config *cfg, const char *t) {
    return strncmp(cfg->model_type, t, sizeof cfg->model_type) == 0;
}

/* Is layer i an MoE layer? Qwen*-MoE: num_experts > 0, not in mlp_only_layers, and
 * (i + 1) % decoder_sparse_step == 0 (Qwen3MoeDecoderLayer); glm4_moe: i >= first_k_dense_replace
 * (Glm4MoeDecoderLayer, moe_layer_freq 1). */
static bool layer_is_moe(const ws_model_config *cfg, uint64_t i) {
    if (cfg->num_experts == 0) return false;
    if (type_is(cfg, "glm4_moe")) return i >= cfg->first_k_dense_replace;
    /* DeepseekV2DecoderLayer / DeepseekV3DecoderLayer: layer_idx >= first_k_dense_replace and
     * layer_idx % moe_layer_freq == 0 */
    if (type_is(cfg, "deepseek_v2") || type_is(cfg, "deepseek_v3"))
        return i >= cfg->first_k_dense_replace &&
               i % (cfg->moe_layer_freq ? cfg->moe_layer_freq : 1) == 0;
    for (uint32_t k = 0; k < cfg->n_mlp_only_layers; k++)
        if (cfg->mlp_only_layers[k] == i) return false;
    uint64_t step = cfg->decoder_sparse_step ? cfg->decoder_sparse_step : 1;
    return (i + 1) % step == 0;
}

/* The order tensors of one layer are listed in (WSL_EXPERTS stands for 3 E tensors). */
static const wsl_kind layer_order[] = {
    WSL_Q_W,    WSL_K_W,         WSL_V_W,     WSL_Q_B,     WSL_K_B,     WSL_V_B,
    WSL_MLA_QA, WSL_MLA_QA_NORM, WSL_MLA_QB,  WSL_MLA_KVA, WSL_MLA_KVA_NORM, WSL_MLA_KVB,
    WSL_O_W,    WSL_O_B,         WSL_Q_NORM,  WSL_K_NORM,  WSL_GATE,    WSL_UP,
    WSL_DOWN,   WSL_ROUTER,      WSL_ROUTER_BIAS, WSL_EXPERTS, WSL_SH_GATE, WSL_SH_UP,
    WSL_SH_DOWN, WSL_SH_EXPERT_GATE, WSL_IN_NORM, WSL_POST_NORM,
};

ws_err wsl_dense_describe(ws_layout *l, const ws_model_config *cfg, wsl_dense *m) {
    memset(m, 0, sizeof *m);
    bool qwen2 = type_is(cfg, "qwen2") || type_is(cfg, "qwen2_moe");
    bool mla = type_is(cfg, "deepseek_v3") || type_is(cfg, "deepseek_v2");
    bool moe_type = type_is(cfg, "qwen3_moe") || type_is(cfg, "qwen2_moe") ||
                    type_is(cfg, "glm4_moe") || (mla && cfg->num_experts);
    if (!qwen2 && !moe_type && !mla && !type_is(cfg, "llama") && !type_is(cfg, "mistral") &&
        !type_is(cfg, "qwen3"))
        return wsl_reject(l,
                          "model_type '%.63s' is not a model this layout knows (llama, mistral, "
                          "qwen2, qwen3, qwen2_moe, qwen3_moe, glm4_moe, deepseek_v2, "
                          "deepseek_v3)",
                          cfg->model_type);
    if (mla && (cfg->kv_lora_rank == 0 || cfg->qk_nope_head_dim == 0 ||
                cfg->qk_rope_head_dim == 0 || cfg->v_head_dim == 0))
        return wsl_reject(l, "model_type '%.63s' needs kv_lora_rank, qk_nope_head_dim, "
                             "qk_rope_head_dim and v_head_dim (multi-head latent attention)",
                          cfg->model_type);
    if (mla && cfg->attention_bias)
        return wsl_reject(l, "multi-head latent attention with attention_bias is not laid out");
    if (mla && cfg->qk_norm)
        return wsl_reject(l, "multi-head latent attention has no q_norm / k_norm");
    if (moe_type && (cfg->num_experts == 0 || cfg->moe_intermediate_size == 0))
        return wsl_reject(l, "model_type '%.63s' needs num_experts and moe_intermediate_size",
                          cfg->model_type);
    if (!moe_type && cfg->num_experts && !mla)
        return wsl_reject(l, "model_type '%.63s' is dense, but the config names %llu experts",
                          cfg->model_type, (unsigned long long)cfg->num_experts);
    m->fp8 = cfg->fp8_block_n != 0;
    m->bn = cfg->fp8_block_n;
    m->bk = cfg->fp8_block_k;
    m->H = cfg->hidden_size;
    m->I = cfg->intermediate_size;
    m->V = cfg->vocab_size;
    m->L = cfg->num_layers;
    m->nh = cfg->num_heads;
    m->nkv = cfg->num_kv_heads;
    m->hd = cfg->head_dim;
    m->qkv_bias = cfg->attention_bias != 0;
    /* HF Llama, Mistral and Qwen3 give o_proj a bias exactly when they give q/k/v one
     * (config.attention_bias); Qwen2's q/k/v bias is unconditional and its o_proj has none;
     * Glm4MoeAttention: o_proj bias=False whatever attention_bias says. */
    m->o_bias = m->qkv_bias && !qwen2 && !type_is(cfg, "glm4_moe");
    m->qk_norm = cfg->qk_norm != 0;
    m->tied = cfg->tie_word_embeddings != 0;
    m->moe = moe_type;
    m->E = cfg->num_experts;
    m->mI = cfg->moe_intermediate_size;
    m->shI = type_is(cfg, "glm4_moe") || mla
                 ? cfg->n_shared_experts * cfg->moe_intermediate_size
                 : cfg->shared_expert_intermediate_size;
    if (!m->moe) m->shI = 0;
    bool sh_gate = type_is(cfg, "qwen2_moe") && m->shI > 0;
    bool router_bias = (type_is(cfg, "glm4_moe") || mla) && cfg->router_bias;
    m->mla = mla;
    m->ql = cfg->q_lora_rank;
    m->kvl = cfg->kv_lora_rank;
    m->nope = cfg->qk_nope_head_dim;
    m->rope = cfg->qk_rope_head_dim;
    m->vd = cfg->v_head_dim;
    if (mla) m->qkv_bias = m->o_bias = m->qk_norm = false;

    for (int kind = 0; kind < 2; kind++) {
        uint32_t n = 0;
        for (int k = 0; k < WSL_KIND__COUNT; k++)
            m->slot[kind][k] = -1;
        for (size_t j = 0; j < sizeof layer_order / sizeof layer_order[0]; j++) {
            wsl_kind k = layer_order[j];
            bool present = true;
            if (k == WSL_Q_B || k == WSL_K_B || k == WSL_V_B) present = m->qkv_bias;
            if (k == WSL_Q_W) present = !mla || m->ql == 0;
            if (k == WSL_K_W || k == WSL_V_W) present = !mla;
            if (k == WSL_MLA_QA || k == WSL_MLA_QA_NORM || k == WSL_MLA_QB)
                present = mla && m->ql > 0;
            if (k == WSL_MLA_KVA || k == WSL_MLA_KVA_NORM || k == WSL_MLA_KVB) present = mla;
            if (k == WSL_O_B) present = m->o_bias;
            if (k == WSL_Q_NORM || k == WSL_K_NORM) present = m->qk_norm;
            if (k == WSL_GATE || k == WSL_UP || k == WSL_DOWN) present = kind == 0;
            if (k == WSL_ROUTER || k == WSL_EXPERTS) present = kind == 1;
            if (k == WSL_ROUTER_BIAS) present = kind == 1 && router_bias;
            if (k == WSL_SH_GATE || k == WSL_SH_UP || k == WSL_SH_DOWN)
                present = kind == 1 && m->shI > 0;
            if (k == WSL_SH_EXPERT_GATE) present = kind == 1 && sh_gate;
            if (!present) continue;
            m->slot[kind][k] = (int)n;
            n += (k == WSL_EXPERTS ? (uint32_t)(3 * m->E) : 1) *
                 (m->fp8 && wsl_quantized(k) ? 2u : 1u);
        }
        m->per_layer[kind] = n;
    }
    m->base = wsl_alloc(l, (size_t)m->L * sizeof *m->base + 1);
    m->is_moe = wsl_alloc(l, (size_t)m->L + 1);
    if (!m->base || !m->is_moe) return WS_ERR_NOMEM;
    for (uint64_t i = 0; i < m->L; i++)
        m->is_moe[i] = layer_is_moe(cfg, i);
    return WS_OK;
}

uint64_t wsl_layer_tensors(const wsl_dense *m) {
    uint64_t n = 0;
    for (uint64_t i = 0; i < m->L; i++)
        n += m->per_layer[m->is_moe[i]];
    return n;
}

static const char *const kind_suffix[WSL_KIND__COUNT] = {
    [WSL_Q_W] = "self_attn.q_proj.weight",
    [WSL_K_W] = "self_attn.k_proj.weight",
    [WSL_V_W] = "self_attn.v_proj.weight",
    [WSL_Q_B] = "self_attn.q_proj.bias",
    [WSL_K_B] = "self_attn.k_proj.bias",
    [WSL_V_B] = "self_attn.v_proj.bias",
    [WSL_MLA_QA] = "self_attn.q_a_proj.weight",
    [WSL_MLA_QA_NORM] = "self_attn.q_a_layernorm.weight",
    [WSL_MLA_QB] = "self_attn.q_b_proj.weight",
    [WSL_MLA_KVA] = "self_attn.kv_a_proj_with_mqa.weight",
    [WSL_MLA_KVA_NORM] = "self_attn.kv_a_layernorm.weight",
    [WSL_MLA_KVB] = "self_attn.kv_b_proj.weight",
    [WSL_O_W] = "self_attn.o_proj.weight",
    [WSL_O_B] = "self_attn.o_proj.bias",
    [WSL_Q_NORM] = "self_attn.q_norm.weight",
    [WSL_K_NORM] = "self_attn.k_norm.weight",
    [WSL_GATE] = "mlp.gate_proj.weight",
    [WSL_UP] = "mlp.up_proj.weight",
    [WSL_DOWN] = "mlp.down_proj.weight",
    [WSL_ROUTER] = "mlp.gate.weight",
    [WSL_ROUTER_BIAS] = "mlp.gate.e_score_correction_bias",
    [WSL_SH_GATE] = "gate_proj.weight",
    [WSL_SH_UP] = "up_proj.weight",
    [WSL_SH_DOWN] = "down_proj.weight",
    [WSL_SH_EXPERT_GATE] = "mlp.shared_expert_gate.weight",
    [WSL_IN_NORM] = "input_layernorm.weight",
    [WSL_POST_NORM] = "post_attention_layernorm.weight",
};

bool wsl_quantized(wsl_kind k) {
    switch (k) {
    case WSL_Q_W:
    case WSL_K_W:
    case WSL_V_W:
    case WSL_MLA_QA:
    case WSL_MLA_QB:
    case WSL_MLA_KVA:
    case WSL_MLA_KVB:
    case WSL_O_W:
    case WSL_GATE:
    case WSL_UP:
    case WSL_DOWN:
    case WSL_EXPERTS:
    case WSL_SH_GATE:
    case WSL_SH_UP:
    case WSL_SH_DOWN: return true;
    default: return false; /* biases, norms, the router and its bias, shared_expert_gate */
    }
}

/* Block FP8: the weight_scale_inv of the HF weight just added (index w). */
static ws_err add_hf_scale(ws_layout *l, const wsl_dense *m, uint32_t w) {
    const ws_hf_desc *d = ws_layout_hf(l, w);
    uint64_t r = (d->shape[0] + m->bn - 1) / m->bn, c = (d->shape[1] + m->bk - 1) / m->bk;
    uint32_t idx;
    return wsl_add_hf(l, &idx, -1, 2, r, c, "%s_scale_inv", d->name);
}

/* HF shape of one per-layer tensor: ndim, d0, d1. */
static int kind_shape(const wsl_dense *m, int k, uint64_t *d0, uint64_t *d1) {
    uint64_t q = m->nh * m->hd, kv = m->nkv * m->hd;
    *d1 = 0;
    if (m->mla) { /* DeepseekV3Attention */
        uint64_t qk = m->nh * (m->nope + m->rope);
        switch (k) {
        case WSL_Q_W: *d0 = qk, *d1 = m->H; return 2;
        case WSL_MLA_QA: *d0 = m->ql, *d1 = m->H; return 2;
        case WSL_MLA_QA_NORM: *d0 = m->ql; return 1;
        case WSL_MLA_QB: *d0 = qk, *d1 = m->ql; return 2;
        case WSL_MLA_KVA: *d0 = m->kvl + m->rope, *d1 = m->H; return 2;
        case WSL_MLA_KVA_NORM: *d0 = m->kvl; return 1;
        case WSL_MLA_KVB: *d0 = m->nh * (m->nope + m->vd), *d1 = m->kvl; return 2;
        case WSL_O_W: *d0 = m->H, *d1 = m->nh * m->vd; return 2;
        default: break;
        }
    }
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
    case WSL_ROUTER: *d0 = m->E, *d1 = m->H; return 2;
    case WSL_ROUTER_BIAS: *d0 = m->E; return 1;
    case WSL_SH_GATE:
    case WSL_SH_UP: *d0 = m->shI, *d1 = m->H; return 2;
    case WSL_SH_DOWN: *d0 = m->H, *d1 = m->shI; return 2;
    case WSL_SH_EXPERT_GATE: *d0 = 1, *d1 = m->H; return 2;
    default: *d0 = m->H; return 1; /* o_proj bias, layer norms */
    }
}

/* "shared_expert" (qwen2_moe) or "shared_experts" (glm4_moe, DeepSeek). */
static const char *shared_name(const wsl_dense *m) {
    return m->slot[1][WSL_SH_EXPERT_GATE] >= 0 ? "shared_expert" : "shared_experts";
}

ws_err wsl_dense_add_hf(ws_layout *l, wsl_dense *m) {
    static const char *const part[3] = {"gate_proj", "up_proj", "down_proj"};
    WSL_TRY(wsl_add_hf(l, &m->embed, -1, 2, m->V, m->H, "model.embed_tokens.weight"));
    for (uint64_t i = 0; i < m->L; i++) {
        unsigned long long li = (unsigned long long)i;
        int kind = m->is_moe[i];
        m->base[i] = (uint32_t)ws_layout_hf_count(l);
        for (size_t j = 0; j < sizeof layer_order / sizeof layer_order[0]; j++) {
            wsl_kind k = layer_order[j];
            if (m->slot[kind][k] < 0) continue;
            uint32_t idx;
            if (k == WSL_EXPERTS) {
                for (uint64_t e = 0; e < m->E; e++)
                    for (int w = 0; w < 3; w++) {
                        WSL_TRY(wsl_add_hf(l, &idx, -1, 2, w == 2 ? m->H : m->mI,
                                           w == 2 ? m->mI : m->H,
                                           "model.layers.%llu.mlp.experts.%llu.%s.weight", li,
                                           (unsigned long long)e, part[w]));
                        if (m->fp8) WSL_TRY(add_hf_scale(l, m, idx));
                    }
                continue;
            }
            uint64_t d0, d1;
            int nd = kind_shape(m, k, &d0, &d1);
            if (k == WSL_SH_GATE || k == WSL_SH_UP || k == WSL_SH_DOWN)
                WSL_TRY(wsl_add_hf(l, &idx, -1, nd, d0, d1, "model.layers.%llu.mlp.%s.%s", li,
                                   shared_name(m), kind_suffix[k]));
            else
                WSL_TRY(wsl_add_hf(l, &idx, -1, nd, d0, d1, "model.layers.%llu.%s", li,
                                   kind_suffix[k]));
            if (idx != wsl_hf_at(m, i, k)) return wsl_reject(l, "internal error: HF tensor order");
            if (m->fp8 && wsl_quantized(k)) WSL_TRY(add_hf_scale(l, m, idx));
        }
    }
    WSL_TRY(wsl_add_hf(l, &m->norm, -1, 1, m->H, 0, "model.norm.weight"));
    return wsl_add_hf(l, &m->lm_head, m->tied ? (long)m->embed : -1, 2, m->V, m->H,
                      "lm_head.weight");
}

/* "hf": one rank holds every canonical tensor under its own name; a tied lm_head is absent. */
ws_err wsl_build_hf(ws_layout *l, const ws_model_config *cfg, const wsl_par *p) {
    if (p->tp != 1 || p->ep != 1 || p->pp != 1)
        return wsl_reject(l, "the hf family is unsharded: tp, ep and pp must be 1");
    wsl_dense m;
    WSL_TRY(wsl_dense_describe(l, cfg, &m));
    WSL_TRY(wsl_expect(l, wsl_layer_tensors(&m) + 3));
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
