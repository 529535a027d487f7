"""The shared library and its C signatures (ctypes; nothing to compile at install).

The library is found, in order, at $WEIGHTSUM_LIB (a file, or a directory holding
libweightsum.so), next to this package, then in ../../build relative to it (a source checkout
built with `cmake -S . -B build`).
"""
from __future__ import annotations

import ctypes
import os
from typing import List, Optional, Tuple, Union

_HERE = os.path.dirname(os.path.abspath(__file__))
_NAME = "libweightsum.so"


class WeightsumError(RuntimeError):
    """A weightsum call failed; .code is the ws_err name (e.g. "WS_ERR_IO")."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class _Error(ctypes.Structure):  # ws_error
    _fields_ = [("code", ctypes.c_int), ("file", ctypes.c_char * 512),
                ("tensor", ctypes.c_char * 256), ("offset", ctypes.c_int64),
                ("what", ctypes.c_char * 512)]


class _Fast(ctypes.Structure):  # ws_fast
    _fields_ = [("lane", ctypes.c_uint64 * 3)]


class _Digest(ctypes.Structure):  # ws_digest
    _fields_ = [("algos", ctypes.c_uint), ("sha256", ctypes.c_uint8 * 32), ("fast", _Fast)]


ALGO_SHA256, ALGO_FAST = 1, 2
CANON = {"bf16": 0, "native": 1}


def _candidates() -> List[str]:
    env = os.environ.get("WEIGHTSUM_LIB")
    if env:  # an explicit choice is never silently replaced by another library
        return [os.path.join(env, _NAME) if os.path.isdir(env) else env]
    return [os.path.join(_HERE, _NAME),
            os.path.normpath(os.path.join(_HERE, "..", "..", "build", _NAME))]


def _load() -> Tuple[ctypes.CDLL, str]:
    tried = []
    for path in _candidates():
        if os.path.exists(path):
            return ctypes.CDLL(path), path
        tried.append(path)
    raise OSError("libweightsum.so not found (build it with `cmake -S . -B build && "
                  "cmake --build build`, or set WEIGHTSUM_LIB); tried: " + ", ".join(tried))


lib, library_path = _load()

_P = ctypes.c_void_p
_sigs = {
    "ws_version": (ctypes.c_char_p, []),
    "ws_err_name": (ctypes.c_char_p, [ctypes.c_int]),
    "ws_error_format": (ctypes.c_int, [ctypes.POINTER(_Error), ctypes.c_char_p, ctypes.c_size_t]),
    "ws_dtype_from_name": (ctypes.c_int, [ctypes.c_char_p, ctypes.POINTER(ctypes.c_int)]),
    "ws_free": (None, [_P]),
    "ws_sha256_hex": (None, [ctypes.POINTER(ctypes.c_uint8), ctypes.c_char_p]),
    "ws_fast_hex": (None, [ctypes.POINTER(_Fast), ctypes.c_char_p]),
    "ws_fastkey_create": (ctypes.c_int, [ctypes.c_char_p, ctypes.c_size_t, ctypes.POINTER(_P),
                                         ctypes.POINTER(_Error)]),
    "ws_fastkey_free": (None, [_P]),
    "ws_digest_buffer": (ctypes.c_int, [ctypes.c_int, ctypes.c_int, _P, ctypes.c_int,
                                        ctypes.POINTER(ctypes.c_uint64), ctypes.c_uint, _P, ctypes.POINTER(_Digest), _P,
                                        ctypes.POINTER(_Error)]),
    "ws_checker_create": (ctypes.c_int, [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_int,
                                         ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p,
                                         ctypes.c_int, ctypes.POINTER(_P),
                                         ctypes.POINTER(_Error)]),
    "ws_checker_free": (None, [_P]),
    "ws_checker_key_id": (ctypes.c_char_p, [_P]),
    "ws_checker_handle": (ctypes.c_int, [_P, ctypes.c_char_p, ctypes.c_size_t, ctypes.POINTER(_P),
                                         ctypes.POINTER(ctypes.c_int)]),
}
for _name, (_res, _args) in _sigs.items():
    _f = getattr(lib, _name)
    _f.restype, _f.argtypes = _res, _args


def check(rc: int, err: _Error) -> None:
    """Raise WeightsumError for a failed call (rc != WS_OK), with the library's one line."""
    if rc == 0:
        return
    buf = ctypes.create_string_buffer(2048)
    lib.ws_error_format(ctypes.byref(err), buf, len(buf))
    raise WeightsumError(lib.ws_err_name(rc).decode(), buf.value.decode(errors="replace"))


def encode(s: Union[str, bytes, "os.PathLike[str]", None]) -> Optional[bytes]:
    return None if s is None else os.fsencode(s) if not isinstance(s, bytes) else s
