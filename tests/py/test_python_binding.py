"""The Python binding (python/weightsum, ctypes over libweightsum.so): Checker.handle answers
the weights_checker protocol as `weightsum serve` does, and sha256_tensor / fast_tensor equal
hashlib (and the CLI) on numpy arrays, ml_dtypes bfloat16/float8 included, and on torch tensors
when torch is installed. The library is $WEIGHTSUM_LIB, else build/libweightsum.so: the binding
loads the plain build even when the suite runs the ASan CLI."""
import hashlib
import json
import os
import subprocess
import sys

import ml_dtypes
import numpy as np
import pytest
from safetensors.numpy import save_file

from conftest import ROOT, parse_lines

sys.path.insert(0, os.path.join(ROOT, "python"))
import weightsum  # noqa: E402  (finds $WEIGHTSUM_LIB, else ROOT/build/libweightsum.so)

BF16 = ml_dtypes.bfloat16
CONFIG = {"model_type": "qwen3", "hidden_size": 64, "intermediate_size": 96,
          "num_hidden_layers": 2, "num_attention_heads": 8, "num_key_value_heads": 2,
          "vocab_size": 1000, "tie_word_embeddings": True, "head_dim": 8}


def sha(b):
    return hashlib.sha256(b).hexdigest()


def ref_bf16(a):
    """PyTorch's canonical bytes: floats to bf16 (wider than f32 through f32), RNE."""
    a = np.asarray(a)
    if a.dtype.kind == "f" or a.dtype in (BF16, ml_dtypes.float8_e4m3fn, ml_dtypes.float8_e5m2):
        a = a.astype(np.float32).astype(BF16)
    return np.ascontiguousarray(a).tobytes()


def test_library_located():
    want = os.environ.get("WEIGHTSUM_LIB") or os.path.join(ROOT, "build", "libweightsum.so")
    assert os.path.samefile(weightsum.library_path, want)
    assert weightsum.__version__


