/*
 * "megatron": Megatron-core GPT models built with the Transformer Engine layer spec, tensor
 * parallel, parameter names as GPTModel.named_parameters() gives them (no DDP "module." prefix).
 * docs/layouts.md has the table and the sources it was checked against.
 *
 * linear_qkv interleaves per query group g (one group per kv head):
 *     [ q heads of g (heads/kv of them) ; k_g ; v_g ]   each head hd rows
 * and rank r holds groups [r*kv/tp, (r+1)*kv/tp) one after the other, so kv must divide by tp:
 * Megatron never replicates a kv head. linear_fc1 = [gate_r ; up_r]. linear_proj and
 * linear_fc2 are row-parallel (dim 1). The vocab is padded to a multiple of
 * make_vocab_size_divisible_by (128) x tp.
 */
#include "layout_internal.h"

#define MEGATRON_VOCAB_DIVISOR 128 /* --make-vocab-size-divisible-by default */

ws_err wsl_build_megatron(ws_layout *l, const ws_model_config *cfg, int tp) {
    wsl_dense m;
    WSL_TRY(wsl_dense_describe(l, cfg, &m));
    uint64_t T = (uint64_t)tp;
    if (m.nh % T)
        return wsl_reject(l, "num_attention_heads %llu is not divisible by tp",
                          (unsigned long long)m.nh);
    if (m.nkv % T)
        return wsl_reject(l,
                          "num_key_value_heads %llu is not divisible by tp: Megatron splits "
                          "whole query groups over ranks and never replicates a kv head",
                          (unsigned long long)m.nkv);
    if (m.I % T)
        return wsl_reject(l, "intermediate_size %llu is not divisible by tp",
                          (unsigned long long)m.I);
    if (m.o_bias)
        return wsl_reject(l,
                          "an o_proj bias (attention_bias on %.63s) needs add_bias_linear, "
                          "which also gives the MLP biases this model lacks",
                          cfg->model_type);
    uint64_t div = MEGATRON_VOCAB_DIVISOR * T;
    uint64_t Vp = (m.V + div - 1) / div * div;
    uint64_t groups = m.nkv / T; /* query groups per rank */
    uint64_t per_layer = 3 * groups * (m.qkv_bias ? 2 : 1) + 2 + 2 * m.qk_norm + 2 + 1 + 1;
    WSL_TRY(wsl_expect(l, T * (m.L * per_layer + 3)));
    WSL_TRY(wsl_dense_add_hf(l, &m));

    uint64_t hd = m.hd, H = m.H;
    uint64_t qpg = m.nh / m.nkv;          /* q heads per group */
    uint64_t group_rows = (qpg + 2) * hd; /* rows of one group in linear_qkv */
    uint64_t i_rows = m.I / T;
    uint64_t q_cols = m.nh / T * hd; /* linear_proj columns per rank */
    uint64_t v_rows = Vp / T;

    for (int r = 0; r < tp; r++) {
        uint64_t R = (uint64_t)r;
        uint32_t loc;
        WSL_TRY(wsl_add_local(l, &loc, r, 2, v_rows, H, "embedding.word_embeddings.weight"));
        WSL_TRY(wsl_piece_vocab(l, m.embed, loc, r, v_rows, m.V));

        for (uint64_t i = 0; i < m.L; i++) {
            unsigned long long li = (unsigned long long)i;
            /* linear_qkv.weight (and .bias): groups r*G .. r*G+G-1, each [q heads ; k ; v] */
            for (int b = 0; b < (m.qkv_bias ? 2 : 1); b++) {
                wsl_kind q = b ? WSL_Q_B : WSL_Q_W, k = b ? WSL_K_B : WSL_K_W,
                         v = b ? WSL_V_B : WSL_V_W;
                WSL_TRY(wsl_add_local(l, &loc, r, b ? 1 : 2, groups * group_rows, H,
                                      "decoder.layers.%llu.self_attention.linear_qkv.%s", li,
                                      b ? "bias" : "weight"));
                for (uint64_t j = 0; j < groups; j++) {
                    uint64_t g = R * groups + j, base = j * group_rows;
                    WSL_TRY(wsl_piece_rows(l, wsl_hf_at(&m, i, q), loc, 0, g * qpg * hd, base,
                                           qpg * hd));
                    WSL_TRY(wsl_piece_rows(l, wsl_hf_at(&m, i, k), loc, 0, g * hd, base + qpg * hd,
                                           hd));
                    WSL_TRY(wsl_piece_rows(l, wsl_hf_at(&m, i, v), loc, 0, g * hd,
                                           base + (qpg + 1) * hd, hd));
                }
            }
            WSL_TRY(wsl_add_replicated(
                l, r, wsl_hf_at(&m, i, WSL_IN_NORM),
                "decoder.layers.%llu.self_attention.linear_qkv.layer_norm_weight", li));
            WSL_TRY(wsl_add_local(l, &loc, r, 2, H, q_cols,
                                  "decoder.layers.%llu.self_attention.linear_proj.weight", li));
            WSL_TRY(wsl_piece_cols(l, wsl_hf_at(&m, i, WSL_O_W), loc, 0, R * q_cols, 0, q_cols));
            if (m.qk_norm) {
                WSL_TRY(wsl_add_replicated(l, r, wsl_hf_at(&m, i, WSL_Q_NORM),
                                           "decoder.layers.%llu.self_attention.q_layernorm.weight",
                                           li));
                WSL_TRY(wsl_add_replicated(l, r, wsl_hf_at(&m, i, WSL_K_NORM),
                                           "decoder.layers.%llu.self_attention.k_layernorm.weight",
                                           li));
            }
            /* linear_fc1 = [gate_r ; up_r]; linear_fc2 row-parallel */
            WSL_TRY(wsl_add_local(l, &loc, r, 2, 2 * i_rows, H,
                                  "decoder.layers.%llu.mlp.linear_fc1.weight", li));
            WSL_TRY(wsl_piece_rows(l, wsl_hf_at(&m, i, WSL_GATE), loc, 0, R * i_rows, 0, i_rows));
            WSL_TRY(
                wsl_piece_rows(l, wsl_hf_at(&m, i, WSL_UP), loc, 0, R * i_rows, i_rows, i_rows));
            WSL_TRY(wsl_add_replicated(l, r, wsl_hf_at(&m, i, WSL_POST_NORM),
                                       "decoder.layers.%llu.mlp.linear_fc1.layer_norm_weight", li));
            WSL_TRY(wsl_add_local(l, &loc, r, 2, H, i_rows,
                                  "decoder.layers.%llu.mlp.linear_fc2.weight", li));
            WSL_TRY(wsl_piece_cols(l, wsl_hf_at(&m, i, WSL_DOWN), loc, 0, R * i_rows, 0, i_rows));
        }

        WSL_TRY(wsl_add_replicated(l, r, m.norm, "decoder.final_layernorm.weight"));
        if (!m.tied) {
            WSL_TRY(wsl_add_local(l, &loc, r, 2, v_rows, H, "output_layer.weight"));
            WSL_TRY(wsl_piece_vocab(l, m.lm_head, loc, r, v_rows, m.V));
        }
    }
    return WS_OK;
}
