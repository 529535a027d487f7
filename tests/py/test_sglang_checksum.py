"""Checking an unmodified engine: `weightsum expect` predicts every rank's "checksum" answer
and `weightsum push` judges a (stand-in) SGLang's answer against it, at TP 1, 2, 4, 8 (kv
replicas, tied and untied, padded vocab, biases, qk_norm); the mutation suite is caught and
named; both parallelism_info forms, shuffled ranks, a draft model, a missing rank, an engine
error, vLLM's dialect. The stand-in hashes with the numpy model, weightsum with its C code;
both equal SGLang's own kernel on the vectors (test_sglang_vectors.py)."""
import json
import os
import shutil
import sys

import ml_dtypes  # noqa: F401
import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from conftest import ROOT
from sglang_standin import StandIn
from test_layouts import L1, config, mutate, rank_file

sys.path.insert(0, os.path.join(ROOT, "python"))
import weightsum  # noqa: E402

CONFIGS = {
    "qwen2-kv2": config("qwen2", 2),                 # biases; kv replicas at tp 4, 8
    "qwen2-kv8-tied": config("qwen2", 8, tied=True),  # tied embeddings
    "llama-kv4": config("llama", 4),                 # untied, no bias
    "qwen3-kv2-tied": config("qwen3", 2, tied=True),  # q_norm / k_norm
}


def model(run, d, cfg, dtype="bf16"):
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(cfg, f)
    ckpt = os.path.join(d, "model.safetensors")
    r = run("synth", os.path.join(d, "config.json"), "-o", ckpt, "--dtype", dtype)
    assert r.returncode == 0, r.stderr
    return ckpt


def setup(run, d, cfg, tp, engine="sglang"):
    ckpt = model(run, d, cfg)
    dump = os.path.join(d, f"tp{tp}")
    assert run("shard", ckpt, "--layout", "sglang", "--tp", tp, "-o", dump).returncode == 0
    exp = os.path.join(d, f"expect-{engine}-{tp}.json")
    r = run("expect", ckpt, "--layout", "sglang", "--tp", tp, "-o", exp, "--engine", engine)
    assert r.returncode == 0, r.stderr
    return ckpt, dump, exp


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_clean_engine_matches_at_every_tp(tmp_path, run, name):
    ckpt = model(run, tmp_path, CONFIGS[name])
    for tp in (1, 2, 4, 8):
        dump = tmp_path / f"tp{tp}"
        assert run("shard", ckpt, "--layout", "sglang", "--tp", tp, "-o", dump).returncode == 0
        exp = tmp_path / f"exp{tp}.json"
        assert run("expect", ckpt, "--layout", "sglang", "--tp", tp, "-o", exp).returncode == 0
        e = json.loads(exp.read_text())
        assert e["format"] == "weightsum-expect" and e["hash"] == "gpu_tensor_hash"
        assert [x["parallelism_info"][0]["tp_rank"] for x in e["ranks"]] == list(range(tp))
        n = sum(len(x["checksums"]) for x in e["ranks"])
        with StandIn(str(dump), tp) as s:
            r = run("push", s.url, exp)
            assert r.returncode == 0, f"tp={tp}\n{r.stdout}{r.stderr}"
            assert r.stdout == f"{s.url}/weights_checker: {n} matched -> OK\n"
            # the answer is SGLang's own per_engine_checksum too
            assert s.requests[-1] == {"action": "checksum"}
            st, ans = s.answer({"action": "checksum"})
            assert ans["per_engine_checksum"] == e["per_engine_checksum"]
            # one step: the checkpoint and its layout
            r = run("push", s.url, ckpt, "--layout", "sglang", "--tp", tp)
            assert r.returncode == 0, r.stdout + r.stderr
        if CONFIGS[name]["tie_word_embeddings"]:
            assert all("lm_head.weight" not in x["checksums"] for x in e["ranks"])


