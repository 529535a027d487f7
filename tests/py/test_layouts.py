"""Engine layouts: round trips for every family x tp x config, and the mutation suite — every
planted corruption of an engine dump is caught (exit 1) and named."""
import itertools
import json
import os
import shutil

import numpy as np
import pytest

from conftest import ROOT
from rank_files import mutate, rank_file

H, HEADS, HD, INTER, VOCAB = 64, 8, 8, 96, 1000  # vocab not a multiple of 64


def config(kind="qwen2", kvh=2, tied=False, bias=None, vocab=VOCAB, heads=HEADS):
    c = {"model_type": kind, "hidden_size": H, "intermediate_size": INTER,
         "num_hidden_layers": 2, "num_attention_heads": heads, "num_key_value_heads": kvh,
         "vocab_size": vocab, "tie_word_embeddings": tied, "head_dim": HD}
    if bias is not None:
        c["attention_bias"] = bias
    return c


CONFIGS = {
    "qwen2-kv2": config("qwen2", 2),                      # bias, kv below tp 4/8
    "qwen2-kv8-tied": config("qwen2", 8, tied=True),      # kv above tp 1/2/4, equal at 8
    "llama-kv4": config("llama", 4),                      # no bias
    "llama-kv1-bias": config("llama", 1, bias=True),      # MQA, bias on q/k/v/o
    "mistral-kv8": config("mistral", 8, vocab=1024),      # vocab a multiple of 64
    "qwen3-kv2-tied": config("qwen3", 2, tied=True),      # q_norm / k_norm
    "qwen3-kv4": config("qwen3", 4),
}


def make_model(run, d, cfg):
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(cfg, f)
    ckpt = os.path.join(d, "model.safetensors")
    assert run("synth", os.path.join(d, "config.json"), "-o", ckpt).returncode == 0
    man = os.path.join(d, "manifest.json")
    assert run("hash", ckpt, "-o", man).returncode == 0
    return ckpt, man


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_round_trips(tmp_path, run, name):
    ckpt, man = make_model(run, tmp_path, CONFIGS[name])
    done = 0
    for family, tp in itertools.product(["sglang", "vllm", "megatron", "transformers", "hf"],
                                        [1, 2, 4, 8]):
        out = tmp_path / f"{family}-{tp}"
        r = run("shard", ckpt, "--layout", family, "--tp", tp, "-o", out)
        if r.returncode == 2:  # a combination the family cannot lay out, said in one line
            assert "layout" in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
            assert family in ("megatron", "transformers", "hf") or "divisible" in r.stderr
            continue
        assert r.returncode == 0, r.stderr
        v = run("verify", man, out)
        assert v.returncode == 0, f"{family} tp={tp}\n{v.stdout}{v.stderr}"
        assert v.stdout.endswith("-> OK\n")
        assert run("diff", ckpt, out).returncode == 0
        # the dump hashes to the HF manifest's digests (HF-named)
        h = run("hash", out)
        assert h.returncode == 0, h.stderr
        assert h.stdout == run("hash", ckpt).stdout
        done += 1
    assert done >= 10


@pytest.fixture(params=["sha256", "fast"])
def dumps(tmp_path, run, request):
    """A Qwen2 model (4 kv heads of 8 heads, bias) and its SGLang dumps at tp=2 and tp=8
    (tp=8 > kv heads: each kv head on 2 ranks). The trainer's manifest holds SHA-256 or fast
    digests: the whole mutation suite runs against both."""
    cfg = config("qwen2", 4)
    ckpt, man = make_model(run, tmp_path, cfg)
    if request.param == "fast":
        man = os.path.join(tmp_path, "manifest-fast.json")
        assert run("hash", ckpt, "--algo", "fast", "-o", man).returncode == 0
    for tp in (2, 8):
        assert run("shard", ckpt, "--layout", "sglang", "--tp", tp, "-o",
                   tmp_path / f"tp{tp}").returncode == 0
    return tmp_path, ckpt, man


def flip(t, name, row, col, bit=30):
    a = t[name].copy()
    a.view(np.uint32)[row, col] ^= np.uint32(1 << bit)
    t[name] = a


def flip1(t, name, i, bit=30):
    a = t[name].copy()
    a.view(np.uint32)[i] ^= np.uint32(1 << bit)
    t[name] = a


def verify(run, man, d, ckpt=None):
    args = ["verify", man, d] + (["--locate", ckpt] if ckpt else [])
    r = run(*args)
    assert r.returncode == 1, r.stdout + r.stderr
    return r.stdout


