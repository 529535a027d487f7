"""Tensors where they lie: digests and SGLang hashes of CUDA tensors, CPU tensors and numpy
arrays by pointer, strides and (for CUDA) the tensor's current stream, without a copy.

CUDA tensors go through libweightsum_cuda.so (built beside libweightsum.so when nvcc is found;
WEIGHTSUM_CUDA_LIB names another): the fast digests of a whole batch in one kernel launch, the
SHA-256 of a batch cast on the GPU and hashed on CPU threads through a few pinned staging
buffers (docs/cuda.md). The batch calls take a list or a dict {name: tensor} and answer in kind.
"""
from __future__ import annotations

import ctypes
import sys
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

from ._lib import ALGO_FAST, ALGO_SHA256, CANON, _Digest, _Error, _P, check, encode, lib

MAX_DIMS = 8


class _View(ctypes.Structure):  # ws_view
    _fields_ = [("name", ctypes.c_char_p), ("dtype", ctypes.c_int), ("ndim", ctypes.c_int),
                ("shape", ctypes.POINTER(ctypes.c_uint64)),
                ("strides", ctypes.POINTER(ctypes.c_int64)), ("data", ctypes.c_void_p),
                ("device", ctypes.c_int)]


class _Stats(ctypes.Structure):  # ws_value_stats
    _fields_ = [("nan", ctypes.c_uint64), ("inf", ctypes.c_uint64)]


_sigs = {
    "ws_digest_views": (ctypes.c_int, [ctypes.POINTER(_View), ctypes.c_size_t, ctypes.c_int,
                                       ctypes.c_uint, _P, _P, ctypes.c_int,
                                       ctypes.POINTER(_Digest), ctypes.POINTER(_Stats),
                                       ctypes.POINTER(_Error)]),
    "ws_sglang_hash_views": (ctypes.c_int, [ctypes.POINTER(_View), ctypes.c_size_t, _P,
                                            ctypes.POINTER(ctypes.c_uint64),
                                            ctypes.POINTER(_Error)]),
    "ws_device_memory": (ctypes.c_int, [ctypes.POINTER(ctypes.c_uint64),
                                        ctypes.POINTER(ctypes.c_uint64), ctypes.POINTER(_Error)]),
}
for _name, (_res, _args) in _sigs.items():
    _f = getattr(lib, _name)
    _f.restype, _f.argtypes = _res, _args

_NUMPY = {"bool": "BOOL", "uint8": "U8", "int8": "I8", "int16": "I16", "uint16": "U16",
          "int32": "I32", "uint32": "U32", "int64": "I64", "uint64": "U64", "float16": "F16",
          "bfloat16": "BF16", "float32": "F32", "float64": "F64", "float8_e4m3fn": "F8_E4M3",
          "float8_e5m2": "F8_E5M2"}
_TORCH = {"torch.bool": "BOOL", "torch.uint8": "U8", "torch.int8": "I8", "torch.int16": "I16",
          "torch.uint16": "U16", "torch.int32": "I32", "torch.uint32": "U32",
          "torch.int64": "I64", "torch.uint64": "U64", "torch.float16": "F16",
          "torch.bfloat16": "BF16", "torch.float32": "F32", "torch.float64": "F64",
          "torch.float8_e4m3fn": "F8_E4M3", "torch.float8_e5m2": "F8_E5M2"}
_CODES: Dict[str, int] = {}


def _code(name: str) -> int:
    if name not in _CODES:
        c = ctypes.c_int()
        if lib.ws_dtype_from_name(name.encode(), ctypes.byref(c)) != 0:
            raise TypeError(f"dtype {name} unknown to weightsum")
        _CODES[name] = c.value
    return _CODES[name]


def _is_torch(x: Any) -> bool:
    return type(x).__module__.split(".")[0] == "torch" and hasattr(x, "data_ptr")


