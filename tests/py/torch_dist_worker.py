"""Worker of the multi-process tests of weightsum.torch (tests/py/test_torch_hooks.py): one
process per rank over gloo, each running every scenario in turn with its own local tensors,
writing its reports to OUT/rank{r}.json. Kept out of the test module so that spawned processes
import only this."""
import json
import os
import sys

import torch
import torch.distributed as dist

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "python"))
sys.path.insert(0, os.path.join(ROOT, "examples"))

CONFIG = {"model_type": "qwen2", "hidden_size": 64, "intermediate_size": 96,
          "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
          "vocab_size": 100, "tie_word_embeddings": False, "rms_norm_eps": 1e-6}


def config(tied):
    return dict(CONFIG, tie_word_embeddings=bool(tied))


def hf_state(cfg, seed=0, dtype=torch.bfloat16):
    """Every HF tensor of a qwen2 config, deterministic."""
    g = torch.Generator().manual_seed(seed)
    E, I, V = cfg["hidden_size"], cfg["intermediate_size"], cfg["vocab_size"]
    H, KV = cfg["num_attention_heads"], cfg["num_key_value_heads"]
    D = E // H
    shapes = {"model.embed_tokens.weight": (V, E), "model.norm.weight": (E,)}
    if not cfg["tie_word_embeddings"]:
        shapes["lm_head.weight"] = (V, E)
    for i in range(cfg["num_hidden_layers"]):
        L = f"model.layers.{i}."
        shapes.update({
            L + "self_attn.q_proj.weight": (H * D, E), L + "self_attn.q_proj.bias": (H * D,),
            L + "self_attn.k_proj.weight": (KV * D, E), L + "self_attn.k_proj.bias": (KV * D,),
            L + "self_attn.v_proj.weight": (KV * D, E), L + "self_attn.v_proj.bias": (KV * D,),
            L + "self_attn.o_proj.weight": (E, H * D), L + "mlp.gate_proj.weight": (I, E),
            L + "mlp.up_proj.weight": (I, E), L + "mlp.down_proj.weight": (E, I),
            L + "input_layernorm.weight": (E,), L + "post_attention_layernorm.weight": (E,)})
    return {k: torch.randn(v, generator=g).to(dtype) for k, v in shapes.items()}


def flip_bit(t, index, bit=3):
    """One bit of one element of t, in place."""
    flat = t.view(-1)
    iv = flat.view(torch.int16) if t.element_size() == 2 else flat.view(torch.int32)
    iv[index] ^= (1 << bit)


