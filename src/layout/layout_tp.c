/*
 * "sglang" and "vllm": the layout both engines give decoder models (their QKVParallelLinear,
 * MergedColumnParallelLinear, RowParallelLinear, VocabParallelEmbedding / ParallelLMHead,
 * FusedMoE), tensor-parallel, expert-parallel and pipelined. docs/layouts.md has the tables
 * and the sources they were checked against.
 *
 * Global rank g = s * tp + t for pipeline stage s and tp rank t (SGLang's and vLLM's PP groups
 * are ranks {t, t + tp, ...}). Stage s holds layers [first, end) of get_pp_indices under their
 * global names, embed_tokens on the first stage, norm and lm_head on the last. Rank t holds
 *   qkv_proj    = [q_t ; k_s ; v_s]  q split by heads; k/v by kv heads, s = t when
 *                 kv >= tp, else s = t / (tp / kv) and the kv head is replicated: the lowest
 *                 rank that holds it is replica 0
 *   gate_up_proj = [gate_t ; up_t]
 *   o_proj, down_proj split along dim 1 (row-parallel); their biases replicated
 *   embed_tokens, lm_head: rows [t*Vp/tp, (t+1)*Vp/tp) of the vocab padded to Vp, a multiple
 *                 of 64; rows >= V are padding that no piece covers
 *   norms, q_norm / k_norm, the router: replicated (replica t on tp rank t)
 *   MoE layers: experts.w13_weight [E_local, 2*mI/moe_tp, H] = per local expert
 *                 [gate_m ; up_m] (m the moe-tp rank), experts.w2_weight [E_local, H, mI/moe_tp]
 *                 = its down_proj columns; which experts an ep rank holds is the engine's
 *                 expert map (below); shared experts are a tp-sharded MLP beside them.
 * With tied embeddings and one stage there is no lm_head of its own (it is embed_tokens; see the
 * alias below); with several stages the last stage holds a copy, loaded from the embedding.
 * SGLang DP attention (attn_dp > 1): attention and the embedding are split over the tp/attn_dp
 * ranks of an attention-DP group instead, each group holding copies (plan_groups below).
 */
#include "layout_internal.h"

#include <string.h>

#define TP_VOCAB_PADDING 64 /* DEFAULT_VOCAB_PADDING_SIZE in both engines */

typedef enum engine { SGLANG, VLLM } engine;

/* What each rank of a tp group holds of the routed experts. */
typedef struct expert_plan {
    int moe_tp;         /* expert tensor-parallel size */
    int ep;             /* expert-parallel size */
    uint64_t max_local; /* most experts (slots) on one rank */
    bool fused_shared;  /* sglang: the shared expert is one more slot on every ep rank */
    /* EPLB: P physical slots (E when there is no map), spread as the E experts would be; slot
     * p of layer i holds logical expert map[row(i) * P + p] (NULL: p itself) */
    uint64_t P;
    const int32_t *map;
    size_t rows;        /* 1, L (by global layer) or the MoE layer count (by MoE layer) */
    uint64_t *moe_ord;  /* MoE ordinal of each layer */
    uint32_t *rep;      /* scratch: each slot's copy number within its logical expert */
    uint32_t *seen;     /* scratch: copies counted per logical expert */
    int32_t *em;        /* scratch: vLLM's _expert_map of one rank */
} expert_plan;

/* The map row of layer i. */
static const int32_t *map_row(const expert_plan *xp, uint64_t L, uint64_t i) {
    size_t r = xp->rows == 1 ? 0 : xp->rows == L ? (size_t)i : (size_t)xp->moe_ord[i];
    return xp->map + r * xp->P;
}

/* The physical slots held by ep rank `er` of the E (or P) there are, in local slot order;
 * returns their count. */
static uint64_t local_experts(engine eng, const wsl_par *p, uint64_t E, int ep, int er,
                              uint64_t *ids) {
    uint64_t n = 0, R = (uint64_t)er, P = (uint64_t)ep;
    if (ep == 1) {
        for (uint64_t e = 0; e < E; e++)
            ids[n++] = e;
    } else if (eng == SGLANG) {
        /* FusedMoE._map_global_expert_id_to_local_expert_id: contiguous, E % ep == 0 */
        for (uint64_t e = R * (E / P); e < (R + 1) * (E / P); e++)
            ids[n++] = e;
    } else if (p->placement == WS_EXPERTS_ROUND_ROBIN) {
        /* determine_expert_map, "round_robin": experts r, r + ep, r + 2 ep, ... */
        for (uint64_t e = R; e < E; e += P)
            ids[n++] = e;
    } else {
        /* determine_expert_map, "linear": the first E % ep ranks one expert more */
        uint64_t base = E / P, rem = E % P;
        uint64_t count = base + (R < rem), start = R * base + (R < rem ? R : rem);
        for (uint64_t e = start; e < start + count; e++)
            ids[n++] = e;
    }
    return n;
}

