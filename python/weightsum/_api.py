"""C signatures of the manifest, layout, report, source and partials APIs (ctypes), for
weightsum.torch. A symbol this library build lacks is left unbound: `has(name)` says so, and
the caller names what is missing instead of failing at import."""
from __future__ import annotations

import ctypes
import json
import os
from typing import Any, Dict, List, Optional, Sequence, Tuple

from ._lib import _Digest, _Error, _Fast, _P, check, encode, lib

MAX_DIMS = 8
_U64 = ctypes.c_uint64
_PP = ctypes.POINTER(_P)
_PE = ctypes.POINTER(_Error)


class Stats(ctypes.Structure):  # ws_value_stats
    _fields_ = [("nan", _U64), ("inf", _U64)]


class ManifestEntry(ctypes.Structure):  # ws_manifest_entry
    _fields_ = [("name", ctypes.c_char_p), ("dtype", ctypes.c_int),
                ("canonical_dtype", ctypes.c_int), ("ndim", ctypes.c_int),
                ("shape", _U64 * MAX_DIMS), ("digest", _Digest), ("stats", Stats)]


class Finding(ctypes.Structure):  # ws_finding
    _fields_ = [("status", ctypes.c_int), ("tensor", ctypes.c_char_p),
                ("local", ctypes.c_char_p), ("rank", ctypes.c_int), ("row0", ctypes.c_int64),
                ("row1", ctypes.c_int64), ("detail", ctypes.c_char_p)]


class HfDesc(ctypes.Structure):  # ws_hf_desc
    _fields_ = [("name", ctypes.c_char_p), ("ndim", ctypes.c_int), ("shape", _U64 * MAX_DIMS),
                ("tied_to", ctypes.c_char_p)]


class LocalDesc(ctypes.Structure):  # ws_local_desc
    _fields_ = [("name", ctypes.c_char_p), ("rank", ctypes.c_int), ("ndim", ctypes.c_int),
                ("shape", _U64 * MAX_DIMS)]


class Piece(ctypes.Structure):  # ws_piece
    _fields_ = [("hf", ctypes.c_uint32), ("local", ctypes.c_uint32),
                ("replica", ctypes.c_uint32), ("rows", _U64), ("cols", _U64),
                ("t_row0", _U64), ("t_col0", _U64), ("t_cols", _U64), ("l_row0", _U64),
                ("l_col0", _U64), ("l_cols", _U64)]



class ModelConfig(ctypes.c_void_p):
    """A ws_model_config the library allocated (opaque: it grows with the families), freed
    with ws_model_config_free when the object goes."""

    def __del__(self) -> None:
        try:
            if self.value:
                lib.ws_model_config_free(self.value)
                self.value = None
        except Exception:  # interpreter shutdown
            pass