def test_both_forms_shuffled_and_draft(tmp_path, run):
    _, dump, exp = setup(run, tmp_path, config("qwen2", 2), 4)
    with StandIn(dump, 4) as s:
        for form in ("list", "dict"):
            s.form, s.shuffle, s.draft = form, True, form == "list"
            r = run("push", s.url, exp)
            assert r.returncode == 0, f"{form}\n{r.stdout}{r.stderr}"
        s.draft, s.form = True, "list"
        st, ans = s.answer({"action": "checksum"})
        assert any(k.startswith("draft.") for k in ans["ranks"][0]["checksums"])
        assert [p["role"] for p in ans["ranks"][0]["parallelism_info"]] == ["target", "draft"]
        # draft-prefixed names are the draft model's: a target name the engine lacks is not
        # excused by its draft twin
        s.skip_target = L1 + "mlp.down_proj.weight"
        r = run("push", s.url, exp)
        assert r.returncode == 1 and f"missing [{L1}mlp.down_proj.weight on rank" in r.stdout, r.stdout
        s.skip_target = None
        sk = run("push", s.url, exp, "--skip", "mlp", "--selector", "all")
        assert sk.returncode == 0, sk.stdout + sk.stderr
        assert s.requests[-1] == {"action": "checksum", "skip_tensor_list": ["mlp"], "selector": "all"}


def test_missing_rank_wrong_tp_and_engine_error(tmp_path, run):
    _, dump, exp = setup(run, tmp_path, config("qwen2", 2), 4)
    with StandIn(dump, 4) as s:
        s.drop_rank = 2
        r = run("push", s.url, exp)
        assert r.returncode == 1, r.stdout + r.stderr
        assert "(dump): missing [rank 2]: the engine's answer has no rank with tp_rank 2" in r.stdout
        assert r.stdout.endswith("1 missing -> FAILED\n")
        s.drop_rank, s.tp_size = None, 8
        r = run("push", s.url, exp)
        assert r.returncode == 1 and "answers tp_size 8" in r.stdout, r.stdout
        s.tp_size, s.error = None, "check tensor equality failed: boom"
        r = run("push", s.url, exp)
        assert r.returncode == 2 and "the engine says: check tensor equality failed: boom" in r.stderr
        assert r.stdout == ""
    # an engine that serves the tp=2 layout answered to a tp=4 expectation: ranks 2, 3 missing
    _, dump2, _ = setup(run, tmp_path / "b", config("qwen2", 2), 2)
    with StandIn(dump2, 2) as s:
        r = run("push", s.url, exp)
        assert r.returncode == 1
        assert "missing [rank 2]" in r.stdout and "missing [rank 3]" in r.stdout


def test_unsupported_action_is_trouble(tmp_path, run, ws_bin):
    """A weightsum serve answers as SGLang; an engine that does not know the action says so."""
    _, dump, exp = setup(run, tmp_path, config("qwen2", 2), 2)
    with StandIn(dump, 2) as s:
        st, ans = s.answer({"action": "nope"})
        assert st == 400 and "Unsupported action" in ans["message"]


@pytest.fixture
def engine(tmp_path, run):
    """Qwen2 (4 kv heads of 8, biases, vocab 1000 padded to 1024) at tp 2 and 8."""
    cfg = config("qwen2", 4)
    ckpt = model(run, tmp_path, cfg)
    out = {}
    for tp in (2, 8):
        dump = tmp_path / f"tp{tp}"
        assert run("shard", ckpt, "--layout", "sglang", "--tp", tp, "-o", dump).returncode == 0
        exp = tmp_path / f"exp{tp}.json"
        assert run("expect", ckpt, "--layout", "sglang", "--tp", tp, "-o", exp).returncode == 0
        out[tp] = (dump, exp)
    return out


def push_fails(run, dump, exp, tp):
    with StandIn(str(dump), tp) as s:
        r = run("push", s.url, exp)
    assert r.returncode == 1, r.stdout + r.stderr
    assert r.stdout.endswith("-> FAILED\n")
    return r.stdout


def bflip(t, name, row, col, bit=14):
    a = t[name].copy()
    a.view(np.uint16)[row, col] ^= np.uint16(1 << bit)
    t[name] = a


