/*
 * Layouts, checked against an independent model of each engine.
 *
 * For every family x tp x config, the test builds what each rank would really hold, element by
 * element, the way the engine's own loader fills it (vLLM/SGLang: narrow the HF tensor at
 * shard_rank * shard_size into the q/k/v or gate/up slot; Megatron: interleave q/k/v per query
 * group into the full linear_qkv as the converters do, then split it along dim 0), each element
 * tagged with the HF tensor and flat index it came from. Then it checks the layout:
 *   - the local tensors are exactly the simulated ones, with the same shapes;
 *   - every piece stays inside both tensors, and each element it maps carries the tag of the HF
 *     element the piece claims;
 *   - every local element is covered by exactly one piece, except vocab padding, which must be
 *     exactly the rows >= V of the padded table;
 *   - replica-0 pieces tile every non-tied HF tensor exactly once; tied tensors have no piece;
 *   - every replica k > 0 rectangle is a replica-0 rectangle of the same HF tensor; copies of a
 *     rectangle are numbered 0..n-1, replica 0 on the lowest rank, n as the engine replicates.
 */
#include "weightsum_experimental.h"

#include "check.h"

#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef struct model {
    const char *type;
    uint64_t H, I, V, L, nh, nkv, hd;
    int bias; /* config.attention_bias */
    int tied;
} model;

static bool is_type(const model *m, const char *t) { return strcmp(m->type, t) == 0; }
static bool qkv_bias(const model *m) { return is_type(m, "qwen2") || m->bias; }
static bool o_bias(const model *m) { return m->bias && !is_type(m, "qwen2"); }
static bool qk_norm(const model *m) { return is_type(m, "qwen3"); }

/* One key of a hand-built config (ws_model_config_set must take it). */
static void set(ws_model_config *c, ws_cfg_key k, long v) {
    CHECK_OK(ws_model_config_set(c, k, v, NULL));
}

/* A config built key by key (free with ws_model_config_free). */
static ws_model_config *to_cfg(const model *m) {
    ws_model_config *c = NULL;
    CHECK_OK(ws_model_config_create(&c, NULL));
    CHECK_OK(ws_model_config_set_model_type(c, m->type, NULL));
    set(c, WS_CFG_HIDDEN_SIZE, (long)m->H);
    set(c, WS_CFG_INTERMEDIATE_SIZE, (long)m->I);
    set(c, WS_CFG_VOCAB_SIZE, (long)m->V);
    set(c, WS_CFG_NUM_LAYERS, (long)m->L);
    set(c, WS_CFG_NUM_HEADS, (long)m->nh);
    set(c, WS_CFG_NUM_KV_HEADS, (long)m->nkv);
    set(c, WS_CFG_HEAD_DIM, (long)m->hd);
    set(c, WS_CFG_TIE_WORD_EMBEDDINGS, m->tied);
    set(c, WS_CFG_ATTENTION_BIAS, qkv_bias(m));
    set(c, WS_CFG_QK_NORM, qk_norm(m));
    return c;
}

/* ---- expected HF tensors ---------------------------------------------------------------- */

typedef struct hf_exp {
    char name[128];
    int ndim;
    uint64_t d0, d1;
    bool tied;
} hf_exp;

static size_t expected_hf(const model *m, hf_exp *out) {
    size_t n = 0;
#define ADD(nd, a, b, ...)                                                                         \
    do {                                                                                           \
        snprintf(out[n].name, sizeof out[n].name, __VA_ARGS__);                                    \
        out[n].ndim = nd, out[n].d0 = a, out[n].d1 = b, out[n].tied = false;                       \
        n++;                                                                                       \
    } while (0)
    uint64_t q = m->nh * m->hd, kv = m->nkv * m->hd;
    ADD(2, m->V, m->H, "model.embed_tokens.weight");
    for (uint64_t i = 0; i < m->L; i++) {
        unsigned long long li = (unsigned long long)i;
        ADD(2, q, m->H, "model.layers.%llu.self_attn.q_proj.weight", li);
        ADD(2, kv, m->H, "model.layers.%llu.self_attn.k_proj.weight", li);
        ADD(2, kv, m->H, "model.layers.%llu.self_attn.v_proj.weight", li);
        if (qkv_bias(m)) {
            ADD(1, q, 0, "model.layers.%llu.self_attn.q_proj.bias", li);
            ADD(1, kv, 0, "model.layers.%llu.self_attn.k_proj.bias", li);
            ADD(1, kv, 0, "model.layers.%llu.self_attn.v_proj.bias", li);
        }
        ADD(2, m->H, q, "model.layers.%llu.self_attn.o_proj.weight", li);
        if (o_bias(m)) ADD(1, m->H, 0, "model.layers.%llu.self_attn.o_proj.bias", li);
        if (qk_norm(m)) {
            ADD(1, m->hd, 0, "model.layers.%llu.self_attn.q_norm.weight", li);
            ADD(1, m->hd, 0, "model.layers.%llu.self_attn.k_norm.weight", li);
        }
        ADD(2, m->I, m->H, "model.layers.%llu.mlp.gate_proj.weight", li);
        ADD(2, m->I, m->H, "model.layers.%llu.mlp.up_proj.weight", li);
        ADD(2, m->H, m->I, "model.layers.%llu.mlp.down_proj.weight", li);
        ADD(1, m->H, 0, "model.layers.%llu.input_layernorm.weight", li);
        ADD(1, m->H, 0, "model.layers.%llu.post_attention_layernorm.weight", li);
    }
    ADD(1, m->H, 0, "model.norm.weight");
    ADD(2, m->V, m->H, "lm_head.weight");
    out[n - 1].tied = m->tied;
#undef ADD
    return n;
}

static uint64_t view_cols(int ndim, const uint64_t *shape) { return ndim == 2 ? shape[1] : 1; }

static void check_hf_list(const ws_layout *l, const model *m) {
    hf_exp *exp = calloc(16 + 20 * m->L, sizeof *exp);
    size_t n = expected_hf(m, exp);
    CHECK(ws_layout_hf_count(l) == n);
    for (size_t i = 0; i < n; i++) {
        long j = ws_layout_find_hf(l, exp[i].name);
        CHECK(j >= 0);
        if (j < 0) {
            fprintf(stderr, "missing HF tensor %s\n", exp[i].name);
            continue;
        }
        const ws_hf_desc *d = ws_layout_hf(l, (size_t)j);
        CHECK(strcmp(d->name, exp[i].name) == 0);
        CHECK(d->ndim == exp[i].ndim && d->shape[0] == exp[i].d0);
        if (d->ndim == 2) CHECK(d->shape[1] == exp[i].d1);
        if (exp[i].tied)
            CHECK(d->tied_to && strcmp(d->tied_to, "model.embed_tokens.weight") == 0);
        else
            CHECK(d->tied_to == NULL);
    }
    free(exp);
}

/* ---- simulated engine tensors ------------------------------------------------------------ */

typedef struct simt {
    char name[128];
    int rank, ndim;
    uint64_t shape[2];
    uint64_t *id; /* (hf index + 1) << 32 | flat HF element; 0 = padding */
} simt;

typedef struct sim {
    const ws_layout *l;
    simt *t;
    size_t n, cap;
} sim;

static uint64_t tag(long hf, uint64_t elem) { return ((uint64_t)(hf + 1) << 32) | elem; }

static simt *sim_add(sim *s, int rank, int ndim, uint64_t d0, uint64_t d1, const char *fmt, ...) {
    if (s->n == s->cap) {
        s->cap = s->cap ? 2 * s->cap : 64;
        s->t = realloc(s->t, s->cap * sizeof *s->t);
    }
    simt *t = &s->t[s->n++];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(t->name, sizeof t->name, fmt, ap);
    va_end(ap);
    t->rank = rank;
    t->ndim = ndim;
    t->shape[0] = d0;
    t->shape[1] = ndim == 2 ? d1 : 0;
    t->id = calloc(d0 * (ndim == 2 ? d1 : 1), sizeof *t->id);
    return t;
}

static void sim_free(sim *s) {
    for (size_t i = 0; i < s->n; i++)
        free(s->t[i].id);
    free(s->t);
}

static long hf_index(const sim *s, const char *name) {
    long j = ws_layout_find_hf(s->l, name);
    if (j < 0) fprintf(stderr, "simulation needs HF tensor %s, absent\n", name);
    CHECK(j >= 0);
    return j;
}

static uint64_t hf_cols(const sim *s, long j) {
    const ws_hf_desc *d = ws_layout_hf(s->l, (size_t)j);
    return view_cols(d->ndim, d->shape);
}

/* dst rows [d0, d0+n) = rows [s0, s0+n) of HF tensor `name` (same width). */
static void cp_rows(const sim *s, simt *dst, uint64_t d0, const char *name, uint64_t s0,
                    uint64_t n) {
    long j = hf_index(s, name);
    if (j < 0) return;
    uint64_t c = view_cols(dst->ndim, dst->shape);
    CHECK(hf_cols(s, j) == c);
    for (uint64_t r = 0; r < n; r++)
        for (uint64_t k = 0; k < c; k++)
            dst->id[(d0 + r) * c + k] = tag(j, (s0 + r) * c + k);
}

/* dst (all its columns) = columns [c0, c0 + dst cols) of HF tensor `name`, all rows. */
static void cp_cols(const sim *s, simt *dst, const char *name, uint64_t c0) {
    long j = hf_index(s, name);
    if (j < 0) return;
    uint64_t tc = hf_cols(s, j), lc = dst->shape[1];
    for (uint64_t r = 0; r < dst->shape[0]; r++)
        for (uint64_t k = 0; k < lc; k++)
            dst->id[r * lc + k] = tag(j, r * tc + c0 + k);
}

static void cp_full(const sim *s, simt *dst, const char *name) {
    cp_rows(s, dst, 0, name, 0, dst->shape[0]);
}

/* Vocab-parallel: local row k of rank r is padded-table row r*rows + k. */
static void cp_vocab(const sim *s, simt *dst, int r, const char *name, uint64_t V) {
    uint64_t rows = dst->shape[0], first = (uint64_t)r * rows;
    if (first < V) cp_rows(s, dst, 0, name, first, V - first < rows ? V - first : rows);
}

#define HFN(buf, ...) (snprintf(buf, sizeof buf, __VA_ARGS__), buf)

static void sim_hf(sim *s, const model *m) {
    hf_exp *exp = calloc(16 + 20 * m->L, sizeof *exp);
    size_t n = expected_hf(m, exp);
    for (size_t i = 0; i < n; i++) {
        if (exp[i].tied) continue;
        simt *t = sim_add(s, 0, exp[i].ndim, exp[i].d0, exp[i].d1, "%s", exp[i].name);
        cp_full(s, t, exp[i].name);
    }
    free(exp);
}

