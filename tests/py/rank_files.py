"""Models and rank files of an engine dump, shared by the layout tests (test_layouts,
test_moe_layouts, test_fp8_layouts, test_expert_maps, test_mla_layouts): a synthetic checkpoint
with its manifests, the path of rank r's file and an in-place mutation of its tensors."""
import json
import os

from safetensors.numpy import load_file, save_file


def rank_file(d, rank):
    return os.path.join(d, f"model-rank-{rank}-part-0.safetensors")


def mutate(d, rank, fn, load=load_file, save=save_file):
    """Load rank `rank`'s tensors (numpy by default; pass safetensors.torch's load_file /
    save_file for dtypes numpy lacks), let fn change the dict, write it back."""
    t = load(rank_file(d, rank))
    fn(t)
    save(t, rank_file(d, rank))


def make_model(run, d, cfg):
    """config.json from cfg, `weightsum synth` of it, and its sha256 and fast manifests."""
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(cfg, f)
    ckpt = os.path.join(d, "model.safetensors")
    r = run("synth", os.path.join(d, "config.json"), "-o", ckpt)
    assert r.returncode == 0, r.stderr
    mans = {}
    for algo in ("sha256", "fast"):
        mans[algo] = os.path.join(d, f"manifest-{algo}.json")
        assert run("hash", ckpt, "--algo", algo, "-o", mans[algo]).returncode == 0
    return ckpt, mans
