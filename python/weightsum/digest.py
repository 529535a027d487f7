"""Digests of numpy arrays and torch tensors, bit for bit those of weightsum's manifests.

sha256_tensor(x) equals
hashlib.sha256(t.to(torch.bfloat16).contiguous().view(torch.uint8).numpy()).hexdigest()
for floating x (canonical "bf16"; "native" hashes the stored bytes), computed by the library's
own cast and digest. Torch tensors (CUDA ones included) and numpy arrays are read in place,
whatever their strides (weightsum.cuda).
"""
from __future__ import annotations

import ctypes
import sys
from typing import Any, Optional, Tuple

from ._lib import ALGO_FAST, ALGO_SHA256, CANON, _Digest, _Error, _P, check, encode, lib

# numpy / ml_dtypes dtype names and torch dtypes -> safetensors dtype names
_NUMPY = {"bool": "BOOL", "uint8": "U8", "int8": "I8", "int16": "I16", "uint16": "U16",
          "int32": "I32", "uint32": "U32", "int64": "I64", "uint64": "U64", "float16": "F16",
          "bfloat16": "BF16", "float32": "F32", "float64": "F64", "float8_e4m3fn": "F8_E4M3",
          "float8_e5m2": "F8_E5M2"}
_TORCH = {"torch.bool": "BOOL", "torch.uint8": "U8", "torch.int8": "I8", "torch.int16": "I16",
          "torch.uint16": "U16", "torch.int32": "I32", "torch.uint32": "U32",
          "torch.int64": "I64", "torch.uint64": "U64", "torch.float16": "F16",
          "torch.bfloat16": "BF16", "torch.float32": "F32", "torch.float64": "F64",
          "torch.float8_e4m3fn": "F8_E4M3", "torch.float8_e5m2": "F8_E5M2"}


def _dtype_code(name: str) -> int:
    code = ctypes.c_int()
    if lib.ws_dtype_from_name(name.encode(), ctypes.byref(code)) != 0:
        raise TypeError(f"dtype {name} unknown to weightsum")
    return code.value


def _is_torch(x: Any) -> bool:
    return type(x).__module__.split(".")[0] == "torch" and hasattr(x, "data_ptr")


def _buffer(x: Any) -> Tuple[int, int, Tuple[int, ...], Any]:
    """(dtype code, pointer, shape, keep-alive) of x's C-contiguous little-endian bytes."""
    if _is_torch(x):
        t = x.detach()
        if t.device.type != "cpu":
            t = t.cpu()
        t = t.contiguous()
        name = _TORCH.get(str(t.dtype))
        if name is None:
            raise TypeError(f"unsupported torch dtype {t.dtype}")
        return _dtype_code(name), t.data_ptr(), tuple(t.shape), t
    import numpy as np
    a = np.asarray(x)
    name = _NUMPY.get(a.dtype.name)
    if name is None:
        raise TypeError(f"unsupported dtype {a.dtype}")
    if a.dtype.byteorder == ">" or (a.dtype.byteorder == "=" and sys.byteorder == "big"):
        a = a.astype(a.dtype.newbyteorder("<"))
    a = np.ascontiguousarray(a)
    return _dtype_code(name), a.ctypes.data, a.shape, a


def _digest(x: Any, canonical: str, algos: int, key: Any) -> _Digest:
    if canonical not in CANON:
        raise ValueError("canonical must be 'bf16' or 'native'")
    if _is_torch(x) or type(x).__module__.split(".")[0] == "numpy":
        from .cuda import digest_one  # in place: CUDA/CPU tensors, numpy arrays, any strides
        return digest_one(x, canonical, algos, key)
    code, ptr, shape, keep = _buffer(x)
    numel = 1
    for n in shape:
        numel *= n
    # the shape is part of the digest: the fast one is sealed with it (docs/fast-digest.md)
    dims = (ctypes.c_uint64 * max(len(shape), 1))(*shape)
    out, err = _Digest(), _Error()
    rc = lib.ws_digest_buffer(code, CANON[canonical], ptr if numel else None, len(shape), dims,
                              algos, key, ctypes.byref(out), None, ctypes.byref(err))
    del keep
    check(rc, err)
    return out


def sha256_tensor(x: Any, canonical: str = "bf16") -> str:
    """SHA-256 (64 lowercase hex digits) of x's canonical bytes: a numpy array (ml_dtypes
    bfloat16/float8 included) or a torch tensor."""
    d = _digest(x, canonical, ALGO_SHA256, None)
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
        d = _digest(x, canonical, ALGO_FAST, k)
    finally:
        lib.ws_fastkey_free(k)
    buf = ctypes.create_string_buffer(49)
    lib.ws_fast_hex(ctypes.byref(d.fast), buf)
    return buf.value.decode()