/* vLLM / SGLang loaders (QKVParallelLinear.weight_loader & co.), rank by rank. */
static void sim_tp(sim *s, const model *m, int tp) {
    uint64_t T = (uint64_t)tp, H = m->H, hd = m->hd;
    uint64_t Vp = (m->V + 63) / 64 * 64;
    uint64_t num_heads = m->nh / T;
    uint64_t num_kv_heads = T >= m->nkv ? 1 : m->nkv / T;
    uint64_t num_kv_head_replicas = T >= m->nkv ? T / m->nkv : 1;
    uint64_t q_size = num_heads * hd, kv_size = num_kv_heads * hd, i_size = m->I / T;
    char a[128];
    for (int r = 0; r < tp; r++) {
        simt *t = sim_add(s, r, 2, Vp / T, H, "model.embed_tokens.weight");
        cp_vocab(s, t, r, "model.embed_tokens.weight", m->V);
        for (uint64_t i = 0; i < m->L; i++) {
            unsigned long long li = (unsigned long long)i;
            uint64_t kv_shard = (uint64_t)r / num_kv_head_replicas;
            const char *sfx[2] = {"weight", "bias"};
            for (int b = 0; b < (qkv_bias(m) ? 2 : 1); b++) {
                t = sim_add(s, r, b ? 1 : 2, q_size + 2 * kv_size, H,
                            "model.layers.%llu.self_attn.qkv_proj.%s", li, sfx[b]);
                /* shard "q": offset 0, start tp_rank * shard_size */
                cp_rows(s, t, 0, HFN(a, "model.layers.%llu.self_attn.q_proj.%s", li, sfx[b]),
                        (uint64_t)r * q_size, q_size);
                /* shards "k", "v": start (tp_rank // num_kv_head_replicas) * shard_size */
                cp_rows(s, t, q_size, HFN(a, "model.layers.%llu.self_attn.k_proj.%s", li, sfx[b]),
                        kv_shard * kv_size, kv_size);
                cp_rows(s, t, q_size + kv_size,
                        HFN(a, "model.layers.%llu.self_attn.v_proj.%s", li, sfx[b]),
                        kv_shard * kv_size, kv_size);
            }
            t = sim_add(s, r, 2, H, q_size, "model.layers.%llu.self_attn.o_proj.weight", li);
            cp_cols(s, t, HFN(a, "model.layers.%llu.self_attn.o_proj.weight", li),
                    (uint64_t)r * q_size);
            if (o_bias(m)) {
                t = sim_add(s, r, 1, H, 0, "model.layers.%llu.self_attn.o_proj.bias", li);
                cp_full(s, t, HFN(a, "model.layers.%llu.self_attn.o_proj.bias", li));
            }
            if (qk_norm(m)) {
                t = sim_add(s, r, 1, hd, 0, "model.layers.%llu.self_attn.q_norm.weight", li);
                cp_full(s, t, t->name);
                t = sim_add(s, r, 1, hd, 0, "model.layers.%llu.self_attn.k_norm.weight", li);
                cp_full(s, t, t->name);
            }
            t = sim_add(s, r, 2, 2 * i_size, H, "model.layers.%llu.mlp.gate_up_proj.weight", li);
            cp_rows(s, t, 0, HFN(a, "model.layers.%llu.mlp.gate_proj.weight", li),
                    (uint64_t)r * i_size, i_size);
            cp_rows(s, t, i_size, HFN(a, "model.layers.%llu.mlp.up_proj.weight", li),
                    (uint64_t)r * i_size, i_size);
            t = sim_add(s, r, 2, H, i_size, "model.layers.%llu.mlp.down_proj.weight", li);
            cp_cols(s, t, HFN(a, "model.layers.%llu.mlp.down_proj.weight", li),
                    (uint64_t)r * i_size);
            t = sim_add(s, r, 1, H, 0, "model.layers.%llu.input_layernorm.weight", li);
            cp_full(s, t, t->name);
            t = sim_add(s, r, 1, H, 0, "model.layers.%llu.post_attention_layernorm.weight", li);
            cp_full(s, t, t->name);
        }
        t = sim_add(s, r, 1, H, 0, "model.norm.weight");
        cp_full(s, t, t->name);
        if (!m->tied) {
            t = sim_add(s, r, 2, Vp / T, H, "lm_head.weight");
            cp_vocab(s, t, r, "lm_head.weight", m->V);
        }
    }
}

/* Megatron: the full linear_qkv is q/k/v interleaved per query group (as the HF<->Megatron
 * converters view it: [groups, heads/groups + 2, hd, H]); rank r holds rows chunk r of it.
 * linear_fc1 of rank r is [gate chunk r ; up chunk r]. */
static void sim_megatron(sim *s, const model *m, int tp) {
    uint64_t T = (uint64_t)tp, H = m->H, hd = m->hd;
    uint64_t div = 128 * T, Vp = (m->V + div - 1) / div * div;
    uint64_t qpg = m->nh / m->nkv, full_rows = (m->nh + 2 * m->nkv) * hd;
    uint64_t i_size = m->I / T, q_cols = m->nh * hd / T;
    char a[128];
    for (uint64_t i = 0; i < m->L; i++) {
        unsigned long long li = (unsigned long long)i;
        const char *sfx[2] = {"weight", "bias"};
        for (int b = 0; b < (qkv_bias(m) ? 2 : 1); b++) {
            /* full interleaved tensor, then split along dim 0 */
            sim full = {.l = s->l};
            simt *f = sim_add(&full, 0, b ? 1 : 2, full_rows, H, "full");
            uint64_t row = 0;
            for (uint64_t g = 0; g < m->nkv; g++) {
                cp_rows(s, f, row, HFN(a, "model.layers.%llu.self_attn.q_proj.%s", li, sfx[b]),
                        g * qpg * hd, qpg * hd);
                row += qpg * hd;
                cp_rows(s, f, row, HFN(a, "model.layers.%llu.self_attn.k_proj.%s", li, sfx[b]),
                        g * hd, hd);
                row += hd;
                cp_rows(s, f, row, HFN(a, "model.layers.%llu.self_attn.v_proj.%s", li, sfx[b]),
                        g * hd, hd);
                row += hd;
            }
            uint64_t cols = b ? 1 : H, part = full_rows / T;
            for (int r = 0; r < tp; r++) {
                simt *t = sim_add(s, r, b ? 1 : 2, part, H,
                                  "decoder.layers.%llu.self_attention.linear_qkv.%s", li, sfx[b]);
                memcpy(t->id, f->id + (uint64_t)r * part * cols, part * cols * sizeof *t->id);
            }
            sim_free(&full);
        }
    }
    for (int r = 0; r < tp; r++) {
        simt *t = sim_add(s, r, 2, Vp / T, H, "embedding.word_embeddings.weight");
        cp_vocab(s, t, r, "model.embed_tokens.weight", m->V);
        for (uint64_t i = 0; i < m->L; i++) {
            unsigned long long li = (unsigned long long)i;
            t = sim_add(s, r, 1, H, 0,
                        "decoder.layers.%llu.self_attention.linear_qkv.layer_norm_weight", li);
            cp_full(s, t, HFN(a, "model.layers.%llu.input_layernorm.weight", li));
            t = sim_add(s, r, 2, H, q_cols, "decoder.layers.%llu.self_attention.linear_proj.weight",
                        li);
            cp_cols(s, t, HFN(a, "model.layers.%llu.self_attn.o_proj.weight", li),
                    (uint64_t)r * q_cols);
            if (qk_norm(m)) {
                t = sim_add(s, r, 1, hd, 0, "decoder.layers.%llu.self_attention.q_layernorm.weight",
                            li);
                cp_full(s, t, HFN(a, "model.layers.%llu.self_attn.q_norm.weight", li));
                t = sim_add(s, r, 1, hd, 0, "decoder.layers.%llu.self_attention.k_layernorm.weight",
                            li);
                cp_full(s, t, HFN(a, "model.layers.%llu.self_attn.k_norm.weight", li));
            }
            t = sim_add(s, r, 2, 2 * i_size, H, "decoder.layers.%llu.mlp.linear_fc1.weight", li);
            cp_rows(s, t, 0, HFN(a, "model.layers.%llu.mlp.gate_proj.weight", li),
                    (uint64_t)r * i_size, i_size);
            cp_rows(s, t, i_size, HFN(a, "model.layers.%llu.mlp.up_proj.weight", li),
                    (uint64_t)r * i_size, i_size);
            t = sim_add(s, r, 1, H, 0, "decoder.layers.%llu.mlp.linear_fc1.layer_norm_weight", li);
            cp_full(s, t, HFN(a, "model.layers.%llu.post_attention_layernorm.weight", li));
            t = sim_add(s, r, 2, H, i_size, "decoder.layers.%llu.mlp.linear_fc2.weight", li);
            cp_cols(s, t, HFN(a, "model.layers.%llu.mlp.down_proj.weight", li),
                    (uint64_t)r * i_size);
        }
        t = sim_add(s, r, 1, H, 0, "decoder.final_layernorm.weight");
        cp_full(s, t, "model.norm.weight");
        if (!m->tied) {
            t = sim_add(s, r, 2, Vp / T, H, "output_layer.weight");
            cp_vocab(s, t, r, "lm_head.weight", m->V);
        }
    }
}

/* ---- the checker ------------------------------------------------------------------------- */

static const ws_layout *sort_layout;
static int piece_cmp(const void *a, const void *b) {
    const ws_piece *p = ws_layout_piece(sort_layout, *(const size_t *)a);
    const ws_piece *q = ws_layout_piece(sort_layout, *(const size_t *)b);
#define CMP(f)                                                                                     \
    if (p->f != q->f) return p->f < q->f ? -1 : 1;
    CMP(hf)
    CMP(t_row0) CMP(t_col0) CMP(rows) CMP(cols) CMP(replica)
#undef CMP
        return 0;
}

static bool ends_with(const char *s, const char *suffix) {
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && strcmp(s + n - k, suffix) == 0;
}

/* Copies of one HF rectangle the engine keeps. */
static uint64_t expected_copies(const char *family, const model *m, int tp, const char *hf) {
    uint64_t T = (uint64_t)tp;
    bool tp_family = strcmp(family, "sglang") == 0 || strcmp(family, "vllm") == 0;
    if (strstr(hf, "k_proj.") || strstr(hf, "v_proj."))
        return tp_family && T > m->nkv ? T / m->nkv : 1;
    if (ends_with(hf, "norm.weight") || ends_with(hf, "layernorm.weight") ||
        ends_with(hf, "o_proj.bias"))
        return T;
    return 1;
}

static bool is_vocab(const char *name) {
    return strcmp(name, "model.embed_tokens.weight") == 0 || strcmp(name, "lm_head.weight") == 0 ||
           strcmp(name, "embedding.word_embeddings.weight") == 0 ||
           strcmp(name, "output_layer.weight") == 0;
}

