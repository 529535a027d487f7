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


# ---- item 9: name the tensor that was read ---------------------------------------------------

def tied_dump(run, d):
    """A tied Qwen2 (vocab 1000) and its SGLang TP=2 dump; returns ckpt, manifest, dump."""
    ckpt, man = make_model(run, d, config("qwen2", 2, tied=True))
    dump = d / "dump"
    assert run("shard", ckpt, "--layout", "sglang", "--tp", 2, "-o", dump).returncode == 0
    return ckpt, man, dump


def rewrite(dump, rank, fn):
    from safetensors.numpy import load_file, save_file
    p = dump / f"model-rank-{rank}-part-0.safetensors"
    t = load_file(str(p))
    fn(t)
    save_file(t, str(p))


@pytest.mark.parametrize("algo", ["sha256", "fast"])
def test_tied_model_names_the_tensor_read(tmp_path, run, algo):
    """Plants: a tied model's dump that holds the embedding as lm_head.weight only (as an
    engine's state_dict may), one element of rank 1's copy flipped. The mismatch line must name
    lm_head.weight (the tensor read) as the holder, and its digest as "found" must be the
    digest of exactly those bytes (rebuilt here by numpy and hashed as a plain checkpoint)."""
    import numpy as np
    from safetensors.numpy import load_file, save_file
    ckpt, man, dump = tied_dump(run, tmp_path)
    if algo == "fast":
        man = tmp_path / "fast.json"
        assert run("hash", ckpt, "--algo", "fast", "-o", man).returncode == 0
    emb = "model.embed_tokens.weight"

    def as_lm_head(t, flip=False):
        a = t.pop(emb).copy()
        if flip:
            a.view(np.uint32)[3, 5] ^= np.uint32(1 << 30)
        t["lm_head.weight"] = a
    rewrite(dump, 0, as_lm_head)
    rewrite(dump, 1, lambda t: as_lm_head(t, True))
    rows = [load_file(str(dump / f"model-rank-{r}-part-0.safetensors"))["lm_head.weight"]
            for r in (0, 1)]
    whole = np.concatenate([rows[0], rows[1]])[:1000]  # the vocab padding cut off
    save_file({emb: whole}, str(tmp_path / "read.safetensors"))
    h = run("hash", tmp_path / "read.safetensors", "--algo", algo)
    found = [l.split("  ")[0] for l in h.stdout.splitlines() if l.endswith("  " + emb)][0]
    r = run("verify", man, dump)
    assert r.returncode == 1, r.stdout + r.stderr
    line = r.stdout.splitlines()[0]
    assert line.startswith(f"{emb}: mismatch [lm_head.weight"), line
    assert f", {found} found" in line, (line, found)
    assert "held by lm_head.weight rows 0..512 on rank 0; lm_head.weight rows 0..488 on rank 1" \
        in line, line
    assert emb + " rows" not in line, line
    f = json.loads(run("verify", man, dump, "--json").stdout)["findings"]
    assert len(f) == 1 and f[0]["tensor"] == emb and f[0]["local"] == "lm_head.weight", f
    assert f[0]["found"] == found
    assert {x["local"] for x in f[0]["held_by"]} == {"lm_head.weight"}, f[0]
    # --locate and diff name it too, with its rank and element
    r = run("verify", man, dump, "--locate", ckpt)
    assert "[lm_head.weight on rank 1]" in r.stdout and "element [3, 5] of lm_head.weight on " \
        "rank 1" in r.stdout, r.stdout
    r = run("diff", ckpt, dump)
    assert r.returncode == 1 and "[lm_head.weight on rank 1]" in r.stdout and \
        "element [3, 5] of lm_head.weight on rank 1" in r.stdout, r.stdout