def _fill(v: _View, name: Optional[bytes], code: int, shape: Sequence[int],
          strides: Sequence[int], ptr: int, device: int) -> Tuple[Any, ...]:
    nd = len(shape)
    if nd > MAX_DIMS:
        raise ValueError(f"tensors of at most {MAX_DIMS} dims (this one has {nd})")
    sh = (ctypes.c_uint64 * max(nd, 1))(*shape)
    st = (ctypes.c_int64 * max(nd, 1))(*strides)
    v.name, v.dtype, v.ndim, v.device = name, code, nd, device
    v.shape = ctypes.cast(sh, ctypes.POINTER(ctypes.c_uint64))
    v.strides = ctypes.cast(st, ctypes.POINTER(ctypes.c_int64))
    v.data = ptr or None
    return sh, st


def _view(x: Any, v: _View, name: Optional[str] = None) -> Tuple[Any, Optional[int]]:
    """Fill v for x; returns (keep-alive, CUDA stream handle or None)."""
    nm = name.encode() if isinstance(name, str) else name
    if _is_torch(x):
        t = x.detach()
        if t.is_conj() or t.is_neg():
            t = t.resolve_conj().resolve_neg()
        code = _TORCH.get(str(t.dtype))
        if code is None:
            raise TypeError(f"unsupported torch dtype {t.dtype}")
        if t.device.type == "cuda":
            import torch
            stream = torch.cuda.current_stream(t.device).cuda_stream
            dev = t.device.index if t.device.index is not None else torch.cuda.current_device()
        elif t.device.type == "cpu":
            stream, dev = None, -1
        else:  # other devices: through the CPU
            t, stream, dev = t.cpu(), None, -1
        keep = _fill(v, nm, _code(code), t.shape, t.stride(), t.data_ptr() if t.numel() else 0,
                     dev)
        return (keep, t), stream
    import numpy as np
    a = np.asarray(x)
    code = _NUMPY.get(a.dtype.name)
    if code is None:
        raise TypeError(f"unsupported dtype {a.dtype}")
    if a.dtype.byteorder == ">" or (a.dtype.byteorder == "=" and sys.byteorder == "big"):
        a = a.astype(a.dtype.newbyteorder("<"))
    item = a.dtype.itemsize
    if any(s < 0 or s % item for s in a.strides):  # negative or odd byte strides: one copy
        a = np.ascontiguousarray(a)
    keep = _fill(v, nm, _code(code), a.shape, [s // item for s in a.strides],
                 a.ctypes.data if a.size else 0, -1)
    return (keep, a), None


_VIEW_DT = None
_TCODES: Dict[Any, int] = {}
_PAD = [[0] * (MAX_DIMS - k) for k in range(MAX_DIMS + 1)]


def _view_dtype():
    global _VIEW_DT
    if _VIEW_DT is None:
        import numpy as np
        f = _View
        _VIEW_DT = np.dtype({"names": [n for n, _ in f._fields_],
                             "formats": ["<u8", "<i4", "<i4", "<u8", "<u8", "<u8", "<i4"],
                             "offsets": [getattr(f, n).offset for n, _ in f._fields_],
                             "itemsize": ctypes.sizeof(f)})
    return _VIEW_DT


def _torch_code(dt) -> int:
    c = _TCODES.get(id(dt))  # torch dtypes are singletons: id() is a cheap, stable key
    if c is None:
        name = _TORCH.get(str(dt))
        if name is None:
            raise TypeError(f"unsupported torch dtype {dt}")
        c = _TCODES[id(dt)] = _code(name)
    return c


class Batch:
    """Many tensors packed once as ws_view descriptors (a list, or a dict {name: tensor}): pass
    it to the batch calls instead of the tensors to skip the packing when the same tensors are
    checked again (they must stay alive and in place; the batch keeps references)."""

    def __init__(self, tensors: Union[Sequence[Any], Dict[str, Any]]):
        import numpy as np
        if isinstance(tensors, dict):
            self.names, items = list(tensors.keys()), list(tensors.values())
        else:
            self.names, items = None, list(tensors)
        n = self.n = len(items)
        codes, ndims, ptrs, devs, shp, strd, keep = [], [], [], [], [], [], []
        streams: Dict[int, int] = {}
        self.stream = None
        for x in items:
            if _is_torch(x):
                t = x  # (complex tensors, the only ones with conj/neg bits, are refused)
                if t.is_cuda:
                    dev = t.get_device()
                    s = streams.get(dev)
                    if s is None:
                        import torch
                        s = streams[dev] = torch.cuda.current_stream(dev).cuda_stream
                    if self.stream is not None and s != self.stream:
                        raise ValueError("CUDA tensors of one call must be on one device and "
                                         "share its current stream")
                    self.stream = s
                elif t.is_cpu:
                    dev = -1
                else:  # other devices: through the CPU
                    t, dev = t.cpu(), -1
                shape, st = t.shape, t.stride()
                codes.append(_torch_code(t.dtype))
                ptrs.append(t.data_ptr() if t.numel() else 0)
            else:
                a = np.asarray(x)
                name = _NUMPY.get(a.dtype.name)
                if name is None:
                    raise TypeError(f"unsupported dtype {a.dtype}")
                if a.dtype.byteorder == ">" or (a.dtype.byteorder == "=" and sys.byteorder == "big"):
                    a = a.astype(a.dtype.newbyteorder("<"))
                item = a.dtype.itemsize
                if any(s < 0 or s % item for s in a.strides):  # negative/odd strides: one copy
                    a = np.ascontiguousarray(a)
                t, dev, shape, st = a, -1, a.shape, [s // item for s in a.strides]
                codes.append(_code(name))
                ptrs.append(a.ctypes.data if a.size else 0)
            nd = len(shape)
            if nd > MAX_DIMS:
                raise ValueError(f"tensors of at most {MAX_DIMS} dims (this one has {nd})")
            keep.append(t)
            ndims.append(nd)
            devs.append(dev)
            shp.extend(shape)
            shp.extend(_PAD[nd])
            strd.extend(st)
            strd.extend(_PAD[nd])
        self._keep = keep
        self._shapes = np.array(shp if shp else [0], dtype=np.uint64)
        self._strides = np.array(strd if strd else [0], dtype=np.int64)
        v = self._views = np.zeros(max(n, 1), _view_dtype())
        if n:
            step = 8 * MAX_DIMS * np.arange(n, dtype=np.uint64)
            v["dtype"][:n] = codes
            v["ndim"][:n] = ndims
            v["data"][:n] = ptrs
            v["device"][:n] = devs
            v["shape"][:n] = np.uint64(self._shapes.ctypes.data) + step
            v["strides"][:n] = np.uint64(self._strides.ctypes.data) + step
            if self.names is not None:
                enc = [str(k).encode() for k in self.names]
                self._names_buf = ctypes.create_string_buffer(b"\0".join(enc) + b"\0")
                offs = np.cumsum([0] + [len(b) + 1 for b in enc[:-1]], dtype=np.uint64)
                v["name"][:n] = np.uint64(ctypes.addressof(self._names_buf)) + offs
        self.ptr = ctypes.cast(ctypes.c_void_p(v.ctypes.data), ctypes.POINTER(_View))


def _batch(tensors):
    b = tensors if isinstance(tensors, Batch) else Batch(tensors)
    return b.names, b.n, b.ptr, b, b.stream


def _answer(names, values):
    return dict(zip(names, values)) if names is not None else values


def _key(key):
    k, err = _P(), _Error()
    seed = encode(key) if key is not None else b"weightsum-fast-digest-v1"
    check(lib.ws_fastkey_create(seed, len(seed), ctypes.byref(k), ctypes.byref(err)), err)
    return k


def digest_tensors(tensors, canonical: str = "bf16", algos=("sha256", "fast"),
                   key: Optional[str] = None, threads: int = 0, stats: bool = False):
    """Digests of many tensors in one call: for each, a dict {"sha256": hex, "fast": hex}
    (the algorithms asked for), plus "nan"/"inf" counts when stats=True."""
    if canonical not in CANON:
        raise ValueError("canonical must be 'bf16' or 'native'")
    mask = (ALGO_SHA256 if "sha256" in algos else 0) | (ALGO_FAST if "fast" in algos else 0)
    if not mask or set(algos) - {"sha256", "fast"}:
        raise ValueError("algos: 'sha256' and/or 'fast'")
    names, n, views, keep, stream = _batch(tensors)
    out = (_Digest * max(n, 1))()
    st = (_Stats * max(n, 1))()
    err = _Error()
    k = _key(key) if mask & ALGO_FAST else None
    try:
        rc = lib.ws_digest_views(views, n, CANON[canonical], mask, k, stream, threads, out, st,
                                 ctypes.byref(err))
    finally:
        if k:
            lib.ws_fastkey_free(k)
    del keep
    check(rc, err)
    res = []
    for i in range(n):
        d = {}
        if mask & ALGO_SHA256:
            buf = ctypes.create_string_buffer(65)
            lib.ws_sha256_hex(out[i].sha256, buf)
            d["sha256"] = buf.value.decode()
        if mask & ALGO_FAST:
            buf = ctypes.create_string_buffer(49)
            lib.ws_fast_hex(ctypes.byref(out[i].fast), buf)
            d["fast"] = buf.value.decode()
        if stats:
            d["nan"], d["inf"] = st[i].nan, st[i].inf
        res.append(d)
    return _answer(names, res)


def sha256_tensors(tensors, canonical: str = "bf16", threads: int = 0):
    """SHA-256 hex of each tensor's canonical bytes (hashlib-identical), many at once."""
    r = digest_tensors(tensors, canonical, ("sha256",), threads=threads)
    return ({k: d["sha256"] for k, d in r.items()} if isinstance(r, dict)
            else [d["sha256"] for d in r])


def fast_tensors(tensors, canonical: str = "bf16", key: Optional[str] = None):
    """Fast digest hex of each tensor; CUDA tensors all in one kernel launch."""
    r = digest_tensors(tensors, canonical, ("fast",), key=key)
    return ({k: d["fast"] for k, d in r.items()} if isinstance(r, dict)
            else [d["fast"] for d in r])


def sglang_hash_tensors(tensors):
    """SGLang's gpu_tensor_hash (an int) of each tensor's bytes in C order, many at once (CUDA
    tensors in one launch; others by the same algorithm on the CPU)."""
    names, n, views, keep, stream = _batch(tensors)
    out = (ctypes.c_uint64 * max(n, 1))()
    err = _Error()
    rc = lib.ws_sglang_hash_views(views, n, stream, out, ctypes.byref(err))
    del keep
    check(rc, err)
    return _answer(names, [int(out[i]) for i in range(n)])


def device_memory() -> Tuple[int, int]:
    """(device bytes, pinned host bytes) the CUDA backend keeps between calls."""
    d, h, err = ctypes.c_uint64(), ctypes.c_uint64(), _Error()
    check(lib.ws_device_memory(ctypes.byref(d), ctypes.byref(h), ctypes.byref(err)), err)
    return d.value, h.value


def digest_one(x: Any, canonical: str, algos: int, key_handle) -> _Digest:
    """One tensor's ws_digest (digest.py's sha256_tensor/fast_tensor), zero-copy."""
    if canonical not in CANON:
        raise ValueError("canonical must be 'bf16' or 'native'")
    v = _View()
    keep, stream = _view(x, v)
    out, st, err = _Digest(), _Stats(), _Error()
    rc = lib.ws_digest_views(ctypes.byref(v), 1, CANON[canonical], algos, key_handle, stream, 0,
                             ctypes.byref(out), ctypes.byref(st), ctypes.byref(err))
    del keep
    check(rc, err)
    return out
