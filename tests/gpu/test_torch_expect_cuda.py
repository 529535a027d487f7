"""Manifest.expect from CUDA tensors for every engine answer (run on the H200; skipped without
CUDA): vLLM's SHA-256 and SGLang's CPU-path answers streamed from the GPU through the CUDA
backend's SHA-256 pipeline, and SGLang's gpu_tensor_hash, equal to the host answers bit for bit
over dense, tied, fused, padded-vocab and MoE layouts at TP 1, 2, 4; a flipped bit changes
exactly its holders' answers; 0 bytes through host memory (tests/gpu/torch_expect_cases.py)."""
import json
import os
import subprocess
import sys

import pytest
import torch

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import torch_expect_cases as C  # noqa: E402


def test_expect_answers_from_cuda_tensors(tmp_path):
    out = tmp_path / "expect_cuda.json"
    args = [sys.executable, os.path.join(HERE, "torch_expect_cases.py"), "cuda", str(out)]
    if os.environ.get("WS_EXPECT_BENCH"):
        args.append("--bench")
    subprocess.run(args, check=True)
    res = json.loads(out.read_text())
    keep = os.environ.get("WS_EXPECT_OUT")  # the device call keeps the raw results
    if keep:
        with open(keep, "w") as f:
            json.dump(res, f, indent=1)
    C.judge(res)