def test_tied_model_both_names_lm_head_stale(tmp_path, run):
    """Plants: the dump holds both model.embed_tokens.weight and lm_head.weight (one tied
    tensor under two names), only lm_head's copy on rank 1 corrupted. The finding names
    lm_head.weight on rank 1 (the name whose bytes differ), never the embedding's bytes."""
    import numpy as np
    ckpt, man, dump = tied_dump(run, tmp_path)
    emb = "model.embed_tokens.weight"
    for rank in (0, 1):
        def add(t, rank=rank):
            t["lm_head.weight"] = t[emb].copy()
            if rank == 1:
                t["lm_head.weight"].view(np.uint32)[3, 5] ^= np.uint32(1 << 30)
        rewrite(dump, rank, add)
    for args in (("verify", man, dump), ("diff", ckpt, dump)):
        r = run(*args)
        assert r.returncode == 1, r.stdout + r.stderr
        assert f"{emb}: replica_mismatch [lm_head.weight on rank 1]" in r.stdout, r.stdout
        assert "'lm_head.weight' and 'model.embed_tokens.weight' are one tied tensor but " \
            "differ" in r.stdout


# ---- item 8: rank files as the engines find them ---------------------------------------------

def test_rank_files_as_the_engines_glob_them(tmp_path, run):
    """vLLM's and SGLang's ShardedStateLoader load rank r from
    glob("model-rank-{r}-part-*.safetensors"), r without leading zeros. Plants: (1) rank 1's
    file renamed model-rank-1-part-x.safetensors (the engine loads it: must verify OK);
    (2) rank 0's file renamed model-rank-00-part-0.safetensors (the engine never loads it:
    rank 0 is missing, exit 1, and the file is named in a warning, on stderr and in JSON);
    (3) only look-alikes: exit 2 in one line naming one."""
    import shutil
    ckpt, man = make_model(run, tmp_path, config("qwen2", 2))
    dump = tmp_path / "dump"
    assert run("shard", ckpt, "--layout", "sglang", "--tp", 2, "-o", dump).returncode == 0
    r0, r1 = dump / "model-rank-0-part-0.safetensors", dump / "model-rank-1-part-0.safetensors"
    os.rename(r1, dump / "model-rank-1-part-x.safetensors")
    os.rename(r0, dump / "model-rank-0-part-.safetensors")  # '*' matches the empty part too
    for args in (("verify", man, dump), ("hash", dump), ("diff", ckpt, dump)):
        r = run(*args)
        assert r.returncode == 0, (args, r.stdout + r.stderr)
        assert "like a rank file" not in r.stderr and "like rank files" not in r.stderr
    os.rename(dump / "model-rank-0-part-.safetensors", dump / "model-rank-00-part-0.safetensors")
    shutil.copy(dump / "model-rank-1-part-x.safetensors", dump / "Model-Rank-1-part-0.safetensors")
    want = ("2 files look like rank files but vLLM and SGLang would never load them (their "
            "loaders glob model-rank-{rank}-part-*.safetensors, the rank without leading zeros), "
            "so neither does this check: Model-Rank-1-part-0.safetensors, "
            "model-rank-00-part-0.safetensors")
    for args in (("verify", man, dump), ("hash", dump), ("diff", ckpt, dump)):
        r = run(*args)
        assert r.returncode == 1, (args, r.stdout + r.stderr)
        what = "diff" if args[0] == "diff" else dump  # diff's summary names itself
        assert f"weightsum: warning: {what}: {want}\n" in r.stderr, r.stderr
        assert "rank 0" in r.stdout + r.stderr and "missing" in r.stdout + r.stderr, \
            r.stdout + r.stderr
    j = run("verify", man, dump, "--json")
    assert j.returncode == 1
    doc = json.loads(j.stdout)
    assert doc["warnings"] == [{"kind": "ignored_rank_files", "detail": want, "count": 2,
                                "names": ["Model-Rank-1-part-0.safetensors",
                                          "model-rank-00-part-0.safetensors"]}], doc
    assert any(f["status"] == "missing" and f.get("rank") == 0 for f in doc["findings"]), doc
    only = tmp_path / "only"
    only.mkdir()
    shutil.copy(dump / "model-rank-00-part-0.safetensors", only)
    r = run("hash", only)
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1, r.stderr
    assert "model-rank-00-part-0.safetensors looks like one but would never be loaded" in lines[0]


# ---- item 5: the server bounds the whole request, headers included ---------------------------

@pytest.fixture
def served(tmp_path, run):
    ckpt, man = make_model(run, tmp_path, config("qwen2", 2))
    dump = tmp_path / "dump"
    assert run("shard", ckpt, "--layout", "sglang", "--tp", 2, "-o", dump).returncode == 0
    return dump


