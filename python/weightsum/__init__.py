"""weightsum: prove, bit for bit, that an inference engine holds the weights a trainer meant.

A ctypes binding over libweightsum.so (no compiler needed at install):
  - Checker(dir, layout, tp, config=None, canonical="bf16").handle(body) -> (status, dict):
    the engine side of POST /weights_checker, for a Python engine server (docs/http.md);
  - sha256_tensor(x, canonical="bf16"), fast_tensor(x, ...): digests of numpy arrays and
    torch tensors equal to those of weightsum's manifests;
  - digest_tensors / sha256_tensors / fast_tensors / sglang_hash_tensors(list or dict): many
    tensors at once, CUDA ones in place on the GPU (weightsum.cuda, docs/cuda.md);
  - expect(tensors, layout, tp, config) -> what every engine rank must answer to SGLang's
    (or vLLM's) "checksum"; judge(expected, answer) -> the findings; sglang_tensor_hash(x);
  - compare_judge(answer) -> the findings of an engine's compare_checksum answer.
"""
from ._lib import WeightsumError, library_path, lib as _lib
from .checker import (Checker, checksum_request, compare_judge, expect, judge,
                      sglang_tensor_hash)
from .digest import fast_tensor, sha256_tensor
from .cuda import digest_tensors, fast_tensors, sglang_hash_tensors, sha256_tensors

__version__ = _lib.ws_version().decode()
__all__ = ["Checker", "WeightsumError", "checksum_request", "compare_judge", "digest_tensors", "expect",
           "fast_tensor", "fast_tensors", "judge", "library_path", "sglang_hash_tensors",
           "sglang_tensor_hash", "sha256_tensor", "sha256_tensors"]
