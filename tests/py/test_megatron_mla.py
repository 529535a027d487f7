"""DeepSeek-V2 / V3 (multi-head latent attention + MoE) under Megatron-core (issue 13).

What each Megatron rank holds is re-implemented here, element by element, from Megatron-LM's
source and the converters' name maps (docs/layouts.md cites them), not from weightsum's C code:

- megatron/core/models/gpt/gpt_layer_specs.py (TE spec, multi_latent_attention): input_layernorm
  is a TENorm of its own; MLASelfAttention's linear_q_down_proj and linear_kv_down_proj are
  TELinear(parallel_mode="duplicated"), i.e. whole on every rank; with qk_layernorm the up
  projections are TELayerNormColumnParallelLinear, so q_a_layernorm / kv_a_layernorm live in
  them as layer_norm_weight; linear_proj is row-parallel; a dense layer's MLP is
  linear_fc1 (its layer_norm_weight the post-attention norm) / linear_fc2, an MoE layer has
  pre_mlp_layernorm, router, experts and shared_experts.
- megatron/core/transformer/multi_latent_attention.py (MLASelfAttention.__init__):
  linear_q_up_proj [nh*(nope+rope), q_lora] and linear_kv_up_proj [nh*(nope+v), kv_lora] are
  column-parallel (gather_output=False: each rank nh/tp heads, head-major rows), linear_q_proj
  [nh*(nope+rope), H] when q_lora_rank is None, linear_kv_down_proj [kv_lora+rope, H].
- Megatron-Bridge models/deepseek/common.py and slime megatron_to_hf/deepseekv3.py: which HF
  tensor each of those is (q_a_proj, q_b_proj, q_a_layernorm, q_proj, kv_a_proj_with_mqa,
  kv_b_proj, kv_a_layernorm, o_proj, input_layernorm, pre_mlp_layernorm /
  linear_fc1.layer_norm_weight <- post_attention_layernorm, router.expert_bias <-
  e_score_correction_bias), experts' linear_fc1 = cat(gate, up).
- Ranks "tp-cp-ep-dp-pp" with expert tp = tp: a stage has tp * ep ranks, global rank
  s*tp*ep + d*tp + t, ep rank d holds experts [d*E/ep, (d+1)*E/ep) named from 0
  (local_expert_indices_offset); stage s holds layers [s*L/pp, (s+1)*L/pp) named from 0.
"""
import itertools
import os

import numpy as np
import pytest
from safetensors.numpy import load_file

from rank_files import make_model, mutate, rank_file

H = 64


def ds(kind, q_lora, **extra):
    c = {"model_type": kind, "hidden_size": H, "intermediate_size": 96, "num_hidden_layers": 4,
         "num_attention_heads": 8, "num_key_value_heads": 8, "vocab_size": 1000,
         "q_lora_rank": q_lora, "kv_lora_rank": 16, "qk_nope_head_dim": 8, "qk_rope_head_dim": 4,
         "v_head_dim": 8, "moe_intermediate_size": 16, "first_k_dense_replace": 1,
         "n_shared_experts": 1, "n_routed_experts": 8}
    c.update(extra)
    return c


CONFIGS = {
    # DeepSeek-V3: q_lora_rank 1536 (q_a / q_b), kv_lora_rank 512, 3 dense layers of 61,
    # 256 experts, 1 shared, router bias
    "deepseek-v3": ds("deepseek_v3", 24),
    # DeepSeek-V2-Lite: q_lora_rank null (q_proj), 1 dense layer of 27, 64 experts, 2 shared
    "deepseek-v2-lite": ds("deepseek_v2", None, n_shared_experts=2),
}


def is_moe(cfg, i):
    return i >= cfg["first_k_dense_replace"] and i % cfg.get("moe_layer_freq", 1) == 0


def vocab_rows(w, V, per, t):
    out = np.zeros((per,) + w.shape[1:], w.dtype)
    n = max(0, min(V - t * per, per))
    out[:n] = w[t * per:t * per + n]
    return out


def rows(x, t, tp):
    n = x.shape[0] // tp
    return x[t * n:(t + 1) * n]


def cols(x, t, tp):
    n = x.shape[1] // tp
    return np.ascontiguousarray(x[:, t * n:(t + 1) * n])


