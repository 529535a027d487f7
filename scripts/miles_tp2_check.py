#!/usr/bin/env python3
"""The Miles PR's own test (issue 15) and the hooks' benchmark (issue 12), in one job.

One trainer process and TP engine processes (world = 1 + TP):
  trainer (rank 0): Qwen2ForCausalLM's HF tensors, built by transformers from Qwen2.5-3B's
      config (structure on the meta device, random bf16 weights drawn on the GPU; no download),
      weightsum.torch.Manifest of them (fast and SHA-256), then the weight sync: every HF
      tensor broadcast to the engines (as Miles' update_weights_from_distributed does);
  engines (ranks 1..TP): each loads its SGLang TP-local tensors from the received HF tensors
      the way SGLang's loaders build them (examples/standin_engine.py: fused qkv_proj /
      gate_up_proj, vocab padded to 64 and split, tied embedding, biases), then
      weightsum.torch.EngineCheck.verify over the engines' group: fast, then SHA-256.
Then, one at a time: a flipped bit in rank 1's k segment, a stale kv head, gate and up
swapped, garbage in vocab padding, a stale tied head, one rank holding the other's shard;
each must be caught and named. Timing per check, against the Miles checker's method
(rank-0 SHA-256 of full tensors after a CPU copy; the engines' shards gathered to rank 0).

  python3 scripts/miles_tp2_check.py --backend nccl           # one GPU per process (x2)
  python3 scripts/miles_tp2_check.py --backend gloo --gpus 1  # every process on GPU 0
  python3 scripts/miles_tp2_check.py --tiny --device cpu      # a small model, CPU only
Results: one JSON line per measurement on stdout, the summary in --out (JSON).
"""
import argparse
import hashlib
import json
import os
import sys
import tempfile
import time

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "python"))
sys.path.insert(0, os.path.join(ROOT, "examples"))

QWEN25_3B = {"architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2",
             "hidden_size": 2048, "intermediate_size": 11008, "num_hidden_layers": 36,
             "num_attention_heads": 16, "num_key_value_heads": 2, "vocab_size": 151936,
             "max_position_embeddings": 32768, "rms_norm_eps": 1e-6, "rope_theta": 1000000.0,
             "tie_word_embeddings": True, "torch_dtype": "bfloat16", "hidden_act": "silu",
             "use_sliding_window": False}
TINY = dict(QWEN25_3B, hidden_size=128, intermediate_size=256, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, vocab_size=1000)


def say(**kw):
    print(json.dumps(kw), flush=True)


def hf_shapes(cfg):
    """Names and shapes of the HF tensors, from transformers' Qwen2ForCausalLM on the meta
    device (no memory, no download); falls back to the known Qwen2 shapes without it."""
    try:
        from transformers import Qwen2Config, Qwen2ForCausalLM
        with torch.device("meta"):
            model = Qwen2ForCausalLM(Qwen2Config(**{k: v for k, v in cfg.items()
                                                   if k != "architectures"}))
        return [(n, tuple(p.shape)) for n, p in model.state_dict().items()
                if not (cfg["tie_word_embeddings"] and n == "lm_head.weight")], "transformers"
    except ImportError:
        E, I, V = cfg["hidden_size"], cfg["intermediate_size"], cfg["vocab_size"]
        H, KV = cfg["num_attention_heads"], cfg["num_key_value_heads"]
        D = E // H
        out = [("model.embed_tokens.weight", (V, E))]
        for i in range(cfg["num_hidden_layers"]):
            L = f"model.layers.{i}."
            out += [(L + "self_attn.q_proj.weight", (H * D, E)),
                    (L + "self_attn.q_proj.bias", (H * D,)),
                    (L + "self_attn.k_proj.weight", (KV * D, E)),
                    (L + "self_attn.k_proj.bias", (KV * D,)),
                    (L + "self_attn.v_proj.weight", (KV * D, E)),
                    (L + "self_attn.v_proj.bias", (KV * D,)),
                    (L + "self_attn.o_proj.weight", (E, H * D)),
                    (L + "mlp.gate_proj.weight", (I, E)), (L + "mlp.up_proj.weight", (I, E)),
                    (L + "mlp.down_proj.weight", (E, I)), (L + "input_layernorm.weight", (E,)),
                    (L + "post_attention_layernorm.weight", (E,))]
        return out + [("model.norm.weight", (E,))], "builtin shapes"


def comm_device(args, rank):
    if args.device == "cpu":
        return torch.device("cpu")
    gpu = rank % args.gpus
    return torch.device("cuda", gpu)


