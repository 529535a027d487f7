"""Issue 14's leftovers: the Python Checker takes force (as `serve --force`), a Python wrapper
of ws_compare_judge (judging a compare_checksum answer), `push --json` trouble as a
weightsum-error document, and the demo interrupted by a signal removing its directory."""
import fcntl
import json
import os
import signal
import socket
import subprocess
import sys

import pytest

from conftest import ROOT

sys.path.insert(0, os.path.join(ROOT, "python"))
import weightsum  # noqa: E402

from test_python_binding import dump  # noqa: E402,F401  (the vllm tp4 dump and its digests)


def test_checker_force(dump):
    """Plants: flags that disagree with the dump's weightsum-layout.json (sglang where it says
    vllm). Refused without force, as serve is; with force=True the flags win (vllm names its
    tensors as sglang does, so the forced layout still fits) and the check runs."""
    d, digests = dump
    with pytest.raises(weightsum.WeightsumError) as e:
        weightsum.Checker(str(d), "sglang", 4)
    assert "weightsum-layout.json" in str(e.value) or "force" in str(e.value), str(e.value)
    with weightsum.Checker(str(d), "sglang", 4, force=True) as c:
        st, ans = c.handle({"action": "compare_checksum", "checksums": digests})
        assert st == 200 and ans["matched"] == len(digests), ans
    # forced, a layout that cannot describe the dump is still refused
    with pytest.raises(weightsum.WeightsumError):
        weightsum.Checker(str(d), "sglang", 2, force=True)


def test_compare_judge(dump):
    """Plants: one wrong digest (model.norm.weight, replicated on all 4 ranks) in a
    compare_checksum request; the judged answer names it as a mismatch with its ranks; an
    engine's error answer is WS_ERR_REMOTE carrying its message, not a verdict."""
    d, digests = dump
    with weightsum.Checker(str(d)) as c:
        st, ok = c.handle({"action": "compare_checksum", "checksums": digests})
        st_bad, bad = c.handle({"action": "compare_checksum",
                                "checksums": dict(digests, **{"model.norm.weight": "0" * 64})})
    rep = weightsum.compare_judge(ok, st)
    assert rep["ok"] is True and rep["matched"] == len(digests) and rep["findings"] == [], rep
    rep = weightsum.compare_judge(json.dumps(bad), st_bad)
    assert rep["ok"] is False, rep
    f = [x for x in rep["findings"] if x["tensor"] == "model.norm.weight"]
    assert len(f) == 1 and f[0]["status"] == "mismatch", rep
    assert sorted(f[0].get("ranks") or [h["rank"] for h in f[0].get("held_by", [])]) == \
        [0, 1, 2, 3], f[0]
    with pytest.raises(weightsum.WeightsumError) as e:
        weightsum.compare_judge({"success": False, "message": "engine is sleeping"}, 400)
    assert e.value.code == "WS_ERR_REMOTE" and "engine is sleeping" in str(e.value)
    with pytest.raises(weightsum.WeightsumError):
        weightsum.compare_judge(b"not json")


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def test_push_json_transport_error_is_a_weightsum_error(dump, ws_bin):
    """Plants: an engine URL where nothing listens. `push --json` exits 2 and prints one
    weightsum-error document (docs/json.md) naming the URL, the answers list beside it; the
    one-line message still goes to stderr. A missing manifest is one too."""
    d = dump[0].parent
    url = f"http://127.0.0.1:{free_port()}"
    r = subprocess.run([ws_bin, "push", url, str(d / "man.json"), "--json", "--timeout", "5"],
                       capture_output=True, text=True)
    assert r.returncode == 2, (r.stdout, r.stderr)
    doc = json.loads(r.stdout)
    assert doc["format"] == "weightsum-error" and doc["version"] == 1 and doc["exit"] == 2
    assert doc["ok"] is False and doc["error"]["code"] == "WS_ERR_IO", doc
    assert doc["error"]["message"].startswith(url + "/weights_checker: "), doc
    assert [a["url"] for a in doc["answers"]] == [url + "/weights_checker"], doc
    assert doc["answers"][0]["error"], doc
    assert r.stderr.startswith("weightsum: " + url), r.stderr
    r = subprocess.run([ws_bin, "push", url, str(d / "nowhere.json"), "--json"],
                       capture_output=True, text=True)
    assert r.returncode == 2
    doc = json.loads(r.stdout)
    assert doc["format"] == "weightsum-error" and "nowhere.json" in doc["error"]["message"]


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_demo_interrupted_removes_its_directory(tmp_path, ws_bin, sig):
    """Plants: the demo stopped by a signal in the middle of its run (its stdout is a pipe
    already full, so its first write blocks after the checkpoint is written). Its directory
    must be gone, the process must still die of the signal, and stderr says so."""
    tmpdir = tmp_path / "t"
    tmpdir.mkdir()
    rd, wr = os.pipe()
    fcntl.fcntl(wr, fcntl.F_SETPIPE_SZ, 4096)
    size = fcntl.fcntl(wr, fcntl.F_GETPIPE_SZ)
    os.write(wr, b"x" * size)  # full: the demo's first flush blocks
    p = subprocess.Popen([ws_bin, "demo"], stdout=wr, stderr=subprocess.PIPE,
                         env=dict(os.environ, TMPDIR=str(tmpdir)))
    os.close(wr)
    # wait (no clock: the test's own timeout bounds it) until the demo wrote its checkpoint;
    # it then blocks on the full pipe before anything else
    while True:
        dirs = [x for x in tmpdir.iterdir() if x.name.startswith("weightsum-demo-")]
        if dirs and (dirs[0] / "model.safetensors").exists() and \
                (dirs[0] / "config.json").exists():
            break
        assert p.poll() is None, p.stderr.read()
        os.sched_yield()
    assert p.poll() is None  # still blocked: the signal lands mid-run
    p.send_signal(sig)
    err = p.stderr.read().decode()
    p.wait(timeout=60)
    os.close(rd)
    assert p.returncode == -sig, (p.returncode, err)
    assert list(tmpdir.iterdir()) == [], list(tmpdir.rglob("*"))
    assert "demo interrupted; its files in " + str(dirs[0]) + " are removed" in err, err
