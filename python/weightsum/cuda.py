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

from ._api import Stats
from ._lib import ALGO_FAST, ALGO_SHA256, CANON, _Digest, _Error, _P, check, encode, lib

MAX_DIMS = 8


class _View(ctypes.Structure):  # ws_view
    _fields_ = [("name", ctypes.c_char_p), ("dtype", ctypes.c_int), ("ndim", ctypes.c_int),
                ("shape", ctypes.POINTER(ctypes.c_uint64)),
                ("strides", ctypes.POINTER(ctypes.c_int64)), ("data", ctypes.c_void_p),
                ("device", ctypes.c_int)]


_Stats = Stats  # ws_value_stats


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

# numpy / ml_dtypes dtype names and torch dtypes -> safetensors dtype names: the one table of
# the package (digest.py, checker.py and torch.py describe tensors through this module)
NUMPY_DTYPES = {"bool": "BOOL", "uint8": "U8", "int8": "I8", "int16": "I16", "uint16": "U16",
                "int32": "I32", "uint32": "U32", "int64": "I64", "uint64": "U64",
                "float16": "F16", "bfloat16": "BF16", "float32": "F32", "float64": "F64",
                "float8_e4m3fn": "F8_E4M3", "float8_e5m2": "F8_E5M2"}
TORCH_DTYPES = {"torch." + k: v for k, v in NUMPY_DTYPES.items()}
_CODES: Dict[str, int] = {}
_TCODES: Dict[Any, int] = {}
_PAD = [[0] * (MAX_DIMS - k) for k in range(MAX_DIMS + 1)]


def dtype_code(name: str) -> int:
    """The ws_dtype of a safetensors dtype name."""
    if name not in _CODES:
        c = ctypes.c_int()
        if lib.ws_dtype_from_name(name.encode(), ctypes.byref(c)) != 0:
            raise TypeError(f"dtype {name} unknown to weightsum")
        _CODES[name] = c.value
    return _CODES[name]


def torch_code(dt: Any, name: str = "") -> int:
    """The ws_dtype of a torch dtype (TypeError naming the tensor for others)."""
    c = _TCODES.get(id(dt))  # torch dtypes are singletons: id() is a cheap, stable key
    if c is None:
        w = TORCH_DTYPES.get(str(dt))
        if w is None:
            raise TypeError((f"tensor '{name}': " if name else "") +
                            f"unsupported torch dtype {dt}")
        c = _TCODES[id(dt)] = dtype_code(w)
    return c


def is_torch(x: Any) -> bool:
    return type(x).__module__.split(".")[0] == "torch" and hasattr(x, "data_ptr")


def torch_place(t: Any, streams: Optional[Dict[int, int]] = None) -> Tuple[int, Optional[int]]:
    """Where torch tensor t lies for the library: (CUDA device index, the handle of that
    device's current stream), or (-1, None) for host memory. streams: a cache {device: handle}
    for the tensors of one call."""
    if t.is_cuda:
        dev = t.get_device()
        s = streams.get(dev) if streams is not None else None
        if s is None:
            import torch
            s = torch.cuda.current_stream(dev).cuda_stream
            if streams is not None:
                streams[dev] = s
        return dev, s
    return -1, None


def on_device(t: Any) -> bool:
    """True when the library reads torch tensor t through the CUDA backend."""
    return torch_place(t)[0] >= 0