static void validate(const ws_layout *l, const sim *s, const char *family, const model *m, int tp,
                     uint64_t Vp) {
    size_t nl = ws_layout_local_count(l), nh = ws_layout_hf_count(l), np = ws_layout_piece_count(l);
    CHECK(nl == s->n);
    /* local index -> simulated tensor */
    const simt **of = calloc(nl ? nl : 1, sizeof *of);
    for (size_t i = 0; i < s->n; i++) {
        const simt *t = &s->t[i];
        long j = ws_layout_find_local(l, t->rank, t->name);
        if (j < 0) {
            fprintf(stderr, "%s tp %d: local tensor %s on rank %d missing\n", family, tp, t->name,
                    t->rank);
            CHECK(0);
            continue;
        }
        const ws_local_desc *d = ws_layout_local(l, (size_t)j);
        CHECK(d->rank == t->rank && strcmp(d->name, t->name) == 0 && d->ndim == t->ndim);
        CHECK(d->shape[0] == t->shape[0]);
        if (t->ndim == 2) CHECK(d->shape[1] == t->shape[1]);
        if (d->shape[0] != t->shape[0] || (t->ndim == 2 && d->shape[1] != t->shape[1]))
            fprintf(stderr, "%s tp %d: %s rank %d shape %llux%llu, expected %llux%llu\n", family,
                    tp, t->name, t->rank, (unsigned long long)d->shape[0],
                    (unsigned long long)d->shape[1], (unsigned long long)t->shape[0],
                    (unsigned long long)t->shape[1]);
        of[j] = t;
    }
    for (size_t j = 0; j < nl; j++) {
        const ws_local_desc *d = ws_layout_local(l, j);
        CHECK(d->rank >= 0 && d->rank < tp);
        if (!of[j]) fprintf(stderr, "%s tp %d: unexpected local %s\n", family, tp, d->name);
    }

    uint8_t **lcov = calloc(nl ? nl : 1, sizeof *lcov);
    uint8_t **hcov = calloc(nh, sizeof *hcov);
    size_t *pieces_of = calloc(nh, sizeof *pieces_of);
    long bad_tag = 0;
    for (size_t i = 0; i < np; i++) {
        const ws_piece *p = ws_layout_piece(l, i);
        CHECK(p->hf < nh && p->local < nl);
        if (p->hf >= nh || p->local >= nl || !of[p->local]) continue;
        const ws_hf_desc *t = ws_layout_hf(l, p->hf);
        const ws_local_desc *d = ws_layout_local(l, p->local);
        const simt *st = of[p->local];
        pieces_of[p->hf]++;
        uint64_t trows = t->shape[0], tcols = view_cols(t->ndim, t->shape);
        uint64_t lrows = d->shape[0], lcols = view_cols(d->ndim, d->shape);
        CHECK(p->t_cols == tcols && p->l_cols == lcols);
        CHECK(p->rows > 0 && p->cols > 0);
        bool inside = p->t_row0 + p->rows <= trows && p->t_col0 + p->cols <= tcols &&
                      p->l_row0 + p->rows <= lrows && p->l_col0 + p->cols <= lcols;
        CHECK(inside);
        if (!inside || t->tied_to) {
            CHECK(!t->tied_to);
            continue;
        }
        if (!lcov[p->local]) lcov[p->local] = calloc(lrows * lcols, 1);
        if (!hcov[p->hf]) hcov[p->hf] = calloc(trows * tcols, 1);
        for (uint64_t r = 0; r < p->rows; r++)
            for (uint64_t c = 0; c < p->cols; c++) {
                uint64_t le = (p->l_row0 + r) * lcols + p->l_col0 + c;
                uint64_t te = (p->t_row0 + r) * tcols + p->t_col0 + c;
                if (st->id[le] != tag((long)p->hf, te)) {
                    if (!bad_tag++)
                        fprintf(stderr,
                                "%s tp %d: piece %zu maps %s rank %d elem %llu to %s elem %llu, "
                                "but the engine holds tag %llx there\n",
                                family, tp, i, d->name, d->rank, (unsigned long long)le, t->name,
                                (unsigned long long)te, (unsigned long long)st->id[le]);
                }
                lcov[p->local][le]++;
                if (p->replica == 0) hcov[p->hf][te]++;
            }
    }
    CHECK(bad_tag == 0);

    /* Order: each local tensor's pieces come together, by local row, locals rank-major. */
    for (size_t i = 1; i < np; i++) {
        const ws_piece *p = ws_layout_piece(l, i - 1), *q = ws_layout_piece(l, i);
        CHECK(p->local < q->local || (p->local == q->local && p->l_row0 + p->rows <= q->l_row0) ||
              (p->local == q->local && p->l_row0 == q->l_row0 && p->l_col0 < q->l_col0));
    }
    for (size_t j = 1; j < nl; j++)
        CHECK(ws_layout_local(l, j - 1)->rank <= ws_layout_local(l, j)->rank);

    /* Local coverage: exactly once, except padding = rows >= V of the padded vocab table. */
    long bad_cov = 0, bad_pad = 0;
    for (size_t j = 0; j < nl; j++) {
        const ws_local_desc *d = ws_layout_local(l, j);
        const simt *st = of[j];
        if (!st) continue;
        uint64_t rows = d->shape[0], cols = view_cols(d->ndim, d->shape);
        bool vocab = is_vocab(d->name);
        for (uint64_t r = 0; r < rows; r++) {
            bool pad = vocab && (uint64_t)d->rank * rows + r >= m->V;
            if (vocab) CHECK((uint64_t)tp * rows == Vp);
            for (uint64_t c = 0; c < cols; c++) {
                unsigned cov = lcov[j] ? lcov[j][r * cols + c] : 0;
                if (cov != (pad ? 0u : 1u)) bad_cov++;
                if ((st->id[r * cols + c] == 0) != pad) bad_pad++;
            }
        }
    }
    CHECK(bad_cov == 0);
    CHECK(bad_pad == 0);

    /* HF tiling by replica 0. */
    for (size_t h = 0; h < nh; h++) {
        const ws_hf_desc *t = ws_layout_hf(l, h);
        if (t->tied_to) {
            CHECK(pieces_of[h] == 0);
            continue;
        }
        uint64_t n = t->shape[0] * view_cols(t->ndim, t->shape);
        long bad = 0;
        for (uint64_t e = 0; e < n; e++)
            if (!hcov[h] || hcov[h][e] != 1) bad++;
        if (bad)
            fprintf(stderr, "%s tp %d: %s: %ld elements not tiled once\n", family, tp, t->name,
                    bad);
        CHECK(bad == 0);
    }

    /* Replicas: group identical rectangles. */
    size_t *ord = malloc((np ? np : 1) * sizeof *ord);
    for (size_t i = 0; i < np; i++)
        ord[i] = i;
    sort_layout = l;
    qsort(ord, np, sizeof *ord, piece_cmp);
    for (size_t i = 0; i < np;) {
        const ws_piece *p = ws_layout_piece(l, ord[i]);
        size_t j = i;
        int min_rank = 1 << 30, rank0 = -1;
        uint64_t rank_mask = 0;
        bool numbered = true;
        for (; j < np; j++) {
            const ws_piece *q = ws_layout_piece(l, ord[j]);
            if (q->hf != p->hf || q->t_row0 != p->t_row0 || q->t_col0 != p->t_col0 ||
                q->rows != p->rows || q->cols != p->cols)
                break;
            if (q->replica != j - i) numbered = false; /* sorted by replica: 0, 1, ..., n-1 */
            int rank = ws_layout_local(l, q->local)->rank;
            if (rank < min_rank) min_rank = rank;
            if (q->replica == 0) rank0 = rank;
            if (rank < 64) {
                CHECK(!(rank_mask & (1ull << rank))); /* copies live on distinct ranks */
                rank_mask |= 1ull << rank;
            }
        }
        const char *hf = ws_layout_hf(l, p->hf)->name;
        uint64_t want = expected_copies(family, m, tp, hf);
        if ((uint64_t)(j - i) != want || !numbered || rank0 != min_rank)
            fprintf(stderr, "%s tp %d: %s rows %llu: %zu copies (want %llu), numbered %d\n", family,
                    tp, hf, (unsigned long long)p->t_row0, j - i, (unsigned long long)want,
                    numbered);
        CHECK((uint64_t)(j - i) == want);
        CHECK(numbered);
        CHECK(rank0 == min_rank);
        i = j;
    }

    free(ord);
    for (size_t j = 0; j < nl; j++)
        free(lcov[j]);
    for (size_t h = 0; h < nh; h++)
        free(hcov[h]);
    free(lcov);
    free(hcov);
    free(pieces_of);
    free(of);
}

/* ---- the matrix -------------------------------------------------------------------------- */

static bool accepts(const char *family, const model *m, int tp) {
    uint64_t T = (uint64_t)tp;
    if (strcmp(family, "hf") == 0) return tp == 1;
    if (m->nh % T || m->I % T) return false;
    if (strcmp(family, "megatron") == 0) return m->nkv % T == 0 && !o_bias(m);
    if (m->nkv >= T ? m->nkv % T : T % m->nkv) return false;
    return (m->V + 63) / 64 * 64 % T == 0;
}

static int combos_built, combos_rejected;

static void run_one(const char *family, const model *m, int tp) {
    ws_model_config *cfg = to_cfg(m);
    ws_layout *l = NULL;
    ws_error e;
    ws_error_clear(&e);
    ws_err r = ws_layout_create(family, cfg, tp, &l, &e);
    ws_model_config_free(cfg);
    if (!accepts(family, m, tp)) {
        if (r != WS_ERR_LAYOUT)
            fprintf(stderr, "%s tp %d %s nkv %llu: expected WS_ERR_LAYOUT, got %s\n", family, tp,
                    m->type, (unsigned long long)m->nkv, ws_err_name(r));
        CHECK(r == WS_ERR_LAYOUT);
        CHECK(l == NULL);
        CHECK(e.code == WS_ERR_LAYOUT && e.what[0] != '\0');
        combos_rejected++;
        return;
    }
    if (r != WS_OK)
        fprintf(stderr, "%s tp %d %s nkv %llu: %s: %s\n", family, tp, m->type,
                (unsigned long long)m->nkv, ws_err_name(r), e.what);
    CHECK(r == WS_OK);
    if (r != WS_OK) return;
    combos_built++;
    CHECK(strcmp(ws_layout_family(l), family) == 0);
    CHECK(ws_layout_tp(l) == tp);
    check_hf_list(l, m);

    sim s = {.l = l};
    uint64_t Vp;
    if (strcmp(family, "hf") == 0) {
        sim_hf(&s, m);
        Vp = m->V;
    } else if (strcmp(family, "megatron") == 0) {
        sim_megatron(&s, m, tp);
        Vp = (m->V + 128u * tp - 1) / (128u * tp) * (128u * tp);
    } else {
        sim_tp(&s, m, tp);
        Vp = (m->V + 63) / 64 * 64;
    }
    validate(l, &s, family, m, tp, Vp);
    sim_free(&s);

    /* Tied embeddings: vLLM/SGLang dumps call the shared tensor lm_head.weight. */
    for (int rk = 0; rk < tp; rk++) {
        long emb = ws_layout_find_local(l, rk, "model.embed_tokens.weight");
        long head = ws_layout_find_local(l, rk, "lm_head.weight");
        if (strcmp(family, "sglang") == 0 || strcmp(family, "vllm") == 0) {
            CHECK(emb >= 0 && head >= 0);
            CHECK((head == emb) == (m->tied != 0));
        } else if (strcmp(family, "hf") == 0) {
            CHECK(emb >= 0 && (head >= 0) == !m->tied);
        } else {
            CHECK(emb == -1 && head == -1);
            CHECK((ws_layout_find_local(l, rk, "output_layer.weight") >= 0) == !m->tied);
        }
    }
    CHECK(ws_layout_find_local(l, tp, "lm_head.weight") == -1);
    ws_layout_free(l);
}

static void test_matrix(void) {
    /* hidden 64, heads 8: kv heads below, equal to and above every tp in {1, 2, 4, 8}. */
    const model models[] = {
        {"llama", 64, 128, 200, 2, 8, 8, 8, 0, 0},   /* MHA */
        {"llama", 64, 128, 200, 2, 8, 2, 8, 1, 1},   /* GQA, q/k/v/o bias, tied */
        {"llama", 64, 128, 256, 2, 8, 4, 8, 0, 1},   /* vocab a multiple of 64 */
        {"mistral", 64, 128, 200, 2, 8, 1, 8, 0, 0}, /* MQA */
        {"qwen2", 64, 128, 200, 2, 8, 4, 8, 0, 1},   /* q/k/v bias, no o bias, tied */
        {"qwen2", 64, 128, 193, 2, 8, 2, 8, 0, 0},
        {"qwen2", 64, 96, 130, 2, 8, 1, 8, 0, 0},   /* I = 96: not divisible by 64 */
        {"qwen3", 64, 128, 200, 2, 8, 4, 16, 0, 0}, /* qk norm, head_dim != hidden/heads */
        {"qwen3", 64, 128, 200, 2, 8, 8, 8, 0, 1},
        {"qwen3", 64, 128, 200, 2, 8, 1, 8, 1, 1}, /* qk norm + bias (o bias: no megatron) */
        {"llama", 96, 96, 100, 2, 12, 3, 8, 0, 0}, /* kv 3: rejected for tp 2, 4, 8 */
        {"llama", 48, 40, 70, 1, 6, 2, 8, 0, 0},   /* heads 6, I 40: rejected for tp 4, 8 */
        {"llama", 64, 128, 5, 1, 8, 8, 8, 0, 0},   /* vocab smaller than a rank's share */
    };
    const char *fams[] = {"hf", "sglang", "vllm", "megatron"};
    const int tps[] = {1, 2, 4, 8};
    for (size_t i = 0; i < sizeof models / sizeof models[0]; i++)
        for (size_t f = 0; f < 4; f++)
            for (size_t t = 0; t < 4; t++)
                run_one(fams[f], &models[i], tps[t]);
    CHECK(combos_built > 100);
    CHECK(combos_rejected > 30);
}