/* One MoE block's local tensors on rank (t of tp, stage rank g). */
static ws_err add_moe(ws_layout *l, const wsl_dense *m, const wsl_par *p, engine eng,
                      const expert_plan *xp, uint64_t i, int g, int t, uint64_t *ids) {
    unsigned long long li = (unsigned long long)i;
    uint64_t T = (uint64_t)p->tp, R = (uint64_t)t, H = m->H;
    int er = t / xp->moe_tp, mt = t % xp->moe_tp;
    uint64_t mir = m->mI / (uint64_t)xp->moe_tp; /* expert rows per moe-tp rank */
    uint64_t n = local_experts(eng, p, xp->P, xp->ep, er, ids);
    uint64_t slots = n + (xp->fused_shared ? 1 : 0);
    /* logical[j]: the expert slot j holds; copy[j]: which copy of it (the lowest slot holding
     * an expert is replica 0 of its rectangles, every other slot a replica of it) */
    const int32_t *row = xp->map ? map_row(xp, m->L, i) : NULL;
    if (row) {
        memset(xp->seen, 0, (size_t)m->E * sizeof *xp->seen);
        for (uint64_t q = 0; q < xp->P; q++)
            xp->rep[q] = xp->seen[row[q]]++;
    }
#define LOGICAL(j) (row ? (uint64_t)row[ids[j]] : ids[j])
#define COPY(j) (row ? xp->rep[ids[j]] : 0u)
    uint32_t loc, w13, w2;
    WSL_TRY(wsl_add_replica(l, g, (uint32_t)t, wsl_hf_at(m, i, WSL_ROUTER),
                            "model.layers.%llu.mlp.gate.weight", li));
    if (wsl_has_at(m, i, WSL_ROUTER_BIAS))
        WSL_TRY(wsl_add_replica(l, g, (uint32_t)t, wsl_hf_at(m, i, WSL_ROUTER_BIAS),
                                   "model.layers.%llu.mlp.gate.e_score_correction_bias", li));
    /* w1 (gate) in the first half of each expert's w13 rows, w3 (up) in the second; backends
     * with load_up_proj_weight_first swap them. */
    uint64_t gate_off = p->up_first ? mir : 0, up_off = p->up_first ? 0 : mir;
    uint64_t M = (uint64_t)mt * mir;
    uint32_t rep = (uint32_t)er; /* a fused shared expert: one copy per ep rank */
    WSL_TRY(wsl_add_local3(l, &w13, g, slots, 2 * mir, H,
                           "model.layers.%llu.mlp.experts.w13_weight", li));
    for (uint64_t j = 0; j < n; j++) {
        WSL_TRY(wsl_piece_rows(l, wsl_expert_at(m, i, LOGICAL(j), WSL_E_GATE), w13, COPY(j), M,
                               j * 2 * mir + gate_off, mir));
        WSL_TRY(wsl_piece_rows(l, wsl_expert_at(m, i, LOGICAL(j), WSL_E_UP), w13, COPY(j), M,
                               j * 2 * mir + up_off, mir));
    }
    if (xp->fused_shared) { /* the shared expert as slot n of every ep rank */
        WSL_TRY(wsl_piece_rows(l, wsl_hf_at(m, i, WSL_SH_GATE), w13, rep, M, n * 2 * mir + gate_off,
                               mir));
        WSL_TRY(wsl_piece_rows(l, wsl_hf_at(m, i, WSL_SH_UP), w13, rep, M, n * 2 * mir + up_off,
                               mir));
    }
    WSL_TRY(wsl_add_scale(l, m, w13));
    WSL_TRY(wsl_add_local3(l, &w2, g, slots, H, mir, "model.layers.%llu.mlp.experts.w2_weight", li));
    for (uint64_t j = 0; j < n; j++)
        WSL_TRY(wsl_add_piece(l, wsl_expert_at(m, i, LOGICAL(j), WSL_E_DOWN), w2, COPY(j), H, mir,
                              0, M, j * H, 0));
#undef LOGICAL
#undef COPY
    if (xp->fused_shared)
        WSL_TRY(wsl_add_piece(l, wsl_hf_at(m, i, WSL_SH_DOWN), w2, rep, H, mir, 0, M, n * H, 0));
    WSL_TRY(wsl_add_scale(l, m, w2));
    if (eng == VLLM && xp->ep > 1) {
        /* FusedMoE registers determine_expert_map's answer as the buffer _expert_map (int32,
         * one entry per physical slot: its local index here, or -1), so state_dict() holds it */
        int32_t *em = xp->em;
        for (uint64_t q = 0; q < xp->P; q++)
            em[q] = -1;
        for (uint64_t j = 0; j < n; j++)
            em[ids[j]] = (int32_t)j;
        WSL_TRY(wsl_add_buffer_i32(l, g, xp->P, em, "model.layers.%llu.mlp.experts._expert_map",
                                   li));
    }
    if (!xp->fused_shared && m->shI) {
        /* A separate MLP, tensor-parallel over the whole tp group (not split by ep). */
        const char *sh = wsl_has_at(m, i, WSL_SH_EXPERT_GATE) ? "shared_expert" : "shared_experts";
        uint64_t sr = m->shI / T;
        WSL_TRY(wsl_add_local(l, &loc, g, 2, 2 * sr, H, "model.layers.%llu.mlp.%s.gate_up_proj.weight",
                              li, sh));
        WSL_TRY(wsl_piece_rows(l, wsl_hf_at(m, i, WSL_SH_GATE), loc, 0, R * sr, 0, sr));
        WSL_TRY(wsl_piece_rows(l, wsl_hf_at(m, i, WSL_SH_UP), loc, 0, R * sr, sr, sr));
        WSL_TRY(wsl_add_scale(l, m, loc));
        WSL_TRY(wsl_add_local(l, &loc, g, 2, H, sr, "model.layers.%llu.mlp.%s.down_proj.weight", li,
                              sh));
        WSL_TRY(wsl_piece_cols(l, wsl_hf_at(m, i, WSL_SH_DOWN), loc, 0, R * sr, 0, sr));
        WSL_TRY(wsl_add_scale(l, m, loc));
    }
    if (wsl_has_at(m, i, WSL_SH_EXPERT_GATE))
        WSL_TRY(wsl_add_replica(l, g, (uint32_t)t, wsl_hf_at(m, i, WSL_SH_EXPERT_GATE),
                                   "model.layers.%llu.mlp.shared_expert_gate.weight", li));
    return WS_OK;
}

