"""SGLang: check every weight update inside the engine's own TP processes.

Two custom weight loaders (SGLang calls `fn(model, named_tensors)` on every TP rank for an
`update_weights_from_tensor(..., load_format="module.fn")` whose load_format is listed in
`--custom-weight-loader`; see ModelRunner.update_weights_from_tensor in SGLang 0.5.x):

  load_weights(model, named_tensors)  loads as SGLang's default path does (model.load_weights)
  check(model, named_tensors)         named_tensors = [("weightsum.manifest", bytes as uint8)]:
                                      EngineCheck("sglang", ...).verify over SGLang's TP group

    python -m sglang.launch_server --model-path Qwen/Qwen2.5-3B --tp 2 \
        --custom-weight-loader sglang_weightsum.load_weights sglang_weightsum.check
    engine = sglang.Engine(model_path=..., tp_size=2, custom_weight_loader=[
        "sglang_weightsum.load_weights", "sglang_weightsum.check"])
    engine.update_weights_from_tensor(named_tensors, load_format="sglang_weightsum.load_weights")
    engine.update_weights_from_tensor([manifest_tensor(manifest)],
                                      load_format="sglang_weightsum.check")

In enforce mode a failed check raises inside the loader: SGLang answers the update with
success=False and the report's text, so the trainer sees which tensor and rank went wrong.
WEIGHTSUM_MODE=off|log|enforce chooses the mode (default enforce).
"""
from __future__ import annotations

import os
from typing import Any, Dict, List, Tuple

import torch

MANIFEST = "weightsum.manifest"
_checks: Dict[int, Any] = {}
last_report = None


def manifest_tensor(manifest: Any) -> Tuple[str, torch.Tensor]:
    """The (name, tensor) pair that carries a manifest through update_weights_from_tensor."""
    text = manifest.to_json() if hasattr(manifest, "to_json") else str(manifest)
    return MANIFEST, torch.frombuffer(bytearray(text.encode()), dtype=torch.uint8)


def _tp() -> Tuple[int, int, Any]:
    """(tp_rank, tp_size, gloo group) of this TP rank: SGLang's TP group, or the default group
    where SGLang is not installed (the stand-in of the tests)."""
    try:
        from sglang.srt.distributed import get_tp_group
        g = get_tp_group()
        return g.rank_in_group, g.world_size, g.cpu_group
    except ImportError:
        import torch.distributed as dist
        return dist.get_rank(), dist.get_world_size(), None


def load_weights(model: torch.nn.Module, named_tensors: List[Tuple[str, torch.Tensor]]) -> None:
    model.load_weights(named_tensors)


def check(model: torch.nn.Module, named_tensors: List[Tuple[str, torch.Tensor]]) -> None:
    global last_report
    from weightsum.torch import EngineCheck
    text = None
    for name, t in named_tensors:
        if name == MANIFEST:
            t = t.detach().cpu().contiguous()
            text = bytes(t.view(torch.uint8).tolist())
    if text is None:
        raise ValueError(f"sglang_weightsum.check: no '{MANIFEST}' tensor in the request")
    chk = _checks.get(id(model))
    if chk is None:
        tp_rank, tp_size, group = _tp()
        cfg = model.config.to_dict() if hasattr(model.config, "to_dict") else model.config
        chk = EngineCheck("sglang", tp_rank, tp_size, cfg, group=group,
                          mode=os.environ.get("WEIGHTSUM_MODE", "enforce"))
        _checks[id(model)] = chk
    last_report = chk.verify(text, model.named_parameters())
