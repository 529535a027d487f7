"""The engines' expected "checksum" answers (Manifest.expect) from tensors on a device against
the same answers from host memory, bit for bit: vLLM's SHA-256 and SGLang's CPU-path hash (each
local tensor's image streamed by the CUDA backend's SHA-256 pipeline, never built) and SGLang's
gpu_tensor_hash, over dense (padded vocab), tied, fused qkv / gate_up and MoE configs, the sglang
and vllm layouts, TP 1, 2 and 4, bf16 and fp32 weights; nothing through host memory; a flipped
bit in one HF element changes exactly the answers of the local tensors that hold it (the rank
and engine tensor named); mixed host and device tensors refused without host_copy.

Run as a script in its own process (the library loads its device backend once per process):
    python3 tests/gpu/torch_expect_cases.py cuda|fake OUT.json [--bench]
device "cuda": tensors on the GPU (tests/gpu/test_torch_expect_cuda.py). "fake": CPU tensors that
weightsum.cuda describes as CUDA memory, read by the host-run fake backend named by
WEIGHTSUM_CUDA_LIB (tests/py/test_torch_expect_device.py). --bench (cuda only) adds the time of
the vLLM answers of a Qwen2.5-3B-shaped model at TP=2, from the GPU and from host memory."""
import json
import os
import sys
import time

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
for p in (os.path.join(ROOT, "python"), HERE):
    if p not in sys.path:
        sys.path.insert(0, p)

H = 64
CONFIGS = {
    "dense-padded-vocab": {"model_type": "qwen2", "hidden_size": H, "intermediate_size": 96,
                           "num_hidden_layers": 2, "num_attention_heads": 4,
                           "num_key_value_heads": 2, "vocab_size": 301,
                           "tie_word_embeddings": False},
    "dense-tied": {"model_type": "qwen2", "hidden_size": H, "intermediate_size": 80,
                   "num_hidden_layers": 1, "num_attention_heads": 8, "num_key_value_heads": 1,
                   "vocab_size": 250, "tie_word_embeddings": True},
    "qwen3-moe": {"model_type": "qwen3_moe", "hidden_size": H, "intermediate_size": 96,
                  "num_hidden_layers": 2, "num_attention_heads": 8, "num_key_value_heads": 4,
                  "head_dim": 8, "vocab_size": 1000, "tie_word_embeddings": False,
                  "moe_intermediate_size": 32, "num_experts": 8},
    "qwen2-moe-shared": {"model_type": "qwen2_moe", "hidden_size": H, "intermediate_size": 96,
                         "num_hidden_layers": 2, "num_attention_heads": 8,
                         "num_key_value_heads": 4, "head_dim": 8, "vocab_size": 1000,
                         "tie_word_embeddings": True, "moe_intermediate_size": 32,
                         "num_experts": 4, "shared_expert_intermediate_size": 64},
}
KINDS = [("vllm", "cuda"), ("sglang", "cpu"), ("sglang", "cuda")]


def fake_device():
    """weightsum.cuda sees every CPU tensor as memory of CUDA device 0 (the fake backend reads
    it as host memory); torch still sees CPU tensors, so Manifest.expect takes its device
    branch only through the library's dispatch."""
    import weightsum.cuda as C
    real = C.torch_place
    C.torch_place = lambda t, streams=None: (0, None) if t.is_cpu else real(t, streams)


def hf_tensors(wt, family, cfg, tp, dtype, seed):
    lay = wt._Layout(family, cfg, tp)
    g = torch.Generator().manual_seed(seed)
    return {n: torch.randn(tuple(s), generator=g).to(dtype) for n, s, tied in lay.hf
            if tied is None}, lay


def answers(exp):
    """{(rank, engine tensor): answer} of an expectation (either dialect)."""
    if "ranks" in exp:
        return {(r, k): v for r, o in enumerate(exp["ranks"]) for k, v in o["checksums"].items()}
    return {(int(k.split(":", 1)[0]), k.split(":", 1)[1]): v for k, v in exp["checksums"].items()}


def holders(lay, name, row, col):
    """(rank, engine tensor) of every local tensor whose image holds HF element (row, col)."""
    h = next(i for i, d in enumerate(lay.hf) if d[0] == name)
    out = set()
    for p in lay.pieces:
        if p[0] == h and p[5] <= row < p[5] + p[3] and p[6] <= col < p[6] + p[4]:
            out.add((lay.locals[p[1]][1], lay.locals[p[1]][0]))
    return out


def case(wt, weightsum, device, name, family, tp, dtype):
    cfg = CONFIGS[name]
    try:
        hf, lay = hf_tensors(wt, family, cfg, tp, dtype, seed=tp)
    except weightsum.WeightsumError:
        return None  # the family cannot lay this config out at this tp
    dev = "cuda" if device == "cuda" else "cpu"
    on = {k: v.to(dev) for k, v in hf.items()}
    m = wt.Manifest(algo="fast", keep_tensors=True)
    m.add_all(on)
    res = {"case": f"{name}/{family}/tp{tp}/{str(dtype)[6:]}", "kinds": {}}
    # the element flipped: the last element of the first piece of a k_proj (fused qkv), a
    # gate_proj (fused gate_up) or an expert, else the embedding's last row (padded vocab)
    names = [n for n, _, _ in lay.hf]
    target = next((n for key in ("k_proj.weight", "experts.3.up_proj.weight", "gate_proj.weight",
                                 "embed_tokens.weight") for n in names if n.endswith(key)), None)
    t = on[target]
    cols = t.shape[-1] if t.dim() > 1 else 1
    row, col = t.numel() // cols - 1, cols - 1
    want_changed = holders(lay, target, row, col)
    for engine, where in KINDS:
        ref = weightsum.expect(hf, family, tp, cfg, engine=engine, device=where,
                               source="trainer")
        got = m.expect(family, tp, cfg, engine=engine, device=where)
        k = {"equal_host": got == ref, "host_bytes": m.host_bytes, "answers": len(answers(got))}
        flipped = {n: v.clone() for n, v in on.items()}
        fv = flipped[target].view(-1)
        iv = fv.view(torch.int16) if fv.element_size() == 2 else fv.view(torch.int32)
        iv[row * cols + col] ^= 1 << 3
        bad = wt.Manifest(algo="fast").expect(family, tp, cfg, engine=engine, device=where,
                                              tensors=flipped)
        a, b = answers(ref), answers(bad)
        changed = sorted([r, n] for (r, n) in a if a[(r, n)] != b.get((r, n)))
        k["changed"] = changed
        k["want_changed"] = sorted([r, n] for r, n in want_changed)
        res["kinds"][f"{engine}-{where}"] = k
    return res