/* The physical slots and their map (WS_PAR_REDUNDANT_EXPERTS, ws_parallel_set_expert_map):
 * both engines start every redundant slot p at logical expert p % E (SGLang's
 * ExpertLocationMetadata.init_trivial, vLLM's build_initial_global_physical_to_logical_map). */
static ws_err plan_map(ws_layout *l, const wsl_dense *m, const wsl_par *p, expert_plan *xp) {
    uint64_t E = m->E, L = m->L;
    xp->P = E;
    if (!p->emap && !p->redundant) return WS_OK;
    uint64_t moe_layers = 0;
    xp->moe_ord = wsl_alloc(l, (size_t)L * sizeof *xp->moe_ord + 1);
    if (!xp->moe_ord) return WS_ERR_NOMEM;
    for (uint64_t i = 0; i < L; i++)
        xp->moe_ord[i] = m->is_moe[i] ? moe_layers++ : 0;
    if (p->emap) {
        xp->P = p->emap_physical;
        xp->rows = p->emap_rows;
        xp->map = p->emap;
        if (p->redundant && xp->P != E + (uint64_t)p->redundant)
            return wsl_reject(l, "the expert map has %llu slots a row, not num_experts %llu + "
                                 "%ld redundant",
                              (unsigned long long)xp->P, (unsigned long long)E, p->redundant);
        if (xp->rows != 1 && xp->rows != L && xp->rows != moe_layers)
            return wsl_reject(l, "the expert map has %zu rows: 1 (every layer), %llu (one per "
                                 "layer) or %llu (one per MoE layer) expected",
                              xp->rows, (unsigned long long)L, (unsigned long long)moe_layers);
    } else {
        xp->P = E + (uint64_t)p->redundant;
        xp->rows = 1;
        int32_t *t = wsl_alloc(l, (size_t)xp->P * sizeof *t + 1);
        if (!t) return WS_ERR_NOMEM;
        for (uint64_t q = 0; q < xp->P; q++)
            t[q] = (int32_t)(q % E);
        xp->map = t;
    }
    if (xp->P < E)
        return wsl_reject(l, "the expert map has %llu slots a row, fewer than the %llu experts",
                          (unsigned long long)xp->P, (unsigned long long)E);
    xp->rep = wsl_alloc(l, (size_t)xp->P * sizeof *xp->rep + 1);
    xp->seen = wsl_alloc(l, (size_t)E * sizeof *xp->seen + 1);
    if (!xp->rep || !xp->seen) return WS_ERR_NOMEM;
    for (uint64_t i = 0; i < L; i++) {
        if (!m->is_moe[i]) continue;
        const int32_t *row = map_row(xp, L, i);
        memset(xp->seen, 0, (size_t)E * sizeof *xp->seen);
        for (uint64_t q = 0; q < xp->P; q++) {
            if ((uint64_t)row[q] >= E)
                return wsl_reject(l, "expert map, layer %llu: slot %llu holds expert %d, but "
                                     "there are %llu",
                                  (unsigned long long)i, (unsigned long long)q, (int)row[q],
                                  (unsigned long long)E);
            xp->seen[row[q]]++;
        }
        for (uint64_t e = 0; e < E; e++)
            if (!xp->seen[e])
                return wsl_reject(l, "expert map, layer %llu: expert %llu has no physical slot "
                                     "(its weights would be loaded nowhere)",
                                  (unsigned long long)i, (unsigned long long)e);
    }
    return WS_OK;
}

/*
 * Multi-head latent attention of layer i on rank g (tp rank t; attention-TP rank at of AT, and
 * attention-DP rank d: the copy number of the sharded pieces): SGLang's and vLLM's
 * DeepseekV2AttentionMLA. With q_lora_rank, the two down-projections are one replicated
 * tensor [q_a_proj ; kv_a_proj_with_mqa] (SGLang fused_qkv_a_proj_with_mqa, a ReplicatedLinear
 * loaded with torch.cat(dim=0); vLLM fused_qkv_a_proj, a MergedColumnParallelLinear with
 * disable_tp) and q_b_proj is column-parallel; without it q_proj is column-parallel and
 * kv_a_proj_with_mqa replicated. kv_b_proj is column-parallel (heads split), o_proj
 * row-parallel, both layernorms replicated.
 */
