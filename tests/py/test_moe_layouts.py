"""MoE, expert parallelism and pipeline stages (issue 13).

An independent re-implementation of each engine's loader (numpy, written from the engines'
sources as docs/layouts.md cites them, not from weightsum's C code) predicts every rank's local
tensors over tp x ep x pp for configs shaped like Qwen3-30B-A3B, Qwen3-235B-A22B, GLM-4.5-Air,
DeepSeek-V3 (its MoE block, with GQA attention here: MLA is tested in test_mla_layouts.py
and test_megatron_mla.py) and Qwen2-MoE, scaled down; what
`weightsum shard` writes must equal it element by element, and verify with both digests must
pass. Then one mutation per bug class of the issue, each caught and named (expert, engine slot,
rank)."""
import itertools
import json
import os

import numpy as np
import pytest
from safetensors.numpy import load_file

from rank_files import make_model, mutate, rank_file

H, HD, VOCAB = 64, 8, 1000


def moe_config(kind, layers, experts, mi, heads=8, kvh=4, tied=False, **extra):
    c = {"model_type": kind, "hidden_size": H, "intermediate_size": 96,
         "num_hidden_layers": layers, "num_attention_heads": heads, "num_key_value_heads": kvh,
         "head_dim": HD, "vocab_size": VOCAB, "tie_word_embeddings": tied,
         "moe_intermediate_size": mi}
    c["n_routed_experts" if kind == "glm4_moe" else "num_experts"] = experts
    c.update(extra)
    return c


CONFIGS = {
    # Qwen3-30B-A3B: 48 layers, 128 experts of 768, every layer MoE, no shared expert
    "qwen3-30b-a3b": moe_config("qwen3_moe", 4, 16, 32),
    # Qwen3-235B-A22B: 94 layers (not divisible by 4: uneven pipeline stages), 128 experts
    "qwen3-235b-a22b": moe_config("qwen3_moe", 3, 16, 48, heads=16, kvh=4),
    # GLM-4.5-Air: first_k_dense_replace 1, one shared expert, q/k/v bias, router bias
    "glm-4.5-air": moe_config("glm4_moe", 3, 8, 32, attention_bias=True, n_shared_experts=1,
                              first_k_dense_replace=1),
    # DeepSeek-V3's MoE block: 3 dense layers of 61 (here 2 of 4), 256 experts, 1 shared
    "deepseek-v3-moe": moe_config("glm4_moe", 4, 32, 16, n_shared_experts=1,
                                  first_k_dense_replace=2, use_qk_norm=True),
    # Qwen2-MoE: gated shared expert, a dense layer from mlp_only_layers, tied embeddings
    "qwen2-moe-tied": moe_config("qwen2_moe", 4, 8, 32, tied=True,
                                 shared_expert_intermediate_size=64, mlp_only_layers=[1]),
}


# ---- the engines' loaders, re-implemented --------------------------------------------------

def pp_range(L, pp, s):
    """get_pp_indices (SGLang python/sglang/srt/distributed/utils.py, vLLM the same)."""
    base, rem = divmod(L, pp)
    if s >= pp - rem:
        start = s * (base + 1) - (pp - rem)
        return start, start + base + 1
    return s * base, s * base + base


def is_moe_layer(cfg, i):
    if cfg["model_type"] == "glm4_moe":
        return i >= cfg.get("first_k_dense_replace", 1)
    return i not in cfg.get("mlp_only_layers", []) and (i + 1) % cfg.get("decoder_sparse_step", 1) == 0


def n_experts(cfg):
    return cfg.get("num_experts", cfg.get("n_routed_experts"))


def shared_rows(cfg):
    if cfg["model_type"] == "glm4_moe":
        return cfg.get("n_shared_experts", 1) * cfg["moe_intermediate_size"]
    return cfg.get("shared_expert_intermediate_size", 0)


def shared_prefix(cfg):
    return "shared_expert" if cfg["model_type"] == "qwen2_moe" else "shared_experts"


def qkv_bias(cfg):
    return cfg["model_type"] in ("qwen2", "qwen2_moe") or cfg.get("attention_bias", False)


def qk_norm(cfg):
    return cfg["model_type"] in ("qwen3", "qwen3_moe") or cfg.get("use_qk_norm", False)


