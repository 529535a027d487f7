"""EPLB expert maps: physical expert slots holding logical experts (issue 13).

SGLang (python/sglang/srt/eplb/expert_location.py, FusedMoE.weight_loader) and vLLM
(FusedMoE.__init__, make_expert_params_mapping, determine_expert_map) hold P = E + R physical
expert slots; slot p of layer i holds logical expert physical_to_logical_map[i][p] (both start
from p % E); ep rank k holds slots [k*P/ep, (k+1)*P/ep). Every copy of a logical expert is loaded
from the same HF expert, so redundant copies are replicas of each other. vLLM registers
determine_expert_map's answer as the int32 buffer `mlp.experts._expert_map` (one entry per
physical slot: its local index on the rank, or -1).

The loaders below are re-implemented here from those sources (numpy), not from weightsum's C
code; `weightsum shard` must write exactly what they predict, `verify` must pass with both
digests, and each planted bug is caught and named: HF tensor, engine tensor, rank, slot."""
import json
import os

import numpy as np
import pytest
from safetensors.numpy import load_file

from rank_files import make_model, mutate, rank_file

H, HD = 64, 8
E, MI = 8, 32


def qwen3_moe(layers=2, **extra):
    c = {"model_type": "qwen3_moe", "hidden_size": H, "intermediate_size": 96,
         "num_hidden_layers": layers, "num_attention_heads": 8, "num_key_value_heads": 4,
         "head_dim": HD, "vocab_size": 1000, "num_experts": E, "moe_intermediate_size": MI}
    c.update(extra)
    return c


def write_map(path, rows):
    with open(path, "w") as f:
        json.dump({"physical_to_logical_map": rows}, f)
    return path


def moe_layers(cfg):
    only = cfg.get("mlp_only_layers", [])
    return [i for i in range(cfg["num_hidden_layers"]) if i not in only]


def map_row(rows, cfg, i):
    """Row of layer i: one row for all, one per layer (SGLang), or one per MoE layer (vLLM)."""
    if len(rows) == 1:
        return rows[0]
    if len(rows) == cfg["num_hidden_layers"]:
        return rows[i]
    return rows[moe_layers(cfg).index(i)]


def predicted_experts(family, cfg, w, rows, tp, ep, t, i):
    """What tp rank t holds of MoE layer i: w13, w2 and (vLLM, ep > 1) _expert_map."""
    row = map_row(rows, cfg, i)
    P = len(row)
    if family == "sglang":
        mtp = tp // ep
        er, mt = t // mtp, t % mtp
    else:  # vLLM: with EP the whole tp group is the ep group, experts not tensor-parallel
        mtp, er, mt = (1, t, 0) if ep > 1 else (tp, 0, t)
    per = P // ep
    slots = list(range(er * per, (er + 1) * per))
    r = MI // mtp
    ex = f"model.layers.{i}.mlp.experts."
    out = {
        ex + "w13_weight": np.stack([np.concatenate([
            w[ex + f"{row[p]}.gate_proj.weight"][mt * r:(mt + 1) * r],
            w[ex + f"{row[p]}.up_proj.weight"][mt * r:(mt + 1) * r]]) for p in slots]),
        ex + "w2_weight": np.stack(
            [w[ex + f"{row[p]}.down_proj.weight"][:, mt * r:(mt + 1) * r] for p in slots]),
    }
    if family == "vllm" and ep > 1:
        em = np.full(P, -1, np.int32)
        em[slots] = np.arange(len(slots), dtype=np.int32)
        out[ex + "_expert_map"] = em
    return out


def shard(run, ckpt, out, family, tp, ep, *more):
    return run("shard", ckpt, "--layout", family, "--tp", tp, "--ep", ep, *more, "-o", out)


CASES = [
    # family, tp, ep, map rows (None: --redundant-experts 2, the engines' initial p % E map)
    ("sglang", 2, 2, None),
    ("vllm", 2, 2, None),
    ("sglang", 4, 2, [[3, 1, 2, 0, 4, 5, 6, 7, 3, 5]]),
    ("vllm", 4, 4, [[7, 6, 5, 4, 3, 2, 1, 0, 0, 1, 2, 3]]),
    # per layer (SGLang's shape: num_hidden_layers rows)
    ("sglang", 2, 2, [[0, 1, 2, 3, 4, 5, 6, 7, 1, 1], [5, 4, 7, 6, 0, 1, 2, 3, 4, 4]]),
    ("vllm", 2, 1, [[0, 1, 2, 3, 4, 5, 6, 7, 6, 7]]),
]


