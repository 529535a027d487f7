"""DeepSeek-V2 / V3 multi-head latent attention under SGLang and vLLM (issue 13).

HF (transformers DeepseekV3Attention): q_a_proj [q_lora, H], q_a_layernorm [q_lora], q_b_proj
[nh*(nope+rope), q_lora] (or q_proj [nh*(nope+rope), H] when q_lora_rank is null),
kv_a_proj_with_mqa [kv_lora+rope, H], kv_a_layernorm [kv_lora], kv_b_proj [nh*(nope+v), kv_lora],
o_proj [H, nh*v]. The engines' loaders are re-implemented here from their sources (SGLang
deepseek_v2.py DeepseekV2AttentionMLA and deepseek_weight_loader.py; vLLM deepseek_v2.py), not
from weightsum's C code: SGLang fuses [q_a_proj ; kv_a_proj_with_mqa] into the replicated
fused_qkv_a_proj_with_mqa (vLLM: fused_qkv_a_proj), q_b_proj / q_proj / kv_b_proj are split by
heads (column-parallel), o_proj by columns (row-parallel), the layernorms replicated.
`weightsum shard` must write exactly that, verify must pass with both digests, and each planted
bug is caught and named."""
import itertools
import json
import os

import numpy as np
import pytest
from safetensors.numpy import load_file

from rank_files import make_model, mutate, rank_file

H = 64


def ds_config(kind, q_lora, layers=3, experts=8, **extra):
    c = {"model_type": kind, "hidden_size": H, "intermediate_size": 96,
         "num_hidden_layers": layers, "num_attention_heads": 8, "num_key_value_heads": 8,
         "vocab_size": 1000, "q_lora_rank": q_lora, "kv_lora_rank": 16,
         "qk_nope_head_dim": 8, "qk_rope_head_dim": 4, "v_head_dim": 8,
         "moe_intermediate_size": 16, "first_k_dense_replace": 1, "n_shared_experts": 1}
    if experts:
        c["n_routed_experts"] = experts
    c.update(extra)
    return c


CONFIGS = {
    # DeepSeek-V3: q_lora_rank 1536, kv_lora_rank 512, 3 dense layers of 61, 256 experts,
    # one shared, router bias (noaux_tc)
    "deepseek-v3": ds_config("deepseek_v3", 32),
    # DeepSeek-V2-Lite: q_lora_rank null (q_proj), 2 shared experts, no router bias
    "deepseek-v2-lite": ds_config("deepseek_v2", None, n_shared_experts=2),
    # a dense DeepSeek-V2 (n_routed_experts None), MoE every other layer would need experts
    "deepseek-v2-dense": ds_config("deepseek_v2", 24, layers=2, experts=0),
}


def is_moe(cfg, i):
    return bool(cfg.get("n_routed_experts")) and i >= cfg["first_k_dense_replace"] and \
        i % cfg.get("moe_layer_freq", 1) == 0


def vocab_shard(w, V, per, r):
    out = np.zeros((per,) + w.shape[1:], w.dtype)
    n = max(0, min(V - r * per, per))
    out[:n] = w[r * per:r * per + n]
    return out


