/*
 * "megatron": Megatron-core GPT models built with the Transformer Engine layer spec, tensor,
 * expert and pipeline parallel, parameter names as GPTModel.named_parameters() gives them (no
 * DDP "module." prefix). docs/layouts.md has the tables and the sources they were checked
 * against.
 *
 * linear_qkv interleaves per query group g (one group per kv head):
 *     [ q heads of g (heads/kv of them) ; k_g ; v_g ]   each head hd rows
 * and tp rank t holds groups [t*kv/tp, (t+1)*kv/tp) one after the other, so kv must divide by tp:
 * Megatron never replicates a kv head. linear_fc1 = [gate_t ; up_t]. linear_proj and
 * linear_fc2 are row-parallel (dim 1). The vocab is padded to a multiple of
 * make_vocab_size_divisible_by (128) x tp.
 *
 * Ranks (the default order "tp-cp-ep-dp-pp", cp 1): with ep > 1 each stage has tp * dp ranks,
 * dp = ep (expert tensor parallelism = tp, its default, so each data-parallel copy is one ep
 * rank): global rank = stage * tp * ep + d * tp + t. Dense weights are the same on every d
 * (replica d); ep rank d holds experts [d*E/ep, (d+1)*E/ep), named from 0
 * (local_expert_indices_offset = ep_rank * num_local_experts). Stage s holds layers
 * [s*L/pp, (s+1)*L/pp), named decoder.layers.{j} from 0.
 *
 * DeepSeek-V2 / V3 attention is MLASelfAttention (the table mla_attention below) in place of
 * linear_qkv; the MLP side (dense first layers, MoE blocks) is the same as for other models.
 */
#include "layout_internal.h"

#define MEGATRON_VOCAB_DIVISOR 128 /* --make-vocab-size-divisible-by default */

/* An MoE block of layer i (local name index j) on rank g = (d, t). */
static ws_err add_moe(ws_layout *l, const wsl_dense *m, const wsl_par *p, uint64_t i,
                      unsigned long long lj, int g, int d, int t, uint32_t rep_all) {
    uint64_t T = (uint64_t)p->tp, H = m->H, R = (uint64_t)t;
    uint64_t n = m->E / (uint64_t)p->ep, mir = m->mI / T;
    uint32_t loc;
    WSL_TRY(wsl_add_replica(l, g, rep_all, wsl_hf_at(m, i, WSL_ROUTER),
                            "decoder.layers.%llu.mlp.router.weight", lj));
    if (wsl_has_at(m, i, WSL_ROUTER_BIAS))
        WSL_TRY(wsl_add_replica(l, g, rep_all, wsl_hf_at(m, i, WSL_ROUTER_BIAS),
                                "decoder.layers.%llu.mlp.router.expert_bias", lj));
    for (uint64_t j = 0; j < n; j++) {
        uint64_t e = (uint64_t)d * n + j;
        unsigned long long lj2 = (unsigned long long)j;
        if (p->sequential)
            WSL_TRY(wsl_add_local(l, &loc, g, 2, 2 * mir, H,
                                  "decoder.layers.%llu.mlp.experts.local_experts.%llu.linear_fc1."
                                  "weight",
                                  lj, lj2));
        else
            WSL_TRY(wsl_add_local(l, &loc, g, 2, 2 * mir, H,
                                  "decoder.layers.%llu.mlp.experts.linear_fc1.weight%llu", lj, lj2));
        WSL_TRY(wsl_piece_rows(l, wsl_expert_at(m, i, e, WSL_E_GATE), loc, 0, R * mir, 0, mir));
        WSL_TRY(wsl_piece_rows(l, wsl_expert_at(m, i, e, WSL_E_UP), loc, 0, R * mir, mir, mir));
        if (p->sequential)
            WSL_TRY(wsl_add_local(l, &loc, g, 2, H, mir,
                                  "decoder.layers.%llu.mlp.experts.local_experts.%llu.linear_fc2."
                                  "weight",
                                  lj, lj2));
        else
            WSL_TRY(wsl_add_local(l, &loc, g, 2, H, mir,
                                  "decoder.layers.%llu.mlp.experts.linear_fc2.weight%llu", lj, lj2));
        WSL_TRY(wsl_piece_cols(l, wsl_expert_at(m, i, e, WSL_E_DOWN), loc, 0, R * mir, 0, mir));
    }
    if (m->shI) {
        uint64_t sr = m->shI / T;
        uint32_t rep = (uint32_t)d; /* the same on every data-parallel (ep) copy */
        WSL_TRY(wsl_add_local(l, &loc, g, 2, 2 * sr, H,
                              "decoder.layers.%llu.mlp.shared_experts.linear_fc1.weight", lj));
        WSL_TRY(wsl_piece_rows(l, wsl_hf_at(m, i, WSL_SH_GATE), loc, rep, R * sr, 0, sr));
        WSL_TRY(wsl_piece_rows(l, wsl_hf_at(m, i, WSL_SH_UP), loc, rep, R * sr, sr, sr));
        WSL_TRY(wsl_add_local(l, &loc, g, 2, H, sr,
                              "decoder.layers.%llu.mlp.shared_experts.linear_fc2.weight", lj));
        WSL_TRY(wsl_piece_cols(l, wsl_hf_at(m, i, WSL_SH_DOWN), loc, rep, R * sr, 0, sr));
    }
    if (wsl_has_at(m, i, WSL_SH_EXPERT_GATE))
        WSL_TRY(wsl_add_replica(l, g, rep_all, wsl_hf_at(m, i, WSL_SH_EXPERT_GATE),
                                "decoder.layers.%llu.mlp.shared_experts.gate_weight", lj));
    /* The MoE layer's pre-MLP norm is a TENorm of its own (no fused linear_fc1 to hold it). */
    return wsl_add_replica(l, g, rep_all, wsl_hf_at(m, i, WSL_POST_NORM),
                           "decoder.layers.%llu.pre_mlp_layernorm.weight", lj);
}

