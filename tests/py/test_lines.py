"""Line manifests behave as checksum tools' do (issue 14) and round-trip (issue 9 item 10):
the header comment records the policy and key, BSD --tag lines, one space, escaped names,
--algo both, and sha256sum's whole-file digests refused. Each test plants the case and
asserts the exact verdict."""
import hashlib
import subprocess

import numpy as np
import pytest
from safetensors.numpy import save_file

from conftest import parse_lines

RNG = np.random.default_rng(14)
ODD = ["plain.weight", "new\nline.weight", "back\\slash.weight", "both\\\nodd", "sp ace"]


def model(tmp_path, names=ODD):
    p = tmp_path / "m.safetensors"
    save_file({n: RNG.standard_normal((4, 3)).astype(np.float32) for n in names}, str(p))
    return p


def corrupt(tmp_path, names, bad):
    """A copy with tensor `bad` changed in one element."""
    from safetensors.numpy import load_file
    t = load_file(str(tmp_path / "m.safetensors"))
    t[bad] = t[bad].copy()
    t[bad][1, 1] += 1.0
    p = tmp_path / "bad.safetensors"
    save_file(t, str(p))
    return p


@pytest.mark.parametrize("tag", [[], ["--tag"]])
@pytest.mark.parametrize("algo", ["sha256", "fast", "both"])
def test_names_round_trip_and_each_digest_is_checked(tmp_path, run, tag, algo):
    p = model(tmp_path)
    r = run("hash", p, "--algo", algo, *tag)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].startswith("# weightsum-manifest 2 canonical=bf16")
    assert ("key_id=355a469159f36be0" in lines[0]) == (algo != "sha256")
    assert len(lines) == 1 + len(ODD) * (2 if algo == "both" else 1)
    assert all("\n" not in l for l in lines)
    assert sum(l.startswith("\\") for l in lines) == 3 * (2 if algo == "both" else 1)
    if tag:
        assert all(l.startswith(("SHA256 (", "FAST (", "\\SHA256 (", "\\FAST (")) for l in lines[1:])
    v = run("verify", "-", p, stdin=r.stdout)
    assert v.returncode == 0, v.stdout + v.stderr
    assert f"{len(ODD)} matched" in v.stdout
    # a changed tensor with an escaped name is caught and named
    v = run("verify", "-", corrupt(tmp_path, ODD, "back\\slash.weight"), stdin=r.stdout)
    assert v.returncode == 1 and "back\\slash.weight: mismatch" in v.stdout, v.stdout


def test_one_space_and_binary_marker_accepted(tmp_path, run):
    p = model(tmp_path, ["a", "b", "c"])
    d = parse_lines(run("hash", p).stdout)
    text = f"{d['a']} a\n{d['b']} *b\n{d['c']}  c\n"
    r = run("verify", "-", p, stdin=text)
    assert r.returncode == 0 and "3 matched" in r.stdout, r.stdout + r.stderr


def test_whole_file_sha256sum_refused(tmp_path, run):
    p = model(tmp_path, ["a"])
    for text in (subprocess.run(["sha256sum", str(p)], capture_output=True, text=True,
                                check=True).stdout,
                 subprocess.run(["sha256sum", "--tag", str(p)], capture_output=True, text=True,
                                check=True).stdout):
        r = run("verify", "-", p, stdin=text)
        assert r.returncode == 2 and "these are whole-file digests" in r.stderr, r.stderr
        assert len(r.stderr.strip().splitlines()) == 1 and r.stdout == ""


def test_header_says_which_policy_and_key_to_use(tmp_path, run):
    p = model(tmp_path, ["a", "b"])
    native = run("hash", p, "--canonical", "native").stdout
    # the header carries the policy: no flag needed, and a contradicting flag names the right one
    assert run("verify", "-", p, stdin=native).returncode == 0
    r = run("verify", "-", p, "--canonical", "bf16", stdin=native)
    assert r.returncode == 2 and "use --canonical native" in r.stderr, r.stderr
    keyed = run("hash", p, "--algo", "fast", "--key", "s3cret").stdout
    assert run("verify", "-", p, "--key", "s3cret", stdin=keyed).returncode == 0
    r = run("verify", "-", p, stdin=keyed)
    assert r.returncode == 2 and "key" in r.stderr and "--key" in r.stderr, r.stderr
    # without the header (sha256 lines of another tool), the flag decides, as before
    body = "".join(l for l in native.splitlines(keepends=True) if not l.startswith("#"))
    assert run("verify", "-", p, "--canonical", "native", stdin=body).returncode == 0
    assert run("verify", "-", p, stdin=body).returncode == 1


def test_unknown_header_version_refused(tmp_path, run):
    p = model(tmp_path, ["a"])
    text = run("hash", p).stdout.replace("manifest 2", "manifest 3", 1)
    r = run("verify", "-", p, stdin=text)
    assert r.returncode == 2 and "unknown manifest version" in r.stderr, r.stderr