static ws_err add_mla(ws_layout *l, const wsl_dense *m, engine eng, uint64_t i, int g, int t,
                      uint64_t at, uint64_t AT, uint32_t d) {
    unsigned long long li = (unsigned long long)i;
    uint64_t T = AT, R = at, H = m->H;
    uint64_t qk_rows = m->nh / T * (m->nope + m->rope), kvb_rows = m->nh / T * (m->nope + m->vd);
    uint64_t v_cols = m->nh / T * m->vd, kva = m->kvl + m->rope;
    uint32_t loc, rep = (uint32_t)t;
    if (m->ql) {
        WSL_TRY(wsl_add_local(l, &loc, g, 2, m->ql + kva, H, "model.layers.%llu.self_attn.%s.weight",
                              li, eng == SGLANG ? "fused_qkv_a_proj_with_mqa" : "fused_qkv_a_proj"));
        WSL_TRY(wsl_piece_rows(l, wsl_hf_at(m, i, WSL_MLA_QA), loc, rep, 0, 0, m->ql));
        WSL_TRY(wsl_piece_rows(l, wsl_hf_at(m, i, WSL_MLA_KVA), loc, rep, 0, m->ql, kva));
        WSL_TRY(wsl_add_scale(l, m, loc));
        WSL_TRY(wsl_add_replica(l, g, rep, wsl_hf_at(m, i, WSL_MLA_QA_NORM),
                                "model.layers.%llu.self_attn.q_a_layernorm.weight", li));
        WSL_TRY(wsl_add_local(l, &loc, g, 2, qk_rows, m->ql,
                              "model.layers.%llu.self_attn.q_b_proj.weight", li));
        WSL_TRY(wsl_piece_rows(l, wsl_hf_at(m, i, WSL_MLA_QB), loc, d, R * qk_rows, 0, qk_rows));
        WSL_TRY(wsl_add_scale(l, m, loc));
    } else {
        WSL_TRY(wsl_add_local(l, &loc, g, 2, qk_rows, H, "model.layers.%llu.self_attn.q_proj.weight",
                              li));
        WSL_TRY(wsl_piece_rows(l, wsl_hf_at(m, i, WSL_Q_W), loc, d, R * qk_rows, 0, qk_rows));
        WSL_TRY(wsl_add_scale(l, m, loc));
        WSL_TRY(wsl_add_local(l, &loc, g, 2, kva, H,
                              "model.layers.%llu.self_attn.kv_a_proj_with_mqa.weight", li));
        WSL_TRY(wsl_piece_rows(l, wsl_hf_at(m, i, WSL_MLA_KVA), loc, rep, 0, 0, kva));
        WSL_TRY(wsl_add_scale(l, m, loc));
    }
    WSL_TRY(wsl_add_replica(l, g, rep, wsl_hf_at(m, i, WSL_MLA_KVA_NORM),
                            "model.layers.%llu.self_attn.kv_a_layernorm.weight", li));
    WSL_TRY(wsl_add_local(l, &loc, g, 2, kvb_rows, m->kvl,
                          "model.layers.%llu.self_attn.kv_b_proj.weight", li));
    WSL_TRY(wsl_piece_rows(l, wsl_hf_at(m, i, WSL_MLA_KVB), loc, d, R * kvb_rows, 0, kvb_rows));
    WSL_TRY(wsl_add_scale(l, m, loc));
    /* SGLang hands kv_b_proj to its RadixAttention (attn_mha.kv_b_proj = self.kv_b_proj) on the
     * first forward, so state_dict() then lists it twice; the sharded_state saver keeps the
     * smaller key, attn_mha's */
    if (eng == SGLANG)
        WSL_TRY(wsl_add_alias(l, loc, "model.layers.%llu.self_attn.attn_mha.kv_b_proj.weight", li));
    WSL_TRY(wsl_add_local(l, &loc, g, 2, H, v_cols, "model.layers.%llu.self_attn.o_proj.weight",
                          li));
    WSL_TRY(wsl_piece_cols(l, wsl_hf_at(m, i, WSL_O_W), loc, d, R * v_cols, 0, v_cols));
    return wsl_add_scale(l, m, loc);
}