_sigs: Dict[str, Tuple[Any, List[Any]]] = {
    "ws_status_name": (ctypes.c_char_p, [ctypes.c_int]),
    "ws_dtype_name": (ctypes.c_char_p, [ctypes.c_int]),
    "ws_dtype_size": (ctypes.c_size_t, [ctypes.c_int]),
    "ws_dtype_units": (ctypes.c_uint, [ctypes.c_int]),
    "ws_canonical_dtype": (ctypes.c_int, [ctypes.c_int, ctypes.c_int]),
    "ws_canon_for_tensor": (ctypes.c_int, [ctypes.c_char_p, ctypes.c_int, ctypes.c_int]),
    "ws_cast_to_canonical": (ctypes.c_int, [ctypes.c_int, ctypes.c_int, _P, ctypes.c_size_t,
                                            _P, ctypes.POINTER(Stats), _PE]),
    "ws_fastkey_id": (ctypes.c_char_p, [_P]),
    "ws_fast_accumulate": (ctypes.c_int, [_P, ctypes.POINTER(_Fast), _U64, _P, ctypes.c_size_t,
                                          ctypes.c_int, _PE]),
    "ws_fast_add": (ctypes.c_int, [ctypes.POINTER(_Fast), ctypes.POINTER(_Fast), _PE]),
    "ws_fast_seal": (ctypes.c_int, [_P, ctypes.POINTER(_Fast), ctypes.c_int, ctypes.c_int,
                                    ctypes.POINTER(_U64)]),
    "ws_manifest_new": (_P, [ctypes.c_int, ctypes.c_uint, ctypes.c_char_p, ctypes.c_char_p]),
    "ws_manifest_free": (None, [_P]),
    "ws_manifest_add": (ctypes.c_int, [_P, ctypes.POINTER(ManifestEntry)]),
    "ws_manifest_count": (ctypes.c_size_t, [_P]),
    "ws_manifest_entry_at": (ctypes.POINTER(ManifestEntry), [_P, ctypes.c_size_t]),
    "ws_manifest_find": (ctypes.POINTER(ManifestEntry), [_P, ctypes.c_char_p]),
    "ws_manifest_canon": (ctypes.c_int, [_P]),
    "ws_manifest_algos": (ctypes.c_uint, [_P]),
    "ws_manifest_key_id": (ctypes.c_char_p, [_P]),
    "ws_manifest_source": (ctypes.c_char_p, [_P]),
    "ws_manifest_to_json": (ctypes.c_int, [_P, ctypes.POINTER(ctypes.c_void_p), _PE]),
    "ws_manifest_parse": (ctypes.c_int, [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_char_p,
                                         _PP, _PE]),
    "ws_write_file_atomic": (ctypes.c_int, [ctypes.c_char_p, _P, ctypes.c_size_t, _PE]),
    "ws_model_config_parse": (ctypes.c_int, [ctypes.c_char_p, ctypes.c_size_t,
                                             ctypes.c_char_p, _PP, _PE]),
    "ws_model_config_free": (None, [_P]),
    "ws_layout_create": (ctypes.c_int, [ctypes.c_char_p, _P, ctypes.c_int, _PP, _PE]),
    "ws_layout_free": (None, [_P]),
    "ws_layout_tp": (ctypes.c_int, [_P]),
    "ws_layout_zero_padding": (ctypes.c_int, [_P]),
    "ws_layout_hf_count": (ctypes.c_size_t, [_P]),
    "ws_layout_hf": (ctypes.POINTER(HfDesc), [_P, ctypes.c_size_t]),
    "ws_layout_local_count": (ctypes.c_size_t, [_P]),
    "ws_layout_local": (ctypes.POINTER(LocalDesc), [_P, ctypes.c_size_t]),
    "ws_layout_piece_count": (ctypes.c_size_t, [_P]),
    "ws_layout_piece": (ctypes.POINTER(Piece), [_P, ctypes.c_size_t]),
    "ws_layout_find_local": (ctypes.c_long, [_P, ctypes.c_int, ctypes.c_char_p]),
    "ws_report_new": (_P, []),
    "ws_report_free": (None, [_P]),
    "ws_report_add": (ctypes.c_int, [_P, ctypes.POINTER(Finding)]),
    "ws_report_count_match": (None, [_P, _U64]),
    "ws_report_count": (ctypes.c_size_t, [_P]),
    "ws_report_at": (ctypes.POINTER(Finding), [_P, ctypes.c_size_t]),
    "ws_report_matched": (_U64, [_P]),
    "ws_compare_manifests": (ctypes.c_int, [_P, _P, _P, _PE]),
    # sources, plans, partials (PARTIALS_API.md)
    "ws_source_host_create": (ctypes.c_int, [_PP, _PE]),
    "ws_source_add": (ctypes.c_int, [_P, ctypes.c_char_p, ctypes.c_int, ctypes.c_int,
                                     ctypes.POINTER(_U64), ctypes.POINTER(ctypes.c_int64), _P,
                                     _PE]),
    "ws_source_add_device": (ctypes.c_int, [_P, ctypes.c_char_p, ctypes.c_int, ctypes.c_int,
                                            ctypes.POINTER(_U64),
                                            ctypes.POINTER(ctypes.c_int64), _P, _P, _PE]),
    "ws_source_free": (None, [_P]),
    "ws_plan_create": (ctypes.c_int, [_P, _PP, _PE]),
    "ws_plan_free": (None, [_P]),
    "ws_partials_compute": (ctypes.c_int, [_P, ctypes.c_int, _P, _P, ctypes.c_int, _PP, _PE]),
    "ws_partials_serialize": (ctypes.c_int, [_P, _PP, ctypes.POINTER(ctypes.c_size_t), _PE]),
    "ws_partials_deserialize": (ctypes.c_int, [_P, ctypes.c_size_t, _PP, _PE]),
    "ws_partials_merge": (ctypes.c_int, [_P, _P, _PE]),
    "ws_partials_judge": (ctypes.c_int, [_P, _P, _P, _P, _PE]),
    "ws_partials_manifest": (ctypes.c_int, [_P, _P, ctypes.c_char_p, _PP, _P, _PE]),
    "ws_partials_free": (None, [_P]),
}
for _name, (_res, _args) in _sigs.items():
    _f = getattr(lib, _name, None)
    if _f is not None:
        _f.restype, _f.argtypes = _res, _args