def bflip1(t, name, i, bit=14):
    a = t[name].copy()
    a.view(np.uint16)[i] ^= np.uint16(1 << bit)
    t[name] = a


QKV = L1 + "self_attn.qkv_proj.weight"
SEGS = "q_proj.weight rows 32..64 at local rows 0..32"


@pytest.mark.parametrize("row,seg", [(5, "q_proj"), (32 + 3, "k_proj"), (48 + 7, "v_proj")])
def test_flip_in_each_qkv_segment_named(engine, run, row, seg):
    dump, exp = engine[2]
    mutate(dump, 1, lambda t: bflip(t, QKV, row, 3))
    out = push_fails(run, dump, exp, 2)
    line = out.splitlines()[0]
    assert f"mismatch [{QKV} on rank 1]" in line, out
    # every segment it could be, with rows in the HF tensors and in the local tensor
    assert f"{L1}self_attn.q_proj.weight rows 32..64 at local rows 0..32" in line
    assert f"{L1}self_attn.k_proj.weight rows 16..32 at local rows 32..48" in line
    assert f"{L1}self_attn.v_proj.weight rows 16..32 at local rows 48..64" in line
    assert "1 mismatch -> FAILED" in out


@pytest.mark.parametrize("local,rank,where", [
    ("self_attn.qkv_proj.bias", 0, 40),         # k bias
    ("self_attn.o_proj.weight", 1, (3, 7)),     # row-parallel
    ("mlp.gate_up_proj.weight", 0, (10, 1)),    # gate
    ("mlp.gate_up_proj.weight", 1, (48 + 10, 1)),  # up
    ("mlp.down_proj.weight", 0, (2, 2)),
    ("input_layernorm.weight", 1, 5),           # a replica of a norm
])
def test_flips_named(engine, run, local, rank, where):
    dump, exp = engine[2]
    name = L1 + local
    mutate(dump, rank, lambda t: bflip(t, name, *where) if isinstance(where, tuple) else bflip1(t, name, where))
    out = push_fails(run, dump, exp, 2)
    assert f"mismatch [{name} on rank {rank}]" in out, out
    assert "1 mismatch -> FAILED" in out


def test_stale_kv_replica_named(engine, run):
    dump, exp = engine[8]  # 4 kv heads on 8 ranks: rank 3 holds a replica of kv head 1
    mutate(dump, 3, lambda t: bflip(t, QKV, 8 + 2, 1))
    out = push_fails(run, dump, exp, 8)
    assert f"mismatch [{QKV} on rank 3]" in out and "(replica 1)" in out, out
    assert "1 mismatch -> FAILED" in out


def test_swaps_padding_missing_extra_transposed(engine, run):
    dump, exp = engine[2]
    work = str(dump) + "-w"

    def fresh():
        shutil.rmtree(work, ignore_errors=True)
        shutil.copytree(dump, work)

    def q_k_swap(t):
        a = t[QKV].copy()
        a[0:16], a[32:48] = t[QKV][32:48], t[QKV][0:16]
        t[QKV] = a
    fresh(); mutate(work, 0, q_k_swap)
    assert f"mismatch [{QKV} on rank 0]" in push_fails(run, work, exp, 2)
    fresh()
    a, b = rank_file(work, 0), rank_file(work, 1)
    os.rename(a, a + ".x"); os.rename(b, a); os.rename(a + ".x", b)
    out = push_fails(run, work, exp, 2)
    assert "mismatch [model.embed_tokens.weight on rank 0]" in out
    assert "input_layernorm.weight on rank" not in out  # replicated tensors still match
    emb = "model.embed_tokens.weight"
    fresh(); mutate(work, 1, lambda t: bflip(t, emb, 1000 - 512 + 5, 3))
    out = push_fails(run, work, exp, 2)
    assert f"mismatch [{emb} on rank 1]" in out and "zero rows 488..512" in out, out

    def edit(t):
        del t[L1 + "mlp.down_proj.weight"]
        t["model.layers.1.mlp.extra.weight"] = np.zeros(3, np.float32)
    fresh(); mutate(work, 1, edit)
    out = push_fails(run, work, exp, 2)
    assert f"missing [{L1}mlp.down_proj.weight on rank 1]" in out, out
    assert "model.layers.1.mlp.extra.weight: unexpected [model.layers.1.mlp.extra.weight on rank 1]" in out
    fresh(); mutate(work, 0, lambda t: t.__setitem__(L1 + "mlp.down_proj.weight", np.ascontiguousarray(
        t[L1 + "mlp.down_proj.weight"].T)))
    assert f"mismatch [{L1}mlp.down_proj.weight on rank 0]" in push_fails(run, work, exp, 2)


