"""The CLI's contract: exit codes, malformed inputs (tests/malformed/*), planted corruptions,
output forms."""
import json
import os

import numpy as np
import pytest
from safetensors.numpy import save_file

from conftest import ROOT, parse_lines

MALFORMED = os.path.join(ROOT, "tests", "malformed")
CASES = sorted(d for d in os.listdir(MALFORMED) if os.path.isdir(os.path.join(MALFORMED, d)))


@pytest.mark.parametrize("case", CASES)
def test_malformed_input(run, case):
    d = os.path.join(MALFORMED, case)
    code, text = open(os.path.join(d, "expected")).read().splitlines()[:2]
    target = os.path.join(d, "input.safetensors")
    if not os.path.exists(target):
        target = d
    r = run("hash", target)
    assert r.returncode == int(code)
    assert r.stdout == ""
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("weightsum: "), r.stderr
    assert text in lines[0], lines[0]


def model(tmp_path):
    rng = np.random.default_rng(7)
    t = {"a.weight": rng.standard_normal((16, 8)).astype(np.float32),
         "b.weight": rng.standard_normal((4, 3, 2)).astype(np.float32),
         "c.bias": rng.standard_normal(5).astype(np.float32)}
    p = tmp_path / "model.safetensors"
    save_file(t, str(p))
    return t, p


def test_verify_bit_flip_and_diff(tmp_path, run):
    t, p = model(tmp_path)
    m = tmp_path / "manifest.json"
    assert run("hash", p, "-o", m).returncode == 0
    doc = json.loads(m.read_text())
    assert doc["canonical"] == "bf16" and doc["algorithms"] == ["sha256"]
    assert doc["tensors"]["b.weight"]["shape"] == [4, 3, 2]
    assert run("verify", m, p).returncode == 0
    bad = dict(t)
    bad["b.weight"] = t["b.weight"].copy()
    raw = bad["b.weight"].view(np.uint32)
    raw[2, 1, 0] ^= 1 << 30  # an exponent bit: survives the bf16 cast
    q = tmp_path / "bad.safetensors"
    save_file(bad, str(q))
    r = run("verify", m, q)
    assert r.returncode == 1
    assert "b.weight: mismatch" in r.stdout and "a.weight" not in r.stdout
    assert "2 matched, 1 mismatch -> FAILED" in r.stdout
    r = run("verify", m, q, "--json")
    rep = json.loads(r.stdout)
    assert rep["ok"] is False and rep["findings"][0]["tensor"] == "b.weight"
    assert run("verify", m, q, "--status").stdout == ""
    r = run("verify", m, q, "--quiet")  # failures only, no summary
    assert r.stdout.startswith("b.weight: mismatch") and len(r.stdout.splitlines()) == 1
    r = run("diff", p, q)
    assert r.returncode == 1
    # flat index 14 = coordinates [2, 1, 0]
    assert "b.weight: mismatch: 1 of 24 elements differ; first at 14 [2, 1, 0]" in r.stdout
    assert run("diff", p, p).returncode == 0


def test_low_bits_need_native(tmp_path, run):
    """bf16 canonical form drops the 16 low bits of an f32; --canonical native sees them."""
    t, p = model(tmp_path)
    bad = dict(t)
    bad["a.weight"] = t["a.weight"].copy()
    bad["a.weight"].view(np.uint32)[0, 0] ^= 1
    q = tmp_path / "low.safetensors"
    save_file(bad, str(q))
    for policy, code in (("bf16", 0), ("native", 1)):
        m = tmp_path / f"{policy}.json"
        assert run("hash", p, "-o", m, "--canonical", policy).returncode == 0
        assert run("verify", m, q).returncode == code