/*
 * Multi-latent attention: MLASelfAttention under the Transformer Engine spec with qk_layernorm
 * (what Megatron-Bridge's and slime's DeepSeek providers build). The down projections are
 * TELinear(parallel_mode="duplicated"): whole on every rank; the up projections and q_proj
 * are column-parallel (heads split, rows), TELayerNormColumnParallelLinear when their norm is
 * fused into them (q_a_layernorm, kv_a_layernorm as layer_norm_weight); linear_proj is
 * row-parallel. The pre-attention norm is a TENorm of its own. A kind absent from the model
 * (q_proj with q_lora_rank, the q_a tensors without) is skipped.
 */
typedef enum mla_split { MLA_WHOLE, MLA_ROWS, MLA_COLS } mla_split;
static const struct {
    wsl_kind kind;
    const char *name; /* after decoder.layers.{j}. */
    mla_split split;
} mla_attention[] = {
    {WSL_MLA_QA, "self_attention.linear_q_down_proj.weight", MLA_WHOLE},
    {WSL_MLA_QB, "self_attention.linear_q_up_proj.weight", MLA_ROWS},
    {WSL_MLA_QA_NORM, "self_attention.linear_q_up_proj.layer_norm_weight", MLA_WHOLE},
    {WSL_Q_W, "self_attention.linear_q_proj.weight", MLA_ROWS},
    {WSL_MLA_KVA, "self_attention.linear_kv_down_proj.weight", MLA_WHOLE},
    {WSL_MLA_KVB, "self_attention.linear_kv_up_proj.weight", MLA_ROWS},
    {WSL_MLA_KVA_NORM, "self_attention.linear_kv_up_proj.layer_norm_weight", MLA_WHOLE},
    {WSL_O_W, "self_attention.linear_proj.weight", MLA_COLS},
    {WSL_IN_NORM, "input_layernorm.weight", MLA_WHOLE},
};
#define MLA_TENSORS (sizeof mla_attention / sizeof mla_attention[0])

/* Layer i's attention (local name index lj) on rank g = (d, t): a tp-split piece is replica d
 * (one copy per data-parallel rank), a whole tensor replica rep_all (one per rank of a stage). */