def megatron_ranks(cfg, w, tp, ep, pp):
    L, V, E = cfg["num_hidden_layers"], cfg["vocab_size"], cfg["n_routed_experts"]
    Vp = -(-V // (128 * tp)) * 128 * tp  # _vocab_size_with_padding, divisor 128
    per_stage = L // pp
    ranks = []
    for s in range(pp):
        for d in range(ep):
            for t in range(tp):
                r = {}
                if s == 0:
                    r["embedding.word_embeddings.weight"] = vocab_rows(
                        w["model.embed_tokens.weight"], V, Vp // tp, t)
                for j in range(per_stage):
                    i = s * per_stage + j
                    hf, mg = f"model.layers.{i}.", f"decoder.layers.{j}."
                    a, sa = hf + "self_attn.", mg + "self_attention."
                    r[mg + "input_layernorm.weight"] = w[hf + "input_layernorm.weight"]
                    if cfg["q_lora_rank"]:
                        r[sa + "linear_q_down_proj.weight"] = w[a + "q_a_proj.weight"]
                        r[sa + "linear_q_up_proj.weight"] = rows(w[a + "q_b_proj.weight"], t, tp)
                        r[sa + "linear_q_up_proj.layer_norm_weight"] = w[a + "q_a_layernorm.weight"]
                    else:
                        r[sa + "linear_q_proj.weight"] = rows(w[a + "q_proj.weight"], t, tp)
                    r[sa + "linear_kv_down_proj.weight"] = w[a + "kv_a_proj_with_mqa.weight"]
                    r[sa + "linear_kv_up_proj.weight"] = rows(w[a + "kv_b_proj.weight"], t, tp)
                    r[sa + "linear_kv_up_proj.layer_norm_weight"] = w[a + "kv_a_layernorm.weight"]
                    r[sa + "linear_proj.weight"] = cols(w[a + "o_proj.weight"], t, tp)
                    post = w[hf + "post_attention_layernorm.weight"]
                    if not is_moe(cfg, i):
                        r[mg + "mlp.linear_fc1.weight"] = np.concatenate(
                            [rows(w[hf + "mlp.gate_proj.weight"], t, tp),
                             rows(w[hf + "mlp.up_proj.weight"], t, tp)])
                        r[mg + "mlp.linear_fc1.layer_norm_weight"] = post
                        r[mg + "mlp.linear_fc2.weight"] = cols(w[hf + "mlp.down_proj.weight"], t, tp)
                        continue
                    r[mg + "pre_mlp_layernorm.weight"] = post
                    r[mg + "mlp.router.weight"] = w[hf + "mlp.gate.weight"]
                    if cfg["model_type"] == "deepseek_v3":
                        r[mg + "mlp.router.expert_bias"] = w[hf + "mlp.gate.e_score_correction_bias"]
                    n = E // ep
                    for k in range(n):
                        ex = hf + f"mlp.experts.{d * n + k}."
                        r[mg + f"mlp.experts.linear_fc1.weight{k}"] = np.concatenate(
                            [rows(w[ex + "gate_proj.weight"], t, tp),
                             rows(w[ex + "up_proj.weight"], t, tp)])
                        r[mg + f"mlp.experts.linear_fc2.weight{k}"] = cols(w[ex + "down_proj.weight"], t, tp)
                    sh = hf + "mlp.shared_experts."
                    r[mg + "mlp.shared_experts.linear_fc1.weight"] = np.concatenate(
                        [rows(w[sh + "gate_proj.weight"], t, tp), rows(w[sh + "up_proj.weight"], t, tp)])
                    r[mg + "mlp.shared_experts.linear_fc2.weight"] = cols(w[sh + "down_proj.weight"], t, tp)
                if s == pp - 1:
                    r["decoder.final_layernorm.weight"] = w["model.norm.weight"]
                    r["output_layer.weight"] = vocab_rows(w["lm_head.weight"], V, Vp // tp, t)
                ranks.append(r)
    return ranks


def shard(run, ckpt, out, tp, ep=1, pp=1):
    return run("shard", ckpt, "--layout", "megatron", "--tp", tp, "--ep", ep, "--pp", pp, "-o", out)


COMBOS = [(1, 1, 1), (2, 1, 1), (4, 1, 1), (2, 2, 1), (2, 4, 1), (4, 2, 1), (1, 2, 2), (2, 2, 2),
          (4, 2, 2), (2, 1, 4), (1, 8, 4)]


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_megatron_mla_element_by_element(tmp_path, run, name):
    cfg = CONFIGS[name]
    ckpt, mans = make_model(run, tmp_path, cfg)
    w = load_file(ckpt)
    for tp, ep, pp in COMBOS:
        out = tmp_path / f"m-{tp}-{ep}-{pp}"
        r = shard(run, ckpt, out, tp, ep, pp)
        assert r.returncode == 0, (tp, ep, pp, r.stderr)
        want = megatron_ranks(cfg, w, tp, ep, pp)
        assert len(want) == tp * ep * pp
        assert not os.path.exists(rank_file(out, len(want))), "more rank files than ranks"
        for g, exp in enumerate(want):
            got = load_file(rank_file(out, g))
            assert sorted(got) == sorted(exp), (tp, ep, pp, g, sorted(set(got) ^ set(exp)))
            for k in exp:
                assert got[k].shape == exp[k].shape, (k, g, got[k].shape, exp[k].shape)
                assert got[k].tobytes() == exp[k].tobytes(), (tp, ep, pp, g, k)
        for algo, man in mans.items():
            v = run("verify", man, out)
            assert v.returncode == 0 and v.stdout.endswith("-> OK\n"), (algo, v.stdout, v.stderr)


def test_refusals(tmp_path, run):
    ckpt, _ = make_model(run, tmp_path, CONFIGS["deepseek-v3"])
    for (tp, ep, pp), why in (((3, 1, 1), "num_attention_heads 8 is not divisible by tp"),
                              ((2, 3, 1), "num_experts 8 is not divisible by ep"),
                              ((1, 1, 3), "not divisible by pp")):
        r = shard(run, ckpt, tmp_path / "x", tp, ep, pp)
        assert r.returncode == 2 and why in r.stderr, r.stderr
        assert len(r.stderr.strip().splitlines()) == 1
    r = run("shard", ckpt, "--layout", "transformers", "--tp", 2, "-o", tmp_path / "y")
    assert r.returncode == 2 and "not under transformers' tp_plan" in r.stderr, r.stderr


# ---- mutations: each caught and named (HF tensor, engine tensor, rank, rows) ------------------

def verify_fails(run, man, d, ckpt=None):
    r = run("verify", man, d, *(["--locate", ckpt] if ckpt else []))
    assert r.returncode == 1, r.stdout + r.stderr
    return r.stdout


@pytest.fixture(params=["sha256", "fast"])
def v3(tmp_path, run, request):
    """DeepSeek-V3-shaped at tp 2, ep 2, pp 2: 8 ranks, stage 1 = ranks 4..7 (layers 2, 3
    named 0, 1), ep rank d of a stage holds experts 4d..4d+3."""
    ckpt, mans = make_model(run, tmp_path, CONFIGS["deepseek-v3"])
    assert shard(run, ckpt, tmp_path / "d", 2, 2, 2).returncode == 0
    return tmp_path / "d", ckpt, mans[request.param]


def test_wrong_kv_up_proj_tp_slice(v3, run):
    """Rank 5 (stage 1, ep 0, tp 1) loaded tp rank 0's heads of kv_b_proj into linear_kv_up_proj:
    HF rows 64..128 expected (heads 4..7, 16 rows each), rows 0..64 held."""
    d, ckpt, man = v3
    w = load_file(ckpt)
    hf = "model.layers.3.self_attn.kv_b_proj.weight"
    loc = "decoder.layers.1.self_attention.linear_kv_up_proj.weight"
    mutate(d, 5, lambda t: t.__setitem__(loc, w[hf][:64].copy()))
    out = verify_fails(run, man, d, ckpt)
    assert f"{hf}: mismatch [{loc} on rank 5] rows 64.." in out, out
    assert f"element [0, 0] of {loc} on rank 5" in out, out
    # rank 7 (ep rank 1, tp 1) holds the same rows, right, and differs from rank 5's copy
    assert (f"{hf}: replica_mismatch [{loc} on rank 7] rows 64..128: replica 1 differs from "
            f"replica 0 ({loc} on rank 5)") in out, out
    assert "1 mismatch, 1 replica_mismatch -> FAILED" in out, out


def test_stale_replicated_kv_layernorm_on_one_rank(v3, run):
    """kv_a_layernorm is fused into linear_kv_up_proj and whole on every rank: rank 6's copy
    kept an old value, a replica_mismatch naming that copy and the element."""
    d, ckpt, man = v3
    loc = "decoder.layers.0.self_attention.linear_kv_up_proj.layer_norm_weight"
    def stale(t):
        x = t[loc].copy()
        x[9] += 1.0
        t[loc] = x
    mutate(d, 6, stale)
    out = verify_fails(run, man, d)
    hf = "model.layers.2.self_attn.kv_a_layernorm.weight"
    # rank 6 = stage 1, ep rank 1, tp 0: copy d*tp + t = 2 of the stage's, against rank 4's
    assert (f"{hf}: replica_mismatch [{loc} on rank 6] rows 9..10: replica 2 differs from "
            f"replica 0 ({loc} on rank 4)") in out, out
    assert f"(element [9] of {loc})" in out, out
    assert ": mismatch" not in out


def test_swapped_q_down_and_kv_down(tmp_path, run):
    """A converter that swapped q_a_proj and kv_a_proj_with_mqa (q_lora_rank = kv_lora_rank +
    rope so the shapes agree and only the values tell): on every rank both are named; on one
    rank only, that rank's copies are replica mismatches."""
    cfg = dict(CONFIGS["deepseek-v3"], q_lora_rank=20)
    ckpt, mans = make_model(run, tmp_path, cfg)
    d = tmp_path / "d"
    assert shard(run, ckpt, d, 2, 1, 2).returncode == 0
    q = "decoder.layers.1.self_attention.linear_q_down_proj.weight"
    kv = "decoder.layers.1.self_attention.linear_kv_down_proj.weight"
    def swap(t):
        t[q], t[kv] = t[kv], t[q]
    mutate(d, 3, swap)  # stage 1, tp rank 1: layer 3
    out = verify_fails(run, mans["fast"], d)
    for hf, loc in (("q_a_proj", q), ("kv_a_proj_with_mqa", kv)):
        assert f"model.layers.3.self_attn.{hf}.weight: replica_mismatch [{loc} on rank 3]" in out, out
    mutate(d, 2, swap)  # now both ranks of stage 1
    out = verify_fails(run, mans["sha256"], d)
    for hf, loc in (("q_a_proj", q), ("kv_a_proj_with_mqa", kv)):
        assert f"model.layers.3.self_attn.{hf}.weight: mismatch [{loc} on rank 2]" in out, out


def test_expert_in_wrong_ep_slot(v3, run):
    """Rank 2 (stage 0, ep rank 1, tp 0) holds experts 4..7; its local experts 0 and 2
    (experts 4 and 6) were written into each other's slots."""
    d, ckpt, man = v3
    def swap(t):
        for part in ("linear_fc1", "linear_fc2"):
            a = f"decoder.layers.1.mlp.experts.{part}.weight0"
            b = f"decoder.layers.1.mlp.experts.{part}.weight2"
            t[a], t[b] = t[b], t[a]
    mutate(d, 2, swap)
    out = verify_fails(run, man, d, ckpt)
    for e, k in ((4, 0), (6, 2)):
        for part, loc in (("gate_proj", "linear_fc1"), ("up_proj", "linear_fc1"),
                          ("down_proj", "linear_fc2")):
            assert (f"model.layers.1.mlp.experts.{e}.{part}.weight: mismatch "
                    f"[decoder.layers.1.mlp.experts.{loc}.weight{k} on rank 2]") in out, out
    assert "6 mismatch -> FAILED" in out, out


def test_missing_stage_layer(v3, run):
    """A stage's rank file without one of its layers (stage 1's local layer 1 = global layer 3)
    is named by the global HF layer and the Megatron local name."""
    d, ckpt, man = v3
    for g in range(4, 8):
        mutate(d, g, lambda t: [t.pop(k) for k in list(t) if k.startswith("decoder.layers.1.")])
    out = verify_fails(run, man, d)
    assert ("model.layers.3.self_attn.kv_b_proj.weight: missing "
            "[decoder.layers.1.self_attention.linear_kv_up_proj.weight on rank 4]") in out, out
    assert "model.layers.3.mlp.experts.7.down_proj.weight: missing" in out, out
    assert "model.layers.2." not in out, out  # stage 1's local layer 0 is whole


def test_shape_message_names_every_size(v3, run):
    """A local tensor of the wrong shape names the layout by all its sizes (it said tp=8, the
    rank count, for this tp 2, ep 2, pp 2 dump)."""
    d, ckpt, man = v3
    loc = "decoder.layers.0.self_attention.linear_kv_up_proj.weight"
    mutate(d, 1, lambda t: t.__setitem__(loc, t[loc][:-16].copy()))
    r = run("verify", man, d)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "expected for megatron tp=2 ep=2 pp=2, " in r.stdout, r.stdout
    assert "tp=8" not in r.stdout, r.stdout


# ---- the trainer side: Megatron-native HF manifest from MLA shards, no TP gather --------------

def _trainer_rank(rank, world, init, d, cfg, out, flip):
    """One Megatron tp rank: its shards as `weightsum shard` wrote them into
    weightsum.torch.megatron_manifest over gloo, as they are and then with one element of
    flip = (rank, tensor, flat index) changed."""
    import json as _json
    import sys as _sys
    import torch.distributed as dist
    from safetensors.torch import load_file as load_torch
    _sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(
        os.path.abspath(__file__)))), "python"))
    import weightsum.torch as wt
    dist.init_process_group("gloo", init_method="file://" + init, rank=rank, world_size=world)
    shards = load_torch(rank_file(d, rank))
    res = {}
    for case in ("clean", "flip"):
        if case == "flip" and flip[0] == rank:
            x = shards[flip[1]].clone()
            x.view(-1)[flip[2]] += 1.0
            shards[flip[1]] = x
        mm = wt.megatron_manifest("megatron", cfg, rank, world, shards.items())
        res[case] = {"tensors": mm.to_dict()["tensors"], "moved": mm.bytes_moved}
    with open(os.path.join(out, f"rank{rank}.json"), "w") as f:
        _json.dump(res, f)
    dist.destroy_process_group()


