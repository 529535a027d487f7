"""weightsum: prove, bit for bit, that an inference engine holds the weights a trainer meant.

A ctypes binding over libweightsum.so (no compiler needed at install):
  - Checker(dir, layout, tp, config=None, canonical="bf16").handle(body) -> (status, dict):
    the engine side of POST /weights_checker, for a Python engine server (docs/http.md);
  - sha256_tensor(x, canonical="bf16"), fast_tensor(x, ...): digests of numpy arrays and
    torch tensors equal to those of weightsum's manifests.
"""
from ._lib import WeightsumError, library_path, lib as _lib
from .checker import Checker
from .digest import fast_tensor, sha256_tensor

__version__ = _lib.ws_version().decode()
__all__ = ["Checker", "WeightsumError", "fast_tensor", "library_path", "sha256_tensor"]
