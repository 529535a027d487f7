/* Internal: the model config's fields (ws_model_config is opaque to callers; weightsum.h gives
 * its constructors, setters and getters). Layouts read the fields directly. */
#ifndef WS_MODEL_CONFIG_H
#define WS_MODEL_CONFIG_H
#include "internal.h"

struct ws_model_config {
    char model_type[64];          /* "llama", "mistral", "qwen2", "qwen3", ... */
    uint64_t hidden_size;
    uint64_t intermediate_size;
    uint64_t vocab_size;
    uint64_t num_layers;          /* num_hidden_layers */
    uint64_t num_heads;           /* num_attention_heads */
    uint64_t num_kv_heads;        /* num_key_value_heads (defaults to num_heads) */
    uint64_t head_dim;            /* head_dim (defaults to hidden_size / num_heads) */
    int tie_word_embeddings;
    int attention_bias;           /* q/k/v biases (qwen2 always; else config.attention_bias);
                                     o_proj has a bias too when set, except for qwen2 */
    int qk_norm;                  /* q_norm / k_norm per layer (qwen3; glm4_moe use_qk_norm) */
    /* Mixture of experts (docs/layouts.md, "MoE models"); all 0 for a dense model. */
    uint64_t num_experts;         /* routed experts: num_experts / n_routed_experts */
    uint64_t moe_intermediate_size;
    uint64_t shared_expert_intermediate_size; /* qwen2_moe: one gated shared expert */
    uint64_t n_shared_experts;    /* glm4_moe: shared experts fused into one MLP */
    uint64_t first_k_dense_replace; /* glm4_moe: layers [0, k) are dense */
    uint64_t decoder_sparse_step; /* qwen*_moe: layer i is MoE when (i + 1) % step == 0 */
    uint32_t mlp_only_layers[WS_CFG_MAX_MLP_ONLY_LAYERS]; /* qwen*_moe: layers kept dense */
    uint32_t n_mlp_only_layers;
    int router_bias;              /* glm4_moe: mlp.gate.e_score_correction_bias [E] */
    /* Block FP8 (quantization_config: quant_method "fp8", weight_block_size [bn, bk]); 0 = none */
    uint32_t fp8_block_n, fp8_block_k;
};

/* ws_model_config_parse / _load into a config the caller holds (an internal one on the stack). */
WSI_HIDDEN ws_err wsi_model_config_parse_into(const char *json, size_t len, const char *label,
                                              ws_model_config *out, ws_error *err);
WSI_HIDDEN ws_err wsi_model_config_load_into(const char *path, ws_model_config *out,
                                             ws_error *err);

#endif
