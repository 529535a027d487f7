#!/usr/bin/env python3
"""Generate tests/vectors/sglang_hash.txt: SGLang's own tensor hash of recipe-made tensors.

Run on a CUDA machine beside SGLang's released kernel module (it imports only torch and triton):
    cp SGLANG/python/sglang/kernels/ops/memory/gpu_tensor_hash.py .
    python3 gen_sglang_hash_vectors.py OUT.txt
The GPU value is `gpu_tensor_hash(t.cuda())` (what sglang.srt.managers.mm_utils.tensor_hash
returns for a CUDA tensor, and so what /weights_checker's "checksum" answers, as 16 hex
digits); the CPU value is SHA-256's first 8 bytes read big-endian (tensor_hash of a CPU
tensor), from hashlib. The format is written at the top of OUT (see HEADER below).
"""
import hashlib
import sys
import time

import numpy as np
import torch

HEADER = """\
# SGLang tensor_hash test vectors (weightsum; generator: gen_sglang_hash_vectors.py).
# GPU values come from SGLang's own released Triton kernel (sglang {sglang_version},
# python/sglang/kernels/ops/memory/gpu_tensor_hash.py, default arguments) run on {device}
# with torch {torch_version}, triton {triton_version}; CPU values are hashlib's SHA-256.
#
# One vector per line, fields separated by one space:
#   NAME DTYPE NBYTES PATTERN SEED GPU CPU
# NAME     an identifier
# DTYPE    the tensor's dtype (safetensors name); NBYTES is a multiple of its size
# NBYTES   the tensor's size in bytes (decimal)
# PATTERN  how its bytes are made (SEED is a 64-bit hex number; only prng and bool use it):
#   prng   byte i is byte (i mod 8) of the little-endian 64-bit word w[i div 8], where
#          w[k] = splitmix64(SEED + (k + 1) * 0x9E3779B97F4A7C15 mod 2^64) and
#          splitmix64(x): x ^= x >> 30; x *= 0xBF58476D1CE4E5B9; x ^= x >> 27;
#          x *= 0x94D049BB133111EB; x ^= x >> 31 (all mod 2^64)
#   bool   the prng bytes AND 1 (valid torch.bool values)
#   zero   every byte 0x00
#   ones   every byte 0xFF
# GPU      gpu_tensor_hash(tensor.cuda()) as 16 lowercase hex digits (0 for 0 bytes)
# CPU      the first 8 bytes of SHA-256 of the bytes, big-endian, 16 hex digits
# The tensor is the NBYTES bytes viewed as DTYPE, 1-D (the hash depends on the bytes only).
"""

DTYPES = {
    "BOOL": (torch.bool, 1), "U8": (torch.uint8, 1), "I8": (torch.int8, 1),
    "I16": (torch.int16, 2), "U16": (torch.uint16, 2), "I32": (torch.int32, 4),
    "U32": (torch.uint32, 4), "I64": (torch.int64, 8), "U64": (torch.uint64, 8),
    "F16": (torch.float16, 2), "BF16": (torch.bfloat16, 2), "F32": (torch.float32, 4),
    "F64": (torch.float64, 8), "F8_E4M3": (torch.float8_e4m3fn, 1),
    "F8_E5M2": (torch.float8_e5m2, 1),
}
GAMMA = 0x9E3779B97F4A7C15
TILE_BYTES = 8192 * 4


def prng_bytes(seed, nbytes):
    nw = (nbytes + 7) // 8
    with np.errstate(over="ignore"):
        k = np.arange(1, nw + 1, dtype=np.uint64)
        x = np.uint64(seed) + k * np.uint64(GAMMA)
        x ^= x >> np.uint64(30)
        x *= np.uint64(0xBF58476D1CE4E5B9)
        x ^= x >> np.uint64(27)
        x *= np.uint64(0x94D049BB133111EB)
        x ^= x >> np.uint64(31)
    return x.astype("<u8").view(np.uint8)[:nbytes]


