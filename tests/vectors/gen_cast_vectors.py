#!/usr/bin/env python3
"""Generate tests/vectors/casts.txt: PyTorch's own casts to bfloat16, on CPU and on CUDA.

Run where PyTorch (and ideally a GPU) is: python3 gen_cast_vectors.py OUT.txt
Each line is `DTYPE SRC_HEX CPU_BF16_HEX CUDA_BF16_HEX` (CUDA '-' when no GPU). Inputs:
F16, F8_E4M3, F8_E5M2: every bit pattern. F32 and F64: ±0, ±inf, NaNs with payloads and both
signs, round-to-nearest-even ties both ways, values that round up into the next binade and to
inf, subnormals, then random bit patterns from a fixed seed (random.Random(20261128)).
F64 also has values just off an f32 tie (PyTorch goes F64 -> F32 -> BF16: double rounding).
"""
import random
import struct
import sys

import torch

rng = random.Random(20261128)


def f32_inputs():
    v = [0x00000000, 0x80000000, 0x7F800000, 0xFF800000, 0x7FC00000, 0xFFC00000, 0x7F800001,
         0xFF800001, 0x7FFFFFFF, 0xFFFFFFFF, 0x7FA00000, 0x7F7FFFFF, 0xFF7FFFFF, 0x7F7F8000,
         0x7F7F7FFF, 0x3F808000, 0x3F818000, 0x3F807FFF, 0x3F808001, 0x3F80FFFF, 0xBF808000,
         0xBF818000, 0x00000001, 0x80000001, 0x00008000, 0x00018000, 0x007FFFFF, 0x00800000,
         0x007F8000, 0x3F800000, 0x3FFFFFFF, 0x4B7FFFFF]
    v += [rng.getrandbits(32) for _ in range(4000)]
    # random values forced onto exact ties (low 16 bits = 0x8000)
    v += [(rng.getrandbits(16) << 16) | 0x8000 for _ in range(500)]
    return v


def f64_inputs():
    v = [0, 1 << 63, 0x7FF0000000000000, 0xFFF0000000000000, 0x7FF8000000000000,
         0xFFF8000000000000, 0x7FF0000000000001, 0x7FFFFFFFFFFFFFFF, 0x0000000000000001,
         0x47EFFFFFE0000000, 0x47EFFFFFF0000000, 0x47F0000000000000, 0x3FF0000000000000,
         0x36A0000000000000, 0x3690000000000000]
    for _ in range(2000):
        v.append(rng.getrandbits(64))
    for _ in range(1000):  # exponents in f32 range, mantissas near the bf16 / f32 ties
        e = rng.randrange(1023 - 140, 1023 + 128)
        hi = rng.getrandbits(7)
        mant = (hi << 45) | (1 << 44) | rng.choice([0, 1, (1 << 29) - 1, 1 << 28, (1 << 29)])
        v.append((rng.getrandbits(1) << 63) | (e << 52) | (mant & ((1 << 52) - 1)))
    return v


def cast(dtype_name, bits):
    n = len(bits)
    if dtype_name == "F32":
        src = torch.tensor([struct.unpack("<i", struct.pack("<I", b))[0] for b in bits],
                           dtype=torch.int32).view(torch.float32)
    elif dtype_name == "F64":
        src = torch.tensor([struct.unpack("<q", struct.pack("<Q", b))[0] for b in bits],
                           dtype=torch.int64).view(torch.float64)
    elif dtype_name == "F16":
        src = torch.tensor([struct.unpack("<h", struct.pack("<H", b))[0] for b in bits],
                           dtype=torch.int16).view(torch.float16)
    else:
        t = {"F8_E4M3": torch.float8_e4m3fn, "F8_E5M2": torch.float8_e5m2}[dtype_name]
        src = torch.tensor(bits, dtype=torch.uint8).view(t)
    cpu = src.to(torch.bfloat16).view(torch.int16).to(torch.int32).tolist()
    if torch.cuda.is_available():
        cuda = src.cuda().to(torch.bfloat16).view(torch.int16).cpu().to(torch.int32).tolist()
    else:
        cuda = [None] * n
    return cpu, cuda


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else "casts.txt"
    width = {"F32": 8, "F64": 16, "F16": 4, "F8_E4M3": 2, "F8_E5M2": 2}
    sets = [("F32", f32_inputs()), ("F64", f64_inputs()), ("F16", list(range(65536))),
            ("F8_E4M3", list(range(256))), ("F8_E5M2", list(range(256)))]
    with open(out, "w") as f:
        f.write(f"# PyTorch {torch.__version__} casts to bfloat16; "
                f"cuda: {torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'none'}\n")
        f.write("# DTYPE SRC_HEX CPU_BF16_HEX CUDA_BF16_HEX\n")
        for name, bits in sets:
            cpu, cuda = cast(name, bits)
            for b, c, g in zip(bits, cpu, cuda):
                gs = "-" if g is None else f"{g & 0xFFFF:04x}"
                f.write(f"{name} {b:0{width[name]}x} {c & 0xFFFF:04x} {gs}\n")


if __name__ == "__main__":
    main()
