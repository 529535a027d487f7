/*
 * The builder API that layout families use (docs/layouts.md). A family is a function that,
 * given a model config and a tensor-parallel size, adds the model's canonical HF tensors, every
 * rank's local tensors, and the pieces that map one onto the other. Families never touch the
 * storage of a ws_layout directly, and nothing here knows about digests.
 */
#ifndef WS_LAYOUT_INTERNAL_H
#define WS_LAYOUT_INTERNAL_H

#include "internal.h"
#include "model_config.h"

/* Hard ceilings that keep a layout's memory bounded whatever the config says. */
#define WSL_MAX_NAME 256           /* bytes of a tensor name, NUL included */
#define WSL_MAX_PIECES (1u << 24)  /* pieces in one layout */
#define WSL_MAX_TENSORS (1u << 24) /* HF or local tensors in one layout */
#define WSL_MAX_EXPERT_SLOTS 65536 /* physical expert slots, and rows, of an expert map */

/*
 * Validate a model config (as parsed, or built by hand): every size positive and below the
 * limits of docs/layouts.md, kv heads dividing heads. Fails with `code`, naming the key.
 */
WSI_HIDDEN ws_err wsl_config_check(const ws_model_config *cfg, ws_err code, const char *label,
                                   ws_error *err);

/* ---- builder (src/layout/layout.c) ------------------------------------------------------------- */

/* Add a canonical tensor of 1 or 2 dims (d1 ignored when ndim is 1), named by printf format.
 * tied: index of the HF tensor it is tied to, or -1. *idx receives its index. */
WSI_HIDDEN ws_err wsl_add_hf(ws_layout *l, uint32_t *idx, long tied, int ndim, uint64_t d0,
                             uint64_t d1, const char *fmt, ...)
    __attribute__((format(printf, 7, 8)));
/* Add a tensor held by `rank`, named by printf format. */
WSI_HIDDEN ws_err wsl_add_local(ws_layout *l, uint32_t *idx, int rank, int ndim, uint64_t d0,
                                uint64_t d1, const char *fmt, ...)
    __attribute__((format(printf, 7, 8)));
/* Add a 3-D tensor [d0, d1, d2] held by `rank` (fused experts). Its 2-D view is
 * [d0 * d1, d2], so each expert's segment is a band of rows. */
WSI_HIDDEN ws_err wsl_add_local3(ws_layout *l, uint32_t *idx, int rank, uint64_t d0, uint64_t d1,
                                 uint64_t d2, const char *fmt, ...)
    __attribute__((format(printf, 7, 8)));
/* Add a piece: rows x cols of local tensor `local` at (l_row0, l_col0) are HF tensor `hf` at
 * (t_row0, t_col0), as `replica`. Both 2-D views are the layout's usual ones. A rectangle that
 * leaves either tensor is an internal error (WS_ERR_LAYOUT). */
WSI_HIDDEN ws_err wsl_add_piece(ws_layout *l, uint32_t hf, uint32_t local, uint32_t replica,
                                uint64_t rows, uint64_t cols, uint64_t t_row0, uint64_t t_col0,
                                uint64_t l_row0, uint64_t l_col0);
/* Let ws_layout_find_local also answer this name (on the local tensor's rank) with `local`:
 * an engine may present a tied tensor under the name of its twin. */