def make(pattern, seed, nbytes):
    if pattern == "prng":
        return prng_bytes(seed, nbytes)
    if pattern == "bool":
        return prng_bytes(seed, nbytes) & np.uint8(1)
    if pattern == "zero":
        return np.zeros(nbytes, np.uint8)
    if pattern == "ones":
        return np.full(nbytes, 0xFF, np.uint8)
    raise ValueError(pattern)


def cases():
    seed = 0x243F6A8885A308D3
    out = []

    def add(name, dt, nbytes, pattern="prng"):
        nonlocal seed
        seed = (seed * 6364136223846793005 + 1442695040888963407) % (1 << 64)
        if dt == "BOOL" and pattern == "prng":
            pattern = "bool"
        out.append((name, dt, nbytes, pattern, seed if pattern in ("prng", "bool") else 0))

    # byte-level edges: words not filled, tiles (8192 words) and the reduction's chunk (1024
    # tiles) crossed by a word or a byte
    edges = list(range(0, 34)) + [63, 64, 65, 255, 256, 257, 1023, 1024, 1025, 4095, 4096, 4097]
    for t in (1, 2, 3):
        edges += [t * TILE_BYTES + d for d in (-5, -4, -3, -2, -1, 0, 1, 2, 3, 4, 5)]
    edges += [1024 * TILE_BYTES - 1, 1024 * TILE_BYTES, 1025 * TILE_BYTES + 3]
    for n in edges:
        add(f"u8_{n}", "U8", n)
    for n in (0, 1, 3, 4, 5, TILE_BYTES, TILE_BYTES + 1):
        add(f"zero_{n}", "U8", n, "zero")
        add(f"ones_{n}", "U8", n, "ones")
    # every dtype: odd element counts, tile edges in elements, a few shapes of real weights
    for dt, (_, es) in DTYPES.items():
        counts = [0, 1, 2, 3, 5, 7, 9, 63, 65, 1000, 4097]
        counts += [TILE_BYTES // es + d for d in (-1, 0, 1)]
        counts += [3 * TILE_BYTES // es + 1, 151936 // 16 * 3]
        for n in counts:
            add(f"{dt.lower()}_{n}", dt, n * es)
        add(f"{dt.lower()}_zero_77", dt, 77 * es, "zero")
        add(f"{dt.lower()}_ones_77", dt, 77 * es, "ones")
    # weight-sized: a qkv shard (bf16 [1280, 2048]) and 1 GiB + 6 bytes of bf16
    add("bf16_qkv_shard", "BF16", 1280 * 2048 * 2)
    add("bf16_1gib_plus_6", "BF16", (1 << 30) + 6)
    return out


def main():
    from gpu_tensor_hash import gpu_tensor_hash  # SGLang's module, copied beside this file

    path = sys.argv[1]
    try:
        import importlib.metadata as md
        sglang_version = sys.argv[2] if len(sys.argv) > 2 else md.version("sglang")
    except Exception:
        sglang_version = "unknown"
    import triton

    lines = [HEADER.format(sglang_version=sglang_version, device=torch.cuda.get_device_name(0),
                           torch_version=torch.__version__, triton_version=triton.__version__)]
    t0 = time.time()
    for name, dt, nbytes, pattern, seed in cases():
        b = make(pattern, seed, nbytes)
        tdt, es = DTYPES[dt]
        t = torch.from_numpy(b.copy()).view(tdt) if nbytes else torch.empty(0, dtype=tdt)
        g = gpu_tensor_hash(t.cuda())
        c = int.from_bytes(hashlib.sha256(b.tobytes()).digest()[:8], "big")
        lines.append(f"{name} {dt} {nbytes} {pattern} {seed:016x} {g:016x} {c:016x}")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    print(f"{len(lines) - 1} vectors in {time.time() - t0:.1f} s", file=sys.stderr)


if __name__ == "__main__":
    main()
