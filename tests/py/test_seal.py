"""Fast digests bind the canonical dtype and shape (docs/fast-digest.md, "Sealing").

The raw fast digest adds nothing for zero units, so without the seal a tensor padded with
zeros, the same bytes under another shape, or the same bits under another dtype had the same
digest; line manifests and the HTTP object form carry no shape, so those all "matched". Each
test plants one such pair and asserts the check fails and names the tensor."""
import json
import os
import sys

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from conftest import ROOT, parse_lines
from test_http import Server, post
from test_layouts import config, make_model

RNG = np.random.default_rng(9)


def fast_lines(run, path, *extra):
    r = run("hash", path, "--algo", "fast", *extra)
    assert r.returncode == 0, r.stderr
    return r.stdout


def pair(tmp_path, a, b):
    """Two one-tensor checkpoints holding `w` as a and as b."""
    pa, pb = tmp_path / "a.safetensors", tmp_path / "b.safetensors"
    save_file({"w": a, "k": np.ones(3, np.float32)}, str(pa))
    save_file({"w": b, "k": np.ones(3, np.float32)}, str(pb))
    return pa, pb


CASES = {
    # a norm of 64 zero-extended to 128 (the zeros add nothing to the raw digest)
    "zero-extended": lambda a: (a[:64, 0].copy(), np.concatenate([a[:64, 0], np.zeros(64, a.dtype)])),
    # the same bytes as [100, 64] and [50, 128], and flat
    "reshaped": lambda a: (a, a.reshape(50, 128)),
    "flattened": lambda a: (a, a.reshape(-1)),
    # an extra dimension of 1
    "unsqueezed": lambda a: (a, a.reshape(1, 100, 64)),
    # an all-zero tensor of another length (raw digest 0 for both)
    "zeros": lambda a: (np.zeros(64, a.dtype), np.zeros(1000, a.dtype)),
    # empty tensors of different shapes
    "empty": lambda a: (np.zeros((0, 7), a.dtype), np.zeros((0,), a.dtype)),
}


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("canon", ["bf16", "native"])
def test_line_manifest_does_not_match_another_shape(tmp_path, run, case, canon):
    a, b = CASES[case](RNG.standard_normal((100, 64)).astype(np.float32))
    pa, pb = pair(tmp_path, a, b)
    lines = fast_lines(run, pa, "--canonical", canon)
    assert run("verify", "-", pa, "--canonical", canon, stdin=lines).returncode == 0
    r = run("verify", "-", pb, "--canonical", canon, stdin=lines)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "w: mismatch" in r.stdout and "k:" not in r.stdout
    # the digests themselves differ, whatever carries them
    assert parse_lines(lines)["w"] != parse_lines(fast_lines(run, pb, "--canonical", canon))["w"]


def test_same_bits_under_another_dtype(tmp_path, run):
    """Under --canonical native an I16 and an F16 tensor of the same bits are other tensors."""
    a = RNG.integers(-2000, 2000, (40, 8)).astype(np.int16)
    pa, pb = pair(tmp_path, a, a.view(np.float16))
    lines = fast_lines(run, pa, "--canonical", "native")
    r = run("verify", "-", pb, "--canonical", "native", stdin=lines)
    assert r.returncode == 1 and "w: mismatch" in r.stdout, r.stdout + r.stderr


def padded_vocab_dump(run, tmp_path):
    """The trainer's model (vocab 1000) and an engine dump of the same weights under a config
    that says vocab 1024: 24 extra rows of zeros in embed_tokens and lm_head."""
    ckpt, _ = make_model(run, tmp_path / "trainer", config("qwen2", 2))
    t = load_file(ckpt)
    for name in ("model.embed_tokens.weight", "lm_head.weight"):
        t[name] = np.concatenate([t[name], np.zeros((24, t[name].shape[1]), t[name].dtype)])
    eng = tmp_path / "engine"
    os.makedirs(eng)
    with open(eng / "config.json", "w") as f:
        json.dump(config("qwen2", 2, vocab=1024), f)
    save_file(t, str(eng / "model.safetensors"))
    dump = tmp_path / "dump"
    assert run("shard", eng / "model.safetensors", "--layout", "sglang", "--tp", 2,
               "-o", dump).returncode == 0
    return ckpt, dump


def test_engine_dump_with_another_vocab(tmp_path, run):
    ckpt, dump = padded_vocab_dump(run, tmp_path)
    lines = fast_lines(run, ckpt)
    r = run("verify", "-", dump, stdin=lines)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "model.embed_tokens.weight: mismatch" in r.stdout
    assert "lm_head.weight: mismatch" in r.stdout
    assert "model.norm.weight" not in r.stdout


def test_http_object_form_with_fast_digests(tmp_path, run, ws_bin):
    """compare_checksum's {HF name: hex} form carries no shapes either."""
    ckpt, dump = padded_vocab_dump(run, tmp_path)
    digests = parse_lines(fast_lines(run, ckpt))
    with Server(ws_bin, dump) as s:
        st, ans = post(s.port, {"action": "compare_checksum", "checksums": digests})
        assert st == 400 and ans["success"] is False, ans
        bad = {m["tensor"] for m in ans["mismatched"]}
        assert bad == {"model.embed_tokens.weight", "lm_head.weight"}, ans
        # the same request against a dump of the trainer's own vocab matches
    ckpt2, _ = make_model(run, tmp_path / "t2", config("qwen2", 2))
    d2 = tmp_path / "d2"
    assert run("shard", ckpt2, "--layout", "sglang", "--tp", 2, "-o", d2).returncode == 0
    with Server(ws_bin, d2) as s:
        st, ans = post(s.port, {"action": "compare_checksum",
                                "checksums": parse_lines(fast_lines(run, ckpt2))})
        assert st == 200 and ans["success"] is True, ans


def test_manifests_of_the_unsealed_digest_refused(tmp_path, run):
    """What an older weightsum wrote (fast lines with no header, version-1 JSON with fast
    digests) cannot be compared with sealed digests: exit 2 with one line, never a verdict."""
    a = RNG.standard_normal((10, 8)).astype(np.float32)
    pa, _ = pair(tmp_path, a, a)
    lines = fast_lines(run, pa)
    body = "".join(l for l in lines.splitlines(keepends=True) if not l.startswith("#"))
    r = run("verify", "-", pa, stdin=body)
    assert r.returncode == 2 and "older weightsum" in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    m = tmp_path / "m.json"
    assert run("hash", pa, "--algo", "fast", "-o", m).returncode == 0
    j = json.loads(m.read_text())
    assert j["version"] == 2
    j["version"] = 1
    m.write_text(json.dumps(j))
    r = run("verify", m, pa)
    assert r.returncode == 2 and "version-1" in r.stderr, r.stderr


def test_python_binding_seals_with_the_shape(tmp_path, run):
    sys.path.insert(0, os.path.join(ROOT, "python"))
    import weightsum
    a = RNG.standard_normal((100, 64)).astype(np.float32)
    save_file({"w": a}, str(tmp_path / "x.safetensors"))
    cli = parse_lines(fast_lines(run, tmp_path / "x.safetensors"))
    assert weightsum.fast_tensor(a) == cli["w"]
    assert weightsum.fast_tensor(a.reshape(50, 128)) != cli["w"]
    assert weightsum.fast_tensor(np.concatenate([a, np.zeros((1, 64), a.dtype)])) != cli["w"]
