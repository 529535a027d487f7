"""A stand-in for an inference engine's tensor-parallel loader, for the examples and tests
where SGLang or vLLM cannot be installed: from full HF tensors it builds what TP rank r of tp
holds after SGLang's / vLLM's weight loaders ran (written from their documented behaviour,
docs/layouts.md, not from their code):

  q_proj/k_proj/v_proj (+ biases) -> qkv_proj = [q_r ; k_r ; v_r] (q split by heads; k/v by kv
      heads, each kv head replicated on tp / num_kv_heads ranks when tp > num_kv_heads)
  gate_proj/up_proj               -> gate_up_proj = [gate_r ; up_r]
  o_proj, down_proj               -> split along dim 1
  embed_tokens, lm_head           -> vocab padded to a multiple of 64 with zero rows, split
                                     along dim 0; with tied embeddings no lm_head parameter
  norms                           -> replicated

`StandinModel(params)` has the named_parameters() / load_weights() surface the hooks use.
"""
from __future__ import annotations

from typing import Dict, Iterable, Iterator, Tuple

import torch


def _kv_shard(tp_rank: int, tp: int, kv_heads: int) -> Tuple[int, int]:
    """(first kv head, count) held by tp_rank."""
    if tp >= kv_heads:
        replicas = tp // kv_heads
        return tp_rank // replicas, 1
    per = kv_heads // tp
    return tp_rank * per, per


def shard_like_engine(hf: Dict[str, torch.Tensor], config: dict, tp_rank: int,
                      tp: int) -> Dict[str, torch.Tensor]:
    """The named local parameters of TP rank tp_rank (SGLang and vLLM name them alike)."""
    H = config["num_attention_heads"]
    KV = config.get("num_key_value_heads") or H
    D = config.get("head_dim") or config["hidden_size"] // H
    V = config["vocab_size"]
    tied = config.get("tie_word_embeddings", False)
    qh = H // tp
    k0, kn = _kv_shard(tp_rank, tp, KV)
    out: Dict[str, torch.Tensor] = {}
    padded = -(-V // 64) * 64
    per = padded // tp
    for name, t in hf.items():
        if name.endswith(("k_proj.weight", "v_proj.weight", "k_proj.bias", "v_proj.bias")):
            continue  # fused with q below
        if name.endswith(("up_proj.weight",)):
            continue  # fused with gate below
        if name.endswith(("q_proj.weight", "q_proj.bias")):
            base = name[: -len("q_proj.weight")] if name.endswith("weight") else \
                name[: -len("q_proj.bias")]
            kind = "weight" if name.endswith("weight") else "bias"
            q = t[tp_rank * qh * D:(tp_rank + 1) * qh * D]
            k = hf[f"{base}k_proj.{kind}"][k0 * D:(k0 + kn) * D]
            v = hf[f"{base}v_proj.{kind}"][k0 * D:(k0 + kn) * D]
            out[f"{base}qkv_proj.{kind}"] = torch.cat([q, k, v]).contiguous()
        elif name.endswith("gate_proj.weight"):
            base = name[: -len("gate_proj.weight")]
            inter = t.shape[0] // tp
            g = t[tp_rank * inter:(tp_rank + 1) * inter]
            u = hf[f"{base}up_proj.weight"][tp_rank * inter:(tp_rank + 1) * inter]
            out[f"{base}gate_up_proj.weight"] = torch.cat([g, u]).contiguous()
        elif name.endswith(("o_proj.weight", "down_proj.weight")):
            cols = t.shape[1] // tp
            out[name] = t[:, tp_rank * cols:(tp_rank + 1) * cols].contiguous()
        elif name.endswith(("embed_tokens.weight", "lm_head.weight")):
            if name == "lm_head.weight" and tied:
                continue
            full = torch.zeros((padded, t.shape[1]), dtype=t.dtype, device=t.device)
            full[:V] = t
            out[name] = full[tp_rank * per:(tp_rank + 1) * per].clone()
        else:
            out[name] = t.clone()  # norms, o_proj bias of models that have one: replicated
    return out


class StandinModel(torch.nn.Module):
    """Holds one rank's local parameters under the engine's names."""

    def __init__(self, params: Dict[str, torch.Tensor], config: dict, tp_rank: int,
                 tp: int) -> None:
        super().__init__()
        self.config, self.tp_rank, self.tp = config, tp_rank, tp
        self._names = list(params)
        for i, (name, t) in enumerate(params.items()):
            self.register_parameter(f"p{i}", torch.nn.Parameter(t, requires_grad=False))

    def named_parameters(self, *args, **kwargs) -> Iterator[Tuple[str, torch.nn.Parameter]]:
        for i, name in enumerate(self._names):
            yield name, getattr(self, f"p{i}")

    def load_weights(self, weights: Iterable[Tuple[str, torch.Tensor]]) -> None:
        """What an engine's load_weights does with full HF tensors (fused partners, q/k/v and
        gate/up, in the same call)."""
        local = shard_like_engine(dict(weights), self.config, self.tp_rank, self.tp)
        own = dict(self.named_parameters())
        with torch.no_grad():
            for name, t in local.items():
                own[name].copy_(t)


class StandinSGLangEngine:
    """SGLang's Engine.update_weights_from_tensor as one TP rank's scheduler runs it: a
    load_format listed in custom_weight_loader is imported and called as fn(model, tensors)
    (one instance per TP rank process; the real Engine fans the call out to every rank)."""

    def __init__(self, model: StandinModel, custom_weight_loader: Iterable[str]) -> None:
        self.model = model
        self.custom_weight_loader = list(custom_weight_loader)

    def update_weights_from_tensor(self, named_tensors, load_format=None):
        import importlib
        if load_format not in self.custom_weight_loader:
            raise NotImplementedError(f"Unknown load_format={load_format}")
        mod, fn = load_format.rsplit(".", 1)
        try:
            getattr(importlib.import_module(mod), fn)(self.model, list(named_tensors))
        except Exception as e:  # SGLang answers the request with success=False
            return False, f"{type(e).__name__}: {e}"
        return True, "Success"


class StandinVLLMWorker:
    """What a vLLM worker offers its extension: self.model_runner.model and .model_config."""

    class _Runner:
        def __init__(self, model, hf_config):
            self.model = model
            self.model_config = type("ModelConfig", (), {"hf_config": hf_config})()

    def __init__(self, model: StandinModel, hf_config: dict) -> None:
        self.model_runner = StandinVLLMWorker._Runner(model, hf_config)