static ws_err check_moe(ws_layout *l, const wsl_dense *m, const wsl_par *p, engine eng,
                        expert_plan *xp) {
    memset(xp, 0, sizeof *xp);
    xp->moe_tp = p->tp;
    xp->ep = 1;
    if (!m->moe) {
        if (p->ep != 1) return wsl_reject(l, "expert parallelism needs an MoE model");
        if (p->emap || p->redundant)
            return wsl_reject(l, "an expert map or redundant experts need an MoE model");
        return WS_OK;
    }
    uint64_t E = m->E;
    WSL_TRY(plan_map(l, m, p, xp));
    if (eng == SGLANG) {
        /* moe_tp = tp / ep (moe_dp 1): tp rank t is ep rank t / moe_tp, moe-tp rank t % moe_tp */
        if (p->tp % p->ep)
            return wsl_reject(l, "ep %d does not divide tp (SGLang's EP groups live inside the tp "
                                 "group: moe_tp = tp / ep)",
                              p->ep);
        xp->ep = p->ep;
        xp->moe_tp = p->tp / p->ep;
        if (xp->map && xp->P % (uint64_t)p->ep)
            return wsl_reject(l, "%llu physical expert slots are not divisible by ep "
                                 "(ExpertLocationMetadata asserts num_physical_experts %% ep_size "
                                 "== 0)",
                              (unsigned long long)xp->P);
        if (!xp->map && E % (uint64_t)p->ep)
            return wsl_reject(l, "num_experts %llu is not divisible by ep (FusedMoE asserts it)",
                              (unsigned long long)E);
        /* With an expert map too the shared expert stays one slot after the rank's P/ep
         * physical ones: FusedMoE's _num_global_routed is the P physical routed slots, and the
         * checkpoint's shared expert (id num_logical_experts) is loaded into physical id P,
         * local slot P/ep on every rank (weight_loader, _map_global_expert_id_to_local_expert_id;
         * not the per-rank shared slots of the DeepEP-class backends). */
        xp->fused_shared = p->fused_shared != 0;
        if (xp->fused_shared && m->shI != m->mI)
            return wsl_reject(l, "a fused shared expert needs one shared expert of "
                                 "moe_intermediate_size rows (n_shared_experts 1)");
        if (xp->fused_shared && wsl_has(m, WSL_SH_EXPERT_GATE))
            return wsl_reject(l, "fused shared experts are not modelled for qwen2_moe's gated "
                                 "shared expert");
    } else {
        /* FusedMoEParallelConfig.make: with expert parallelism the whole tp group is the ep
         * group and experts are not tensor-parallel (dp 1) */
        if (p->ep != 1 && p->ep != p->tp)
            return wsl_reject(l, "vLLM's expert parallelism spans the whole tp group (dp 1): ep "
                                 "must be 1 or tp");
        if (p->fused_shared)
            return wsl_reject(l, "fused shared experts are an SGLang option");
        xp->ep = p->ep;
        xp->moe_tp = p->ep > 1 ? 1 : p->tp;
        /* FusedMoE.__init__: redundant experts need EPLB, which asserts an even split and
         * (determine_expert_placement_strategy) places them linearly */
        if (xp->map && xp->P % (uint64_t)p->ep)
            return wsl_reject(l, "%llu physical expert slots are not divisible by ep (vLLM's "
                                 "EPLB asserts an even distribution)",
                              (unsigned long long)xp->P);
        if (xp->map && p->placement == WS_EXPERTS_ROUND_ROBIN)
            return wsl_reject(l, "with redundant experts or an expert map (EPLB) vLLM places "
                                 "experts linearly, not round robin");
    }
    if (p->placement == WS_EXPERTS_ROUND_ROBIN && eng == SGLANG)
        return wsl_reject(l, "round-robin expert placement is a vLLM option");
    if (m->mI % (uint64_t)xp->moe_tp)
        return wsl_reject(l, "moe_intermediate_size %llu is not divisible by the expert "
                             "tensor-parallel size %d",
                          (unsigned long long)m->mI, xp->moe_tp);
    if (m->shI && !xp->fused_shared && m->shI % (uint64_t)p->tp)
        return wsl_reject(l, "the shared expert's %llu rows are not divisible by tp",
                          (unsigned long long)m->shI);
    xp->max_local = (xp->P + (uint64_t)xp->ep - 1) / (uint64_t)xp->ep + xp->fused_shared;
    if (eng == VLLM && xp->ep > 1 && !(xp->em = wsl_alloc(l, (size_t)xp->P * sizeof *xp->em)))
        return WS_ERR_NOMEM;
    if (xp->map) WSL_TRY(wsl_set_expert_map(l, xp->map, xp->rows, (size_t)xp->P));
    return WS_OK;
}

/* Block FP8: SGLang's Fp8LinearMethod._validate_block_quant_shapes and Fp8MoEMethod's checks:
 * every output partition of a merged or column-parallel layer whole block_n rows, every input
 * partition of a row-parallel layer whole block_k columns. */
static ws_err check_fp8(ws_layout *l, const wsl_dense *m, const wsl_par *p,
                        const expert_plan *xp, uint64_t A, uint64_t Td) {
    /* attention over the attention-TP group (A ranks), dense MLP layers over Td (tp or 1) */
    uint64_t T = (uint64_t)p->tp, bn = m->bn, bk = m->bk;
    uint64_t q = m->nh / A * m->hd, kv = (m->nkv >= A ? m->nkv / A : 1) * m->hd;
    uint64_t mq = m->nh / A * (m->nope + m->rope), mkv = m->nh / A * (m->nope + m->vd),
             mo = m->nh / A * m->vd;
    struct {
        const char *what;
        uint64_t n, b;
        bool check;
    } rules[] = {
        {"q rows per rank (qkv_proj)", q, bn, !m->mla},
        {"k/v rows per rank (qkv_proj)", kv, bn, !m->mla},
        {"o_proj columns per rank", m->mla ? mo : q, bk, A > 1},
        {"q_lora_rank rows of the fused q_a / kv_a projection", m->ql, bn, m->mla && m->ql},
        {"q rows per rank (q_b_proj / q_proj)", mq, bn, m->mla},
        {"kv_b_proj rows per rank", mkv, bn, m->mla},
        {"gate/up rows per rank (gate_up_proj)", m->I / Td, bn, true},
        {"down_proj columns per rank", m->I / Td, bk, Td > 1},
        {"expert rows per moe-tp rank (w13)", m->moe ? m->mI / (uint64_t)xp->moe_tp : 0, bn,
         m->moe},
        {"expert columns per moe-tp rank (w2)", m->moe ? m->mI / (uint64_t)xp->moe_tp : 0, bk,
         m->moe && xp->moe_tp > 1},
        {"shared expert rows per rank", m->shI / T, bn, m->shI && !xp->fused_shared},
        {"shared expert columns per rank", m->shI / T, bk,
         m->shI && !xp->fused_shared && p->tp > 1},
    };
    bool dense = false;
    for (uint64_t i = 0; i < m->L; i++)
        dense |= !m->is_moe[i];
    for (size_t k = 0; k < sizeof rules / sizeof rules[0]; k++) {
        if (!rules[k].check || (k == 6 && !dense) || (k == 7 && !dense)) continue;
        if (rules[k].n % rules[k].b)
            return wsl_reject(l, "block FP8: %s = %llu is not divisible by the block size %llu "
                                 "(weight_block_size; the engine refuses it)",
                              rules[k].what, (unsigned long long)rules[k].n,
                              (unsigned long long)rules[k].b);
    }
    return WS_OK;
}

/* The vocab padded as VocabParallelEmbedding pads it for a group of G ranks: to a multiple of
 * 64; SGLang, when that is not divisible by G, to a multiple of 64 * G ("Support the case where
 * the vocab size is not divisible by the TP size"); vLLM's divide() refuses it (0 here). */