def test_vllm_dialect(tmp_path, run):
    _, dump, exp = setup(run, tmp_path, config("qwen2", 2), 4, engine="vllm")
    e = json.loads(open(exp).read())
    assert e["hash"] == "sha256" and all(":" in k for k in e["checksums"])
    assert len(next(iter(e["checksums"].values()))) == 64
    with StandIn(dump, 4) as s:
        s.vllm = True
        r = run("push", s.url, exp)
        assert r.returncode == 0, r.stdout + r.stderr
        assert r.stdout.startswith(f"{s.url}/weight_checker: ")
        mutate(dump, 3, lambda t: bflip(t, L1 + "mlp.down_proj.weight", 1, 1))
        r = run("push", s.url, exp)
        assert r.returncode == 1 and f"mismatch [{L1}mlp.down_proj.weight on rank 3] rows 0..64: sha256 " in r.stdout, r.stdout


def test_cpu_path_and_serve_speaks_sglang(tmp_path, run, ws_bin):
    ckpt, dump, _ = setup(run, tmp_path, config("qwen3", 2, tied=True), 2)
    exp = tmp_path / "cpu.json"
    assert run("expect", ckpt, "--layout", "sglang", "--tp", 2, "--device", "cpu", "-o", exp).returncode == 0
    with StandIn(dump, 2) as s:
        s.device = "cpu"
        r = run("push", s.url, exp)
        assert r.returncode == 0, r.stdout + r.stderr
        # a saved answer of the stand-in and one of `weightsum serve` are the same answer
        saved = s.answer({"action": "checksum"})[1]
    with weightsum.Checker(str(dump)) as c:
        st, ours = c.handle({"action": "checksum"})
    assert st == 200
    s2 = StandIn(dump, 2)
    assert ours == s2.answer({"action": "checksum"})[1]
    s2.server_close()
    assert saved["ranks"][0]["checksums"].keys() == ours["ranks"][0]["checksums"].keys()


def test_python_expect_and_judge(tmp_path, run):
    ckpt, dump, exp = setup(run, tmp_path, config("qwen2", 2), 4)
    tensors = load_file(ckpt)
    e = weightsum.expect(tensors, "sglang", 4, str(tmp_path / "config.json"))
    saved = json.loads(open(exp).read())
    assert e["ranks"] == saved["ranks"] and e["holds"] == saved["holds"]
    with StandIn(dump, 4) as s:
        s.shuffle = True
        ans = s.answer(weightsum.checksum_request(e))[1]
    v = weightsum.judge(e, ans)
    assert v["ok"] and v["matched"] == sum(len(x["checksums"]) for x in e["ranks"])
    ans["ranks"][1]["checksums"][L1 + "mlp.down_proj.weight"] = "0" * 16
    v = weightsum.judge(e, ans)
    assert not v["ok"] and v["findings"][0]["local"] == L1 + "mlp.down_proj.weight"
    assert v["findings"][0]["tensor"] == L1 + "mlp.down_proj.weight"
    with pytest.raises(weightsum.WeightsumError) as err:
        weightsum.judge(e, {"success": False, "message": "Unsupported action='checksum'"}, 400)
    assert err.value.code == "WS_ERR_REMOTE" and "Unsupported action" in str(err.value)