WSI_HIDDEN ws_err wsl_add_alias(ws_layout *l, uint32_t local, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Fail the build with WS_ERR_LAYOUT and a message naming the family and the reason. */
WSI_HIDDEN ws_err wsl_reject(ws_layout *l, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Rows and columns of a tensor's 2-D view: [shape0, numel/shape0] for 2 dims, [n, 1] when 1-D,
 * [numel/last, last] for 3 or more (so fused expert tensors stack experts' rows). */
WSI_HIDDEN uint64_t wsl_view_rows(int ndim, const uint64_t *shape);
WSI_HIDDEN uint64_t wsl_view_cols(int ndim, const uint64_t *shape);

/* ---- decoder models (dense and MoE): their canonical HF tensors --------------------------- */

/* Per-layer HF tensors, in the order a layout lists them (WSL_EXPERTS stands for the routed
 * experts' gate/up/down, 3 tensors per expert, expert-major). */
typedef enum wsl_kind {
    WSL_Q_W,
    WSL_K_W,
    WSL_V_W, /* self_attn.{q,k,v}_proj.weight */
    WSL_Q_B,
    WSL_K_B,
    WSL_V_B, /* self_attn.{q,k,v}_proj.bias (attention bias) */
    WSL_MLA_QA,
    WSL_MLA_QA_NORM,
    WSL_MLA_QB,  /* MLA: self_attn.q_a_proj.weight, q_a_layernorm.weight, q_b_proj.weight */
    WSL_MLA_KVA,
    WSL_MLA_KVA_NORM,
    WSL_MLA_KVB, /* MLA: self_attn.kv_a_proj_with_mqa.weight, kv_a_layernorm.weight, kv_b_proj */
    WSL_O_W,
    WSL_O_B, /* self_attn.o_proj.weight / .bias */
    WSL_Q_NORM,
    WSL_K_NORM, /* self_attn.{q,k}_norm.weight (qwen3) */
    WSL_GATE,
    WSL_UP,
    WSL_DOWN, /* mlp.{gate,up,down}_proj.weight (dense layers) */
    WSL_ROUTER,      /* mlp.gate.weight [E, H] (MoE layers) */
    WSL_ROUTER_BIAS, /* mlp.gate.e_score_correction_bias [E] (glm4_moe) */
    WSL_EXPERTS,     /* mlp.experts.{e}.{gate,up,down}_proj.weight */
    WSL_SH_GATE,
    WSL_SH_UP,
    WSL_SH_DOWN,        /* mlp.shared_expert(s).{gate,up,down}_proj.weight */
    WSL_SH_EXPERT_GATE, /* mlp.shared_expert_gate.weight [1, H] (qwen2_moe) */
    WSL_IN_NORM,
    WSL_POST_NORM, /* input_layernorm / post_attention_layernorm */
    WSL_KIND__COUNT
} wsl_kind;

/* Which of an expert's tensors (the order they follow WSL_EXPERTS' slot in). */
typedef enum wsl_expert_part { WSL_E_GATE = 0, WSL_E_UP = 1, WSL_E_DOWN = 2 } wsl_expert_part;

typedef struct wsl_dense {
    uint64_t H, I, V, L;  /* hidden, intermediate, vocab, layers */
    uint64_t nh, nkv, hd; /* heads, kv heads, head dim */
    bool qkv_bias, o_bias, qk_norm, tied;
    /* MoE: E routed experts of mI rows; shI rows of shared expert MLP (0: none) */
    bool moe;
    uint64_t E, mI, shI;
    /* MLA (deepseek): WSL_Q_W is q_proj [nh*qk, H] (q_lora 0) and WSL_O_W [H, nh*vd] */
    bool mla;
    uint64_t ql, kvl, nope, rope, vd; /* q_lora_rank, kv_lora_rank, head dims */
    /* block FP8: quantised weights are e4m3 with a `<name>_scale_inv` fp32 tensor right after */
    bool fp8;
    uint32_t bn, bk;
    uint32_t embed, norm, lm_head; /* HF indices */
    uint32_t *base;                /* first HF tensor of each layer (owned by the layout) */
    uint8_t *is_moe;               /* per layer: 1 when the layer's MLP is an MoE block */
    uint32_t per_layer[2];         /* HF tensors per dense / MoE layer */
    int slot[2][WSL_KIND__COUNT];  /* offset within a dense / MoE layer, -1 when absent */
} wsl_dense;

/* Describe a model from its config; WS_ERR_LAYOUT for a model_type we cannot lay out. */
WSI_HIDDEN ws_err wsl_dense_describe(ws_layout *l, const ws_model_config *cfg, wsl_dense *m);
/* Add the model's HF tensors (embed, layers, norm, lm_head) and fill the indices of m. */
WSI_HIDDEN ws_err wsl_dense_add_hf(ws_layout *l, wsl_dense *m);
/* Present in dense layers (the dense families' question). */
static inline bool wsl_has(const wsl_dense *m, wsl_kind k) { return m->slot[0][k] >= 0; }
/* Present in layer i. */
static inline bool wsl_has_at(const wsl_dense *m, uint64_t i, wsl_kind k) {
    return m->slot[m->is_moe[i]][k] >= 0;
}
static inline uint32_t wsl_hf_at(const wsl_dense *m, uint64_t layer, wsl_kind k) {
    return m->base[layer] + (uint32_t)m->slot[m->is_moe[layer]][k];
}
/* HF index of expert e's gate / up / down in MoE layer `layer`. */
static inline uint32_t wsl_expert_at(const wsl_dense *m, uint64_t layer, uint64_t e,
                                     wsl_expert_part part) {
    return m->base[layer] + (uint32_t)m->slot[1][WSL_EXPERTS] +
           (uint32_t)(3 * e + part) * (m->fp8 ? 2u : 1u);
}
/* Block FP8: is this per-layer kind a quantised weight (with a weight_scale_inv after it)? */
WSI_HIDDEN bool wsl_quantized(wsl_kind k);
/* Block FP8: give the local weight `w` (its pieces just added) its `<name>_scale_inv` tensor on
 * the same rank: shape [ceil(R/bn), ceil(C/bk)] of the weight's [R, C] (3-D: per expert), and a
 * scale piece for each weight piece (the HF scale is the tensor after the HF weight). A piece
 * that does not cover whole blocks is refused as the engines refuse it. No-op without FP8. */
WSI_HIDDEN ws_err wsl_add_scale(ws_layout *l, const wsl_dense *m, uint32_t w);
/* HF tensors in layers [0, L): an upper bound on per-layer pieces' tensors. */
WSI_HIDDEN uint64_t wsl_layer_tensors(const wsl_dense *m);
/* Memory owned by the layout (freed with it), zeroed; NULL and WS_ERR_NOMEM filled on failure. */
WSI_HIDDEN void *wsl_alloc(ws_layout *l, size_t bytes);

/* ---- parallel configuration ------------------------------------------------------------- */

typedef struct wsl_par {
    int tp, ep, pp;
    int placement, up_first, fused_shared, sequential;
    long redundant;         /* WS_PAR_REDUNDANT_EXPERTS */
    int attn_dp, dp_lm_head; /* WS_PAR_ATTN_DP, WS_PAR_DP_LM_HEAD (sglang) */
    long moe_dense_tp;       /* WS_PAR_MOE_DENSE_TP: 0 unset, 1 or tp */
    const int32_t *emap;    /* expert map rows x physical (ws_parallel_set_expert_map), or NULL */
    size_t emap_rows, emap_physical;
} wsl_par;

/* Record the expert map the family used (copied; ws_layout_expert_map). */
WSI_HIDDEN ws_err wsl_set_expert_map(ws_layout *l, const int32_t *map, size_t rows,
                                     size_t physical);
/* Add an engine buffer of known int32 values on `rank` (copied; ws_layout_buffer). */
WSI_HIDDEN ws_err wsl_add_buffer_i32(ws_layout *l, int rank, uint64_t n, const int32_t *values,
                                     const char *fmt, ...) __attribute__((format(printf, 5, 6)));
/* Judge what a rank holds under buffer b's name (dtype, shape and, when they fit, its int32
 * values, host memory): WS_MATCH, WS_SHAPE_DIFFERS or WS_MISMATCH with one line in detail
 * naming the first wrong entry (the physical expert) and how many are wrong. */
WSI_HIDDEN ws_status wsl_buffer_judge(const ws_buffer_desc *b, ws_dtype dtype, int ndim,
                                      const uint64_t *shape, const void *data, char *detail,
                                      size_t cap);
/* An expert map from parsed JSON (see ws_parallel_parse_expert_map): a new malloc'd array
 * rows x physical in *out, or WS_ERR_JSON naming `label` and what is wrong. */
WSI_HIDDEN ws_err wsl_expert_map_from_json(const void *json_value, const char *label,
                                           int32_t **out, size_t *rows, size_t *physical,
                                           ws_error *err);

WSI_HIDDEN void wsl_parallel_defaults(long v[WS_PAR__COUNT]);
WSI_HIDDEN const long *wsl_parallel_values(const ws_parallel *p);
/* Declare the layout's global ranks (before any local tensor is added); coordinates start as
 * tp_rank = rank, the others 0. WS_ERR_LIMIT past the rank ceiling. */
WSI_HIDDEN ws_err wsl_set_ranks(ws_layout *l, uint64_t n);
/* Record a global rank's coordinates and the expert tensor-parallel size (WS_PAR_MOE_TP). */
WSI_HIDDEN void wsl_set_coord(ws_layout *l, int rank, int tp_rank, int ep_rank, int pp_rank,
                              int moe_tp_rank);
WSI_HIDDEN void wsl_set_moe_tp(ws_layout *l, int moe_tp);
/* Record a global rank's attention-DP rank (sglang DP attention; 0 otherwise). */
WSI_HIDDEN void wsl_set_attn_dp_coord(ws_layout *l, int rank, int attn_dp_rank);
/* Layers [*first, *end) held by pipeline stage s of pp, split as SGLang's and vLLM's
 * get_pp_indices (the last L % pp stages one layer more). */
WSI_HIDDEN void wsl_pp_layers(uint64_t L, int pp, int s, uint64_t *first, uint64_t *end);

/* Announce how many pieces the family will add: WS_ERR_LIMIT past WSL_MAX_PIECES (before any
 * memory is spent on them), else room for them is reserved. */
WSI_HIDDEN ws_err wsl_expect(ws_layout *l, uint64_t pieces);

/* Common piece shapes: the whole tensor, or full-width row bands / full-height column bands. */
WSI_HIDDEN ws_err wsl_piece_full(ws_layout *l, uint32_t hf, uint32_t local, uint32_t replica);
WSI_HIDDEN ws_err wsl_piece_rows(ws_layout *l, uint32_t hf, uint32_t local, uint32_t replica,
                                 uint64_t t_row0, uint64_t l_row0, uint64_t rows);
WSI_HIDDEN ws_err wsl_piece_cols(ws_layout *l, uint32_t hf, uint32_t local, uint32_t replica,
                                 uint64_t t_col0, uint64_t l_col0, uint64_t cols);
/* A tensor replicated on every rank: rank `rank` holds all of HF tensor `hf` (same shape) under
 * the printf name, as replica `rank`. */
WSI_HIDDEN ws_err wsl_add_replicated(ws_layout *l, int rank, uint32_t hf, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* The same, as copy number `replica` (ranks of a later pipeline stage number copies from 0). */
WSI_HIDDEN ws_err wsl_add_replica(ws_layout *l, int rank, uint32_t replica, uint32_t hf,
                                  const char *fmt, ...) __attribute__((format(printf, 5, 6)));
/* Vocab-parallel table: rank r holds rows [r*per_rank, (r+1)*per_rank) of the padded vocab;
 * the rows below V map onto HF rows, the others are padding and get no piece. */
WSI_HIDDEN ws_err wsl_piece_vocab(ws_layout *l, uint32_t hf, uint32_t local, int r,
                                  uint64_t per_rank, uint64_t V);

/* Return from the enclosing function on the first error. */
#define WSL_TRY(expr)                                                                              \
    do {                                                                                           \
        ws_err wsl_e_ = (expr);                                                                    \
        if (wsl_e_) return wsl_e_;                                                                 \
    } while (0)

/* ---- families --------------------------------------------------------------------------- */

typedef ws_err (*wsl_build_fn)(ws_layout *l, const ws_model_config *cfg, const wsl_par *p);

WSI_HIDDEN ws_err wsl_build_hf(ws_layout *l, const ws_model_config *cfg, const wsl_par *p);
WSI_HIDDEN ws_err wsl_build_sglang(ws_layout *l, const ws_model_config *cfg, const wsl_par *p);
WSI_HIDDEN ws_err wsl_build_vllm(ws_layout *l, const ws_model_config *cfg, const wsl_par *p);
WSI_HIDDEN ws_err wsl_build_megatron(ws_layout *l, const ws_model_config *cfg, const wsl_par *p);
WSI_HIDDEN ws_err wsl_build_transformers(ws_layout *l, const ws_model_config *cfg,
                                         const wsl_par *p);

#endif