def engine_locals(sc, rank, world, hf):
    """This rank's local tensors for scenario sc (SGLang/vLLM stand-in loader, or the Megatron
    shards `weightsum shard` wrote), with the scenario's fault planted."""
    from standin_engine import shard_like_engine
    cfg = config(sc.get("tied"))
    if sc["layout"] == "megatron":
        from safetensors.torch import load_file
        local = load_file(os.path.join(sc["megatron_dir"], f"model-rank-{rank}-part-0.safetensors"))
    else:
        local = shard_like_engine(hf, cfg, rank, world)
    m = sc.get("mutation", "clean")
    E = cfg["hidden_size"]
    H, KV = cfg["num_attention_heads"], cfg["num_key_value_heads"]
    D = E // H
    qkv = ("decoder.layers.0.self_attention.linear_qkv.weight" if sc["layout"] == "megatron"
           else "model.layers.0.self_attn.qkv_proj.weight")
    if m == "flip_k" and rank == sc["rank"]:
        if sc["layout"] == "megatron":
            # linear_qkv interleaves [q heads of group g ; k_g ; v_g]: group 0's k row
            q_per_group = H // KV
            flip_bit(local[qkv], (q_per_group * D + 2) * E + 5)
        else:
            flip_bit(local[qkv], ((H // world) * D + 2) * E + 5)
    elif m == "stale_replica" and rank == sc["rank"]:
        # this rank holds a replica of a kv head: its k and v rows keep an older step's values
        old = shard_like_engine(hf_state(cfg, seed=99), cfg, rank, world)
        q_rows = (H // world) * D
        local[qkv][q_rows:] = old[qkv][q_rows:]
    elif m == "missing" and rank == sc["rank"]:
        del local[sc["tensor"]]
    elif m == "padding" and rank == world - 1:
        emb = local["model.embed_tokens.weight"]
        emb[-1, 7] = 3.0  # the last local row is vocab padding on the last rank
    return local


def recipes(rank, world, cfg, hf):
    """The integration recipes of docs/integration.md, run against stand-ins of the engines:
    a Miles-style sync through SGLang's custom weight loaders, and vLLM's worker extension."""
    import miles_loop
    import sglang_weightsum
    from standin_engine import (StandinModel, StandinSGLangEngine, StandinVLLMWorker,
                                shard_like_engine)
    from vllm_weightsum import WeightsumExtension
    out = {}
    shapes = shard_like_engine(hf, cfg, rank, world)
    model = StandinModel({k: torch.zeros_like(v) for k, v in shapes.items()}, cfg, rank, world)
    engine = StandinSGLangEngine(model, ["sglang_weightsum.load_weights",
                                         "sglang_weightsum.check"])
    layers = {}
    for name, t in hf.items():
        key = name.split(".")[2] if name.startswith("model.layers.") else "other"
        layers.setdefault(key, []).append((name, t))
    m = miles_loop.sync_and_check(engine, layers.values())
    out["sglang_ok"] = sglang_weightsum.last_report.ok
    out["sglang_matched"] = sglang_weightsum.last_report.matched
    # a loader bug on rank 1: the next update lands gate where up belongs
    gu = dict(model.named_parameters())["model.layers.1.mlp.gate_up_proj.weight"]
    if rank == 1:
        with torch.no_grad():
            half = gu.shape[0] // 2
            gu[half:] = gu[:half].clone()
    ok, msg = engine.update_weights_from_tensor([sglang_weightsum.manifest_tensor(m)],
                                                load_format="sglang_weightsum.check")
    out["sglang_bad"] = [ok, msg]
    # vLLM: the worker extension through a stand-in worker (the same model, still broken)
    Worker = type("Worker", (StandinVLLMWorker, WeightsumExtension), {})
    w = Worker(model, cfg)
    out["vllm_bad"] = w.weightsum_verify(m.to_json())
    with torch.no_grad():
        gu.copy_(shard_like_engine(hf, cfg, rank, world)["model.layers.1.mlp.gate_up_proj.weight"])
    out["vllm_ok"] = w.weightsum_verify(m.to_json())
    return out


def run(rank, world, init_file, out_dir, scenarios):
    dist.init_process_group("gloo", init_method="file://" + init_file, rank=rank,
                            world_size=world)
    import weightsum.torch as wt
    out = []
    for sc in scenarios:
        cfg = config(sc.get("tied"))
        hf = hf_state(cfg)
        res = {"name": sc["id"]}
        if sc["kind"] == "engine":
            m = wt.Manifest(algo=sc["algo"])
            m.add_all(hf.items())
            chk = wt.EngineCheck(sc["layout"], rank, world, cfg, mode="log")
            local = engine_locals(sc, rank, world, hf)
            exp = None
            if sc.get("expect"):  # the engine-dialect answers too: the exact rank is named
                exp = wt.Manifest(algo="fast").expect(sc["layout"], world, cfg, device="cpu",
                                                      tensors=hf)
            rep = chk.verify(m, local, expected=exp)
            res["report"] = rep.to_dict()
            try:  # enforce raises, carrying the same report
                chk.verify(m, local, mode="enforce", expected=exp)
                res["enforce"] = "passed"
            except wt.WeightsCheckFailed as e:
                res["enforce"] = "raised" if e.report.findings else "raised-empty"
            res["off"] = chk.verify(m, local, mode="off") is None
        elif sc["kind"] == "megatron_manifest":
            from safetensors.torch import load_file
            shards = load_file(os.path.join(sc["megatron_dir"],
                                            f"model-rank-{rank}-part-0.safetensors"))
            mm = wt.megatron_manifest("megatron", cfg, rank, world, shards.items())
            ref = wt.Manifest(algo="fast")
            ref.add_all(hf.items())
            res["megatron"] = mm.to_dict()["tensors"]
            res["reference"] = ref.to_dict()["tensors"]
            res["bytes_moved"] = mm.bytes_moved
        elif sc["kind"] == "recipes":
            res.update(recipes(rank, world, cfg, hf))
        elif sc["kind"] == "merge_over":
            names = sorted(hf)
            part = wt.Manifest(algo="both", source=f"pp{rank}")
            for i, n in enumerate(names):
                if i % world == rank:
                    part.add(n, hf[n])
            merged = part.merge_over()
            full = wt.Manifest(algo="both")
            full.add_all(hf.items())
            res["equal"] = merged.to_dict()["tensors"] == full.to_dict()["tensors"]
        out.append(res)
        dist.barrier()
    with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as f:
        json.dump(out, f)
    dist.destroy_process_group()