/* Many layers: names and lookups for layer indices >= 100. */
static void test_many_layers(void) {
    const model m = {"qwen3", 64, 128, 200, 130, 8, 2, 8, 0, 0};
    run_one("sglang", &m, 4);
    run_one("megatron", &m, 2);
    ws_model_config *cfg = to_cfg(&m);
    ws_layout *l = NULL;
    CHECK_OK(ws_layout_create("vllm", cfg, 4, &l, NULL));
    ws_model_config_free(cfg);
    CHECK(ws_layout_find_local(l, 3, "model.layers.129.mlp.down_proj.weight") >= 0);
    CHECK(ws_layout_find_local(l, 0, "model.layers.100.self_attn.qkv_proj.weight") >= 0);
    CHECK(ws_layout_find_local(l, 4, "model.layers.0.mlp.down_proj.weight") == -1);
    CHECK(ws_layout_find_local(l, -1, "model.norm.weight") == -1);
    CHECK(ws_layout_find_local(l, 0, "model.layers.130.mlp.down_proj.weight") == -1);
    CHECK(ws_layout_find_local(l, 0, NULL) == -1);
    CHECK(ws_layout_find_hf(l, "model.layers.129.self_attn.k_norm.weight") >= 0);
    CHECK(ws_layout_find_hf(l, "model.layers.129") == -1);
    CHECK(ws_layout_find_hf(l, "") == -1);
    /* per rank per layer: qkv 3, o 1, q/k norm 2, gate_up 2, down 1, 2 norms; + embed, norm,
     * lm_head per rank */
    CHECK(ws_layout_piece_count(l) == 4 * (130 * 11 + 3));
    CHECK(ws_layout_local_count(l) == 4 * (130 * 8 + 3));
    CHECK(ws_layout_hf_count(l) == 130 * 11 + 3);
    for (size_t i = 0; i < ws_layout_local_count(l); i++) {
        const ws_local_desc *d = ws_layout_local(l, i);
        CHECK(ws_layout_find_local(l, d->rank, d->name) == (long)i);
    }
    for (size_t i = 0; i < ws_layout_hf_count(l); i++)
        CHECK(ws_layout_find_hf(l, ws_layout_hf(l, i)->name) == (long)i);
    ws_layout_free(l);
}

/* Released model sizes: counts and area sums (element marking would be too big). */
static void test_real_sizes(void) {
    const model ms[] = {
        {"llama", 8192, 28672, 128256, 80, 64, 8, 128, 0, 0},  /* Llama-3-70B */
        {"qwen2", 8192, 29568, 152064, 80, 64, 8, 128, 0, 0},  /* Qwen2.5-72B */
        {"qwen3", 5120, 25600, 151936, 64, 64, 8, 128, 0, 0},  /* Qwen3-32B */
        {"qwen3", 1024, 3072, 151936, 28, 16, 8, 128, 0, 1},   /* Qwen3-0.6B */
        {"mistral", 4096, 14336, 32768, 32, 32, 8, 128, 0, 0}, /* Mistral-7B */
    };
    const char *fams[] = {"hf", "sglang", "vllm", "megatron"};
    const int tps[] = {1, 8, 16};
    for (size_t i = 0; i < sizeof ms / sizeof ms[0]; i++)
        for (size_t f = 0; f < 4; f++)
            for (size_t t = 0; t < 3; t++) {
                ws_model_config *cfg = to_cfg(&ms[i]);
                ws_layout *l = NULL;
                ws_err r = ws_layout_create(fams[f], cfg, tps[t], &l, NULL);
                ws_model_config_free(cfg);
                CHECK((r == WS_OK) == accepts(fams[f], &ms[i], tps[t]));
                if (r) continue;
                size_t nh = ws_layout_hf_count(l);
                uint64_t *area = calloc(nh, sizeof *area);
                for (size_t p = 0; p < ws_layout_piece_count(l); p++) {
                    const ws_piece *pc = ws_layout_piece(l, p);
                    if (pc->replica == 0) area[pc->hf] += pc->rows * pc->cols;
                }
                for (size_t h = 0; h < nh; h++) {
                    const ws_hf_desc *d = ws_layout_hf(l, h);
                    uint64_t n = d->shape[0] * view_cols(d->ndim, d->shape);
                    CHECK(area[h] == (d->tied_to ? 0 : n));
                }
                free(area);
                ws_layout_free(l);
            }
}

static void test_errors(void) {
    const model m = {"llama", 64, 128, 200, 2, 8, 2, 8, 0, 0};
    ws_model_config *cfg = to_cfg(&m);
    ws_layout *l = (ws_layout *)cfg; /* must be reset to NULL on failure */
    ws_error e;
    CHECK(ws_layout_create("nope", cfg, 1, &l, &e) == WS_ERR_ARG && l == NULL);
    CHECK(strstr(e.what, "nope") != NULL);
    CHECK(ws_layout_create(NULL, cfg, 1, &l, &e) == WS_ERR_ARG);
    CHECK(ws_layout_create("hf", NULL, 1, &l, &e) == WS_ERR_ARG);
    CHECK(ws_layout_create("hf", cfg, 1, NULL, &e) == WS_ERR_ARG);
    CHECK(ws_layout_create("sglang", cfg, 0, &l, &e) == WS_ERR_ARG);
    CHECK(ws_layout_create("sglang", cfg, -4, &l, &e) == WS_ERR_ARG);
    CHECK(ws_layout_create("hf", cfg, 2, &l, &e) == WS_ERR_LAYOUT);
    CHECK(ws_layout_create("sglang", cfg, 3, &l, &e) == WS_ERR_LAYOUT && strstr(e.what, "heads"));
    CHECK(ws_layout_create("megatron", cfg, 4, &l, &e) == WS_ERR_LAYOUT &&
          strstr(e.what, "num_key_value_heads"));
    CHECK(ws_layout_create("sglang", cfg, 1 << 30, &l, NULL) == WS_ERR_LAYOUT);

    /* A hand-built config is validated like a parsed one; the setters refuse what no config
     * could say. */
    ws_model_config *bad = to_cfg(&m);
    set(bad, WS_CFG_HIDDEN_SIZE, 0);
    CHECK(ws_layout_create("vllm", bad, 1, &l, &e) == WS_ERR_ARG && strstr(e.what, "hidden"));
    ws_model_config_free(bad);
    bad = to_cfg(&m);
    set(bad, WS_CFG_NUM_KV_HEADS, 3);
    CHECK(ws_layout_create("vllm", bad, 1, &l, &e) == WS_ERR_ARG);
    CHECK(ws_model_config_set(bad, WS_CFG_VOCAB_SIZE, (1L << 28) + 1, &e) == WS_ERR_ARG &&
          strstr(e.what, "vocab_size"));
    CHECK(ws_model_config_set(bad, WS_CFG_VOCAB_SIZE, -1, &e) == WS_ERR_ARG);
    CHECK(ws_model_config_set(bad, WS_CFG_QK_NORM, 2, &e) == WS_ERR_ARG);
    CHECK(ws_model_config_set(bad, WS_CFG__COUNT, 1, &e) == WS_ERR_ARG);
    CHECK(ws_model_config_set(NULL, WS_CFG_VOCAB_SIZE, 1, &e) == WS_ERR_ARG);
    CHECK(ws_model_config_get(bad, WS_CFG_VOCAB_SIZE) == 200); /* refused sets left it */
    CHECK(ws_model_config_get(bad, WS_CFG_NUM_KV_HEADS) == 3);
    CHECK(ws_model_config_get(NULL, WS_CFG_VOCAB_SIZE) == -1 &&
          ws_model_config_get(bad, (ws_cfg_key)99) == -1);
    char longname[80];
    memset(longname, 'x', sizeof longname - 1);
    longname[sizeof longname - 1] = 0;
    CHECK(ws_model_config_set_model_type(bad, longname, &e) == WS_ERR_ARG);
    CHECK(ws_model_config_set_model_type(bad, "", &e) == WS_ERR_ARG);
    CHECK(strcmp(ws_model_config_model_type(bad), "llama") == 0);
    CHECK(ws_model_config_model_type(NULL) == NULL);
    uint32_t only[WS_CFG_MAX_MLP_ONLY_LAYERS + 1] = {1};
    size_t nonly = 9;
    CHECK(ws_model_config_set_mlp_only_layers(bad, only, WS_CFG_MAX_MLP_ONLY_LAYERS + 1, &e) ==
          WS_ERR_ARG);
    CHECK_OK(ws_model_config_set_mlp_only_layers(bad, only, 1, &e));
    CHECK(ws_model_config_mlp_only_layers(bad, &nonly)[0] == 1 && nonly == 1);
    CHECK(ws_model_config_mlp_only_layers(NULL, &nonly) == NULL && nonly == 0);
    ws_model_config_free(bad);
    ws_model_config_free(NULL);
    CHECK(ws_model_config_create(NULL, &e) == WS_ERR_ARG);
    bad = to_cfg(&m);
    CHECK_OK(ws_model_config_set_model_type(bad, "qwen3_moe", NULL));
    CHECK(ws_layout_create("vllm", bad, 1, &l, &e) == WS_ERR_LAYOUT &&
          strstr(e.what, "qwen3_moe"));
    CHECK(ws_layout_create("hf", bad, 1, &l, &e) == WS_ERR_LAYOUT);
    ws_model_config_free(bad);

    /* Vocab padded to 64 rows but 128 ranks: vLLM's divide() would fail; SGLang pads to a
     * multiple of 64 * tp instead (VocabParallelEmbedding: padding_size *= tp_size). */
    const model wide = {"llama", 128, 128, 50, 1, 128, 128, 1, 0, 0};
    ws_model_config_free(cfg);
    cfg = to_cfg(&wide);
    CHECK(ws_layout_create("vllm", cfg, 128, &l, &e) == WS_ERR_LAYOUT &&
          strstr(e.what, "vocab"));
    CHECK_OK(ws_layout_create("sglang", cfg, 128, &l, &e));
    long wemb = ws_layout_find_local(l, 127, "model.embed_tokens.weight");
    CHECK(wemb >= 0 && ws_layout_local(l, (size_t)wemb)->shape[0] == 64);
    ws_layout_free(l);
    CHECK_OK(ws_layout_create("megatron", cfg, 128, &l, &e));
    ws_layout_free(l);

    /* Valid but enormous: refused before memory is spent. */
    const model huge = {"llama",  1u << 16, 1u << 16, 1u << 28, 1u << 16,
                        1u << 16, 1u << 16, 1,        0,        0};
    ws_model_config_free(cfg);
    cfg = to_cfg(&huge);
    CHECK(ws_layout_create("sglang", cfg, 1 << 16, &l, &e) == WS_ERR_LIMIT && l == NULL);
    CHECK(ws_layout_create("megatron", cfg, 1 << 16, &l, &e) == WS_ERR_LIMIT);
    CHECK(ws_layout_create("megatron", cfg, 1, &l, &e) == WS_ERR_LIMIT);
    CHECK_OK(ws_layout_create("hf", cfg, 1, &l, &e)); /* 590k pieces: fine */
    CHECK(ws_layout_piece_count(l) == 9 * (1u << 16) + 3);
    ws_layout_free(l);

    /* NULL layouts. */
    ws_layout_free(NULL);
    CHECK(ws_layout_hf_count(NULL) == 0 && ws_layout_local_count(NULL) == 0);
    CHECK(ws_layout_piece_count(NULL) == 0 && ws_layout_tp(NULL) == 0);
    CHECK(ws_layout_hf(NULL, 0) == NULL && ws_layout_local(NULL, 0) == NULL);
    CHECK(ws_layout_piece(NULL, 0) == NULL && ws_layout_family(NULL) == NULL);
    CHECK(ws_layout_find_hf(NULL, "x") == -1 && ws_layout_find_local(NULL, 0, "x") == -1);
    ws_model_config_free(cfg);
    cfg = to_cfg(&m);
    CHECK_OK(ws_layout_create("hf", cfg, 1, &l, NULL));
    CHECK(ws_layout_hf(l, ws_layout_hf_count(l)) == NULL);
    CHECK(ws_layout_local(l, ws_layout_local_count(l)) == NULL);
    CHECK(ws_layout_piece(l, ws_layout_piece_count(l)) == NULL);
    ws_layout_free(l);
    ws_model_config_free(cfg);
}

static void test_families(void) {
    const char *const *f = ws_layout_families();
    const char *want[] = {"hf", "sglang", "vllm", "megatron", "transformers"};
    size_t n = 0;
    for (; f[n]; n++)
        CHECK(n < 5 && strcmp(f[n], want[n]) == 0);
    CHECK(n == 5);
}

