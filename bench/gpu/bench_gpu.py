"""GPU benchmark of the CUDA backend (issue 11), run on one H200:
Qwen2.5-3B-shaped tensors (434, bf16, then fp32), timed in one run against the Miles checker's
method (copy each tensor to the CPU, hashlib) and SGLang's own gpu_tensor_hash (per tensor).

  PYTHONPATH=python:tests/gpu WEIGHTSUM_LIB=build/libweightsum.so python3 bench/gpu/bench_gpu.py

Every timed answer is also checked: SHA-256 against hashlib, the SGLang batch against SGLang's
per-tensor calls, the predicted TP=2 answers (per rank, and both ranks in one SglangExpect
call) against SGLang's hash of the real shards. The read ceiling of the card is
bench/gpu/read_ceiling.cu's (a separate program).
Times: median of repeated runs after a warm-up (CUDA synchronised; wall clock)."""
import hashlib
import json
import os
import statistics
import sys
import time

import torch

import weightsum
from gpu_common import QWEN25_3B, Layout, sglang_gpu_tensor_hash
from weightsum.cuda import Batch, device_memory

OUT = os.environ.get("OUT", ".")
rows = []
log = open(os.path.join(OUT, "bench_gpu.log"), "w")


def say(*a):
    s = " ".join(str(x) for x in a)
    print(s, flush=True)
    log.write(s + "\n")
    log.flush()


def timeit(fn, reps, warm=1):
    for _ in range(warm):
        fn()
    torch.cuda.synchronize()
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter()
        r = fn()
        torch.cuda.synchronize()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts), min(ts), r


def row(what, seconds, note=""):
    rows.append((what, seconds, note))
    say(f"{what:<62} {seconds * 1e3:11.3f} ms  {note}")


