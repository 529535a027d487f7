"""In-process checks for RL frameworks: trainer and engine hooks over torch tensors, whose
results meet over the framework's own torch.distributed process groups (docs/integration.md).

Trainer side
  m = Manifest(algo="sha256"|"fast"|"both", canonical="bf16")
  for name, t in convert_to_hf(...): m.add(name, t)        # CPU or CUDA tensors
  m.save(path) / m.to_dict() / Manifest.merge([stage0, stage1]) / m.merge_over(group)
  megatron_manifest("megatron", config, tp_rank, tp_size, named_shards, group)
      HF-level fast digests from each rank's Megatron shards, partials meeting over `group`,
      no TP gather.

Engine side
  check = EngineCheck("sglang", tp_rank, tp_size, config, group=None, mode="enforce")
  report = check.verify(manifest, model.named_parameters())   # every rank of the group calls it
  report.ok, report.findings (status, tensor, local, rank, rows, detail), report.cost

With a fast manifest only partials move (a few bytes per piece, one all-gather). With a
SHA-256 manifest, every canonical tensor has an owner rank (spread so all ranks hash at once);
the ranks holding its pieces stream them there in bounded chunks, in canonical order.

CUDA tensors are read in place through the CUDA backend (libweightsum_cuda.so, loaded by the
library on first use; absent, a check fails saying so): the trainer's Manifest digests them
there, Manifest.expect predicts every engine answer from them (SGLang's gpu_tensor_hash on the
GPU; the SHA-256 answers of vLLM and SGLang's CPU path stream each local tensor's image from the
HF tensors through the backend's pinned staging), the engine's partials and its own checksum
answers read device memory where it lies. SHA-256 runs on the CPU, fed through the backend's
pinned staging buffers: a tensor an owner rank holds whole is hashed in place; a tensor split
over ranks is built whole on the owner's GPU from the chunks streamed there (at most
EngineCheck(assemble_bytes=), 2 GiB, held at a time) and hashed the same way, many at once.
Only a split tensor larger than assemble_bytes (or any, with assemble_bytes=0), or one whose
owner holds no CUDA tensor, is hashed chunk by chunk here: each device chunk (at most
chunk_bytes) is copied into one reused pinned host buffer, counted in the cost as host_bytes,
because the backend's SHA-256 hashes a whole tensor per call (its hash state does not outlive
the call) while the owner holds one chunk of it at a time. Nothing else is copied to the CPU
without the caller's say (Manifest(host_copy=True), for tensors the backend cannot read).
"""
from __future__ import annotations

import ctypes
import hashlib
import json
import logging
import os
import pickle
import time
from dataclasses import dataclass, field
from typing import (Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union)

try:
    import torch
    import torch.distributed as dist
except ImportError as e:  # torch is an optional dependency of weightsum
    raise ImportError("weightsum.torch needs PyTorch (pip install torch); the rest of "
                      "weightsum works without it") from e

from . import _api
from . import cuda as _cuda
from ._api import ManifestEntry, Stats, call, dtype_code, has, need, shape_array
from .checker import report_warnings
from ._lib import (ALGO_FAST, ALGO_SHA256, CANON, WeightsumError, _Digest, _Error, _Fast, _P,
                   check, encode, lib)

__all__ = ["Manifest", "EngineCheck", "Report", "Finding", "Cost", "WeightsCheckFailed",
           "megatron_manifest", "MODES"]

log = logging.getLogger("weightsum")

MODES = ("off", "log", "enforce")
_ALGOS = {"sha256": ALGO_SHA256, "fast": ALGO_FAST, "both": ALGO_SHA256 | ALGO_FAST}
_DEFAULT_SEED = b"weightsum-fast-digest-v1"
_CHUNK = 64 << 20
_ASSEMBLE = 2 << 30  # device bytes an owner may hold to hash split tensors on its GPU

# torch dtype <-> safetensors name: weightsum.cuda's table (the package's one description of
# tensors: dtype, shape, strides, pointer, device, stream)
_WS_TO_TORCH = {w: getattr(torch, k[len("torch."):]) for k, w in _cuda.TORCH_DTYPES.items()
                if hasattr(torch, k[len("torch."):])}


def _ws_name(dt: Any) -> str:
    return _cuda.TORCH_DTYPES.get(str(dt), "?")


def _ws_dtype(t: "torch.Tensor", name: str = "") -> int:
    return _cuda.torch_code(t.dtype, name)


class _Key:
    """A fast-digest key from its seed."""

    def __init__(self, seed: Union[str, bytes, None]) -> None:
        self.seed = encode(seed) if seed is not None else _DEFAULT_SEED
        self.h = _P()
        err = _Error()
        check(lib.ws_fastkey_create(self.seed, len(self.seed), ctypes.byref(self.h),
                                    ctypes.byref(err)), err)
        self.id = lib.ws_fastkey_id(self.h).decode()

    def __del__(self) -> None:
        if getattr(self, "h", None) is not None and self.h.value:
            lib.ws_fastkey_free(self.h)
            self.h = None


# ------------------------------------------------------------------------------------------
# Digests of one tensor on this process
# ------------------------------------------------------------------------------------------

def _canon_for(name: str, code: int, canon: int) -> int:
    """The per-tensor canonical rule (ws_canon_for_tensor): block-FP8 scales and fp32 router
    buffers keep their stored bytes under the bf16 policy, as the CLI hashes them."""
    return int(lib.ws_canon_for_tensor(name.encode(), code, canon))


def _digest_buffer(code: int, canon: int, ptr: Optional[int], shape: Sequence[int],
                   algos: int, key: Optional[_Key]) -> Tuple[_Digest, Stats]:
    """ws_digest_buffer over a C-contiguous host buffer (the form with the shape, whose fast
    digest is sealed with it, or the older one with an element count)."""
    out, st, err = _Digest(), Stats(), _Error()
    numel = 1
    for n in shape:
        numel *= int(n)
    kh = key.h if key is not None else None
    if len(lib.ws_digest_buffer.argtypes) >= 10:
        rc = lib.ws_digest_buffer(code, canon, ptr, len(shape), shape_array(shape), algos, kh,
                                  ctypes.byref(out), ctypes.addressof(st), ctypes.byref(err))
    else:
        rc = lib.ws_digest_buffer(code, canon, ptr, numel, algos, kh, ctypes.byref(out),
                                  ctypes.addressof(st), ctypes.byref(err))
    check(rc, err)
    return out, st


