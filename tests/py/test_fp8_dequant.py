"""ws_fp8_block_dequant_bf16 against PyTorch: SGLang's block_quant_dequant
((q.to(float32) * scale.repeat_interleave(bn, 0).repeat_interleave(bk, 1)[:n, :k]).to(bfloat16)),
bit for bit, over every e4m3 value, partial blocks, overflowing and NaN products, inferred block
sizes and row ranges."""
import ctypes
import os

import numpy as np
import pytest
import torch

from conftest import ROOT


def lib():
    L = ctypes.CDLL(os.environ.get("WEIGHTSUM_LIB", os.path.join(ROOT, "build", "libweightsum.so")))
    f = L.ws_fp8_block_dequant_bf16
    u64 = ctypes.c_uint64
    f.argtypes = [ctypes.c_void_p, ctypes.c_void_p, u64, u64, u64, u64, ctypes.c_uint32,
                  ctypes.c_uint32, u64, u64, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p]
    f.restype = ctypes.c_int
    return L


def ours(q, s, bn, bk, row0=0, nrows=None):
    n, k = q.shape
    nrows = n - row0 if nrows is None else nrows
    out = np.zeros((nrows, k), np.uint16)
    stats = (ctypes.c_uint64 * 2)()
    err = ctypes.create_string_buffer(4096)
    q = np.ascontiguousarray(q)
    s = np.ascontiguousarray(s, np.float32)
    rc = lib().ws_fp8_block_dequant_bf16(q.ctypes.data, s.ctypes.data, n, k, s.shape[0],
                                         s.shape[1], bn, bk, row0, nrows, out.ctypes.data, stats,
                                         err)
    return rc, out, (stats[0], stats[1]), err


def is_nan(b):
    return ((b & 0x7F80) == 0x7F80) & ((b & 0x7F) != 0)


def same(out, ref):
    """Bit-equal, except that a NaN is 0x7FC0 on our side (the canonical cast's NaN) and any
    NaN in PyTorch's (its CPU cast's NaN pattern differs between releases; docs/canonical.md)."""
    nan = is_nan(ref)
    return np.array_equal(out[~nan], ref[~nan]) and np.all(out[nan] == 0x7FC0) and \
        not np.any(is_nan(out[~nan]))


def torch_ref(q, s, bn, bk):
    n, k = q.shape
    x = torch.from_numpy(q.copy()).view(torch.float8_e4m3fn).to(torch.float32)
    rep = torch.from_numpy(s).repeat_interleave(bn, 0).repeat_interleave(bk, 1)[:n, :k]
    return (x * rep).to(torch.bfloat16).view(torch.int16).numpy().view(np.uint16)


@pytest.mark.parametrize("n,k,bn,bk", [(256, 256, 128, 128), (300, 200, 128, 128),
                                       (16, 512, 128, 128), (96, 64, 32, 16)])
def test_matches_torch(n, k, bn, bk):
    rng = np.random.default_rng(n * k)
    q = rng.integers(0, 256, (n, k), dtype=np.uint8)
    q.reshape(-1)[:256] = np.arange(256, dtype=np.uint8)  # every e4m3 value, NaNs 0x7f/0xff included
    s = (rng.standard_normal((-(-n // bn), -(-k // bk))) * 1e-3).astype(np.float32)
    s.reshape(-1)[0] = 3e38  # overflowing products: inf
    s.reshape(-1)[-1] = 1e-40  # subnormal scale
    rc, out, (nan, inf), _ = ours(q, s, bn, bk)
    assert rc == 0
    ref = torch_ref(q, s, bn, bk)
    assert same(out, ref), np.argwhere(out != ref)[:5]
    assert nan >= 2 and inf >= 1


def test_inferred_block_and_row_range():
    rng = np.random.default_rng(7)
    q = rng.integers(0, 256, (256, 384), dtype=np.uint8)
    s = rng.random((2, 3), dtype=np.float32)
    ref = torch_ref(q, s, 128, 128)
    rc, out, _, _ = ours(q, s, 0, 0, row0=100, nrows=60)  # SGLang infers 384 / 3 = 128
    assert rc == 0 and same(out, ref[100:160])
    # k = 192 with 2 scale columns: SGLang infers a block of 96 (and hashes that)
    q2, s2 = q[:, :192].copy(), rng.random((3, 2), dtype=np.float32)
    rc, out, _, _ = ours(q2, s2, 0, 0)
    assert rc == 0 and same(out, torch_ref(q2, s2, 96, 96))


def test_refusals():
    q = np.zeros((256, 200), np.uint8)
    rc, _, _, err = ours(q, np.ones((2, 3), np.float32), 0, 0)  # 200 % 3: SGLang's assert
    assert rc != 0 and b"inferred" in err.raw
    rc, _, _, err = ours(q, np.ones((1, 2), np.float32), 128, 128)  # does not cover 256 rows
    assert rc != 0 and b"does not cover" in err.raw
    rc, _, _, _ = ours(q, np.ones((2, 2), np.float32), 128, 0)
    assert rc != 0
    rc, _, _, _ = ours(q, np.ones((2, 2), np.float32), 128, 128, row0=200, nrows=100)
    assert rc != 0
