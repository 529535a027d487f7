"""Partials as the unit of work, over the mutation suite: each rank's partials computed by
itself (its own source, its own call), passed through their byte form, merged and judged
give the same verdicts — status, HF tensor, rank — as the single-process `weightsum verify`
of the same dump, for every planted corruption (a stale replica found from partials alone).
Also: `diff` checks every replica; a rank file truncated while it is read is exit 2 naming
it, never a crash."""
import ctypes
import json
import os
import shutil
import subprocess
import time

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from test_exports import lib_path
from test_layouts import L1, config, flip, flip1, make_model, mutate, rank_file

P = ctypes.c_void_p


class Error(ctypes.Structure):
    _fields_ = [("code", ctypes.c_int), ("file", ctypes.c_char * 512),
                ("tensor", ctypes.c_char * 256), ("offset", ctypes.c_int64),
                ("what", ctypes.c_char * 512)]


class Finding(ctypes.Structure):
    _fields_ = [("status", ctypes.c_int), ("tensor", ctypes.c_char_p),
                ("local", ctypes.c_char_p), ("rank", ctypes.c_int), ("row0", ctypes.c_int64),
                ("row1", ctypes.c_int64), ("detail", ctypes.c_char_p)]


@pytest.fixture(scope="module")
def ws():
    lib = ctypes.CDLL(lib_path())
    lib.ws_report_new.restype = P
    lib.ws_report_count.restype = ctypes.c_size_t
    lib.ws_report_count.argtypes = [P]
    lib.ws_report_at.restype = ctypes.POINTER(Finding)
    lib.ws_report_at.argtypes = [P, ctypes.c_size_t]
    lib.ws_status_name.restype = ctypes.c_char_p
    lib.ws_fastkey_id.restype = ctypes.c_char_p
    for f in ("ws_report_free", "ws_layout_free", "ws_plan_free", "ws_dump_free",
              "ws_source_free", "ws_partials_free", "ws_manifest_free", "ws_free",
              "ws_fastkey_free", "ws_model_config_free"):
        getattr(lib, f).argtypes = [P]
    return lib


def check(rc, err):
    assert rc == 0, (rc, err.file, err.what)


def partials_verdicts(ws, man, d, cfg_path, tp):
    """Every rank alone -> bytes -> merge -> judge: the set of (status, tensor, rank)."""
    e = Error()
    cfg = P()
    check(ws.ws_model_config_load(cfg_path.encode(), ctypes.byref(cfg), ctypes.byref(e)), e)
    lay, plan, dump, key, m = P(), P(), P(), P(), P()
    check(ws.ws_layout_create(b"sglang", cfg, tp, ctypes.byref(lay), ctypes.byref(e)), e)
    ws.ws_model_config_free(cfg)
    check(ws.ws_plan_create(lay, ctypes.byref(plan), ctypes.byref(e)), e)
    check(ws.ws_dump_open(str(d).encode(), ctypes.byref(dump), ctypes.byref(e)), e)
    seed = b"weightsum-fast-digest-v1"
    check(ws.ws_fastkey_create(seed, len(seed), ctypes.byref(key), ctypes.byref(e)), e)
    check(ws.ws_manifest_load(str(man).encode(), ctypes.byref(m), ctypes.byref(e)), e)
    wire = []
    for rank in range(tp):
        src, pa, buf, n = P(), P(), P(), ctypes.c_size_t()
        if ws.ws_source_dump(dump, rank, 0, ctypes.byref(src), ctypes.byref(e)) != 0:
            continue  # no file for this rank: its partials never arrive
        check(ws.ws_partials_compute(plan, rank, src, key, 0, ctypes.byref(pa), ctypes.byref(e)), e)
        check(ws.ws_partials_serialize(pa, ctypes.byref(buf), ctypes.byref(n), ctypes.byref(e)), e)
        wire.append(ctypes.string_at(buf, n.value))
        ws.ws_free(buf)
        ws.ws_partials_free(pa)
        ws.ws_source_free(src)
    merged = P()
    for i, b in enumerate(wire):
        pa = P()
        check(ws.ws_partials_deserialize(b, len(b), ctypes.byref(pa), ctypes.byref(e)), e)
        if i == 0:
            merged = pa
        else:
            check(ws.ws_partials_merge(merged, pa, ctypes.byref(e)), e)
            ws.ws_partials_free(pa)
    r = P(ws.ws_report_new())
    check(ws.ws_partials_judge(plan, merged, m, r, ctypes.byref(e)), e)
    out = set()
    for i in range(ws.ws_report_count(r)):
        f = ws.ws_report_at(r, i).contents
        out.add((ws.ws_status_name(f.status).decode(), f.tensor.decode(), f.rank))
    for f, h in (("ws_report_free", r), ("ws_partials_free", merged), ("ws_manifest_free", m),
                 ("ws_fastkey_free", key), ("ws_dump_free", dump), ("ws_plan_free", plan),
                 ("ws_layout_free", lay)):
        getattr(ws, f)(h)
    return out