L1 = "model.layers.1."
# tp=2 of 8 heads x 8 dims, 4 kv heads: rank holds q rows 0..32, k rows 32..48, v rows 48..64
SEGMENTS = [("q_proj", 5, "rows 0..32"), ("k_proj", 32 + 3, ""), ("v_proj", 48 + 7, "")]


@pytest.mark.parametrize("seg,row,_", SEGMENTS)
@pytest.mark.parametrize("what", ["weight", "bias"])
def test_flip_in_each_qkv_segment(dumps, run, seg, row, _, what):
    d, ckpt, man = dumps
    qkv = L1 + "self_attn.qkv_proj." + what
    mutate(d / "tp2", 1, lambda t: flip(t, qkv, row, 3) if what == "weight" else flip1(t, qkv, row))
    out = verify(run, man, d / "tp2")
    assert out.startswith(f"{L1}self_attn.{seg}.{what}: mismatch [{qkv}]"), out
    assert "1 mismatch -> FAILED" in out
    out = verify(run, man, d / "tp2", ckpt)
    assert f"[{qkv} on rank 1]" in out and "1 element differs" in out, out
    assert "located by range digests" in out


@pytest.mark.parametrize("seg,row", [("gate_proj", 10), ("up_proj", 48 + 10)])
def test_flip_in_gate_and_up(dumps, run, seg, row):
    d, ckpt, man = dumps
    gu = L1 + "mlp.gate_up_proj.weight"
    mutate(d / "tp2", 0, lambda t: flip(t, gu, row, 60))
    out = verify(run, man, d / "tp2", ckpt)
    assert out.startswith(f"{L1}mlp.{seg}.weight: mismatch [{gu} on rank 0]"), out
    col = 60
    hf_row = row if seg == "gate_proj" else row - 48
    assert f"first at {hf_row * H + col} [{hf_row}, {col}]" in out, out


def test_flip_in_row_parallel_and_o_bias(dumps, run):
    d, ckpt, man = dumps
    mutate(d / "tp2", 1, lambda t: flip(t, L1 + "self_attn.o_proj.weight", 2, 7))
    out = verify(run, man, d / "tp2", ckpt)
    # rank 1 holds columns 32..64 of o_proj: local column 7 is HF column 39
    assert f"{L1}self_attn.o_proj.weight: mismatch [{L1}self_attn.o_proj.weight on rank 1]" in out
    assert f"[2, 39]" in out, out


def test_stale_kv_replica(dumps, run):
    """tp=8 > 4 kv heads: ranks 2k and 2k+1 hold kv head k; rank 3's copy goes stale."""
    d, ckpt, man = dumps
    qkv = L1 + "self_attn.qkv_proj.weight"   # per rank: q 8 rows, k 8 rows, v 8 rows
    mutate(d / "tp8", 3, lambda t: flip(t, qkv, 8 + 2, 1))
    out = verify(run, man, d / "tp8")
    assert f"{L1}self_attn.k_proj.weight: replica_mismatch [{qkv} on rank 3]" in out, out
    assert "differs from replica 0" in out and "on rank 2" in out
    # replica 0 is intact, so the HF digest still matches: only the replica is named
    assert "k_proj.weight: mismatch" not in out


def test_q_and_k_swapped(dumps, run):
    d, ckpt, man = dumps
    qkv = L1 + "self_attn.qkv_proj.weight"
    def swap(t):
        a = t[qkv].copy()
        a[0:16], a[32:48] = t[qkv][32:48], t[qkv][0:16]
        t[qkv] = a
    mutate(d / "tp2", 0, swap)
    out = verify(run, man, d / "tp2")
    assert f"{L1}self_attn.q_proj.weight: mismatch" in out
    assert f"{L1}self_attn.k_proj.weight: mismatch" in out


def test_gate_and_up_swapped(dumps, run):
    d, ckpt, man = dumps
    gu = L1 + "mlp.gate_up_proj.weight"
    def swap(t):
        a = t[gu]
        t[gu] = np.concatenate([a[48:], a[:48]])
    mutate(d / "tp2", 1, swap)
    out = verify(run, man, d / "tp2")
    assert f"{L1}mlp.gate_proj.weight: mismatch" in out and f"{L1}mlp.up_proj.weight: mismatch" in out


