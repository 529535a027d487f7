"""`pip install ./python` in a fresh virtual environment gives a package that imports on its own:
the wheel carries libweightsum.so and the weightsum CLI (built by the project's CMake through
scikit-build-core, fetched from PyPI as the build dependency), `python -m weightsum` and the
`weightsum` console script run that CLI, and weightsum.torch (torch optional) says what it
needs when torch is absent. The venv
sees nothing of this checkout: the test runs from an empty directory with WEIGHTSUM_LIB and
WEIGHTSUM_BIN unset."""
import hashlib
import json
import os
import struct
import subprocess
import sys

import pytest

from conftest import ROOT


def _safetensors(path, name, values):
    """A one-tensor F32 safetensors file, written by hand (the venv has no numpy)."""
    data = struct.pack(f"<{len(values)}f", *values)
    header = json.dumps({name: {"dtype": "F32", "shape": [len(values)],
                                "data_offsets": [0, len(data)]}}).encode()
    header += b" " * (-len(header) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(header)) + header + data)
    return data


# scripts/test.sh runs the suite twice (ASan CLI, plain CLI); the wheel builds its own
# library either way, so the install is tested once, in the plain run
pytestmark = pytest.mark.skipif("asan" in os.environ.get("WEIGHTSUM_BIN", ""),
                                reason="covered by the plain run (the wheel builds its own)")


@pytest.fixture(scope="module")
def venv(tmp_path_factory):
    d = tmp_path_factory.mktemp("venv")
    env = {k: v for k, v in os.environ.items()
           if k not in ("WEIGHTSUM_LIB", "WEIGHTSUM_BIN", "PYTHONPATH")}
    env["CMAKE_BUILD_PARALLEL_LEVEL"] = "2"
    # packaging is under test, not the CUDA backend (tests/py/test_cuda_lib.py): no nvcc pass
    env["SKBUILD_CMAKE_ARGS"] = "-DWS_CUDA=OFF"
    subprocess.run([sys.executable, "-m", "venv", str(d / "env")], check=True, env=env)
    py = str(d / "env" / "bin" / "python")
    r = subprocess.run([py, "-m", "pip", "install", "-q", "--disable-pip-version-check",
                        os.path.join(ROOT, "python")], capture_output=True, text=True, env=env,
                       cwd=str(d), timeout=900)
    assert r.returncode == 0, r.stdout + r.stderr
    return py, d / "env", env, d


def test_imports_from_the_venv_with_its_own_library(venv):
    py, prefix, env, cwd = venv
    r = subprocess.run([py, "-c", "import json, weightsum; print(json.dumps("
                        "[weightsum.library_path, weightsum.__version__, weightsum.__file__]))"],
                       capture_output=True, text=True, env=env, cwd=str(cwd))
    assert r.returncode == 0, r.stderr
    lib, version, init = json.loads(r.stdout)
    assert os.path.realpath(lib).startswith(os.path.realpath(str(prefix)))
    assert os.path.realpath(init).startswith(os.path.realpath(str(prefix)))
    assert version == "0.2.0"
    pkg = os.path.dirname(init)
    assert os.path.exists(os.path.join(pkg, "py.typed"))
    # torch is optional: without it weightsum.torch says what it needs
    r = subprocess.run([py, "-c", "import weightsum.torch"], capture_output=True, text=True,
                       env=env, cwd=str(cwd))
    assert r.returncode != 0 and "weightsum.torch needs PyTorch" in r.stderr


def test_python_m_weightsum_runs_the_packaged_cli(venv, ws_bin):
    py, prefix, env, cwd = venv
    path = str(cwd / "one.safetensors")
    data = _safetensors(path, "w", [1.0, -2.5, 3.25, 1e-3])
    r = subprocess.run([py, "-m", "weightsum", "hash", "--canonical", "native", path],
                       capture_output=True, text=True, env=env, cwd=str(cwd))
    assert r.returncode == 0, r.stderr
    head, line = r.stdout.splitlines()  # the '# weightsum-manifest' header, then the digest
    assert head.startswith("# weightsum-manifest 2 canonical=native")
    assert line.split() == [hashlib.sha256(data).hexdigest(), "w"]
    # the console script is the same CLI; a bad argument is trouble (2), as for the C binary
    script = str(prefix / "bin" / "weightsum")
    r2 = subprocess.run([script, "hash", "--canonical", "native", path], capture_output=True,
                        text=True, env=env, cwd=str(cwd))
    assert r2.returncode == 0 and r2.stdout == r.stdout
    r3 = subprocess.run([py, "-m", "weightsum", "hash", str(cwd / "absent.safetensors")],
                        capture_output=True, text=True, env=env, cwd=str(cwd))
    assert r3.returncode == 2 and "absent.safetensors" in r3.stderr