static ws_err add_mla(ws_layout *l, const wsl_dense *m, uint64_t i, unsigned long long lj, int g,
                      int d, int t, int tp, uint32_t rep_all) {
    uint64_t T = (uint64_t)tp, R = (uint64_t)t;
    for (size_t k = 0; k < MLA_TENSORS; k++) {
        if (!wsl_has_at(m, i, mla_attention[k].kind)) continue;
        uint32_t hf = wsl_hf_at(m, i, mla_attention[k].kind), loc;
        const ws_hf_desc *h = ws_layout_hf(l, hf);
        const char *name = mla_attention[k].name;
        if (mla_attention[k].split == MLA_WHOLE) {
            WSL_TRY(wsl_add_replica(l, g, rep_all, hf, "decoder.layers.%llu.%s", lj, name));
        } else if (mla_attention[k].split == MLA_ROWS) {
            uint64_t n = h->shape[0] / T;
            WSL_TRY(wsl_add_local(l, &loc, g, 2, n, h->shape[1], "decoder.layers.%llu.%s", lj,
                                  name));
            WSL_TRY(wsl_piece_rows(l, hf, loc, (uint32_t)d, R * n, 0, n));
        } else {
            uint64_t c = h->shape[1] / T;
            WSL_TRY(wsl_add_local(l, &loc, g, 2, h->shape[0], c, "decoder.layers.%llu.%s", lj,
                                  name));
            WSL_TRY(wsl_piece_cols(l, hf, loc, (uint32_t)d, R * c, 0, c));
        }
    }
    return WS_OK;
}

/* Layer i's grouped-query attention: linear_qkv (and its bias) per query group, its fused
 * input norm, linear_proj, and qwen3's q/k norms. */
static ws_err add_gqa(ws_layout *l, const wsl_dense *m, uint64_t i, unsigned long long lj, int g,
                      int d, int t, int tp, uint32_t rep_all) {
    uint64_t T = (uint64_t)tp, R = (uint64_t)t, hd = m->hd;
    uint64_t groups = m->nkv / T;         /* query groups per rank */
    uint64_t qpg = m->nh / m->nkv;        /* q heads per group */
    uint64_t group_rows = (qpg + 2) * hd; /* rows of one group in linear_qkv */
    uint64_t q_cols = m->nh / T * hd;     /* linear_proj columns per rank */
    uint32_t rep = (uint32_t)d, loc;
    /* linear_qkv.weight (and .bias): groups t*G .. t*G+G-1, each [q ; k ; v] */
    for (int b = 0; b < (m->qkv_bias ? 2 : 1); b++) {
        wsl_kind q = b ? WSL_Q_B : WSL_Q_W, k = b ? WSL_K_B : WSL_K_W, v = b ? WSL_V_B : WSL_V_W;
        WSL_TRY(wsl_add_local(l, &loc, g, b ? 1 : 2, groups * group_rows, m->H,
                              "decoder.layers.%llu.self_attention.linear_qkv.%s", lj,
                              b ? "bias" : "weight"));
        for (uint64_t x = 0; x < groups; x++) {
            uint64_t gr = R * groups + x, base = x * group_rows;
            WSL_TRY(wsl_piece_rows(l, wsl_hf_at(m, i, q), loc, rep, gr * qpg * hd, base,
                                   qpg * hd));
            WSL_TRY(wsl_piece_rows(l, wsl_hf_at(m, i, k), loc, rep, gr * hd, base + qpg * hd,
                                   hd));
            WSL_TRY(wsl_piece_rows(l, wsl_hf_at(m, i, v), loc, rep, gr * hd,
                                   base + (qpg + 1) * hd, hd));
        }
    }
    WSL_TRY(wsl_add_replica(l, g, rep_all, wsl_hf_at(m, i, WSL_IN_NORM),
                            "decoder.layers.%llu.self_attention.linear_qkv.layer_norm_weight", lj));
    WSL_TRY(wsl_add_local(l, &loc, g, 2, m->H, q_cols,
                          "decoder.layers.%llu.self_attention.linear_proj.weight", lj));
    WSL_TRY(wsl_piece_cols(l, wsl_hf_at(m, i, WSL_O_W), loc, rep, R * q_cols, 0, q_cols));
    if (m->qk_norm) {
        WSL_TRY(wsl_add_replica(l, g, rep_all, wsl_hf_at(m, i, WSL_Q_NORM),
                                "decoder.layers.%llu.self_attention.q_layernorm.weight", lj));
        WSL_TRY(wsl_add_replica(l, g, rep_all, wsl_hf_at(m, i, WSL_K_NORM),
                                "decoder.layers.%llu.self_attention.k_layernorm.weight", lj));
    }
    return WS_OK;
}

