"""The CUDA backend library where CI runs (no GPU): when the build made
libweightsum_cuda.so (nvcc found), it exports only its table getter, loads through the core's
loader, answers its ABI, and every call on host memory (or with no GPU at all) fails with a
named error instead of crashing; without it, device views fail with WS_ERR_NOTFOUND naming
what was tried. Each case runs in a fresh process: the loader runs once per process."""
import os
import subprocess
import sys

import pytest

from conftest import ROOT

BUILD = os.path.dirname(os.environ.get("WEIGHTSUM_LIB", os.path.join(ROOT, "build", "libweightsum.so")))
CUDA_LIB = os.path.join(BUILD, "libweightsum_cuda.so")

PROBE = r"""
import ctypes, sys, numpy as np
from weightsum.cuda import Batch, device_memory, _Digest, _Stats, _Error
from weightsum._lib import lib
a = np.arange(10, dtype=np.float32)
b = Batch([a]); b._views['device'][0] = 0     # claim host memory is on CUDA device 0
out, st, err = (_Digest * 1)(), (_Stats * 1)(), _Error()
rc1 = lib.ws_digest_views(b.ptr, 1, 0, 1, None, None, 0, out, st, ctypes.byref(err))
w1 = err.what.decode()
rc2 = lib.ws_sglang_hash_views(b.ptr, 1, None, (ctypes.c_uint64 * 1)(), ctypes.byref(err))
w2 = err.what.decode()
print(rc1, rc2, device_memory() == (0, 0) if rc1 == 6 else "-", w1, "|", w2, sep="\n")
"""


def probe(env_lib):
    env = dict(os.environ, PYTHONPATH=os.path.join(ROOT, "python"),
               WEIGHTSUM_LIB=os.path.join(BUILD, "libweightsum.so"))
    env["WEIGHTSUM_CUDA_LIB"] = env_lib
    r = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, env=env,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    return r.stdout.splitlines()


@pytest.mark.skipif(not os.path.exists(CUDA_LIB), reason="built without nvcc")
def test_exports_only_the_table_getter():
    out = subprocess.run(["nm", "-D", "--defined-only", CUDA_LIB], capture_output=True,
                         text=True, check=True).stdout
    assert [l.split()[-1] for l in out.splitlines()] == ["ws_device_backend_v1"]


@pytest.mark.skipif(not os.path.exists(CUDA_LIB), reason="built without nvcc")
def test_loads_and_refuses_host_memory_by_name():
    rc1, rc2, mem, w1, _, w2 = probe(CUDA_LIB)
    # 6 = WS_ERR_ARG (the pointer is not device memory), 7 = WS_ERR_NOTFOUND (no GPU/driver)
    assert rc1 in ("6", "7") and rc2 in ("6", "7"), (rc1, rc2, w1, w2)
    assert "CUDA" in w1 and "CUDA" in w2


def test_absent_backend_is_notfound_naming_the_path():
    rc1, rc2, _, w1, _, w2 = probe("/nonexistent/libweightsum_cuda.so")
    assert rc1 == "7" and rc2 == "7"
    assert "/nonexistent/libweightsum_cuda.so" in w1 and "WEIGHTSUM_CUDA_LIB" in w1
