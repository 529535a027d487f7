"""An independent numpy model of SGLang's gpu_tensor_hash (sglang/kernels/ops/memory/
gpu_tensor_hash.py), written from its source, to cross-check the C kernels and the vectors."""
import hashlib

import numpy as np

M32 = 0xFFFFFFFF
TILE_WORDS = 8192
SEED = 0x243F6A88


def _fmix32(x):
    x = x ^ (x >> np.uint32(16))
    x = x * np.uint32(0x85EBCA6B)
    x = x ^ (x >> np.uint32(13))
    x = x * np.uint32(0xC2B2AE35)
    return x ^ (x >> np.uint32(16))


def _rotl(x, r):
    return (x << np.uint32(r)) | (x >> np.uint32(32 - r))


def _splitmix64_final(x):
    m = (1 << 64) - 1
    x ^= x >> 30
    x = (x * 0xBF58476D1CE4E5B9) & m
    x ^= x >> 27
    x = (x * 0x94D049BB133111EB) & m
    return x ^ (x >> 31)


def gpu_tensor_hash(data, seed=SEED):
    """data: bytes-like. Returns the 64-bit hash as an int."""
    b = np.frombuffer(bytes(data), np.uint8)
    if b.size == 0:
        return 0
    pad = (-b.size) % 4
    if pad:
        b = np.concatenate([b, np.zeros(pad, np.uint8)])
    w = b.view("<u4").astype(np.uint32)
    n = w.size
    s1 = np.uint32(seed & M32)
    s2 = np.uint32(((seed * 0x9E3779B1) ^ 0xDEADBEEF) & M32)
    with np.errstate(over="ignore"):
        i = (np.arange(n, dtype=np.uint64) & np.uint64(M32)).astype(np.uint32)
        p1 = (i * np.uint32(0x27D4EB2D) + s1) ^ _rotl(i, 15)
        p2 = (i * np.uint32(0x165667B1) + s2) ^ _rotl(i, 13)
        k1 = _fmix32(w ^ p1).astype(np.uint64)
        k2 = _fmix32(w ^ p2).astype(np.uint64)
        starts = np.arange(0, n, TILE_WORDS)
        t1 = (np.add.reduceat(k1, starts) & np.uint64(M32)).astype(np.uint32)
        t2 = (np.add.reduceat(k2, starts) & np.uint64(M32)).astype(np.uint32)
        nb = np.uint32((n * 4) & M32)
        h1 = _fmix32(t1 ^ nb).astype(np.uint64)
        h2 = _fmix32(t2 ^ nb).astype(np.uint64)
        total = int(np.sum((h1 << np.uint64(32)) | h2, dtype=np.uint64))
    return _splitmix64_final(total & ((1 << 64) - 1))


def cpu_tensor_hash(data):
    """SGLang's CPU path: the first 8 bytes of SHA-256, big-endian."""
    return int.from_bytes(hashlib.sha256(bytes(data)).digest()[:8], "big")
