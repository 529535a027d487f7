/*
 * "sglang" and "vllm": the tensor-parallel layout both engines give dense models (their
 * QKVParallelLinear, MergedColumnParallelLinear, RowParallelLinear, VocabParallelEmbedding /
 * ParallelLMHead). docs/layouts.md has the table and the sources it was checked against.
 *
 * Rank r of tp holds
 *   qkv_proj    = [q_r ; k_s ; v_s]  q split by heads; k/v by kv heads, s = r when
 *                 kv >= tp, else s = r / (tp / kv) and the kv head is replicated: the lowest
 *                 rank that holds it is replica 0
 *   gate_up_proj = [gate_r ; up_r]
 *   o_proj, down_proj split along dim 1 (row-parallel); their biases replicated
 *   embed_tokens, lm_head: rows [r*Vp/tp, (r+1)*Vp/tp) of the vocab padded to Vp, a multiple
 *                 of 64; rows >= V are padding that no piece covers
 *   norms, q_norm / k_norm: replicated (replica r on rank r)
 * and, with tied embeddings, no lm_head of its own (it is embed_tokens; see the alias below).
 */
#include "layout_internal.h"

#define TP_VOCAB_PADDING 64 /* DEFAULT_VOCAB_PADDING_SIZE in both engines */

ws_err wsl_build_tp(ws_layout *l, const ws_model_config *cfg, int tp) {
    wsl_dense m;
    WSL_TRY(wsl_dense_describe(l, cfg, &m));
    uint64_t T = (uint64_t)tp;
    if (m.nh % T)
        return wsl_reject(l, "num_attention_heads %llu is not divisible by tp",
                          (unsigned long long)m.nh);
    if (m.I % T)
        return wsl_reject(l, "intermediate_size %llu is not divisible by tp",
                          (unsigned long long)m.I);
    if (m.nkv >= T ? m.nkv % T : T % m.nkv)
        return wsl_reject(l,
                          "num_key_value_heads %llu: with kv heads >= tp they must divide by "
                          "tp, with fewer, tp must divide by them",
                          (unsigned long long)m.nkv);
    uint64_t Vp = (m.V + TP_VOCAB_PADDING - 1) / TP_VOCAB_PADDING * TP_VOCAB_PADDING;
    if (Vp % T)
        return wsl_reject(l, "vocab padded to %llu (a multiple of %d) is not divisible by tp",
                          (unsigned long long)Vp, TP_VOCAB_PADDING);
    uint64_t per_layer = 3 * (m.qkv_bias ? 2 : 1) + 1 + m.o_bias + 2 * m.qk_norm + 2 + 1 + 2;
    WSL_TRY(wsl_expect(l, T * (m.L * per_layer + 3)));
    WSL_TRY(wsl_dense_add_hf(l, &m));

    uint64_t hd = m.hd, H = m.H;
    uint64_t q_rows = m.nh / T * hd;                /* q rows per rank */
    uint64_t kv_heads = m.nkv >= T ? m.nkv / T : 1; /* kv heads per rank */
    uint64_t replicas = m.nkv >= T ? 1 : T / m.nkv; /* ranks per kv head */
    uint64_t kv_rows = kv_heads * hd;
    uint64_t i_rows = m.I / T;
    uint64_t v_rows = Vp / T;

    for (int r = 0; r < tp; r++) {
        uint64_t R = (uint64_t)r;
        uint64_t s = R / replicas;                  /* kv shard */
        uint32_t kv_rep = (uint32_t)(R % replicas); /* lowest rank of a kv head: replica 0 */
        uint32_t loc;

        WSL_TRY(wsl_add_local(l, &loc, r, 2, v_rows, H, "model.embed_tokens.weight"));
        WSL_TRY(wsl_piece_vocab(l, m.embed, loc, r, v_rows, m.V));
        /* Tied: lm_head IS embed_tokens. state_dict() lists both names and the engines'
         * sharded_state saver keeps the smaller key of tensors sharing storage, so a dump
         * calls this tensor lm_head.weight, while named_parameters() calls it embed_tokens. */
        if (m.tied) WSL_TRY(wsl_add_alias(l, loc, "lm_head.weight"));

        for (uint64_t i = 0; i < m.L; i++) {
            unsigned long long li = (unsigned long long)i;
            /* qkv_proj.weight (and .bias): [q_r ; k_s ; v_s] */
            for (int b = 0; b < (m.qkv_bias ? 2 : 1); b++) {
                wsl_kind q = b ? WSL_Q_B : WSL_Q_W, k = b ? WSL_K_B : WSL_K_W,
                         v = b ? WSL_V_B : WSL_V_W;
                WSL_TRY(wsl_add_local(l, &loc, r, b ? 1 : 2, q_rows + 2 * kv_rows, H,
                                      "model.layers.%llu.self_attn.qkv_proj.%s", li,
                                      b ? "bias" : "weight"));
                WSL_TRY(wsl_piece_rows(l, wsl_hf_at(&m, i, q), loc, 0, R * q_rows, 0, q_rows));
                WSL_TRY(wsl_piece_rows(l, wsl_hf_at(&m, i, k), loc, kv_rep, s * kv_rows, q_rows,
                                       kv_rows));
                WSL_TRY(wsl_piece_rows(l, wsl_hf_at(&m, i, v), loc, kv_rep, s * kv_rows,
                                       q_rows + kv_rows, kv_rows));
            }
            /* o_proj: row-parallel, columns [r*q_rows, (r+1)*q_rows); its bias replicated */
            WSL_TRY(wsl_add_local(l, &loc, r, 2, H, q_rows,
                                  "model.layers.%llu.self_attn.o_proj.weight", li));
            WSL_TRY(wsl_piece_cols(l, wsl_hf_at(&m, i, WSL_O_W), loc, 0, R * q_rows, 0, q_rows));
            if (m.o_bias)
                WSL_TRY(wsl_add_replicated(l, r, wsl_hf_at(&m, i, WSL_O_B),
                                           "model.layers.%llu.self_attn.o_proj.bias", li));
            if (m.qk_norm) {
                WSL_TRY(wsl_add_replicated(l, r, wsl_hf_at(&m, i, WSL_Q_NORM),
                                           "model.layers.%llu.self_attn.q_norm.weight", li));
                WSL_TRY(wsl_add_replicated(l, r, wsl_hf_at(&m, i, WSL_K_NORM),
                                           "model.layers.%llu.self_attn.k_norm.weight", li));
            }
            /* gate_up_proj = [gate_r ; up_r] */
            WSL_TRY(wsl_add_local(l, &loc, r, 2, 2 * i_rows, H,
                                  "model.layers.%llu.mlp.gate_up_proj.weight", li));
            WSL_TRY(wsl_piece_rows(l, wsl_hf_at(&m, i, WSL_GATE), loc, 0, R * i_rows, 0, i_rows));
            WSL_TRY(
                wsl_piece_rows(l, wsl_hf_at(&m, i, WSL_UP), loc, 0, R * i_rows, i_rows, i_rows));
            /* down_proj: row-parallel */
            WSL_TRY(wsl_add_local(l, &loc, r, 2, H, i_rows,
                                  "model.layers.%llu.mlp.down_proj.weight", li));
            WSL_TRY(wsl_piece_cols(l, wsl_hf_at(&m, i, WSL_DOWN), loc, 0, R * i_rows, 0, i_rows));
            WSL_TRY(wsl_add_replicated(l, r, wsl_hf_at(&m, i, WSL_IN_NORM),
                                       "model.layers.%llu.input_layernorm.weight", li));
            WSL_TRY(wsl_add_replicated(l, r, wsl_hf_at(&m, i, WSL_POST_NORM),
                                       "model.layers.%llu.post_attention_layernorm.weight", li));
        }

        WSL_TRY(wsl_add_replicated(l, r, m.norm, "model.norm.weight"));
        if (!m.tied) {
            WSL_TRY(wsl_add_local(l, &loc, r, 2, v_rows, H, "lm_head.weight"));
            WSL_TRY(wsl_piece_vocab(l, m.lm_head, loc, r, v_rows, m.V));
        }
    }
    return WS_OK;
}