class _StreamHasher:
    """Canonical SHA-256 and fast digest of one tensor fed as consecutive runs of elements
    (host memory): the library casts each run (ws_cast_to_canonical), hashlib hashes it and
    ws_fast_accumulate places it at its global unit index; the fast digest is sealed with the
    shape at the end, as ws_digest_buffer seals it (tested equal)."""

    def __init__(self, code: int, canon: int, algos: int, key: Optional[_Key],
                 shape: Sequence[int]) -> None:
        self.code, self.canon, self.algos, self.key = code, canon, algos, key
        self.shape = [int(n) for n in shape]
        self.cdt = lib.ws_canonical_dtype(code, canon)
        self.csize = lib.ws_dtype_size(self.cdt)
        self.units = lib.ws_dtype_units(self.cdt)
        self.sha = hashlib.sha256() if algos & ALGO_SHA256 else None
        self.fast = _Fast()
        self.stats = Stats()
        self.done = 0
        self._buf: Optional[ctypes.Array] = None

    def update(self, ptr: int, n: int) -> None:
        if n == 0:
            return
        need_bytes = n * self.csize
        if self._buf is None or len(self._buf) < need_bytes:
            self._buf = (ctypes.c_uint8 * need_bytes)()
        dst = ctypes.addressof(self._buf)
        call("ws_cast_to_canonical", self.code, self.canon, ptr, n, dst,
             ctypes.byref(self.stats))
        if self.sha is not None:
            self.sha.update(memoryview(self._buf)[:need_bytes])
        if self.algos & ALGO_FAST:
            unit_bytes = 1 if self.csize == 1 else 2
            call("ws_fast_accumulate", self.key.h, ctypes.byref(self.fast),
                 self.done * self.units, dst, n * self.units, unit_bytes)
        self.done += n

    def final(self) -> Tuple[_Digest, Stats]:
        d = _Digest()
        d.algos = self.algos
        if self.sha is not None:
            ctypes.memmove(d.sha256, self.sha.digest(), 32)
        if self.algos & ALGO_FAST:
            if has("ws_fast_seal"):
                rc = lib.ws_fast_seal(self.key.h, ctypes.byref(self.fast), self.cdt,
                                      len(self.shape), shape_array(self.shape))
                if rc != 0:
                    raise WeightsumError(lib.ws_err_name(rc).decode(),
                                         "ws_fast_seal failed for shape %s" % (self.shape,))
            d.fast = self.fast
        return d, self.stats