/* Fuzz the config the layout receives: any value either builds or fails cleanly. */
static void test_random_configs(void) {
    uint64_t s = 12345;
    const char *types[] = {"llama", "mistral", "qwen2", "qwen3", "gpt2"};
    const char *fams[] = {"hf", "sglang", "vllm", "megatron", "x"};
    for (int it = 0; it < 3000; it++) {
#define NEXT() (s ^= s << 13, s ^= s >> 7, s ^= s << 17, s)
        ws_model_config *c = NULL;
        CHECK_OK(ws_model_config_create(&c, NULL));
        CHECK_OK(ws_model_config_set_model_type(c, types[NEXT() % 5], NULL));
        /* values past a key's limit (the last one) are refused by the setter, the key kept 0 */
        long small[] = {0, 1, 2, 3, 4, 6, 8, 12, 16, 64, 1000, -1};
        const ws_cfg_key sized[] = {WS_CFG_HIDDEN_SIZE, WS_CFG_INTERMEDIATE_SIZE,
                                    WS_CFG_VOCAB_SIZE};
        for (size_t k = 0; k < 3; k++) {
            long v = small[NEXT() % 12];
            CHECK((ws_model_config_set(c, sized[k], v, NULL) == WS_OK) == (v >= 0));
        }
        set(c, WS_CFG_NUM_LAYERS, (long)(NEXT() % 4));
        set(c, WS_CFG_NUM_HEADS, small[NEXT() % 10]);
        set(c, WS_CFG_NUM_KV_HEADS, small[NEXT() % 10]);
        set(c, WS_CFG_HEAD_DIM, small[NEXT() % 10]);
        set(c, WS_CFG_TIE_WORD_EMBEDDINGS, (long)(NEXT() % 2));
        set(c, WS_CFG_ATTENTION_BIAS, (long)(NEXT() % 2));
        set(c, WS_CFG_QK_NORM, (long)(NEXT() % 2));
        int tp = (int)(NEXT() % 10) - 1;
        ws_layout *l = NULL;
        ws_error e;
        ws_err r = ws_layout_create(fams[NEXT() % 5], c, tp, &l, &e);
        CHECK((r == WS_OK) == (l != NULL));
        if (r) CHECK(e.code == r && e.what[0]);
        ws_layout_free(l);
        ws_model_config_free(c);
#undef NEXT
    }
}


/* ---- MoE, expert parallelism, pipeline stages (issue 13) ------------------------------------ */

static ws_model_config *moe_cfg(const char *type, long L, long E, long mI) {
    ws_model_config *c = NULL;
    CHECK_OK(ws_model_config_create(&c, NULL));
    CHECK_OK(ws_model_config_set_model_type(c, type, NULL));
    set(c, WS_CFG_HIDDEN_SIZE, 64);
    set(c, WS_CFG_INTERMEDIATE_SIZE, 96);
    set(c, WS_CFG_VOCAB_SIZE, 1000);
    set(c, WS_CFG_NUM_LAYERS, L);
    set(c, WS_CFG_NUM_HEADS, 8);
    set(c, WS_CFG_NUM_KV_HEADS, 4);
    set(c, WS_CFG_HEAD_DIM, 8);
    set(c, WS_CFG_NUM_EXPERTS, E);
    set(c, WS_CFG_MOE_INTERMEDIATE_SIZE, mI);
    set(c, WS_CFG_DECODER_SPARSE_STEP, 1);
    set(c, WS_CFG_QK_NORM, strcmp(type, "qwen3_moe") == 0);
    if (strcmp(type, "glm4_moe") == 0) {
        set(c, WS_CFG_N_SHARED_EXPERTS, 1);
        set(c, WS_CFG_FIRST_K_DENSE_REPLACE, 1);
        set(c, WS_CFG_ROUTER_BIAS, 1);
        set(c, WS_CFG_ATTENTION_BIAS, 1);
    }
    if (strcmp(type, "qwen2_moe") == 0) {
        set(c, WS_CFG_SHARED_EXPERT_INTERMEDIATE_SIZE, 64);
        set(c, WS_CFG_ATTENTION_BIAS, 1);
    }
    return c;
}

static ws_layout *build_par(const char *family, const ws_model_config *c, long tp, long ep,
                            long pp, long placement, ws_err *rc) {
    ws_parallel *p = NULL;
    ws_error e;
    ws_layout *l = NULL;
    CHECK_OK(ws_parallel_create(&p, &e));
    CHECK_OK(ws_parallel_set(p, WS_PAR_TP, tp, &e));
    CHECK_OK(ws_parallel_set(p, WS_PAR_EP, ep, &e));
    CHECK_OK(ws_parallel_set(p, WS_PAR_PP, pp, &e));
    CHECK_OK(ws_parallel_set(p, WS_PAR_EXPERT_PLACEMENT, placement, &e));
    *rc = ws_layout_create_parallel(family, c, p, &l, &e);
    ws_parallel_free(p);
    CHECK((*rc == WS_OK) == (l != NULL));
    if (*rc) CHECK(e.what[0]);
    return l;
}

/* Generic invariants of docs/layouts.md, element by element: replica-0 pieces tile every
 * untied HF tensor once; replica k > 0 rectangles are replica-0 rectangles, numbered 0..n-1 on
 * distinct ranks with replica 0 lowest; no local element is covered twice. */
static void check_invariants(const ws_layout *l) {
    size_t nh = ws_layout_hf_count(l), np = ws_layout_piece_count(l), nl = ws_layout_local_count(l);
    uint8_t **cov = calloc(nh, sizeof *cov), **lcov = calloc(nl, sizeof *lcov);
    for (size_t h = 0; h < nh; h++) {
        const ws_hf_desc *d = ws_layout_hf(l, h);
        uint64_t n = d->shape[0] * (d->ndim == 2 ? d->shape[1] : 1);
        cov[h] = calloc(n, 1);
    }
    for (size_t i = 0; i < nl; i++) {
        const ws_local_desc *d = ws_layout_local(l, i);
        uint64_t n = 1;
        for (int k = 0; k < d->ndim; k++) n *= d->shape[k];
        lcov[i] = calloc(n, 1);
        CHECK(d->rank >= 0 && d->rank < ws_layout_rank_count(l));
    }
    for (size_t i = 0; i < np; i++) {
        const ws_piece *p = ws_layout_piece(l, i);
        CHECK(!ws_layout_hf(l, p->hf)->tied_to);
        for (uint64_t r = 0; r < p->rows; r++)
            for (uint64_t c = 0; c < p->cols; c++) {
                uint64_t li = (p->l_row0 + r) * p->l_cols + p->l_col0 + c;
                CHECK(lcov[p->local][li]++ == 0);
                if (p->replica == 0) {
                    uint64_t ti = (p->t_row0 + r) * p->t_cols + p->t_col0 + c;
                    CHECK(cov[p->hf][ti]++ == 0);
                }
            }
        if (p->replica == 0) continue;
        /* a replica-0 piece of the same rectangle on a lower rank; replica k-1 exists too */
        bool base = false, prev = false;
        int rank = ws_layout_local(l, p->local)->rank;
        /* under an expert map two copies of an expert may share a rank (a lower slot first) */
        int same = ws_layout_expert_map(l, NULL, NULL) ? 1 : 0;
        for (size_t j = 0; j < np; j++) {
            const ws_piece *q = ws_layout_piece(l, j);
            if (q->hf != p->hf || q->t_row0 != p->t_row0 || q->t_col0 != p->t_col0 ||
                q->rows != p->rows || q->cols != p->cols)
                continue;
            int qr = ws_layout_local(l, q->local)->rank;
            if (q->replica == 0 && qr < rank + same) base = true;
            if (q->replica == p->replica - 1 && qr < rank + same) prev = true;
            if (q->replica == p->replica && j != i) CHECK(!"two copies with one replica number");
        }
        CHECK(base && prev);
    }
    for (size_t h = 0; h < nh; h++) {
        const ws_hf_desc *d = ws_layout_hf(l, h);
        uint64_t n = d->shape[0] * (d->ndim == 2 ? d->shape[1] : 1);
        for (uint64_t k = 0; k < n && !d->tied_to; k++)
            if (cov[h][k] != 1) {
                CHECK(!"a canonical element is not covered exactly once");
                break;
            }
        free(cov[h]);
    }
    for (size_t i = 0; i < nl; i++) free(lcov[i]);
    free(cov);
    free(lcov);
}

static void test_parallel_config(void) {
    ws_parallel *p = NULL;
    ws_error e;
    CHECK_OK(ws_parallel_create(&p, &e));
    CHECK(ws_parallel_get(p, WS_PAR_TP) == 1 && ws_parallel_get(p, WS_PAR_EP) == 1 &&
          ws_parallel_get(p, WS_PAR_PP) == 1 && ws_parallel_get(p, WS_PAR_W13_UP_FIRST) == 0);
    CHECK(ws_parallel_set(p, WS_PAR_EP, 0, &e) == WS_ERR_ARG && strstr(e.what, "ep"));
    CHECK(ws_parallel_set(p, WS_PAR_PP, 5000, &e) == WS_ERR_ARG);
    CHECK(ws_parallel_set(p, WS_PAR_MOE_TP, 2, &e) == WS_ERR_ARG && strstr(e.what, "derived"));
    CHECK(ws_parallel_set(p, WS_PAR_EXPERT_PLACEMENT, 2, &e) == WS_ERR_ARG);
    CHECK(ws_parallel_set(p, WS_PAR__COUNT, 1, &e) == WS_ERR_ARG);
    CHECK(ws_parallel_set(NULL, WS_PAR_TP, 1, &e) == WS_ERR_ARG);
    CHECK(ws_parallel_get(NULL, WS_PAR_TP) == -1 && ws_parallel_get(p, (ws_par_key)99) == -1);
    CHECK(ws_parallel_create(NULL, &e) == WS_ERR_ARG);
    ws_parallel_free(p);
    ws_parallel_free(NULL);

    /* NULL parallel config: tp = ep = pp = 1, the same layout as ws_layout_create(.., 1, ..) */
    const model m = {"qwen3", 64, 96, 1000, 2, 8, 4, 8, 0, 0};
    ws_model_config *c = to_cfg(&m);
    ws_layout *a = NULL, *b = NULL;
    CHECK_OK(ws_layout_create_parallel("sglang", c, NULL, &a, &e));
    CHECK_OK(ws_layout_create("sglang", c, 1, &b, &e));
    CHECK(a && b && ws_layout_piece_count(a) == ws_layout_piece_count(b));
    CHECK(ws_layout_rank_count(a) == 1 && ws_layout_parallel(a, WS_PAR_EP) == 1);
    ws_layout_free(a);
    ws_layout_free(b);
    CHECK(ws_layout_rank_count(NULL) == 0 && ws_layout_parallel(NULL, WS_PAR_TP) == -1);
    CHECK(ws_layout_rank_coord(NULL, 0, WS_PAR_TP) == -1);

    /* A dense model refuses ep > 1; pp splits its layers. */
    ws_err rc;
    CHECK(!build_par("sglang", c, 2, 2, 1, 0, &rc) && rc == WS_ERR_LAYOUT);
    ws_layout *l = build_par("sglang", c, 2, 1, 2, 0, &rc);
    CHECK(l && ws_layout_rank_count(l) == 4);
    CHECK(ws_layout_rank_coord(l, 3, WS_PAR_PP) == 1 && ws_layout_rank_coord(l, 3, WS_PAR_TP) == 1);
    CHECK(ws_layout_rank_coord(l, 4, WS_PAR_TP) == -1);
    CHECK(ws_layout_find_local(l, 0, "model.layers.0.mlp.gate_up_proj.weight") >= 0);
    CHECK(ws_layout_find_local(l, 2, "model.layers.0.mlp.gate_up_proj.weight") < 0);
    CHECK(ws_layout_find_local(l, 2, "model.layers.1.mlp.gate_up_proj.weight") >= 0);
    CHECK(ws_layout_find_local(l, 2, "model.embed_tokens.weight") < 0);
    CHECK(ws_layout_find_local(l, 0, "lm_head.weight") < 0);
    CHECK(ws_layout_find_local(l, 3, "lm_head.weight") >= 0);
    check_invariants(l);
    ws_layout_free(l);
    ws_model_config_free(c);
}

/* The global experts whose gate rows sit in layer 0's w13 on `rank`, in slot order. */
static int w13_experts(const ws_layout *l, int rank, int *out) {
    int n = 0;
    long w13 = ws_layout_find_local(l, rank, "model.layers.0.mlp.experts.w13_weight");
    for (size_t i = 0; w13 >= 0 && i < ws_layout_piece_count(l); i++) {
        const ws_piece *p = ws_layout_piece(l, i);
        const char *name = ws_layout_hf(l, p->hf)->name;
        if ((long)p->local != w13 || !strstr(name, "gate_proj")) continue;
        out[n++] = atoi(name + strlen("model.layers.0.mlp.experts."));
    }
    return n;
}

