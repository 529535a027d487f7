"""Our SHA-256 equals hashlib.sha256 of the canonical bytes, for checkpoints written by the
reference safetensors package (every dtype, 0-d and empty tensors, odd shapes, hundreds of
tensors, sharded with an index) and by transformers (vectors made with PyTorch)."""
import hashlib
import json
import os

import ml_dtypes
import numpy as np
import pytest
from safetensors.numpy import save_file

from conftest import ROOT, parse_lines

BF16 = ml_dtypes.bfloat16
rng = np.random.default_rng(20261128)


def canonical_bf16(a):
    """PyTorch's cast to bf16 (round to nearest even; f64 goes through f32 first), done here by
    ml_dtypes, an independent implementation. Integers and bools are never cast."""
    if a.dtype == np.float64:
        a = a.astype(np.float32)
    if a.dtype in (np.float32, np.float16) or a.dtype in (ml_dtypes.float8_e4m3fn,
                                                          ml_dtypes.float8_e5m2):
        return a.astype(BF16)
    return a


def sha(a):
    return hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()


def every_dtype():
    t = {}
    shapes = [(7, 13), (3,), (), (0, 5), (2, 3, 5)]
    for i, shape in enumerate(shapes):
        t[f"f32.{i}"] = rng.standard_normal(shape).astype(np.float32)
        t[f"f64.{i}"] = rng.standard_normal(shape)
        t[f"f16.{i}"] = rng.standard_normal(shape).astype(np.float16)
        t[f"bf16.{i}"] = rng.standard_normal(shape).astype(BF16)
        t[f"e4m3.{i}"] = rng.standard_normal(shape).astype(ml_dtypes.float8_e4m3fn)
        t[f"e5m2.{i}"] = rng.standard_normal(shape).astype(ml_dtypes.float8_e5m2)
        for dt in (np.int8, np.uint8, np.int16, np.uint16, np.int32, np.uint32, np.int64,
                   np.uint64):
            t[f"{np.dtype(dt).name}.{i}"] = rng.integers(0, 100, shape).astype(dt)
        t[f"bool.{i}"] = rng.integers(0, 2, shape).astype(bool)
    return t


@pytest.mark.parametrize("policy", ["bf16", "native"])
def test_every_dtype(tmp_path, run, policy):
    tensors = every_dtype()
    path = tmp_path / "all.safetensors"
    save_file(tensors, str(path))
    r = run("hash", path, "--canonical", policy)
    assert r.returncode == 0, r.stderr
    got = parse_lines(r.stdout)
    assert set(got) == set(tensors)
    for name, a in tensors.items():
        want = sha(canonical_bf16(a) if policy == "bf16" else a)
        assert got[name] == want, name


def test_hundreds_of_tensors_sharded_with_index(tmp_path, run):
    tensors = {f"model.layers.{i}.w": rng.standard_normal((i % 17 + 1, 3)).astype(np.float32)
               for i in range(300)}
    names = sorted(tensors)
    weight_map = {}
    for k in range(3):
        fname = f"model-0000{k + 1}-of-00003.safetensors"
        part = {n: tensors[n] for n in names[k::3]}
        save_file(part, str(tmp_path / fname))
        weight_map.update({n: fname for n in part})
    (tmp_path / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {"total_size": 0}, "weight_map": weight_map}))
    for target in (tmp_path, tmp_path / "model.safetensors.index.json"):
        r = run("hash", target, "-j", "2")
        assert r.returncode == 0, r.stderr
        got = parse_lines(r.stdout)
        assert got == {n: sha(canonical_bf16(a)) for n, a in tensors.items()}
    # threads do not change the answer
    assert run("hash", tmp_path, "-j", "1").stdout == run("hash", tmp_path, "-j", "2").stdout


def test_nan_and_inf_are_reported(tmp_path, run):
    a = np.array([1.0, np.nan, np.inf, -np.inf], dtype=np.float32)
    save_file({"w": a}, str(tmp_path / "m.safetensors"))
    r = run("hash", tmp_path / "m.safetensors")
    assert r.returncode == 0
    assert "tensor 'w' holds 1 NaN and 2 Inf" in r.stderr
    # the documented NaN policy: every NaN becomes 0x7FC0
    canon = np.array([0x3F80, 0x7FC0, 0x7F80, 0xFF80], dtype="<u2")
    assert parse_lines(r.stdout)["w"] == sha(canon)


@pytest.mark.parametrize("policy", ["bf16", "native"])
def test_transformers_save_pretrained(run, policy):
    """A checkpoint written by transformers, digests computed by PyTorch + hashlib."""
    d = os.path.join(ROOT, "tests", "vectors", "transformers_qwen2")
    r = run("hash", os.path.join(d, "model.safetensors"), "--canonical", policy)
    assert r.returncode == 0, r.stderr
    with open(os.path.join(d, f"expected-{policy}.sha256")) as f:
        assert parse_lines(r.stdout) == parse_lines(f.read())
    # and the PyTorch line file verifies as a manifest
    r = run("verify", os.path.join(d, f"expected-{policy}.sha256"),
            os.path.join(d, "model.safetensors"), "--canonical", policy)
    assert r.returncode == 0, r.stdout + r.stderr


def test_torch_itself_when_available(tmp_path, run):
    torch = pytest.importorskip("torch")
    from safetensors.torch import save_file as save_torch
    t = {"f32": torch.randn(33, 17), "f16": torch.randn(9).half(), "f64": torch.randn(4, 4).double(),
         "bf16": torch.randn(5).bfloat16(), "e4m3": torch.randn(64).to(torch.float8_e4m3fn)}
    save_torch(t, str(tmp_path / "t.safetensors"))
    got = parse_lines(run("hash", tmp_path / "t.safetensors").stdout)
    for name, x in t.items():
        want = hashlib.sha256(x.to(torch.bfloat16).contiguous().view(torch.uint8).numpy()).hexdigest()
        assert got[name] == want, name
