"""Rank files of an engine dump, shared by the layout tests (test_layouts, test_moe_layouts,
test_fp8_layouts): the path of rank r's file and an in-place mutation of its tensors."""
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
