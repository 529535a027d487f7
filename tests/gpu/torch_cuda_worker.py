"""One rank of the weightsum.torch checks over tensors on a device (tests/gpu/test_torch_cuda.py
on the GPU, tests/py/test_torch_device_paths.py without one): the trainer's Manifest, its
expect(), the Megatron-native manifest of TP shards, and the engine checks (fast, SHA-256,
with the per-rank checksum answers) with every tensor where the device path reads it, clean and
with planted faults. Results go to OUT/rank{r}.json, judged by the test.

device "cuda": the tensors live on the GPU (all ranks on one GPU, over gloo). device "fake":
they stay in host memory, but weightsum.cuda describes them as memory of CUDA device 0, and
WEIGHTSUM_CUDA_LIB names the host-run fake backend (tests/c/fake_device_backend.c): every call
takes the device path of the library (descriptors, dispatch, finishing), as on a GPU."""
import json
import os
import sys

import torch
import torch.distributed as dist

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
for p in (os.path.join(ROOT, "python"), os.path.join(ROOT, "tests", "py"),
          os.path.join(ROOT, "examples"), HERE):
    if p not in sys.path:
        sys.path.insert(0, p)

import torch_dist_worker as W  # noqa: E402

K = "model.layers.0.self_attn.k_proj.weight"
QKV = "model.layers.0.self_attn.qkv_proj.weight"


def fake_device():
    """Make weightsum.cuda see every CPU tensor as memory of CUDA device 0 (the fake backend
    reads it as host memory)."""
    import weightsum.cuda as C
    real = C.torch_place

    def place(t, streams=None):
        return (0, None) if t.is_cpu else real(t, streams)
    C.torch_place = place


def findings(rep):
    return [dict(f.__dict__, rows=list(f.rows) if f.rows else None) for f in rep.findings]