static void test_expert_maps(void) {
    ws_model_config *c = moe_cfg("qwen3_moe", 2, 10, 32);
    ws_err rc;
    int ids[16];
    /* vLLM determine_expert_map over ep 4: linear 3,3,2,2; round robin r, r+4, r+8 */
    ws_layout *l = build_par("vllm", c, 4, 4, 1, WS_EXPERTS_LINEAR, &rc);
    CHECK(l && ws_layout_parallel(l, WS_PAR_MOE_TP) == 1);
    CHECK(w13_experts(l, 0, ids) == 3 && ids[0] == 0 && ids[2] == 2);
    CHECK(w13_experts(l, 1, ids) == 3 && ids[0] == 3);
    CHECK(w13_experts(l, 2, ids) == 2 && ids[0] == 6 && ids[1] == 7);
    CHECK(w13_experts(l, 3, ids) == 2 && ids[0] == 8 && ids[1] == 9);
    check_invariants(l);
    ws_layout_free(l);
    l = build_par("vllm", c, 4, 4, 1, WS_EXPERTS_ROUND_ROBIN, &rc);
    CHECK(w13_experts(l, 1, ids) == 3 && ids[0] == 1 && ids[1] == 5 && ids[2] == 9);
    CHECK(w13_experts(l, 3, ids) == 2 && ids[0] == 3 && ids[1] == 7);
    check_invariants(l);
    ws_layout_free(l);
    /* SGLang: E % ep must be 0 (FusedMoE asserts it); ep must divide tp */
    CHECK(!build_par("sglang", c, 4, 4, 1, 0, &rc) && rc == WS_ERR_LAYOUT);
    CHECK(!build_par("vllm", c, 4, 2, 1, 0, &rc) && rc == WS_ERR_LAYOUT);
    set(c, WS_CFG_NUM_EXPERTS, 8);
    CHECK(!build_par("sglang", c, 4, 3, 1, 0, &rc) && rc == WS_ERR_LAYOUT);
    CHECK(!build_par("sglang", c, 4, 2, 1, WS_EXPERTS_ROUND_ROBIN, &rc) && rc == WS_ERR_LAYOUT);
    l = build_par("sglang", c, 4, 2, 1, 0, &rc); /* moe_tp 2: ranks 2, 3 hold experts 4..7 */
    CHECK(l && ws_layout_parallel(l, WS_PAR_MOE_TP) == 2);
    CHECK(ws_layout_rank_coord(l, 3, WS_PAR_EP) == 1 && ws_layout_rank_coord(l, 3, WS_PAR_MOE_TP) == 1);
    CHECK(w13_experts(l, 3, ids) == 4 && ids[0] == 4 && ids[3] == 7);
    check_invariants(l);
    ws_layout_free(l);
    ws_model_config_free(c);
}

/* The replica number of the piece of `hf_name` in slot `slot` of layer 0's w13 on `rank`. */
static int slot_replica(const ws_layout *l, int rank, int slot, int *expert) {
    long w13 = ws_layout_find_local(l, rank, "model.layers.0.mlp.experts.w13_weight");
    const ws_local_desc *d = w13 >= 0 ? ws_layout_local(l, (size_t)w13) : NULL;
    for (size_t i = 0; d && i < ws_layout_piece_count(l); i++) {
        const ws_piece *p = ws_layout_piece(l, i);
        const char *name = ws_layout_hf(l, p->hf)->name;
        if ((long)p->local != w13 || !strstr(name, "gate_proj") ||
            p->l_row0 / d->shape[1] != (uint64_t)slot)
            continue;
        *expert = atoi(name + strlen("model.layers.0.mlp.experts."));
        return (int)p->replica;
    }
    return -1;
}

/* EPLB: physical slots holding logical experts (docs/layouts.md, "Expert maps"). */
static void test_physical_expert_maps(void) {
    ws_model_config *c = moe_cfg("qwen3_moe", 2, 8, 32);
    ws_parallel *p = NULL;
    ws_error e;
    ws_layout *l = NULL;
    int ex = -1;
    /* SGLang tp 2 ep 2: rank 0 slots [3, 1, 2, 0, 4], rank 1 [5, 6, 7, 3, 3] */
    const int32_t map[10] = {3, 1, 2, 0, 4, 5, 6, 7, 3, 3};
    CHECK_OK(ws_parallel_create(&p, &e));
    CHECK_OK(ws_parallel_set(p, WS_PAR_TP, 2, &e));
    CHECK_OK(ws_parallel_set(p, WS_PAR_EP, 2, &e));
    CHECK_OK(ws_parallel_set_expert_map(p, 1, 10, map, &e));
    CHECK_OK(ws_layout_create_parallel("sglang", c, p, &l, &e));
    size_t rows = 0, phys = 0;
    const int32_t *got = ws_layout_expert_map(l, &rows, &phys);
    CHECK(got && rows == 1 && phys == 10 && got[8] == 3 && got != map);
    CHECK(slot_replica(l, 0, 0, &ex) == 0 && ex == 3);
    CHECK(slot_replica(l, 0, 3, &ex) == 0 && ex == 0);
    CHECK(slot_replica(l, 1, 3, &ex) == 1 && ex == 3);
    CHECK(slot_replica(l, 1, 4, &ex) == 2 && ex == 3); /* a second copy on the same rank */
    CHECK(ws_layout_buffer_count(l) == 0);             /* SGLang keeps no _expert_map */
    check_invariants(l);
    ws_layout_free(l);
    /* vLLM: the same slots, and _expert_map buffers (physical slot -> local slot or -1) */
    CHECK_OK(ws_layout_create_parallel("vllm", c, p, &l, &e));
    CHECK(ws_layout_buffer_count(l) == 4); /* 2 layers x 2 ranks */
    long b = ws_layout_find_buffer(l, 1, "model.layers.1.mlp.experts._expert_map");
    const ws_buffer_desc *bd = b >= 0 ? ws_layout_buffer(l, (size_t)b) : NULL;
    CHECK(bd && bd->dtype == WS_I32 && bd->ndim == 1 && bd->shape[0] == 10);
    CHECK(bd && bd->values[4] == -1 && bd->values[5] == 0 && bd->values[9] == 4);
    CHECK(ws_layout_find_buffer(l, 2, "model.layers.1.mlp.experts._expert_map") < 0);
    check_invariants(l);
    ws_layout_free(l);
    /* vLLM places linearly under EPLB: round robin with a map is refused */
    CHECK_OK(ws_parallel_set(p, WS_PAR_EXPERT_PLACEMENT, WS_EXPERTS_ROUND_ROBIN, &e));
    CHECK(ws_layout_create_parallel("vllm", c, p, &l, &e) == WS_ERR_LAYOUT && !l &&
          strstr(e.what, "round robin"));
    CHECK_OK(ws_parallel_set(p, WS_PAR_EXPERT_PLACEMENT, WS_EXPERTS_LINEAR, &e));
    /* redundant experts alone: the trivial map p % E */
    CHECK_OK(ws_parallel_set_expert_map(p, 0, 0, NULL, &e));
    CHECK(ws_parallel_expert_map(p, &rows, &phys) == NULL && rows == 0);
    CHECK_OK(ws_parallel_set(p, WS_PAR_REDUNDANT_EXPERTS, 4, &e));
    CHECK_OK(ws_layout_create_parallel("sglang", c, p, &l, &e));
    got = ws_layout_expert_map(l, &rows, &phys);
    CHECK(got && rows == 1 && phys == 12 && got[7] == 7 && got[8] == 0 && got[11] == 3);
    CHECK(slot_replica(l, 1, 2, &ex) == 1 && ex == 0); /* physical 8 */
    check_invariants(l);
    ws_layout_free(l);
    CHECK(ws_layout_create_parallel("megatron", c, p, &l, &e) == WS_ERR_LAYOUT && !l);
    /* argument errors */
    const int32_t neg[2] = {0, -1};
    CHECK(ws_parallel_set_expert_map(p, 1, 2, neg, &e) == WS_ERR_ARG && strstr(e.what, "slot 1"));
    CHECK(ws_parallel_set_expert_map(p, 1, 0, map, &e) == WS_ERR_ARG);
    CHECK(ws_parallel_set_expert_map(NULL, 1, 1, map, &e) == WS_ERR_ARG);
    CHECK(ws_parallel_set(p, WS_PAR_REDUNDANT_EXPERTS, -1, &e) == WS_ERR_ARG);
    const char *j = "{\"physical_to_logical_map\": [[0, 1, 2, 3, 4, 5, 6, 7], [7, 6, 5, 4, 3, 2, 1, 0]]}";
    CHECK_OK(ws_parallel_set(p, WS_PAR_REDUNDANT_EXPERTS, 0, &e));
    CHECK_OK(ws_parallel_parse_expert_map(p, j, strlen(j), "m.json", &e));
    CHECK(ws_parallel_expert_map(p, &rows, &phys) && rows == 2 && phys == 8);
    CHECK_OK(ws_layout_create_parallel("sglang", c, p, &l, &e));
    CHECK(slot_replica(l, 0, 0, &ex) == 0 && ex == 0);
    ws_layout_free(l);
    CHECK(ws_parallel_parse_expert_map(p, "[[0], 1]", 8, "m.json", &e) == WS_ERR_JSON &&
          strstr(e.what, "row 1"));
    CHECK(ws_parallel_parse_expert_map(p, "[", 1, "m.json", &e) == WS_ERR_JSON);
    ws_parallel_free(p);
    ws_model_config_free(c);
}

static void test_moe_matrix(void) {
    const char *types[] = {"qwen3_moe", "qwen2_moe", "glm4_moe"};
    const char *fams[] = {"sglang", "vllm", "megatron"};
    const long combos[][3] = {{1, 1, 1}, {2, 1, 1}, {2, 2, 1}, {4, 2, 1}, {4, 4, 1},
                              {2, 2, 2}, {4, 1, 3}, {4, 4, 2}, {1, 1, 4}};
    int built = 0;
    for (size_t t = 0; t < 3; t++)
        for (size_t f = 0; f < 3; f++)
            for (size_t k = 0; k < sizeof combos / sizeof combos[0]; k++) {
                ws_model_config *c = moe_cfg(types[t], 4, 8, 32);
                set(c, WS_CFG_TIE_WORD_EMBEDDINGS, (long)(k % 2));
                ws_err rc;
                ws_layout *l = build_par(fams[f], c, combos[k][0], combos[k][1], combos[k][2],
                                         0, &rc);
                ws_model_config_free(c);
                if (!l) continue;
                built++;
                int world = ws_layout_rank_count(l);
                CHECK(world == combos[k][0] * combos[k][2] *
                                   (strcmp(fams[f], "megatron") == 0 ? combos[k][1] : 1));
                check_invariants(l);
                ws_layout_free(l);
            }
    CHECK(built >= 60);
    /* fused shared expert (SGLang): one more slot on every ep rank, a replica per ep rank */
    ws_model_config *c = moe_cfg("glm4_moe", 3, 8, 32);
    ws_parallel *p = NULL;
    ws_error e;
    ws_layout *l = NULL;
    CHECK_OK(ws_parallel_create(&p, &e));
    CHECK_OK(ws_parallel_set(p, WS_PAR_TP, 4, &e));
    CHECK_OK(ws_parallel_set(p, WS_PAR_EP, 2, &e));
    CHECK_OK(ws_parallel_set(p, WS_PAR_FUSED_SHARED, 1, &e));
    CHECK_OK(ws_layout_create_parallel("sglang", c, p, &l, &e));
    long w13 = ws_layout_find_local(l, 2, "model.layers.1.mlp.experts.w13_weight");
    CHECK(w13 >= 0 && ws_layout_local(l, (size_t)w13)->shape[0] == 5);
    CHECK(ws_layout_find_local(l, 2, "model.layers.1.mlp.shared_experts.gate_up_proj.weight") < 0);
    check_invariants(l);
    ws_layout_free(l);
    CHECK(ws_layout_create_parallel("vllm", c, p, &l, &e) == WS_ERR_LAYOUT);
    ws_parallel_free(p);
    /* block FP8: scales follow their weights, split per segment at block granularity */
    ws_model_config_free(c);
    c = moe_cfg("qwen3_moe", 2, 8, 32);
    set(c, WS_CFG_HEAD_DIM, 16);
    set(c, WS_CFG_FP8_BLOCK_N, 16);
    set(c, WS_CFG_FP8_BLOCK_K, 16);
    ws_err rc2;
    for (int tp = 1; tp <= 4; tp *= 2)
        for (int ep = 1; ep <= tp; ep *= 2) {
            ws_layout *f = build_par("sglang", c, tp, ep, 1, 0, &rc2);
            bool whole = 32 / (tp / ep) % 16 == 0; /* expert rows per moe-tp rank */
            CHECK((f != NULL) == whole);
            if (!f) {
                CHECK(rc2 == WS_ERR_LAYOUT);
                continue;
            }
            check_invariants(f);
            long h = ws_layout_find_hf(f, "model.layers.1.mlp.experts.3.up_proj.weight_scale_inv");
            CHECK(h >= 0 && ws_layout_hf(f, (size_t)h)->shape[0] == 2 &&
                  ws_layout_hf(f, (size_t)h)->shape[1] == 4);
            long s = ws_layout_find_local(f, 0, "model.layers.0.mlp.experts.w13_weight_scale_inv");
            CHECK(s >= 0 && ws_layout_local(f, (size_t)s)->ndim == 3);
            ws_layout_free(f);
        }
    CHECK(!build_par("sglang", c, 8, 1, 1, 0, &rc2) && rc2 == WS_ERR_LAYOUT); /* 4 rows / rank */
    CHECK(ws_layout_create("megatron", c, 1, &l, &e) == WS_ERR_LAYOUT && strstr(e.what, "FP8"));
    CHECK(ws_canon_for_tensor("a.weight_scale_inv", WS_F32, WS_CANON_BF16) == WS_CANON_NATIVE);
    CHECK(ws_canon_for_tensor("m.gate.e_score_correction_bias", WS_F32, WS_CANON_BF16) ==
          WS_CANON_NATIVE);
    CHECK(ws_canon_for_tensor("a.weight", WS_F32, WS_CANON_BF16) == WS_CANON_BF16);
    CHECK(ws_canon_for_tensor("a.weight_scale_inv", WS_I32, WS_CANON_BF16) == WS_CANON_BF16);
    CHECK(ws_canon_for_tensor(NULL, WS_F32, WS_CANON_BF16) == WS_CANON_BF16);
    /* an MLA model type without its MLA sizes is refused, naming them */
    CHECK_OK(ws_model_config_set_model_type(c, "deepseek_v3", NULL));
    CHECK(ws_layout_create("sglang", c, 1, &l, &e) == WS_ERR_LAYOUT &&
          strstr(e.what, "kv_lora_rank"));
    ws_model_config_free(c);
}

