"""The batch calls on host tensors (numpy, CPU torch): read in place whatever the strides,
equal to hashlib on the contiguous canonical bytes and to the one-tensor calls; dicts answer
by name; a changed element changes the answer."""
import hashlib
import os
import sys

import ml_dtypes
import numpy as np
import pytest

from conftest import ROOT

sys.path.insert(0, os.path.join(ROOT, "python"))
import weightsum  # noqa: E402
from weightsum.cuda import Batch  # noqa: E402

rng = np.random.default_rng(11)


def views():
    a = rng.standard_normal((37, 41)).astype(np.float32)
    yield "f32", a
    yield "f32.T", a.T
    yield "f32 step", a[1:, ::3]
    yield "f64 rev", rng.standard_normal(100)[::-1]
    b = rng.integers(0, 2**16, (5, 7, 9), dtype=np.uint16).view(ml_dtypes.bfloat16)
    yield "bf16 perm", b.transpose(2, 0, 1)
    yield "i32 empty", np.zeros((0, 4), np.int32)
    yield "u8 scalar", np.uint8(7)


def canonical_bytes(x):
    x = np.ascontiguousarray(x)
    if x.dtype in (np.float32, np.float64, np.float16):
        return x.astype(np.float32).astype(ml_dtypes.bfloat16).tobytes()
    return x.tobytes()


def test_views_equal_hashlib_and_single_calls():
    named = dict(views())
    got = weightsum.sha256_tensors(named)
    fast = weightsum.fast_tensors(named)
    for k, x in named.items():
        assert got[k] == hashlib.sha256(canonical_bytes(x)).hexdigest(), k
        assert got[k] == weightsum.sha256_tensor(x), k
        assert fast[k] == weightsum.fast_tensor(np.array(x, order="C")), k  # 0-d stays 0-d


def test_torch_cpu_views_in_place():
    torch = pytest.importorskip("torch")
    t = torch.randn(6, 9, 4).permute(2, 0, 1)[:, 1:, ::2]
    d = weightsum.digest_tensors([t, t.contiguous()], stats=True)
    assert d[0] == d[1]
    assert weightsum.sglang_hash_tensors([t]) == weightsum.sglang_hash_tensors([t.contiguous()])


def test_packed_batch_reused_and_change_caught():
    a = rng.standard_normal((64, 64)).astype(np.float32)
    b = Batch({"a": a[:, 1:]})
    before = weightsum.digest_tensors(b)["a"]
    assert weightsum.digest_tensors(b)["a"] == before
    a[3, 5] += 1.0
    after = weightsum.digest_tensors(b)["a"]
    assert after["sha256"] != before["sha256"] and after["fast"] != before["fast"]


def test_nan_inf_counts():
    x = np.array([np.nan, np.inf, -np.inf, 1.0, 3.4e38], np.float32)[::-1]
    d = weightsum.digest_tensors([x], stats=True)[0]
    assert (d["nan"], d["inf"]) == (1, 2)  # 3.4e38 rounds to bf16 Inf but is finite as stored
