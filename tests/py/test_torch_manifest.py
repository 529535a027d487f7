"""weightsum.torch.Manifest, the trainer side: digests of torch tensors as a converter yields
them equal hashlib's over PyTorch's own bf16 bytes and the CLI's manifests of the same tensors
(`weightsum verify` accepts what save() writes, and rejects it after one element changes);
the chunked host stream (CUDA tensors with host_copy=True) equals the one-shot digest for
every dtype and chunk size; device tensors are refused rather than silently copied; merging
per-stage manifests; duplicate and conflicting names are errors."""
import hashlib
import json
import os
import subprocess
import sys

import pytest

torch = pytest.importorskip("torch")
from safetensors.torch import save_file  # noqa: E402

from conftest import ROOT  # noqa: E402

sys.path.insert(0, os.path.join(ROOT, "python"))
import weightsum  # noqa: E402
import weightsum.torch as wt  # noqa: E402


def tensors():
    g = torch.Generator().manual_seed(7)
    return {
        "model.embed_tokens.weight": torch.randn(50, 16, generator=g),
        "model.layers.0.self_attn.q_proj.weight": torch.randn(16, 16, generator=g).bfloat16(),
        "model.layers.0.mlp.up_proj.weight": torch.randn(24, 16, generator=g).half(),
        "model.norm.weight": torch.randn(16, generator=g).double(),
        "step": torch.tensor([3, 1, 4], dtype=torch.int64),
    }


def ref_sha(t):
    t = t.detach()
    if t.is_floating_point():
        t = t.float().to(torch.bfloat16) if t.dtype == torch.float64 else t.to(torch.bfloat16)
    return hashlib.sha256(t.contiguous().view(torch.uint8).numpy().tobytes()).hexdigest()


@pytest.mark.parametrize("algo", ["sha256", "fast", "both"])
def test_digests_equal_hashlib_and_the_binding(algo):
    m = wt.Manifest(algo=algo)
    ts = tensors()
    m.add_all(ts.items())
    d = m.to_dict()
    assert d["algorithms"] == {"sha256": ["sha256"], "fast": ["fast"],
                               "both": ["sha256", "fast"]}[algo]
    assert set(d["tensors"]) == set(ts) and len(m) == len(ts)
    for name, t in ts.items():
        e = d["tensors"][name]
        assert e["shape"] == list(t.shape)
        if "sha256" in d["algorithms"]:
            assert e["sha256"] == ref_sha(t) == weightsum.sha256_tensor(t)
        if "fast" in d["algorithms"]:
            assert e["fast"] == weightsum.fast_tensor(t)


def test_non_contiguous_tensor_digests_as_its_contiguous_copy():
    t = torch.randn(12, 8).t()  # a transposed view
    m = wt.Manifest(algo="both")
    m.add("w", t)
    m2 = wt.Manifest(algo="both")
    m2.add("w", t.contiguous())
    assert m.to_dict()["tensors"]["w"] == m2.to_dict()["tensors"]["w"]


def test_nan_and_inf_counted():
    t = torch.tensor([1.0, float("nan"), float("inf"), -float("inf"), float("nan")])
    m = wt.Manifest()
    m.add("x", t)
    e = m.digest("x")
    assert (e["nan"], e["inf"]) == (2, 2)


def test_saved_manifest_verifies_with_the_cli_and_catches_a_flip(tmp_path, ws_bin):
    ts = tensors()
    ckpt = tmp_path / "model.safetensors"
    save_file({k: v.contiguous() for k, v in ts.items()}, str(ckpt))
    for algo in ("sha256", "fast", "both"):
        m = wt.Manifest(algo=algo)
        m.add_all(ts.items())
        path = tmp_path / f"{algo}.json"
        m.save(path)
        assert not [p for p in os.listdir(tmp_path) if p.startswith(f"{algo}.json.")]
        r = subprocess.run([ws_bin, "verify", str(path), str(ckpt)], capture_output=True,
                           text=True)
        assert r.returncode == 0, r.stdout + r.stderr
    bad = dict(ts)
    bad["model.layers.0.mlp.up_proj.weight"] = bad["model.layers.0.mlp.up_proj.weight"].clone()
    bad["model.layers.0.mlp.up_proj.weight"][5, 3] += 1
    m = wt.Manifest(algo="both")
    m.add_all(bad.items())
    m.save(tmp_path / "bad.json")
    r = subprocess.run([ws_bin, "verify", str(tmp_path / "bad.json"), str(ckpt)],
                       capture_output=True, text=True)
    assert r.returncode == 1
    assert "model.layers.0.mlp.up_proj.weight" in r.stdout + r.stderr


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16, torch.float64,
                                   torch.int32, torch.uint8])