def verify_verdicts(run, man, d):
    r = run("verify", man, d, "--json")
    assert r.returncode in (0, 1), r.stderr
    doc = json.loads(r.stdout)
    rep = doc.get("report", doc)
    return {(f["status"], f["tensor"], f.get("rank", -1)) for f in rep["findings"]}, r.returncode


QKV = L1 + "self_attn.qkv_proj.weight"
EMB = "model.embed_tokens.weight"


def swap_q_k(t):
    a = t[QKV].copy()
    a[0:8], a[8:16] = t[QKV][8:16], t[QKV][0:8]
    t[QKV] = a


def garbage_padding(t):
    a = t[EMB].copy()
    a[-1, 3] = 1.0
    t[EMB] = a


def edit_names(t):
    del t[L1 + "mlp.down_proj.weight"]
    t["model.layers.1.mlp.extra.weight"] = np.zeros(3, np.float32)


# (rank, edit) at tp=8 over 4 kv heads: ranks 2k, 2k+1 hold kv head k
MUTATIONS = {
    "clean": [],
    "stale-kv-replica": [(3, lambda t: flip(t, QKV, 8 + 2, 1))],
    "bad-kv-replica-0": [(2, lambda t: flip(t, QKV, 8 + 2, 1))],
    "q-flip": [(5, lambda t: flip(t, QKV, 3, 7))],
    "qkv-bias-flip": [(1, lambda t: flip1(t, L1 + "self_attn.qkv_proj.bias", 17))],
    "stale-norm-copy": [(6, lambda t: flip1(t, L1 + "input_layernorm.weight", 9))],
    "q-k-swapped": [(0, swap_q_k)],
    "padding": [(7, garbage_padding)],
    "missing-unexpected": [(4, edit_names)],
    "transposed": [(0, lambda t: t.__setitem__(L1 + "mlp.down_proj.weight", np.ascontiguousarray(
        t[L1 + "mlp.down_proj.weight"].T)))],
    "missing-rank": "rank5",
}


@pytest.fixture(scope="module")
def run_module(ws_bin):
    def _run(*args):
        return subprocess.run([ws_bin, *map(str, args)], capture_output=True, text=True,
                              timeout=600)
    return _run


@pytest.fixture(scope="module")
def model(tmp_path_factory, run_module):
    tmp = tmp_path_factory.mktemp("partials")
    ckpt, _ = make_model(run_module, tmp, config("qwen2", 4))
    man = os.path.join(tmp, "manifest-fast.json")
    assert run_module("hash", ckpt, "--algo", "fast", "-o", man).returncode == 0
    assert run_module("shard", ckpt, "--layout", "sglang", "--tp", 8, "-o",
                      tmp / "tp8").returncode == 0
    return tmp, ckpt, man