ws_err wsl_build_megatron(ws_layout *l, const ws_model_config *cfg, const wsl_par *p) {
    wsl_dense m;
    WSL_TRY(wsl_dense_describe(l, cfg, &m));
    if (m.fp8)
        return wsl_reject(l, "block-FP8 weights are laid out for the sglang and vllm families "
                             "only (no megatron FP8 layout is modelled)");
    int tp = p->tp, ep = p->ep, pp = p->pp;
    uint64_t T = (uint64_t)tp;
    if (m.nh % T)
        return wsl_reject(l, "num_attention_heads %llu is not divisible by tp",
                          (unsigned long long)m.nh);
    if (!m.mla && m.nkv % T)
        return wsl_reject(l,
                          "num_key_value_heads %llu is not divisible by tp: Megatron splits "
                          "whole query groups over ranks and never replicates a kv head",
                          (unsigned long long)m.nkv);
    for (uint64_t i = 0; i < m.L && m.I % T; i++)
        if (!m.is_moe[i])
            return wsl_reject(l, "intermediate_size %llu is not divisible by tp",
                              (unsigned long long)m.I);
    if (m.o_bias)
        return wsl_reject(l,
                          "an o_proj bias (attention_bias on %.63s) needs add_bias_linear, "
                          "which also gives the MLP biases this model lacks",
                          cfg->model_type);
    if (m.L % (uint64_t)pp)
        return wsl_reject(l, "num_hidden_layers %llu is not divisible by pp (Megatron's even "
                             "split; uneven first/last stages are not modelled)",
                          (unsigned long long)m.L);
    if (!m.moe && ep != 1) return wsl_reject(l, "expert parallelism needs an MoE model");
    if (m.moe) {
        if (m.E % (uint64_t)ep)
            return wsl_reject(l, "num_experts %llu is not divisible by ep",
                              (unsigned long long)m.E);
        if (m.mI % T)
            return wsl_reject(l, "moe_intermediate_size %llu is not divisible by the expert "
                                 "tensor-parallel size (tp)",
                              (unsigned long long)m.mI);
        if (m.shI % T)
            return wsl_reject(l, "the shared expert's %llu rows are not divisible by tp",
                              (unsigned long long)m.shI);
        if (p->fused_shared || p->placement || p->up_first)
            return wsl_reject(l, "fused shared experts, expert placement and w13 order are "
                                 "engine options");
    }
    int per_stage = tp * ep;
    WSL_TRY(wsl_set_ranks(l, (uint64_t)tp * (uint64_t)ep * (uint64_t)pp));
    wsl_set_moe_tp(l, tp);
    uint64_t div = MEGATRON_VOCAB_DIVISOR * T;
    uint64_t Vp = (m.V + div - 1) / div * div;
    uint64_t attn = m.mla ? MLA_TENSORS : 3 * (m.nkv / T) * (m.qkv_bias ? 2 : 1) + 2 +
                                                 2 * m.qk_norm;
    uint64_t dense = attn + 2 + 1 + 1;
    uint64_t total = 0;
    for (uint64_t i = 0; i < m.L; i++)
        total += m.is_moe[i] ? dense + 4 * (m.E / (uint64_t)ep) + 8 : dense;
    /* every stage's ranks hold 1/pp of the layers */
    WSL_TRY(wsl_expect(l, (uint64_t)per_stage * (total + 4 * (uint64_t)pp)));
    WSL_TRY(wsl_dense_add_hf(l, &m));

    uint64_t H = m.H;
    uint64_t i_rows = m.I / T;
    uint64_t v_rows = Vp / T;
    uint64_t per = m.L / (uint64_t)pp;

    for (int s = 0; s < pp; s++) {
        bool first_stage = s == 0, last_stage = s == pp - 1;
        for (int d = 0; d < ep; d++) {
            for (int t = 0; t < tp; t++) {
                int g = s * per_stage + d * tp + t;
                uint32_t rep = (uint32_t)d;                /* a tp-sharded piece's dp copy */
                uint32_t rep_all = (uint32_t)(d * tp + t); /* a tensor on every rank of a stage */
                uint64_t R = (uint64_t)t;
                uint32_t loc;
                wsl_set_coord(l, g, t, m.moe ? d : 0, s, t);
                if (first_stage) {
                    WSL_TRY(wsl_add_local(l, &loc, g, 2, v_rows, H,
                                          "embedding.word_embeddings.weight"));
                    if (R * v_rows < m.V) {
                        uint64_t n = m.V - R * v_rows < v_rows ? m.V - R * v_rows : v_rows;
                        WSL_TRY(wsl_piece_rows(l, m.embed, loc, rep, R * v_rows, 0, n));
                    }
                }
                for (uint64_t j = 0; j < per; j++) {
                    uint64_t i = (uint64_t)s * per + j; /* global layer */
                    unsigned long long lj = (unsigned long long)j;
                    if (m.mla)
                        WSL_TRY(add_mla(l, &m, i, lj, g, d, t, tp, rep_all));
                    else
                        WSL_TRY(add_gqa(l, &m, i, lj, g, d, t, tp, rep_all));
                    if (m.is_moe[i]) {
                        WSL_TRY(add_moe(l, &m, p, i, lj, g, d, t, rep_all));
                        continue;
                    }
                    /* linear_fc1 = [gate_t ; up_t]; linear_fc2 row-parallel */
                    WSL_TRY(wsl_add_local(l, &loc, g, 2, 2 * i_rows, H,
                                          "decoder.layers.%llu.mlp.linear_fc1.weight", lj));
                    WSL_TRY(wsl_piece_rows(l, wsl_hf_at(&m, i, WSL_GATE), loc, rep, R * i_rows, 0,
                                           i_rows));
                    WSL_TRY(wsl_piece_rows(l, wsl_hf_at(&m, i, WSL_UP), loc, rep, R * i_rows,
                                           i_rows, i_rows));
                    WSL_TRY(wsl_add_replica(l, g, rep_all, wsl_hf_at(&m, i, WSL_POST_NORM),
                                            "decoder.layers.%llu.mlp.linear_fc1.layer_norm_weight",
                                            lj));
                    WSL_TRY(wsl_add_local(l, &loc, g, 2, H, i_rows,
                                          "decoder.layers.%llu.mlp.linear_fc2.weight", lj));
                    WSL_TRY(wsl_piece_cols(l, wsl_hf_at(&m, i, WSL_DOWN), loc, rep, R * i_rows, 0,
                                           i_rows));
                }
                if (last_stage) {
                    WSL_TRY(wsl_add_replica(l, g, rep_all, m.norm,
                                            "decoder.final_layernorm.weight"));
                    /* Untied: the output layer. Tied over several stages: the last stage's
                     * output_layer.weight is a copy of the embedding (its replica 1 .. on the
                     * data-parallel copies: ep + d), kept equal by the embedding group's
                     * all-reduce. */
                    if (!m.tied || !first_stage) {
                        WSL_TRY(wsl_add_local(l, &loc, g, 2, v_rows, H, "output_layer.weight"));
                        uint32_t hf = m.tied ? m.embed : m.lm_head;
                        uint32_t r = m.tied ? (uint32_t)(ep + d) : rep;
                        if (R * v_rows < m.V) {
                            uint64_t n = m.V - R * v_rows < v_rows ? m.V - R * v_rows : v_rows;
                            WSL_TRY(wsl_piece_rows(l, hf, loc, r, R * v_rows, 0, n));
                        }
                    }
                }
            }
        }
    }
    return WS_OK;
}