@pytest.fixture(scope="module")
def dump(tmp_path_factory, ws_bin):
    d = tmp_path_factory.mktemp("binding")
    (d / "config.json").write_text(json.dumps(CONFIG))
    for args in (["synth", d / "config.json", "-o", d / "m.safetensors", "--dtype", "bf16"],
                 ["hash", d / "m.safetensors", "-o", d / "man.json"],
                 ["shard", d / "m.safetensors", "--layout", "vllm", "--tp", 4, "-o", d / "tp4"]):
        r = subprocess.run([ws_bin, *map(str, args)], capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
    man = json.loads((d / "man.json").read_text())
    return d / "tp4", {k: v["sha256"] for k, v in man["tensors"].items()}


def test_checker_handle(dump, ws_bin):
    d, digests = dump
    with weightsum.Checker(str(d), "vllm", 4, config=str(d / "config.json")) as c:
        for body in ({"action": "compare_checksum", "checksums": digests},
                     json.dumps({"action": "compare_checksum", "checksums": digests}),
                     json.dumps({"action": "compare_checksum", "checksums": digests}).encode()):
            st, ans = c.handle(body)
            assert st == 200 and ans["success"] is True and ans["matched"] == len(digests), ans
        st, ans = c.handle({"action": "checksum", "algorithm": "sha256"})
        assert st == 200 and ans["tp"] == 4 and len(ans["ranks"]) == 4
        # the same answer as the CLI's hash of the dump
        r = subprocess.run([ws_bin, "hash", str(d)], capture_output=True, text=True)
        assert parse_lines(r.stdout) == \
            {k: v for k, v in ans["checksums"].items() if k in digests}
        # per-rank dicts back in
        st, ans = c.handle({"action": "compare_checksum",
                            "checksums": [x["checksums"] for x in ans["ranks"]]})
        assert st == 200, ans
        wrong = dict(digests, **{"model.norm.weight": "0" * 64})
        st, ans = c.handle({"action": "compare_checksum", "checksums": wrong})
        assert st == 400 and ans["mismatched"][0]["tensor"] == "model.norm.weight"
        assert ans["mismatched"][0]["ranks"] == [0, 1, 2, 3]  # replicated on every rank
        for body in (b"", b"{", "[]", {"action": "nope"}, {"action": "compare_checksum"}):
            st, ans = c.handle(body)
            assert st == 400 and ans["success"] is False and ans["message"]
        assert len(c.key_id) == 16
    with pytest.raises(ValueError):
        c.handle({"action": "checksum"})
    # layout and tp from the dump itself
    with weightsum.Checker(str(d)) as c:
        assert c.handle({"action": "checksum"})[0] == 200
    with pytest.raises(weightsum.WeightsumError) as e:
        weightsum.Checker(str(d / "nowhere"), "vllm", 4)
    assert e.value.code == "WS_ERR_IO"
    with pytest.raises(weightsum.WeightsumError):
        weightsum.Checker(str(d), "vllm", 3)  # 2 kv heads, 8 heads: tp 3 cannot shard


RNG = np.random.default_rng(7)
SPECIALS = np.array([0.0, -0.0, np.inf, -np.inf, 1e-45, -3e-39, 65504.0, 3.3895314e38,
                     1.0 + 2 ** -8, 1.0 + 3 * 2 ** -9], dtype=np.float32)


@pytest.mark.parametrize("dtype", [np.float32, np.float16, np.float64, BF16,
                                   ml_dtypes.float8_e4m3fn, ml_dtypes.float8_e5m2])
def test_sha256_floats(dtype):
    with np.errstate(over="ignore"):
        a = np.concatenate([RNG.standard_normal(1000).astype(np.float32) * 3, SPECIALS])
        a = a.astype(dtype) if dtype not in (ml_dtypes.float8_e4m3fn,) else \
            np.clip(a, -448, 448).astype(dtype)
    a = a.reshape(2, -1)
    assert weightsum.sha256_tensor(a) == sha(ref_bf16(a))
    assert weightsum.sha256_tensor(a, "native") == sha(a.tobytes())
    assert weightsum.sha256_tensor(a.T) == sha(ref_bf16(a.T))  # not contiguous: copied


@pytest.mark.parametrize("dtype", [np.int8, np.uint8, np.int16, np.uint16, np.int32, np.uint32,
                                   np.int64, np.uint64, np.bool_])
def test_sha256_integers_never_cast(dtype):
    a = (RNG.integers(0, 200, size=(3, 17)) % (2 if dtype == np.bool_ else 200)).astype(dtype)
    assert weightsum.sha256_tensor(a) == sha(a.tobytes()) == weightsum.sha256_tensor(a, "native")


def test_sha256_edge_shapes_and_byte_order():
    assert weightsum.sha256_tensor(np.zeros((0, 4), np.float32)) == sha(b"")
    assert weightsum.sha256_tensor(np.float32(1.5)) == sha(np.array(1.5, BF16).tobytes())
    a = RNG.standard_normal((4, 5)).astype(">f4")  # big-endian: hashed as little-endian
    assert weightsum.sha256_tensor(a) == sha(ref_bf16(a.astype("<f4")))
    assert weightsum.sha256_tensor(a, "native") == sha(a.astype("<f4").tobytes())
    # every NaN becomes 0x7FC0 (docs/canonical.md)
    nan = np.array([np.nan, -np.nan], np.float32)
    assert weightsum.sha256_tensor(nan) == sha(b"\xc0\x7f\xc0\x7f")
    with pytest.raises(TypeError):
        weightsum.sha256_tensor(np.zeros(3, np.complex64))
    with pytest.raises(ValueError):
        weightsum.sha256_tensor(np.zeros(3, np.float32), canonical="fp8")


def test_fast_digest_equals_the_cli(tmp_path, run):
    a = RNG.standard_normal((33, 70)).astype(np.float32)
    b = a.astype(BF16)
    save_file({"a": a, "b": b}, str(tmp_path / "x.safetensors"))
    for extra, key in (([], None), (["--key", "s3cret"], "s3cret")):
        r = run("hash", tmp_path / "x.safetensors", "--algo", "fast", *extra)
        assert r.returncode == 0, r.stderr
        cli = parse_lines(r.stdout)
        assert weightsum.fast_tensor(a, key=key) == cli["a"]
        assert weightsum.fast_tensor(b, key=key) == cli["b"]
    assert weightsum.fast_tensor(a) != weightsum.fast_tensor(a, "native")


def test_torch_tensors():
    torch = pytest.importorskip("torch")
    t = torch.randn(64, 48, dtype=torch.float32)
    want = sha(t.to(torch.bfloat16).contiguous().view(torch.uint8).numpy().tobytes())
    assert weightsum.sha256_tensor(t) == want
    assert weightsum.sha256_tensor(t.t()) == \
        sha(t.t().to(torch.bfloat16).contiguous().view(torch.uint8).numpy().tobytes())
    assert weightsum.sha256_tensor(t, "native") == sha(t.numpy().tobytes())
    h = t.to(torch.float16)
    assert weightsum.sha256_tensor(h) == \
        sha(h.to(torch.bfloat16).contiguous().view(torch.uint8).numpy().tobytes())
    b = t.to(torch.bfloat16).requires_grad_()
    assert weightsum.sha256_tensor(b) == want
    i = torch.arange(100, dtype=torch.int64)
    assert weightsum.sha256_tensor(i) == sha(i.numpy().tobytes())
    if torch.cuda.is_available():
        assert weightsum.sha256_tensor(t.cuda()) == want