def test_slow_headers_do_not_lock_real_clients_out(served, ws_bin):
    """Plants: --max-connections clients each trickling its request headers one byte at a
    time (never idle, so MHD's idle timeout never fires). Each must be dropped (its request
    is not in within 4 timeouts), and a real client must then be answered. The loops only
    bound a hang; nothing is timed."""
    import socket
    import threading
    import time
    from test_http import Server, post
    head = b"POST /weights_checker HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 4000
    with Server(ws_bin, served, "--timeout", 1, "--max-connections", 4) as s:
        stop, dropped, started = threading.Event(), [], threading.Semaphore(0)

        def trickle():
            sock = socket.create_connection(("127.0.0.1", s.port))
            started.release()
            try:
                for b in head:
                    if stop.is_set():
                        return
                    sock.sendall(bytes([b]))
                    sock.settimeout(0.3)
                    try:
                        if sock.recv(1) == b"":
                            break  # closed by the server
                    except socket.timeout:
                        pass
                dropped.append(True)
            except OSError:
                dropped.append(True)
            finally:
                sock.close()
        threads = [threading.Thread(target=trickle, daemon=True) for _ in range(4)]
        for t in threads:
            t.start()
        for _ in threads:
            assert started.acquire(timeout=30)
        answered = None
        for _ in range(300):  # a real client retries until it is let in
            try:
                answered = post(s.port, {"action": "checksum"}, timeout=3)
                break
            except OSError:
                time.sleep(0.2)
            except Exception:  # http.client's RemoteDisconnected, BadStatusLine
                time.sleep(0.2)
        for t in threads:  # the real client may get in as soon as one slot frees: the
            t.join(timeout=60)  # others must still be dropped by the server, not stopped by us
        stop.set()
        assert answered is not None and answered[0] == 200, "slow headers locked clients out"
        assert len(dropped) == 4, dropped


def test_two_different_content_lengths_refused(served, ws_bin):
    """Plants: a request with two Content-Length headers that disagree (a request-smuggling
    classic; MHD takes the first). It must be a 400 naming the cause in one line, and the
    server must keep serving."""
    from test_http import Server, raw, status_of
    body = b'{"action": "checksum"}'
    with Server(ws_bin, served) as s:
        for lengths in ((len(body), 2), (2, len(body))):
            req = (b"POST /weights_checker HTTP/1.1\r\nHost: x\r\n"
                   + b"".join(b"Content-Length: %d\r\n" % n for n in lengths)
                   + b"Connection: close\r\n\r\n" + body)
            ans = raw(s.port, req)
            assert status_of(ans) == 400, ans
            msg = json.loads(ans.partition(b"\r\n\r\n")[2])["message"]
            assert "two different Content-Length headers" in msg and "\n" not in msg, msg
        # the same length twice is one length (RFC 9112 6.3); and the server still serves
        req = (b"POST /weights_checker HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n"
               b"content-length: %d\r\nConnection: close\r\n\r\n" % (len(body), len(body)) + body)
        assert status_of(raw(s.port, req, timeout=60)) == 200


# ---- item 7: a bf16 check says which bits it could not see ------------------------------------