def describe(x: Any, name: str = "", streams: Optional[Dict[int, int]] = None) -> Tuple[int, Tuple[int, ...], Sequence[int], int, int,
                                               Optional[int], Any]:
    """A tensor where it lies, as the library's ws_view takes it: (ws_dtype, shape, strides in
    elements, pointer, device (-1: host), CUDA stream handle or None, the object to keep alive
    while the pointer is used). Torch tensors (CUDA or CPU) and numpy arrays are never copied,
    whatever their strides; numpy arrays with negative or odd byte strides, big-endian ones, and
    torch tensors on other devices (meta excepted: refused) are copied once to host memory."""
    if is_torch(x):
        t = x
        if not (t.is_cuda or t.is_cpu):
            if t.device.type == "meta":
                raise TypeError((f"tensor '{name}' " if name else "a tensor ") +
                                "is on the meta device: it has no data")
            t = t.cpu()  # other devices: through the CPU
        dev, stream = torch_place(t, streams)
        return (torch_code(t.dtype, name), tuple(t.shape), t.stride(),
                t.data_ptr() if t.numel() else 0, dev, stream, t)
    import numpy as np
    a = np.asarray(x)
    w = NUMPY_DTYPES.get(a.dtype.name)
    if w is None:
        raise TypeError((f"tensor '{name}': " if name else "") + f"unsupported dtype {a.dtype}")
    if a.dtype.byteorder == ">" or (a.dtype.byteorder == "=" and sys.byteorder == "big"):
        a = a.astype(a.dtype.newbyteorder("<"))
    item = a.dtype.itemsize
    if any(s < 0 or s % item for s in a.strides):  # negative or odd byte strides: one copy
        a = np.ascontiguousarray(a)
    return (dtype_code(w), a.shape, [s // item for s in a.strides],
            a.ctypes.data if a.size else 0, -1, None, a)


def host_contiguous(x: Any, name: str = "") -> Tuple[int, int, Tuple[int, ...], int, Any]:
    """(ws_dtype, pointer, shape, numel, keep-alive) of x's C-contiguous bytes in host memory,
    for the calls that need them so (a CUDA tensor is copied to the host: the caller says so)."""
    if is_torch(x):
        t = x.detach()
        if t.device.type != "cpu":
            t = t.cpu()
        x = t.contiguous()
    else:
        import numpy as np
        x = np.asarray(x)
        if not x.flags.c_contiguous:  # (ascontiguousarray would make a 0-d array 1-d)
            x = np.ascontiguousarray(x)
    code, shape, _, ptr, _, _, keep = describe(x, name)
    numel = 1
    for n in shape:
        numel *= int(n)
    return code, ptr, tuple(int(n) for n in shape), numel, keep


_VIEW_DT = None


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


class Batch:
    """Many tensors packed once as ws_view descriptors (a list, or a dict {name: tensor}): pass
    it to the batch calls instead of the tensors to skip the packing when the same tensors are
    checked again (they must stay alive and in place; the batch keeps references).
    .stream is the CUDA stream their data is ready on (None: host memory only)."""

    def __init__(self, tensors: Union[Sequence[Any], Dict[str, Any]]):
        import numpy as np
        if isinstance(tensors, dict):
            self.names, items = [str(k) for k in tensors.keys()], list(tensors.values())
        else:
            self.names, items = None, list(tensors)
        n = self.n = len(items)
        codes, ndims, ptrs, devs, shp, strd, keep = [], [], [], [], [], [], []
        self.stream = None
        self.device = -1
        streams: Dict[int, int] = {}
        fast = _torch_lists(items)  # CUDA/CPU torch tensors: a few list passes, same answers
        if fast is not None:
            codes, ndims, ptrs, devs, shp, strd, keep, self.device, self.stream = fast
            items = []
        for i, x in enumerate(items):
            code, shape, st, ptr, dev, stream, k = describe(
                x, self.names[i] if self.names is not None else "", streams)
            if dev >= 0:
                if self.device >= 0 and (dev != self.device or stream != self.stream):
                    raise ValueError("CUDA tensors of one call must be on one device and "
                                     "share its current stream")
                self.device, self.stream = dev, stream
            nd = len(shape)
            if nd > MAX_DIMS:
                raise ValueError(f"tensors of at most {MAX_DIMS} dims (this one has {nd})")
            keep.append(k)
            codes.append(code)
            ptrs.append(ptr)
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
                enc = [k.encode() for k in self.names]
                self._names_buf = ctypes.create_string_buffer(b"\0".join(enc) + b"\0")
                offs = np.cumsum([0] + [len(b) + 1 for b in enc[:-1]], dtype=np.uint64)
                v["name"][:n] = np.uint64(ctypes.addressof(self._names_buf)) + offs
        self.ptr = ctypes.cast(ctypes.c_void_p(v.ctypes.data), ctypes.POINTER(_View))


def _torch_lists(items: List[Any]):
    """Batch's lists for torch tensors that all lie on one CUDA device or all in host memory,
    built in a few passes (describe's rules; None when any tensor needs describe's care)."""
    tm = sys.modules.get("torch")
    if tm is None or not items:
        return None
    T = tm.Tensor
    if not all(isinstance(t, T) for t in items):
        return None
    cuda = [t.is_cuda for t in items]
    if any(cuda):
        if not all(cuda):
            return None
        devs = [t.get_device() for t in items]
        if devs.count(devs[0]) != len(devs):
            return None  # describe names the problem
        device = devs[0]
        stream = tm.cuda.current_stream(device).cuda_stream
    else:
        if not all(t.is_cpu for t in items):
            return None
        devs, device, stream = [-1] * len(items), -1, None
    codes = [_TCODES.get(id(t.dtype)) for t in items]
    if None in codes:
        return None
    shapes = [t.shape for t in items]
    ndims = [len(x) for x in shapes]
    if max(ndims) > MAX_DIMS:
        return None
    strides = [t.stride() for t in items]
    ptrs = [t.data_ptr() if t.numel() else 0 for t in items]
    shp: List[int] = []
    strd: List[int] = []
    for sh, st, nd in zip(shapes, strides, ndims):
        shp.extend(sh)
        shp.extend(_PAD[nd])
        strd.extend(st)
        strd.extend(_PAD[nd])
    return codes, ndims, ptrs, devs, shp, strd, list(items), device, stream


def _batch(tensors):
    b = tensors if isinstance(tensors, Batch) else Batch(tensors)
    return b.names, b.n, b.ptr, b, b.stream


def _answer(names, values):
    return dict(zip(names, values)) if names is not None else values


_KEYS: Dict[bytes, Any] = {}  # seed -> ws_fastkey: derived once per seed (read-only, shared)
_KEYS_MAX = 8


def _key(key):
    """The ws_fastkey of a seed, made once and kept (a few of them; the oldest freed beyond)."""
    seed = encode(key) if key is not None else b"weightsum-fast-digest-v1"
    k = _KEYS.get(seed)
    if k is None:
        k, err = _P(), _Error()
        check(lib.ws_fastkey_create(seed, len(seed), ctypes.byref(k), ctypes.byref(err)), err)
        if len(_KEYS) >= _KEYS_MAX:  # the oldest: no call holds it (one thread per call, GIL)
            lib.ws_fastkey_free(_KEYS.pop(next(iter(_KEYS))))
        _KEYS[seed] = k
    return k


def _hexes(out: Any, n: int, field: str, width: int) -> List[str]:
    """The hex of one field of n ws_digest results at once (numpy, no per-result ctypes call):
    SHA-256 bytes as they are, fast-digest lanes as 16 big-endian hex digits each."""
    import numpy as np
    raw = np.frombuffer(out, dtype=np.uint8).reshape(-1, ctypes.sizeof(_Digest))[:n]
    off = getattr(_Digest, field).offset
    col = raw[:, off:off + width]
    if field == "fast":
        col = np.ascontiguousarray(col).view("<u8").astype(">u8")
    text = np.ascontiguousarray(col).tobytes().hex()
    w = 2 * width
    return [text[i * w:(i + 1) * w] for i in range(n)]


def digest_batch(tensors: Any, canon: int, algos: int, key_handle: Any = None,
                 threads: int = 0) -> Tuple[Optional[List[str]], int, Any, Any]:
    """ws_digest_views over a list, dict or Batch: (names or None, count, ws_digest array,
    ws_value_stats array), one entry per tensor. key_handle: a ws_fastkey (needed for the fast digest)."""
    names, n, views, keep, stream = _batch(tensors)
    out = (_Digest * max(n, 1))()
    st = (_Stats * max(n, 1))()
    err = _Error()
    rc = lib.ws_digest_views(views, n, canon, algos, key_handle, stream, threads, out, st,
                             ctypes.byref(err))
    del keep
    check(rc, err)
    return names, n, out, st


def digest_tensors(tensors, canonical: str = "bf16", algos=("sha256", "fast"),
                   key: Optional[str] = None, threads: int = 0, stats: bool = False):
    """Digests of many tensors in one call: for each, a dict {"sha256": hex, "fast": hex}
    (the algorithms asked for), plus "nan"/"inf" counts when stats=True."""
    if canonical not in CANON:
        raise ValueError("canonical must be 'bf16' or 'native'")
    mask = (ALGO_SHA256 if "sha256" in algos else 0) | (ALGO_FAST if "fast" in algos else 0)
    if not mask or set(algos) - {"sha256", "fast"}:
        raise ValueError("algos: 'sha256' and/or 'fast'")
    k = _key(key) if mask & ALGO_FAST else None
    names, n, out, st = digest_batch(tensors, CANON[canonical], mask, k, threads)
    res: List[Dict[str, Any]] = [{} for _ in range(n)]
    if mask & ALGO_SHA256:
        for d, h in zip(res, _hexes(out, n, "sha256", 32)):
            d["sha256"] = h
    if mask & ALGO_FAST:
        for d, h in zip(res, _hexes(out, n, "fast", 24)):
            d["fast"] = h
    if stats:
        for i, d in enumerate(res):
            d["nan"], d["inf"] = st[i].nan, st[i].inf
    return _answer(names, res)


def sha256_tensors(tensors, canonical: str = "bf16", threads: int = 0):
    """SHA-256 hex of each tensor's canonical bytes (hashlib-identical), many at once."""
    if canonical not in CANON:
        raise ValueError("canonical must be 'bf16' or 'native'")
    names, n, out, _ = digest_batch(tensors, CANON[canonical], ALGO_SHA256, None, threads)
    return _answer(names, _hexes(out, n, "sha256", 32))


def fast_tensors(tensors, canonical: str = "bf16", key: Optional[str] = None):
    """Fast digest hex of each tensor; CUDA tensors all in one kernel launch."""
    if canonical not in CANON:
        raise ValueError("canonical must be 'bf16' or 'native'")
    names, n, out, _ = digest_batch(tensors, CANON[canonical], ALGO_FAST, _key(key))
    return _answer(names, _hexes(out, n, "fast", 24))


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


_sigs2 = {
    "ws_sglang_expect_views_ranks": (ctypes.c_int, [_P, ctypes.POINTER(ctypes.c_int),
                                                    ctypes.c_size_t, ctypes.POINTER(_View),
                                                    ctypes.c_size_t, ctypes.c_int, _P,
                                                    ctypes.POINTER(ctypes.c_uint64),
                                                    ctypes.c_size_t, ctypes.POINTER(_Error)]),
}
for _name, (_res, _args) in _sigs2.items():
    _f = getattr(lib, _name, None)
    if _f is not None:
        _f.restype, _f.argtypes = _res, _args


class SglangExpect:
    """The values SGLang's gpu_tensor_hash gives for engine ranks' local tensors (what each rank
    answers to {"action": "checksum"} when it holds the weights on the GPU), predicted from the
    HF tensors alone, without building any shard (ws_sglang_expect_views_ranks).

      x = SglangExpect("sglang", 2, config)      # the layout, made once
      x(hf_tensors)                              # {rank: {local name: int}}, every rank
      x(hf_tensors, ranks=[1])                   # only rank 1

    hf_tensors: {HF name: tensor} (tied tensors may be left out), a list in the layout's HF
    order (x.hf_names; None for tied ones), or a Batch of that list. Tensors C-contiguous, all
    CUDA tensors on one device (every asked rank in one launch) or all in host memory. Each call
    describes the tensors once for all the ranks asked. engine_dtype: what the engine holds
    ("BF16": HF floats cast canonically; None: each local tensor its HF tensors' dtype)."""

    def __init__(self, layout: str, tp: int, config: Any, engine_dtype: Optional[str] = None):
        from . import _api
        self._cfg = _api.model_config(config)
        self.h = _P()
        _api.call("ws_layout_create", layout.encode(), ctypes.cast(self._cfg, _P), int(tp),
                  ctypes.byref(self.h))
        L = self.h
        self.hf_names, hf_numel = [], []
        for i in range(lib.ws_layout_hf_count(L)):
            d = lib.ws_layout_hf(L, i).contents
            self.hf_names.append(d.name.decode())
            n = 1
            for k in range(d.ndim):
                n *= d.shape[k]
            hf_numel.append(n)
        self._hf_index = {n: i for i, n in enumerate(self.hf_names)}
        self._hf_numel = hf_numel
        self.local_names: Dict[int, List[str]] = {}
        for i in range(lib.ws_layout_local_count(L)):
            d = lib.ws_layout_local(L, i).contents
            self.local_names.setdefault(d.rank, []).append(d.name.decode())
        self.ranks = sorted(self.local_names)
        self._dtype = dtype_code(engine_dtype) if engine_dtype else _dtype_count()
        import numpy as np
        nh = len(self.hf_names)
        self._views = np.zeros(max(nh, 1), _view_dtype())
        self._numel = np.array(hf_numel if nh else [0], dtype=np.uint64)
        self._views["ndim"][:nh] = 1  # described by element count: the layout has the shape
        self._views["shape"][:nh] = np.uint64(self._numel.ctypes.data) + \
            8 * np.arange(nh, dtype=np.uint64)
        self._vptr = ctypes.cast(ctypes.c_void_p(self._views.ctypes.data), ctypes.POINTER(_View))

    def _describe(self, hf: Any) -> Tuple[Any, Any, List[Any]]:
        """(ws_view pointer, stream, keep-alive) of the HF tensors, in layout order."""
        if isinstance(hf, Batch):
            if hf.n != len(self.hf_names):
                raise ValueError(f"{hf.n} tensors for a layout of {len(self.hf_names)} HF tensors")
            return hf.ptr, hf.stream, [hf]
        if isinstance(hf, dict):
            items: List[Any] = [None] * len(self.hf_names)
            for name, t in hf.items():
                i = self._hf_index.get(name)
                if i is None:
                    raise KeyError(f"tensor '{name}' is not an HF tensor of this layout")
                items[i] = t
        else:
            items = list(hf)
            if len(items) != len(self.hf_names):
                raise ValueError(f"{len(items)} tensors for a layout of {len(self.hf_names)} "
                                 "HF tensors")
        # the one description of this call, for every rank asked: pointer, dtype, device (the
        # layout has the shapes: element counts are checked here and in C); torch tensors in a
        # few list passes, the rest one by one
        tm = sys.modules.get("torch")
        T = tm.Tensor if tm is not None else None
        if T is not None and all(t is None or isinstance(t, T) for t in items):
            return self._describe_torch(items)
        codes, ptrs, devs = [], [], []
        stream = None
        dev0 = None
        for i, t in enumerate(items):
            if t is None:  # tied (no piece reads it) or not given (refused if a piece needs it)
                codes.append(0)
                ptrs.append(0)
                devs.append(-1)
                continue
            if not is_torch(t):
                code, shape, st, ptr, dev, _, k = describe(t, self.hf_names[i])
                n = 1
                for d in shape:
                    n *= int(d)
                if not getattr(k, "flags", None) or not k.flags.c_contiguous:
                    raise ValueError(f"tensor '{self.hf_names[i]}' must be C-contiguous")
            else:
                if not t.is_contiguous():
                    raise ValueError(f"tensor '{self.hf_names[i]}' must be C-contiguous")
                code, ptr, n = torch_code(t.dtype, self.hf_names[i]), t.data_ptr(), t.numel()
                dev = t.get_device() if t.is_cuda else -1
                if dev >= 0 and stream is None:
                    import torch
                    stream = torch.cuda.current_stream(dev).cuda_stream
            if n != self._hf_numel[i]:
                raise ValueError(f"tensor '{self.hf_names[i]}' has {n} elements, the layout "
                                 f"{self._hf_numel[i]}")
            if dev0 is None:
                dev0 = dev
            elif dev != dev0:
                raise ValueError("HF tensors must all be on one CUDA device or all on the host")
            codes.append(code)
            ptrs.append(ptr)
            devs.append(dev)
        return self._fill(items, codes, ptrs, devs, stream)

    def _describe_torch(self, items: List[Any]) -> Tuple[Any, Any, List[Any]]:
        idx = [i for i, t in enumerate(items) if t is not None]  # None: tied or not given
        ts = [items[i] for i in idx] if len(idx) < len(items) else items
        bad = [i for i, t in zip(idx, ts) if not t.is_contiguous()]
        if bad:
            raise ValueError(f"tensor '{self.hf_names[bad[0]]}' must be C-contiguous")
        numel = [t.numel() for t in ts]
        want = self._hf_numel if ts is items else [self._hf_numel[i] for i in idx]
        if numel != want:
            k = next(k for k, n in enumerate(numel) if n != want[k])
            raise ValueError(f"tensor '{self.hf_names[idx[k]]}' has {numel[k]} elements, the "
                             f"layout {want[k]}")
        codes = [_TCODES.get(id(t.dtype)) for t in ts]
        if None in codes:
            codes = [torch_code(t.dtype, self.hf_names[i]) for i, t in zip(idx, ts)]
        ptrs = [t.data_ptr() for t in ts]
        cuda = [t.is_cuda for t in ts]
        stream = None
        if any(cuda):
            devs = [t.get_device() for t in ts]
            if not all(cuda) or devs.count(devs[0]) != len(devs):
                raise ValueError("HF tensors must all be on one CUDA device or all on the host")
            import torch
            stream = torch.cuda.current_stream(devs[0]).cuda_stream
        else:
            if not all(t.is_cpu for t in ts):
                raise ValueError("HF tensors must be CUDA or CPU tensors")
            devs = [-1] * len(ts)
        if ts is not items:  # scatter back; the missing ones: no data
            full_c, full_p, full_d = [0] * len(items), [0] * len(items), [-1] * len(items)
            for k, i in enumerate(idx):
                full_c[i], full_p[i], full_d[i] = codes[k], ptrs[k], devs[k]
            codes, ptrs, devs = full_c, full_p, full_d
        return self._fill(items, codes, ptrs, devs, stream)

    def _fill(self, items, codes, ptrs, devs, stream):
        v = self._views
        nh = len(items)
        if nh:
            v["dtype"][:nh] = codes
            v["data"][:nh] = ptrs
            v["device"][:nh] = devs
        return self._vptr, stream, items

    def __call__(self, hf: Any, ranks: Optional[Sequence[int]] = None) -> Dict[int, Dict[str, int]]:
        """{rank: {local tensor name: SGLang's gpu_tensor_hash}} for `ranks` (default: all)."""
        rk = list(self.ranks if ranks is None else ranks)
        for r in rk:
            if r not in self.local_names:
                raise ValueError(f"rank {r} is not a rank of this layout ({self.ranks})")
        views, stream, keep = self._describe(hf)
        n = sum(len(self.local_names[r]) for r in rk)
        out = (ctypes.c_uint64 * max(n, 1))()
        arr = (ctypes.c_int * max(len(rk), 1))(*rk)
        err = _Error()
        rc = lib.ws_sglang_expect_views_ranks(self.h, arr, len(rk), views, len(self.hf_names),
                                              self._dtype, stream, out, n, ctypes.byref(err))
        del keep
        check(rc, err)
        res, k = {}, 0
        for r in rk:
            names = self.local_names[r]
            res[r] = dict(zip(names, out[k:k + len(names)]))
            k += len(names)
        return res

    def __del__(self) -> None:
        if getattr(self, "h", None) is not None and self.h.value:
            lib.ws_layout_free(self.h)
            self.h = None


def _dtype_count() -> int:
    """WS_DTYPE__COUNT: the count of dtypes (one past the last name the library knows)."""
    n = 0
    while lib.ws_dtype_name(n):
        n += 1
    return n


def device_memory() -> Tuple[int, int]:
    """(device bytes, pinned host bytes) the CUDA backend keeps between calls."""
    d, h, err = ctypes.c_uint64(), ctypes.c_uint64(), _Error()
    check(lib.ws_device_memory(ctypes.byref(d), ctypes.byref(h), ctypes.byref(err)), err)
    return d.value, h.value


def digest_one(x: Any, canonical: str, algos: int, key_handle) -> _Digest:
    """One tensor's ws_digest (digest.py's sha256_tensor/fast_tensor), zero-copy."""
    if canonical not in CANON:
        raise ValueError("canonical must be 'bf16' or 'native'")
    _, _, out, _ = digest_batch([x], CANON[canonical], algos, key_handle)
    return out[0]
