"""weightsum.torch across processes: 2 and 4 gloo ranks (torch.multiprocessing spawn), each
holding only its own local tensors, run the engine hook on SGLang, vLLM and Megatron layouts
against the trainer's manifest (fast and SHA-256), clean and with the mutation suite (a flipped
k element on one rank, a stale kv replica on another process, a missing tensor, padding
garbage); the trainer hooks (the Megatron-native manifest with no TP gather, manifests of
pipeline stages merged over the group). Every rank must get the same report; every finding
must name the HF tensor and the rank (for a mismatch: the ranks holding it); enforce must
raise and off must do nothing."""
import json
import os
import subprocess
import sys

import pytest

torch = pytest.importorskip("torch")
import torch.multiprocessing as mp  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import torch_dist_worker as W  # noqa: E402

sys.path.insert(0, os.path.join(W.ROOT, "python"))
import weightsum._api as _api  # noqa: E402

# scripts/test.sh runs the suite twice (ASan CLI, plain CLI); these processes load the plain
# build/libweightsum.so either way, so the second run would repeat the same minutes
pytestmark = [pytest.mark.skipif(not _api.has("ws_partials_compute"),
                                 reason="this libweightsum.so has no partials API"),
              pytest.mark.skipif("asan" in os.environ.get("WEIGHTSUM_BIN", ""),
                                 reason="covered by the plain run (same library)")]

QKV = "model.layers.0.self_attn.qkv_proj.weight"
K = "model.layers.0.self_attn.k_proj.weight"


def megatron_dir(tmp, ws_bin, world):
    cfg = W.config(False)
    d = tmp / f"megatron-tp{world}"
    d.mkdir()
    with open(tmp / "config.json", "w") as f:
        json.dump(cfg, f)
    save_file(W.hf_state(cfg), str(tmp / "hf.safetensors"))
    subprocess.run([ws_bin, "shard", str(tmp / "hf.safetensors"), "--layout", "megatron",
                    "--tp", str(world), "-o", str(d), "--config", str(tmp / "config.json")],
                   check=True, capture_output=True)
    return str(d)


def spawn(tmp, world, scenarios):
    out = tmp / f"out{world}"
    out.mkdir()
    mp.spawn(W.run, args=(world, str(tmp / f"init{world}"), str(out), scenarios),
             nprocs=world, join=True)
    per_rank = [json.load(open(out / f"rank{r}.json")) for r in range(world)]
    by_name = {}
    for i, res in enumerate(per_rank[0]):
        reports = [pr[i] for pr in per_rank]
        by_name[res["name"]] = reports
    return by_name


def same_everywhere(reports):
    first = reports[0]["report"]
    for r in reports[1:]:
        assert r["report"]["findings"] == first["findings"]
        assert r["report"]["ok"] == first["ok"] and r["report"]["matched"] == first["matched"]
    return first


def named(f, tensor, rank):
    text = json.dumps(f)
    return f["tensor"] == tensor and (f["rank"] == rank or f"rank {rank}" in f["detail"]), text


def check_clean(res, world):
    rep = same_everywhere(res)
    assert rep["ok"] and rep["findings"] == [], rep
    assert rep["matched"] > 0
    assert all(r["enforce"] == "passed" and r["off"] for r in res)
    c = rep["cost"]
    assert c["bytes_moved"] > 0 and c["seconds"] > 0


def check_found(res, status, tensor, rank):
    rep = same_everywhere(res)
    assert not rep["ok"], rep
    hits = [f for f in rep["findings"] if f["status"] == status and f["tensor"] == tensor]
    assert hits, rep["findings"]
    assert any(f["rank"] == rank or f"rank {rank}" in f["detail"] for f in hits), hits
    for f in rep["findings"]:  # nothing unnamed
        assert f["tensor"], f
        assert f["rank"] is not None or "rank" in f["detail"], f
    assert all(r["enforce"] == "raised" for r in res)
    return hits


@pytest.fixture(scope="module")
def two(tmp_path_factory, ws_bin):
    tmp = tmp_path_factory.mktemp("tp2")
    meg = megatron_dir(tmp, ws_bin, 2)
    sc = []
    for layout in ("sglang", "vllm", "megatron"):
        for algo in ("fast", "sha256"):
            base = {"kind": "engine", "layout": layout, "algo": algo, "megatron_dir": meg}
            sc.append(dict(base, id=f"{layout}-{algo}-clean"))
            sc.append(dict(base, id=f"{layout}-{algo}-flip", mutation="flip_k", rank=1))
            miss = ("decoder.layers.1.mlp.linear_fc2.weight" if layout == "megatron"
                    else "model.layers.1.mlp.down_proj.weight")
            sc.append(dict(base, id=f"{layout}-{algo}-missing", mutation="missing", rank=1,
                           tensor=miss))
            if layout != "megatron":
                sc.append(dict(base, id=f"{layout}-{algo}-padding", mutation="padding"))
    sc.append({"kind": "engine", "layout": "sglang", "algo": "fast", "tied": True,
               "id": "sglang-fast-tied-clean"})
    sc.append({"kind": "megatron_manifest", "id": "megatron-manifest", "megatron_dir": meg})
    sc.append({"kind": "merge_over", "id": "merge-over"})
    sc.append({"kind": "recipes", "id": "recipes"})
    for m in ("clean", "flip_k"):
        sc.append({"kind": "engine", "layout": "sglang", "algo": "fast", "mutation": m,
                   "rank": 1, "expect": True, "id": f"sglang-expect-{m}"})
    return spawn(tmp, 2, sc)