def vocab_shard(w, V, per, r):
    out = np.zeros((per,) + w.shape[1:], w.dtype)
    lo = r * per
    n = max(0, min(V - lo, per))
    out[:n] = w[lo:lo + n]
    return out


def engine_experts(family, E, tp, ep, t, placement):
    """(moe_tp, moe_tp rank, global experts in local slot order) of tp rank t."""
    if family == "sglang":  # moe_tp = tp / ep; ep rank t // moe_tp; contiguous experts
        mtp = tp // ep
        er = t // mtp
        return mtp, t % mtp, list(range(er * E // ep, (er + 1) * E // ep))
    if ep == 1:  # vLLM without expert parallelism: experts tensor-parallel over tp
        return tp, t, list(range(E))
    # vLLM FusedMoEParallelConfig: ep = tp (dp 1), experts not tensor-parallel;
    # determine_expert_map: linear (first E % ep ranks one more) or round robin
    if placement == "round_robin":
        return 1, 0, list(range(t, E, ep))
    base, rem = divmod(E, ep)
    start = t * base + min(t, rem)
    return 1, 0, list(range(start, start + base + (t < rem)))


def sglang_vllm_ranks(family, cfg, w, tp, ep, pp, placement="linear"):
    L, V = cfg["num_hidden_layers"], cfg["vocab_size"]
    HD = cfg["head_dim"]
    nh, nkv = cfg["num_attention_heads"], cfg["num_key_value_heads"]
    tied = cfg["tie_word_embeddings"]
    Vp = -(-V // 64) * 64
    per = Vp // tp
    qr = nh // tp * HD
    kvh = nkv // tp if nkv >= tp else 1
    reps = 1 if nkv >= tp else tp // nkv
    ranks = []
    for s in range(pp):
        lo, hi = pp_range(L, pp, s)
        for t in range(tp):
            d = {}
            if s == 0:
                d["model.embed_tokens.weight"] = vocab_shard(w["model.embed_tokens.weight"], V, per, t)
            for i in range(lo, hi):
                p = f"model.layers.{i}."
                ks = t // reps
                for b in (["weight", "bias"] if qkv_bias(cfg) else ["weight"]):
                    q = w[p + f"self_attn.q_proj.{b}"][t * qr:(t + 1) * qr]
                    k = w[p + f"self_attn.k_proj.{b}"][ks * kvh * HD:(ks + 1) * kvh * HD]
                    v = w[p + f"self_attn.v_proj.{b}"][ks * kvh * HD:(ks + 1) * kvh * HD]
                    d[p + f"self_attn.qkv_proj.{b}"] = np.concatenate([q, k, v])
                d[p + "self_attn.o_proj.weight"] = w[p + "self_attn.o_proj.weight"][:, t * qr:(t + 1) * qr]
                if qk_norm(cfg):
                    for n in ("q_norm", "k_norm"):
                        d[p + f"self_attn.{n}.weight"] = w[p + f"self_attn.{n}.weight"]
                if is_moe_layer(cfg, i):
                    E, mi = n_experts(cfg), cfg["moe_intermediate_size"]
                    mtp, mt, ids = engine_experts(family, E, tp, ep, t, placement)
                    r = mi // mtp
                    ex = p + "mlp.experts."
                    d[ex + "w13_weight"] = np.stack([np.concatenate([
                        w[ex + f"{e}.gate_proj.weight"][mt * r:(mt + 1) * r],
                        w[ex + f"{e}.up_proj.weight"][mt * r:(mt + 1) * r]]) for e in ids])
                    d[ex + "w2_weight"] = np.stack(
                        [w[ex + f"{e}.down_proj.weight"][:, mt * r:(mt + 1) * r] for e in ids])
                    if family == "vllm" and ep > 1:
                        # FusedMoE: register_buffer("_expert_map", determine_expert_map(...)),
                        # so state_dict() holds each expert's local slot on this rank, or -1
                        em = np.full(E, -1, np.int32)
                        em[ids] = np.arange(len(ids), dtype=np.int32)
                        d[ex + "_expert_map"] = em
                    d[p + "mlp.gate.weight"] = w[p + "mlp.gate.weight"]
                    if cfg["model_type"] == "glm4_moe":
                        d[p + "mlp.gate.e_score_correction_bias"] = w[p + "mlp.gate.e_score_correction_bias"]
                    if shared_rows(cfg):  # a separate MLP, tensor-parallel over all of tp
                        sp = p + "mlp." + shared_prefix(cfg) + "."
                        sr = shared_rows(cfg) // tp
                        d[sp + "gate_up_proj.weight"] = np.concatenate([
                            w[sp + "gate_proj.weight"][t * sr:(t + 1) * sr],
                            w[sp + "up_proj.weight"][t * sr:(t + 1) * sr]])
                        d[sp + "down_proj.weight"] = w[sp + "down_proj.weight"][:, t * sr:(t + 1) * sr]
                    if cfg["model_type"] == "qwen2_moe":
                        d[p + "mlp.shared_expert_gate.weight"] = w[p + "mlp.shared_expert_gate.weight"]
                else:
                    ir = cfg["intermediate_size"] // tp
                    d[p + "mlp.gate_up_proj.weight"] = np.concatenate([
                        w[p + "mlp.gate_proj.weight"][t * ir:(t + 1) * ir],
                        w[p + "mlp.up_proj.weight"][t * ir:(t + 1) * ir]])
                    d[p + "mlp.down_proj.weight"] = w[p + "mlp.down_proj.weight"][:, t * ir:(t + 1) * ir]
                for n in ("input_layernorm", "post_attention_layernorm"):
                    d[p + n + ".weight"] = w[p + n + ".weight"]
            if s == pp - 1:
                d["model.norm.weight"] = w["model.norm.weight"]
                if not tied:
                    d["lm_head.weight"] = vocab_shard(w["lm_head.weight"], V, per, t)
                elif pp > 1:
                    # SGLang: a ParallelLMHead on the last stage, loaded from embed_tokens;
                    # vLLM: embed_tokens built on the last stage too (lm_head is it)
                    name = "lm_head.weight" if family == "sglang" else "model.embed_tokens.weight"
                    d[name] = vocab_shard(w["model.embed_tokens.weight"], V, per, t)
            ranks.append(d)
    return ranks


def megatron_ranks(cfg, w, tp, ep, pp):
    L, V = cfg["num_hidden_layers"], cfg["vocab_size"]
    HD = cfg["head_dim"]
    nh, nkv = cfg["num_attention_heads"], cfg["num_key_value_heads"]
    Vp = -(-V // (128 * tp)) * (128 * tp)
    per_v = Vp // tp
    qpg, G = nh // nkv, nkv // tp
    per = L // pp
    ranks = []
    for s in range(pp):
        for dp in range(ep):  # dp = ep: each data-parallel copy is one ep rank
            for t in range(tp):
                d = {}
                if s == 0:
                    d["embedding.word_embeddings.weight"] = vocab_shard(
                        w["model.embed_tokens.weight"], V, per_v, t)
                for j in range(per):
                    i = s * per + j
                    p, m = f"model.layers.{i}.", f"decoder.layers.{j}."
                    for b in (["weight", "bias"] if qkv_bias(cfg) else ["weight"]):
                        parts = []
                        for g in range(t * G, (t + 1) * G):
                            parts += [w[p + f"self_attn.q_proj.{b}"][g * qpg * HD:(g + 1) * qpg * HD],
                                      w[p + f"self_attn.k_proj.{b}"][g * HD:(g + 1) * HD],
                                      w[p + f"self_attn.v_proj.{b}"][g * HD:(g + 1) * HD]]
                        d[m + f"self_attention.linear_qkv.{b}"] = np.concatenate(parts)
                    d[m + "self_attention.linear_qkv.layer_norm_weight"] = w[p + "input_layernorm.weight"]
                    qc = nh // tp * HD
                    d[m + "self_attention.linear_proj.weight"] = w[p + "self_attn.o_proj.weight"][:, t * qc:(t + 1) * qc]
                    if qk_norm(cfg):
                        d[m + "self_attention.q_layernorm.weight"] = w[p + "self_attn.q_norm.weight"]
                        d[m + "self_attention.k_layernorm.weight"] = w[p + "self_attn.k_norm.weight"]
                    if is_moe_layer(cfg, i):
                        E, mi = n_experts(cfg), cfg["moe_intermediate_size"]
                        n, r = E // ep, mi // tp
                        d[m + "mlp.router.weight"] = w[p + "mlp.gate.weight"]
                        if cfg["model_type"] == "glm4_moe":
                            d[m + "mlp.router.expert_bias"] = w[p + "mlp.gate.e_score_correction_bias"]
                        for k in range(n):  # TEGroupedMLP: local expert k is dp * n + k
                            e = dp * n + k
                            ex = p + f"mlp.experts.{e}."
                            d[m + f"mlp.experts.linear_fc1.weight{k}"] = np.concatenate([
                                w[ex + "gate_proj.weight"][t * r:(t + 1) * r],
                                w[ex + "up_proj.weight"][t * r:(t + 1) * r]])
                            d[m + f"mlp.experts.linear_fc2.weight{k}"] = w[ex + "down_proj.weight"][:, t * r:(t + 1) * r]
                        if shared_rows(cfg):
                            sp = p + "mlp." + shared_prefix(cfg) + "."
                            sr = shared_rows(cfg) // tp
                            d[m + "mlp.shared_experts.linear_fc1.weight"] = np.concatenate([
                                w[sp + "gate_proj.weight"][t * sr:(t + 1) * sr],
                                w[sp + "up_proj.weight"][t * sr:(t + 1) * sr]])
                            d[m + "mlp.shared_experts.linear_fc2.weight"] = w[sp + "down_proj.weight"][:, t * sr:(t + 1) * sr]
                        if cfg["model_type"] == "qwen2_moe":
                            d[m + "mlp.shared_experts.gate_weight"] = w[p + "mlp.shared_expert_gate.weight"]
                        d[m + "pre_mlp_layernorm.weight"] = w[p + "post_attention_layernorm.weight"]
                    else:
                        ir = cfg["intermediate_size"] // tp
                        d[m + "mlp.linear_fc1.weight"] = np.concatenate([
                            w[p + "mlp.gate_proj.weight"][t * ir:(t + 1) * ir],
                            w[p + "mlp.up_proj.weight"][t * ir:(t + 1) * ir]])
                        d[m + "mlp.linear_fc1.layer_norm_weight"] = w[p + "post_attention_layernorm.weight"]
                        d[m + "mlp.linear_fc2.weight"] = w[p + "mlp.down_proj.weight"][:, t * ir:(t + 1) * ir]
                if s == pp - 1:
                    d["decoder.final_layernorm.weight"] = w["model.norm.weight"]
                    if not cfg["tie_word_embeddings"]:
                        d["output_layer.weight"] = vocab_shard(w["lm_head.weight"], V, per_v, t)
                    elif pp > 1:  # the last stage's copy of the shared embedding
                        d["output_layer.weight"] = vocab_shard(w["model.embed_tokens.weight"], V, per_v, t)
                ranks.append(d)
    return ranks


def expected_ranks(family, cfg, w, tp, ep, pp, placement="linear"):
    if family == "megatron":
        return megatron_ranks(cfg, w, tp, ep, pp)
    return sglang_vllm_ranks(family, cfg, w, tp, ep, pp, placement)


# ---- helpers --------------------------------------------------------------------------------


def shard(run, ckpt, out, family, tp, ep=1, pp=1):
    return run("shard", ckpt, "--layout", family, "--tp", tp, "--ep", ep, "--pp", pp, "-o", out)


COMBOS = [(1, 1, 1), (2, 1, 1), (2, 2, 1), (4, 2, 1), (4, 4, 1), (2, 1, 2), (2, 2, 2),
          (4, 2, 2), (4, 4, 2), (1, 1, 3), (2, 1, 4)]


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_engine_loaders_element_by_element(tmp_path, run, name):
    cfg = CONFIGS[name]
    ckpt, mans = make_model(run, tmp_path, cfg)
    w = load_file(ckpt)
    done = 0
    for family, (tp, ep, pp) in itertools.product(["sglang", "vllm", "megatron"], COMBOS):
        out = tmp_path / f"{family}-{tp}-{ep}-{pp}"
        r = shard(run, ckpt, out, family, tp, ep, pp)
        if r.returncode == 2:  # a combination the engine cannot run, said in one line
            assert len(r.stderr.strip().splitlines()) == 1, r.stderr
            assert (family == "vllm" and ep not in (1, tp)) or \
                (family == "megatron" and (cfg["num_hidden_layers"] % pp or
                                           cfg["num_key_value_heads"] % tp)) or \
                pp > cfg["num_hidden_layers"], (family, tp, ep, pp, r.stderr)
            continue
        assert r.returncode == 0, r.stderr
        want = expected_ranks(family, cfg, w, tp, ep, pp)
        world = len(want)
        assert not os.path.exists(rank_file(out, world)), "more rank files than ranks"
        for g, exp in enumerate(want):
            got = load_file(rank_file(out, g))
            assert sorted(got) == sorted(exp), (family, tp, ep, pp, g,
                                                sorted(set(got) ^ set(exp)))
            for k in exp:
                assert got[k].shape == exp[k].shape, (k, g, got[k].shape, exp[k].shape)
                assert got[k].tobytes() == exp[k].tobytes(), (family, tp, ep, pp, g, k)
        for algo, man in mans.items():
            v = run("verify", man, out)
            assert v.returncode == 0 and v.stdout.endswith("-> OK\n"), (algo, v.stdout, v.stderr)
        done += 1
    assert done >= 15


# ---- the mutation suite: one case per bug class of issue 13 -----------------------------------

def verify_fails(run, man, d, ckpt=None):
    r = run("verify", man, d, *(["--locate", ckpt] if ckpt else []))
    assert r.returncode == 1, r.stdout + r.stderr
    return r.stdout


@pytest.fixture(params=["sha256", "fast"])
def q3(tmp_path, run, request):
    """Qwen3-30B-A3B-shaped, SGLang at tp 4, ep 2 (moe_tp 2): ranks 0-1 hold experts 0-7,
    ranks 2-3 experts 8-15, each expert's rows split over the moe-tp pair."""
    ckpt, mans = make_model(run, tmp_path, CONFIGS["qwen3-30b-a3b"])
    assert shard(run, ckpt, tmp_path / "d", "sglang", 4, 2).returncode == 0
    return tmp_path / "d", ckpt, mans[request.param]


L1 = "model.layers.1."
W13, W2 = L1 + "mlp.experts.w13_weight", L1 + "mlp.experts.w2_weight"


def test_expert_shard_without_gather(q3, run):
    """slime #2280: the trainer sent an expert-tensor-parallel shard (rows 0..16 of expert 9's
    gate, its etp rank 0 share) without the all-gather; the engine took its moe-tp slice of
    that shard, so moe-tp rank 1 (global rank 3) holds rows 8..16 where 24..32 belong."""
    d, ckpt, man = q3
    w = load_file(ckpt)
    def bad(t):
        a = t[W13].copy()
        shard0 = w[L1 + "mlp.experts.9.gate_proj.weight"][:16]  # etp=2 shard 0, not gathered
        a[1, 0:16] = shard0  # slot 1 = expert 9; the rank's gate rows should be 16..32
        t[W13] = a
    mutate(d, 3, bad)
    out = verify_fails(run, man, d, ckpt)
    assert out.startswith(f"{L1}mlp.experts.9.gate_proj.weight: mismatch [{W13} on rank 3]"), out
    assert f"element [1, 0, 0] of {W13} on rank 3" in out, out  # engine slot 1
    assert "1 mismatch -> FAILED" in out


def test_experts_in_wrong_slots(q3, run):
    """verl #7195: under EP the rank's experts 8 and 10 landed in each other's slots."""
    d, ckpt, man = q3
    def swap(t):
        for n in (W13, W2):
            a = t[n].copy()
            a[[0, 2]] = a[[2, 0]]
            t[n] = a
    mutate(d, 2, swap)
    out = verify_fails(run, man, d, ckpt)
    for e in (8, 10):
        for part in ("gate_proj", "up_proj", "down_proj"):
            loc = W2 if part == "down_proj" else W13
            assert f"{L1}mlp.experts.{e}.{part}.weight: mismatch [{loc} on rank 2]" in out, out
    assert "6 mismatch -> FAILED" in out
    assert f"element [0, " in out and f"element [2, " in out  # the slots are named


def test_grouped_expert_weights_never_sent(tmp_path, run):
    """SkyRL #1471: the grouped experts were never sent — the engine kept its initial (zero)
    w13/w2 while everything else was updated; and a Megatron dump missing a grouped expert."""
    ckpt, mans = make_model(run, tmp_path, CONFIGS["glm-4.5-air"])
    assert shard(run, ckpt, tmp_path / "s", "sglang", 2, 2).returncode == 0
    for r in (0, 1):
        mutate(tmp_path / "s", r, lambda t: [t.__setitem__(k, np.zeros_like(v)) for k, v in
                                             list(t.items()) if "experts.w" in k])
    out = verify_fails(run, mans["sha256"], tmp_path / "s")
    # layers 1, 2 are MoE (first_k_dense_replace 1): 8 experts x 3 tensors x 2 layers
    assert "48 mismatch -> FAILED" in out, out
    assert f"{L1}mlp.experts.0.gate_proj.weight: mismatch" in out
    # the shared expert, the router and its bias were sent and match
    assert "shared_experts" not in out and "mlp.gate.weight" not in out
    assert shard(run, ckpt, tmp_path / "m", "megatron", 2, 2).returncode == 0
    name = "decoder.layers.2.mlp.experts.linear_fc1.weight3"
    mutate(tmp_path / "m", 2, lambda t: t.pop(name))  # rank 2: dp/ep rank 1, tp rank 0
    out = verify_fails(run, mans["fast"], tmp_path / "m")
    # ep rank 1 holds experts 4..7: local 3 is expert 7
    assert f"model.layers.2.mlp.experts.7.gate_proj.weight: missing [{name} on rank 2]" in out, out
    assert f"model.layers.2.mlp.experts.7.up_proj.weight: missing [{name} on rank 2]" in out


def test_shared_expert_treated_as_ep_sharded(tmp_path, run):
    """miles #1730: the shared expert is a tensor-parallel MLP over the whole tp group; a loader
    that split it by the moe-tp rank (as the routed experts) gives ranks 2, 3 the rows of 0, 1."""
    ckpt, mans = make_model(run, tmp_path, CONFIGS["glm-4.5-air"])
    d = tmp_path / "s"
    assert shard(run, ckpt, d, "sglang", 4, 2).returncode == 0
    w = load_file(ckpt)
    sp = L1 + "mlp.shared_experts."
    for t in (2, 3):
        mt = t % 2  # the moe-tp rank; right would be t (shared rows 32 / tp = 8 per rank)
        def bad(x, mt=mt):
            x[sp + "gate_up_proj.weight"] = np.concatenate([
                w[sp + "gate_proj.weight"][mt * 8:(mt + 1) * 8],
                w[sp + "up_proj.weight"][mt * 8:(mt + 1) * 8]])
            x[sp + "down_proj.weight"] = np.ascontiguousarray(w[sp + "down_proj.weight"][:, mt * 8:(mt + 1) * 8])
        mutate(d, t, bad)
    out = verify_fails(run, mans["fast"], d, ckpt)
    for part, loc in (("gate_proj", "gate_up_proj"), ("up_proj", "gate_up_proj"),
                      ("down_proj", "down_proj")):
        assert f"{sp}{part}.weight: mismatch [{sp}{loc}.weight on rank 2]" in out, out
    assert "mlp.experts." not in out  # routed experts untouched


def test_every_rank_loads_shard_0(q3, run):
    """vllm-gguf-plugin #103: every rank loaded the shard of rank 0 — here for the experts:
    ep rank 1 (ranks 2, 3) holds experts 0..7 instead of 8..15."""
    d, ckpt, man = q3
    src = load_file(rank_file(d, 0))
    for r in (1, 2, 3):
        mutate(d, r, lambda t: [t.__setitem__(k, src[k]) for k in (W13, W2)])
    out = verify_fails(run, man, d)
    # experts 0..7 are held right by rank 0 (moe-tp rank 0) but rank 1 holds rank 0's rows
    for e in (0, 7, 8, 15):
        assert f"{L1}mlp.experts.{e}.gate_proj.weight: mismatch" in out, out
    assert "16 experts" not in out
    assert f"{W13} rows 0..16 on rank 0" in out or f"on rank 1" in out


def test_stale_tied_lm_head_on_last_stage(tmp_path, run):
    """With tied embeddings and pp > 1 the last stage holds its own lm_head copy: a stale one
    is named, by its engine name, rank and the embedding it must equal."""
    ckpt, mans = make_model(run, tmp_path, CONFIGS["qwen2-moe-tied"])
    for family, name in (("sglang", "lm_head.weight"), ("vllm", "model.embed_tokens.weight"),
                         ("megatron", "output_layer.weight")):
        d = tmp_path / family
        assert shard(run, ckpt, d, family, 2, 1, 2).returncode == 0
        for algo in ("sha256", "fast"):
            assert run("verify", mans[algo], d).returncode == 0
        last = 3  # stage 1, tp rank 1
        def stale(t):
            a = t[name].copy()
            a[5, 7] += 1.0
            t[name] = a
        mutate(d, last, stale)
        out = verify_fails(run, mans["fast"], d)
        assert f"model.embed_tokens.weight: replica_mismatch [{name} on rank 3]" in out, out
        assert "lm_head.weight: mismatch" not in out


def test_pipeline_names_and_missing_stage(tmp_path, run):
    """SGLang keeps global layer names per stage, Megatron counts from 0 per stage; a stage's
    missing rank file is named."""
    ckpt, mans = make_model(run, tmp_path, CONFIGS["qwen3-30b-a3b"])
    assert shard(run, ckpt, tmp_path / "s", "sglang", 2, 1, 2).returncode == 0
    assert "model.layers.3.mlp.experts.w13_weight" in load_file(rank_file(tmp_path / "s", 2))
    assert "model.layers.1.mlp.experts.w13_weight" not in load_file(rank_file(tmp_path / "s", 2))
    assert shard(run, ckpt, tmp_path / "m", "megatron", 2, 1, 2).returncode == 0
    m2 = load_file(rank_file(tmp_path / "m", 2))
    assert "decoder.layers.1.mlp.experts.linear_fc1.weight0" in m2
    assert "decoder.layers.2.mlp.experts.linear_fc1.weight0" not in m2
    os.remove(rank_file(tmp_path / "s", 3))
    out = verify_fails(run, mans["sha256"], tmp_path / "s")
    assert "missing [rank 3]" in out and "model.layers.3." in out


def test_layout_json_records_ep_pp(tmp_path, run):
    ckpt, mans = make_model(run, tmp_path, CONFIGS["qwen3-30b-a3b"])
    assert shard(run, ckpt, tmp_path / "d", "sglang", 4, 2, 2).returncode == 0
    assert json.loads((tmp_path / "d" / "weightsum-layout.json").read_text()) == \
        {"family": "sglang", "tp": 4, "ep": 2, "pp": 2}
    # the tp-only form is unchanged
    assert shard(run, ckpt, tmp_path / "e", "sglang", 2).returncode == 0
    assert (tmp_path / "e" / "weightsum-layout.json").read_text() == '{"family": "sglang", "tp": 2}\n'
    # flags override the file
    r = run("verify", mans["sha256"], tmp_path / "d", "--ep", 4)
    assert r.returncode in (1, 2) and "-> OK" not in r.stdout
    r = run("shard", ckpt, "--layout", "sglang", "--tp", 4, "--ep", 3, "-o", tmp_path / "x")
    assert r.returncode == 2 and "ep 3 does not divide tp" in r.stderr


def test_moe_refusals_are_one_line(tmp_path, run):
    ckpt, _ = make_model(run, tmp_path, CONFIGS["qwen3-30b-a3b"])
    for args, why in ((("sglang", 4, 2, 1), None),
                      (("vllm", 4, 2, 1), "ep must be 1 or tp"),
                      (("transformers", 2, 1, 1), "MoE"),
                      (("hf", 1, 2, 1), "unsharded"),
                      (("megatron", 2, 1, 3), "not divisible by pp")):
        r = shard(run, ckpt, tmp_path / "x", *args)
        if why is None:
            assert r.returncode == 0
            continue
        assert r.returncode == 2 and why in r.stderr, r.stderr
        assert len(r.stderr.strip().splitlines()) == 1
    cfg = dict(CONFIGS["qwen3-30b-a3b"], model_type="deepseek_v3")
    (tmp_path / "ds.json").write_text(json.dumps(cfg))
    r = run("shard", ckpt, "--layout", "sglang", "--tp", 2, "--config", tmp_path / "ds.json",
            "-o", tmp_path / "y")
    # MLA is laid out now (test_mla_layouts.py): a Qwen3-MoE checkpoint lacks its tensors
    assert r.returncode == 2 and "kv_a_proj_with_mqa" in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_ep_pp_ranks_through_hash_verify_and_serve(tmp_path, run, ws_bin):
    """A dump of tp 2, ep 2, pp 2 has 4 global ranks (tp x pp): `hash` of the dump, `verify`,
    serve's checksum answer (per-rank digests and SGLang's answer) and `expect` all count 4,
    name ranks 2 and 3 (stage 1) with their tp_rank / pp_rank, and a corruption on stage 1 is
    caught on rank 3 by every one of them (the tp-only count saw ranks 0 and 1 only)."""
    from test_http import Server, post
    ckpt, mans = make_model(run, tmp_path, CONFIGS["qwen3-30b-a3b"])
    d = tmp_path / "d"
    assert shard(run, ckpt, d, "sglang", 2, 2, 2).returncode == 0
    dm = tmp_path / "dump.json"
    assert run("hash", d, "-o", dm).returncode == 0
    assert run("verify", mans["sha256"], d).returncode == 0
    want = json.loads(open(mans["sha256"]).read())["tensors"]
    got = json.loads(dm.read_text())["tensors"]
    assert {k: v["sha256"] for k, v in got.items()} == {k: v["sha256"] for k, v in want.items()}
    exp = tmp_path / "expect.json"
    r = run("expect", ckpt, "--layout", "sglang", "--tp", 2, "--ep", 2, "--pp", 2, "-o", exp)
    assert r.returncode == 0, r.stderr
    e = json.loads(exp.read_text())
    assert e["tp"] == 2 and e["pp"] == 2 and len(e["ranks"]) == len(e["holds"]) == 4
    info = [x["parallelism_info"][0] for x in e["ranks"]]
    assert [(i["tp_rank"], i["pp_rank"], i["rank"], i["size"]) for i in info] == \
        [(0, 0, 0, 4), (1, 0, 1, 4), (0, 1, 2, 4), (1, 1, 3, 4)]
    W13 = "model.layers.3.mlp.experts.w13_weight"
    with Server(ws_bin, d) as s:
        st, ans = post(s.port, {"action": "checksum", "algorithm": "sha256"})
        assert st == 200 and ans["success"], ans
        assert len(ans["ranks"]) == 4
        pi = [x["parallelism_info"] for x in ans["ranks"]]
        assert [(i["tp_rank"], i["pp_rank"], i["pp_size"], i["rank"]) for i in pi] == \
            [(0, 0, 2, 0), (1, 0, 2, 1), (0, 1, 2, 2), (1, 1, 2, 3)]
        assert W13 in ans["ranks"][3]["checksums"] and W13 not in ans["ranks"][1]["checksums"]
        assert ans["checksums"] == {k: v["sha256"] for k, v in want.items()}
        ranks_ok = tmp_path / "ranks.json"
        ranks_ok.write_text(json.dumps(ans))
        r = run("push", s.url, ranks_ok)
        assert r.returncode == 0, r.stdout + r.stderr
        st, sg = post(s.port, {"action": "checksum"})  # SGLang's own answer
        assert st == 200 and len(sg["ranks"]) == 4, sg
        assert [x["parallelism_info"][0]["pp_rank"] for x in sg["ranks"]] == [0, 0, 1, 1]
        # what an engine that loaded the checkpoint answers is what `expect` predicted
        assert sg["ranks"] == e["ranks"]
        r = run("push", s.url, exp)
        assert r.returncode == 0, r.stdout + r.stderr
    # corrupt stage 1, tp rank 1 = global rank 3
    def bad(t):
        a = t[W13].copy()
        a[1, 3, 5] += 1.0
        t[W13] = a
    mutate(d, 3, bad)
    out = verify_fails(run, mans["fast"], d)
    assert f"model.layers.3.mlp.experts.9.gate_proj.weight: mismatch [{W13} on rank 3]" in out, out
    with Server(ws_bin, d) as s:
        r = run("push", s.url, ranks_ok)  # the per-rank digests of the good dump
        assert r.returncode == 1, r.stdout + r.stderr
        assert f"{W13}: mismatch [{W13} on rank 3]" in r.stdout, r.stdout
        r = run("push", s.url, mans["sha256"])
        assert r.returncode == 1
        assert "model.layers.3.mlp.experts.9.gate_proj.weight: mismatch" in r.stdout, r.stdout
        r = run("push", s.url, exp)  # SGLang's answer against `expect`'s prediction
        assert r.returncode == 1, r.stdout + r.stderr
        assert f": mismatch [{W13} on rank 3]" in r.stdout, r.stdout
        assert "expert 9" in r.stdout or "experts.9.gate_proj.weight rows 0..32 at local rows 64..96" in r.stdout
        assert r.stdout.count(": mismatch") == 1, r.stdout
