"""`diff` reads its reference checkpoint through sources (issue 8): a reference cut while
diff reads it (an engine or trainer re-saving in place) is exit 2 naming that file, never a
signal and never "match", against a dump or another checkpoint; a difference planted in the
reference (not the dump) is still located: element, engine tensor, rank."""
import os
import shutil
import subprocess
import time

import numpy as np
from safetensors.numpy import load_file, save_file

from test_layouts import config, make_model

BIG = {"model_type": "llama", "hidden_size": 1024, "intermediate_size": 4096,
       "num_hidden_layers": 4, "num_attention_heads": 8, "num_key_value_heads": 8,
       "vocab_size": 8192, "tie_word_embeddings": False}


def test_reference_truncated_while_diffed(tmp_path, run, ws_bin):
    """The cut at once lands before the read ends, so it must fail; a later cut may land
    after the last byte was read, and then the verdict is the truth about what was read."""
    ckpt, _ = make_model(run, tmp_path, BIG)
    d = tmp_path / "d"
    assert run("shard", ckpt, "--layout", "vllm", "--tp", 2, "-o", d).returncode == 0
    other = str(tmp_path / "other.safetensors")
    shutil.copy(ckpt, other)
    keep = str(tmp_path / "victim.keep")
    shutil.copy(ckpt, keep)
    size = os.path.getsize(ckpt)
    for args in (["diff", ckpt, d], ["diff", ckpt, other], ["diff", other, ckpt]):
        for delay in (0.0, 0.02, 0.1, 0.3):
            shutil.copy(keep, ckpt)
            p = subprocess.Popen([ws_bin, *map(str, args)], stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True)
            time.sleep(delay)
            alive = p.poll() is None
            os.truncate(ckpt, size // 3)
            out, err = p.communicate(timeout=600)
            assert p.returncode >= 0, (args, delay, p.returncode, err)  # no signal, ever
            if delay == 0.0:
                assert alive and p.returncode == 2, (args, p.returncode, out, err)
            elif p.returncode == 0:
                continue
            assert p.returncode == 2, (args, delay, p.returncode, out, err)
            assert ckpt in err and len(err.strip().splitlines()) == 1, err
    shutil.copy(keep, ckpt)


def test_difference_in_reference_located(tmp_path, run):
    """The flip is in the trainer's file, the dump is intact: diff still names the element,
    the engine tensor and the rank that holds it (rank 1 of a TP=2 row-parallel shard)."""
    ckpt, _ = make_model(run, tmp_path, config("qwen2", 4))
    d = tmp_path / "d"
    assert run("shard", ckpt, "--layout", "sglang", "--tp", 2, "-o", d).returncode == 0
    assert run("diff", ckpt, d).returncode == 0
    name = "model.layers.1.mlp.down_proj.weight"
    t = load_file(ckpt)
    a = t[name].copy()
    cols = a.shape[1]
    a.view(np.uint32)[5, cols - 2] ^= np.uint32(1 << 30)
    t[name] = a
    save_file(t, ckpt)
    r = run("diff", ckpt, d)
    assert r.returncode == 1, r.stdout + r.stderr
    line = [l for l in r.stdout.splitlines() if l.startswith(name + ":")]
    assert len(line) == 1, r.stdout
    assert f"first at {5 * cols + cols - 2} [5, {cols - 2}]" in line[0], line[0]
    assert f"element [5, {cols // 2 - 2}] of {name} on rank 1" in line[0], line[0]
