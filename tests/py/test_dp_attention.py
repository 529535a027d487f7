"""SGLang DP attention (issue 13): `--attn-dp-size D` (formerly `--dp-size D
--enable-dp-attention`) with tp_size T.

What SGLang 0.5.23 does, re-implemented here from its source (numpy), not from weightsum's C
code:
- runtime_context.derive_attn_tp_size: attn_tp_size = T // D; derive_attention_ranks: tp rank t
  is attention-TP rank t % (T/D) of attention-DP group t // (T/D).
- the attention projections are built with parallel_group="attn_tp" (Qwen3MoeAttention,
  Qwen2MoeAttention, Glm4MoeAttention, Qwen3Attention: QKVParallelLinear / RowParallelLinear;
  DeepseekV2AttentionMLA: q_b_proj / q_proj / kv_b_proj / o_proj; the fused a-projection and the
  norms are replicated), so every DP group holds the same attention shards;
- the embedding is VocabParallelEmbedding(use_attn_tp_group=is_dp_attention_enabled()) (qwen*,
  glm4_moe; deepseek through get_embedding_tp_kwargs), padded to 64 rows (64 * G when the padded
  vocab does not divide by the G ranks); lm_head is ParallelLMHead(use_attn_tp_group=
  enable_dp_lm_head): over the whole tp group unless --enable-dp-lm-head;
- FusedMoE keeps moe_tp = T // ep over the whole tp group; shared experts and dense MLP layers
  are parallel_group "tp" (deepseek / glm4_moe dense layers "replicated" with
  --moe-dense-tp-size 1, is_dense_ffn_fully_dp);
- weight_checker._placement: parallelism_info dp_rank = the attention-DP rank (the DP
  controller's compute_dp_attention_world_info), dp_size = attn_dp_size.

`weightsum shard` must write exactly what this loader predicts, verify must pass with both
digests, each planted bug is caught and named (tensor, rank, rows), and `expect` predicts a DP
rank's checksum answer."""
import json
import os
import sys

import numpy as np
import pytest
from safetensors.numpy import load_file

from conftest import ROOT
from rank_files import make_model, mutate, rank_file
from sglang_standin import StandIn

sys.path.insert(0, os.path.join(ROOT, "python"))
import weightsum  # noqa: E402

H = 64

QWEN3_MOE = {  # Qwen3-30B-A3B: 32 heads, 4 kv heads, head_dim 128, 128 experts, no dense layer
    "model_type": "qwen3_moe", "hidden_size": H, "intermediate_size": 96,
    "num_hidden_layers": 2, "num_attention_heads": 8, "num_key_value_heads": 2, "head_dim": 8,
    "vocab_size": 1000, "num_experts": 8, "moe_intermediate_size": 32}

DEEPSEEK_V3 = {  # DeepSeek-V3: MLA with q_lora_rank, 3 dense layers, one shared expert
    "model_type": "deepseek_v3", "hidden_size": H, "intermediate_size": 96,
    "num_hidden_layers": 3, "num_attention_heads": 8, "num_key_value_heads": 8,
    "vocab_size": 1000, "q_lora_rank": 32, "kv_lora_rank": 16, "qk_nope_head_dim": 8,
    "qk_rope_head_dim": 4, "v_head_dim": 8, "n_routed_experts": 8, "moe_intermediate_size": 16,
    "first_k_dense_replace": 1, "n_shared_experts": 1}

QWEN3_TIED = {  # a dense Qwen3 with tied embeddings: lm_head is the attention-TP embedding
    "model_type": "qwen3", "hidden_size": H, "intermediate_size": 96, "num_hidden_layers": 2,
    "num_attention_heads": 8, "num_key_value_heads": 2, "head_dim": 8, "vocab_size": 1000,
    "tie_word_embeddings": True}