def test_ranks_swapped(dumps, run):
    d, ckpt, man = dumps
    a, b = rank_file(d / "tp2", 0), rank_file(d / "tp2", 1)
    os.rename(a, a + ".x")
    os.rename(b, a)
    os.rename(a + ".x", b)
    out = verify(run, man, d / "tp2")
    assert "model.embed_tokens.weight: mismatch" in out
    assert f"{L1}self_attn.q_proj.weight: mismatch" in out
    # replicated tensors (norms) still match
    assert "input_layernorm.weight: mismatch" not in out


def test_garbage_in_padding(dumps, run):
    d, ckpt, man = dumps
    emb = "model.embed_tokens.weight"   # padded vocab 1024, rank 1 rows 512..1024; 1000.. pad
    def garbage(t):
        a = t[emb].copy()
        a[1000 - 512 + 5, 3] = 1.0
        t[emb] = a
    mutate(d / "tp2", 1, garbage)
    out = verify(run, man, d / "tp2")
    assert f"{emb}: padding [{emb} on rank 1]" in out, out
    assert "first is local row 493" in out


def test_megatron_padding_is_not_required_zero(tmp_path, run):
    """Megatron trains its padded vocab rows: non-zero padding there is no finding."""
    ckpt, man = make_model(run, tmp_path, config("qwen2", 4))
    run("shard", ckpt, "--layout", "megatron", "--tp", 2, "-o", tmp_path / "m")
    emb = "embedding.word_embeddings.weight"  # vocab 1000 padded to 1024 (128 x tp)
    mutate(tmp_path / "m", 1, lambda t: t.__setitem__(emb, np.where(
        np.arange(t[emb].shape[0])[:, None] >= 1000 - 512, 0.5, t[emb]).astype(np.float32)))
    assert run("verify", man, tmp_path / "m").returncode == 0


def test_missing_rank_file(dumps, run):
    d, ckpt, man = dumps
    os.remove(rank_file(d / "tp8", 5))
    out = verify(run, man, d / "tp8")
    assert "(dump): missing [rank 5]: no model-rank-5-part-*.safetensors file" in out, out
    assert "cannot be rebuilt" in out


def test_missing_and_unexpected_tensor(dumps, run):
    d, ckpt, man = dumps
    def edit(t):
        del t[L1 + "mlp.down_proj.weight"]
        t["model.layers.1.mlp.extra.weight"] = np.zeros(3, np.float32)
    mutate(d / "tp2", 1, edit)
    out = verify(run, man, d / "tp2")
    assert f"{L1}mlp.down_proj.weight: missing [{L1}mlp.down_proj.weight on rank 1]" in out, out
    assert "model.layers.1.mlp.extra.weight: unexpected" in out


def test_row_parallel_shard_transposed(dumps, run):
    d, ckpt, man = dumps
    mutate(d / "tp2", 0, lambda t: t.__setitem__(L1 + "mlp.down_proj.weight",
                                                 np.ascontiguousarray(t[L1 + "mlp.down_proj.weight"].T)))
    out = verify(run, man, d / "tp2")
    assert f"{L1}mlp.down_proj.weight: shape [{L1}mlp.down_proj.weight on rank 0]" in out, out
    assert "local shape [64, 48] expected" in out


def test_flip_in_replicated_o_proj_bias(tmp_path, run):
    """Llama with attention_bias: o_proj's bias is replicated on every rank."""
    ckpt, man = make_model(run, tmp_path, config("llama", 4, bias=True))
    run("shard", ckpt, "--layout", "vllm", "--tp", 2, "-o", tmp_path / "d")
    bias = L1 + "self_attn.o_proj.bias"
    mutate(tmp_path / "d", 1, lambda t: flip1(t, bias, 9))
    out = verify(run, man, tmp_path / "d")
    assert f"{bias}: replica_mismatch [{bias} on rank 1]" in out, out
    mutate(tmp_path / "d", 0, lambda t: flip1(t, bias, 9))  # now replica 0 is the odd one
    out = verify(run, man, tmp_path / "d")
    assert f"{bias}: mismatch [{bias} on rank 0]" in out, out


def test_square_shard_transposed(tmp_path, run):
    """A transposed shard of the same shape is caught by its digest."""
    cfg = config("llama", 8)
    cfg["intermediate_size"] = 128  # down_proj local [64, 64] at tp=2: square
    ckpt, man = make_model(run, tmp_path, cfg)
    run("shard", ckpt, "--layout", "vllm", "--tp", 2, "-o", tmp_path / "d")
    name = L1 + "mlp.down_proj.weight"
    mutate(tmp_path / "d", 1, lambda t: t.__setitem__(name, np.ascontiguousarray(t[name].T)))
    out = verify(run, man, tmp_path / "d", ckpt)
    assert f"{name}: mismatch [{name} on rank 1]" in out