def refusals(wt, weightsum, device):
    """Host and device tensors mixed: refused unless host_copy (only real CUDA tensors)."""
    if device != "cuda":
        return {}
    cfg = CONFIGS["dense-tied"]
    hf, _ = hf_tensors(wt, "sglang", cfg, 2, torch.bfloat16, 0)
    mixed = {k: (v.cuda() if i % 2 else v) for i, (k, v) in enumerate(hf.items())}
    out = {}
    try:
        wt.Manifest().expect("sglang", 2, cfg, engine="vllm", tensors=mixed)
        out["mixed"] = "ran"
    except weightsum.WeightsumError as e:
        out["mixed"] = str(e)
    m = wt.Manifest(host_copy=True)
    got = m.expect("sglang", 2, cfg, engine="vllm", tensors=mixed)
    out["mixed_host_copy_equal"] = got == weightsum.expect(hf, "sglang", 2, cfg, engine="vllm",
                                                           source="trainer")
    out["mixed_host_bytes"] = m.host_bytes
    return out


def bench(wt, weightsum):
    """vLLM's answers of a Qwen2.5-3B-shaped model at TP=2, bf16: from the GPU (this path) and
    from host memory (what host_copy did: the copy, then the host expectation)."""
    from gpu_common import QWEN25_3B
    cfg = json.loads(QWEN25_3B)
    lay = wt._Layout("sglang", cfg, 2)
    g = torch.Generator(device="cuda").manual_seed(1)
    hf = {n: torch.randn(tuple(s), generator=g, device="cuda", dtype=torch.bfloat16)
          for n, s, tied in lay.hf if tied is None}
    nbytes = sum(t.numel() * t.element_size() for t in hf.values())
    out = {"tensors": len(hf), "bytes": nbytes, "threads": os.cpu_count()}
    for engine, where in (("vllm", "cuda"), ("sglang", "cpu")):
        m = wt.Manifest(algo="fast")
        m.expect("sglang", 2, cfg, engine=engine, device=where, tensors=hf)  # warm-up
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        dev = m.expect("sglang", 2, cfg, engine=engine, device=where, tensors=hf)
        t1 = time.perf_counter()
        host = {k: v.cpu() for k, v in hf.items()}
        t2 = time.perf_counter()
        ref = weightsum.expect(host, "sglang", 2, cfg, engine=engine, device=where,
                               source="trainer")
        t3 = time.perf_counter()
        out[f"{engine}-{where}"] = {"device_s": t1 - t0, "host_copy_s": t2 - t1,
                                    "host_expect_s": t3 - t2, "equal": dev == ref,
                                    "host_bytes": m.host_bytes}
        del host
    import weightsum.cuda as C
    out["backend_memory"] = C.device_memory()
    return out


def main():
    device, path = sys.argv[1], sys.argv[2]
    import weightsum
    import weightsum.torch as wt
    if device == "fake":
        fake_device()
    results = []
    for name in CONFIGS:
        for family in ("sglang", "vllm"):
            for tp in (1, 2, 4):
                for dtype in ((torch.bfloat16, torch.float32) if tp == 2 else (torch.bfloat16,)):
                    r = case(wt, weightsum, device, name, family, tp, dtype)
                    if r is not None:
                        results.append(r)
    out = {"device": device, "cases": results, "refusals": refusals(wt, weightsum, device)}
    if "--bench" in sys.argv and device == "cuda":
        out["bench"] = bench(wt, weightsum)
    with open(path, "w") as f:
        json.dump(out, f, indent=1)


def judge(out):
    """Assertions shared by the GPU and the fake-backend runs."""
    cases = out["cases"]
    assert len(cases) >= 24, len(cases)
    for c in cases:
        for kind, k in c["kinds"].items():
            assert k["equal_host"], (c["case"], kind)
            assert k["host_bytes"] == 0, (c["case"], kind)
            assert k["answers"] > 0, (c["case"], kind)
            # the flipped element changes exactly the answers of its holders, named
            assert k["changed"] and k["changed"] == k["want_changed"], (c["case"], kind, k)
    if out["device"] == "cuda":
        r = out["refusals"]
        assert "host_copy" in r["mixed"], r
        assert r["mixed_host_copy_equal"] and r["mixed_host_bytes"] > 0, r
    if "bench" in out:
        for kind in ("vllm-cuda", "sglang-cpu"):
            b = out["bench"][kind]
            assert b["equal"] and b["host_bytes"] == 0, b


if __name__ == "__main__":
    main()
