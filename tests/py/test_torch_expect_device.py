"""Manifest.expect's device paths without a GPU: every engine answer (vLLM's SHA-256, SGLang's
CPU-path hash and gpu_tensor_hash) from tensors that weightsum.cuda describes as CUDA memory,
computed by the library's device dispatch through the host-run fake backend
(tests/c/fake_device_backend.c), equal to the host answers over dense, tied, fused,
padded-vocab and MoE layouts at TP 1, 2, 4; a flipped bit changes exactly its holders' answers;
0 bytes through host memory. The same cases run on CUDA tensors in
tests/gpu/test_torch_expect_cuda.py."""
import json
import os
import subprocess
import sys

import pytest

pytest.importorskip("torch")

from conftest import ROOT  # noqa: E402

GPU = os.path.join(ROOT, "tests", "gpu")
sys.path.insert(0, GPU)
BUILD = os.path.dirname(os.environ.get("WEIGHTSUM_LIB", os.path.join(ROOT, "build",
                                                                     "libweightsum.so")))
FAKE = os.path.join(BUILD, "fake_device_backend.so")

pytestmark = [pytest.mark.skipif(not os.path.exists(FAKE), reason="no fake backend built"),
              pytest.mark.skipif("asan" in os.environ.get("WEIGHTSUM_BIN", ""),
                                 reason="covered by the plain run (same library)")]


def test_expect_answers_through_the_fake_backend(tmp_path):
    import torch_expect_cases as C
    out = tmp_path / "expect_fake.json"
    env = dict(os.environ, WEIGHTSUM_CUDA_LIB=FAKE)
    subprocess.run([sys.executable, os.path.join(GPU, "torch_expect_cases.py"), "fake",
                    str(out)], check=True, env=env)
    C.judge(json.loads(out.read_text()))


def test_fake_run_can_fail(tmp_path):
    """The judge catches a device answer that differs from the host one, or a flipped bit
    that changes the wrong answers."""
    import torch_expect_cases as C
    good = {"device": "fake", "refusals": {}, "cases": [
        {"case": f"c{i}", "kinds": {"vllm-cuda": {"equal_host": True, "host_bytes": 0,
                                                  "answers": 3, "changed": [[0, "x"]],
                                                  "want_changed": [[0, "x"]]}}}
        for i in range(24)]}
    C.judge(good)
    for field, value in (("equal_host", False), ("host_bytes", 8), ("changed", [[1, "x"]]),
                         ("changed", [])):
        bad = json.loads(json.dumps(good))
        bad["cases"][5]["kinds"]["vllm-cuda"][field] = value
        with pytest.raises(AssertionError):
            C.judge(bad)
