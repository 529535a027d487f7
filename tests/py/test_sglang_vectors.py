"""SGLang's tensor hash: the independent numpy model and the Python binding (the C library)
give the values SGLang's own Triton kernel gave on an H200 (tests/vectors/sglang_hash.txt; its
header says how each input is made). The 1 GiB vector is checked by tests/c/test_sglang_hash.c
(streamed); here every other one."""
import os
import sys

import numpy as np

from conftest import ROOT
from sglang_hash_ref import cpu_tensor_hash, gpu_tensor_hash

sys.path.insert(0, os.path.join(ROOT, "python"))
import weightsum  # noqa: E402

GAMMA = 0x9E3779B97F4A7C15


def make(pattern, seed, n):
    if pattern == "zero":
        return np.zeros(n, np.uint8)
    if pattern == "ones":
        return np.full(n, 0xFF, np.uint8)
    with np.errstate(over="ignore"):
        x = np.uint64(seed) + np.arange(1, (n + 7) // 8 + 1, dtype=np.uint64) * np.uint64(GAMMA)
        x ^= x >> np.uint64(30)
        x *= np.uint64(0xBF58476D1CE4E5B9)
        x ^= x >> np.uint64(27)
        x *= np.uint64(0x94D049BB133111EB)
        x ^= x >> np.uint64(31)
    b = x.astype("<u8").view(np.uint8)[:n]
    return b & np.uint8(1) if pattern == "bool" else b


def vectors():
    with open(os.path.join(ROOT, "tests", "vectors", "sglang_hash.txt")) as f:
        for line in f:
            if line.startswith("#") or not line.strip():
                continue
            name, dtype, n, pattern, seed, gpu, cpu = line.split()
            yield name, dtype, int(n), pattern, int(seed, 16), gpu, cpu


def test_vectors_numpy_model_and_binding():
    done = 0
    for name, dtype, n, pattern, seed, gpu, cpu in vectors():
        if n > (64 << 20):
            continue
        b = make(pattern, seed, n)
        assert f"{gpu_tensor_hash(b.tobytes()):016x}" == gpu, name
        assert f"{cpu_tensor_hash(b.tobytes()):016x}" == cpu, name
        assert weightsum.sglang_tensor_hash(b) == gpu, name
        assert weightsum.sglang_tensor_hash(b, device="cpu") == cpu, name
        done += 1
    assert done >= 360


def test_torch_tensors_of_every_dtype():
    import torch
    dtypes = {"BF16": torch.bfloat16, "F16": torch.float16, "F32": torch.float32,
              "I64": torch.int64, "F8_E4M3": torch.float8_e4m3fn, "BOOL": torch.bool}
    seen = set()
    for name, dtype, n, pattern, seed, gpu, cpu in vectors():
        if dtype not in dtypes or n > (1 << 20) or n == 0:
            continue
        t = torch.from_numpy(make(pattern, seed, n).copy()).view(dtypes[dtype])
        assert weightsum.sglang_tensor_hash(t) == gpu, name
        seen.add(dtype)
    assert seen == set(dtypes)
