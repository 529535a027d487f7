"""Shared by the GPU tests and benchmarks (tests/gpu, bench/gpu): ctypes for layouts and
the SGLang answers of a rank, Qwen-shaped tensors, SGLang's own Triton hash."""
import ctypes
import os
import sys

import numpy as np
import torch

import weightsum
from weightsum._lib import _Error, _P, check, lib
from weightsum.cuda import Batch, _View, _batch  # noqa: F401

HERE = os.path.dirname(os.path.abspath(__file__))


def sglang_gpu_tensor_hash():
    """SGLang's own gpu_tensor_hash (its released file, carried beside these scripts or from
    an installed sglang)."""
    try:
        from sglang.kernels.ops.memory.gpu_tensor_hash import gpu_tensor_hash
        return gpu_tensor_hash
    except Exception:
        pass
    path = os.environ.get("SGLANG_GPU_TENSOR_HASH", os.path.join(HERE, "gpu_tensor_hash.py"))
    import importlib.util
    spec = importlib.util.spec_from_file_location("sgl_gpu_tensor_hash", path)
    m = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(m)
    return m.gpu_tensor_hash


class Piece(ctypes.Structure):  # ws_piece
    _fields_ = [("hf", ctypes.c_uint32), ("local", ctypes.c_uint32), ("replica", ctypes.c_uint32),
                ("rows", ctypes.c_uint64), ("cols", ctypes.c_uint64),
                ("t_row0", ctypes.c_uint64), ("t_col0", ctypes.c_uint64),
                ("t_cols", ctypes.c_uint64), ("l_row0", ctypes.c_uint64),
                ("l_col0", ctypes.c_uint64), ("l_cols", ctypes.c_uint64)]


MAX_DIMS = 8


class HfDesc(ctypes.Structure):  # ws_hf_desc
    _fields_ = [("name", ctypes.c_char_p), ("ndim", ctypes.c_int),
                ("shape", ctypes.c_uint64 * MAX_DIMS), ("tied_to", ctypes.c_char_p)]


class LocalDesc(ctypes.Structure):  # ws_local_desc
    _fields_ = [("name", ctypes.c_char_p), ("rank", ctypes.c_int), ("ndim", ctypes.c_int),
                ("shape", ctypes.c_uint64 * MAX_DIMS)]


for name, res, args in [
        ("ws_model_config_parse", ctypes.c_int, [ctypes.c_char_p, ctypes.c_size_t,
                                                  ctypes.c_char_p, ctypes.POINTER(_P),
                                                  ctypes.POINTER(_Error)]),
        ("ws_model_config_free", None, [_P]),
        ("ws_layout_create", ctypes.c_int, [ctypes.c_char_p, _P, ctypes.c_int,
                                             ctypes.POINTER(_P), ctypes.POINTER(_Error)]),
        ("ws_layout_free", None, [_P]),
        ("ws_layout_hf_count", ctypes.c_size_t, [_P]),
        ("ws_layout_hf", ctypes.POINTER(HfDesc), [_P, ctypes.c_size_t]),
        ("ws_layout_local_count", ctypes.c_size_t, [_P]),
        ("ws_layout_local", ctypes.POINTER(LocalDesc), [_P, ctypes.c_size_t]),
        ("ws_layout_piece_count", ctypes.c_size_t, [_P]),
        ("ws_layout_piece", ctypes.POINTER(Piece), [_P, ctypes.c_size_t]),
        ("ws_sglang_expect_views", ctypes.c_int, [_P, ctypes.c_int, ctypes.POINTER(_View),
                                                  ctypes.c_size_t, ctypes.c_int, _P,
                                                  ctypes.POINTER(ctypes.c_uint64),
                                                  ctypes.c_size_t, ctypes.POINTER(_Error)])]:
    f = getattr(lib, name)
    f.restype, f.argtypes = res, args


class Layout:
    def __init__(self, config_json, family="sglang", tp=2):
        cfg = _P()
        err = _Error()
        b = config_json.encode()
        check(lib.ws_model_config_parse(b, len(b), b"config", ctypes.byref(cfg), ctypes.byref(err)),
              err)
        self.h = _P()
        rc = lib.ws_layout_create(family.encode(), cfg, tp, ctypes.byref(self.h), ctypes.byref(err))
        lib.ws_model_config_free(cfg)
        check(rc, err)
        self.tp = tp
        self.hf = [lib.ws_layout_hf(self.h, i).contents for i in range(lib.ws_layout_hf_count(self.h))]
        self.local = [lib.ws_layout_local(self.h, i).contents
                      for i in range(lib.ws_layout_local_count(self.h))]
        self.pieces = [lib.ws_layout_piece(self.h, i).contents
                       for i in range(lib.ws_layout_piece_count(self.h))]

    def hf_shapes(self):
        return [(d.name.decode(), tuple(d.shape[:d.ndim]), d.tied_to) for d in self.hf]

    def local_of(self, rank):
        return [(i, d.name.decode(), tuple(d.shape[:d.ndim])) for i, d in enumerate(self.local)
                if d.rank == rank]

    def expect(self, rank, hf_tensors, engine_dtype="BF16"):
        """ws_sglang_expect_views: the rank's SGLang answers from HF tensors (list by HF index)."""
        _, nh, views, keep, stream = _batch(hf_tensors)  # a list, or a packed Batch
        n = len(self.local_of(rank))
        out = (ctypes.c_uint64 * max(n, 1))()
        err = _Error()
        code = ctypes.c_int()
        lib.ws_dtype_from_name(engine_dtype.encode(), ctypes.byref(code))
        check(lib.ws_sglang_expect_views(self.h, rank, views, nh, code.value, stream,
                                         out, n, ctypes.byref(err)), err)
        del keep
        return [int(out[i]) for i in range(n)]

    def build_local(self, rank, hf_tensors, dtype=torch.bfloat16):
        """The rank's local tensors, materialised from the pieces (what an engine holds)."""
        out = {}
        for i, name, shape in self.local_of(rank):
            t = torch.zeros(shape, dtype=dtype, device=hf_tensors[0].device)
            flat = t.view(-1)
            for p in self.pieces:
                if p.local != i:
                    continue
                src = hf_tensors[p.hf].reshape(-1, p.t_cols)
                dst = flat.view(-1, p.l_cols)
                dst[p.l_row0:p.l_row0 + p.rows, p.l_col0:p.l_col0 + p.cols] = \
                    src[p.t_row0:p.t_row0 + p.rows, p.t_col0:p.t_col0 + p.cols].to(dtype)
            out[name] = t
        return out

    def __del__(self):
        if getattr(self, "h", None):
            lib.ws_layout_free(self.h)


QWEN25_3B = ('{"model_type": "qwen2", "hidden_size": 2048, "intermediate_size": 11008,'
             ' "num_hidden_layers": 36, "num_attention_heads": 16, "num_key_value_heads": 2,'
             ' "vocab_size": 151936, "tie_word_embeddings": true}')
SMALL = ('{"model_type": "qwen2", "hidden_size": 256, "intermediate_size": 704,'
         ' "num_hidden_layers": 2, "num_attention_heads": 8, "num_key_value_heads": 2,'
         ' "vocab_size": 1001, "tie_word_embeddings": false}')


def random_bits(nbytes, gen):
    """Random bytes on the GPU (every bit pattern: NaN/Inf payloads included)."""
    return torch.randint(0, 256, (nbytes,), dtype=torch.uint8, device="cuda", generator=gen)
