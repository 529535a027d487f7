"""Block FP8 under sglang / vllm (issue 13): e4m3 weights with fp32 weight_scale_inv per
block_n x block_k block, split at block granularity, fused tensors' scales split per segment.

An independent re-implementation of the engines' BlockQuantScaleParameter / Fp8MoEMethod scale
loading (numpy) predicts every rank's weights and scales; `weightsum shard` must write exactly
that, `verify` must pass with both digests, and a stale or transposed scale is caught and named.
Configs shaped like Qwen3-30B-A3B-FP8 and DeepSeek-V3 / GLM-4.5-FP8's MoE block, scaled down
(block 16 x 16 instead of 128 x 128, so that the small shapes still split at whole blocks)."""
import itertools
import json
import os

import numpy as np
import pytest
import torch
from safetensors.torch import load_file as load_torch, save_file as save_torch

import rank_files
from rank_files import rank_file

from test_moe_layouts import engine_experts, is_moe_layer, n_experts, pp_range, \
    sglang_vllm_ranks, shared_prefix, shared_rows

B = 16
FP8 = {"quant_method": "fp8", "fmt": "e4m3", "activation_scheme": "dynamic",
       "weight_block_size": [B, B]}


def fp8_config(kind, layers, experts, mi, **extra):
    c = {"model_type": kind, "hidden_size": 64, "intermediate_size": 96,
         "num_hidden_layers": layers, "num_attention_heads": 8, "num_key_value_heads": 4,
         "head_dim": 16, "vocab_size": 1000, "tie_word_embeddings": False,
         "moe_intermediate_size": mi, "quantization_config": FP8}
    c["n_routed_experts" if kind == "glm4_moe" else "num_experts"] = experts
    c.update(extra)
    return c


CONFIGS = {
    "qwen3-30b-a3b-fp8": fp8_config("qwen3_moe", 2, 8, 32),
    "deepseek-v3-moe-fp8": fp8_config("glm4_moe", 3, 8, 32, n_shared_experts=1,
                                      first_k_dense_replace=1, attention_bias=True),
}


def to_np(t):
    """Bytes-exact numpy view (fp8 as uint8)."""
    return t.view(torch.uint8).numpy() if t.dtype == torch.float8_e4m3fn else t.numpy()


def make_fp8_model(run, d, cfg):
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(cfg, f)
    raw = os.path.join(d, "raw.safetensors")
    assert run("synth", os.path.join(d, "config.json"), "-o", raw).returncode == 0
    t = load_torch(raw)
    g = torch.Generator().manual_seed(3)
    out = {}
    for k, v in t.items():
        if k + "_scale_inv" in t:
            out[k] = (v.float() * 2000).clamp(-448, 448).to(torch.float8_e4m3fn)
        elif k.endswith("_scale_inv"):
            out[k] = torch.rand(v.shape, generator=g) * 1e-3 + 1e-4
        else:
            out[k] = v
    ckpt = os.path.join(d, "model.safetensors")
    save_torch(out, ckpt)
    mans = {}
    for algo in ("sha256", "fast"):
        for canon in ("bf16", "native"):
            mans[algo, canon] = os.path.join(d, f"m-{algo}-{canon}.json")
            assert run("hash", ckpt, "--algo", algo, "--canonical", canon, "-o",
                       mans[algo, canon]).returncode == 0
    return ckpt, mans