@pytest.mark.parametrize("name", sorted(MUTATIONS))
def test_partials_give_verify_verdicts(ws, model, run, tmp_path, name):
    tmp, ckpt, man = model
    d = tmp_path / "d"
    shutil.copytree(tmp / "tp8", d)
    edits = MUTATIONS[name]
    if edits == "rank5":
        os.remove(rank_file(d, 5))
        edits = []
    for rank, fn in edits:
        mutate(d, rank, fn)
    want, rc = verify_verdicts(run, man, d)
    got = partials_verdicts(ws, man, d, os.path.join(tmp, "config.json"), 8)
    assert got == want, (sorted(got - want), sorted(want - got))
    assert (rc == 0) == (name == "clean") and (not got) == (name == "clean")
    if name == "stale-kv-replica":  # found from partials alone, replica 0 intact
        assert ("replica_mismatch", L1 + "self_attn.k_proj.weight", 3) in got
        assert not any(s == "mismatch" for s, _, _ in got)


def test_diff_checks_every_replica(model, run, tmp_path):
    """Issue 9: a stale kv replica on rank 3 and a stale norm copy on rank 6 made `diff` say
    OK (it rebuilt from replica 0 only)."""
    tmp, ckpt, man = model
    d = tmp_path / "d"
    shutil.copytree(tmp / "tp8", d)
    assert run("diff", ckpt, d).returncode == 0
    mutate(d, 3, lambda t: flip(t, QKV, 8 + 2, 1))
    mutate(d, 6, lambda t: flip1(t, L1 + "input_layernorm.weight", 9))
    r = run("diff", ckpt, d)
    assert r.returncode == 1, r.stdout + r.stderr
    assert f"{L1}self_attn.k_proj.weight: replica_mismatch [{QKV} on rank 3]" in r.stdout, r.stdout
    assert f"{L1}input_layernorm.weight: replica_mismatch" in r.stdout
    assert "on rank 6" in r.stdout and "differs from replica 0" in r.stdout


@pytest.mark.parametrize("read", ["mmap", "pread"])
@pytest.mark.parametrize("cmd", ["verify", "hash", "diff", "hash-checkpoint"])
def test_file_truncated_while_read(tmp_path, run, ws_bin, cmd, read):
    """A rank file cut while weightsum reads it (an engine re-saving in place): never SIGBUS,
    and an error is one line naming the file, wherever the cut lands. The cut at once lands
    before the read ends, so it must fail; a later cut may land after the last byte was read
    while the process is still printing, and then "OK" is the truth about what was read."""
    big = {"model_type": "llama", "hidden_size": 1024, "intermediate_size": 4096,
           "num_hidden_layers": 4, "num_attention_heads": 8, "num_key_value_heads": 8,
           "vocab_size": 8192, "tie_word_embeddings": False}
    ckpt, man = make_model(run, tmp_path, big)
    d = tmp_path / "d"
    assert run("shard", ckpt, "--layout", "vllm", "--tp", 2, "-o", d).returncode == 0
    victim = ckpt if cmd == "hash-checkpoint" else rank_file(d, 1)
    keep = str(tmp_path / "victim.keep")
    shutil.copy(victim, keep)
    size = os.path.getsize(victim)
    args = {"verify": ["verify", man, d, "-j", "1"], "hash": ["hash", d, "-j", "1"],
            "diff": ["diff", ckpt, d], "hash-checkpoint": ["hash", ckpt, "-j", "1"]}[cmd]
    args += ["--read", read]
    for delay in (0.0, 0.02, 0.1, 0.3):
        shutil.copy(keep, victim)
        p = subprocess.Popen([ws_bin, *map(str, args)], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
        time.sleep(delay)
        alive = p.poll() is None
        os.truncate(victim, size // 3)
        out, err = p.communicate(timeout=600)
        assert p.returncode >= 0, (delay, p.returncode, err)  # no signal, ever
        if delay == 0.0:
            assert alive and p.returncode == 2, (p.returncode, out, err)
        elif p.returncode == 0:
            continue
        assert p.returncode == 2, (delay, p.returncode, out, err)
        assert victim in err and len(err.strip().splitlines()) == 1, err
