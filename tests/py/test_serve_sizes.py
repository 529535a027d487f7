"""`serve --tp 1` on a TP=2 dump: the size said is the operator's word. With --ep or --pp
beside it (the parallel-config path, ws_checker_create_parallel) it was silently replaced by
weightsum-layout.json's tp 2; now every form of it is exit 2 naming both sizes, and a size not
given still comes from the dump."""
import json
import subprocess

import pytest

from test_http import Server, post
from test_layouts import config, make_model


@pytest.fixture(scope="module")
def dump(tmp_path_factory, ws_bin):
    tmp = tmp_path_factory.mktemp("sizes")

    def run(*a):
        return subprocess.run([ws_bin, *map(str, a)], capture_output=True, text=True)
    ckpt, _ = make_model(run, tmp, config("qwen2", 4))
    d = tmp / "d"
    assert run("shard", ckpt, "--layout", "sglang", "--tp", 2, "-o", d).returncode == 0
    with open(d / "config.json", "w") as f:
        json.dump(config("qwen2", 4), f)
    return d


@pytest.mark.parametrize("args", [["--tp", 1], ["--tp", 1, "--ep", 1], ["--tp", 1, "--pp", 1]])
def test_tp1_said_is_named(dump, run, args):
    r = run("serve", dump, "--port", 0, *args, timeout=60)
    assert r.returncode == 2, r.stdout + r.stderr
    line = r.stderr.strip()
    assert "\n" not in line and "tp 2" in line and "--tp 1" in line, line


@pytest.mark.parametrize("args", [["--ep", 1], ["--tp", 2, "--ep", 1], ["--pp", 1]])
def test_sizes_not_given_come_from_the_dump(dump, ws_bin, args):
    with Server(ws_bin, dump, *args) as s:
        st, ans = post(s.port, {"action": "checksum", "algorithm": "sha256"})
        assert st == 200 and ans["tp"] == 2, ans
