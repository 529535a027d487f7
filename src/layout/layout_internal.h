/*
 * The builder API that layout families use (docs/layouts.md). A family is a function that,
 * given a model config and a tensor-parallel size, adds the model's canonical HF tensors, every
 * rank's local tensors, and the pieces that map one onto the other. Families never touch the
 * storage of a ws_layout directly, and nothing here knows about digests.
 */
#ifndef WS_LAYOUT_INTERNAL_H
#define WS_LAYOUT_INTERNAL_H

#include "internal.h"

/* Hard ceilings that keep a layout's memory bounded whatever the config says. */
#define WSL_MAX_NAME 256           /* bytes of a tensor name, NUL included */
#define WSL_MAX_PIECES (1u << 24)  /* pieces in one layout */
#define WSL_MAX_TENSORS (1u << 24) /* HF or local tensors in one layout */

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

/* Rows and columns of a tensor's 2-D view: [shape0, numel/shape0], or [n, 1] when 1-D. */
WSI_HIDDEN uint64_t wsl_view_rows(int ndim, const uint64_t *shape);
WSI_HIDDEN uint64_t wsl_view_cols(int ndim, const uint64_t *shape);

/* ---- dense decoder models (llama, mistral, qwen2, qwen3): their canonical HF tensors ------ */

/* Per-layer HF tensors, in the order a layout lists them. */
typedef enum wsl_kind {
    WSL_Q_W,
    WSL_K_W,
    WSL_V_W, /* self_attn.{q,k,v}_proj.weight */
    WSL_Q_B,
    WSL_K_B,
    WSL_V_B, /* self_attn.{q,k,v}_proj.bias (attention bias) */
    WSL_O_W,
    WSL_O_B, /* self_attn.o_proj.weight / .bias */
    WSL_Q_NORM,
    WSL_K_NORM, /* self_attn.{q,k}_norm.weight (qwen3) */
    WSL_GATE,
    WSL_UP,
    WSL_DOWN, /* mlp.{gate,up,down}_proj.weight */
    WSL_IN_NORM,
    WSL_POST_NORM, /* input_layernorm / post_attention_layernorm */
    WSL_KIND__COUNT
} wsl_kind;

typedef struct wsl_dense {
    uint64_t H, I, V, L;  /* hidden, intermediate, vocab, layers */
    uint64_t nh, nkv, hd; /* heads, kv heads, head dim */
    bool qkv_bias, o_bias, qk_norm, tied;
    uint32_t embed, norm, lm_head; /* HF indices */
    uint32_t layer0, per_layer;    /* first layer tensor; tensors per layer */
    int slot[WSL_KIND__COUNT];     /* offset within a layer, -1 when absent */
} wsl_dense;

/* Describe a dense model from its config; WS_ERR_LAYOUT for a model_type we cannot lay out. */
WSI_HIDDEN ws_err wsl_dense_describe(ws_layout *l, const ws_model_config *cfg, wsl_dense *m);
/* Add the model's HF tensors (embed, layers, norm, lm_head) and fill the indices of m. */
WSI_HIDDEN ws_err wsl_dense_add_hf(ws_layout *l, wsl_dense *m);
static inline bool wsl_has(const wsl_dense *m, wsl_kind k) { return m->slot[k] >= 0; }
static inline uint32_t wsl_hf_at(const wsl_dense *m, uint64_t layer, wsl_kind k) {
    return m->layer0 + (uint32_t)(layer * m->per_layer) + (uint32_t)m->slot[k];
}

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

typedef ws_err (*wsl_build_fn)(ws_layout *l, const ws_model_config *cfg, int tp);

WSI_HIDDEN ws_err wsl_build_hf(ws_layout *l, const ws_model_config *cfg, int tp);
WSI_HIDDEN ws_err wsl_build_tp(ws_layout *l, const ws_model_config *cfg, int tp); /* sglang, vllm */
WSI_HIDDEN ws_err wsl_build_megatron(ws_layout *l, const ws_model_config *cfg, int tp);
WSI_HIDDEN ws_err wsl_build_transformers(ws_layout *l, const ws_model_config *cfg, int tp);

#endif