def pad_vocab(V, G):
    """VocabParallelEmbedding.__init__: pad to 64; when that does not divide by the G ranks,
    padding_size *= G."""
    p = 64
    if -(-V // p) * p % G:
        p *= G
    return -(-V // p) * p


def vocab_shard(w, V, G, r):
    per = pad_vocab(V, G) // G
    out = np.zeros((per,) + w.shape[1:], w.dtype)
    n = max(0, min(V - r * per, per))
    out[:n] = w[r * per:r * per + n]
    return out


def rows(a, r, n):
    return a[r * n:(r + 1) * n]


def cols(a, r, n):
    return np.ascontiguousarray(a[:, r * n:(r + 1) * n])


def moe_layer(cfg, i):
    if cfg["model_type"] == "deepseek_v3":
        return i >= cfg["first_k_dense_replace"]
    if cfg["model_type"] == "qwen3_moe":
        return i not in cfg.get("mlp_only_layers", [])
    return False


def sglang_ranks(cfg, w, tp, dp, ep=1, dp_lm_head=False, moe_dense_tp=None):
    """Every tp rank's tensors under SGLang DP attention (one pipeline stage)."""
    L, V = cfg["num_hidden_layers"], cfg["vocab_size"]
    nh, nkv = cfg["num_attention_heads"], cfg["num_key_value_heads"]
    A = tp // dp                       # derive_attn_tp_size
    mla = cfg["model_type"] == "deepseek_v3"
    tied = cfg.get("tie_word_embeddings", False)
    out = []
    for t in range(tp):
        a = t % A                      # derive_attention_ranks: attention-TP rank
        emb_G, emb_r = (A, a) if dp > 1 else (tp, t)
        head_G, head_r = (A, a) if dp > 1 and dp_lm_head else (tp, t)
        d = {"model.norm.weight": w["model.norm.weight"]}
        emb = vocab_shard(w["model.embed_tokens.weight"], V, emb_G, emb_r)
        d["model.embed_tokens.weight"] = emb
        if not tied:  # tied, one stage: lm_head = model.embed_tokens (Qwen3ForCausalLM)
            d["lm_head.weight"] = vocab_shard(w["lm_head.weight"], V, head_G, head_r)
        for i in range(L):
            p = f"model.layers.{i}."
            s = p + "self_attn."
            if mla:
                nope, rope, vd = (cfg["qk_nope_head_dim"], cfg["qk_rope_head_dim"],
                                  cfg["v_head_dim"])
                hq = nh // A
                d[s + "fused_qkv_a_proj_with_mqa.weight"] = np.concatenate(
                    [w[s + "q_a_proj.weight"], w[s + "kv_a_proj_with_mqa.weight"]])
                d[s + "q_a_layernorm.weight"] = w[s + "q_a_layernorm.weight"]
                d[s + "kv_a_layernorm.weight"] = w[s + "kv_a_layernorm.weight"]
                d[s + "q_b_proj.weight"] = rows(w[s + "q_b_proj.weight"], a, hq * (nope + rope))
                d[s + "kv_b_proj.weight"] = rows(w[s + "kv_b_proj.weight"], a, hq * (nope + vd))
                d[s + "o_proj.weight"] = cols(w[s + "o_proj.weight"], a, hq * vd)
            else:
                hd = cfg["head_dim"]
                qr = nh // A * hd
                # QKVParallelLinear over the attention-TP group: kv heads replicated when
                # attn_tp_size >= kv heads, loaded from shard attn_tp_rank // replicas
                if A >= nkv:
                    kvr, ks = hd, a // (A // nkv)
                else:
                    kvr, ks = nkv // A * hd, a
                d[s + "qkv_proj.weight"] = np.concatenate([
                    rows(w[s + "q_proj.weight"], a, qr), rows(w[s + "k_proj.weight"], ks, kvr),
                    rows(w[s + "v_proj.weight"], ks, kvr)])
                d[s + "o_proj.weight"] = cols(w[s + "o_proj.weight"], a, qr)
                d[s + "q_norm.weight"] = w[s + "q_norm.weight"]
                d[s + "k_norm.weight"] = w[s + "k_norm.weight"]
            if moe_layer(cfg, i):
                E = cfg.get("num_experts") or cfg["n_routed_experts"]
                mi = cfg["moe_intermediate_size"]
                mtp = tp // ep                 # moe_tp_size = tp // ep (moe_dp 1)
                er, mt = t // mtp, t % mtp     # derive_spawn_ranks: moe_ep_rank, moe_tp_rank
                r = mi // mtp
                ex = p + "mlp.experts."
                ids = range(er * E // ep, (er + 1) * E // ep)
                d[ex + "w13_weight"] = np.stack([np.concatenate([
                    rows(w[ex + f"{e}.gate_proj.weight"], mt, r),
                    rows(w[ex + f"{e}.up_proj.weight"], mt, r)]) for e in ids])
                d[ex + "w2_weight"] = np.stack(
                    [cols(w[ex + f"{e}.down_proj.weight"], mt, r) for e in ids])
                d[p + "mlp.gate.weight"] = w[p + "mlp.gate.weight"]
                if mla:
                    d[p + "mlp.gate.e_score_correction_bias"] = \
                        w[p + "mlp.gate.e_score_correction_bias"]
                    sp = p + "mlp.shared_experts."  # DeepseekV2MLP, parallel_group "tp"
                    sr = cfg["n_shared_experts"] * mi // tp
                    d[sp + "gate_up_proj.weight"] = np.concatenate([
                        rows(w[sp + "gate_proj.weight"], t, sr),
                        rows(w[sp + "up_proj.weight"], t, sr)])
                    d[sp + "down_proj.weight"] = cols(w[sp + "down_proj.weight"], t, sr)
            else:
                # the dense MLP keeps the whole tp group; deepseek's is "replicated" when
                # moe_dense_tp_size == 1 (is_dense_ffn_fully_dp)
                G, r0 = (1, 0) if (mla and moe_dense_tp == 1) else (tp, t)
                ir = cfg["intermediate_size"] // G
                d[p + "mlp.gate_up_proj.weight"] = np.concatenate([
                    rows(w[p + "mlp.gate_proj.weight"], r0, ir),
                    rows(w[p + "mlp.up_proj.weight"], r0, ir)])
                d[p + "mlp.down_proj.weight"] = cols(w[p + "mlp.down_proj.weight"], r0, ir)
            for n in ("input_layernorm", "post_attention_layernorm"):
                d[p + n + ".weight"] = w[p + n + ".weight"]
        out.append(d)
    return out


def pp_indices(L, s, pp):
    """sglang.srt.distributed.utils.get_pp_indices: L // pp layers a stage, the last L % pp
    stages one more."""
    base, rem = divmod(L, pp)
    first = s * base + max(0, s - (pp - rem))
    return first, first + base + (1 if s >= pp - rem else 0)


def staged(cfg, one_stage, tp, pp):
    """The ranks of pp stages (global rank s * tp + t) from one stage's prediction: stage s
    keeps its layers (global names), embed_tokens the first stage, norm and lm_head the last; tied
    with pp > 1 the last stage's ParallelLMHead named lm_head.weight is loaded from the embedding
    (Qwen3ForCausalLM / Qwen2ForCausalLM: lm_head = embed_tokens only when pp == 1)."""
    L, tied = cfg["num_hidden_layers"], cfg.get("tie_word_embeddings", False)
    out = []
    for s in range(pp):
        lo, hi = pp_indices(L, s, pp)
        for t in range(tp):
            d = {}
            for k, v in one_stage[t].items():
                if k.startswith("model.layers."):
                    if lo <= int(k.split(".")[2]) < hi:
                        d[k] = v
                elif k == "model.embed_tokens.weight":
                    if s == 0:
                        d[k] = v
                    if tied and pp > 1 and s == pp - 1:
                        d["lm_head.weight"] = v
                elif s == pp - 1:
                    d[k] = v
            out.append(d)
    return out


def shard(run, ckpt, out, tp, dp, ep=1, *more):
    r = run("shard", ckpt, "--layout", "sglang", "--tp", tp, "--attn-dp-size", dp, "--ep", ep,
            "-o", out, *more)
    assert r.returncode == 0, r.stderr
    return out


CASES = [  # (config, tp, attn_dp, ep, options)
    ("qwen3-moe", 2, 2, 1, ()), ("qwen3-moe", 4, 2, 1, ()), ("qwen3-moe", 4, 2, 2, ()),
    ("qwen3-moe", 4, 4, 4, ()), ("qwen3-moe", 4, 2, 4, ("--enable-dp-lm-head",)),
    ("qwen3-moe", 8, 2, 4, ()), ("qwen3-moe-dense1", 8, 4, 2, ("--enable-dp-lm-head",)),
    ("deepseek-v3", 2, 2, 1, ()), ("deepseek-v3", 4, 2, 2, ()),
    ("deepseek-v3", 4, 2, 4, ("--moe-dense-tp-size", "1")),
    ("deepseek-v3", 8, 4, 8, ("--enable-dp-lm-head", "--moe-dense-tp-size", "1")),
    ("qwen3-tied", 4, 2, 1, ()), ("qwen3-tied", 8, 4, 1, ()),
    # pipeline stages on top: global rank s * tp + t, the tied copy on the last stage
    ("qwen3-moe-dense1", 4, 2, 2, ("--pp", "2")), ("deepseek-v3", 4, 2, 2, ("--pp", "3")),
    ("qwen3-tied", 4, 2, 1, ("--pp", "2", "--enable-dp-lm-head")),
]
CONFIGS = {"qwen3-moe": QWEN3_MOE, "deepseek-v3": DEEPSEEK_V3, "qwen3-tied": QWEN3_TIED,
           "qwen3-moe-dense1": dict(QWEN3_MOE, num_hidden_layers=3, mlp_only_layers=[1])}


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_dp_attention_loader_element_by_element(tmp_path, run, name):
    cfg = CONFIGS[name]
    ckpt, mans = make_model(run, tmp_path, cfg)
    w = load_file(ckpt)
    cases = [c for c in CASES if c[0] == name]
    assert cases
    for _, tp, dp, ep, opts in cases:
        out = shard(run, ckpt, tmp_path / f"tp{tp}-dp{dp}-ep{ep}-{'_'.join(opts)}", tp, dp, ep,
                    *opts)
        pp = int(opts[opts.index("--pp") + 1]) if "--pp" in opts else 1
        want = staged(cfg, sglang_ranks(cfg, w, tp, dp, ep, dp_lm_head="--enable-dp-lm-head" in opts,
                                        moe_dense_tp=1 if "--moe-dense-tp-size" in opts else None),
                      tp, pp)
        assert not os.path.exists(rank_file(out, tp * pp))
        for t, exp in enumerate(want):
            got = load_file(rank_file(out, t))
            assert sorted(got) == sorted(exp), (tp, dp, t, sorted(set(got) ^ set(exp)))
            for k in exp:
                assert got[k].shape == exp[k].shape, (tp, dp, t, k, got[k].shape, exp[k].shape)
                assert got[k].tobytes() == exp[k].tobytes(), (tp, dp, ep, t, k)
        hint = json.loads((out / "weightsum-layout.json").read_text())
        assert hint["attn_dp"] == dp and hint["tp"] == tp
        for algo, man in mans.items():  # the layout comes back from weightsum-layout.json
            v = run("verify", man, out)
            assert v.returncode == 0 and v.stdout.endswith("-> OK\n"), (algo, v.stdout, v.stderr)


@pytest.fixture(params=["sha256", "fast"])
def q3(tmp_path, run, request):
    """Qwen3-30B-A3B-shaped at tp 4, attn-dp 2, ep 2: ranks 0, 1 are DP group 0 and ranks 2, 3
    DP group 1; attention-TP rank 1 (ranks 1 and 3) holds q rows [32, 64)."""
    ckpt, mans = make_model(run, tmp_path, QWEN3_MOE)
    return shard(run, ckpt, tmp_path / "d", 4, 2, 2), ckpt, mans[request.param]


A0 = "model.layers.0.self_attn."


def verify_fails(run, man, d, *more):
    r = run("verify", man, d, *more)
    assert r.returncode == 1, r.stdout + r.stderr
    return r.stdout


def bump(name, at, by=1.0):
    def f(t):
        x = t[name].copy()
        x[at] += by
        t[name] = x
    return f


def test_stale_attention_replica_in_one_dp_group(q3, run):
    """DP group 1 kept an old q row: rank 3's qkv_proj row 5 is HF q_proj row 32 + 5."""
    d, ckpt, man = q3
    mutate(d, 3, bump(A0 + "qkv_proj.weight", (5, 7)))
    out = verify_fails(run, man, d)
    assert f"{A0}q_proj.weight: replica_mismatch [{A0}qkv_proj.weight on rank 3]" in out, out
    assert f"row 37, column 7 of {A0}q_proj.weight (element [5, 7] of {A0}qkv_proj.weight)" in out, out
    # the copy in DP group 0 (rank 1, the same attention-TP rank) is the reference
    assert "replica 1 differs from replica 0 (" + A0 + "qkv_proj.weight on rank 1)" in out, out
    assert ": mismatch" not in out and "rank 0" not in out and "rank 2" not in out
    assert out.endswith("1 replica_mismatch -> FAILED\n"), out


def test_stale_kv_and_o_proj_in_one_dp_group(q3, run):
    """kv heads: 2 kv heads over 2 attention-TP ranks, one each; rank 2 (group 1, attention-TP
    rank 0) has a stale v row and o_proj column."""
    d, ckpt, man = q3
    def stale(t):
        bump(A0 + "qkv_proj.weight", (32 + 8 + 2, 0))(t)  # v rows after 32 q and 8 k rows
        bump(A0 + "o_proj.weight", (3, 4))(t)
    mutate(d, 2, stale)
    out = verify_fails(run, man, d)
    assert f"{A0}v_proj.weight: replica_mismatch [{A0}qkv_proj.weight on rank 2]" in out, out
    assert f"row 2, column 0 of {A0}v_proj.weight (element [42, 0] of {A0}qkv_proj.weight)" in out
    assert f"{A0}o_proj.weight: replica_mismatch [{A0}o_proj.weight on rank 2]" in out, out
    assert f"row 3, column 4 of {A0}o_proj.weight" in out, out


def test_dp_group_holding_the_other_attention_shard(q3, run):
    """DP group 1 loaded its attention by the wrong rank: rank 2 holds attention-TP rank 1's
    shard and rank 3 rank 0's (shapes agree; every element is another head's)."""
    d, ckpt, man = q3
    t2, t3 = load_file(rank_file(d, 2)), load_file(rank_file(d, 3))
    for r, src in ((2, t3), (3, t2)):
        mutate(d, r, lambda t, src=src: t.update(
            {k: src[k] for k in src if k.startswith("model.layers.0.self_attn.")
             and ("qkv_proj" in k or "o_proj" in k)}))
    out = verify_fails(run, man, d)
    for r in (2, 3):
        for n in ("q_proj", "k_proj", "v_proj"):
            assert f"{A0}{n}.weight: replica_mismatch [{A0}qkv_proj.weight on rank {r}]" in out, out
        assert f"{A0}o_proj.weight: replica_mismatch [{A0}o_proj.weight on rank {r}]" in out, out
    # rank 2 should hold q rows [0, 32): its first row differs from HF row 0
    assert f"row 0, column 0 of {A0}q_proj.weight (element [0, 0] of {A0}qkv_proj.weight)" in out
    assert "layers.1" not in out and ": mismatch" not in out


def test_attention_sharded_over_full_tp(tmp_path, q3, run):
    """An engine that split attention over all 4 ranks (no attention-TP group) while the layout
    says attn-dp 2: the attention tensors have the full-TP shapes, named per rank."""
    d, ckpt, man = q3
    full = shard(run, ckpt, tmp_path / "full", 4, 1, 2)
    for r in range(4):
        src = load_file(rank_file(full, r))
        mutate(d, r, lambda t, src=src: t.update(
            {k: src[k] for k in src if ".self_attn.qkv_proj" in k or ".self_attn.o_proj" in k}))
    out = verify_fails(run, man, d)
    for r in range(4):  # qkv: 32 + 8 + 8 rows expected, 16 + 8 + 8 found; o_proj 32 vs 16 columns
        for hf, local, want, got in (("q_proj", "qkv_proj", "[48, 64]", "[32, 64]"),
                                     ("o_proj", "o_proj", "[64, 32]", "[64, 16]")):
            line = (f"{A0}{hf}.weight: shape [{A0}{local}.weight on rank {r}]: local shape "
                    f"{want} expected for sglang tp=4 attn-dp=2 ep=2, {got} found")
            assert line in out, out
    assert ": mismatch" not in out and "experts" not in out
    # and the full-TP dump itself is no attn-dp 2 dump: its weightsum-layout.json says so
    r = run("verify", man, full, "--attn-dp-size", 2)
    assert r.returncode == 2 and "says --attn-dp-size 1, not --attn-dp-size 2" in r.stderr, r.stderr
    r = run("verify", man, d, "--attn-dp-size", 1)
    assert r.returncode == 2 and "says --attn-dp-size 2, not --attn-dp-size 1" in r.stderr, r.stderr


def test_stale_embedding_copy_in_one_dp_group(q3, run):
    """The embedding is vocab-parallel over the attention-TP group: rank 3 holds rows
    [512, 1000) of the vocab padded to 1024, as rank 1 does."""
    d, ckpt, man = q3
    mutate(d, 3, bump("model.embed_tokens.weight", (10, 1)))
    out = verify_fails(run, man, d)
    assert ("model.embed_tokens.weight: replica_mismatch [model.embed_tokens.weight on rank 3]"
            in out), out
    assert "row 522, column 1 of model.embed_tokens.weight" in out, out


def test_mla_stale_kv_b_copy_and_replicated_dense_layer(tmp_path, run):
    """DeepSeek-V3-shaped at tp 4, attn-dp 2, moe_dense_tp 1: rank 2's kv_b_proj (attention-TP
    rank 0, DP group 1) and rank 3's replicated dense MLP are stale."""
    ckpt, mans = make_model(run, tmp_path, DEEPSEEK_V3)
    d = shard(run, ckpt, tmp_path / "d", 4, 2, 2, "--moe-dense-tp-size", 1)
    a1 = "model.layers.1.self_attn."
    mutate(d, 2, bump(a1 + "kv_b_proj.weight", (9, 2)))
    mutate(d, 3, bump("model.layers.0.mlp.gate_up_proj.weight", (96 + 4, 5)))
    for man in mans.values():
        out = verify_fails(run, man, d)
        assert f"{a1}kv_b_proj.weight: replica_mismatch [{a1}kv_b_proj.weight on rank 2]" in out, out
        assert f"row 9, column 2 of {a1}kv_b_proj.weight" in out, out
        m0 = "model.layers.0.mlp."
        assert (f"{m0}up_proj.weight: replica_mismatch [{m0}gate_up_proj.weight on rank 3]"
                in out), out
        assert f"row 4, column 5 of {m0}up_proj.weight" in out, out
        assert out.endswith("2 replica_mismatch -> FAILED\n"), out


def test_refusals(tmp_path, run):
    ckpt, _ = make_model(run, tmp_path, QWEN3_MOE)
    def refused(*args):
        r = run("shard", ckpt, "--layout", "sglang", "-o", tmp_path / "x", *args)
        assert r.returncode == 2, r.stdout + r.stderr
        return r.stderr
    assert "does not divide tp" in refused("--tp", 4, "--attn-dp-size", 3)
    assert "needs DP attention" in refused("--tp", 4, "--enable-dp-lm-head")
    assert "only 1 or tp" in refused("--tp", 4, "--attn-dp-size", 2, "--moe-dense-tp-size", 2)
    r = run("shard", ckpt, "--layout", "vllm", "--tp", 4, "--attn-dp-size", 2, "-o", tmp_path / "y")
    assert r.returncode == 2 and "SGLang options" in r.stderr, r.stderr
    llama = dict(QWEN3_TIED, model_type="llama")
    ck2, _ = make_model(run, tmp_path / "llama", llama)
    r = run("shard", ck2, "--layout", "sglang", "--tp", 4, "--attn-dp-size", 2, "-o", tmp_path / "z")
    assert r.returncode == 2 and "not modelled for model_type 'llama'" in r.stderr, r.stderr


class DPStandIn(StandIn):
    """SGLang's answer under DP attention: weight_checker._placement reports dp_rank = the
    attention-DP rank (tp_rank // attn_tp_size) and dp_size = attn_dp_size."""

    def __init__(self, dump, tp, dp):
        super().__init__(dump, tp)
        self.dp = dp

    def answer(self, req):
        st, ans = super().answer(req)
        for info in ans.get("ranks", []):
            for p in info["parallelism_info"]:
                p["dp_rank"], p["dp_size"] = p["tp_rank"] // (self.tp // self.dp), self.dp
        return st, ans


def test_expect_for_a_dp_attention_rank(tmp_path, run):
    ckpt, _ = make_model(run, tmp_path, QWEN3_MOE)
    w = load_file(ckpt)
    d = shard(run, ckpt, tmp_path / "d", 4, 2, 2)
    exp = tmp_path / "expect.json"
    r = run("expect", ckpt, "--layout", "sglang", "--tp", 4, "--attn-dp-size", 2, "--ep", 2,
            "-o", exp)
    assert r.returncode == 0, r.stderr
    e = json.loads(exp.read_text())
    assert e["attn_dp"] == 2
    rank3 = next(x for x in e["ranks"] if x["parallelism_info"][0]["tp_rank"] == 3)
    info = rank3["parallelism_info"][0]
    assert (info["dp_rank"], info["dp_size"], info["rank"], info["size"]) == (1, 2, 3, 4), info
    # rank 3's predicted answer is SGLang's hash of what the re-implemented loader puts there
    with DPStandIn(str(d), 4, 2) as s:
        want = sglang_ranks(QWEN3_MOE, w, 4, 2, 2)[3]
        assert rank3["checksums"] == {k: s.hash(v) for k, v in want.items()}
        r = run("push", s.url, exp)
        assert r.returncode == 0, r.stdout + r.stderr
        # the same engine without DP attention says dp_size 1: refused before any tensor
        s.dp = 1
        r = run("push", s.url, exp)
        assert r.returncode == 1 and "answers dp_size 1" in r.stdout, r.stdout
        assert "the expectation is for attn-dp 2" in r.stdout
    # weightsum's own checker of the dump (serve) answers as SGLang does, dp_rank and dp_size too
    with weightsum.Checker(str(d)) as c:
        st, ours = c.handle({"action": "checksum"})
    assert st == 200
    s2 = DPStandIn(str(d), 4, 2)
    assert ours == s2.answer({"action": "checksum"})[1]
    s2.server_close()
    # a stale attention copy in DP group 1 is named on its rank
    mutate(d, 3, bump(A0 + "qkv_proj.weight", (0, 0)))
    with DPStandIn(str(d), 4, 2) as s:
        r = run("push", s.url, exp)
        assert r.returncode == 1, r.stdout
        assert (f"{A0}q_proj.weight: mismatch [{A0}qkv_proj.weight on rank 3] rows 32..64" in
                r.stdout and "found on rank 3 (dp_rank 1)" in r.stdout), r.stdout
        assert "on rank 1" not in r.stdout


def fused_shared_ranks(cfg, w, tp, dp, ep, rows):
    """sglang_ranks with the shared expert fused (one more slot) and an EPLB map: FusedMoE's
    _num_global_routed is the P physical slots (E + redundant), ep rank k holds physical slots
    [k*P/ep, (k+1)*P/ep) loaded from logical expert map[layer][p] (weight_loader:
    logical_to_all_physical), and the checkpoint's shared expert (id num_logical_experts) goes
    to physical id P: local slot P/ep of every rank (_map_global_expert_id_to_local_expert_id)."""
    out = sglang_ranks(cfg, w, tp, dp, ep)
    mi = cfg["moe_intermediate_size"]
    mtp = tp // ep
    r = mi // mtp
    for t, d in enumerate(out):
        er, mt = t // mtp, t % mtp
        for i in range(cfg["num_hidden_layers"]):
            if not moe_layer(cfg, i):
                continue
            p = f"model.layers.{i}.mlp."
            row = rows[i]
            per = len(row) // ep
            slots = [(p + f"experts.{row[q]}.") for q in range(er * per, (er + 1) * per)]
            slots.append(p + "shared_experts.")
            d[p + "experts.w13_weight"] = np.stack([np.concatenate([
                rows_of(w[s + "gate_proj.weight"], mt, r),
                rows_of(w[s + "up_proj.weight"], mt, r)]) for s in slots])
            d[p + "experts.w2_weight"] = np.stack(
                [cols(w[s + "down_proj.weight"], mt, r) for s in slots])
            del d[p + "shared_experts.gate_up_proj.weight"], d[p + "shared_experts.down_proj.weight"]
    return out


rows_of = rows


def test_fused_shared_experts_with_an_expert_map(tmp_path, run):
    """DeepSeek-V3-shaped, tp 4, attn-dp 2, ep 2, 2 redundant slots (10 physical, 5 per ep
    rank) and the shared expert fused as slot 5: every rank element by element, both digests;
    a stale shared-expert slot on ep rank 1 and a stale redundant copy are named."""
    cfg = DEEPSEEK_V3
    ckpt, mans = make_model(run, tmp_path, cfg)
    w = load_file(ckpt)
    rows = [list(range(8)) + [3, 3], list(range(8)) + [5, 0], [7, 6, 5, 4, 3, 2, 1, 0, 1, 2]]
    emap = tmp_path / "map.json"
    emap.write_text(json.dumps({"physical_to_logical_map": rows}))
    d = shard(run, ckpt, tmp_path / "d", 4, 2, 2, "--fused-shared-experts", "--expert-map", emap)
    hint = json.loads((d / "weightsum-layout.json").read_text())
    assert hint["fused_shared_experts"] == 1 and hint["expert_map"] == rows
    want = fused_shared_ranks(cfg, w, 4, 2, 2, rows)
    for t, exp in enumerate(want):
        got = load_file(rank_file(d, t))
        assert sorted(got) == sorted(exp), (t, sorted(set(got) ^ set(exp)))
        for k in exp:
            assert got[k].tobytes() == exp[k].tobytes(), (t, k)
    for man in mans.values():
        v = run("verify", man, d)
        assert v.returncode == 0 and v.stdout.endswith("-> OK\n"), v.stdout + v.stderr
    w13 = "model.layers.1.mlp.experts.w13_weight"
    # rank 2 (ep rank 1, moe-tp rank 0): slot 5 is the shared expert, slot 4 layer 2's expert 2
    mutate(d, 2, bump(w13, (5, 3, 1)))
    mutate(d, 3, bump("model.layers.2.mlp.experts.w13_weight", (4, 0, 0)))
    for man in mans.values():
        out = verify_fails(run, man, d)
        sh = "model.layers.1.mlp.shared_experts.gate_proj.weight"
        assert f"{sh}: replica_mismatch [{w13} on rank 2]" in out, out
        assert f"row 3, column 1 of {sh} (element [5, 3, 1] of {w13})" in out, out
        e2 = "model.layers.2.mlp.experts.2.gate_proj.weight"
        # physical slot 9 holds expert 2, a copy of slot 5's (rank 2 / 3's local slot 0)
        assert f"{e2}: replica_mismatch [model.layers.2.mlp.experts.w13_weight on rank 3]" in out, out
        assert "row 8, column 0 of " + e2 in out, out  # moe-tp rank 1: rows 8.. of the expert
        assert out.endswith("2 replica_mismatch -> FAILED\n"), out


def test_stale_tied_lm_head_copy_on_the_last_stage(tmp_path, run):
    """Tied Qwen3 at tp 4, attn-dp 2, pp 2 with the DP lm_head: the last stage's lm_head.weight
    copies the embedding's attention-TP shard; rank 7 (stage 1, DP group 1, attention-TP rank 1)
    kept a stale row."""
    ckpt, mans = make_model(run, tmp_path, QWEN3_TIED)
    d = shard(run, ckpt, tmp_path / "d", 4, 2, 1, "--pp", 2, "--enable-dp-lm-head")
    mutate(d, 7, bump("lm_head.weight", (3, 2)))
    for man in mans.values():
        out = verify_fails(run, man, d)
        assert ("model.embed_tokens.weight: replica_mismatch [lm_head.weight on rank 7]" in out), out
        assert "row 515, column 2 of model.embed_tokens.weight" in out, out
        assert out.endswith("1 replica_mismatch -> FAILED\n"), out
    # without the DP lm_head the copy would be split over tp, the embedding over 2 ranks: refused
    r = run("shard", ckpt, "--layout", "sglang", "--tp", 4, "--attn-dp-size", 2, "--pp", 2,
            "-o", tmp_path / "x")
    assert r.returncode == 2 and "--enable-dp-lm-head" in r.stderr, r.stderr