def main():
    dev = torch.cuda.get_device_name()
    say(f"device: {dev}; torch {torch.__version__}; CPUs {os.cpu_count()}")
    lay = Layout(QWEN25_3B, "sglang", 2)
    gen = torch.Generator(device="cuda")
    gen.manual_seed(11)
    free_start = torch.cuda.mem_get_info()[0]
    hf_names, hf = [], []
    for name, shape, tied in lay.hf_shapes():
        hf_names.append(name)
        if tied:  # tied: no tensor of its own (lm_head -> embed); placeholder, never read
            hf.append(None)
            continue
        hf.append((torch.randn(shape, device="cuda", generator=gen) * 0.02).to(torch.bfloat16))
    for i, t in enumerate(hf):
        if t is None:
            hf[i] = hf[hf_names.index(lay.hf[i].tied_to.decode())]
    tensors = {n: t for n, t, d in zip(hf_names, hf, lay.hf) if not d.tied_to}
    nbytes = sum(t.numel() * t.element_size() for t in tensors.values())
    say(f"tensors: {len(tensors)}, {nbytes / 1e9:.3f} GB bf16")
    torch.cuda.synchronize()
    free_tensors = torch.cuda.mem_get_info()[0]
    sgl = sglang_gpu_tensor_hash()
    names = list(tensors)
    tl = [tensors[n] for n in names]

    # --- fast digest of every tensor: one launch ---
    med, mn, fast = timeit(lambda: weightsum.fast_tensors(tl), 20, 3)
    row("fast digest, all tensors (bf16), one batch call", med,
        f"min {mn * 1e3:.3f} ms; {nbytes / med / 1e12:.2f} TB/s")
    med, mn, _ = timeit(lambda: Batch(tl), 20, 3)
    row("  of which: packing 434 tensors' descriptors in Python", med, f"min {mn * 1e3:.3f} ms")
    bt = Batch(tl)
    med, mn, fast_b = timeit(lambda: weightsum.fast_tensors(bt), 50, 5)
    row("fast digest, all tensors (bf16), descriptors packed once", med,
        f"min {mn * 1e3:.3f} ms; {nbytes / med / 1e12:.2f} TB/s")
    assert fast_b == fast
    from weightsum.cuda import ALGO_FAST, CANON, _key, digest_batch
    kh = _key(None)
    med, mn, _ = timeit(lambda: digest_batch(bt, CANON["bf16"], ALGO_FAST, kh), 50, 5)
    row("  of which: the C call alone (ws_digest_views, packed, key made)", med,
        f"min {mn * 1e3:.3f} ms; the rest is Python making the hex answers")
    start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    ev = []
    for _ in range(30):
        start.record()
        weightsum.fast_tensors(bt)
        stop.record()
        torch.cuda.synchronize()
        ev.append(start.elapsed_time(stop) / 1e3)
    row("  same, CUDA events around the call (device time of the launches)", statistics.median(ev),
        f"min {min(ev) * 1e3:.3f} ms; {nbytes / statistics.median(ev) / 1e12:.2f} TB/s")
    for variant, what in (("general", "general kernel only"),):  # for comparison
        os.environ["WEIGHTSUM_CUDA_FAST"] = variant
        med, mn, fast_g = timeit(lambda: weightsum.fast_tensors(bt), 20, 3)
        del os.environ["WEIGHTSUM_CUDA_FAST"]
        row(f"  same, {what} (WEIGHTSUM_CUDA_FAST={variant})", med,
            f"min {mn * 1e3:.3f} ms; {nbytes / med / 1e12:.2f} TB/s")
        assert fast_g == fast, f"the {variant} kernel differs"
    cp = torch.empty_like(tl[0])
    med, mn, _ = timeit(lambda: [cp.copy_(tl[0]) for _ in range(4)], 10, 2)
    row("  for scale: device copy of the embedding, 4x (read+write)", med,
        f"{8 * tl[0].numel() * 2 / med / 1e12:.2f} TB/s read+write")
    del cp
    for i in (0, 1, len(tl) - 1):  # spot check against the CPU path
        assert fast[i] == weightsum.fast_tensor(tl[i].cpu()), names[i]

    # --- SHA-256 of every tensor ---
    med, mn, sha = timeit(lambda: weightsum.sha256_tensors(tl), 3, 1)
    row("SHA-256, all tensors (bf16): GPU staging + CPU threads", med,
        f"min {mn * 1e3:.1f} ms; {nbytes / med / 1e9:.1f} GB/s")

    big = max(range(len(tl)), key=lambda i: tl[i].numel())
    med, mn, _ = timeit(lambda: weightsum.sha256_tensors([tl[big]]), 3, 1)
    bb = tl[big].numel() * 2
    row(f"SHA-256 of the largest tensor alone ({bb / 1e6:.0f} MB, one stream)", med,
        f"min {mn * 1e3:.1f} ms; {bb / med / 1e9:.2f} GB/s")
    host = tl[big].cpu().view(torch.uint8).numpy()
    t0 = time.perf_counter()
    hashlib.sha256(host).digest()
    dt = time.perf_counter() - t0
    row("  hashlib of the same bytes in host memory, one thread", dt, f"{bb / dt / 1e9:.2f} GB/s")
    del host

    # --- the Miles checker's method: copy to the CPU, hashlib ---
    def miles():
        return [hashlib.sha256(t.detach().cpu().contiguous().view(torch.uint8).numpy()).hexdigest()
                for t in tl]
    t0 = time.perf_counter()
    want = miles()
    row("Miles checker's method (t.cpu(), hashlib), all tensors", time.perf_counter() - t0,
        "one run")
    assert sha == want, "SHA-256 differs from hashlib"
    say("  SHA-256 of all 434 equal to hashlib's")

    # --- the trainer's Manifest (weightsum.torch) of the CUDA tensors, in place ---
    import weightsum.torch as wt
    fast_hex = dict(zip(names, fast))
    sha_hex = dict(zip(names, sha))

    def manifest(algo):
        m = wt.Manifest(algo=algo)
        m.add_all(tensors)  # a dict: one batch call
        return m
    med, mn, m = timeit(lambda: manifest("fast"), 10, 2)
    row("trainer Manifest(algo='fast').add_all(434 CUDA tensors)", med,
        f"min {mn * 1e3:.3f} ms; host_bytes {m.host_bytes}")
    assert all(e["fast"] == fast_hex[n] for n, e in m.to_dict()["tensors"].items())
    med, mn, m = timeit(lambda: manifest("sha256"), 3, 1)
    row("trainer Manifest(algo='sha256').add_all(434 CUDA tensors)", med,
        f"min {mn * 1e3:.1f} ms; host_bytes {m.host_bytes}")
    assert all(e["sha256"] == sha_hex[n] for n, e in m.to_dict()["tensors"].items())

    def one_by_one():
        m = wt.Manifest(algo="fast")
        for n in names:
            m.add(n, tensors[n])
        return m
    med, mn, m = timeit(one_by_one, 5, 1)
    row("trainer Manifest(algo='fast').add() tensor by tensor (434 calls)", med,
        f"min {mn * 1e3:.3f} ms")
    say("  manifest digests equal fast_tensors / hashlib on all 434")

    # --- weightsum.expect of both TP=2 ranks from the CUDA tensors (public API) ---
    cfg = json.loads(QWEN25_3B)
    med, mn, exp = timeit(lambda: weightsum.expect(tensors, "sglang", 2, cfg), 10, 2)
    row("weightsum.expect(434 CUDA tensors, sglang, tp=2): both ranks", med,
        f"min {mn * 1e3:.3f} ms; holds and per-GPU checksums included")
    local_names = [n for _, n, _ in lay.local_of(0)]

    # --- SGLang's hash of an engine rank's local tensors ---
    local = lay.build_local(0, hf)
    ll = list(local.values())
    lbytes = sum(t.numel() * 2 for t in ll)
    torch.cuda.synchronize()
    med_s, mn_s, theirs = timeit(lambda: [sgl(t) for t in ll], 5, 1)
    row(f"SGLang gpu_tensor_hash per tensor, rank 0 of TP=2 ({len(ll)} tensors)", med_s,
        f"{lbytes / 1e9:.2f} GB")
    med_o, mn_o, ours = timeit(lambda: weightsum.sglang_hash_tensors(ll), 20, 3)
    row("weightsum sglang_hash_tensors, same tensors, one launch", med_o,
        f"{med_s / med_o:.1f}x faster; {lbytes / med_o / 1e12:.2f} TB/s")
    lb = Batch(ll)
    med_p, mn_p, ours_p = timeit(lambda: weightsum.sglang_hash_tensors(lb), 20, 3)
    row("weightsum sglang_hash_tensors, descriptors packed once", med_p,
        f"{med_s / med_p:.1f}x faster; {lbytes / med_p / 1e12:.2f} TB/s")
    assert ours == theirs == ours_p, "SGLang hash differs from SGLang's kernel"
    say("  equal to SGLang's own kernel on every local tensor")

    # --- expected SGLang answers of both TP=2 ranks from the HF tensors ---
    def both():
        return lay.expect(0, hf), lay.expect(1, hf)
    med, mn, (e0, e1) = timeit(both, 20, 3)
    row("expected SGLang answers, both TP=2 ranks, from HF tensors", med, f"min {mn * 1e3:.3f} ms")
    hb = Batch(hf)
    med, mn, (p0, p1) = timeit(lambda: (lay.expect(0, hb), lay.expect(1, hb)), 20, 3)
    row("expected SGLang answers, both ranks, HF descriptors packed once", med,
        f"min {mn * 1e3:.3f} ms")
    assert (p0, p1) == (e0, e1)
    # both ranks from one description of the HF tensors, one launch (weightsum.cuda.SglangExpect)
    from weightsum.cuda import SglangExpect
    sx = SglangExpect("sglang", 2, QWEN25_3B, engine_dtype="BF16")
    med, mn, both = timeit(lambda: sx(hf, ranks=[0, 1]), 20, 3)
    row("expected SGLang answers, both ranks, one call (SglangExpect), fresh list", med,
        f"min {mn * 1e3:.3f} ms")
    assert [list(both[r].values()) for r in (0, 1)] == [e0, e1]
    hfd = {n: t for n, t, d in zip(hf_names, hf, lay.hf) if not d.tied_to}
    med, mn, both_d = timeit(lambda: sx(hfd), 20, 3)
    row("  same, a fresh dict {HF name: tensor} (tied left out), every rank", med,
        f"min {mn * 1e3:.3f} ms")
    assert both_d == both
    med, mn, _ = timeit(lambda: sx._describe(hf), 20, 3)
    row("  of which: describing the 434 HF tensors in Python", med, f"min {mn * 1e3:.3f} ms")
    med, mn, both_p = timeit(lambda: sx(hb), 20, 3)
    row("  same, HF descriptors packed once (Batch)", med, f"min {mn * 1e3:.3f} ms")
    assert both_p == both
    assert e0 == theirs, "rank 0 prediction differs"
    assert [int(exp["ranks"][0]["checksums"][n], 16) for n in local_names] == theirs, \
        "weightsum.expect's rank 0 answers differ from SGLang's kernel"
    local1 = lay.build_local(1, hf)
    assert e1 == [sgl(t) for t in local1.values()], "rank 1 prediction differs"
    say("  both ranks' predictions equal SGLang's hash of the real shards")
    del local, local1, ll, lb
    torch.cuda.synchronize()
    dmem, hmem = device_memory()
    say(f"backend memory after the bf16 runs: device {dmem / 2**20:.1f} MiB, pinned host {hmem / 2**20:.1f} MiB")

    # --- fp32 tensors: cast on the GPU ---
    t32 = [t.float() for t in tl]
    b32 = sum(t.numel() * 4 for t in t32)
    b32b = Batch(t32)
    med, mn, f32fast = timeit(lambda: weightsum.fast_tensors(b32b), 10, 2)
    row("fast digest, all tensors as fp32 (cast to bf16 on the GPU)", med,
        f"{b32 / med / 1e12:.2f} TB/s of fp32")
    assert f32fast == fast, "fp32 -> bf16 canonical digests differ from the bf16 tensors'"
    med, mn, f32sha = timeit(lambda: weightsum.sha256_tensors(t32), 3, 1)
    row("SHA-256, all tensors as fp32 (cast on the GPU)", med, f"min {mn * 1e3:.1f} ms")
    assert f32sha == sha
    t0 = time.perf_counter()
    _ = [hashlib.sha256(t.detach().cpu().contiguous().view(torch.uint8).numpy()).hexdigest()
         for t in t32[:50]]
    row("Miles checker's method on the first 50 fp32 tensors (native bytes)",
        time.perf_counter() - t0, "one run, for scale")
    del t32, b32b
    torch.cuda.synchronize()
    dmem, hmem = device_memory()
    free_end = torch.cuda.mem_get_info()[0]
    say(f"GPU memory beyond the tensors: backend holds {dmem / 2**20:.1f} MiB device, "
        f"{hmem / 2**20:.1f} MiB pinned host; free memory before the tensors {free_start / 2**30:.2f} GiB, "
        f"after allocating them {free_tensors / 2**30:.2f} GiB, at the end {free_end / 2**30:.2f} GiB "
        f"(torch caches freed blocks; the backend's own is the figure above)")
    with open(os.path.join(OUT, "bench_gpu.json"), "w") as f:
        json.dump({"device": dev, "rows": rows, "backend_device_bytes": dmem,
                   "backend_host_bytes": hmem}, f, indent=1)
    say("\nSUMMARY")
    for w, s, n in rows:
        say(f"{w:<62} {s * 1e3:11.3f} ms  {n}")


if __name__ == "__main__":
    main()
