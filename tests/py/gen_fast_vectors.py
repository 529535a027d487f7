#!/usr/bin/env python3
"""Test vectors of the fast digest, from an independent pure-Python implementation.

Written from the definition in docs/fast-digest.md, with hashlib for the key stream and
Python integers for the arithmetic (no folding tricks, no blocks computed piecewise):

    D_l = sum_m y_l^m * ((sum_{j in block m} K_l[j mod B] * u_j) mod p)  (mod p)

Units of a vector come from a recipe, so the C tests can rebuild them:

    u_i = (((i * mult + add) mod 2^32) >> shift) mod 2^(8 * unit_bytes),  i < n,

and unit i sits at global unit index start + i.

Tensor vectors ("tensors") are sealed digests (docs/fast-digest.md, "Sealing"): the units of
a tensor of canonical dtype DT and shape S (recipe units, from index 0), plus the seal block
    tag 0x5357, code(DT), len(S), then each dim as 4 16-bit units, least significant first,
at block index M = ceil(units / B).

    python3 tests/py/gen_fast_vectors.py            # rewrite tests/vectors/fast_digest.json
    python3 tests/py/gen_fast_vectors.py --check    # exit 1 if the file differs
"""
import argparse
import hashlib
import json
import os
import sys

P = (1 << 61) - 1
B = 1024
LANES = 3
LABEL = b"weightsum-fast-v1"
DEFAULT_SEED = b"weightsum-fast-digest-v1"

HERE = os.path.dirname(os.path.abspath(__file__))
OUT_PATH = os.path.join(HERE, "..", "vectors", "fast_digest.json")


class KeyStream:
    """Bytes of SHA-256(seed || LABEL || le32(i)) for i = 0, 1, 2, ..., read in order."""

    def __init__(self, seed):
        self.seed = seed
        self.counter = 0
        self.buf = b""

    def read(self, nbytes):
        while len(self.buf) < nbytes:
            block = self.seed + LABEL + self.counter.to_bytes(4, "little")
            self.buf += hashlib.sha256(block).digest()
            self.counter += 1
        out, self.buf = self.buf[:nbytes], self.buf[nbytes:]
        return int.from_bytes(out, "little")


def derive(seed):
    """(K, y, key_id) for a seed: K[l][i] nonzero 32-bit, y[l] uniform in [1, p)."""
    s = KeyStream(seed)
    K = []
    for _ in range(LANES):
        lane = []
        while len(lane) < B:
            w = s.read(4)
            if w != 0:
                lane.append(w)
        K.append(lane)
    y = []
    for _ in range(LANES):
        while True:
            w = s.read(8) & P
            if 0 < w < P:
                y.append(w)
                break
    key_id = hashlib.sha256(seed).hexdigest()[:16]
    return K, y, key_id


def recipe_units(recipe, n, unit_bytes):
    mask = (1 << (8 * unit_bytes)) - 1
    m, a, sh = recipe["mult"], recipe["add"], recipe["shift"]
    return [((((i * m + a) % (1 << 32)) >> sh) & mask) for i in range(n)]


def recipe_text(recipe, unit_bytes):
    bits = 8 * unit_bytes
    return "u%d: u_i = (((i*%d + %d) mod 2^32) >> %d) mod 2^%d" % (
        bits, recipe["mult"], recipe["add"], recipe["shift"], bits)