def engine_ranks(family, cfg, w, tp):
    L, V, nh = cfg["num_hidden_layers"], cfg["vocab_size"], cfg["num_attention_heads"]
    nope, rope, vd = cfg["qk_nope_head_dim"], cfg["qk_rope_head_dim"], cfg["v_head_dim"]
    per = -(-V // 64) * 64 // tp
    hq = nh // tp
    ranks = []
    for t in range(tp):
        d = {"model.embed_tokens.weight": vocab_shard(w["model.embed_tokens.weight"], V, per, t),
             "model.norm.weight": w["model.norm.weight"],
             "lm_head.weight": vocab_shard(w["lm_head.weight"], V, per, t)}
        for i in range(L):
            p = f"model.layers.{i}."
            a = p + "self_attn."
            if cfg["q_lora_rank"]:
                fused = "fused_qkv_a_proj_with_mqa" if family == "sglang" else "fused_qkv_a_proj"
                # SGLang: torch.cat([q_a_proj, kv_a_proj_with_mqa], dim=0) into a ReplicatedLinear;
                # vLLM: MergedColumnParallelLinear([q_lora, kv_lora + rope], disable_tp=True)
                d[a + fused + ".weight"] = np.concatenate(
                    [w[a + "q_a_proj.weight"], w[a + "kv_a_proj_with_mqa.weight"]])
                d[a + "q_a_layernorm.weight"] = w[a + "q_a_layernorm.weight"]
                rows = hq * (nope + rope)
                d[a + "q_b_proj.weight"] = w[a + "q_b_proj.weight"][t * rows:(t + 1) * rows]
            else:
                rows = hq * (nope + rope)
                d[a + "q_proj.weight"] = w[a + "q_proj.weight"][t * rows:(t + 1) * rows]
                d[a + "kv_a_proj_with_mqa.weight"] = w[a + "kv_a_proj_with_mqa.weight"]
            d[a + "kv_a_layernorm.weight"] = w[a + "kv_a_layernorm.weight"]
            rows = hq * (nope + vd)
            d[a + "kv_b_proj.weight"] = w[a + "kv_b_proj.weight"][t * rows:(t + 1) * rows]
            d[a + "o_proj.weight"] = np.ascontiguousarray(
                w[a + "o_proj.weight"][:, t * hq * vd:(t + 1) * hq * vd])
            if is_moe(cfg, i):
                E, mi = cfg["n_routed_experts"], cfg["moe_intermediate_size"]
                r = mi // tp  # ep 1: experts tensor-parallel over tp
                ex = p + "mlp.experts."
                d[ex + "w13_weight"] = np.stack([np.concatenate([
                    w[ex + f"{e}.gate_proj.weight"][t * r:(t + 1) * r],
                    w[ex + f"{e}.up_proj.weight"][t * r:(t + 1) * r]]) for e in range(E)])
                d[ex + "w2_weight"] = np.stack(
                    [w[ex + f"{e}.down_proj.weight"][:, t * r:(t + 1) * r] for e in range(E)])
                d[p + "mlp.gate.weight"] = w[p + "mlp.gate.weight"]
                if cfg["model_type"] == "deepseek_v3":
                    d[p + "mlp.gate.e_score_correction_bias"] = w[p + "mlp.gate.e_score_correction_bias"]
                sp = p + "mlp.shared_experts."
                sr = cfg["n_shared_experts"] * mi // tp
                d[sp + "gate_up_proj.weight"] = np.concatenate([
                    w[sp + "gate_proj.weight"][t * sr:(t + 1) * sr],
                    w[sp + "up_proj.weight"][t * sr:(t + 1) * sr]])
                d[sp + "down_proj.weight"] = np.ascontiguousarray(
                    w[sp + "down_proj.weight"][:, t * sr:(t + 1) * sr])
            else:
                ir = cfg["intermediate_size"] // tp
                d[p + "mlp.gate_up_proj.weight"] = np.concatenate([
                    w[p + "mlp.gate_proj.weight"][t * ir:(t + 1) * ir],
                    w[p + "mlp.up_proj.weight"][t * ir:(t + 1) * ir]])
                d[p + "mlp.down_proj.weight"] = np.ascontiguousarray(
                    w[p + "mlp.down_proj.weight"][:, t * ir:(t + 1) * ir])
            for n in ("input_layernorm", "post_attention_layernorm"):
                d[p + n + ".weight"] = w[p + n + ".weight"]
        ranks.append(d)
    return ranks


def hf_names(cfg):
    names = set()
    for i in range(cfg["num_hidden_layers"]):
        a = f"model.layers.{i}.self_attn."
        if cfg["q_lora_rank"]:
            names |= {a + "q_a_proj.weight", a + "q_a_layernorm.weight", a + "q_b_proj.weight"}
        else:
            names.add(a + "q_proj.weight")
        names |= {a + "kv_a_proj_with_mqa.weight", a + "kv_a_layernorm.weight",
                  a + "kv_b_proj.weight", a + "o_proj.weight"}
    return names


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_mla_loaders_element_by_element(tmp_path, run, name):
    cfg = CONFIGS[name]
    ckpt, mans = make_model(run, tmp_path, cfg)
    w = load_file(ckpt)
    nope, rope, vd, nh = 8, 4, 8, 8
    a = "model.layers.0.self_attn."
    assert hf_names(cfg) <= set(w)
    assert not any(".k_proj." in k or ".v_proj." in k for k in w)
    assert w[a + "kv_b_proj.weight"].shape == (nh * (nope + vd), 16)
    assert w[a + "o_proj.weight"].shape == (H, nh * vd)
    assert w[a + "kv_a_proj_with_mqa.weight"].shape == (16 + rope, H)
    if cfg["q_lora_rank"]:
        assert w[a + "q_b_proj.weight"].shape == (nh * (nope + rope), cfg["q_lora_rank"])
        assert a + "q_proj.weight" not in w
    else:
        assert w[a + "q_proj.weight"].shape == (nh * (nope + rope), H)
    assert ("model.layers.1.mlp.gate.e_score_correction_bias" in w) == \
        (cfg["model_type"] == "deepseek_v3")
    for family, tp in itertools.product(["sglang", "vllm"], [1, 2, 4]):
        out = tmp_path / f"{family}-{tp}"
        r = run("shard", ckpt, "--layout", family, "--tp", tp, "-o", out)
        assert r.returncode == 0, r.stderr
        want = engine_ranks(family, cfg, w, tp)
        assert not os.path.exists(rank_file(out, tp))
        for t, exp in enumerate(want):
            got = load_file(rank_file(out, t))
            assert sorted(got) == sorted(exp), (family, tp, t, sorted(set(got) ^ set(exp)))
            for k in exp:
                assert got[k].shape == exp[k].shape, (k, got[k].shape, exp[k].shape)
                assert got[k].tobytes() == exp[k].tobytes(), (family, tp, t, k)
        for algo, man in mans.items():
            v = run("verify", man, out)
            assert v.returncode == 0 and v.stdout.endswith("-> OK\n"), (algo, v.stdout, v.stderr)


@pytest.fixture(params=["sha256", "fast"])
def v3(tmp_path, run, request):
    """DeepSeek-V3-shaped, SGLang at tp 4: each rank holds 2 of the 8 heads."""
    ckpt, mans = make_model(run, tmp_path, CONFIGS["deepseek-v3"])
    assert run("shard", ckpt, "--layout", "sglang", "--tp", 4, "-o", tmp_path / "d").returncode == 0
    return tmp_path / "d", ckpt, mans[request.param]


A1 = "model.layers.1.self_attn."


def verify_fails(run, man, d, *more):
    r = run("verify", man, d, *more)
    assert r.returncode == 1, r.stdout + r.stderr
    return r.stdout


def test_flipped_element_in_a_kv_b_proj_shard(v3, run):
    d, ckpt, man = v3
    def flip(t):
        k = A1 + "kv_b_proj.weight"
        x = t[k].copy()
        x[5, 3] = -x[5, 3] + 1.0
        t[k] = x
    mutate(d, 2, flip)
    out = verify_fails(run, man, d, "--locate", ckpt)
    assert out.startswith(f"{A1}kv_b_proj.weight: mismatch [{A1}kv_b_proj.weight on rank 2]"), out
    # rank 2 holds heads 4, 5: rows 32.. of the HF tensor (16 rows per head pair)
    assert f"element [5, 3] of {A1}kv_b_proj.weight on rank 2" in out, out
    assert "1 mismatch -> FAILED" in out


def test_stale_replicated_kv_a_proj_copy(v3, run):
    """The fused [q_a ; kv_a] projection is replicated: rank 3's copy kept an old kv_a row."""
    d, ckpt, man = v3
    fused = A1 + "fused_qkv_a_proj_with_mqa.weight"
    def stale(t):
        x = t[fused].copy()
        x[32 + 7, 11] += 1.0  # kv_a_proj_with_mqa row 7 (after the 32 q_lora rows)
        t[fused] = x
    mutate(d, 3, stale)
    out = verify_fails(run, man, d)
    assert f"{A1}kv_a_proj_with_mqa.weight: replica_mismatch [{fused} on rank 3]" in out, out
    assert f"row 7, column 11 of {A1}kv_a_proj_with_mqa.weight (element [39, 11] of {fused})" in out
    assert "q_a_proj" not in out and ": mismatch" not in out


def test_swapped_a_projection_segments(v3, run):
    """A loader that concatenated [kv_a ; q_a] (the wrong order) on every rank."""
    d, ckpt, man = v3
    w = load_file(ckpt)
    fused = A1 + "fused_qkv_a_proj_with_mqa.weight"
    for r in range(4):
        mutate(d, r, lambda t: t.__setitem__(fused, np.concatenate(
            [w[A1 + "kv_a_proj_with_mqa.weight"], w[A1 + "q_a_proj.weight"]])))
    out = verify_fails(run, man, d)
    for n in ("q_a_proj", "kv_a_proj_with_mqa"):
        assert f"{A1}{n}.weight: mismatch [{fused} on rank 0]" in out, out


def test_stale_layernorm_and_o_proj_columns(v3, run):
    d, ckpt, man = v3
    def bad(t):
        x = t[A1 + "q_a_layernorm.weight"].copy()
        x[3] += 1.0
        t[A1 + "q_a_layernorm.weight"] = x
        y = t[A1 + "o_proj.weight"].copy()
        y[:, 0] = 0  # rank 1's first v column (HF column 16)
        t[A1 + "o_proj.weight"] = y
    mutate(d, 1, bad)
    out = verify_fails(run, man, d, "--locate", ckpt)
    assert f"{A1}q_a_layernorm.weight: replica_mismatch [{A1}q_a_layernorm.weight on rank 1]" in out, out
    assert f"{A1}o_proj.weight: mismatch" in out, out
    assert f"element [0, 0] of {A1}o_proj.weight on rank 1" in out, out  # HF column 16


def test_sglang_attn_mha_alias(v3, run):
    """After its first forward SGLang's attention module holds kv_b_proj too
    (attn_mha.kv_b_proj): a state_dict() dump keeps that (smaller) key; it is the same tensor."""
    d, ckpt, man = v3
    k = A1 + "kv_b_proj.weight"
    alias = A1 + "attn_mha.kv_b_proj.weight"
    mutate(d, 0, lambda t: t.__setitem__(alias, t.pop(k)))
    assert run("verify", man, d).returncode == 0
    def both(t):  # rank 1 saved both names, and they differ
        y = t[k].copy()
        y[0, 0] += 1
        t[alias] = y
    mutate(d, 1, both)
    out = verify_fails(run, man, d)
    assert (f"{k}: replica_mismatch [{alias} on rank 1]: '{alias}' and '{k}' are one tied "
            "tensor but differ") in out, out


def test_mla_refusals(tmp_path, run):
    cfg = CONFIGS["deepseek-v3"]
    ckpt, _ = make_model(run, tmp_path, cfg)
    # megatron lays MLA out (test_megatron_mla.py); transformers' DeepSeek tp_plan is not modelled
    for family, tp, why in (("transformers", 2, "not under transformers' tp_plan"),
                            ("sglang", 3, "num_attention_heads 8 is not divisible by tp")):
        r = run("shard", ckpt, "--layout", family, "--tp", tp, "-o", tmp_path / "x")
        assert r.returncode == 2 and why in r.stderr, (family, r.stderr)
        assert len(r.stderr.strip().splitlines()) == 1
    bad = dict(cfg, kv_lora_rank=0)
    (tmp_path / "bad.json").write_text(json.dumps(bad))
    r = run("shard", ckpt, "--layout", "sglang", "--tp", 2, "--config", tmp_path / "bad.json",
            "-o", tmp_path / "y")
    assert r.returncode == 2 and "kv_lora_rank" in r.stderr, r.stderr


def test_mla_with_expert_parallelism_and_pipeline(tmp_path, run):
    """The MoE block and the stages are the families' own: SGLang tp 4 ep 2 pp 2 verifies."""
    cfg = dict(CONFIGS["deepseek-v3"], num_hidden_layers=4)
    ckpt, mans = make_model(run, tmp_path, cfg)
    d = tmp_path / "d"
    r = run("shard", ckpt, "--layout", "sglang", "--tp", 4, "--ep", 2, "--pp", 2, "-o", d)
    assert r.returncode == 0, r.stderr
    got = load_file(rank_file(d, 5))  # stage 1, tp rank 1
    assert "model.layers.2.self_attn.fused_qkv_a_proj_with_mqa.weight" in got
    assert got["model.layers.2.mlp.experts.w13_weight"].shape == (4, 2 * 8, H)
    for man in mans.values():
        assert run("verify", man, d).returncode == 0


# ---- block FP8 (DeepSeek-V3's own format), blocks of 16 so the small shapes split ------------

FP8 = {"quant_method": "fp8", "fmt": "e4m3", "activation_scheme": "dynamic",
       "weight_block_size": [16, 16]}


def test_mla_block_fp8(tmp_path, run):
    """Every MLA projection is quantised with its weight_scale_inv; the fused [q_a ; kv_a] scale
    is the two scales concatenated (SGLang's loader concatenates scales as it does weights; the
    kv_a part's 20 rows end in a partial block), q_b / kv_b scales split by the rank's rows,
    o_proj's by its columns. A stale kv_b_proj scale block is named; tp 4 would put 24 q rows on
    a rank, not whole 16-row blocks, and is refused as the engine refuses it."""
    import torch
    from test_fp8_layouts import make_fp8_model
    cfg = ds_config("deepseek_v3", 32, moe_intermediate_size=32, quantization_config=FP8)
    ckpt, mans = make_fp8_model(run, tmp_path, cfg)
    from safetensors.torch import load_file as load_torch
    w = load_torch(ckpt)
    a = "model.layers.1.self_attn."
    assert tuple(w[a + "kv_a_proj_with_mqa.weight_scale_inv"].shape) == (2, 4)  # ceil(20/16)
    for family, fused in (("sglang", "fused_qkv_a_proj_with_mqa"), ("vllm", "fused_qkv_a_proj")):
        d = tmp_path / family
        r = run("shard", ckpt, "--layout", family, "--tp", 2, "-o", d)
        assert r.returncode == 0, r.stderr
        g = load_torch(rank_file(d, 1))
        s = g[a + fused + ".weight_scale_inv"]
        want = torch.cat([w[a + "q_a_proj.weight_scale_inv"], w[a + "kv_a_proj_with_mqa.weight_scale_inv"]])
        assert torch.equal(s, want)
        assert torch.equal(g[a + "kv_b_proj.weight_scale_inv"], w[a + "kv_b_proj.weight_scale_inv"][4:8])
        assert torch.equal(g[a + "q_b_proj.weight_scale_inv"], w[a + "q_b_proj.weight_scale_inv"][3:6])
        assert torch.equal(g[a + "o_proj.weight_scale_inv"], w[a + "o_proj.weight_scale_inv"][:, 2:4])
        for man in mans.values():
            v = run("verify", man, d)
            assert v.returncode == 0, (family, v.stdout, v.stderr)
    d = tmp_path / "sglang"
    def stale(t):
        x = t[a + "kv_b_proj.weight_scale_inv"].clone()
        x[1, 0] *= 1.0001
        t[a + "kv_b_proj.weight_scale_inv"] = x
    from safetensors.torch import save_file as save_torch
    t = load_torch(rank_file(d, 1))
    stale(t)
    save_torch(t, rank_file(d, 1))
    out = verify_fails(run, mans["fast", "bf16"], d, "--locate", ckpt)
    assert f"{a}kv_b_proj.weight_scale_inv: mismatch" in out, out
    assert f"element [1, 0] of {a}kv_b_proj.weight_scale_inv on rank 1" in out, out
    assert out.count(": mismatch") == 1
    r = run("shard", ckpt, "--layout", "sglang", "--tp", 4, "-o", tmp_path / "x")
    assert r.returncode == 2 and "q rows per rank (q_b_proj / q_proj) = 24" in r.stderr, r.stderr