def test_missing_unexpected_shape(tmp_path, run):
    t, p = model(tmp_path)
    m = tmp_path / "m.json"
    run("hash", p, "-o", m)
    other = {"a.weight": t["a.weight"], "b.weight": t["b.weight"].reshape(4, 6),
             "extra": np.zeros(2, np.float32)}
    q = tmp_path / "o.safetensors"
    save_file(other, str(q))
    r = run("verify", m, q)
    assert r.returncode == 1
    assert "c.bias: missing" in r.stdout
    assert "extra: unexpected" in r.stdout
    assert "b.weight: shape: shape [4, 3, 2] expected, [4, 6] found" in r.stdout


def test_line_manifest_from_stdin_and_sha256sum_shape(tmp_path, run):
    _, p = model(tmp_path)
    lines = run("hash", p).stdout
    head, *body = lines.splitlines(keepends=True)
    assert head == "# weightsum-manifest 2 canonical=bf16\n"
    assert all(len(l.split("  ")[0]) == 64 for l in body)
    r = run("verify", "-", p, stdin=lines)
    assert r.returncode == 0, r.stderr
    r = run("verify", "-", p, stdin=head + "0000" + "".join(body)[4:])
    assert r.returncode == 1


def test_usage_errors(run, tmp_path):
    assert run().returncode == 2
    assert run("nope").returncode == 2
    assert run("hash").returncode == 2
    assert run("hash", "x", "-j", "zero").returncode == 2
    assert run("hash", "x", "--canonical", "fp4").returncode == 2
    assert run("hash", tmp_path / "absent.safetensors").returncode == 2
    for cmd in ("hash", "verify", "diff", "demo"):
        r = run(cmd, "--help")
        assert r.returncode == 0 and r.stdout.startswith("usage: weightsum " + cmd)
    bad = tmp_path / "bad.json"
    bad.write_text("{ not json")
    r = run("verify", bad, tmp_path)
    assert r.returncode == 2 and "invalid JSON" in r.stderr


def test_empty_manifest_is_trouble_not_a_match(tmp_path, run):
    """Nothing to check proves nothing: an empty (or truncated-to-nothing) manifest is exit 2."""
    _, p = model(tmp_path)
    empty = tmp_path / "empty.sha256"
    empty.write_text("")
    r = run("verify", empty, p)
    assert r.returncode == 2 and "not a manifest" in r.stderr
    j = tmp_path / "empty.json"
    j.write_text('{"format": "weightsum-manifest", "tensors": {}}')
    r = run("verify", j, p)
    assert r.returncode == 2 and "lists no tensors" in r.stderr


def test_output_is_atomic_and_complete(tmp_path, run):
    _, p = model(tmp_path)
    m = tmp_path / "m.json"
    assert run("hash", p, "-o", m).returncode == 0
    assert json.loads(m.read_text())["format"] == "weightsum-manifest"
    assert [f.name for f in tmp_path.iterdir() if ".tmp." in f.name] == []
    # failure leaves no partial output
    m2 = tmp_path / "m2.json"
    assert run("hash", tmp_path / "absent", "-o", m2).returncode == 2
    assert not m2.exists()


def test_demo(run, tmp_path):
    r = run("demo", "--dir", tmp_path / "demo")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "demo OK" in r.stdout


def test_demo_cleans_up_after_itself(run, tmp_path, monkeypatch):
    """Without --dir the demo works in a new directory under $TMPDIR and removes it at the end,
    saying so; --keep leaves it, named."""
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    r = run("demo")
    assert r.returncode == 0 and "demo OK" in r.stdout, r.stdout + r.stderr
    assert list(tmp_path.iterdir()) == [], list(tmp_path.iterdir())
    assert f"in {tmp_path}/weightsum-demo-" in r.stdout and "are removed" in r.stdout
    r = run("demo", "--keep")
    assert r.returncode == 0, r.stdout + r.stderr
    (kept,) = tmp_path.iterdir()
    assert f"(the demo's files are in {kept})" in r.stdout
    assert (kept / "manifest.json").is_file() and (kept / "sglang-tp2-corrupted").is_dir()
