/*
 * "transformers": what each rank holds under Hugging Face transformers' own tensor parallelism
 * (from_pretrained(..., tp_plan="auto") under torchrun), for Llama, Mistral, Qwen2, Qwen3:
 * HF names, nothing fused, DTensor shards of the model's base_model_tp_plan —
 *   q/k/v_proj (weights, biases), gate_proj, up_proj: "colwise", Shard(0): rows r*n/tp..
 *   o_proj, down_proj: "rowwise", Shard(1): columns r*n/tp..; an o_proj bias replicated
 *   embed_tokens: "embedding_rowwise", lm_head: "colwise_gather_output": Shard(0) of the vocab,
 *   unpadded (the vocab must divide by tp)
 *   norms, q_norm / k_norm: plain tensors, replicated.
 * Checked against shards transformers itself wrote (tests/vectors/transformers_tp2, made by
 * tests/external/transformers_tp_dump.py; docs/external-checks.md).
 */
#include "layout_internal.h"

ws_err wsl_build_transformers(ws_layout *l, const ws_model_config *cfg, const wsl_par *p) {
    int tp = p->tp;
    if (p->ep != 1 || p->pp != 1)
        return wsl_reject(l, "transformers' tp_plan shards over tp only: ep and pp must be 1");
    wsl_dense m;
    WSL_TRY(wsl_dense_describe(l, cfg, &m));
    /* DeepSeek's base_model_tp_plan differs between transformers releases (V3's shards only
     * the MLP and the experts; V2's splits the attention with its own "mla_kv_a_proj" style):
     * docs/layouts.md */
    if (m.mla)
        return wsl_reject(l, "multi-head latent attention (deepseek) is laid out for sglang, "
                             "vllm and megatron, not under transformers' tp_plan");
    if (m.fp8)
        return wsl_reject(l, "block-FP8 weights are laid out for the sglang and vllm families "
                             "only (no transformers FP8 layout is modelled)");
    if (m.moe)
        return wsl_reject(l, "MoE models under transformers' tensor parallelism are not "
                             "modelled");
    uint64_t T = (uint64_t)tp;
    if (m.nh % T || m.nkv % T || m.I % T || m.V % T)
        return wsl_reject(l, "heads, kv heads, intermediate_size and vocab_size must all divide "
                             "by tp (transformers shards each tensor evenly and replicates no kv "
                             "head)");
    WSL_TRY(wsl_set_ranks(l, T));
    WSL_TRY(wsl_expect(l, T * (m.L * 16 + 3)));
    WSL_TRY(wsl_dense_add_hf(l, &m));
    static const struct {
        wsl_kind kind;
        const char *name;
        int cols; /* 1: rowwise (split dim 1); 0: colwise (split dim 0); -1: replicated */
    } per_layer[] = {
        {WSL_Q_W, "self_attn.q_proj.weight", 0},   {WSL_Q_B, "self_attn.q_proj.bias", 0},
        {WSL_K_W, "self_attn.k_proj.weight", 0},   {WSL_K_B, "self_attn.k_proj.bias", 0},
        {WSL_V_W, "self_attn.v_proj.weight", 0},   {WSL_V_B, "self_attn.v_proj.bias", 0},
        {WSL_O_W, "self_attn.o_proj.weight", 1},   {WSL_O_B, "self_attn.o_proj.bias", -1},
        {WSL_Q_NORM, "self_attn.q_norm.weight", -1}, {WSL_K_NORM, "self_attn.k_norm.weight", -1},
        {WSL_GATE, "mlp.gate_proj.weight", 0},     {WSL_UP, "mlp.up_proj.weight", 0},
        {WSL_DOWN, "mlp.down_proj.weight", 1},     {WSL_IN_NORM, "input_layernorm.weight", -1},
        {WSL_POST_NORM, "post_attention_layernorm.weight", -1},
    };
    for (int r = 0; r < tp; r++) {
        uint64_t R = (uint64_t)r, vr = m.V / T;
        uint32_t loc;
        WSL_TRY(wsl_add_local(l, &loc, r, 2, vr, m.H, "model.embed_tokens.weight"));
        WSL_TRY(wsl_piece_rows(l, m.embed, loc, 0, R * vr, 0, vr));
        if (m.tied) WSL_TRY(wsl_add_alias(l, loc, "lm_head.weight"));
        for (uint64_t i = 0; i < m.L; i++) {
            for (size_t k = 0; k < sizeof per_layer / sizeof per_layer[0]; k++) {
                if (!wsl_has(&m, per_layer[k].kind)) continue;
                uint32_t hf = wsl_hf_at(&m, i, per_layer[k].kind);
                const ws_hf_desc *d = ws_layout_hf(l, hf);
                unsigned long long li = (unsigned long long)i;
                if (per_layer[k].cols < 0) {
                    WSL_TRY(wsl_add_replicated(l, r, hf, "model.layers.%llu.%s", li,
                                               per_layer[k].name));
                } else if (per_layer[k].cols) {
                    uint64_t c = d->shape[1] / T;
                    WSL_TRY(wsl_add_local(l, &loc, r, 2, d->shape[0], c, "model.layers.%llu.%s",
                                          li, per_layer[k].name));
                    WSL_TRY(wsl_piece_cols(l, hf, loc, 0, R * c, 0, c));
                } else {
                    uint64_t n = d->shape[0] / T;
                    WSL_TRY(wsl_add_local(l, &loc, r, d->ndim, n, d->ndim > 1 ? d->shape[1] : 1,
                                          "model.layers.%llu.%s", li, per_layer[k].name));
                    WSL_TRY(wsl_piece_rows(l, hf, loc, 0, R * n, 0, n));
                }
            }
        }
        WSL_TRY(wsl_add_replicated(l, r, m.norm, "model.norm.weight"));
        if (!m.tied) {
            WSL_TRY(wsl_add_local(l, &loc, r, 2, vr, m.H, "lm_head.weight"));
            WSL_TRY(wsl_piece_rows(l, m.lm_head, loc, 0, R * vr, 0, vr));
        }
    }
    return WS_OK;
}