@pytest.mark.parametrize("family,tp,ep,rows", CASES)
def test_engine_loaders_with_expert_maps(tmp_path, run, family, tp, ep, rows):
    cfg = qwen3_moe()
    ckpt, mans = make_model(run, tmp_path, cfg)
    w = load_file(ckpt)
    if rows is None:
        args, rows = ["--redundant-experts", 2], [[p % E for p in range(E + 2)]]
    else:
        args = ["--expert-map", write_map(tmp_path / "map.json", rows)]
    d = tmp_path / "d"
    r = shard(run, ckpt, d, family, tp, ep, *args)
    assert r.returncode == 0, r.stderr
    hint = json.loads((d / "weightsum-layout.json").read_text())
    assert hint["expert_map"] == rows
    for t in range(tp):
        got = load_file(rank_file(d, t))
        for i in range(cfg["num_hidden_layers"]):
            for k, v in predicted_experts(family, cfg, w, rows, tp, ep, t, i).items():
                assert k in got, (k, t)
                assert got[k].dtype == v.dtype and got[k].shape == v.shape, (k, t)
                assert got[k].tobytes() == v.tobytes(), (family, tp, ep, t, k)
        if not (family == "vllm" and ep > 1):
            assert not any(k.endswith("_expert_map") for k in got)
    for algo, man in mans.items():
        v = run("verify", man, d)
        assert v.returncode == 0 and v.stdout.endswith("-> OK\n"), (algo, v.stdout, v.stderr)


def test_per_moe_layer_rows_and_dense_layers(tmp_path, run):
    """vLLM's EplbState keeps one row per MoE layer; SGLang one per layer (dense ones too)."""
    cfg = qwen3_moe(layers=3, mlp_only_layers=[1])
    ckpt, mans = make_model(run, tmp_path, cfg)
    w = load_file(ckpt)
    moe_rows = [[1, 0, 2, 3, 4, 5, 6, 7, 1, 1], [0, 1, 2, 3, 4, 5, 6, 7, 7, 6]]
    all_rows = [moe_rows[0], list(range(8)) + [0, 1], moe_rows[1]]
    for family, rows in (("vllm", moe_rows), ("sglang", all_rows)):
        d = tmp_path / family
        r = shard(run, ckpt, d, family, 2, 2, "--expert-map", write_map(tmp_path / f"{family}.json", rows))
        assert r.returncode == 0, r.stderr
        for t in range(2):
            got = load_file(rank_file(d, t))
            assert "model.layers.1.mlp.experts.w13_weight" not in got
            for i in (0, 2):
                for k, v in predicted_experts(family, cfg, w, rows, 2, 2, t, i).items():
                    assert got[k].tobytes() == v.tobytes(), (family, t, k)
        assert run("verify", mans["fast"], d).returncode == 0


@pytest.fixture(params=["sha256", "fast"])
def mapped(tmp_path, run, request):
    """SGLang at tp 2, ep 2, 10 physical slots: rank 0 holds logical [3, 1, 2, 0, 4], rank 1
    [5, 6, 7, 3, 5] (experts 3 and 5 twice: slots 8 and 9 are their redundant copies)."""
    ckpt, mans = make_model(run, tmp_path, qwen3_moe())
    m = write_map(tmp_path / "map.json", [[3, 1, 2, 0, 4, 5, 6, 7, 3, 5]])
    assert shard(run, ckpt, tmp_path / "d", "sglang", 2, 2, "--expert-map", m).returncode == 0
    return tmp_path / "d", ckpt, mans[request.param], m


L0 = "model.layers.0."
W13, W2 = L0 + "mlp.experts.w13_weight", L0 + "mlp.experts.w2_weight"


def verify_fails(run, man, d, *more):
    r = run("verify", man, d, *more)
    assert r.returncode == 1, r.stdout + r.stderr
    return r.stdout