def worker(rank, world, args, init, result_path):
    import weightsum.torch as wt
    from standin_engine import shard_like_engine
    dev = comm_device(args, rank)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    dist.init_process_group(args.backend, init_method="file://" + init, rank=rank,
                            world_size=world)
    tp = world - 1
    engines = dist.new_group(list(range(1, world)))
    cfg = TINY if args.tiny else QWEN25_3B
    shapes, built_by = hf_shapes(cfg)
    wire = dev if args.backend == "nccl" else torch.device("cpu")
    summary = {"rank": rank, "backend": args.backend, "device": str(dev), "tp": tp,
               "model": "tiny" if args.tiny else "Qwen2.5-3B", "shapes_from": built_by,
               "results": {}}
    res = summary["results"]

    def timed(label, fn, **extra):
        if dev.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        out = fn()
        if dev.type == "cuda":
            torch.cuda.synchronize()
        dt = time.perf_counter() - t0
        res[label] = dict(seconds=round(dt, 4), **extra)
        say(rank=rank, what=label, seconds=round(dt, 4), **extra)
        return out

    # --- the trainer's tensors and the sync --------------------------------------------
    hf = {}
    if rank == 0:
        g = torch.Generator(device=dev).manual_seed(1234)
        for name, shape in shapes:
            t = torch.randn(shape, generator=g, device=dev, dtype=torch.float32) * 0.02
            hf[name] = t.to(torch.bfloat16)
        nbytes = sum(t.numel() * t.element_size() for t in hf.values())
        say(rank=0, what="model", tensors=len(hf), bytes=nbytes, built_by=built_by)

        def manifest(algo):
            m = wt.Manifest(algo=algo, host_copy=True)
            m.add_all(hf.items())
            return m
        m_fast = timed("trainer_manifest_fast", lambda: manifest("fast"))
        res["trainer_manifest_fast"]["host_bytes"] = m_fast.host_bytes
        m_sha = timed("trainer_manifest_sha256", lambda: manifest("sha256"))
        res["trainer_manifest_sha256"]["host_bytes"] = m_sha.host_bytes

        def miles_trainer():
            return {n: hashlib.sha256(t.to(torch.bfloat16).contiguous().cpu().view(torch.uint8)
                                      .numpy().tobytes()).hexdigest() for n, t in hf.items()}
        miles = timed("miles_trainer_sha256_cpu_copy", miles_trainer)
        ok = all(miles[n] == m_sha.digest(n)["sha256"] for n in hf)
        res["miles_trainer_sha256_cpu_copy"]["equal_to_manifest"] = ok
        texts = [m_fast.to_json(), m_sha.to_json()]
    else:
        texts = [None, None]
    dist.broadcast_object_list(texts, src=0)
    # the weight sync: each HF tensor broadcast from the trainer (in the wire's memory)
    t0 = time.perf_counter()
    for name, shape in shapes:
        if rank == 0:
            buf = hf[name].to(wire)
        else:
            buf = torch.empty(shape, dtype=torch.bfloat16, device=wire)
        dist.broadcast(buf, src=0)
        if rank != 0:
            hf[name] = buf.to(dev)
    res["weight_sync_broadcast"] = {"seconds": round(time.perf_counter() - t0, 3)}
    if rank == 0:
        dist.barrier()  # while the engines check
        with open(result_path + ".0", "w") as f:
            json.dump(summary, f)
        dist.destroy_process_group()
        return
    # --- engines ---------------------------------------------------------------------------
    tp_rank = rank - 1
    local = shard_like_engine(hf, cfg, tp_rank, tp)
    hf_cpu_keep = None
    del hf_cpu_keep
    check = wt.EngineCheck("sglang", tp_rank, tp, cfg, group=engines, mode="log")
    for algo, text in (("fast", texts[0]), ("sha256", texts[1])):
        check.verify(text, local)  # warm-up (plan, backend load)
        rep = timed(f"engine_check_{algo}", lambda: check.verify(text, local))
        res[f"engine_check_{algo}"].update(ok=rep.ok, findings=len(rep.findings),
                                           bytes_moved=rep.cost.bytes_moved,
                                           host_bytes=rep.cost.host_bytes,
                                           matched=rep.matched)

    # the Miles checker's method on the engine side: shards gathered to engine rank 0,
    # concatenated, cast to bf16, copied to the CPU, hashed (fused tensors it skipped)
    def miles_engine():
        moved = 0
        for name in sorted(local):
            t = local[name].contiguous().to(wire)
            parts = [torch.empty_like(t) for _ in range(tp)] if tp_rank == 0 else None
            dist.gather(t, parts, dst=dist.get_global_rank(engines, 0), group=engines)
            if tp_rank == 0:
                moved += sum(p.numel() * p.element_size() for p in parts[1:])
                full = torch.cat(parts, dim=0 if t.dim() == 1 or "o_proj" not in name and
                                 "down_proj" not in name else 1)
                hashlib.sha256(full.to(torch.bfloat16).cpu().view(torch.uint8).numpy()
                               .tobytes()).hexdigest()
        return moved
    moved = timed("miles_engine_gather_sha256", miles_engine)
    res["miles_engine_gather_sha256"]["bytes_moved"] = moved if tp_rank == 0 else 0

    # --- planted faults, one at a time (fast check; names must come out) ----------------------
    E, H = cfg["hidden_size"], cfg["num_attention_heads"]
    KV = cfg["num_key_value_heads"]
    D = E // H
    last = cfg["num_hidden_layers"] - 1
    qkv = f"model.layers.{min(3, last)}.self_attn.qkv_proj.weight"
    gate_up = f"model.layers.{min(5, last)}.mlp.gate_up_proj.weight"
    q_rows = (H // tp) * D
    kv_rows = max(1, KV // tp) * D
    faults = {
        "flipped bit in rank 1's k segment": lambda L: (
            L[qkv].view(-1).view(torch.int16).__setitem__(
                (q_rows + 1) * E + 7,
                L[qkv].view(-1).view(torch.int16)[(q_rows + 1) * E + 7] ^ 8)
            if tp_rank == 1 else None),
        "stale kv head": lambda L: (
            L[qkv][q_rows:q_rows + kv_rows].mul_(0.5) if tp_rank == 1 else None),
        "gate and up swapped": lambda L: L.__setitem__(
            gate_up, torch.cat([L[gate_up][L[gate_up].shape[0] // 2:],
                                L[gate_up][:L[gate_up].shape[0] // 2]]).contiguous()),
        "garbage in vocab padding": lambda L: (
            L["model.embed_tokens.weight"][-1].fill_(0.25) if tp_rank == tp - 1 else None),
        "stale tied head": lambda L: L.__setitem__(
            "lm_head.weight", L["model.embed_tokens.weight"].clone().mul_(0.5)),
        "one rank holding the other's shard": None,
    }
    faults_out = {}
    for what, plant in faults.items():
        L = {k: v.clone() for k, v in local.items()} if what != "stale tied head" else \
            dict(local)
        if plant is None:
            other = shard_like_engine(hf, cfg, (tp_rank + 1) % tp, tp)
            if tp_rank == 1:
                L[qkv] = other[qkv]
        else:
            plant(L)
        rep = check.verify(texts[0], L)
        faults_out[what] = {"ok": rep.ok,
                            "findings": [str(f) for f in rep.findings][:6],
                            "seconds": round(rep.cost.seconds, 4)}
        say(rank=rank, fault=what, caught=not rep.ok, findings=faults_out[what]["findings"][:3])
        del L
    res["faults"] = faults_out
    dist.barrier()
    with open(result_path + f".{rank}", "w") as f:
        json.dump(summary, f)
    dist.destroy_process_group()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--backend", default="gloo", choices=["gloo", "nccl"])
    ap.add_argument("--tp", type=int, default=2)
    ap.add_argument("--gpus", type=int, default=1, help="GPUs to spread the processes over")
    ap.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    ap.add_argument("--tiny", action="store_true", help="a small Qwen2 config (CPU tests)")
    ap.add_argument("--out", default=None, help="write the per-rank summaries here (JSON)")
    args = ap.parse_args()
    if args.backend == "nccl" and args.gpus < args.tp + 1:
        # NCCL refuses two ranks on one GPU: the trainer shares GPU 0 with engine rank 0
        args.gpus = max(args.gpus, 1)
    world = args.tp + 1
    tmp = tempfile.mkdtemp()
    init = os.path.join(tmp, "init")
    result = os.path.join(tmp, "result")
    mp.spawn(worker, args=(world, args, init, result), nprocs=world, join=True)
    summaries = [json.load(open(f"{result}.{r}")) for r in range(world)]
    if args.out:
        with open(args.out, "w") as f:
            json.dump(summaries, f, indent=1)
    bad = [(s["rank"], w) for s in summaries[1:] for w, v in s["results"]["faults"].items()
           if v["ok"]]
    clean = [s["results"][f"engine_check_{a}"]["ok"] for s in summaries[1:]
             for a in ("fast", "sha256")]
    say(summary="clean sync matched" if all(clean) else "CLEAN SYNC REPORTED PROBLEMS",
        faults_missed=bad)
    return 0 if all(clean) and not bad else 1


if __name__ == "__main__":
    sys.exit(main())
