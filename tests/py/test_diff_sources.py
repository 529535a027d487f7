"""`diff` reads its reference checkpoint through sources (issue 8): a reference cut while
diff reads it (an engine or trainer re-saving in place) is exit 2 naming that file, never a
signal and never "match", against a dump or another checkpoint, in both read modes; the cut
made at every phase of the run through the fstat shim of test_read_modes (the mapped reader's
fault window every time: diff once read the reference inside the dump's guarded read, which
ended the guard and let the dump's next touch kill the process); `--read mmap` and `--read
pread` print the same; a difference planted in the reference (not the dump) is still located:
element, engine tensor, rank."""
import os
import shutil
import subprocess
import time

import pytest

import numpy as np
from safetensors.numpy import load_file, save_file

from rank_files import rank_file
from test_layouts import config, make_model
from test_read_modes import shim  # noqa: F401  (the fixture)

MODES = ("mmap", "pread")

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


def cli_model(run, tmp_path):
    ckpt, _ = make_model(run, tmp_path, config("qwen2", 4))
    for layout in ("sglang", "vllm"):
        assert run("shard", ckpt, "--layout", layout, "--tp", 2, "-o",
                   tmp_path / layout).returncode == 0
    other = tmp_path / "other.safetensors"
    shutil.copy(ckpt, other)
    return ckpt, other


@pytest.mark.parametrize("what", ["reference", "rank", "a", "b"])
@pytest.mark.parametrize("mode", MODES)
def test_cut_at_every_phase(tmp_path, run, ws_bin, shim, mode, what):  # noqa: F811
    """The shim cuts the victim at its k-th fstat (k = 1, 2, 3, 4, 6, 8, 12, ...: at open,
    then before later mapped chunks; pread calls fstat only at open) and keeps reporting the
    old size: whatever phase the cut lands in, exit 2 and one line naming the victim, until k
    passes the last fstat (the file then stays whole and diff answers 0)."""
    ckpt, other = cli_model(run, tmp_path)
    d = tmp_path / "sglang"
    args, victim = {"reference": (["diff", ckpt, d], ckpt),
                    "rank": (["diff", ckpt, d], rank_file(d, 1)),
                    "a": (["diff", ckpt, other], ckpt),
                    "b": (["diff", ckpt, other], other)}[what]
    victim = str(victim)
    keep = str(tmp_path / "keep")
    shutil.copy(victim, keep)
    size = os.path.getsize(victim)
    cuts = 0
    steps = sorted({int(m * 2 ** e) for e in range(24) for m in (1, 1.5)})
    for at in steps:
        shutil.copy(keep, victim)
        env = dict(os.environ, LD_PRELOAD=shim, WS_SHIM_FILE=victim, WS_SHIM_CUT=str(size // 3),
                   WS_SHIM_AT=str(at))
        r = subprocess.run([ws_bin, *map(str, args), "--read", mode], capture_output=True,
                           text=True, timeout=600, env=env)
        assert r.returncode >= 0, (at, r.returncode, r.stderr)  # no signal, ever
        if os.path.getsize(victim) == size:  # no k-th fstat: the run read the whole file
            assert r.returncode == 0, (at, r.stdout, r.stderr)
            break
        cuts += 1
        assert r.returncode == 2, (at, r.returncode, r.stdout, r.stderr)
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and victim in lines[0] and "shrank" in lines[0], (at, r.stderr)
    else:
        raise AssertionError("the shim cut the file at every step")
    assert cuts >= (2 if mode == "mmap" else 1), cuts  # at open (and while mapped reads run)
    shutil.copy(keep, victim)


def test_read_modes_print_the_same(tmp_path, run):
    """Clean and with a flip in the reference: both modes' output byte for byte, over sglang
    and vllm dumps and a checkpoint pair, text and JSON."""
    ckpt, other = cli_model(run, tmp_path)
    for state in ("clean", "flipped"):
        if state == "flipped":
            t = load_file(ckpt)
            a = t["model.layers.0.self_attn.q_proj.weight"].copy()
            a.view(np.uint32)[3, 7] ^= np.uint32(1 << 30)
            t["model.layers.0.self_attn.q_proj.weight"] = a
            save_file(t, ckpt)
        for b in (tmp_path / "sglang", tmp_path / "vllm", other):
            for fmt in ([], ["--json"]):
                outs = [run("diff", ckpt, b, *fmt, "--read", m) for m in MODES]
                assert outs[0].returncode == (0 if state == "clean" else 1), outs[0].stdout
                assert [(o.returncode, o.stdout, o.stderr) for o in outs[1:]] == \
                    [(outs[0].returncode, outs[0].stdout, outs[0].stderr)]