def test_two_slots_swapped_under_the_map(mapped, run):
    """verl #7195 under EPLB: the map says slot 1 holds expert 1 and slot 2 expert 2 on rank 0;
    the engine loaded them the other way round."""
    d, ckpt, man, _ = mapped
    def swap(t):
        for n in (W13, W2):
            a = t[n].copy()
            a[[1, 2]] = a[[2, 1]]
            t[n] = a
    mutate(d, 0, swap)
    out = verify_fails(run, man, d, "--locate", ckpt)
    for e in (1, 2):
        for part, loc in (("gate_proj", W13), ("up_proj", W13), ("down_proj", W2)):
            assert f"{L0}mlp.experts.{e}.{part}.weight: mismatch [{loc} on rank 0]" in out, out
    assert f"element [1, " in out and f"element [2, " in out  # the engine slots
    assert "6 mismatch -> FAILED" in out, out


def test_stale_redundant_replica(mapped, run):
    """One copy of expert 3 (the redundant one, physical slot 8 = rank 1's slot 3) kept the
    weights of the previous step: the HF expert still matches (replica 0 is right), the copy is
    named as a replica mismatch, with its engine tensor, rank and slot."""
    d, ckpt, man, _ = mapped
    def stale(t):
        a = t[W13].copy()
        a[3, 40, 7] += 1.0  # slot 3, an up_proj row (rows 32..64 of the slot)
        t[W13] = a
    mutate(d, 1, stale)
    out = verify_fails(run, man, d)
    want = f"{L0}mlp.experts.3.up_proj.weight: replica_mismatch [{W13} on rank 1]"
    assert want in out, out
    assert f"(element [3, 40, 7] of {W13})" in out, out
    assert f"replica 0 ({W13} on rank 0)" in out
    assert ": mismatch" not in out  # the HF expert itself is right
    # the same dump judged as if experts sat one per slot (no map): 10 slots do not fit
    r = run("verify", man, d, "--force", "--layout", "sglang", "--tp", 2, "--ep", 2,
            "--expert-map", write_map(d.parent / "trivial.json", [list(range(8)) + [0, 1]]))
    assert r.returncode == 1 and "experts.3." in r.stdout, r.stdout + r.stderr


def test_redundant_copy_of_the_wrong_expert(mapped, run):
    """The redundant slot 9 should hold expert 5; the engine loaded expert 4 there."""
    d, ckpt, man, _ = mapped
    w = load_file(ckpt)
    def wrong(t):
        a = t[W2].copy()
        a[4] = w[L0 + "mlp.experts.4.down_proj.weight"]
        t[W2] = a
    mutate(d, 1, wrong)
    out = verify_fails(run, man, d)
    assert f"{L0}mlp.experts.5.down_proj.weight: replica_mismatch [{W2} on rank 1]" in out, out
    assert f"of {W2})" in out and "element [4, " in out


def test_wrong_vllm_expert_map_entry(tmp_path, run):
    """vLLM's _expert_map says which local slot serves each physical expert: a wrong entry is a
    mismatch naming the buffer, the rank and the physical expert; a dump without the buffers
    (weights taken from named_parameters()) still verifies."""
    ckpt, mans = make_model(run, tmp_path, qwen3_moe())
    d = tmp_path / "v"
    assert shard(run, ckpt, d, "vllm", 2, 2, "--redundant-experts", 2).returncode == 0
    name = "model.layers.1.mlp.experts._expert_map"
    assert load_file(rank_file(d, 1))[name].tolist() == [-1] * 5 + [0, 1, 2, 3, 4]
    def bad(t):
        a = t[name].copy()
        a[6] = 3
        t[name] = a
    mutate(d, 1, bad)
    for man in mans.values():
        out = verify_fails(run, man, d)
        assert (f"{name}: mismatch [{name} on rank 1]: 1 of 10 entries differ from the layout's "
                "expert placement; the first, physical expert 6, should be local slot 1, the dump "
                "says 3") in out, out
        assert "1 mismatch -> FAILED" in out
    def wrong_shape(t):
        t[name] = np.arange(8, dtype=np.int64)
    mutate(d, 0, wrong_shape)
    out = verify_fails(run, mans["fast"], d)
    assert f"{name}: shape [{name} on rank 0]: engine buffer I32 [10] expected, I64 [8]" in out, out
    for r in (0, 1):
        mutate(d, r, lambda t: [t.pop(k) for k in list(t) if k.endswith("_expert_map")])
    assert run("verify", mans["fast"], d).returncode == 0