static uint64_t padded_vocab(engine eng, uint64_t V, uint64_t G) {
    uint64_t pad = TP_VOCAB_PADDING, Vp = (V + pad - 1) / pad * pad;
    if (Vp % G == 0) return Vp;
    if (eng != SGLANG) return 0;
    pad *= G;
    return (V + pad - 1) / pad * pad;
}

/* A vocab-parallel table's rows on rank r of its group (per_rank rows each) as copy `replica`;
 * rows >= V are padding and get no piece. */
static ws_err vocab_rows(ws_layout *l, uint32_t hf, uint32_t local, uint64_t r, uint64_t per_rank,
                         uint64_t V, uint32_t replica) {
    uint64_t first = r * per_rank;
    if (first >= V) return WS_OK; /* all padding */
    return wsl_piece_rows(l, hf, local, replica, first, 0, V - first < per_rank ? V - first : per_rank);
}

static bool is_type(const ws_model_config *cfg, const char *t) {
    return strncmp(cfg->model_type, t, sizeof cfg->model_type) == 0;
}

/*
 * SGLang DP attention (attn_dp D > 1, SGLang's --attn-dp-size): tp rank t is attention-TP rank
 * t % (tp/D) of attention-DP group t / (tp/D) (runtime_context.derive_attention_ranks). The
 * attention projections are sharded over the tp/D ranks of a group (parallel_group="attn_tp")
 * and every group holds the same shards: copy d of a shard lives in group d. The embedding
 * follows the attention group (use_attn_tp_group=is_dp_attention_enabled()), lm_head only with
 * --enable-dp-lm-head; MoE experts, shared experts and dense MLP layers keep the whole tp group
 * (dense layers of deepseek / glm4_moe are replicated with --moe-dense-tp-size 1).
 */
typedef struct groups {
    uint64_t A;      /* attention-TP size tp / attn_dp */
    uint64_t emb_G;  /* ranks the embedding is split over (A under DP attention, else tp) */
    uint64_t head_G; /* ranks lm_head is split over (A with dp_lm_head, else tp) */
    uint64_t Td;     /* ranks the dense MLP layers are split over (tp, or 1: replicated) */
    uint64_t Ve, Vl; /* the vocab padded for emb_G / head_G */
} groups;

static ws_err plan_groups(ws_layout *l, const ws_model_config *cfg, const wsl_dense *m,
                          const wsl_par *p, engine eng, groups *gr) {
    uint64_t T = (uint64_t)p->tp, D = (uint64_t)(p->attn_dp > 1 ? p->attn_dp : 1);
    if (T % D)
        return wsl_reject(l, "attn-dp %llu does not divide tp (the attention-DP groups split the "
                             "tp group: attn_tp_size = tp / attn_dp)",
                          (unsigned long long)D);
    if (D > 1 && (is_type(cfg, "llama") || is_type(cfg, "mistral") || is_type(cfg, "qwen2")))
        return wsl_reject(l, "DP attention is not modelled for model_type '%.63s': SGLang builds "
                             "its attention over the whole tp group (no attention-TP group)",
                          cfg->model_type);
    if (p->dp_lm_head && D == 1)
        return wsl_reject(l, "--enable-dp-lm-head needs DP attention (SGLang asserts attn-dp > "
                             "1)");
    if (p->moe_dense_tp && p->moe_dense_tp != 1 && (uint64_t)p->moe_dense_tp != T)
        return wsl_reject(l, "moe_dense_tp_size %ld: SGLang takes only 1 or tp", p->moe_dense_tp);
    gr->A = T / D;
    gr->emb_G = D > 1 ? gr->A : T;
    gr->head_G = D > 1 && p->dp_lm_head ? gr->A : T;
    /* is_dense_ffn_fully_dp(): DeepseekV2MLP and Glm4MoeMLP of the dense layers, replicated */
    bool dense_dp = p->moe_dense_tp == 1 &&
                    (is_type(cfg, "deepseek_v2") || is_type(cfg, "deepseek_v3") ||
                     is_type(cfg, "glm4_moe"));
    gr->Td = dense_dp ? 1 : T;
    uint64_t A = gr->A;
    if (m->nh % A)
        return wsl_reject(l, "num_attention_heads %llu is not divisible by %s",
                          (unsigned long long)m->nh, D > 1 ? "the attention-TP size" : "tp");
    for (uint64_t i = 0; i < m->L && m->I % gr->Td; i++)
        if (!m->is_moe[i]) /* only dense layers have intermediate_size rows */
            return wsl_reject(l, "intermediate_size %llu is not divisible by tp",
                              (unsigned long long)m->I);
    if (!m->mla && (m->nkv >= A ? m->nkv % A : A % m->nkv))
        return wsl_reject(l,
                          "num_key_value_heads %llu: with kv heads >= %s they must divide by "
                          "it, with fewer, it must divide by them",
                          (unsigned long long)m->nkv, D > 1 ? "the attention-TP size" : "tp");
    gr->Ve = padded_vocab(eng, m->V, gr->emb_G);
    gr->Vl = padded_vocab(eng, m->V, gr->head_G);
    if (!gr->Ve || !gr->Vl)
        return wsl_reject(l, "vocab padded to a multiple of %d is not divisible by tp",
                          TP_VOCAB_PADDING);
    if (m->tied && p->pp > 1 && gr->emb_G != gr->head_G)
        return wsl_reject(l, "tied embeddings over several stages under DP attention need "
                             "--enable-dp-lm-head (the last stage's lm_head copy would be split "
                             "over tp, the embedding over the attention-TP group: not modelled)");
    return WS_OK;
}