def run(rank, world, init_file, out_dir, device):
    dist.init_process_group("gloo", init_method="file://" + init_file, rank=rank,
                            world_size=world)
    dev = "cuda" if device == "cuda" else "cpu"
    import weightsum
    import weightsum.torch as wt
    from gpu_common import Layout
    out = {}
    cfg = W.config(False)
    hf_cpu = W.hf_state(cfg)
    # the references, from host memory by the host paths (before any fake device)
    ref = wt.Manifest(algo="both")
    ref.add_all(hf_cpu)
    fast_ref = wt.Manifest(algo="fast")
    fast_ref.add_all(hf_cpu)
    exp_ref = weightsum.expect(hf_cpu, "sglang", world, cfg, source="trainer")
    exp_cpu_kind = weightsum.expect(hf_cpu, "sglang", world, cfg, device="cpu")
    exp_vllm = weightsum.expect(hf_cpu, "sglang", world, cfg, engine="vllm", source="trainer")
    exp_cpu_src = weightsum.expect(hf_cpu, "sglang", world, cfg, device="cpu", source="trainer")
    if device == "fake":
        fake_device()
    hf = {k: v.to(dev) for k, v in hf_cpu.items()}

    # --- trainer: Manifest of device tensors, in place, equal to the host one ---------------
    m = wt.Manifest(algo="both", keep_tensors=True)
    m.add_all(hf)                          # a dict: one batch
    g = wt.Manifest(algo="both")
    g.add_all((k, v) for k, v in hf.items())  # a generator: tensor by tensor
    strided = wt.Manifest(algo="both")
    strided.add_all({k: (v.t().contiguous().t() if v.dim() == 2 else v) for k, v in hf.items()})
    out["manifest"] = {
        "equal_host": m.to_dict()["tensors"] == ref.to_dict()["tensors"],
        "equal_one_by_one": g.to_dict()["tensors"] == ref.to_dict()["tensors"],
        "equal_strided": strided.to_dict()["tensors"] == ref.to_dict()["tensors"],
        "host_bytes": m.host_bytes + g.host_bytes + strided.host_bytes,
        "count": len(m)}
    bad = dict(hf)
    bad["model.layers.1.mlp.up_proj.weight"] = hf["model.layers.1.mlp.up_proj.weight"].clone()
    W.flip_bit(bad["model.layers.1.mlp.up_proj.weight"], 1234)
    mb = wt.Manifest(algo="both")
    mb.add_all(bad)
    a, b = ref.to_dict()["tensors"], mb.to_dict()["tensors"]
    out["manifest"]["differs"] = sorted(k for k in a if a[k] != b[k])

    # --- trainer: expect() of every engine answer from device tensors, in place ------------
    # (SGLang's gpu_tensor_hash on the GPU; vLLM's SHA-256 and SGLang's CPU-path hash stream
    # each local tensor's image through the backend's SHA-256 pipeline)
    exp = m.expect("sglang", world, cfg)
    out["expect"] = {"equal_host": exp == exp_ref,
                     "vllm_equal_host": m.expect("sglang", world, cfg, engine="vllm") == exp_vllm,
                     "cpu_equal_host": m.expect("sglang", world, cfg, device="cpu") == exp_cpu_src,
                     "host_bytes": m.host_bytes}

    # --- Megatron-native manifest from this rank's device shards, at their global offsets ---
    # (Megatron splits whole kv groups: only where tp divides the kv heads)
    if cfg["num_key_value_heads"] % world == 0:
        meg = Layout(json.dumps(cfg), "megatron", world)
        hf_list = [hf[n] for n, _, _ in meg.hf_shapes()]
        shards = meg.build_local(rank, hf_list, dtype=torch.bfloat16)
        mm = wt.megatron_manifest("megatron", cfg, rank, world, shards.items())
        out["megatron"] = {"equal": mm.to_dict()["tensors"] == fast_ref.to_dict()["tensors"],
                           "bytes_moved": mm.bytes_moved}
        if rank == 1:  # a bit flipped in rank 1's shard of linear_fc2 (down_proj, split by columns)
            W.flip_bit(shards["decoder.layers.1.mlp.linear_fc2.weight"], 7)
        mm2 = wt.megatron_manifest("megatron", cfg, rank, world, shards.items())
        a, b = fast_ref.to_dict()["tensors"], mm2.to_dict()["tensors"]
        out["megatron"]["differs"] = sorted(k for k in a if a.get(k) != b.get(k))

    # --- engine checks with device locals ------------------------------------------------
    scen = [("clean", None), ("flip_k", 1), ("padding", None)]
    if world >= 4:
        scen.append(("stale_replica", 1))
    for algo in ("fast", "sha256"):
        fm = wt.Manifest(algo=algo)
        fm.add_all(hf)
        chk = wt.EngineCheck("sglang", rank, world, cfg, mode="log")
        for mutation, r in scen:
            sc = {"layout": "sglang", "mutation": mutation, "rank": r}
            local = {k: v.to(dev) for k, v in W.engine_locals(sc, rank, world, hf_cpu).items()}
            rep = chk.verify(fm, local, expected=exp if algo == "fast" else None)
            out[f"{algo}-{mutation}"] = {"ok": rep.ok, "findings": findings(rep),
                                         "matched": rep.matched,
                                         "host_bytes": rep.cost.host_bytes}
    # SHA-256 with the split tensors' chunks hashed on the CPU (assemble_bytes=0, small
    # chunks: several per tensor, through the reused pinned buffer): the same reports
    fm = wt.Manifest(algo="sha256")
    fm.add_all(hf)
    chk = wt.EngineCheck("sglang", rank, world, cfg, mode="log", assemble_bytes=0,
                         chunk_bytes=4096)
    for mutation, r in (("clean", None), ("flip_k", 1)):
        sc = {"layout": "sglang", "mutation": mutation, "rank": r}
        local = {k: v.to(dev) for k, v in W.engine_locals(sc, rank, world, hf_cpu).items()}
        rep = chk.verify(fm, local)
        out[f"sha256chunks-{mutation}"] = {"ok": rep.ok, "findings": findings(rep),
                                           "matched": rep.matched,
                                           "host_bytes": rep.cost.host_bytes}
    # SGLang's CPU hash (sha256_first8) answered from device tensors too
    fm = wt.Manifest(algo="fast")
    fm.add_all(hf)
    chk = wt.EngineCheck("sglang", rank, world, cfg, mode="log")
    for mutation, r in (("clean", None), ("flip_k", 1)):
        sc = {"layout": "sglang", "mutation": mutation, "rank": r}
        local = {k: v.to(dev) for k, v in W.engine_locals(sc, rank, world, hf_cpu).items()}
        rep = chk.verify(fm, local, expected=exp_cpu_kind)
        out[f"cpuhash-{mutation}"] = {"ok": rep.ok, "findings": findings(rep)}
    out["device"] = device
    with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as f:
        json.dump(out, f)
    dist.barrier()
    dist.destroy_process_group()


