#!/usr/bin/env python3
"""Shards written by code we did not write: Hugging Face transformers' own tensor parallelism.

Run under torchrun with 2 processes (CPU/gloo here, or GPUs/NCCL):
  torchrun --nproc_per_node 2 tests/external/transformers_tp_dump.py SRC_DIR OUT_DIR
Loads SRC_DIR (a save_pretrained checkpoint) with from_pretrained(tp_plan="auto"); each rank
writes its local tensors (DTensor.to_local(), HF names) to OUT_DIR/model-rank-{rank}-part-0
.safetensors, the sharded_state naming weightsum reads, and its placements to
OUT_DIR/placements-rank-{rank}.json. Needs torch, transformers and accelerate.
"""
import json
import os
import sys

import torch
import torch.distributed as dist
from safetensors.torch import save_file
from transformers import AutoModelForCausalLM

src, out = sys.argv[1], sys.argv[2]
model = AutoModelForCausalLM.from_pretrained(src, tp_plan="auto", dtype=torch.float32)
rank = dist.get_rank()
tensors, placements = {}, {}
for name, p in model.state_dict().items():
    placements[name] = str(p.placements) if hasattr(p, "to_local") else "plain"
    t = p.to_local() if hasattr(p, "to_local") else p
    tensors[name] = t.detach().contiguous().cpu().clone()
os.makedirs(out, exist_ok=True)
save_file(tensors, os.path.join(out, f"model-rank-{rank}-part-0.safetensors"))
with open(os.path.join(out, f"placements-rank-{rank}.json"), "w") as f:
    json.dump({"torch": torch.__version__, "transformers": __import__("transformers").__version__,
               "world_size": dist.get_world_size(), "backend": dist.get_backend(),
               "tp_plan": {k: str(v) for k, v in (model._tp_plan or {}).items()},
               "placements": placements,
               "shapes": {k: list(v.shape) for k, v in tensors.items()}}, f, indent=1)
print(rank, "wrote", len(tensors), "tensors")
