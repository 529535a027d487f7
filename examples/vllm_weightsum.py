"""vLLM: a worker extension whose method every worker runs through collective_rpc.

    llm = vllm.LLM(model="Qwen/Qwen2.5-3B", tensor_parallel_size=2,
                   worker_extension_cls="vllm_weightsum.WeightsumExtension")
    ...   # the weight update (llm.collective_rpc("update_weights", ...) or the RLHF recipe's)
    reports = llm.collective_rpc("weightsum_verify", args=(manifest.to_json(),))
    assert all(r["ok"] for r in reports), reports[0]

collective_rpc calls the method on every worker and returns one result per worker; every
worker gets the same report (the findings name tensor, engine tensor, rank and rows). The
extension reads the worker's model (self.model_runner.model), its HF config and vLLM's TP
group (vllm.distributed.get_tp_group: rank_in_group, world_size, cpu_group).
"""
from __future__ import annotations

from typing import Any, Dict, Tuple


def _tp() -> Tuple[int, int, Any]:
    try:
        from vllm.distributed import get_tp_group
        g = get_tp_group()
        return g.rank_in_group, g.world_size, g.cpu_group
    except ImportError:  # the stand-in of the tests: the default group is the TP group
        import torch.distributed as dist
        return dist.get_rank(), dist.get_world_size(), None


class WeightsumExtension:
    """Mixed into vLLM's worker class (worker_extension_cls): self.model_runner is there."""

    def weightsum_verify(self, manifest_json: str, mode: str = "log") -> Dict[str, Any]:
        from weightsum.torch import EngineCheck
        chk = getattr(self, "_weightsum_check", None)
        if chk is None:
            tp_rank, tp_size, group = _tp()
            hf_config = self.model_runner.model_config.hf_config
            cfg = hf_config.to_dict() if hasattr(hf_config, "to_dict") else hf_config
            chk = EngineCheck("vllm", tp_rank, tp_size, cfg, group=group, mode=mode)
            self._weightsum_check = chk
        rep = chk.verify(manifest_json, self.model_runner.model.named_parameters(), mode=mode)
        return rep.to_dict() if rep is not None else {"ok": None, "skipped": True}
