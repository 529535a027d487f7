"""weightsum.torch's device paths without a GPU: the trainer's Manifest, expect(), the
Megatron-native manifest and the engine checks (fast, SHA-256, per-rank checksum answers) on
tensors that weightsum.cuda describes as CUDA memory, read by the host-run fake backend
(tests/c/fake_device_backend.c) through the library's device dispatch: equal to the host paths,
nothing copied to the host, planted faults caught and named (2 gloo ranks). The same worker runs
on real CUDA tensors in tests/gpu/test_torch_cuda.py."""
import os
import sys

import pytest

torch = pytest.importorskip("torch")

from conftest import ROOT  # noqa: E402

sys.path.insert(0, os.path.join(ROOT, "tests", "gpu"))
BUILD = os.path.dirname(os.environ.get("WEIGHTSUM_LIB", os.path.join(ROOT, "build",
                                                                     "libweightsum.so")))
FAKE = os.path.join(BUILD, "fake_device_backend.so")

pytestmark = [pytest.mark.skipif(not os.path.exists(FAKE), reason="no fake backend built"),
              pytest.mark.skipif("asan" in os.environ.get("WEIGHTSUM_BIN", ""),
                                 reason="covered by the plain run (same library)")]


def test_device_paths_through_the_fake_backend(tmp_path, monkeypatch):
    monkeypatch.setenv("WEIGHTSUM_CUDA_LIB", FAKE)  # the spawned ranks load it
    import torch_cuda_worker as T
    T.judge(T.spawn(tmp_path, 2, "fake"), 2)
