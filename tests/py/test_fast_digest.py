"""The layout-invariant fast digest: the same digest from the HF checkpoint and from every
family x tp of the layouts; a manifest from one engine's layout verifies another's; the
mutation suite caught by fast digests too; --key changes every digest; localisation."""
import json
import os

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from conftest import parse_lines
from test_layouts import CONFIGS, L1, config, flip, make_model, mutate, rank_file


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_invariance_every_family_and_tp(tmp_path, run, name):
    ckpt, _ = make_model(run, tmp_path, CONFIGS[name])
    want = run("hash", ckpt, "--algo", "fast")
    assert want.returncode == 0
    assert all(len(d) == 48 for d in parse_lines(want.stdout).values())
    n = 0
    for family in ("sglang", "vllm", "megatron", "transformers"):
        for tp in (1, 2, 4, 8):
            out = tmp_path / f"{family}{tp}"
            if run("shard", ckpt, "--layout", family, "--tp", tp, "-o", out).returncode:
                continue
            got = run("hash", out, "--algo", "fast")
            assert got.returncode == 0, got.stderr
            assert got.stdout == want.stdout, f"{family} tp={tp}"
            n += 1
    assert n >= 6


def test_cross_layout_manifests(tmp_path, run):
    """A manifest made from an SGLang TP=4 dump verifies a Megatron TP=2 dump, and back."""
    ckpt, _ = make_model(run, tmp_path, config("qwen2", 4))
    run("shard", ckpt, "--layout", "sglang", "--tp", 4, "-o", tmp_path / "s")
    run("shard", ckpt, "--layout", "megatron", "--tp", 2, "-o", tmp_path / "m")
    assert run("hash", tmp_path / "s", "--algo", "fast", "-o", tmp_path / "s.json").returncode == 0
    assert run("hash", tmp_path / "m", "--algo", "fast", "-o", tmp_path / "m.json").returncode == 0
    assert json.loads((tmp_path / "s.json").read_text())["algorithms"] == ["fast"]
    assert run("verify", tmp_path / "s.json", tmp_path / "m").returncode == 0
    assert run("verify", tmp_path / "m.json", tmp_path / "s").returncode == 0
    # and a corruption on the Megatron side is named against the SGLang-made manifest
    qkv = "decoder.layers.1.self_attention.linear_qkv.weight"
    mutate(tmp_path / "m", 0, lambda t: flip(t, qkv, 3, 3))
    r = run("verify", tmp_path / "s.json", tmp_path / "m")
    assert r.returncode == 1 and f"{L1}self_attn.q_proj.weight: mismatch" in r.stdout


@pytest.fixture
def fast_setup(tmp_path, run):
    ckpt, _ = make_model(run, tmp_path, config("qwen2", 4))
    man = tmp_path / "fast.json"
    assert run("hash", ckpt, "--algo", "fast", "-o", man).returncode == 0
    for tp in (2, 8):
        run("shard", ckpt, "--layout", "sglang", "--tp", tp, "-o", tmp_path / f"tp{tp}")
    return tmp_path, ckpt, man


MUTATIONS = {
    "q": (2, 1, lambda t: flip(t, L1 + "self_attn.qkv_proj.weight", 5, 3), "self_attn.q_proj.weight: mismatch"),
    "k": (2, 1, lambda t: flip(t, L1 + "self_attn.qkv_proj.weight", 35, 3), "self_attn.k_proj.weight: mismatch"),
    "v": (2, 0, lambda t: flip(t, L1 + "self_attn.qkv_proj.weight", 50, 3), "self_attn.v_proj.weight: mismatch"),
    "gate": (2, 0, lambda t: flip(t, L1 + "mlp.gate_up_proj.weight", 1, 1), "mlp.gate_proj.weight: mismatch"),
    "up": (2, 0, lambda t: flip(t, L1 + "mlp.gate_up_proj.weight", 60, 1), "mlp.up_proj.weight: mismatch"),
    "stale": (8, 5, lambda t: flip(t, L1 + "self_attn.qkv_proj.weight", 17, 2), "self_attn.v_proj.weight: replica_mismatch"),
    "padding": (2, 1, lambda t: t.__setitem__("lm_head.weight", np.where(
        np.arange(t["lm_head.weight"].shape[0])[:, None] == 500, 1.0, t["lm_head.weight"]).astype(np.float32)),
        "lm_head.weight: padding"),
}


@pytest.mark.parametrize("what", sorted(MUTATIONS))
def test_mutations_caught_by_fast_digest(fast_setup, run, what):
    d, ckpt, man = fast_setup
    tp, rank, fn, text = MUTATIONS[what]
    mutate(d / f"tp{tp}", rank, fn)
    r = run("verify", man, d / f"tp{tp}")
    assert r.returncode == 1 and text in r.stdout, r.stdout


def test_key_changes_digests(tmp_path, run):
    ckpt, _ = make_model(run, tmp_path, config("llama", 4))
    a = parse_lines(run("hash", ckpt, "--algo", "fast").stdout)
    b = parse_lines(run("hash", ckpt, "--algo", "fast", "--key", "fresh-per-check").stdout)
    assert a.keys() == b.keys() and all(a[k] != b[k] for k in a)
    m = tmp_path / "k.json"
    run("hash", ckpt, "--algo", "fast", "--key", "fresh-per-check", "-o", m)
    r = run("verify", m, ckpt)
    assert r.returncode == 2 and "pass its --key" in r.stderr
    assert run("verify", m, ckpt, "--key", "fresh-per-check").returncode == 0


def test_both_algorithms_and_threads(tmp_path, run):
    ckpt, _ = make_model(run, tmp_path, config("qwen3", 2))
    doc = json.loads(run("hash", ckpt, "--algo", "both", "--json").stdout)
    assert doc["algorithms"] == ["sha256", "fast"] and doc["key_id"]
    t = next(iter(doc["tensors"].values()))
    assert len(t["sha256"]) == 64 and len(t["fast"]) == 48
    one = run("hash", ckpt, "--algo", "fast", "-j", 1).stdout
    assert one == run("hash", ckpt, "--algo", "fast", "-j", 2).stdout


def test_locate_many_elements(fast_setup, run):
    """Several corrupted elements in one tensor: localisation finds them all, by digests."""
    d, ckpt, man = fast_setup
    down = L1 + "mlp.down_proj.weight"   # rank 1 holds HF columns 48..96
    def several(t):
        a = t[down].copy()
        for r, c in ((0, 0), (7, 30), (63, 47)):
            a.view(np.uint32)[r, c] ^= np.uint32(1 << 30)
        t[down] = a
    mutate(d / "tp2", 1, several)
    r = run("verify", man, d / "tp2", "--locate", ckpt)
    assert r.returncode == 1
    assert f"{down}: mismatch [{down} on rank 1] rows 0..1: 3 elements differ; first at 48 [0, 48]" in r.stdout, r.stdout
    assert "element [0, 0] of " + down + " on rank 1" in r.stdout
