"""A Miles / slime style loop: after each training step the trainer converts its weights to HF
tensors chunk by chunk (Miles' convert_to_hf), pushes each chunk to the engine, digests the
same chunks into a weightsum manifest, and finally asks the engine to check itself.

    for step in range(steps):
        train_step()
        sync_and_check(engine, convert_to_hf(model))   # raises if the engine holds wrong bytes

`engine` is anything with SGLang's Engine method update_weights_from_tensor(named_tensors,
load_format=...) (sglang.Engine, or Miles' engine wrapper); the check runs on every TP rank
through the custom loaders of examples/sglang_weightsum.py.
"""
from __future__ import annotations

from typing import Any, Iterable, List, Tuple

import torch

import sglang_weightsum
from weightsum.torch import Manifest


def sync_and_check(engine: Any, hf_chunks: Iterable[List[Tuple[str, torch.Tensor]]],
                   algo: str = "fast") -> Manifest:
    """Push every chunk, digest it on the way, then have the engine verify. Returns the
    manifest (save it beside the checkpoint to check an engine later)."""
    m = Manifest(algo=algo, host_copy=True)
    for chunk in hf_chunks:
        m.add_all(chunk)  # the trainer's view: full HF tensors, as sent
        engine.update_weights_from_tensor(chunk, load_format="sglang_weightsum.load_weights")
    engine.update_weights_from_tensor([sglang_weightsum.manifest_tensor(m)],
                                      load_format="sglang_weightsum.check")
    return m
