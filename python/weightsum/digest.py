"""Digests of numpy arrays and torch tensors, bit for bit those of weightsum's manifests.

sha256_tensor(x) equals
hashlib.sha256(t.to(torch.bfloat16).contiguous().view(torch.uint8).numpy()).hexdigest()
for floating x (canonical "bf16"; "native" hashes the stored bytes), computed by the library's
own cast and digest. Torch tensors (CUDA ones included) and numpy arrays are read in place,
whatever their strides: weightsum.cuda describes them (the package's one tensor description).
"""
from __future__ import annotations

import ctypes
from typing import Any, Optional

from ._lib import ALGO_FAST, ALGO_SHA256, _Error, _P, check, encode, lib
from .cuda import digest_one


def sha256_tensor(x: Any, canonical: str = "bf16") -> str:
    """SHA-256 (64 lowercase hex digits) of x's canonical bytes: a numpy array (ml_dtypes
    bfloat16/float8 included), anything numpy.asarray takes, or a torch tensor."""
    d = digest_one(x, canonical, ALGO_SHA256, None)
    buf = ctypes.create_string_buffer(65)
    lib.ws_sha256_hex(d.sha256, buf)
    return buf.value.decode()


def fast_tensor(x: Any, canonical: str = "bf16", key: Optional[str] = None) -> str:
    """The fast digest (48 hex digits, docs/fast-digest.md) of x's canonical bytes, under the
    key of seed `key` (default: the public seed)."""
    k, err = _P(), _Error()
    seed = encode(key) if key is not None else b"weightsum-fast-digest-v1"
    check(lib.ws_fastkey_create(seed, len(seed), ctypes.byref(k), ctypes.byref(err)), err)
    try:
        d = digest_one(x, canonical, ALGO_FAST, k)
    finally:
        lib.ws_fastkey_free(k)
    buf = ctypes.create_string_buffer(49)
    lib.ws_fast_hex(ctypes.byref(d.fast), buf)
    return buf.value.decode()