def has(*names: str) -> bool:
    """1 when this build of the library exports every one of these symbols."""
    return all(getattr(lib, n, None) is not None for n in names)


def need(*names: str) -> None:
    missing = [n for n in names if getattr(lib, n, None) is None]
    if missing:
        raise NotImplementedError(
            "this libweightsum.so (" + os.path.basename(str(lib._name)) + ") lacks "
            + ", ".join(missing) + ": rebuild it from a checkout that has them")


def call(fn: str, *args: Any) -> None:
    """Call a ws_err-returning function whose last argument is ws_error*; raise on failure."""
    err = _Error()
    rc = getattr(lib, fn)(*args, ctypes.byref(err))
    check(rc, err)


def dtype_code(name: str) -> int:
    code = ctypes.c_int()
    if lib.ws_dtype_from_name(name.encode(), ctypes.byref(code)) != 0:
        raise TypeError(f"dtype {name} unknown to weightsum")
    return code.value


def dtype_name(code: int) -> str:
    n = lib.ws_dtype_name(code)
    return n.decode() if n else "?"


def shape_array(shape: Sequence[int]) -> "ctypes.Array[ctypes.c_uint64]":
    return (_U64 * max(len(shape), 1))(*[int(n) for n in shape])


def model_config(config: Any) -> ModelConfig:
    """A parsed ws_model_config from a path, JSON text or a dict (an opaque handle)."""
    label = "config"
    if isinstance(config, dict):
        text = json.dumps(config)
    elif isinstance(config, (str, os.PathLike)) and os.path.exists(config):
        label = os.fspath(config)
        with open(config) as f:
            text = f.read()
    elif isinstance(config, str):
        text = config
    else:
        raise TypeError("config must be a path, JSON text or a dict")
    out = _P()
    raw = text.encode()
    call("ws_model_config_parse", raw, len(raw), encode(label), ctypes.byref(out))
    return ModelConfig(out.value)


def take_text(p: "ctypes.c_void_p") -> str:
    """A NUL-terminated string the library allocated, released with ws_free after reading."""
    try:
        return ctypes.string_at(p.value).decode()
    finally:
        lib.ws_free(p)


def entries_of(m: Any) -> List[ManifestEntry]:
    return [lib.ws_manifest_entry_at(m, i).contents for i in range(lib.ws_manifest_count(m))]


def findings_of(r: Any) -> List[Dict[str, Any]]:
    out = []
    for i in range(lib.ws_report_count(r)):
        f = lib.ws_report_at(r, i).contents
        out.append({"status": lib.ws_status_name(f.status).decode(),
                    "tensor": f.tensor.decode() if f.tensor else None,
                    "local": f.local.decode() if f.local else None,
                    "rank": f.rank if f.rank >= 0 else None,
                    "rows": [f.row0, f.row1] if f.row0 >= 0 else None,
                    "detail": f.detail.decode(errors="replace") if f.detail else ""})
    return out