def scales_of_rank(family, cfg, s, tp, ep, pp, stage, t):
    """The engines' scale tensors on (stage, tp rank t): each segment's per-rank rows (or
    columns) divided by the block size, in the same slots as the weight's segments."""
    L = cfg["num_hidden_layers"]
    nh, nkv, hd = cfg["num_attention_heads"], cfg["num_key_value_heads"], cfg["head_dim"]
    qr = nh // tp * hd
    kvh = nkv // tp if nkv >= tp else 1
    reps = 1 if nkv >= tp else tp // nkv
    ks = t // reps
    out = {}
    lo, hi = pp_range(L, pp, stage)
    for i in range(lo, hi):
        p = f"model.layers.{i}."
        a = p + "self_attn."
        out[a + "qkv_proj.weight_scale_inv"] = np.concatenate([
            s[a + "q_proj.weight_scale_inv"][t * qr // B:(t + 1) * qr // B],
            s[a + "k_proj.weight_scale_inv"][ks * kvh * hd // B:(ks + 1) * kvh * hd // B],
            s[a + "v_proj.weight_scale_inv"][ks * kvh * hd // B:(ks + 1) * kvh * hd // B]])
        out[a + "o_proj.weight_scale_inv"] = s[a + "o_proj.weight_scale_inv"][:, t * qr // B:(t + 1) * qr // B]
        if is_moe_layer(cfg, i):
            mtp, mt, ids = engine_experts(family, n_experts(cfg), tp, ep, t, "linear")
            r = cfg["moe_intermediate_size"] // mtp
            ex = p + "mlp.experts."
            # Fp8MoEMethod: w13 scale [E, 2 * ceil(r / bn), ceil(H / bk)], w2 [E, ceil(H / bn), ceil(r / bk)]
            out[ex + "w13_weight_scale_inv"] = np.stack([np.concatenate([
                s[ex + f"{e}.gate_proj.weight_scale_inv"][mt * r // B:(mt + 1) * r // B],
                s[ex + f"{e}.up_proj.weight_scale_inv"][mt * r // B:(mt + 1) * r // B]]) for e in ids])
            out[ex + "w2_weight_scale_inv"] = np.stack([
                s[ex + f"{e}.down_proj.weight_scale_inv"][:, mt * r // B:(mt + 1) * r // B] for e in ids])
            if shared_rows(cfg):
                sp = p + "mlp." + shared_prefix(cfg) + "."
                sr = shared_rows(cfg) // tp
                out[sp + "gate_up_proj.weight_scale_inv"] = np.concatenate([
                    s[sp + "gate_proj.weight_scale_inv"][t * sr // B:(t + 1) * sr // B],
                    s[sp + "up_proj.weight_scale_inv"][t * sr // B:(t + 1) * sr // B]])
                out[sp + "down_proj.weight_scale_inv"] = s[sp + "down_proj.weight_scale_inv"][:, t * sr // B:(t + 1) * sr // B]
        else:
            ir = cfg["intermediate_size"] // tp
            out[p + "mlp.gate_up_proj.weight_scale_inv"] = np.concatenate([
                s[p + "mlp.gate_proj.weight_scale_inv"][t * ir // B:(t + 1) * ir // B],
                s[p + "mlp.up_proj.weight_scale_inv"][t * ir // B:(t + 1) * ir // B]])
            out[p + "mlp.down_proj.weight_scale_inv"] = s[p + "mlp.down_proj.weight_scale_inv"][:, t * ir // B:(t + 1) * ir // B]
    return out


def mutate(d, rank, fn):
    rank_files.mutate(d, rank, fn, load=load_torch, save=save_torch)


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_fp8_loaders_element_by_element(tmp_path, run, name):
    cfg = CONFIGS[name]
    ckpt, mans = make_fp8_model(run, tmp_path, cfg)
    w = {k: to_np(v) for k, v in load_torch(ckpt).items()}
    weights = {k: v for k, v in w.items() if not k.endswith("_scale_inv")}
    done = 0
    for family, (tp, ep, pp) in itertools.product(
            ["sglang", "vllm"], [(1, 1, 1), (2, 1, 1), (2, 2, 1), (4, 2, 1), (4, 4, 1),
                                 (2, 2, 2), (8, 1, 1)]):
        out = tmp_path / f"{family}-{tp}-{ep}-{pp}"
        r = run("shard", ckpt, "--layout", family, "--tp", tp, "--ep", ep, "--pp", pp, "-o", out)
        if r.returncode == 2:
            assert len(r.stderr.strip().splitlines()) == 1, r.stderr
            # block granularity (8 ranks: 4 expert rows per rank) or vLLM's ep rule
            assert "block FP8" in r.stderr or "ep must be 1 or tp" in r.stderr, r.stderr
            continue
        assert r.returncode == 0, r.stderr
        want = sglang_vllm_ranks(family, cfg, weights, tp, ep, pp)
        for g, exp in enumerate(want):
            exp = dict(exp)
            exp.update(scales_of_rank(family, cfg, w, tp, ep, pp, g // tp, g % tp))
            got = {k: to_np(v) for k, v in load_torch(rank_file(out, g)).items()}
            assert sorted(got) == sorted(exp), sorted(set(got) ^ set(exp))
            for k in exp:
                assert got[k].shape == exp[k].shape, (k, got[k].shape, exp[k].shape)
                assert got[k].tobytes() == exp[k].tobytes(), (family, tp, ep, pp, g, k)
            t = load_torch(rank_file(out, g))
            assert all(t[k].dtype == torch.float8_e4m3fn for k in t if k.endswith("qkv_proj.weight"))
            assert all(t[k].dtype == torch.float32 for k in t if k.endswith("_scale_inv"))
        for (algo, canon), man in mans.items():
            v = run("verify", man, out, "--canonical", canon)
            assert v.returncode == 0 and v.stdout.endswith("-> OK\n"), (algo, canon, v.stdout)
        done += 1
    assert done >= 8


@pytest.fixture
def fp8_dump(tmp_path, run):
    """Qwen3-30B-A3B-FP8-shaped, SGLang tp 4, ep 2: rank 1 is ep rank 0, moe-tp rank 1."""
    ckpt, mans = make_fp8_model(run, tmp_path, CONFIGS["qwen3-30b-a3b-fp8"])
    d = tmp_path / "d"
    assert run("shard", ckpt, "--layout", "sglang", "--tp", 4, "--ep", 2, "-o", d).returncode == 0
    return d, ckpt, mans


L1 = "model.layers.1."


@pytest.mark.parametrize("algo", ["sha256", "fast"])
def test_stale_fp8_scale(fp8_dump, run, algo):
    """vllm #45835: the weight was updated but its weight_scale_inv kept the previous step's
    values — here the scales of the expert in slot 2 of rank 1 (expert 2)."""
    d, ckpt, mans = fp8_dump
    name = L1 + "mlp.experts.w13_weight_scale_inv"
    def stale(t):
        a = t[name].clone()
        a[2] = a[2] * 1.5  # last step's scales
        t[name] = a
    mutate(d, 1, stale)
    for canon in ("bf16", "native"):
        r = run("verify", mans[algo, canon], d, "--canonical", canon, "--locate", ckpt)
        assert r.returncode == 1, r.stdout
        out = r.stdout
        for part in ("gate_proj", "up_proj"):
            assert f"{L1}mlp.experts.2.{part}.weight_scale_inv: mismatch [{name} on rank 1]" in out, out
        assert f"element [2, " in out  # engine slot 2
        assert "mlp.experts.2.gate_proj.weight:" not in out  # the weight itself is fine


def test_transposed_fp8_scale(fp8_dump, run):
    """vllm #28425: a square weight_scale_inv stored transposed is caught by its digest; a
    non-square one by its shape."""
    d, ckpt, mans = fp8_dump
    qkv = L1 + "self_attn.qkv_proj.weight_scale_inv"  # [(32+16+16)/16, 64/16] = [4, 4]
    o = L1 + "self_attn.o_proj.weight_scale_inv"      # [4, 32/16] = [4, 2]
    mutate(d, 2, lambda t: t.__setitem__(qkv, t[qkv].T.contiguous()))
    mutate(d, 3, lambda t: t.__setitem__(o, t[o].T.contiguous()))
    r = run("verify", mans["fast", "native"], d, "--canonical", "native", "--locate", ckpt)
    assert r.returncode == 1, r.stdout
    assert f"{L1}self_attn.q_proj.weight_scale_inv: mismatch [{qkv} on rank 2]" in r.stdout, r.stdout
    assert f"{L1}self_attn.o_proj.weight_scale_inv: shape [{o} on rank 3]" in r.stdout, r.stdout


def test_one_ulp_scale_needs_the_native_policy(fp8_dump, run):
    """An fp32 scale off by one ulp: the native policy names it, and so does the default bf16
    policy, whose per-tensor rule (ws_canon_for_tensor) keeps scales in their stored bytes
    instead of rounding them to bf16 (where such a change vanishes)."""
    d, ckpt, mans = fp8_dump
    name = L1 + "mlp.experts.w2_weight_scale_inv"
    def ulp(t):
        a = t[name].clone()
        a.view(torch.int32)[0, 0, 0] += 1
        t[name] = a
    mutate(d, 0, ulp)
    want = f"{L1}mlp.experts.0.down_proj.weight_scale_inv: mismatch [{name} on rank 0]"
    r = run("verify", mans["sha256", "native"], d, "--canonical", "native", "--locate", ckpt)
    assert r.returncode == 1
    assert want in r.stdout
    for algo in ("sha256", "fast"):
        # default flags: no --canonical anywhere
        r = run("verify", mans[algo, "bf16"], d, "--locate", ckpt)
        assert r.returncode == 1, (algo, r.stdout)
        assert want in r.stdout, (algo, r.stdout)
        assert "element [0, 0, 0]" in r.stdout, r.stdout  # engine slot 0 (expert 0), first block
        assert r.stdout.count(": mismatch") == 1, r.stdout  # only that scale


def sha256_hex(t):
    import hashlib
    return hashlib.sha256(t.contiguous().view(torch.uint8).numpy().tobytes()).hexdigest()


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_fp8_checkpoint_default_policy(tmp_path, run, name):
    """hash with default flags: e4m3 weights cast to bf16 (exact), their fp32 scales hashed as
    stored (canonical dtype F32); the manifest says so per tensor, and a dump of it verifies
    with default flags, by both digests, and through `hash` of the dump."""
    cfg = CONFIGS[name]
    ckpt, _ = make_fp8_model(run, tmp_path, cfg)
    man = tmp_path / "default.json"
    assert run("hash", ckpt, "-o", man).returncode == 0
    m = json.loads(man.read_text())
    assert m["canonical"] == "bf16"
    w = load_torch(ckpt)
    scales = [k for k in w if k.endswith("_scale_inv")]
    assert scales and all(m["tensors"][k]["canonical_dtype"] == "F32" for k in scales)
    for k in scales[:5]:
        assert m["tensors"][k]["sha256"] == sha256_hex(w[k]), k
    fp8 = [k for k in w if k + "_scale_inv" in w]
    assert all(m["tensors"][k]["canonical_dtype"] == "BF16" for k in fp8)
    k = fp8[0]
    assert m["tensors"][k]["sha256"] == sha256_hex(w[k].to(torch.bfloat16)), k
    fast = tmp_path / "fast.json"
    assert run("hash", ckpt, "--algo", "fast", "-o", fast).returncode == 0
    d = tmp_path / "d"
    assert run("shard", ckpt, "--layout", "sglang", "--tp", 2, "--ep", 2, "-o", d).returncode == 0
    for mf in (man, fast):
        r = run("verify", mf, d)
        assert r.returncode == 0 and r.stdout.endswith("-> OK\n"), r.stdout
    # the dump's own manifest (hash of a dump) equals the checkpoint's
    dm = tmp_path / "dump.json"
    assert run("hash", d, "-o", dm).returncode == 0
    dt = json.loads(dm.read_text())["tensors"]
    for k in scales:
        assert dt[k]["canonical_dtype"] == "F32" and dt[k]["sha256"] == m["tensors"][k]["sha256"], k


@pytest.mark.parametrize("algo", ["sha256", "fast"])
def test_stale_scale_block_default_policy(tmp_path, run, algo):
    """DeepSeek-V3-shaped FP8 (GLM-4.5 MoE block), vLLM tp 2, ep 2: one scale block of one
    expert's w13 scales left at a value one fp32 ulp off (a stale block that bf16 rounding would
    hide) is caught with default flags, named by HF tensor, engine tensor, rank and element."""
    cfg = CONFIGS["deepseek-v3-moe-fp8"]
    ckpt, mans = make_fp8_model(run, tmp_path, cfg)
    d = tmp_path / "d"
    assert run("shard", ckpt, "--layout", "vllm", "--tp", 2, "--ep", 2, "-o", d).returncode == 0
    L2 = "model.layers.2."
    name = L2 + "mlp.experts.w13_weight_scale_inv"  # [4 local experts, 2*32/16, 64/16]
    def stale(t):
        a = t[name].clone()
        a.view(torch.int32)[3, 2, 1] += 1  # slot 3 of rank 1 = expert 7, its up_proj's block (0, 1)
        t[name] = a
    mutate(d, 1, stale)
    r = run("verify", mans[algo, "bf16"], d, "--locate", ckpt)
    assert r.returncode == 1, r.stdout
    assert f"{L2}mlp.experts.7.up_proj.weight_scale_inv: mismatch [{name} on rank 1]" in r.stdout, r.stdout
    assert "element [3, 2, 1]" in r.stdout, r.stdout
    assert r.stdout.count(": mismatch") == 1, r.stdout


def test_fp8_refusals(tmp_path, run):
    ckpt, _ = make_fp8_model(run, tmp_path, CONFIGS["qwen3-30b-a3b-fp8"])
    r = run("shard", ckpt, "--layout", "megatron", "--tp", 2, "-o", tmp_path / "m")
    assert r.returncode == 2 and "block-FP8" in r.stderr
    for q, why in (({"quant_method": "fp8", "weight_block_size": [16, 16], "scale_fmt": "ue8m0"}, "ue8m0"),
                   ({"quant_method": "fp8"}, "per-tensor FP8"),
                   ({"quant_method": "awq", "bits": 4}, "awq")):
        cfg = dict(CONFIGS["qwen3-30b-a3b-fp8"], quantization_config=q)
        (tmp_path / "c.json").write_text(json.dumps(cfg))
        r = run("shard", ckpt, "--layout", "sglang", "--tp", 2, "--config", tmp_path / "c.json",
                "-o", tmp_path / "x")
        assert r.returncode == 2 and why in r.stderr, r.stderr


def test_torch_manifest_applies_the_scale_rule(tmp_path, run):
    """weightsum.torch.Manifest (the trainer's side) hashes FP8 scales by the same per-tensor
    rule as `weightsum hash`: its manifest equals the CLI's with default flags, and a dump
    verifies against it; one ulp off in one scale is still caught and named."""
    import sys
    from conftest import ROOT
    sys.path.insert(0, os.path.join(ROOT, "python"))
    import weightsum.torch as wt
    ckpt, _ = make_fp8_model(run, tmp_path, CONFIGS["qwen3-30b-a3b-fp8"])
    w = load_torch(ckpt)
    cli = tmp_path / "cli.json"
    assert run("hash", ckpt, "-o", cli).returncode == 0
    want = json.loads(cli.read_text())["tensors"]
    m = wt.Manifest()
    m.add_all(w.items())
    got = json.loads(m.to_json())["tensors"]
    assert {k: (v["canonical_dtype"], v["sha256"]) for k, v in got.items()} == \
        {k: (v["canonical_dtype"], v["sha256"]) for k, v in want.items()}
    name = L1 + "mlp.experts.5.gate_proj.weight_scale_inv"
    a = w[name].clone()
    a.view(torch.int32)[1, 2] += 1
    w[name] = a
    m2 = wt.Manifest()
    m2.add_all(w.items())
    m2.save(tmp_path / "stale.json")
    d = tmp_path / "d"
    assert run("shard", ckpt, "--layout", "sglang", "--tp", 2, "--ep", 2, "-o", d).returncode == 0
    r = run("verify", tmp_path / "stale.json", d)
    assert r.returncode == 1, r.stdout
    # expert 5 of 8 under ep 2: ep rank 1 = tp ranks 1 (moe-tp 1 of 1), slot 1
    assert f"{name}: mismatch [{L1}mlp.experts.w13_weight_scale_inv on rank 1]" in r.stdout, r.stdout
    assert r.stdout.count(": mismatch") == 1, r.stdout
