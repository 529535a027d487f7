"""A FIFO (or any non-regular file) where a safetensors file should be is refused at once
(exit 2, naming it), never opened for reading: given directly, found in a directory, listed in
an index, or as a dump's rank file. subprocess timeouts only bound a hang; nothing is timed."""
import json
import os
import shutil
import subprocess

import numpy as np
import pytest
from safetensors.numpy import save_file


def refused(ws_bin, *args):
    try:
        r = subprocess.run([ws_bin, *map(str, args)], capture_output=True, text=True,
                           timeout=60, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        pytest.fail("weightsum %s hung on a FIFO" % " ".join(map(str, args)))
    return r


def test_fifo_given_directly_in_a_dir_and_in_an_index(tmp_path, ws_bin):
    fifo = tmp_path / "model.safetensors"
    os.mkfifo(fifo)
    r = refused(ws_bin, "hash", fifo)
    assert r.returncode == 2 and "not a regular file (a FIFO)" in r.stderr, r.stderr
    r = refused(ws_bin, "hash", tmp_path)
    assert r.returncode == 2 and "model.safetensors" in r.stderr, r.stderr
    d = tmp_path / "idx"
    d.mkdir()
    save_file({"a": np.ones(4, np.float32)}, str(d / "one.safetensors"))
    os.mkfifo(d / "two.safetensors")
    (d / "model.safetensors.index.json").write_text(json.dumps(
        {"weight_map": {"a": "one.safetensors", "b": "two.safetensors"}}))
    r = refused(ws_bin, "hash", d / "model.safetensors.index.json")
    assert r.returncode == 2 and "two.safetensors" in r.stderr, r.stderr


def test_fifo_as_a_dump_rank_file(tmp_path, ws_bin, run):
    from test_layouts import config, make_model
    ckpt, man = make_model(run, tmp_path / "m", config("qwen2", 2))
    dump = tmp_path / "d"
    assert run("shard", ckpt, "--layout", "sglang", "--tp", 2, "-o", dump).returncode == 0
    rank1 = dump / "model-rank-1-part-0.safetensors"
    os.remove(rank1)
    os.mkfifo(rank1)
    for args in (("verify", man, dump), ("hash", dump)):
        r = refused(ws_bin, *args)
        assert r.returncode == 2 and "model-rank-1-part-0.safetensors" in r.stderr, r.stderr
        assert "not a regular file" in r.stderr
