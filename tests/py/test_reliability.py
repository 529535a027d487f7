"""Issue 9, items 5-10: each test plants the fault a hostile user (or a broken engine) would,
and asserts weightsum catches it AND names it (tensor, digest, file). subprocess/socket
timeouts only bound a hang; nothing here is timed."""
import json
import os

import pytest

from test_layouts import config, make_model


def flip_hex(h):
    return ("1" if h[0] == "0" else "0") + h[1:]


def both_manifest(run, d):
    ckpt, _ = make_model(run, d, config("qwen2", 2))
    man = os.path.join(d, "both.json")
    assert run("hash", ckpt, "--algo", "both", "-o", man).returncode == 0
    return ckpt, man


# ---- item 6: a manifest that contradicts itself ----------------------------------------------

@pytest.mark.parametrize("wrong", ["fast", "sha256"])
def test_verify_checks_every_digest_a_manifest_holds(tmp_path, run, wrong):
    """Plants: a manifest holding both digests of model.norm.weight, one of them altered (the
    other right). Verify, of the checkpoint and of an SGLang TP=2 dump, must exit 1 naming the
    tensor and the digest that disagrees (before the fix only sha256 was checked)."""
    ckpt, man = both_manifest(run, tmp_path)
    m = json.load(open(man))
    e = m["tensors"]["model.norm.weight"]
    e[wrong] = flip_hex(e[wrong])
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(m))
    dump = tmp_path / "dump"
    assert run("shard", ckpt, "--layout", "sglang", "--tp", 2, "-o", dump).returncode == 0
    other = "sha256" if wrong == "fast" else "fast digest"
    for target in (ckpt, dump):
        r = run("verify", bad, target)
        assert r.returncode == 1, r.stdout + r.stderr
        bad_lines = [l for l in r.stdout.splitlines() if "mismatch" in l and ":" in l
                     and not l.startswith(str(target))]
        assert len(bad_lines) == 1 and bad_lines[0].startswith("model.norm.weight: mismatch"), \
            r.stdout
        assert (wrong if wrong == "sha256" else "fast digest") + " " + e[wrong] + " expected" \
            in bad_lines[0], bad_lines[0]
        assert "the " + other + " matches" in bad_lines[0], bad_lines[0]
        j = run("verify", bad, target, "--json")
        assert j.returncode == 1
        f = json.loads(j.stdout)["findings"]
        assert [x["tensor"] for x in f] == ["model.norm.weight"]
        assert f[0]["algorithm"] == wrong and f[0]["expected"] == e[wrong], f[0]
    # the unaltered manifest still verifies both ways (both digests computed and equal)
    for target in (ckpt, dump):
        assert run("verify", man, target).returncode == 0


def test_declared_algorithms_without_their_digests_and_unknown_version(tmp_path, run):
    """Plants: "algorithms": ["sha256", "fast"] over tensors holding only fast digests (every
    one of them right), and an unknown "version": both are bad input, exit 2 in one line
    naming the manifest, never a verdict."""
    ckpt, man = both_manifest(run, tmp_path)
    m = json.load(open(man))
    for e in m["tensors"].values():
        del e["sha256"]
    bad = tmp_path / "fast-only.json"
    bad.write_text(json.dumps(m))
    r = run("verify", bad, ckpt)
    assert r.returncode == 2 and r.stdout == "", r.stdout + r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "fast-only.json" in lines[0] and "declares" in lines[0], r.stderr
    m = json.load(open(man))
    m["version"] = 99
    bad = tmp_path / "v99.json"
    bad.write_text(json.dumps(m))
    r = run("verify", bad, ckpt)
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1 and "unknown manifest \"version\"" in lines[0], \
        r.stderr


# ---- item 10: hash's exit code 1 is in its help, its man page and the README ----------------

def test_hash_exit_1_on_a_stale_replica_is_documented(tmp_path, run):
    """Plants: rank 1's copy of the replicated model.norm.weight goes stale in an SGLang TP=2
    dump. hash prints every digest, names the stale replica and rank on stderr, exits 1; and
    its --help, docs/weightsum.1 and the README each say what exit 1 means for hash."""
    from test_layouts import flip1, mutate
    from conftest import ROOT
    ckpt, _ = make_model(run, tmp_path, config("qwen2", 2))
    dump = tmp_path / "dump"
    assert run("shard", ckpt, "--layout", "sglang", "--tp", 2, "-o", dump).returncode == 0
    mutate(dump, 1, lambda t: flip1(t, "model.norm.weight", 5))
    r = run("hash", dump)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "model.norm.weight: replica_mismatch [model.norm.weight on rank 1]" in r.stderr, \
        r.stderr
    assert len(r.stdout.splitlines()) == 1 + 27  # the header line, then every digest
    help_exit = run("hash", "--help").stdout.split("Exit:", 1)[1]
    assert "1 an engine dump with a finding (a stale replica" in help_exit, help_exit
    man = open(os.path.join(ROOT, "docs", "weightsum.1")).read()
    hash_part = man.split(".B hash \\fICKPT\\fR", 1)[1].split(".B verify \\fIMANIFEST", 1)[0]
    assert "1 when an engine dump has a finding (a stale replica" in hash_part
    readme = open(os.path.join(ROOT, "README.md")).read()
    row = [l for l in readme.splitlines() if l.startswith("| `weightsum hash CKPT")][0]
    assert "Exit 1 when a dump has a finding (a stale replica" in row