def spawn(tmp, world, device):
    import torch.multiprocessing as mp
    out = os.path.join(str(tmp), f"out{world}")
    os.makedirs(out, exist_ok=True)
    mp.spawn(run, args=(world, os.path.join(str(tmp), f"init{world}"), out, device),
             nprocs=world, join=True)
    return [json.load(open(os.path.join(out, f"rank{r}.json"))) for r in range(world)]


def device_kind(per_rank):
    return per_rank[0].get("device")


def judge(per_rank, world):
    """Assertions shared by the GPU and the fake-backend runs."""
    for res in per_rank:
        mf = res["manifest"]
        assert mf["equal_host"] and mf["equal_one_by_one"] and mf["equal_strided"], mf
        assert mf["host_bytes"] == 0 and mf["count"] > 0, mf
        assert mf["differs"] == ["model.layers.1.mlp.up_proj.weight"], mf
        assert res["expect"]["equal_host"] and res["expect"]["host_bytes"] == 0, res["expect"]
        # the SHA-256 answers (vLLM's, SGLang's CPU path) from device tensors, no host copy
        assert res["expect"]["vllm_equal_host"] and res["expect"]["cpu_equal_host"], \
            res["expect"]
        if "megatron" in res or world <= 2:
            assert res["megatron"]["equal"] and 0 < res["megatron"]["bytes_moved"] < 64 << 10
            assert res["megatron"]["differs"] == ["model.layers.1.mlp.down_proj.weight"], \
                res["megatron"]
        for algo in ("fast", "sha256"):
            clean = res[f"{algo}-clean"]
            assert clean["ok"] and not clean["findings"] and clean["matched"] > 0, clean
            flip = res[f"{algo}-flip_k"]
            assert not flip["ok"]
            hits = [f for f in flip["findings"] if f["tensor"] == K]
            assert hits and any(f["rank"] == 1 or "rank 1" in f["detail"] for f in hits), flip
            pad = res[f"{algo}-padding"]
            assert any(f["status"] == "padding" and f["tensor"] == "model.embed_tokens.weight"
                       and f["rank"] == world - 1 for f in pad["findings"]), pad
            if world >= 4:
                st = res[f"{algo}-stale_replica"]
                assert any(f["status"] == "replica_mismatch" and f["tensor"] == K
                           and f["rank"] == 1 for f in st["findings"]), st
        # split tensors built on the GPU and hashed through the backend: nothing via the host
        assert res["sha256-clean"]["host_bytes"] == 0, res["sha256-clean"]
        # the same verdicts when the chunks are hashed on the CPU instead
        for mutation in ("clean", "flip_k"):
            a, b = res[f"sha256-{mutation}"], res[f"sha256chunks-{mutation}"]
            assert (a["ok"], a["findings"], a["matched"]) == (b["ok"], b["findings"],
                                                              b["matched"]), (a, b)
        if device_kind(per_rank) == "cuda":  # device chunks through the pinned buffer
            assert res["sha256chunks-clean"]["host_bytes"] > 0, res["sha256chunks-clean"]
        # the per-rank answers pin the flipped element to rank 1's qkv_proj, no other rank
        exact = [f for f in res["fast-flip_k"]["findings"]
                 if f["rank"] == 1 and f["local"] == QKV and "checksum answer" in f["detail"]]
        assert exact, res["fast-flip_k"]
        assert not [f for f in res["fast-flip_k"]["findings"]
                    if f["rank"] not in (1, None) and "checksum answer" in f["detail"]]
        assert res["cpuhash-clean"]["ok"], res["cpuhash-clean"]
        assert any(f["rank"] == 1 and f["local"] == QKV
                   for f in res["cpuhash-flip_k"]["findings"]), res["cpuhash-flip_k"]
    first = per_rank[0]
    for res in per_rank[1:]:  # every rank the same report
        for k in first:
            if k.startswith(("fast-", "sha256-", "sha256chunks-", "cpuhash-")):
                assert res[k]["findings"] == first[k]["findings"], k
