"""The CUDA backend on a real GPU (run on the H200; skipped without CUDA): every kernel equal
to the CPU path, bit for bit, on random bits of every dtype (NaN/Inf payloads included), odd
lengths, odd offsets, strides and non-contiguous views, empty tensors; SGLang's hash equal to
SGLang's own Triton kernel and to the committed vectors; a rank's SGLang answers predicted from
HF tensors equal to SGLang's hash of the shards built for real."""
import os

import numpy as np
import pytest
import torch

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

import weightsum  # noqa: E402
from gpu_common import SMALL, Layout, random_bits, sglang_gpu_tensor_hash  # noqa: E402

MID = ('{"model_type": "qwen2", "hidden_size": 1024, "intermediate_size": 2816,'
       ' "num_hidden_layers": 2, "num_attention_heads": 8, "num_key_value_heads": 2,'
       ' "vocab_size": 5003, "tie_word_embeddings": false}')

DTYPES = [torch.bool, torch.uint8, torch.int8, torch.int16, torch.uint16, torch.int32,
          torch.uint32, torch.int64, torch.uint64, torch.float16, torch.bfloat16, torch.float32,
          torch.float64, torch.float8_e4m3fn, torch.float8_e5m2]
LENGTHS = [0, 1, 7, 1023, 1024, 1025, 4099, 100003]
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope="module")
def gen():
    g = torch.Generator(device="cuda")
    g.manual_seed(int.from_bytes(os.urandom(4), "little"))
    return g