def _stream_device_tensor(t: "torch.Tensor", h: _StreamHasher, chunk_bytes: int) -> int:
    """Feed a device tensor to h in chunks of at most chunk_bytes through one reused pinned
    host buffer; returns the bytes copied to the host."""
    flat = t.reshape(-1)
    per = max(1, chunk_bytes // max(1, t.element_size()))
    host = torch.empty(min(per, flat.numel()), dtype=t.dtype, pin_memory=_pinnable())
    moved = 0
    for i in range(0, flat.numel(), per):
        part = flat[i:i + per]
        dst = host[:part.numel()]
        dst.copy_(part)  # synchronous: dst holds the bytes when it returns
        h.update(dst.data_ptr(), part.numel())
        moved += part.numel() * t.element_size()
    return moved


def _pinnable() -> bool:
    try:
        return torch.cuda.is_available()
    except Exception:
        return False


# ------------------------------------------------------------------------------------------
# Trainer side: Manifest
# ------------------------------------------------------------------------------------------

class _CManifest:
    """Owner of a ws_manifest handle."""

    def __init__(self, h: int) -> None:
        if not h:
            raise MemoryError("ws_manifest: out of memory")
        self.h = h

    @classmethod
    def parse(cls, text: Union[str, bytes], label: str = "manifest") -> "_CManifest":
        raw = text.encode() if isinstance(text, str) else bytes(text)
        h = _P()
        call("ws_manifest_parse", raw, len(raw), encode(label), ctypes.byref(h))
        return cls(h.value)

    def to_json(self) -> str:
        p = ctypes.c_void_p()
        call("ws_manifest_to_json", self.h, ctypes.byref(p))
        return _api.take_text(p)

    def __del__(self) -> None:
        if getattr(self, "h", None):
            lib.ws_manifest_free(self.h)
            self.h = None


def _load_manifest(m: Any) -> _CManifest:
    """A trainer's manifest from a Manifest, a dict (to_dict), a path, or JSON / line text."""
    if isinstance(m, Manifest):
        return _CManifest.parse(m.to_json(), "trainer manifest")
    if isinstance(m, _CManifest):
        return m
    if isinstance(m, dict):
        return _CManifest.parse(json.dumps(m), "manifest dict")
    if isinstance(m, (bytes, bytearray)):
        return _CManifest.parse(bytes(m), "manifest")
    if isinstance(m, (str, os.PathLike)):
        s = os.fspath(m)
        if os.path.exists(s):
            with open(s, "rb") as f:
                return _CManifest.parse(f.read(), s)
        if s.lstrip().startswith("{"):
            return _CManifest.parse(s, "manifest")
        raise FileNotFoundError(f"manifest {s}: no such file")
    raise TypeError("manifest must be a weightsum.torch.Manifest, a dict, a path or JSON text")


class Manifest:
    """The trainer's digests of its HF tensors, as a converter yields them (CPU or CUDA).

    algo: "sha256" (hashlib-identical), "fast" (layout-invariant, docs/fast-digest.md) or
    "both"; canonical: "bf16" or "native"; key: the fast digest's seed (default: the public
    one). CPU and CUDA tensors are digested in place; host_copy: allow a device tensor the CUDA
    backend cannot read (no backend here, another device type) to be streamed through host
    memory in bounded chunks (chunk_bytes); without it such a tensor is refused, named.
    keep_tensors: keep references to the added tensors for expect().
    A name added twice is an error (a converter yielding a tensor twice is a bug worth seeing).
    """

    def __init__(self, algo: str = "sha256", canonical: str = "bf16",
                 key: Union[str, bytes, None] = None, source: str = "trainer",
                 host_copy: bool = False, chunk_bytes: int = _CHUNK,
                 keep_tensors: bool = False) -> None:
        if algo not in _ALGOS:
            raise ValueError("algo must be 'sha256', 'fast' or 'both'")
        if canonical not in CANON:
            raise ValueError("canonical must be 'bf16' or 'native'")
        self.algo, self.canonical, self.source = algo, canonical, source
        self.algos, self.canon = _ALGOS[algo], CANON[canonical]
        self.host_copy, self.chunk_bytes = host_copy, int(chunk_bytes)
        self._key = _Key(key) if self.algos & ALGO_FAST else None
        key_id = self._key.id if self._key else None
        self._m = _CManifest(lib.ws_manifest_new(self.canon, self.algos, encode(key_id),
                                                 encode(source)))
        self.seconds = 0.0      # time spent in add()
        self.host_bytes = 0     # bytes of CUDA tensors streamed through host memory
        # keep_tensors: references to the added tensors, for expect() (no copy)
        self._kept: Optional[Dict[str, torch.Tensor]] = {} if keep_tensors else None

    @property
    def key_id(self) -> Optional[str]:
        return self._key.id if self._key else None

    def __len__(self) -> int:
        return lib.ws_manifest_count(self._m.h)

    def __contains__(self, name: str) -> bool:
        return bool(lib.ws_manifest_find(self._m.h, name.encode()))

    def add(self, name: str, tensor: "torch.Tensor") -> None:
        """Digest one HF tensor (its canonical bytes, in its HF shape) into the manifest: CPU
        and CUDA tensors in place, whatever their strides (a CUDA tensor through the CUDA
        backend: no copy, no GPU memory beyond the backend's staging buffers)."""
        self._add_many([(name, tensor)])

    def add_all(self, named: Union[Mapping[str, "torch.Tensor"],
                                   Iterable[Tuple[str, "torch.Tensor"]]]) -> None:
        """add() every (name, tensor): a dict, or a list or tuple of pairs, is digested in one
        call (CUDA tensors: one kernel launch for the fast digests, SHA-256 on all CPU threads
        at once); any other iterable (a converter's generator) tensor by tensor, so that no
        tensor is kept alive longer than the converter keeps it."""
        if isinstance(named, Mapping):
            self._add_many(list(named.items()))
        elif isinstance(named, (list, tuple)):
            self._add_many(list(named))
        else:
            for name, t in named:
                self._add_many([(name, t)])

    def _add_many(self, items: List[Tuple[str, "torch.Tensor"]]) -> None:
        t0 = time.perf_counter()
        rows, inplace, streamed = [], [], []
        seen = set()
        for name, tensor in items:
            t = tensor.detach()
            code = _ws_dtype(t, name)
            shape = list(t.shape)
            if len(shape) > _api.MAX_DIMS:
                raise ValueError(f"tensor '{name}': {len(shape)} dims, at most {_api.MAX_DIMS}")
            if name in seen or name in self:
                raise WeightsumError("WS_ERR_ARG", f"tensor '{name}' added twice to the manifest")
            seen.add(name)
            rows.append([name, code, shape, t, None, None, _canon_for(name, code, self.canon)])
            (inplace if t.is_cpu or t.is_cuda else streamed).append(rows[-1])
        key = self._key.h if self._key else None

        def digest_rows(rs: List[List[Any]]) -> None:
            # one batch per canonical rule (ws_canon_for_tensor: FP8 scales keep their bytes)
            for c in sorted({r[6] for r in rs}):
                sub = [r for r in rs if r[6] == c]
                _, _, out, st = _cuda.digest_batch([r[3] for r in sub], c, self.algos, key)
                for i, r in enumerate(sub):
                    r[4], r[5] = out[i], st[i]

        if inplace:
            try:
                digest_rows(inplace)
            except WeightsumError as e:
                # no CUDA backend here: device tensors through host memory, if allowed
                if e.code != "WS_ERR_NOTFOUND" or not any(r[3].is_cuda for r in inplace):
                    raise
                host = [r for r in inplace if r[3].is_cpu]
                if host:
                    digest_rows(host)
                streamed += [r for r in inplace if r[3].is_cuda]
                if not self.host_copy:
                    r = streamed[0]
                    raise WeightsumError(
                        "WS_ERR_NOTFOUND",
                        f"tensor '{r[0]}' is on {r[3].device} and the CUDA backend cannot read it "
                        f"({e}); Manifest(host_copy=True) streams it through host memory in "
                        "bounded chunks instead") from e
        for r in streamed:
            if not self.host_copy:
                raise WeightsumError(
                    "WS_ERR_NOTFOUND",
                    f"tensor '{r[0]}' is on {r[3].device}: weightsum reads CPU and CUDA tensors "
                    "in place, others only through host memory: Manifest(host_copy=True) "
                    "streams it there in bounded chunks")
            h = _StreamHasher(r[1], r[6], self.algos, self._key, r[2])
            self.host_bytes += _stream_device_tensor(r[3], h, self.chunk_bytes)
            r[4], r[5] = h.final()
        for name, code, shape, t, d, st, _ in rows:
            self._add_entry(name, code, shape, d, st)
            if self._kept is not None:
                self._kept[name] = t
        self.seconds += time.perf_counter() - t0

    def _add_entry(self, name: str, code: int, shape: Sequence[int], d: _Digest,
                   st: Stats) -> None:
        e = ManifestEntry()
        e.name = name.encode()
        e.dtype = code
        e.canonical_dtype = lib.ws_canonical_dtype(code, _canon_for(name, code, self.canon))
        e.ndim = len(shape)
        for i, n in enumerate(shape):
            e.shape[i] = int(n)
        e.digest = d
        e.stats = st
        rc = lib.ws_manifest_add(self._m.h, ctypes.byref(e))
        if rc != 0:
            raise WeightsumError(lib.ws_err_name(rc).decode(),
                                 f"tensor '{name}' added twice to the manifest" if name in self
                                 else f"tensor '{name}': cannot add to the manifest")

    def to_json(self) -> str:
        return self._m.to_json()

    def to_dict(self) -> Dict[str, Any]:
        """The manifest as weightsum's JSON manifest format (docs: README "Manifest")."""
        return json.loads(self.to_json())

    def save(self, path: Union[str, "os.PathLike[str]"]) -> None:
        """Write the JSON manifest atomically (temporary file, fsync, rename)."""
        raw = self.to_json().encode()
        call("ws_write_file_atomic", encode(path), raw, len(raw))

    def digest(self, name: str) -> Dict[str, Any]:
        """One tensor's entry as to_dict() gives it."""
        t = self.to_dict()["tensors"]
        if name not in t:
            raise KeyError(name)
        return t[name]

    @classmethod
    def _wrap(cls, cm: _CManifest) -> "Manifest":
        m = cls.__new__(cls)
        m._m = cm
        m.algos = lib.ws_manifest_algos(cm.h)
        m.algo = {v: k for k, v in _ALGOS.items()}.get(m.algos, "sha256")
        m.canon = lib.ws_manifest_canon(cm.h)
        m.canonical = {v: k for k, v in CANON.items()}[m.canon]
        src = lib.ws_manifest_source(cm.h)
        m.source = src.decode() if src else ""
        kid = lib.ws_manifest_key_id(cm.h)
        m._key = _KeyId(kid.decode()) if kid else None
        m.host_copy, m.chunk_bytes, m.seconds, m.host_bytes = False, _CHUNK, 0.0, 0
        m._kept = None
        return m

    @classmethod
    def load(cls, m: Any) -> "Manifest":
        """A Manifest from a path, a dict, JSON text or another Manifest (digests are kept;
        add() needs the seed, so a loaded manifest with fast digests accepts no more)."""
        return cls._wrap(_load_manifest(m))

    @classmethod
    def merge(cls, manifests: Sequence[Any], source: Optional[str] = None) -> "Manifest":
        """One manifest from several sources (one per pipeline stage): the same canonical
        policy, algorithms and key are required; a tensor in two sources must carry equal
        digests (a tied tensor on the first and last stage), else WeightsumError names it."""
        cms = [_load_manifest(m) for m in manifests]
        if not cms:
            raise ValueError("merge of no manifests")
        first = cms[0].h
        canon, algos = lib.ws_manifest_canon(first), lib.ws_manifest_algos(first)
        kid = lib.ws_manifest_key_id(first)
        srcs = []
        for i, cm in enumerate(cms):
            s = lib.ws_manifest_source(cm.h)
            srcs.append(s.decode() if s else f"#{i}")
            if (lib.ws_manifest_canon(cm.h) != canon or lib.ws_manifest_algos(cm.h) != algos
                    or lib.ws_manifest_key_id(cm.h) != kid):
                raise WeightsumError("WS_ERR_ARG", f"manifest {srcs[-1]}: canonical policy, "
                                     "algorithms or fast key differ from the first one's")
        out = _CManifest(lib.ws_manifest_new(canon, algos, kid,
                                             encode(source or "+".join(srcs))))
        seen: Dict[str, int] = {}
        for i, cm in enumerate(cms):
            for e in _api.entries_of(cm.h):
                name = e.name.decode()
                prev = lib.ws_manifest_find(out.h, e.name)
                if prev:
                    p = prev.contents
                    same = (bytes(p.digest.sha256) == bytes(e.digest.sha256)
                            and list(p.digest.fast.lane) == list(e.digest.fast.lane)
                            and p.ndim == e.ndim and list(p.shape) == list(e.shape))
                    if not same:
                        raise WeightsumError("WS_ERR_ARG", f"tensor '{name}': sources "
                                             f"{srcs[seen[name]]} and {srcs[i]} disagree")
                    continue
                seen[name] = i
                rc = lib.ws_manifest_add(out.h, ctypes.byref(e))
                if rc != 0:
                    raise WeightsumError(lib.ws_err_name(rc).decode(), f"tensor '{name}'")
        return cls._wrap(out)

    def merge_over(self, group: Any = None) -> "Manifest":
        """Merge the manifests of every rank of `group` (one per pipeline stage source rank;
        ranks with nothing to add pass an empty Manifest): every rank gets the merged one."""
        texts = [None] * dist.get_world_size(group)
        dist.all_gather_object(texts, self.to_json(), group=group)
        return Manifest.merge(texts)

    def expect(self, layout: str, tp: int, config: Any, engine: str = "sglang",
               device: str = "cuda",
               tensors: Optional[Mapping[str, "torch.Tensor"]] = None) -> Dict[str, Any]:
        """What every rank of an engine (layout, tp, config) that loaded these tensors must
        answer to its own "checksum" request (weightsum.expect, the engine dialects: engine
        "sglang" or "vllm"; device: where SGLang holds them, which picks its hash). From the
        tensors this manifest digested (kept with Manifest(keep_tensors=True)) or `tensors`.
        CPU tensors are read in place; CUDA tensors (C-contiguous, all on one device) too, for
        every answer: SGLang's gpu_tensor_hash on the GPU, the SHA-256 answers (vLLM's, SGLang's
        CPU path) by streaming each local tensor's image, gathered from the HF tensors on the
        GPU, through the CUDA backend's pinned staging buffers (bounded memory; the local
        tensors are never built). CPU and CUDA tensors mixed in one call are refused unless
        host_copy=True copies the CUDA ones to the host (counted in host_bytes)."""
        from .checker import expect as _expect
        src = dict(tensors) if tensors is not None else self._kept
        if src is None:
            raise ValueError("expect needs the tensors: Manifest(keep_tensors=True), or pass "
                             "tensors=")
        cuda_src = [n for n, t in src.items() if t.is_cuda]
        all_cuda = len(cuda_src) == len(src)
        use = {}
        for name, t in src.items():
            t = t.detach()
            if t.is_cuda and all_cuda:
                use[name] = t  # read on the GPU where it lies, whatever the answer
            elif not t.is_cpu:
                if not self.host_copy:
                    why = ("the others are in host memory: one call reads one device or the "
                           "host" if t.is_cuda else "only CPU and CUDA tensors are read in place")
                    raise WeightsumError("WS_ERR_NOTFOUND", f"tensor '{name}' is on {t.device}:"
                                         f" {why}; Manifest(host_copy=True) allows the copy")
                self.host_bytes += t.numel() * t.element_size()
                use[name] = t.cpu()
            else:
                use[name] = t
        return _expect(use, layout, tp, config, engine=engine, device=device,
                       source=self.source)


class _KeyId:
    """The key of a loaded manifest: its id only (the seed is not in a manifest)."""

    def __init__(self, key_id: str) -> None:
        self.id = key_id

    @property
    def h(self) -> Any:
        raise WeightsumError("WS_ERR_ARG", "a loaded manifest has no fast-digest seed; "
                             "build a new Manifest(key=SEED) to add tensors")


# ------------------------------------------------------------------------------------------
# Reports
# ------------------------------------------------------------------------------------------

@dataclass
class Finding:
    """One problem: status ("mismatch", "missing", "replica_mismatch", "padding", ...),
    the HF tensor, the engine tensor, the rank and HF rows [r0, r1) when known."""
    status: str
    tensor: Optional[str]
    local: Optional[str]
    rank: Optional[int]
    rows: Optional[Tuple[int, int]]
    detail: str

    def __str__(self) -> str:
        where = []
        if self.local and self.local != self.tensor:
            where.append(f"engine tensor {self.local}")
        if self.rank is not None:
            where.append(f"rank {self.rank}")
        if self.rows is not None:
            where.append(f"rows {self.rows[0]}..{self.rows[1]}")
        loc = (" (" + ", ".join(where) + ")") if where else ""
        return f"{self.status}: {self.tensor}{loc}: {self.detail}"


@dataclass
class Cost:
    """What one check cost: wall seconds on this rank, bytes moved between the group's ranks
    (every byte counted once per rank that receives it, over all ranks), bytes this rank sent,
    and bytes of device tensors streamed through host memory on this rank."""
    seconds: float = 0.0
    bytes_moved: int = 0
    bytes_sent: int = 0
    host_bytes: int = 0
    algo: str = ""


@dataclass
class Report:
    ok: bool
    findings: List[Finding]
    matched: int = 0
    cost: Cost = field(default_factory=Cost)
    rank: int = 0
    mode: str = "enforce"
    # caveats that are no finding (ok stays as it is): [{kind, detail, count, names}], e.g.
    # "low_bits_unchecked" when both sides hold bits the bf16 policy could not see
    warnings: List[Dict[str, Any]] = field(default_factory=list)

    def __str__(self) -> str:
        head = (f"weightsum: {'OK' if self.ok else 'FAILED'}: {self.matched} tensors match, "
                f"{len(self.findings)} findings ({self.cost.algo}, {self.cost.seconds:.3f} s, "
                f"{self.cost.bytes_moved} bytes moved)")
        return "\n".join([head] + ["  " + str(f) for f in self.findings] +
                         [f"  warning: {w['kind']}: {w['detail']}" for w in self.warnings])

    def to_dict(self) -> Dict[str, Any]:
        return {"ok": self.ok, "matched": self.matched,
                "findings": [f.__dict__ for f in self.findings], "cost": self.cost.__dict__,
                "warnings": self.warnings}


class WeightsCheckFailed(RuntimeError):
    """Raised in mode "enforce" when a check finds a problem; .report holds the report."""

    def __init__(self, report: Report) -> None:
        super().__init__(str(report))
        self.report = report


def _findings(r: Any) -> List[Finding]:
    return [Finding(f["status"], f["tensor"], f["local"], f["rank"],
                    tuple(f["rows"]) if f["rows"] else None, f["detail"])
            for f in _api.findings_of(r)]


class _CReport:
    def __init__(self) -> None:
        self.h = lib.ws_report_new()
        if not self.h:
            raise MemoryError("ws_report: out of memory")

    def __del__(self) -> None:
        if getattr(self, "h", None):
            lib.ws_report_free(self.h)
            self.h = None


# ------------------------------------------------------------------------------------------
# Layouts, sources, partials and their exchange over a process group
# ------------------------------------------------------------------------------------------

class _Layout:
    """A layout and its plan, plus its tensors and pieces as Python lists (for streaming)."""

    def __init__(self, family: str, config: Any, tp: int) -> None:
        need("ws_plan_create", "ws_partials_compute", "ws_source_host_create")
        self._cfg = _api.model_config(config)
        self.family, self.tp = family, int(tp)
        self.h = _P()
        call("ws_layout_create", family.encode(), ctypes.cast(self._cfg, _P), self.tp,
             ctypes.byref(self.h))
        self.plan = _P()
        try:
            call("ws_plan_create", self.h, ctypes.byref(self.plan))
        except Exception:
            lib.ws_layout_free(self.h)
            self.h = None
            raise
        L = self.h
        self.hf = []
        for i in range(lib.ws_layout_hf_count(L)):
            d = lib.ws_layout_hf(L, i).contents
            self.hf.append((d.name.decode(), [d.shape[k] for k in range(d.ndim)],
                            d.tied_to.decode() if d.tied_to else None))
        self.locals = []
        for i in range(lib.ws_layout_local_count(L)):
            d = lib.ws_layout_local(L, i).contents
            self.locals.append((d.name.decode(), d.rank, [d.shape[k] for k in range(d.ndim)]))
        self.pieces = []
        for i in range(lib.ws_layout_piece_count(L)):
            p = lib.ws_layout_piece(L, i).contents
            self.pieces.append((p.hf, p.local, p.replica, p.rows, p.cols, p.t_row0, p.t_col0,
                                p.t_cols, p.l_row0, p.l_col0, p.l_cols))

    def __del__(self) -> None:
        if getattr(self, "plan", None) is not None and self.plan.value:
            lib.ws_plan_free(self.plan)
            self.plan = None
        if getattr(self, "h", None) is not None and self.h.value:
            lib.ws_layout_free(self.h)
            self.h = None


class _Source:
    """A ws_source of this rank's named local tensors (host or device memory, not copied)."""

    def __init__(self, named: Iterable[Tuple[str, "torch.Tensor"]]) -> None:
        self.h = _P()
        call("ws_source_host_create", ctypes.byref(self.h))
        self.tensors: Dict[str, torch.Tensor] = {}
        self._keep: List[Any] = []
        streams: Dict[int, int] = {}
        for name, t in named:
            t = t.detach()
            self.tensors[name] = t  # keeps the memory alive as long as the source
            code, shp, st, ptr, dev, stream, keep = _cuda.describe(t, name, streams)
            self._keep.append(keep)
            shape = shape_array(shp)
            strides = (ctypes.c_int64 * max(len(shp), 1))(*st)
            if dev < 0:
                call("ws_source_add", self.h, name.encode(), code, len(shp), shape, strides,
                     ptr or None)
            else:
                call("ws_source_add_device", self.h, name.encode(), code, len(shp), shape,
                     strides, ptr or None, stream or None)

    def __del__(self) -> None:
        if getattr(self, "h", None) is not None and self.h.value:
            lib.ws_source_free(self.h)
            self.h = None


class _Partials:
    def __init__(self, h: Any) -> None:
        self.h = h

    def __del__(self) -> None:
        if getattr(self, "h", None) is not None and self.h.value:
            lib.ws_partials_free(self.h)
            self.h = None


def _comm_device(group: Any) -> "torch.device":
    if dist.get_backend(group) == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def _to_bytes(t: "torch.Tensor", n: int) -> bytes:
    t = t[:n].cpu().contiguous()
    return ctypes.string_at(t.data_ptr(), n) if n else b""


def _all_gather_bytes(payload: bytes, group: Any) -> Tuple[List[bytes], int]:
    """Every rank's payload, on every rank; and the bytes moved (each byte counted once per
    rank receiving it: (W - 1) x (W x the padded length + the lengths))."""
    world = dist.get_world_size(group)
    dev = _comm_device(group)
    n = torch.tensor([len(payload)], dtype=torch.int64, device=dev)
    sizes = [torch.zeros_like(n) for _ in range(world)]
    dist.all_gather(sizes, n, group=group)
    lens = [int(s.item()) for s in sizes]
    m = max(lens)
    buf = torch.zeros(max(m, 1), dtype=torch.uint8)
    if payload:
        buf[:len(payload)] = torch.frombuffer(bytearray(payload), dtype=torch.uint8)
    buf = buf.to(dev)
    outs = [torch.empty(max(m, 1), dtype=torch.uint8, device=dev) for _ in range(world)]
    dist.all_gather(outs, buf, group=group)
    moved = (world - 1) * (world * (m + 8))
    return [_to_bytes(o, k) for o, k in zip(outs, lens)], moved


def _exchange_partials(lay: _Layout, rank: int, named: Iterable[Tuple[str, "torch.Tensor"]],
                       key: _Key, canon: int, group: Any, extra: Any = None
                       ) -> Tuple[_Partials, List[Any], int, Dict[str, "torch.Tensor"]]:
    """Compute this rank's partials, all-gather everyone's, merge them. A failure on any rank
    (a missing CUDA backend, a bad dtype) is carried through the exchange so that every rank
    raises the same error instead of leaving the others waiting in a collective."""
    world = dist.get_world_size(group)
    if world != lay.tp:
        raise ValueError(f"the process group has {world} ranks, the {lay.family} layout "
                         f"tp={lay.tp}: give the group of this engine's (or model's) TP ranks")
    tensors: Dict[str, torch.Tensor] = {}
    try:
        src = _Source(named)
        tensors = src.tensors
        pa = _P()
        call("ws_partials_compute", lay.plan, rank, src.h, key.h, canon, ctypes.byref(pa))
        mine = _Partials(pa)
        buf, ln = _P(), ctypes.c_size_t()
        call("ws_partials_serialize", mine.h, ctypes.byref(buf), ctypes.byref(ln))
        try:
            body = ctypes.string_at(buf.value, ln.value)
        finally:
            lib.ws_free(buf)
        payload = pickle.dumps(("ok", rank, body, extra), protocol=4)
    except Exception as e:  # carried to every rank, raised below on all of them
        payload = pickle.dumps(("error", rank, f"{type(e).__name__}: {e}", None), protocol=4)
    got, moved = _all_gather_bytes(payload, group)
    parts = [pickle.loads(g) for g in got]
    errors = [p for p in parts if p[0] == "error"]
    if errors:
        raise WeightsumError("WS_ERR_ARG", "; ".join(f"rank {p[1]}: {p[2]}" for p in errors))
    merged: Optional[_Partials] = None
    for p in sorted(parts, key=lambda p: p[1]):
        h = _P()
        call("ws_partials_deserialize", p[2], len(p[2]), ctypes.byref(h))
        one = _Partials(h)
        if merged is None:
            merged = one
        else:
            call("ws_partials_merge", merged.h, one.h)
    assert merged is not None
    return merged, [p[3] for p in sorted(parts, key=lambda p: p[1])], moved, tensors


def megatron_manifest(layout: str, config: Any, tp_rank: int, tp_size: int,
                      named_shards: Iterable[Tuple[str, "torch.Tensor"]], group: Any = None,
                      canonical: str = "bf16", key: Union[str, bytes, None] = None,
                      source: str = "trainer") -> Manifest:
    """The Megatron-native trainer path: every TP rank of `group` calls it with the named
    shards it holds (Megatron names: linear_qkv, linear_fc1, ...); partials meet over the group
    and every rank gets the HF-level fast-digest manifest, with no TP gather. Structural
    problems (a missing shard, coverage) raise WeightsumError naming them."""
    lay = _Layout(layout, config, tp_size)
    k = _Key(key)
    merged, _, moved, _ = _exchange_partials(lay, tp_rank, named_shards, k, CANON[canonical],
                                             group)
    r = _CReport()
    out = _P()
    call("ws_partials_manifest", lay.plan, merged.h, encode(source), ctypes.byref(out), r.h)
    m = Manifest._wrap(_CManifest(out.value))
    m._key = k
    m.bytes_moved = moved
    problems = _findings(r.h)
    if problems:
        raise WeightsumError("WS_ERR_LAYOUT", "; ".join(str(f) for f in problems))
    return m


# ------------------------------------------------------------------------------------------
# Engine side
# ------------------------------------------------------------------------------------------

def _rank_answer(tensors: Dict[str, "torch.Tensor"], hash_name: str) -> Dict[str, str]:
    """This rank's own SGLang "checksum" answer over its local tensors, read where they lie
    (CUDA tensors on the GPU, in place): gpu_tensor_hash in one launch, or SGLang's CPU hash
    (the first 8 bytes of SHA-256 of the stored bytes, big-endian) through ws_digest_views."""
    if not tensors:
        return {}
    if hash_name == "gpu_tensor_hash":
        return {n: f"{v:016x}" for n, v in _cuda.sglang_hash_tensors(tensors).items()}
    if hash_name != "sha256_first8":
        raise WeightsumError("WS_ERR_ARG", f"an expectation of hash {hash_name!r}: a rank's own "
                             "answer is computed for SGLang's (gpu_tensor_hash, sha256_first8)")
    names, n, out, _ = _cuda.digest_batch(tensors, CANON["native"], ALGO_SHA256)
    return {names[i]: bytes(out[i].sha256[:8]).hex() for i in range(n)}


def _mode(mode: Optional[str]) -> str:
    m = mode or os.environ.get("WEIGHTSUM_MODE", "enforce")
    if m not in MODES:
        raise ValueError(f"mode must be one of {MODES}, not {m!r}")
    return m


class EngineCheck:
    """The engine side of a weight-sync check, one instance per TP rank.

    layout: "sglang", "vllm", "megatron", "hf", ... (docs/layouts.md); config: the HF
    config.json (a path, JSON text or a dict); group: the torch.distributed group of the
    engine's TP ranks (default: the default group), whose size is tp_size and whose rank
    order need not follow tp_rank. mode: "off" (verify does nothing and returns None), "log"
    (findings logged as one warning; trouble logged as an error) or "enforce" (raise
    WeightsCheckFailed carrying the report); default $WEIGHTSUM_MODE, else "enforce".
    key: the fast digest's seed (the manifest's must match); chunk_bytes bounds each chunk a
    SHA-256 check streams; assemble_bytes: the device memory an owner rank whose parameters
    are CUDA tensors may use to build tensors split over ranks whole on its GPU from those
    chunks and hash them through the CUDA backend's SHA-256 pipeline (0: every split tensor's
    chunks through host memory instead). Build it once (the plan is reused for every check).
    """

    def __init__(self, layout: str, tp_rank: int, tp_size: int, config: Any,
                 group: Any = None, mode: Optional[str] = None,
                 key: Union[str, bytes, None] = None, chunk_bytes: int = _CHUNK,
                 assemble_bytes: int = _ASSEMBLE) -> None:
        self.mode = _mode(mode)
        self.layout = _Layout(layout, config, tp_size)
        self.tp_rank, self.tp_size, self.group = int(tp_rank), int(tp_size), group
        if not 0 <= self.tp_rank < self.tp_size:
            raise ValueError(f"tp_rank {tp_rank} outside 0..{tp_size - 1}")
        self.key = _Key(key)
        self.chunk_bytes = int(chunk_bytes)
        self.assemble_bytes = int(assemble_bytes)
        self.last: Optional[Report] = None

    def verify(self, manifest: Any, named_params: Union[Mapping[str, "torch.Tensor"],
                                                        Iterable[Tuple[str, "torch.Tensor"]]],
               mode: Optional[str] = None, expected: Optional[Dict[str, Any]] = None
               ) -> Optional[Report]:
        """Check this rank's local parameters, with every other rank of the group doing the
        same at the same time, against the trainer's manifest; every rank returns the same
        report. A collective call: every rank of the group must call it.

        expected (optional): the engine-dialect answers Manifest.expect gave for this layout;
        every rank then also computes its own SGLang-style checksum answer (one 64-bit hash
        per local tensor, a few bytes each through one all-gather) and the findings of a
        differing answer name the exact rank and engine tensor."""
        mode = _mode(mode or self.mode)
        if mode == "off":
            return None
        t0 = time.perf_counter()
        named = list(named_params.items() if isinstance(named_params, Mapping)
                     else named_params)
        try:
            rep = self._verify(_load_manifest(manifest), named)
            if expected is not None:
                extra, moved = self._judge_answers(expected, named)
                rep.findings.extend(extra)
                rep.ok = rep.ok and not extra
                rep.cost.bytes_moved += moved
        except WeightsumError as e:
            if mode == "log":
                log.error("weightsum: check could not run on rank %d: %s", self.tp_rank, e)
                rep = Report(False, [Finding("trouble", None, None, self.tp_rank, None,
                                             str(e))], rank=self.tp_rank, mode=mode)
                rep.cost.seconds = time.perf_counter() - t0
                self.last = rep
                return rep
            raise
        rep.cost.seconds = time.perf_counter() - t0
        rep.mode = mode
        self.last = rep
        if not rep.ok:
            if mode == "log":
                log.warning("%s", rep)
            else:
                raise WeightsCheckFailed(rep)
        elif rep.warnings and mode == "log":
            log.warning("%s", rep)
        return rep

    def _judge_answers(self, expected: Dict[str, Any],
                       named: List[Tuple[str, "torch.Tensor"]]) -> Tuple[List[Finding], int]:
        """This rank's SGLang checksum answer, everyone's gathered, judged against the
        expected answers (weightsum.judge): findings that name rank and engine tensor."""
        from .checker import judge
        mine: Dict[str, str] = {}
        err = None
        try:
            mine = _rank_answer(dict((n, t.detach()) for n, t in named),
                                expected.get("hash", "gpu_tensor_hash"))
        except Exception as e:  # carried through the exchange, raised on every rank
            err = f"{type(e).__name__}: {e}"
        got, moved = _all_gather_bytes(pickle.dumps((self.tp_rank, mine, err)), self.group)
        parts = sorted((pickle.loads(g) for g in got), key=lambda p: p[0])
        errors = [p for p in parts if p[2]]
        if errors:
            raise WeightsumError("WS_ERR_ARG", "; ".join(f"rank {p[0]}: {p[2]}"
                                                         for p in errors))
        infos = []
        for r, sums, _ in parts:
            info = {"role": "target", "tp_rank": r, "tp_size": self.tp_size, "dp_rank": 0,
                    "dp_size": 1, "pp_rank": 0, "pp_size": 1, "rank": r,
                    "size": self.tp_size}
            infos.append({"checksums": sums, "parallelism_info": [info]})
        answer = {"success": True, "message": "Success.", "ranks": infos}
        out = judge(expected, answer)
        return [Finding(f.get("status", "mismatch"), f.get("tensor"), f.get("local"),
                        f.get("rank"), tuple(f["rows"]) if f.get("rows") else None,
                        "checksum answer: " + f.get("detail", ""))
                for f in out.get("findings", [])], moved

    def _verify(self, expected: _CManifest, named: List[Tuple[str, "torch.Tensor"]]) -> Report:
        algos = lib.ws_manifest_algos(expected.h)
        canon = lib.ws_manifest_canon(expected.h)
        lay = self.layout
        if algos & ALGO_FAST:
            kid = lib.ws_manifest_key_id(expected.h)
            if kid and kid.decode() != self.key.id:
                raise WeightsumError("WS_ERR_ARG", f"the manifest's fast digests use key "
                                     f"{kid.decode()}, this check {self.key.id}: give "
                                     "EngineCheck(key=SEED) the trainer's seed")
            merged, _, moved, _ = _exchange_partials(lay, self.tp_rank, named, self.key,
                                                     canon, self.group)
            r = _CReport()
            call("ws_partials_judge", lay.plan, merged.h, expected.h, r.h)
            fs = _findings(r.h)
            rep = Report(not fs, fs, int(lib.ws_report_matched(r.h)), rank=self.tp_rank,
                         warnings=report_warnings(r.h))
            rep.cost = Cost(bytes_moved=moved, bytes_sent=moved // max(1, self.tp_size),
                            algo="fast")
            return rep
        return _ShaCheck(self, expected, canon, named).run()


class _ShaCheck:
    """A SHA-256 check over the group: structure from partials (replicas, padding, coverage,
    missing and misshapen tensors), then every canonical tensor hashed on one owner rank from
    its replica-0 pieces, streamed there in canonical order, chunk by chunk."""

    def __init__(self, ec: EngineCheck, expected: _CManifest, canon: int,
                 named: List[Tuple[str, "torch.Tensor"]]) -> None:
        self.ec, self.expected, self.canon, self.named = ec, expected, canon, named
        self.lay = ec.layout
        self.group = ec.group
        self.rank = ec.tp_rank
        self.world = ec.tp_size
        self.dev = _comm_device(self.group)
        self.sent = 0
        self.host_bytes = 0
        self.read_as: Dict[int, str] = {}

    def _peer(self, group_rank_of_tp: Dict[int, int], tp: int) -> int:
        g = group_rank_of_tp[tp]
        if self.group is None or self.group is dist.group.WORLD:
            return g
        return dist.get_global_rank(self.group, g)

    def run(self) -> Report:
        lay = self.lay
        meta = {n: (_ws_name(t.dtype), list(t.shape)) for n, t in self.named}
        my_group_rank = dist.get_rank(self.group)
        merged, metas, moved, tensors = _exchange_partials(
            lay, self.rank, self.named, self.ec.key, self.canon, self.group,
            extra=(my_group_rank, meta))
        # structure: the partials' own verdicts (replicas, padding, coverage, missing, shape)
        r = _CReport()
        fast_m = _P()
        call("ws_partials_manifest", lay.plan, merged.h, b"engine", ctypes.byref(fast_m), r.h)
        lib.ws_manifest_free(fast_m.value)
        structure = _findings(r.h)
        tp_to_group = {tp: m[0] for tp, m in enumerate(metas)}
        local_meta = {tp: m[1] for tp, m in enumerate(metas)}
        self.read_as = self._read_names(local_meta)
        plan = self._plan(local_meta)
        results, sent = self._stream(plan, tensors, tp_to_group)
        # every owner's digests to every rank: each builds the same actual manifest
        got, moved2 = _all_gather_bytes(pickle.dumps((results, sent, self.host_bytes)),
                                        self.group)
        allres: Dict[str, Any] = {}
        total_sent = 0
        for g in got:
            res, s, _hb = pickle.loads(g)
            allres.update(res)
            total_sent += s
        actual = self._actual(allres)
        r2 = _CReport()
        call("ws_compare_manifests", self.expected.h, actual.h, r2.h)
        compared = [self._name_holders(f) for f in _findings(r2.h)]
        fs = structure + compared
        rep = Report(not fs, fs, int(lib.ws_report_matched(r2.h)), rank=self.rank,
                     warnings=report_warnings(r2.h))
        rep.cost = Cost(bytes_moved=moved + moved2 + total_sent, bytes_sent=self.sent,
                        host_bytes=self.host_bytes, algo="sha256")
        return rep

    def _read_names(self, local_meta: Dict[int, Dict[str, Any]]) -> Dict[int, str]:
        """The name each local tensor is held under on its rank: its own, else an alias the
        layout gives it (a tied embedding kept as lm_head.weight only, as the partials bind
        it), so that its bytes are read and judged rather than reported missing."""
        out: Dict[int, str] = {}
        for rank, meta in local_meta.items():
            for name in sorted(meta):
                li = int(lib.ws_layout_find_local(self.lay.h, rank, name.encode()))
                if li >= 0 and (li not in out or self.lay.locals[li][0] == name):
                    out[li] = name
        return out

    def _lname(self, local: int) -> str:
        return self.read_as.get(local, self.lay.locals[local][0])

    def _name_holders(self, f: Finding) -> Finding:
        """A digest verdict names the engine tensors and ranks that hold the HF tensor's
        replica-0 pieces (the rank itself when only one does)."""
        lay = self.lay
        h = next((i for i, d in enumerate(lay.hf) if d[0] == f.tensor), None)
        if h is None or f.local is not None:
            return f
        if lay.hf[h][2] is not None:  # tied: held where its target is
            h = next((i for i, d in enumerate(lay.hf) if d[0] == lay.hf[h][2]), h)
        held = [(self._lname(p[1]), lay.locals[p[1]][1], p[8], p[8] + p[3])
                for p in lay.pieces if p[0] == h and p[2] == 0]
        if not held:
            return f
        ranks = sorted({x[1] for x in held})
        where = "; ".join(f"{n} rows {a}..{b} on rank {r}" for n, r, a, b in held)
        return Finding(f.status, f.tensor, held[0][0], ranks[0] if len(ranks) == 1 else None,
                       f.rows, f"{f.detail}; held by {where}")

    def _plan(self, local_meta: Dict[int, Dict[str, Any]]) -> List[Any]:
        """Per canonical tensor that can be rebuilt: (hf index, dtype name, owner, its
        replica-0 pieces). Owners: a tensor held whole by one rank is hashed there; the rest
        go to the least-loaded rank, largest first, so that all ranks hash at once."""
        lay = self.lay
        by_hf: Dict[int, List[Any]] = {}
        for p in lay.pieces:
            if p[2] == 0:
                by_hf.setdefault(p[0], []).append(p)
        jobs = []
        for h, (name, shape, tied) in enumerate(lay.hf):
            if tied is not None or h not in by_hf:
                continue
            dts = set()
            ok = True
            for p in by_hf[h]:
                _, lrank, lshape = lay.locals[p[1]]
                m = local_meta.get(lrank, {}).get(self._lname(p[1]))
                if m is None or list(m[1]) != list(lshape):
                    ok = False  # missing or misshapen: the structural findings name it
                    break
                dts.add(m[0])
            if not ok or len(dts) != 1 or "?" in dts:
                continue
            numel = 1
            for n in shape:
                numel *= int(n)
            ranks = {lay.locals[p[1]][1] for p in by_hf[h]}
            jobs.append([h, dts.pop(), None, by_hf[h], numel, ranks])
        load = [0] * self.world
        for j in jobs:
            if len(j[5]) == 1:
                j[2] = next(iter(j[5]))
                load[j[2]] += j[4]
        for j in sorted((j for j in jobs if j[2] is None), key=lambda j: (-j[4], j[0])):
            o = min(range(self.world), key=lambda k: (load[k], k))
            j[2] = o
            load[o] += j[4]
        return jobs

    def _chunks(self, job: Any) -> List[Tuple[int, int]]:
        h, dt, owner, pieces, numel = job[:5]
        t_cols = int(pieces[0][7])
        t_rows = numel // t_cols if t_cols else 0
        esize = torch.empty((), dtype=_WS_TO_TORCH[dt]).element_size()
        per = max(1, self.ec.chunk_bytes // max(1, t_cols * esize))
        return [(a, min(a + per, t_rows)) for a in range(0, t_rows, per)] or [(0, 0)]

    def _rects(self, job: Any, a: int, b: int, holder: int) -> List[Any]:
        """The parts of rows [a, b) of the job's tensor that rank `holder` holds: (piece,
        first HF row, last HF row), in a fixed order both sides compute."""
        lay = self.lay
        out = []
        for p in job[3]:
            if lay.locals[p[1]][1] != holder:
                continue
            r0, r1 = max(a, p[5]), min(b, p[5] + p[3])
            if r0 < r1:
                out.append((p, r0, r1))
        return out

    def _local_rect(self, tensors: Dict[str, "torch.Tensor"], p: Any, r0: int,
                    r1: int) -> "torch.Tensor":
        t = tensors[self._lname(p[1])]
        v = t.reshape(-1, int(p[10]))
        lr0 = int(p[8]) + (r0 - int(p[5]))
        return v[lr0:lr0 + (r1 - r0), int(p[9]):int(p[9]) + int(p[4])]

    def _stream(self, jobs: List[Any], tensors: Dict[str, "torch.Tensor"],
                tp_to_group: Dict[int, int]) -> Tuple[Dict[str, Any], int]:
        per_owner: Dict[int, List[Tuple[Any, int, int]]] = {k: [] for k in range(self.world)}
        whole = []  # held whole, as one piece, by their owner: digested in place, in one call
        for j in jobs:
            p = j[3][0]
            if len(j[3]) == 1 and int(p[3]) * int(p[4]) == j[4]:
                if j[2] == self.rank:
                    whole.append(j)
                continue
            for a, b in self._chunks(j):
                per_owner[j[2]].append((j, a, b))
        results: Dict[str, Any] = {}
        if whole:
            rule = [_canon_for(self.lay.hf[j[0]][0], dtype_code(j[1]), self.canon) for j in whole]
            for c in sorted(set(rule)):  # one batch per canonical rule (FP8 scales: native)
                sub = [j for j, r in zip(whole, rule) if r == c]
                views = [self._local_rect(tensors, j[3][0], int(j[3][0][5]),
                                          int(j[3][0][5]) + int(j[3][0][3])) for j in sub]
                _, _, out, st = _cuda.digest_batch(views, c, ALGO_SHA256)
                for i, j in enumerate(sub):
                    name, shape, _ = self.lay.hf[j[0]]
                    results[name] = (j[1], list(shape), bytes(out[i].sha256), st[i].nan,
                                     st[i].inf)
        rounds = max((len(v) for v in per_owner.values()), default=0)
        hashers: Dict[int, _StreamHasher] = {}
        # split tensors built whole on this rank's GPU (at most assemble_bytes at a time) and
        # hashed through the backend's pipeline, in batches; the others chunk by chunk on the CPU
        home = next((t.device for t in tensors.values() if _cuda.on_device(t)), None)
        built: Dict[int, "torch.Tensor"] = {}
        stage: List[Optional["torch.Tensor"]] = [None]
        pending: List[Tuple[Any, "torch.Tensor"]] = []
        held = [0]

        def flush() -> None:
            if not pending:
                return
            rule = [_canon_for(self.lay.hf[j[0]][0], dtype_code(j[1]), self.canon)
                    for j, _ in pending]
            for c in sorted(set(rule)):
                sub = [x for x, r in zip(pending, rule) if r == c]
                _, _, out, st = _cuda.digest_batch([t for _, t in sub], c, ALGO_SHA256)
                for i, (j, _) in enumerate(sub):
                    name, shape, _ = self.lay.hf[j[0]]
                    results[name] = (j[1], list(shape), bytes(out[i].sha256), st[i].nan,
                                     st[i].inf)
            pending.clear()
            held[0] = 0
        sent = 0
        algos = ALGO_SHA256
        for k in range(rounds):
            ops, recvs, sends_keep = [], [], []
            for o in range(self.world):
                if k >= len(per_owner[o]) or o == self.rank:
                    continue
                job, a, b = per_owner[o][k]
                rects = self._rects(job, a, b, self.rank)
                if not rects:
                    continue
                flat = torch.cat([self._local_rect(tensors, *x).contiguous().reshape(-1)
                                  .view(torch.uint8) for x in rects]).to(self.dev)
                sends_keep.append(flat)
                ops.append(dist.P2POp(dist.isend, flat, self._peer(tp_to_group, o),
                                      self.group))
                sent += flat.numel()
            mine = per_owner[self.rank][k] if k < len(per_owner[self.rank]) else None
            if mine is not None:
                job, a, b = mine
                esize = torch.empty((), dtype=_WS_TO_TORCH[job[1]]).element_size()
                for src in range(self.world):
                    if src == self.rank:
                        continue
                    rects = self._rects(job, a, b, src)
                    if not rects:
                        continue
                    n = sum((x[2] - x[1]) * int(x[0][4]) for x in rects) * esize
                    buf = torch.empty(n, dtype=torch.uint8, device=self.dev)
                    recvs.append((src, rects, buf))
                    ops.append(dist.P2POp(dist.irecv, buf, self._peer(tp_to_group, src),
                                          self.group))
            if ops:
                for req in dist.batch_isend_irecv(ops):
                    req.wait()
            if mine is None:
                continue
            job, a, b = mine
            h, dt = job[0], job[1]
            name, shape, _ = self.lay.hf[h]
            tdt = _WS_TO_TORCH[dt]
            t_cols = int(job[3][0][7])
            own = self._rects(job, a, b, self.rank)
            dev = next((tensors[self._lname(x[0][1])].device for x in own), self.dev)
            if a == 0 and home is not None:
                nbytes = job[4] * torch.empty((), dtype=tdt).element_size()
                if nbytes <= self.ec.assemble_bytes:
                    if held[0] + nbytes > self.ec.assemble_bytes:
                        flush()
                    built[h] = torch.empty((job[4] // max(1, t_cols), t_cols), dtype=tdt,
                                           device=home)
                    held[0] += nbytes
            if h in built:
                chunk = built[h][a:b]
                dev = chunk.device
            else:
                chunk = torch.empty((b - a, t_cols), dtype=tdt, device=dev)
            for x in own:
                p, r0, r1 = x
                chunk[r0 - a:r1 - a, int(p[6]):int(p[6]) + int(p[4])] = \
                    self._local_rect(tensors, *x)
            for src, rects, buf in recvs:
                off = 0
                vals = buf.view(tdt)
                for p, r0, r1 in rects:
                    n = (r1 - r0) * int(p[4])
                    chunk[r0 - a:r1 - a, int(p[6]):int(p[6]) + int(p[4])] = \
                        vals[off:off + n].reshape(r1 - r0, int(p[4])).to(dev)
                    off += n
            if h in built:
                if b == self._chunks(job)[-1][1]:
                    pending.append((job, built.pop(h)))
                continue
            if h not in hashers:
                code = dtype_code(dt)
                hashers[h] = _StreamHasher(code, _canon_for(name, code, self.canon), algos, None,
                                           shape)
            host = chunk
            if chunk.device.type != "cpu":  # a device chunk: through one reused pinned buffer
                nb = chunk.numel() * chunk.element_size()
                if stage[0] is None or stage[0].numel() < nb:
                    stage[0] = torch.empty(nb, dtype=torch.uint8, pin_memory=_pinnable())
                host = stage[0][:nb].view(chunk.dtype).view(chunk.shape)
                host.copy_(chunk)  # synchronous: host holds the bytes when it returns
                self.host_bytes += nb
            hashers[h].update(host.data_ptr(), host.numel())
            if b == self._chunks(job)[-1][1]:
                d, st = hashers.pop(h).final()
                results[name] = (dt, list(shape), bytes(d.sha256), st.nan, st.inf)
        flush()
        self.sent = sent
        return results, sent

    def _actual(self, res: Dict[str, Any]) -> _CManifest:
        m = _CManifest(lib.ws_manifest_new(self.canon, ALGO_SHA256, None, b"engine"))
        names = {n for n, _, _ in self.lay.hf}
        for name, shape, tied in self.lay.hf:
            src = tied if tied is not None else name
            if src not in res:
                continue
            if tied is not None and not lib.ws_manifest_find(self.expected.h, name.encode()):
                continue  # a tied tensor the trainer does not name (save_pretrained drops it)
            dt, shp, sha, nan, inf = res[src]
            e = ManifestEntry()
            e.name = name.encode()
            code = dtype_code(dt)
            e.dtype = code
            e.canonical_dtype = lib.ws_canonical_dtype(code, _canon_for(name, code, self.canon))
            e.ndim = len(shp)
            for i, n in enumerate(shp):
                e.shape[i] = int(n)
            e.digest.algos = ALGO_SHA256
            ctypes.memmove(e.digest.sha256, sha, 32)
            e.stats.nan, e.stats.inf = nan, inf
            rc = lib.ws_manifest_add(m.h, ctypes.byref(e))
            if rc != 0:
                raise WeightsumError(lib.ws_err_name(rc).decode(), f"tensor '{name}'")
        del names
        return m