def test_bf16_policy_warns_about_low_bits_both_sides_hold(tmp_path, run):
    """Plants: an F32 checkpoint whose model.norm.weight has one element's lowest mantissa bit
    flipped, verified against the F32 trainer's bf16-policy manifest. The documented policy
    keeps it a match (exit 0), but the check must say, on stderr and in JSON, how many tensors
    both sides hold wider than bf16 and how to compare every bit; doing so (--canonical native)
    catches and names the flip. Against an engine that holds bf16, nothing is hidden: no
    warning."""
    import numpy as np
    from safetensors.numpy import load_file, save_file
    ckpt, man = make_model(run, tmp_path, config("qwen2", 2))
    t = load_file(ckpt)
    a = t["model.norm.weight"].copy()
    a.view(np.uint32)[7] ^= np.uint32(1)
    t["model.norm.weight"] = a
    flipped = str(tmp_path / "flipped.safetensors")
    save_file(t, flipped)
    n = len(t)
    r = run("verify", man, flipped)
    assert r.returncode == 0, r.stdout + r.stderr
    warn = [l for l in r.stderr.splitlines() if "warning" in l]
    assert len(warn) == 1, r.stderr
    assert f"{n} tensors stored wider than bf16 on both sides" in warn[0], warn[0]
    assert "--canonical native" in warn[0] and "low bits" in warn[0], warn[0]
    doc = json.loads(run("verify", man, flipped, "--json").stdout)
    w = [x for x in doc["warnings"] if x["kind"] == "low_bits_unchecked"]
    assert len(w) == 1 and w[0]["count"] == n and "model.norm.weight" in w[0]["names"], doc
    # following the advice catches the flip and names it
    native = tmp_path / "native.json"
    assert run("hash", ckpt, "--canonical", "native", "-o", native).returncode == 0
    r = run("verify", native, flipped)
    assert r.returncode == 1 and r.stdout.startswith("model.norm.weight: mismatch"), r.stdout
    assert "warning" not in r.stderr, r.stderr
    # an engine dump of the F32 checkpoint holds F32 too: warned; a bf16 one: not
    dump = tmp_path / "dump"
    assert run("shard", ckpt, "--layout", "sglang", "--tp", 2, "-o", dump).returncode == 0
    r = run("verify", man, dump)
    assert r.returncode == 0 and f"{n} tensors stored wider than bf16" in r.stderr, r.stderr
    bf16 = tmp_path / "bf16.safetensors"
    assert run("synth", tmp_path / "config.json", "--dtype", "bf16", "-o", bf16).returncode == 0
    r = run("verify", man, bf16)
    assert r.returncode == 0 and "warning" not in r.stderr, r.stdout + r.stderr
    # a line-form manifest records no dtype: nothing is known of the trainer's side
    lines = run("hash", ckpt).stdout
    r = run("verify", "-", flipped, stdin=lines)
    assert r.returncode == 0 and "warning" not in r.stderr, r.stderr


def test_http_answers_carry_the_warnings(tmp_path, run, ws_bin):
    """Plants: a look-alike rank file (model-rank-01-part-0.safetensors, a copy of rank 1's
    file) in the dump `serve` checks. The real rank files still match, so compare_checksum with
    the trainer's digests answers 200, but the answer must carry the ignored file as a warning,
    as the CLI's stderr and --json do. Without the look-alike: no "warnings" key at all."""
    import shutil
    from test_http import Server, post, trainer_digests
    ckpt, man = make_model(run, tmp_path, config("qwen2", 2))
    dump = tmp_path / "dump"
    assert run("shard", ckpt, "--layout", "sglang", "--tp", 2, "-o", dump).returncode == 0
    good = {"action": "compare_checksum", "checksums": trainer_digests(man)}
    with Server(ws_bin, dump) as s:
        status, body = post(s.port, good)
        assert status == 200 and "warnings" not in body, body
    shutil.copy(dump / "model-rank-1-part-0.safetensors", dump / "model-rank-01-part-0.safetensors")
    with Server(ws_bin, dump) as s:
        status, body = post(s.port, good)
        assert status == 200 and body["success"] is True, body
        w = body.get("warnings")
        assert w and w[0]["kind"] == "ignored_rank_files", body
        assert w[0]["names"] == ["model-rank-01-part-0.safetensors"], w
        assert "would never load" in w[0]["detail"], w


def test_checksum_action_refuses_digests_it_would_ignore(served, ws_bin):
    """Found by fuzz_checker: {"action": "checksum", "checksums": {...}} answered 200 (the dump
    agrees with itself) while ignoring the digests sent, which a reader takes for "they matched".
    Plants: wrong digests sent with the "checksum" action. Must be a 400 pointing to
    compare_checksum; the SGLang form without "checksums" is still a 200."""
    from test_http import Server, post
    with Server(ws_bin, served) as s:
        for extra in ({}, {"algorithm": "sha256"}):
            status, body = post(s.port, {"action": "checksum", **extra,
                                         "checksums": {"model.norm.weight": "00" * 32}})
            assert status == 400 and body["success"] is False, body
            assert "compare_checksum" in body["message"], body
            assert post(s.port, {"action": "checksum", **extra})[0] == 200