def rand(shape, dtype, gen):
    n = int(np.prod(shape)) if len(shape) else 1
    es = torch.empty((), dtype=dtype).element_size()
    b = random_bits(n * es, gen)
    if dtype == torch.bool:
        b &= 1
    t = b.view(dtype).reshape(shape)
    if dtype.is_floating_point and n:  # plant specials and values that round to Inf in bf16
        flat = t.view(-1)
        idx = torch.randint(0, n, (max(1, n // 50),), device="cuda", generator=gen)
        specials = {torch.float32: [float("nan"), float("inf"), -float("inf"), 3.4e38, -0.0],
                    torch.float64: [float("nan"), float("inf"), 1e300, -1e-320],
                    torch.float16: [float("nan"), float("inf"), 65504.0, 6e-8],
                    torch.bfloat16: [float("nan"), -float("inf")]}.get(dtype)
        if specials:
            vals = torch.tensor(specials, dtype=dtype, device="cuda")
            flat[idx] = vals[torch.arange(idx.numel(), device="cuda") % len(specials)]
    return t


def views_of(t):
    """t and non-contiguous views of it (the CPU reference gets the same view of a CPU copy)."""
    yield "whole", lambda x: x
    if t.dim() == 1 and t.numel() > 3:
        yield "offset", lambda x: x[3:]
        yield "step", lambda x: x[1::3]
    if t.dim() == 2 and t.shape[0] > 1 and t.shape[1] > 2:
        yield "transposed", lambda x: x.t()
        yield "cols", lambda x: x[:, 1:-1]
        yield "colstep", lambda x: x[1:, ::2]
    if t.dim() == 3:
        yield "permuted", lambda x: x.permute(2, 0, 1)
        yield "sliced", lambda x: x[:, 1:, 2:]


def shapes():
    for n in LENGTHS:
        yield (n,)
    yield (3, 1, 0)
    yield (37, 41)
    yield (5, 2051)
    yield (9, 7, 33)
    yield (2, 700, 5)


def check_same(x_gpu, x_cpu, label):
    for canon in ("bf16", "native"):
        g = weightsum.digest_tensors([x_gpu], canon, stats=True)[0]
        c = weightsum.digest_tensors([x_cpu], canon, stats=True)[0]
        assert g == c, (label, canon, g, c)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_fast_sha_stats_equal_cpu(dtype, gen):
    for shape in shapes():
        t = rand(shape, dtype, gen)
        tc = t.cpu()
        for vname, f in views_of(t):
            check_same(f(t), f(tc), f"{dtype} {shape} {vname}")


def test_unaligned_start_every_dtype(gen):
    """Views starting 1..7 elements into an allocation (16-byte loads must not be assumed)."""
    for dtype in DTYPES:
        base = rand((4099,), dtype, gen)
        for off in range(1, 8):
            check_same(base[off:], base.cpu()[off:], f"{dtype} +{off}")
            check_same(base[off:off + 2048].view(16, 128)[:, 1:],
                       base.cpu()[off:off + 2048].view(16, 128)[:, 1:], f"{dtype} 2d +{off}")


def bf16_rule(u):
    """Our canonical cast of f32 bits u (src/core/dtype.c)."""
    if (u & 0x7FFFFFFF) > 0x7F800000:
        return 0x7FC0
    return ((u + 0x7FFF + ((u >> 16) & 1)) >> 16) & 0xFFFF


def test_canonical_cast_nan_policy(gen):
    """Every NaN to 0x7FC0, round to nearest even (ties too), subnormals, overflow to Inf: the
    SHA of the GPU cast is the rule's bytes, not torch's CUDA .to() (which keeps payloads)."""
    bits = [0x7FC00000, 0xFFC00001, 0x7F800001, 0x3F808000, 0x3F818000, 0x7F7FFFFF, 0x7F800000,
            0x000116C2, 0x80000000, 0x3F80FFFF]
    x = torch.tensor(np.array(bits, dtype=np.uint32).view(np.int32), device="cuda").view(
        torch.float32)
    import hashlib
    want = np.array([bf16_rule(u) for u in bits], dtype="<u2")
    assert want[1] == 0x7FC0 and want[3] == 0x3F80 and want[4] == 0x3F82 and want[5] == 0x7F80
    assert weightsum.sha256_tensor(x) == hashlib.sha256(want.tobytes()).hexdigest()
    assert weightsum.sha256_tensor(x) == weightsum.sha256_tensor(x.cpu())
    # f64 goes through f32 first (double rounding as PyTorch's CPU cast does)
    d = torch.tensor([1.0 + 2 ** -8 + 2 ** -30, float("nan"), 1e300], dtype=torch.float64,
                     device="cuda")
    assert weightsum.sha256_tensor(d) == weightsum.sha256_tensor(d.cpu())


def test_batch_is_each(gen):
    ts = {f"t{i}": rand((int(torch.randint(0, 5000, (1,), generator=gen, device="cuda")),),
                        DTYPES[i % len(DTYPES)], gen) for i in range(60)}
    both = weightsum.digest_tensors(ts, "bf16", stats=True)
    for k, t in ts.items():
        assert weightsum.digest_tensors([t], "bf16", stats=True)[0] == both[k], k
        assert weightsum.sha256_tensor(t) == both[k]["sha256"]
        assert weightsum.fast_tensor(t) == both[k]["fast"]


def test_tensor_core_path_batches(gen):
    """The tensor-core kernel (whole 1024-unit blocks of 2-byte units, 16 per tile, one warp's
    range of tiles crossing tensors) with the general kernel's partial blocks around it: batches
    of 2-byte tensors of sizes around tile edges, starting at 16-byte-aligned offsets that are
    not block-aligned, dim-0 slices, equal to the CPU path and to the general path alone."""
    base = rand((1 << 21,), torch.bfloat16, gen)
    views = []
    for n in (1024, 2048, 16 * 1024, 16 * 1024 + 1, 17 * 1024 - 1, 33 * 1024 + 500, 200003):
        for off in (0, 8, 1024, 1032, 4096 + 8 * 37):
            views.append((n, off))
    for dtype in (torch.bfloat16, torch.float16, torch.int16, torch.uint16):
        b = base.view(dtype)
        ts = [b[off:off + n] for n, off in views]
        ts.append(b[: 64 * 4096].view(64, 4096)[5:40])      # dim-0 slice: one contiguous run
        ts.append(b[: 64 * 4096].view(64, 4096)[:, 1024:])  # rows: the general kernel
        ts.append(rand((3, 5), dtype, gen))                 # small ones between
        ts.append(b[7:7 + 50000])                           # not 16-byte aligned: general
        cpu = [t.cpu() for t in ts]
        got = weightsum.digest_tensors(ts, "bf16", stats=True)
        want = weightsum.digest_tensors(cpu, "bf16", stats=True)
        for i, (g, w) in enumerate(zip(got, want)):
            assert g == w, (dtype, i, tuple(ts[i].shape), ts[i].storage_offset())
        os.environ["WEIGHTSUM_CUDA_FAST"] = "general"
        try:
            assert weightsum.digest_tensors(ts, "bf16", stats=True) == got
        finally:
            del os.environ["WEIGHTSUM_CUDA_FAST"]
        one = weightsum.fast_tensors([b[: 1 << 20]])[0]
        b.view(torch.int16)[(1 << 19) + 77] ^= -(1 << 15)              # a planted sign flip
        assert weightsum.fast_tensors([b[: 1 << 20]])[0] != one
        b.view(torch.int16)[(1 << 19) + 77] ^= -(1 << 15)


def test_sglang_direct_tiles_equal_sglang_triton(gen):
    """Tiles read straight from the source (one segment, back-to-back 16-byte rows) and tiles
    built in shared memory, next to each other: SGLang's own kernel on the same tensors."""
    sgl = sglang_gpu_tensor_hash()
    big = rand((96, 8192), torch.bfloat16, gen)
    cases = [big, big[:, :1024], big[:, 4096:5120], big[3:77], big.view(-1)[8:8 + 8192 * 40 + 4],
             big[:, 8:1032], big.view(-1)[1:70000], big[:, :1000], rand((70001,), torch.uint8, gen),
             rand((40, 4096), torch.float32, gen)[:, 1024:2048]]
    ours = weightsum.sglang_hash_tensors(cases)
    for t, h in zip(cases, ours):
        assert h == sgl(t), (t.dtype, tuple(t.shape), t.stride(), t.storage_offset())
    lay = Layout(MID, "sglang", 2)
    hf = [rand(shape, torch.bfloat16, gen) for _, shape, _ in lay.hf_shapes()]
    for rank in range(2):
        want = [sgl(t) for t in lay.build_local(rank, hf).values()]
        assert lay.expect(rank, hf) == want, rank


def test_planted_change_is_caught(gen):
    t = rand((1 << 20,), torch.bfloat16, gen)
    before = weightsum.digest_tensors([t])[0]
    t.view(torch.int16)[123457] ^= 1
    after = weightsum.digest_tensors([t])[0]
    assert before["sha256"] != after["sha256"] and before["fast"] != after["fast"]


def test_sglang_hash_equals_sglang_triton(gen):
    sgl = sglang_gpu_tensor_hash()
    cases = []
    for dtype in DTYPES:
        for n in [1, 3, 5, 8191, 8192, 8193, 40000]:
            cases.append(rand((n,), dtype, gen))
    cases.append(rand((300, 77), torch.bfloat16, gen)[:, 3:])       # strided rows
    cases.append(rand((64, 130), torch.float32, gen).t())           # transposed
    cases.append(rand((5, 9, 33), torch.uint8, gen).permute(1, 2, 0))
    ours = weightsum.sglang_hash_tensors(cases)
    for t, h in zip(cases, ours):
        assert h == sgl(t), (t.dtype, tuple(t.shape), t.stride())
    assert weightsum.sglang_hash_tensors([torch.empty(0, device="cuda")]) == [0]


def prng_bytes(seed, nbytes):
    mask = (1 << 64) - 1
    words = []
    for k in range((nbytes + 7) // 8):
        x = (seed + (k + 1) * 0x9E3779B97F4A7C15) & mask
        x ^= x >> 30
        x = (x * 0xBF58476D1CE4E5B9) & mask
        x ^= x >> 27
        x = (x * 0x94D049BB133111EB) & mask
        x ^= x >> 31
        words.append(x)
    return np.array(words, dtype="<u8").view(np.uint8)[:nbytes]


def test_sglang_hash_vectors():
    path = os.path.join(ROOT, "tests", "vectors", "sglang_hash.txt")
    n = 0
    for line in open(path):
        if line.startswith("#") or not line.strip():
            continue
        name, dt, nbytes, pattern, seed, gpu, _cpu = line.split()
        nbytes, seed = int(nbytes), int(seed, 16)
        if nbytes > (1 << 22):
            continue
        if pattern in ("prng", "bool"):
            b = prng_bytes(seed, nbytes)
            if pattern == "bool":
                b = b & np.uint8(1)
        else:
            b = np.full(nbytes, 0 if pattern == "zero" else 0xFF, np.uint8)
        t = torch.from_numpy(b.copy()).cuda()
        assert weightsum.sglang_hash_tensors([t]) == [int(gpu, 16)], name
        n += 1
    assert n > 100


@pytest.mark.parametrize("hf_dtype", [torch.bfloat16, torch.float32])
def test_sglang_expect_tp2_equals_real_shards(hf_dtype, gen):
    sgl = sglang_gpu_tensor_hash()
    lay = Layout(SMALL, "sglang", 2)
    hf = []
    for name, shape, tied in lay.hf_shapes():
        if hf_dtype == torch.float32:
            hf.append(torch.randn(shape, device="cuda", generator=gen) * 3)
        else:
            hf.append(rand(shape, torch.bfloat16, gen))
    for rank in range(2):
        want = [sgl(t) for t in lay.build_local(rank, hf).values()]
        assert lay.expect(rank, hf) == want, rank
        assert lay.expect(rank, [t.cpu() for t in hf]) == want, rank  # the host form too
        built = list(lay.build_local(rank, hf).values())
        assert weightsum.sglang_hash_tensors(built) == want
    # a changed HF element changes a rank's answer
    before = lay.expect(0, hf) + lay.expect(1, hf)
    hf[1].view(torch.uint8).view(-1)[11] ^= 1  # an exponent bit of element 5 (bf16) or 2 (f32)
    assert lay.expect(0, hf) + lay.expect(1, hf) != before


@pytest.mark.parametrize("hf_dtype", [torch.bfloat16, torch.float32])
def test_sglang_expect_ranks_one_call(hf_dtype, gen):
    """Both ranks' answers from one description of the HF tensors, in one launch
    (weightsum.cuda.SglangExpect): equal to the per-rank calls, to the host path and to SGLang's
    kernel on the shards built for real; a changed element changes exactly its holders'."""
    from weightsum.cuda import SglangExpect
    sgl = sglang_gpu_tensor_hash()
    lay = Layout(MID, "sglang", 2)
    sx = SglangExpect("sglang", 2, MID, engine_dtype="BF16")
    hf = [(torch.randn(s, device="cuda", generator=gen) * 0.05).to(hf_dtype)
          for _, s, _ in lay.hf_shapes()]
    got = sx(hf)
    assert list(got) == [0, 1]
    for r in range(2):
        assert list(got[r].values()) == lay.expect(r, hf), r
        assert list(got[r].values()) == [sgl(t) for t in lay.build_local(r, hf).values()], r
    assert sx([t.cpu() for t in hf]) == got  # the host form (CPU reference)
    assert sx(dict(zip(sx.hf_names, hf)), ranks=[1]) == {1: got[1]}
    for name, at, holders in (
            ("model.layers.0.post_attention_layernorm.weight", 5,
             {(0, "model.layers.0.post_attention_layernorm.weight"),
              (1, "model.layers.0.post_attention_layernorm.weight")}),
            ("model.layers.1.mlp.gate_proj.weight", 1500 * 1024 + 7,   # row 1500 of 2816: rank 1
             {(1, "model.layers.1.mlp.gate_up_proj.weight")})):
        i = sx.hf_names.index(name)
        keep = hf[i].clone()
        hf[i].view(-1)[at] = -hf[i].view(-1)[at] + 1
        new = sx(hf)
        hf[i].copy_(keep)
        changed = {(r, n) for r in new for n in new[r] if new[r][n] != got[r][n]}
        assert changed == holders, (name, changed)
    assert sx(hf) == got


def test_no_gpu_memory_growth_per_call(gen):
    ts = [rand((1 << 16,), torch.float32, gen) for _ in range(8)]
    weightsum.digest_tensors(ts)
    free0 = torch.cuda.mem_get_info()[0]
    for _ in range(5):
        weightsum.digest_tensors(ts)
        weightsum.sglang_hash_tensors(ts)
    assert torch.cuda.mem_get_info()[0] == free0
