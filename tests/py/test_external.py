"""Checks against shards written by code we did not write: transformers' tensor parallelism
(tests/vectors/transformers_tp2, written by tests/external/transformers_tp_dump.py under
torchrun from the save_pretrained checkpoint tests/vectors/transformers_qwen2)."""
import os
import shutil

import numpy as np
from safetensors.numpy import load_file, save_file

from conftest import ROOT, parse_lines

VEC = os.path.join(ROOT, "tests", "vectors")
SRC = os.path.join(VEC, "transformers_qwen2")
TP2 = os.path.join(VEC, "transformers_tp2")
L1 = "model.layers.1."


def test_transformers_tp_shards_verify_against_pytorch_digests(run):
    # the manifest is PyTorch's own hashlib digests of the original tensors, cast to bf16
    r = run("verify", os.path.join(SRC, "expected-bf16.sha256"), TP2, "--layout", "transformers",
            "--tp", 2)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "27 matched -> OK" in r.stdout


def test_transformers_tp_fast_digest_equals_checkpoint(run):
    a = run("hash", os.path.join(SRC, "model.safetensors"), "--algo", "fast")
    b = run("hash", TP2, "--layout", "transformers", "--tp", 2, "--algo", "fast")
    assert b.returncode == 0, b.stderr
    assert parse_lines(a.stdout) == parse_lines(b.stdout)


def test_our_sglang_shards_match_transformers_slicing(tmp_path, run):
    """Our fused SGLang layout, built by weightsum shard, holds on each rank exactly the slices
    transformers' TP gives that rank (kv heads = tp here, so kv shards coincide)."""
    out = tmp_path / "sglang"
    assert run("shard", os.path.join(SRC, "model.safetensors"), "--layout", "sglang", "--tp", 2,
               "-o", out).returncode == 0
    for rank in (0, 1):
        ours = load_file(str(out / f"model-rank-{rank}-part-0.safetensors"))
        theirs = load_file(os.path.join(TP2, f"model-rank-{rank}-part-0.safetensors"))
        for i in range(2):
            p = f"model.layers.{i}."
            for kind in ("weight", "bias"):
                fused = np.concatenate([theirs[p + f"self_attn.{x}_proj.{kind}"] for x in "qkv"])
                assert np.array_equal(ours[p + f"self_attn.qkv_proj.{kind}"], fused)
            gu = np.concatenate([theirs[p + "mlp.gate_proj.weight"], theirs[p + "mlp.up_proj.weight"]])
            assert np.array_equal(ours[p + "mlp.gate_up_proj.weight"], gu)
            for name in ("self_attn.o_proj.weight", "mlp.down_proj.weight",
                         "input_layernorm.weight", "post_attention_layernorm.weight"):
                assert np.array_equal(ours[p + name], theirs[p + name]), name
        # vocab 250: SGLang pads to 256 (128 rows a rank), transformers splits 125 + 125
        base = 128 * rank
        full = load_file(os.path.join(SRC, "model.safetensors"))["model.embed_tokens.weight"]
        rows = min(128, 250 - base)
        assert np.array_equal(ours["model.embed_tokens.weight"][:rows], full[base:base + rows])
        assert not ours["model.embed_tokens.weight"][rows:].any()  # zero padding
        assert np.array_equal(theirs["model.embed_tokens.weight"], full[125 * rank:125 * rank + 125])


def test_corrupted_transformers_shard_is_named(tmp_path, run):
    d = tmp_path / "tp2"
    shutil.copytree(TP2, d)
    f = d / "model-rank-1-part-0.safetensors"
    t = load_file(str(f))
    k = t[L1 + "self_attn.k_proj.weight"].copy()
    k.view(np.uint32)[3, 4] ^= np.uint32(1 << 30)
    t[L1 + "self_attn.k_proj.weight"] = k
    save_file(t, str(f))
    r = run("verify", os.path.join(SRC, "expected-bf16.sha256"), d, "--layout", "transformers",
            "--tp", 2, "--locate", os.path.join(SRC, "model.safetensors"))
    assert r.returncode == 1
    # 2 kv heads of 16 dims: rank 1 holds k_proj rows 16..32, so local row 3 is HF row 19
    assert (f"{L1}self_attn.k_proj.weight: mismatch [{L1}self_attn.k_proj.weight on rank 1] "
            "rows 19..20: 1 element differs; first at 1220 [19, 4]") in r.stdout, r.stdout


def test_transformers_tp_on_gpus_with_nccl(run):
    """The same dump made on two H200s (NCCL, transformers 5.17): bit for bit the shards of the
    CPU run, except that this transformers version kept embed_tokens whole on every rank. The
    transformers layout (5.24's plan) says exactly that, and every other tensor matches."""
    gpu = os.path.join(VEC, "transformers_tp2_nccl")
    for rank in (0, 1):
        a = load_file(os.path.join(gpu, f"model-rank-{rank}-part-0.safetensors"))
        b = load_file(os.path.join(TP2, f"model-rank-{rank}-part-0.safetensors"))
        assert a.keys() == b.keys()
        for name in a:
            if name != "model.embed_tokens.weight":
                assert np.array_equal(a[name], b[name]), name
        assert a["model.embed_tokens.weight"].shape == (250, 64)
    r = run("verify", os.path.join(SRC, "expected-bf16.sha256"), gpu, "--layout", "transformers",
            "--tp", 2)
    assert r.returncode == 1
    assert ("model.embed_tokens.weight: shape [model.embed_tokens.weight on rank 0]: local shape "
            "[125, 64] expected for transformers tp=2, [250, 64] found") in r.stdout
    assert r.stdout.splitlines()[-1].endswith(": 26 matched, 1 missing, 2 shape -> FAILED")