/* DeepSeek-V3-shaped MLA (docs/layouts.md, "MLA"): the invariants at tp 1, 2, 4 with and
 * without q_lora_rank; the fused a-projection is replicated, kv_b_proj split by heads. */
static void test_mla(void) {
    ws_model_config *c = moe_cfg("deepseek_v3", 3, 8, 16);
    set(c, WS_CFG_NUM_KV_HEADS, 8);
    set(c, WS_CFG_FIRST_K_DENSE_REPLACE, 1);
    set(c, WS_CFG_MOE_LAYER_FREQ, 1);
    set(c, WS_CFG_N_SHARED_EXPERTS, 1);
    set(c, WS_CFG_ROUTER_BIAS, 1);
    set(c, WS_CFG_KV_LORA_RANK, 16);
    set(c, WS_CFG_QK_NOPE_HEAD_DIM, 8);
    set(c, WS_CFG_QK_ROPE_HEAD_DIM, 4);
    set(c, WS_CFG_V_HEAD_DIM, 8);
    CHECK(ws_model_config_get(c, WS_CFG_KV_LORA_RANK) == 16 &&
          ws_model_config_get(c, WS_CFG_MOE_LAYER_FREQ) == 1);
    ws_error e;
    for (int ql = 0; ql <= 32; ql += 32) {
        set(c, WS_CFG_Q_LORA_RANK, ql);
        for (int tp = 1; tp <= 4; tp *= 2)
            for (int f = 0; f < 2; f++) {
                ws_layout *l = NULL;
                CHECK_OK(ws_layout_create(f ? "vllm" : "sglang", c, tp, &l, &e));
                if (!l) continue;
                check_invariants(l);
                CHECK(ws_layout_find_hf(l, "model.layers.0.self_attn.k_proj.weight") < 0);
                long kvb =
                    ws_layout_find_local(l, tp - 1, "model.layers.1.self_attn.kv_b_proj.weight");
                CHECK(kvb >= 0 && ws_layout_local(l, (size_t)kvb)->shape[0] == 8u / tp * 16);
                const char *fused = f ? "model.layers.1.self_attn.fused_qkv_a_proj.weight"
                                      : "model.layers.1.self_attn.fused_qkv_a_proj_with_mqa.weight";
                long fu = ws_layout_find_local(l, 0, fused);
                CHECK((fu >= 0) == (ql > 0));
                if (fu >= 0) CHECK(ws_layout_local(l, (size_t)fu)->shape[0] == 32 + 16 + 4);
                CHECK((ws_layout_find_local(l, 0,
                                            "model.layers.1.self_attn.attn_mha.kv_b_proj.weight") >=
                       0) == !f);
                CHECK(ws_layout_find_hf(l, "model.layers.1.mlp.gate.e_score_correction_bias") >= 0);
                CHECK(ws_layout_find_hf(l, "model.layers.0.mlp.gate_proj.weight") >= 0);
                ws_layout_free(l);
            }
        /* megatron MLASelfAttention: down projections whole, up projections split by heads,
         * the q / kv norms fused into the up projections (test_megatron_mla.py in full) */
        for (int tp = 1; tp <= 4; tp *= 2) {
            ws_layout *l = NULL;
            CHECK_OK(ws_layout_create("megatron", c, tp, &l, &e));
            if (!l) continue;
            check_invariants(l);
            const char *a = "decoder.layers.1.self_attention.";
            char n[128];
            snprintf(n, sizeof n, "%slinear_kv_up_proj.weight", a);
            long kvb = ws_layout_find_local(l, tp - 1, n);
            CHECK(kvb >= 0 && ws_layout_local(l, (size_t)kvb)->shape[0] == 8u / tp * 16);
            snprintf(n, sizeof n, "%slinear_kv_down_proj.weight", a);
            long kva = ws_layout_find_local(l, tp - 1, n);
            CHECK(kva >= 0 && ws_layout_local(l, (size_t)kva)->shape[0] == 16 + 4);
            snprintf(n, sizeof n, "%slinear_q_up_proj.layer_norm_weight", a);
            CHECK((ws_layout_find_local(l, 0, n) >= 0) == (ql > 0));
            snprintf(n, sizeof n, "%slinear_q_proj.weight", a);
            CHECK((ws_layout_find_local(l, 0, n) >= 0) == (ql == 0));
            CHECK(ws_layout_find_local(l, 0, "decoder.layers.0.input_layernorm.weight") >= 0);
            ws_layout_free(l);
        }
        /* SequentialMLP names beside MLA at tp 2, ep 2, pp 2 (4 layers): rank 6 is stage 1,
         * ep rank 1, tp 0; its local expert 1 of local layer 0 (global 2) is expert 4 + 1 */
        set(c, WS_CFG_NUM_LAYERS, 4);
        ws_parallel *p = NULL;
        ws_layout *l = NULL;
        CHECK_OK(ws_parallel_create(&p, &e));
        CHECK_OK(ws_parallel_set(p, WS_PAR_TP, 2, &e));
        CHECK_OK(ws_parallel_set(p, WS_PAR_EP, 2, &e));
        CHECK_OK(ws_parallel_set(p, WS_PAR_PP, 2, &e));
        CHECK_OK(ws_parallel_set(p, WS_PAR_MEGATRON_SEQUENTIAL, 1, &e));
        CHECK_OK(ws_layout_create_parallel("megatron", c, p, &l, &e));
        ws_parallel_free(p);
        if (l) {
            check_invariants(l);
            CHECK(ws_layout_rank_count(l) == 8);
            CHECK(ws_layout_find_local(l, 6, "decoder.layers.0.mlp.experts.linear_fc1.weight1") < 0);
            long fc1 = ws_layout_find_local(
                l, 6, "decoder.layers.0.mlp.experts.local_experts.1.linear_fc1.weight");
            CHECK(fc1 >= 0);
            int seen = 0;
            for (size_t k = 0; k < ws_layout_piece_count(l); k++) {
                const ws_piece *pc = ws_layout_piece(l, k);
                if ((long)pc->local != fc1) continue;
                const char *hf = ws_layout_hf(l, pc->hf)->name;
                bool gate = strcmp(hf, "model.layers.2.mlp.experts.5.gate_proj.weight") == 0;
                bool up = strcmp(hf, "model.layers.2.mlp.experts.5.up_proj.weight") == 0;
                CHECK(gate || up);
                CHECK(pc->t_row0 == 0 && pc->rows == 8 && pc->l_row0 == (gate ? 0u : 8u));
                seen++;
            }
            CHECK(seen == 2);
            CHECK(ws_layout_find_local(
                      l, 6, "decoder.layers.1.self_attention.linear_kv_up_proj.layer_norm_weight") >=
                  0);
            CHECK(ws_layout_find_local(l, 6, "decoder.layers.2.input_layernorm.weight") < 0);
            ws_layout_free(l);
        }
        set(c, WS_CFG_NUM_LAYERS, 3);
    }
    ws_layout *l = NULL;
    CHECK(ws_layout_create("transformers", c, 1, &l, &e) == WS_ERR_LAYOUT && !l);
    CHECK(ws_layout_create("sglang", c, 3, &l, &e) == WS_ERR_LAYOUT && !l);
    /* a missing MLA size is refused by the config check, naming the key */
    set(c, WS_CFG_V_HEAD_DIM, 0);
    CHECK(ws_layout_create("sglang", c, 1, &l, &e) == WS_ERR_ARG && !l &&
          strstr(e.what, "v_head_dim"));
    ws_model_config_free(c);
}

/* SGLang DP attention (docs/layouts.md, "DP attention"): the invariants over tp x attn_dp x ep x
 * pp for every MoE type, MLA and dense qwen3, tied and not, with the DP lm_head and replicated
 * dense layers; attention split over tp / attn_dp ranks, copy d in DP group d; refusals. */
static ws_layout *build_dp(const char *family, const ws_model_config *c, long tp, long dp,
                           long ep, long pp, long lm_head, long dense, ws_err *rc, ws_error *e) {
    ws_parallel *p = NULL;
    ws_layout *l = NULL;
    CHECK_OK(ws_parallel_create(&p, e));
    CHECK_OK(ws_parallel_set(p, WS_PAR_TP, tp, e));
    CHECK_OK(ws_parallel_set(p, WS_PAR_ATTN_DP, dp, e));
    CHECK_OK(ws_parallel_set(p, WS_PAR_EP, ep, e));
    CHECK_OK(ws_parallel_set(p, WS_PAR_PP, pp, e));
    CHECK_OK(ws_parallel_set(p, WS_PAR_DP_LM_HEAD, lm_head, e));
    CHECK_OK(ws_parallel_set(p, WS_PAR_MOE_DENSE_TP, dense, e));
    *rc = ws_layout_create_parallel(family, c, p, &l, e);
    ws_parallel_free(p);
    CHECK((*rc == WS_OK) == (l != NULL));
    return l;
}

static ws_model_config *mla_cfg(void) {
    ws_model_config *c = moe_cfg("deepseek_v3", 3, 8, 16);
    set(c, WS_CFG_NUM_KV_HEADS, 8);
    set(c, WS_CFG_FIRST_K_DENSE_REPLACE, 1);
    set(c, WS_CFG_MOE_LAYER_FREQ, 1);
    set(c, WS_CFG_N_SHARED_EXPERTS, 1);
    set(c, WS_CFG_ROUTER_BIAS, 1);
    set(c, WS_CFG_KV_LORA_RANK, 16);
    set(c, WS_CFG_QK_NOPE_HEAD_DIM, 8);
    set(c, WS_CFG_QK_ROPE_HEAD_DIM, 4);
    set(c, WS_CFG_V_HEAD_DIM, 8);
    set(c, WS_CFG_Q_LORA_RANK, 32);
    return c;
}