def test_map_flags_and_layout_json(mapped, run, tmp_path):
    d, ckpt, man, m = mapped
    # the same map given again is fine; another one disagrees with weightsum-layout.json
    assert run("verify", man, d, "--expert-map", m).returncode == 0
    other = write_map(tmp_path / "other.json", [[0, 1, 2, 3, 4, 5, 6, 7, 3, 5]])
    r = run("verify", man, d, "--expert-map", other)
    assert r.returncode == 2 and "expert_map" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    # forced, the other map is used: slots 0 and 3 of rank 0 are then the wrong experts
    r = run("verify", man, d, "--expert-map", other, "--force")
    assert r.returncode == 1 and f"{L0}mlp.experts.0.gate_proj.weight: mismatch" in r.stdout
    # without weightsum-layout.json the map comes from the flag
    os.remove(d / "weightsum-layout.json")
    assert run("verify", man, d, "--layout", "sglang", "--tp", 2, "--ep", 2, "--expert-map", m).returncode == 0
    # expect (SGLang's checksum) takes the map too: one answer per rank
    r = run("expect", ckpt, "--layout", "sglang", "--tp", 2, "--ep", 2, "--expert-map", m,
            "-o", tmp_path / "e.json")
    assert r.returncode == 0, r.stderr
    assert len(json.loads((tmp_path / "e.json").read_text())["ranks"]) == 2


@pytest.mark.parametrize("family,tp,ep,rows,args,why", [
    ("sglang", 2, 2, [[0, 1, 2, 3, 4, 5, 6, 0, 1, 2]], [], "expert 7 has no physical slot"),
    ("sglang", 2, 2, [[0, 1, 2, 3, 4, 5, 6, 7, 8, 1]], [], "slot 8 holds expert 8"),
    ("sglang", 2, 2, [[0, 1, 2, 3, 4, 5, 6, 7, 0]], [], "9 physical expert slots are not divisible by ep"),
    ("vllm", 2, 2, [[0, 1, 2, 3, 4, 5, 6, 7, 0]], [], "not divisible by ep"),
    ("sglang", 2, 2, [[0, 1, 2, 3, 4, 5, 6, 7]] * 3, [], "3 rows"),
    ("sglang", 2, 2, [list(range(8)) + [0, 1]], ["--redundant-experts", 4], "not num_experts 8 + 4 redundant"),
    ("megatron", 2, 2, [list(range(8))], [], "SGLang and vLLM options"),
])
def test_map_refusals_are_one_line(tmp_path, run, family, tp, ep, rows, args, why):
    ckpt, _ = make_model(run, tmp_path, qwen3_moe())
    r = shard(run, ckpt, tmp_path / "x", family, tp, ep, "--expert-map",
              write_map(tmp_path / "m.json", rows), *args)
    assert r.returncode == 2 and why in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_map_file_errors(tmp_path, run):
    ckpt, _ = make_model(run, tmp_path, qwen3_moe())
    for text, why in (("{\"logical_count\": [1]}", "physical_to_logical_map"),
                      ("[[0, 1], [0]]", "row 1 is not a list of 2 slots"),
                      ("[0, -1]", "slot 1 is not a logical expert"),
                      ("[0, 1", "invalid JSON")):
        (tmp_path / "bad.json").write_text(text)
        r = shard(run, ckpt, tmp_path / "x", "sglang", 2, 2, "--expert-map", tmp_path / "bad.json")
        assert r.returncode == 2 and why in r.stderr, (text, r.stderr)
    cfg = dict(qwen3_moe(), model_type="qwen3", num_experts=0)
    (tmp_path / "dense.json").write_text(json.dumps(cfg))
    r = run("shard", ckpt, "--layout", "vllm", "--tp", 2, "--redundant-experts", 2, "--config",
            tmp_path / "dense.json", "-o", tmp_path / "y")
    assert r.returncode == 2 and "MoE model" in r.stderr, r.stderr
    r = run("shard", ckpt, "--layout", "vllm", "--tp", 2, "--ep", 2, "--expert-map",
            write_map(tmp_path / "m.json", [list(range(8)) + [0, 1]]), "-o", tmp_path / "z")
    assert r.returncode == 0
    r = run("verify", tmp_path / "manifest-fast.json", tmp_path / "z")
    assert r.returncode == 0, r.stdout + r.stderr