static ws_err build(ws_layout *l, const ws_model_config *cfg, const wsl_par *p, engine eng) {
    wsl_dense m;
    WSL_TRY(wsl_dense_describe(l, cfg, &m));
    int tp = p->tp;
    uint64_t T = (uint64_t)tp;
    groups gr = {.A = 1};
    WSL_TRY(plan_groups(l, cfg, &m, p, eng, &gr));
    uint64_t A = gr.A;
    if ((uint64_t)p->pp > m.L)
        return wsl_reject(l, "pp %d is more than the %llu layers", p->pp,
                          (unsigned long long)m.L);
    expert_plan xp;
    WSL_TRY(check_moe(l, &m, p, eng, &xp));
    if (m.fp8) WSL_TRY(check_fp8(l, &m, p, &xp, A, gr.Td));
    WSL_TRY(wsl_set_ranks(l, (uint64_t)tp * (uint64_t)p->pp));
    wsl_set_moe_tp(l, xp.moe_tp);
    uint64_t dense_pieces = 3 * (m.qkv_bias ? 2 : 1) + 1 + m.o_bias + 2 * m.qk_norm + 2 + 1 + 2 +
                            (m.mla ? 8 : 0);
    uint64_t moe_pieces = dense_pieces + 3 * xp.max_local + 8;
    uint64_t total = 0;
    for (uint64_t i = 0; i < m.L; i++)
        total += m.is_moe[i] ? moe_pieces : dense_pieces;
    WSL_TRY(wsl_expect(l, T * (total * (m.fp8 ? 2 : 1) + 3 * (uint64_t)p->pp + 3)));
    WSL_TRY(wsl_dense_add_hf(l, &m));

    uint64_t hd = m.hd, H = m.H;
    uint64_t q_rows = m.nh / A * hd;                /* q rows per attention-TP rank */
    uint64_t kv_heads = m.nkv >= A ? m.nkv / A : 1; /* kv heads per rank */
    uint64_t replicas = m.nkv >= A ? 1 : A / m.nkv; /* ranks of a group per kv head */
    uint64_t kv_rows = kv_heads * hd;
    uint64_t i_rows = m.I / gr.Td;
    uint64_t e_rows = gr.Ve / gr.emb_G, h_rows = gr.Vl / gr.head_G; /* vocab rows per rank */
    uint64_t D = T / A; /* attention-DP groups */
    uint64_t *ids = m.moe ? wsl_alloc(l, (size_t)(xp.P + 1) * sizeof *ids) : NULL;
    if (m.moe && !ids) return WS_ERR_NOMEM;

    for (int s = 0; s < p->pp; s++) {
        uint64_t first, end;
        wsl_pp_layers(m.L, p->pp, s, &first, &end);
        bool first_stage = s == 0, last_stage = s == p->pp - 1;
        for (int t = 0; t < tp; t++) {
            int g = s * tp + t; /* global rank */
            uint64_t R = (uint64_t)t;
            uint64_t at = R % A;           /* attention-TP rank (t itself without DP attention) */
            uint32_t d = (uint32_t)(R / A); /* attention-DP group: copy d of the attention shards */
            uint64_t kvs = at / replicas; /* kv shard */
            /* copies of a kv shard: the replicas of a group, then the groups (rank order; the
             * lowest rank holding it is replica 0) */
            uint32_t kv_rep = (uint32_t)(d * replicas + at % replicas);
            /* the embedding / lm_head: rank and copy in their group */
            uint64_t et = gr.emb_G == T ? R : at, ht = gr.head_G == T ? R : at;
            uint32_t erep = gr.emb_G == T ? 0 : d, hrep = gr.head_G == T ? 0 : d;
            uint32_t loc;
            int er = m.moe ? t / xp.moe_tp : 0;
            wsl_set_coord(l, g, t, er, s, m.moe ? t % xp.moe_tp : t);
            wsl_set_attn_dp_coord(l, g, (int)d);

            if (first_stage) {
                WSL_TRY(wsl_add_local(l, &loc, g, 2, e_rows, H, "model.embed_tokens.weight"));
                WSL_TRY(vocab_rows(l, m.embed, loc, et, e_rows, m.V, erep));
                /* Tied, one stage: lm_head IS embed_tokens. state_dict() lists both names and
                 * the engines' sharded_state saver keeps the smaller key of tensors sharing
                 * storage, so a dump calls this tensor lm_head.weight, while named_parameters()
                 * calls it embed_tokens. */
                if (m.tied && last_stage) WSL_TRY(wsl_add_alias(l, loc, "lm_head.weight"));
            }

            for (uint64_t i = first; i < end; i++) {
                unsigned long long li = (unsigned long long)i;
                if (m.mla) WSL_TRY(add_mla(l, &m, eng, i, g, t, at, A, d));
                /* qkv_proj.weight (and .bias): [q_t ; k_s ; v_s] */
                for (int b = 0; b < (m.qkv_bias ? 2 : 1) && !m.mla; b++) {
                    wsl_kind q = b ? WSL_Q_B : WSL_Q_W, k = b ? WSL_K_B : WSL_K_W,
                             v = b ? WSL_V_B : WSL_V_W;
                    WSL_TRY(wsl_add_local(l, &loc, g, b ? 1 : 2, q_rows + 2 * kv_rows, H,
                                          "model.layers.%llu.self_attn.qkv_proj.%s", li,
                                          b ? "bias" : "weight"));
                    WSL_TRY(
                        wsl_piece_rows(l, wsl_hf_at(&m, i, q), loc, d, at * q_rows, 0, q_rows));
                    WSL_TRY(wsl_piece_rows(l, wsl_hf_at(&m, i, k), loc, kv_rep, kvs * kv_rows,
                                           q_rows, kv_rows));
                    WSL_TRY(wsl_piece_rows(l, wsl_hf_at(&m, i, v), loc, kv_rep, kvs * kv_rows,
                                           q_rows + kv_rows, kv_rows));
                    if (!b) WSL_TRY(wsl_add_scale(l, &m, loc));
                }
                /* o_proj: row-parallel, columns [at*q_rows, +q_rows); its bias replicated */
                if (!m.mla) {
                    WSL_TRY(wsl_add_local(l, &loc, g, 2, H, q_rows,
                                          "model.layers.%llu.self_attn.o_proj.weight", li));
                    WSL_TRY(wsl_piece_cols(l, wsl_hf_at(&m, i, WSL_O_W), loc, d, at * q_rows, 0,
                                           q_rows));
                    WSL_TRY(wsl_add_scale(l, &m, loc));
                }
                if (m.o_bias)
                    WSL_TRY(wsl_add_replica(l, g, (uint32_t)t, wsl_hf_at(&m, i, WSL_O_B),
                                               "model.layers.%llu.self_attn.o_proj.bias", li));
                if (m.qk_norm) {
                    WSL_TRY(wsl_add_replica(l, g, (uint32_t)t, wsl_hf_at(&m, i, WSL_Q_NORM),
                                               "model.layers.%llu.self_attn.q_norm.weight", li));
                    WSL_TRY(wsl_add_replica(l, g, (uint32_t)t, wsl_hf_at(&m, i, WSL_K_NORM),
                                               "model.layers.%llu.self_attn.k_norm.weight", li));
                }
                if (m.is_moe[i]) {
                    WSL_TRY(add_moe(l, &m, p, eng, &xp, i, g, t, ids));
                } else {
                    /* gate_up_proj = [gate_t ; up_t] over tp; replicated (copy t, whole) with
                     * moe_dense_tp_size 1 */
                    uint64_t dt = gr.Td == 1 ? 0 : R;
                    uint32_t drep = gr.Td == 1 ? (uint32_t)t : 0;
                    WSL_TRY(wsl_add_local(l, &loc, g, 2, 2 * i_rows, H,
                                          "model.layers.%llu.mlp.gate_up_proj.weight", li));
                    WSL_TRY(wsl_piece_rows(l, wsl_hf_at(&m, i, WSL_GATE), loc, drep, dt * i_rows,
                                           0, i_rows));
                    WSL_TRY(wsl_piece_rows(l, wsl_hf_at(&m, i, WSL_UP), loc, drep, dt * i_rows,
                                           i_rows, i_rows));
                    WSL_TRY(wsl_add_scale(l, &m, loc));
                    /* down_proj: row-parallel */
                    WSL_TRY(wsl_add_local(l, &loc, g, 2, H, i_rows,
                                          "model.layers.%llu.mlp.down_proj.weight", li));
                    WSL_TRY(wsl_piece_cols(l, wsl_hf_at(&m, i, WSL_DOWN), loc, drep, dt * i_rows,
                                           0, i_rows));
                    WSL_TRY(wsl_add_scale(l, &m, loc));
                }
                WSL_TRY(wsl_add_replica(l, g, (uint32_t)t, wsl_hf_at(&m, i, WSL_IN_NORM),
                                           "model.layers.%llu.input_layernorm.weight", li));
                WSL_TRY(
                    wsl_add_replica(l, g, (uint32_t)t, wsl_hf_at(&m, i, WSL_POST_NORM),
                                       "model.layers.%llu.post_attention_layernorm.weight", li));
            }

            if (last_stage) {
                WSL_TRY(wsl_add_replica(l, g, (uint32_t)t, m.norm, "model.norm.weight"));
                if (!m.tied) {
                    WSL_TRY(wsl_add_local(l, &loc, g, 2, h_rows, H, "lm_head.weight"));
                    WSL_TRY(vocab_rows(l, m.lm_head, loc, ht, h_rows, m.V, hrep));
                } else if (!first_stage) {
                    /* Tied over several stages: the last stage holds its own copy of the
                     * embedding's rows, the copies after the first stage's (1; under DP
                     * attention with the DP lm_head D + d). SGLang: a ParallelLMHead named
                     * lm_head, loaded from model.embed_tokens.weight; vLLM: embed_tokens is
                     * built on the last stage too and lm_head is it. */
                    WSL_TRY(wsl_add_local(l, &loc, g, 2, h_rows, H, "%s",
                                          eng == SGLANG ? "lm_head.weight"
                                                        : "model.embed_tokens.weight"));
                    uint32_t first_copies = gr.emb_G == T ? 1 : (uint32_t)D;
                    WSL_TRY(vocab_rows(l, m.embed, loc, ht, h_rows, m.V, first_copies + hrep));
                    if (eng == VLLM) WSL_TRY(wsl_add_alias(l, loc, "lm_head.weight"));
                }
            }
        }
    }
    return WS_OK;
}

ws_err wsl_build_sglang(ws_layout *l, const ws_model_config *cfg, const wsl_par *p) {
    return build(l, cfg, p, SGLANG);
}

ws_err wsl_build_vllm(ws_layout *l, const ws_model_config *cfg, const wsl_par *p) {
    return build(l, cfg, p, VLLM);
}