@pytest.fixture(scope="module")
def four(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("tp4")
    sc = []
    for algo in ("fast", "sha256"):
        base = {"kind": "engine", "layout": "sglang", "algo": algo}
        sc.append(dict(base, id=f"{algo}-clean"))
        sc.append(dict(base, id=f"{algo}-stale", mutation="stale_replica", rank=1))
        sc.append(dict(base, id=f"{algo}-flip", mutation="flip_k", rank=2))
        sc.append(dict(base, id=f"{algo}-padding", mutation="padding"))
    sc.append({"kind": "engine", "layout": "vllm", "algo": "fast", "id": "vllm-fast-clean"})
    return spawn(tmp, 4, sc)


@pytest.mark.parametrize("layout", ["sglang", "vllm", "megatron"])
@pytest.mark.parametrize("algo", ["fast", "sha256"])
def test_two_ranks_clean(two, layout, algo):
    check_clean(two[f"{layout}-{algo}-clean"], 2)


def test_fast_check_moves_only_partials(two):
    rep = two["sglang-fast-clean"][0]["report"]
    sha = two["sglang-sha256-clean"][0]["report"]
    # a few bytes per piece, against the whole model streamed for SHA-256
    assert rep["cost"]["bytes_moved"] < sha["cost"]["bytes_moved"] / 4


@pytest.mark.parametrize("layout", ["sglang", "vllm", "megatron"])
@pytest.mark.parametrize("algo", ["fast", "sha256"])
def test_two_ranks_flipped_k_element(two, layout, algo):
    tensor = K if layout != "megatron" else K
    check_found(two[f"{layout}-{algo}-flip"], "mismatch", tensor, 1)


@pytest.mark.parametrize("layout", ["sglang", "vllm", "megatron"])
@pytest.mark.parametrize("algo", ["fast", "sha256"])
def test_two_ranks_missing_tensor(two, layout, algo):
    rep = same_everywhere(two[f"{layout}-{algo}-missing"])
    assert not rep["ok"]
    hits = [f for f in rep["findings"] if f["status"] == "missing" and f["rank"] == 1]
    assert hits, rep["findings"]
    assert any(f["tensor"] == "model.layers.1.mlp.down_proj.weight" for f in hits), hits


@pytest.mark.parametrize("layout", ["sglang", "vllm"])
@pytest.mark.parametrize("algo", ["fast", "sha256"])
def test_two_ranks_padding_garbage(two, layout, algo):
    hits = check_found(two[f"{layout}-{algo}-padding"], "padding",
                       "model.embed_tokens.weight", 1)
    assert any(f["rank"] == 1 for f in hits)


def test_tied_embeddings(two):
    check_clean(two["sglang-fast-tied-clean"], 2)


def test_megatron_native_manifest_without_gather(two):
    for r in two["megatron-manifest"]:
        assert r["megatron"] == {k: v for k, v in r["reference"].items()}
        assert 0 < r["bytes_moved"] < 64 * 1024


def test_pipeline_stage_manifests_merged_over_the_group(two):
    assert all(r["equal"] for r in two["merge-over"])


@pytest.mark.parametrize("algo", ["fast", "sha256"])
def test_four_ranks(four, algo):
    check_clean(four[f"{algo}-clean"], 4)
    hits = check_found(four[f"{algo}-stale"], "replica_mismatch", K, 1)
    assert any(f["rank"] == 1 for f in hits)
    check_found(four[f"{algo}-flip"], "mismatch", K, 2)
    check_found(four[f"{algo}-padding"], "padding", "model.embed_tokens.weight", 3)
    check_clean(four["vllm-fast-clean"], 4)


def test_integration_recipes_with_engine_standins(two):
    """docs/integration.md: the Miles-style loop through SGLang's custom weight loaders, and
    vLLM's worker extension, on stand-ins of the engines' objects."""
    for r in two["recipes"]:
        assert r["sglang_ok"] is True and r["sglang_matched"] > 0
        ok, msg = r["sglang_bad"]
        assert ok is False  # enforce: the update request fails, carrying the report
        assert "model.layers.1.mlp.up_proj.weight" in msg and "rank 1" in msg
        bad = r["vllm_bad"]
        assert bad["ok"] is False
        assert any(f["tensor"] == "model.layers.1.mlp.up_proj.weight" for f in bad["findings"])
        assert r["vllm_ok"]["ok"] is True and r["vllm_ok"]["findings"] == []


def test_expected_answers_name_the_exact_rank(two):
    """With the engine-dialect answers (Manifest.expect) beside the manifest, the flipped
    element is pinned to rank 1's qkv_proj, not to every holder of k_proj."""
    check_clean(two["sglang-expect-clean"], 2)
    rep = same_everywhere(two["sglang-expect-flip_k"])
    exact = [f for f in rep["findings"] if f["rank"] == 1 and f["local"] == QKV]
    assert exact, rep["findings"]
    assert not [f for f in rep["findings"] if f["rank"] == 0], rep["findings"]
