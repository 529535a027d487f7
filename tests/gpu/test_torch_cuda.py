"""weightsum.torch on CUDA tensors (run on the H200; skipped without CUDA): gloo ranks sharing
one GPU (NCCL refuses two ranks on one GPU), every tensor on the GPU. The trainer's Manifest
digests CUDA tensors in place (equal to the host digests, 0 bytes through host memory; a bit
flipped in one tensor changes that tensor's entry only); expect() computes every rank's SGLang
answers on the GPU; the Megatron-native manifest of CUDA shards equals the HF one (a flipped
bit in rank 1's linear_fc2 shard is named as down_proj); the engine checks (fast, SHA-256, and
the per-rank checksum answers from CUDA tensors) catch a flipped k element on rank 1, padding
garbage on the last rank and (4 ranks) a stale kv replica on rank 1, naming rank and tensor."""
import os
import sys

import pytest
import torch

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import torch_cuda_worker as T  # noqa: E402


@pytest.mark.parametrize("world", [2, 4])
def test_torch_hooks_on_cuda_tensors(tmp_path, world):
    T.judge(T.spawn(tmp_path, world, "cuda"), world)