def fast_digest(K, y, units, start):
    lanes = []
    for l in range(LANES):
        inner = {}
        for i, u in enumerate(units):
            j = start + i
            inner[j // B] = inner.get(j // B, 0) + K[l][j % B] * u
        assert all(s < (1 << 64) for s in inner.values())
        lanes.append(sum(pow(y[l], m, P) * (s % P) for m, s in inner.items()) % P)
    return "".join("%016x" % v for v in lanes)


# Seal codes of canonical dtypes (part of the format) and their 16-bit units per element.
SEAL_TAG = 0x5357
SEAL_CODE = {"BOOL": 1, "U8": 2, "I8": 3, "I16": 4, "U16": 5, "I32": 6, "U32": 7, "I64": 8,
             "U64": 9, "F16": 10, "BF16": 11, "F32": 12, "F64": 13, "F8_E4M3": 14,
             "F8_E5M2": 15}
DTYPE_BYTES = {"BOOL": 1, "U8": 1, "I8": 1, "I16": 2, "U16": 2, "I32": 4, "U32": 4, "I64": 8,
               "U64": 8, "F16": 2, "BF16": 2, "F32": 4, "F64": 8, "F8_E4M3": 1, "F8_E5M2": 1}


def seal_units(dtype, shape):
    """(seal block's units, its block index M) for a tensor of this canonical dtype/shape."""
    units = [SEAL_TAG, SEAL_CODE[dtype], len(shape)]
    for d in shape:
        units += [(d >> (16 * q)) & 0xFFFF for q in range(4)]
    numel = 1
    for d in shape:
        numel *= d
    n_units = numel * max(DTYPE_BYTES[dtype] // 2, 1)
    return units, -(-n_units // B)


def sealed_digest(K, y, units, dtype, shape):
    """The tensor's digest: its units from index 0 and the seal block, in one polynomial."""
    seal, m = seal_units(dtype, shape)
    lanes = []
    for l in range(LANES):
        inner = {}
        for j, u in enumerate(units):
            inner[j // B] = inner.get(j // B, 0) + K[l][j % B] * u
        assert m not in inner or inner[m] == 0
        inner[m] = sum(K[l][i] * u for i, u in enumerate(seal))
        lanes.append(sum(pow(y[l], b, P) * (s % P) for b, s in inner.items()) % P)
    return "".join("%016x" % v for v in lanes)


def tensor_cases():
    """(seed, recipe, canonical dtype, shape): the same data under other shapes and lengths
    (reshaped, zero-extended), empty tensors, scalars, byte-unit and wide dtypes."""
    return [
        (DEFAULT_SEED, R_KNUTH, "BF16", [100, 64]),
        (DEFAULT_SEED, R_KNUTH, "BF16", [50, 128]),
        (DEFAULT_SEED, R_KNUTH, "BF16", [6400]),
        (DEFAULT_SEED, R_KNUTH, "BF16", [64]),
        (DEFAULT_SEED, R_KNUTH, "BF16", [1024]),
        (DEFAULT_SEED, R_KNUTH, "BF16", [1025]),
        (DEFAULT_SEED, R_ZERO, "BF16", [64]),
        (DEFAULT_SEED, R_ZERO, "BF16", [128]),
        (DEFAULT_SEED, R_ZERO, "BF16", [0]),
        (DEFAULT_SEED, R_ZERO, "BF16", [0, 7]),
        (DEFAULT_SEED, R_ZERO, "BF16", []),
        (DEFAULT_SEED, R_KNUTH, "F16", [100, 64]),
        (DEFAULT_SEED, R_KNUTH, "I16", [100, 64]),
        (DEFAULT_SEED, R_HIGH, "F32", [3, 5, 7]),
        (DEFAULT_SEED, R_HIGH, "F64", [2, 513]),
        (DEFAULT_SEED, R_HIGH, "U8", [2049]),
        (DEFAULT_SEED, R_HIGH, "F8_E4M3", [33, 31]),
        (DEFAULT_SEED, R_HIGH, "BOOL", [5]),
        (DEFAULT_SEED, R_ONES, "BF16", [1, 1, 1, 1, 1, 1, 1, 1]),
        (DEFAULT_SEED, R_KNUTH, "BF16", [70000, 1]),
        (SEED2, R_KNUTH, "BF16", [100, 64]),
        (SEED2, R_HIGH, "I64", [4, 300]),
    ]


R_KNUTH = {"mult": 2654435761, "add": 0, "shift": 0}
R_HIGH = {"mult": 2654435761, "add": 12345, "shift": 16}
R_ONES = {"mult": 0, "add": 0xFFFFFFFF, "shift": 0}
R_ZERO = {"mult": 0, "add": 0, "shift": 0}

SEED2 = bytes(range(32))


def cases():
    """(seed, recipe, n, unit_bytes, start)"""
    out = []
    for seed in (DEFAULT_SEED, SEED2):
        for ub in (2, 1):
            for n in (0, 1, 1023, 1024, 1025, 5000):
                out.append((seed, R_KNUTH, n, ub, 0))
            out.append((seed, R_HIGH, 5000, ub, 1))
            out.append((seed, R_HIGH, 5000, ub, 1000))
            out.append((seed, R_KNUTH, 3000, ub, 1024 * 7 + 3))
            out.append((seed, R_HIGH, 1500, ub, (1 << 40) + 517))
            out.append((seed, R_ONES, 2048, ub, 0))
            out.append((seed, R_ONES, 1024, ub, 512))
            out.append((seed, R_ZERO, 100, ub, 77))
            out.append((seed, R_HIGH, 2100, ub, (1 << 53) - 5000))  # JSON-safe integer
    out.append((b"", R_KNUTH, 1025, 2, 0))
    return out


def build():
    keys = {}
    doc = {
        "description": "Fast digest test vectors (docs/fast-digest.md), generated by "
                       "tests/py/gen_fast_vectors.py; do not edit by hand.",
        "construction": {"p": "2^61-1", "lanes": LANES, "block_units": B,
                         "stream_label": LABEL.decode()},
        "recipe": "u_i = (((i*mult + add) mod 2^32) >> shift) mod 2^(8*unit_bytes) for i < n; "
                  "unit i has global unit index start + i",
        "keys": [],
        "vectors": [],
        "tensor_recipe": "a tensor's canonical bytes are its units u_0, u_1, ... from the "
                         "recipe (little-endian, 1 byte per unit for 1-byte dtypes, else 2), "
                         "its digest sealed with (canonical_dtype, shape)",
        "tensors": [],
    }
    for seed, recipe, n, ub, start in cases():
        if seed not in keys:
            K, y, key_id = derive(seed)
            keys[seed] = (K, y)
            doc["keys"].append({
                "seed": seed.hex(),
                "key_id": key_id,
                "y": ["%016x" % v for v in y],
                "k_head": [lane[:4] for lane in K],
                "k_last": [lane[-1] for lane in K],
            })
        K, y = keys[seed]
        units = recipe_units(recipe, n, ub)
        doc["vectors"].append({
            "seed": seed.hex(),
            "recipe": dict(recipe),
            "recipe_text": recipe_text(recipe, ub),
            "n": n,
            "unit_bytes": ub,
            "start": start,
            "expected": fast_digest(K, y, units, start),
        })
    for seed, recipe, dtype, shape in tensor_cases():
        K, y = keys[seed]
        ub = 1 if DTYPE_BYTES[dtype] == 1 else 2
        numel = 1
        for d in shape:
            numel *= d
        n = numel * max(DTYPE_BYTES[dtype] // 2, 1)
        doc["tensors"].append({
            "seed": seed.hex(),
            "recipe": dict(recipe),
            "recipe_text": recipe_text(recipe, ub),
            "canonical_dtype": dtype,
            "shape": shape,
            "expected": sealed_digest(K, y, recipe_units(recipe, n, ub), dtype, shape),
        })
    return json.dumps(doc, indent=2) + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-o", "--output", default=OUT_PATH)
    ap.add_argument("--check", action="store_true", help="compare instead of writing")
    args = ap.parse_args()
    text = build()
    if args.check:
        with open(args.output, encoding="utf-8") as f:
            same = f.read() == text
        print("%s: %s" % (args.output, "up to date" if same else "DIFFERS"))
        return 0 if same else 1
    with open(args.output, "w", encoding="utf-8") as f:
        f.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