static void test_dp_attention(void) {
    const char *types[] = {"qwen3_moe", "qwen2_moe", "glm4_moe", "deepseek_v3", "qwen3"};
    const long combos[][4] = {{2, 2, 1, 1}, {4, 2, 1, 1}, {4, 2, 2, 1}, {4, 4, 4, 1},
                              {4, 2, 4, 2}, {8, 2, 2, 1}, {8, 4, 8, 1}, {4, 2, 1, 3}};
    ws_error e;
    ws_err rc;
    int built = 0;
    for (size_t t = 0; t < 5; t++)
        for (size_t k = 0; k < sizeof combos / sizeof combos[0]; k++)
            for (int v = 0; v < 4; v++) { /* tied x dp_lm_head (moe_dense_tp 1 with tied) */
                ws_model_config *c = t == 3 ? mla_cfg() : moe_cfg(types[t], 4, 8, 32);
                if (t == 4) {
                    CHECK_OK(ws_model_config_set_model_type(c, "qwen3", NULL));
                    set(c, WS_CFG_NUM_EXPERTS, 0);
                    set(c, WS_CFG_MOE_INTERMEDIATE_SIZE, 0);
                }
                long tp = combos[k][0], dp = combos[k][1], ep = t == 4 ? 1 : combos[k][2],
                     pp = combos[k][3];
                set(c, WS_CFG_TIE_WORD_EMBEDDINGS, v & 1);
                ws_layout *l = build_dp("sglang", c, tp, dp, ep, pp, v >> 1, v & 1, &rc, &e);
                ws_model_config_free(c);
                if (!l) {
                    /* only a tied lm_head copy over several stages without the DP lm_head */
                    CHECK(rc == WS_ERR_LAYOUT && (v & 1) && pp > 1 && !(v >> 1) &&
                          strstr(e.what, "--enable-dp-lm-head"));
                    continue;
                }
                built++;
                CHECK(ws_layout_rank_count(l) == tp * pp);
                CHECK(ws_layout_parallel(l, WS_PAR_ATTN_DP) == dp);
                check_invariants(l);
                long A = tp / dp;
                for (int g = 0; g < tp * pp; g++) {
                    int tr = ws_layout_rank_coord(l, g, WS_PAR_TP);
                    CHECK(ws_layout_rank_coord(l, g, WS_PAR_ATTN_DP) == tr / A);
                    /* attention over A ranks: o_proj columns heads/A * head size */
                    long o = -1;
                    for (long i = 0; i < 4 && o < 0; i++) {
                        char n[96];
                        snprintf(n, sizeof n, "model.layers.%ld.self_attn.o_proj.weight", i);
                        o = ws_layout_find_local(l, g, n);
                    }
                    CHECK(o >= 0 && ws_layout_local(l, (size_t)o)->shape[1] ==
                                        (uint64_t)(8 / A * 8));
                    long emb = ws_layout_find_local(l, g, "model.embed_tokens.weight");
                    if (emb >= 0 && g < tp)
                        CHECK(ws_layout_local(l, (size_t)emb)->shape[0] == 1024u / (uint64_t)A);
                }
                ws_layout_free(l);
            }
    CHECK(built >= 120);
    /* the pieces of one attention shard: copy d in DP group d (tp 4, attn-dp 2: ranks 1, 3) */
    ws_model_config *c = moe_cfg("qwen3_moe", 2, 8, 32);
    ws_layout *l = build_dp("sglang", c, 4, 2, 2, 1, 0, 0, &rc, &e);
    CHECK(l != NULL);
    long q = ws_layout_find_hf(l, "model.layers.0.self_attn.q_proj.weight");
    int copies = 0;
    for (size_t i = 0; l && i < ws_layout_piece_count(l); i++) {
        const ws_piece *p = ws_layout_piece(l, i);
        if ((long)p->hf != q || p->t_row0 != 32) continue; /* attention-TP rank 1's q rows */
        int rank = ws_layout_local(l, p->local)->rank;
        CHECK((rank == 1 && p->replica == 0) || (rank == 3 && p->replica == 1));
        copies++;
    }
    CHECK(copies == 2);
    /* lm_head over the whole tp group without the DP lm_head: [Vp/tp, H] */
    long lm = ws_layout_find_local(l, 3, "lm_head.weight");
    CHECK(lm >= 0 && ws_layout_local(l, (size_t)lm)->shape[0] == 256);
    ws_layout_free(l);
    /* refusals, each naming its reason */
    CHECK(!build_dp("sglang", c, 4, 3, 1, 1, 0, 0, &rc, &e) && rc == WS_ERR_LAYOUT &&
          strstr(e.what, "does not divide tp"));
    CHECK(!build_dp("vllm", c, 4, 2, 1, 1, 0, 0, &rc, &e) && rc == WS_ERR_LAYOUT &&
          strstr(e.what, "SGLang options"));
    CHECK(!build_dp("sglang", c, 4, 1, 1, 1, 1, 0, &rc, &e) && rc == WS_ERR_LAYOUT &&
          strstr(e.what, "needs DP attention"));
    CHECK(!build_dp("sglang", c, 4, 2, 1, 1, 0, 2, &rc, &e) && rc == WS_ERR_LAYOUT &&
          strstr(e.what, "only 1 or tp"));
    CHECK(!build_dp("sglang", c, 32, 2, 1, 1, 0, 0, &rc, &e) && rc == WS_ERR_LAYOUT &&
          strstr(e.what, "attention-TP size"));
    CHECK_OK(ws_model_config_set_model_type(c, "llama", NULL));
    set(c, WS_CFG_NUM_EXPERTS, 0);
    set(c, WS_CFG_MOE_INTERMEDIATE_SIZE, 0);
    set(c, WS_CFG_QK_NORM, 0);
    CHECK(!build_dp("sglang", c, 4, 2, 1, 1, 0, 0, &rc, &e) && rc == WS_ERR_LAYOUT &&
          strstr(e.what, "not modelled for model_type 'llama'"));
    ws_model_config_free(c);
    /* moe_dense_tp_size 1: deepseek's dense layer replicated on every rank, copy t */
    c = mla_cfg();
    l = build_dp("sglang", c, 4, 2, 1, 1, 0, 1, &rc, &e);
    CHECK(l != NULL);
    long gu = ws_layout_find_local(l, 3, "model.layers.0.mlp.gate_up_proj.weight");
    CHECK(gu >= 0 && ws_layout_local(l, (size_t)gu)->shape[0] == 2 * 96);
    ws_layout_free(l);
    ws_model_config_free(c);
    ws_parallel *p = NULL;
    CHECK_OK(ws_parallel_create(&p, &e));
    CHECK(ws_parallel_get(p, WS_PAR_ATTN_DP) == 1 && ws_parallel_get(p, WS_PAR_MOE_DENSE_TP) == 0);
    CHECK(ws_parallel_set(p, WS_PAR_ATTN_DP, 0, &e) == WS_ERR_ARG);
    CHECK(ws_parallel_set(p, WS_PAR_DP_LM_HEAD, 2, &e) == WS_ERR_ARG);
    ws_parallel_free(p);
}

/* SGLang's fused shared expert together with an EPLB expert map (docs/layouts.md, "Expert
 * maps"): the shared expert is the slot after the rank's P/ep physical ones, copy = ep rank;
 * routed slots follow the map, copies of one logical expert numbered in slot order. With DP
 * attention on top (tp 4, attn-dp 2, ep 2: moe_tp 2). */
static int w13_slot(const ws_layout *l, int rank, uint64_t slot, uint64_t rows_per_slot,
                    char *name, size_t n, uint32_t *replica) {
    long w = ws_layout_find_local(l, rank, "model.layers.1.mlp.experts.w13_weight");
    for (size_t i = 0; w >= 0 && i < ws_layout_piece_count(l); i++) {
        const ws_piece *p = ws_layout_piece(l, i);
        if ((long)p->local != w || p->l_row0 != slot * rows_per_slot) continue;
        snprintf(name, n, "%s", ws_layout_hf(l, p->hf)->name);
        *replica = p->replica;
        return 1;
    }
    return 0;
}

static void test_fused_shared_with_map(void) {
    ws_model_config *c = moe_cfg("glm4_moe", 3, 8, 32);
    ws_parallel *p = NULL;
    ws_error e;
    ws_layout *l = NULL;
    const int32_t map[10] = {0, 1, 2, 3, 4, 5, 6, 7, 3, 3}; /* 2 redundant slots: expert 3 */
    for (int dp = 1; dp <= 2; dp++) {
        CHECK_OK(ws_parallel_create(&p, &e));
        CHECK_OK(ws_parallel_set(p, WS_PAR_TP, 4, &e));
        CHECK_OK(ws_parallel_set(p, WS_PAR_EP, 2, &e));
        CHECK_OK(ws_parallel_set(p, WS_PAR_ATTN_DP, dp, &e));
        CHECK_OK(ws_parallel_set(p, WS_PAR_FUSED_SHARED, 1, &e));
        CHECK_OK(ws_parallel_set(p, WS_PAR_REDUNDANT_EXPERTS, 2, &e));
        CHECK_OK(ws_parallel_set_expert_map(p, 1, 10, map, &e));
        CHECK_OK(ws_layout_create_parallel("sglang", c, p, &l, &e));
        ws_parallel_free(p);
        if (!l) continue;
        check_invariants(l);
        long w13 = ws_layout_find_local(l, 3, "model.layers.1.mlp.experts.w13_weight");
        CHECK(w13 >= 0 && ws_layout_local(l, (size_t)w13)->shape[0] == 6 &&
              ws_layout_local(l, (size_t)w13)->shape[1] == 32);
        char name[256];
        uint32_t rep = 99;
        /* ep rank 1 (tp ranks 2, 3): physical 5..9 = experts 5, 6, 7, 3, 3, then the shared one */
        CHECK(w13_slot(l, 3, 3, 32, name, sizeof name, &rep) &&
              strcmp(name, "model.layers.1.mlp.experts.3.gate_proj.weight") == 0 && rep == 1);
        CHECK(w13_slot(l, 3, 4, 32, name, sizeof name, &rep) &&
              strcmp(name, "model.layers.1.mlp.experts.3.gate_proj.weight") == 0 && rep == 2);
        CHECK(w13_slot(l, 3, 5, 32, name, sizeof name, &rep) &&
              strcmp(name, "model.layers.1.mlp.shared_experts.gate_proj.weight") == 0 && rep == 1);
        CHECK(w13_slot(l, 0, 5, 32, name, sizeof name, &rep) &&
              strcmp(name, "model.layers.1.mlp.shared_experts.gate_proj.weight") == 0 && rep == 0);
        CHECK(w13_slot(l, 0, 3, 32, name, sizeof name, &rep) &&
              strcmp(name, "model.layers.1.mlp.experts.3.gate_proj.weight") == 0 && rep == 0);
        CHECK(ws_layout_find_local(l, 0, "model.layers.1.mlp.shared_experts.gate_up_proj.weight") <
              0);
        ws_layout_free(l);
        l = NULL;
    }
    /* a map whose slots do not split over ep stays refused, as FusedMoE asserts */
    CHECK_OK(ws_parallel_create(&p, &e));
    CHECK_OK(ws_parallel_set(p, WS_PAR_TP, 4, &e));
    CHECK_OK(ws_parallel_set(p, WS_PAR_EP, 2, &e));
    CHECK_OK(ws_parallel_set(p, WS_PAR_FUSED_SHARED, 1, &e));
    CHECK_OK(ws_parallel_set_expert_map(p, 1, 9, map, &e));
    CHECK(ws_layout_create_parallel("sglang", c, p, &l, &e) == WS_ERR_LAYOUT &&
          strstr(e.what, "not divisible by ep"));
    ws_parallel_free(p);
    ws_model_config_free(c);
}

int main(void) {
    test_families();
    test_matrix();
    test_many_layers();
    test_real_sizes();
    test_errors();
    test_random_configs();
    test_parallel_config();
    test_expert_maps();
    test_physical_expert_maps();
    test_mla();
    test_moe_matrix();
    test_dp_attention();
    test_fused_shared_with_map();
    printf("layouts built %d, rejected %d\n", combos_built, combos_rejected);
    return check_report("test_layout");
}