def test_megatron_interleaved_segment(tmp_path, run):
    ckpt, man = make_model(run, tmp_path, config("qwen2", 4))
    run("shard", ckpt, "--layout", "megatron", "--tp", 2, "-o", tmp_path / "m")
    # rank 1 holds query groups 2, 3; each group: 2 q heads (16 rows), k (8), v (8).
    # Row 32 + 16 + 2 is group 3's k, head 3: k_proj row 3 * 8 + 2 = 26.
    qkv = "decoder.layers.1.self_attention.linear_qkv.weight"
    mutate(tmp_path / "m", 1, lambda t: flip(t, qkv, 32 + 16 + 2, 9))
    out = verify(run, man, tmp_path / "m", ckpt)
    assert f"{L1}self_attn.k_proj.weight: mismatch [{qkv} on rank 1]" in out, out
    assert "[26, 9]" in out


def test_tied_lm_head(tmp_path, run):
    cfg = config("qwen2", 8, tied=True)
    ckpt, man = make_model(run, tmp_path, cfg)
    run("shard", ckpt, "--layout", "sglang", "--tp", 2, "-o", tmp_path / "d")
    assert run("verify", man, tmp_path / "d").returncode == 0
    # a trainer manifest that lists lm_head (tied): equal to the embedding -> match
    doc = json.loads(open(man).read())
    doc["tensors"]["lm_head.weight"] = dict(doc["tensors"]["model.embed_tokens.weight"])
    (tmp_path / "with_head.json").write_text(json.dumps(doc))
    r = run("verify", tmp_path / "with_head.json", tmp_path / "d")
    assert r.returncode == 0, r.stdout
    # a trainer whose lm_head stopped following its embedding -> named
    doc["tensors"]["lm_head.weight"]["sha256"] = "0" * 64
    (tmp_path / "stale_head.json").write_text(json.dumps(doc))
    out = verify(run, tmp_path / "stale_head.json", tmp_path / "d")
    assert "lm_head.weight: mismatch: the engine ties it to model.embed_tokens.weight" in out
    # an engine's sharded_state saver keeps the tied tensor under its smaller key,
    # lm_head.weight: the same dump under that name verifies too
    for rank in (0, 1):
        mutate(tmp_path / "d", rank, lambda t: t.__setitem__("lm_head.weight",
                                                             t.pop("model.embed_tokens.weight")))
    assert run("verify", man, tmp_path / "d").returncode == 0
    # and if both names are saved, they must hold the same bytes
    mutate(tmp_path / "d", 1, lambda t: t.__setitem__("model.embed_tokens.weight",
                                                      np.zeros_like(t["lm_head.weight"])))
    out = verify(run, man, tmp_path / "d")
    assert "replica_mismatch" in out and "are one tied tensor but differ" in out


def test_transformers_checkpoint_round_trip(tmp_path, run):
    """The transformers-written Qwen2 (vocab 250) through every engine layout."""
    src = os.path.join(ROOT, "tests", "vectors", "transformers_qwen2")
    man = tmp_path / "m.json"
    assert run("hash", os.path.join(src, "model.safetensors"), "-o", man).returncode == 0
    for family, tp in (("sglang", 2), ("vllm", 2), ("megatron", 2)):
        out = tmp_path / family
        r = run("shard", os.path.join(src, "model.safetensors"), "--layout", family, "--tp", tp,
                "-o", out)
        assert r.returncode == 0, r.stderr
        assert run("verify", man, out).returncode == 0


def test_layout_errors_are_one_line(tmp_path, run):
    ckpt, man = make_model(run, tmp_path, config("qwen2", 2))
    r = run("shard", ckpt, "--layout", "sglang", "--tp", 3, "-o", tmp_path / "x")
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1
    r = run("shard", ckpt, "--layout", "tensorrt", "--tp", 2, "-o", tmp_path / "x")
    assert r.returncode == 2
    os.makedirs(tmp_path / "bare")
    shutil.copy(ckpt, tmp_path / "bare" / "model-rank-0-part-0.safetensors")
    r = run("verify", man, tmp_path / "bare")
    assert r.returncode == 2 and "--layout" in r.stderr