@pytest.mark.parametrize("chunk", [1, 7, 64, 1 << 20])
def test_chunked_stream_equals_the_one_shot_digest(dtype, chunk):
    g = torch.Generator().manual_seed(int(chunk))
    x = (torch.randn(13, 11, generator=g) * 50).to(dtype)
    key = wt._Key(None)
    code = wt._ws_dtype(x)
    for canon in (0, 1):
        h = wt._StreamHasher(code, canon, 3, key, list(x.shape))
        flat = x.reshape(-1)
        for i in range(0, flat.numel(), chunk):
            part = flat[i:i + chunk].contiguous()
            h.update(part.data_ptr(), part.numel())
        d, st = h.final()
        ref, rst = wt._digest_buffer(code, canon, x.data_ptr(), list(x.shape), 3, key)
        assert bytes(d.sha256) == bytes(ref.sha256)
        assert list(d.fast.lane) == list(ref.fast.lane)
        assert (st.nan, st.inf) == (rst.nan, rst.inf)


def test_device_tensor_refused_without_host_copy():
    t = torch.empty(4, 4, device="meta")
    m = wt.Manifest()
    with pytest.raises(weightsum.WeightsumError) as e:
        m.add("model.layers.0.mlp.up_proj.weight", t)
    assert "model.layers.0.mlp.up_proj.weight" in str(e.value)
    assert "host_copy" in str(e.value) and len(m) == 0


def test_duplicate_name_is_an_error():
    m = wt.Manifest()
    m.add("w", torch.ones(3))
    with pytest.raises(weightsum.WeightsumError, match="'w' added twice"):
        m.add("w", torch.ones(3))


def test_merge_of_pipeline_stages(tmp_path):
    ts = tensors()
    names = sorted(ts)
    full = wt.Manifest(algo="both")
    full.add_all(ts.items())
    stage0 = wt.Manifest(algo="both", source="pp0")
    stage1 = wt.Manifest(algo="both", source="pp1")
    for n in names[:2]:
        stage0.add(n, ts[n])
    for n in names[2:]:
        stage1.add(n, ts[n])
    stage1.add(names[0], ts[names[0]])  # a tensor both stages hold (tied), equal digests
    stage1.save(tmp_path / "pp1.json")
    merged = wt.Manifest.merge([stage0, str(tmp_path / "pp1.json")])
    assert merged.to_dict()["tensors"] == full.to_dict()["tensors"]
    assert merged.source == "pp0+pp1"
    # the same name with different bytes in two stages is named
    other = wt.Manifest(algo="both", source="pp2")
    other.add(names[1], ts[names[1]] + 1)
    with pytest.raises(weightsum.WeightsumError) as e:
        wt.Manifest.merge([stage0, other])
    assert names[1] in str(e.value) and "pp0" in str(e.value) and "pp2" in str(e.value)
    # manifests of different algorithms cannot merge
    with pytest.raises(weightsum.WeightsumError):
        wt.Manifest.merge([stage0, wt.Manifest(algo="sha256")])


def test_loaded_manifest_round_trips(tmp_path):
    m = wt.Manifest(algo="fast", key="my-seed")
    m.add_all(tensors().items())
    m.save(tmp_path / "m.json")
    back = wt.Manifest.load(str(tmp_path / "m.json"))
    assert back.to_dict() == m.to_dict()
    assert back.key_id == m.key_id != wt.Manifest(algo="fast").key_id
    assert json.loads(back.to_json())["tensors"].keys() == tensors().keys()


def test_expect_from_the_same_tensors():
    """Manifest.expect gives weightsum.expect's answers (the engine dialects) from the tensors
    the manifest digested; a device tensor needs host_copy."""
    cfg = {"model_type": "qwen2", "hidden_size": 64, "intermediate_size": 96,
           "num_hidden_layers": 1, "num_attention_heads": 4, "num_key_value_heads": 2,
           "vocab_size": 100, "tie_word_embeddings": True}
    sys.path.insert(0, os.path.join(ROOT, "tests", "py"))
    import torch_dist_worker as W
    hf = W.hf_state(cfg)
    m = wt.Manifest(algo="fast", keep_tensors=True)
    m.add_all(hf.items())
    for engine, device in (("sglang", "cuda"), ("sglang", "cpu"), ("vllm", "cuda")):
        got = m.expect("sglang", 2, cfg, engine=engine, device=device)
        ref = weightsum.expect(hf, "sglang", 2, cfg, engine=engine, device=device,
                               source="trainer")
        assert got == ref
    # a changed element changes the answer of the rank that holds it, and only that one
    bad = dict(hf)
    bad["model.layers.0.mlp.down_proj.weight"] = bad["model.layers.0.mlp.down_proj.weight"].clone()
    bad["model.layers.0.mlp.down_proj.weight"][0, 60] += 1  # column 60: rank 1 of 2
    other = wt.Manifest(algo="fast").expect("sglang", 2, cfg, tensors=bad)["ranks"]
    good = m.expect("sglang", 2, cfg)["ranks"]
    down = "model.layers.0.mlp.down_proj.weight"
    assert other[0]["checksums"] == good[0]["checksums"]
    assert other[1]["checksums"][down] != good[1]["checksums"][down]
    assert {k: v for k, v in other[1]["checksums"].items() if k != down} == \
        {k: v for k, v in good[1]["checksums"].items() if k != down}
    with pytest.raises(ValueError, match="keep_tensors"):
        wt.Manifest().expect("sglang", 2, cfg)
    with pytest.raises(weightsum.WeightsumError, match="host_copy"):
        wt.Manifest().expect("sglang", 2, cfg, tensors={"x": torch.empty(2, device="meta")})