@pytest.mark.skipif("asan" in os.environ.get("WEIGHTSUM_BIN", ""),
                    reason="loads the plain library either way: covered by the plain run")
def test_trainer_manifest_from_megatron_mla_shards(tmp_path, run):
    """weightsum.torch.megatron_manifest on DeepSeek-V3-shaped Megatron shards (tp 2, the
    trainer's own names: linear_q_down_proj, linear_kv_up_proj with its fused norm, grouped
    experts): every rank gets the HF-level fast manifest the checkpoint has, without gathering
    a tensor; with one element of rank 1's linear_q_up_proj changed, exactly q_b_proj differs."""
    pytest.importorskip("torch")
    import json
    import torch.multiprocessing as mp
    cfg = CONFIGS["deepseek-v3"]
    ckpt, mans = make_model(run, tmp_path, cfg)
    d = tmp_path / "m"
    assert shard(run, ckpt, d, 2).returncode == 0
    want = {k: v["fast"] for k, v in json.load(open(mans["fast"]))["tensors"].items()}
    q_up = "decoder.layers.1.self_attention.linear_q_up_proj.weight"
    out = tmp_path / "out"
    out.mkdir()
    mp.spawn(_trainer_rank, args=(2, str(tmp_path / "init"), str(d), cfg, str(out),
                                  (1, q_up, 5)), nprocs=2, join=True)
    for r in range(2):
        got = json.load(open(out / f"rank{r}.json"))
        for case, expect in (("clean", []), ("flip", ["model.layers.1.self_attn.q_b_proj.weight"])):
            digests = {k: v["fast"] for k, v in got[case]["tensors"].items()}
            assert set(digests) == set(want)
            assert all(want.values())
            assert sorted(k for k in want if digests[k] != want[k]) == expect, (r, case)
            assert 0 < got[case]["moved"] < 64 * 1024
