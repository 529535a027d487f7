"""Worker of tests/py/test_partials_judge_gaps.py: one gloo process per rank, running
weightsum.torch.EngineCheck on scenarios that plant what the partials judge used to miss (low
bits the bf16 policy cannot see; a tied tensor saved under its alias). Writes OUT/rank{r}.json.
Kept out of the test module so that spawned processes import only this."""
import json
import logging
import os
import sys

import torch
import torch.distributed as dist

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import torch_dist_worker as W  # noqa: E402  (ROOT, config, hf_state, flip_bit on sys.path)

NORM = "model.norm.weight"
QKV = "model.layers.0.self_attn.qkv_proj.weight"
EMB = "model.embed_tokens.weight"


class _Caught(logging.Handler):
    def __init__(self):
        super().__init__()
        self.lines = []

    def emit(self, record):
        self.lines.append(record.getMessage())


def _loud(t, index):
    """Flip the exponent's top bit of one element: every policy sees it."""
    W.flip_bit(t, index, bit=8 * t.element_size() - 2)


def _locals(sc, rank, world, hf, cfg):
    from standin_engine import shard_like_engine
    local = shard_like_engine(hf, cfg, rank, world)
    if sc.get("low_bit") and rank == 1:
        W.flip_bit(local[NORM], 7, bit=0)  # the lowest mantissa bit of one F32 element
    if sc.get("loud") and rank == 1:
        _loud(local[QKV], 5)
    if sc.get("as_lm_head"):  # the tied tensor saved under its alias only
        local["lm_head.weight"] = local.pop(EMB)
        if rank == 1 and not sc.get("clean"):
            _loud(local["lm_head.weight"], 3 * cfg["hidden_size"] + 5)
    return local


def run(rank, world, init_file, out_dir, scenarios):
    dist.init_process_group("gloo", init_method="file://" + init_file, rank=rank,
                            world_size=world)
    import weightsum.torch as wt
    caught = _Caught()
    logging.getLogger("weightsum").addHandler(caught)
    out = []
    for sc in scenarios:
        cfg = W.config(sc.get("tied"))
        hf = W.hf_state(cfg, dtype=getattr(torch, sc.get("dtype", "bfloat16")))
        m = wt.Manifest(algo=sc["algo"], canonical=sc.get("canonical", "bf16"))
        m.add_all(hf.items())
        chk = wt.EngineCheck("sglang", rank, world, cfg, mode="log")
        local = _locals(sc, rank, world, hf, cfg)
        del caught.lines[:]
        rep = chk.verify(m, local)
        res = {"name": sc["id"], "report": rep.to_dict(), "logged": list(caught.lines)}
        try:
            chk.verify(m, local, mode="enforce")
            res["enforce"] = "passed"
        except wt.WeightsCheckFailed as e:
            res["enforce"] = str(e)
        out.append(res)
        dist.barrier()
    with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as f:
        json.dump(out, f)
    dist.destroy_process_group()
