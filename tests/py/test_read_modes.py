"""The two ways the CLI reads weights (--read mmap, the default, and --read pread) give
byte-identical outputs, warm or cold (read ahead by the file sources' helper); and a file
cut while it is read through the mapping, after the size check that precedes each mapped
chunk, is the one-line error naming it (exit 2), not a SIGBUS death: an LD_PRELOAD shim (tests/c/fstat_shim.c) cuts the file when it is opened and makes
fstat keep reporting the old size, so the touch of its pages faults every time. A SIGBUS that
is not the library's still kills the process."""
import ctypes
import json
import os
import shutil
import signal
import subprocess
import time

import pytest

from test_exports import lib_path
from rank_files import make_model, rank_file

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ASAN = "asan" in os.environ.get("WEIGHTSUM_BIN", "")
MODES = ("mmap", "pread")
# several 8 MiB chunks per tensor, dim-0 and dim-1 shards (band reads) in the dump
BIG = {"model_type": "llama", "hidden_size": 1024, "intermediate_size": 4096,
       "num_hidden_layers": 2, "num_attention_heads": 8, "num_key_value_heads": 4,
       "vocab_size": 8192, "tie_word_embeddings": False}


@pytest.fixture(scope="module")
def model(tmp_path_factory, ws_bin):
    def run(*args):
        return subprocess.run([ws_bin, *map(str, args)], capture_output=True, text=True,
                              timeout=600)
    tmp = tmp_path_factory.mktemp("read_modes")
    ckpt, mans = make_model(run, tmp, BIG)
    for layout in ("sglang", "vllm"):
        assert run("shard", ckpt, "--layout", layout, "--tp", 2, "-o",
                   tmp / layout).returncode == 0
    return tmp, ckpt, mans


@pytest.fixture(scope="module")
def shim(tmp_path_factory):
    if ASAN:
        pytest.skip("the LD_PRELOAD shim does not mix with ASan's interposition")
    cc = shutil.which("cc") or shutil.which("gcc")
    if not cc:
        pytest.skip("no C compiler for the fstat shim")
    so = str(tmp_path_factory.mktemp("shim") / "fstat_shim.so")
    src = os.path.join(ROOT, "tests", "c", "fstat_shim.c")
    r = subprocess.run([cc, "-shared", "-fPIC", "-O1", "-Wall", "-Wextra", "-Werror", "-o", so,
                        src, "-ldl"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return so


def run_mode(ws_bin, mode, *args, env=None):
    flag = [] if args[0] in ("expect", "shard") else ["--read", mode]
    return subprocess.run([ws_bin, *map(str, args), *flag], capture_output=True,
                          text=True, timeout=600, env=env)


@pytest.mark.parametrize("what", ["checkpoint", "sglang", "vllm"])
@pytest.mark.parametrize("algo", ["sha256", "fast", "both"])
def test_modes_give_identical_manifests(model, ws_bin, tmp_path, what, algo):
    tmp, ckpt, _ = model
    src = ckpt if what == "checkpoint" else tmp / what
    out = {}
    for mode in MODES:
        path = tmp_path / f"{mode}.json"
        r = run_mode(ws_bin, mode, "hash", src, "--algo", algo, "-j", 2, "-o", path)
        assert r.returncode == 0, r.stderr
        with open(path, "rb") as f:
            out[mode] = f.read()
        # the lines form too, and the default (mmap) without the flag
        r2 = subprocess.run([ws_bin, "hash", str(src), "--algo", algo], capture_output=True)
        r3 = run_mode(ws_bin, mode, "hash", src, "--algo", algo)
        assert r2.returncode == 0 and r3.returncode == 0
        assert r2.stdout == r3.stdout.encode()
    assert out["mmap"] == out["pread"]
    assert len(json.loads(out["mmap"])["tensors"]) > 0


def flip_last_byte(f):
    """Flip a bit of the top byte of the last f32 of the last tensor, on disk (fsync: an
    eviction that follows drops the page)."""
    with open(f, "r+b") as fh:
        fh.seek(os.path.getsize(f) - 1)
        b = fh.read(1)
        fh.seek(-1, 1)
        fh.write(bytes([b[0] ^ 0x40]))
        fh.flush()
        os.fsync(fh.fileno())


@pytest.mark.parametrize("layout", ["sglang", "vllm"])
def test_modes_give_identical_verdicts(model, ws_bin, tmp_path, layout):
    """verify --json of a clean dump and of one with a flipped element: the same bytes."""
    tmp, ckpt, mans = model
    d = tmp_path / "d"
    shutil.copytree(tmp / layout, d)
    outs = {}
    for state in ("clean", "bad"):
        if state == "bad":
            flip_last_byte(rank_file(d, 1))
        for algo in ("sha256", "fast"):
            for mode in MODES:
                r = run_mode(ws_bin, mode, "verify", mans[algo], d, "--json", "-j", 1)
                outs[(state, algo, mode)] = (r.returncode, r.stdout)
            assert outs[(state, algo, "mmap")] == outs[(state, algo, "pread")]
            assert outs[(state, algo, "mmap")][0] == (0 if state == "clean" else 1)


_libc = ctypes.CDLL(None, use_errno=True)
_libc.mmap.restype = ctypes.c_void_p
_libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                       ctypes.c_int, ctypes.c_long]
_libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
_libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_char_p]


def resident(path):
    """The fraction of path's pages the page cache holds (mincore of a read-only mapping)."""
    n = os.path.getsize(path)
    page = os.sysconf("SC_PAGE_SIZE")
    with open(path, "rb") as f:
        addr = _libc.mmap(None, n, 1, 1, f.fileno(), 0)  # PROT_READ, MAP_SHARED
        assert addr not in (None, ctypes.c_void_p(-1).value)
        try:
            vec = ctypes.create_string_buffer((n + page - 1) // page)
            assert _libc.mincore(addr, n, vec) == 0
            return sum(b & 1 for b in vec.raw) / len(vec.raw)
        finally:
            _libc.munmap(addr, n)


def evict(paths):
    for p in paths:
        with open(p, "rb") as f:
            os.fsync(f.fileno())  # dirty pages (a fresh copy) are not dropped
            os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
    if max(resident(p) for p in paths) > 0.1:
        pytest.skip("the file system keeps these files in memory: no cold read to test")


@pytest.mark.parametrize("what", ["checkpoint", "sglang"])
@pytest.mark.parametrize("jobs", [1, 2])
def test_cold_reads_match_warm(model, ws_bin, tmp_path, what, jobs):
    """From a cold page cache, where each file source's read-ahead helper runs (one thread
    reading; with two it turns itself off), both modes give the warm run's bytes, and a flipped
    element is still found."""
    tmp, ckpt, mans = model
    if what == "checkpoint":
        src = tmp_path / "model.safetensors"
        shutil.copy(ckpt, src)
        files = [src]
    else:
        src = tmp_path / "d"
        shutil.copytree(tmp / what, src)
        files = sorted(src.glob("*.safetensors"))
    warm = run_mode(ws_bin, "pread", "hash", src, "--algo", "both", "-j", jobs)
    assert warm.returncode == 0, warm.stderr
    for mode in MODES:
        evict(files)
        cold = run_mode(ws_bin, mode, "hash", src, "--algo", "both", "-j", jobs)
        assert cold.returncode == 0, cold.stderr
        assert cold.stdout == warm.stdout, mode
    if what == "checkpoint":
        return
    flip_last_byte(rank_file(src, 1))
    want = run_mode(ws_bin, "pread", "verify", mans["fast"], src, "--json", "-j", jobs)
    assert want.returncode == 1, want.stderr
    for mode in MODES:
        evict(files)
        got = run_mode(ws_bin, mode, "verify", mans["fast"], src, "--json", "-j", jobs)
        assert (got.returncode, got.stdout) == (1, want.stdout), mode


def cut_env(shim, victim, cut, at=1, count=None):
    env = dict(os.environ)
    env.update(LD_PRELOAD=shim, WS_SHIM_FILE=str(victim), WS_SHIM_CUT=str(cut), WS_SHIM_AT=str(at))
    if count:
        env["WS_SHIM_COUNT"] = str(count)
    return env


CASES = {  # args (victim: ckpt or rank 1 of the dump), and whether -o writes a file
    "hash-checkpoint": lambda ckpt, d, man, out: (["hash", ckpt, "-j", 1, "-o", out], ckpt),
    "hash-checkpoint-j2": lambda ckpt, d, man, out: (["hash", ckpt, "-j", 2, "-o", out], ckpt),
    "hash-dump": lambda ckpt, d, man, out: (["hash", d, "--algo", "fast", "-j", 1, "-o", out],
                                            rank_file(d, 1)),
    "verify-dump": lambda ckpt, d, man, out: (["verify", man, d, "-j", 2], rank_file(d, 1)),
    "verify-checkpoint": lambda ckpt, d, man, out: (["verify", man, ckpt, "-j", 1], ckpt),
    "diff-dump": lambda ckpt, d, man, out: (["diff", ckpt, d], rank_file(d, 1)),
    "diff-reference": lambda ckpt, d, man, out: (["diff", ckpt, d], ckpt),
    "diff-checkpoints": lambda ckpt, d, man, out: (["diff", str(ckpt) + ".a", ckpt], ckpt),
    # commands that read the checkpoint through its mapping and have no --read
    "expect-cuda": lambda ckpt, d, man, out: (["expect", ckpt, "--layout", "sglang", "--tp", 2,
                                               "-j", 2, "-o", out], ckpt),
    "expect-vllm": lambda ckpt, d, man, out: (["expect", ckpt, "--layout", "vllm", "--tp", 2,
                                               "--engine", "vllm", "-j", 1, "-o", out], ckpt),
    "shard": lambda ckpt, d, man, out: (["shard", ckpt, "--layout", "sglang", "--tp", 2, "-o",
                                         os.path.join(os.path.dirname(out), "tp2")], ckpt),
}
NO_READ_FLAG = {"expect-cuda", "expect-vllm", "shard"}


@pytest.mark.parametrize("mode,when", [("mmap", "open"), ("mmap", "mid"), ("pread", "open")])
@pytest.mark.parametrize("case", sorted(CASES))
def test_file_cut_after_size_check(model, ws_bin, shim, tmp_path, request, mode, when, case):
    """The shim cuts the victim to a third when it is opened (or, "mid", at the middle one of
    the size checks a clean run makes) and fstat keeps saying the old size: the mapped reader's
    check passes, then mapping the chunk in (MADV_POPULATE_READ) fails on the lost pages, or,
    where nothing maps them first (expect, shard: pieces read in place; a kernel without
    MADV_POPULATE_READ), the touch faults (the guard's line, in the same words); the pread
    reader comes back short (the library's line). Either way: exit 2, one line naming the file, no signal death, no
    output file and no temporary file beside it. ("mid" found a walk whose callback reads a
    second file through its mapping, diff's reference inside the dump's walk, ending the
    outer touch's record.)"""
    if case in NO_READ_FLAG and mode == "pread":
        pytest.skip("expect and shard read through the mapping: no --read")
    tmp, ckpt0, mans = model
    ckpt = tmp_path / "model.safetensors"
    d = tmp_path / "d"
    outdir = tmp_path / "out"
    outdir.mkdir()
    out = outdir / "manifest.json"
    args, victim = CASES[case](ckpt, d, mans["fast"], out)
    # only the victim is a copy (the shim cuts it); the rest links to the module's files, so
    # the 40-odd cases do not fill the disk (each copy is 185 MB)
    shutil.copy(tmp / "config.json", tmp_path / "config.json")
    os.symlink(ckpt0, str(ckpt) + ".a")
    if str(victim) == str(ckpt):
        shutil.copy(ckpt0, ckpt)
    else:
        os.symlink(ckpt0, ckpt)
    if str(victim).startswith(str(d)):
        shutil.copytree(tmp / "sglang", d)
    else:
        os.symlink(tmp / "sglang", d)
    def drop_copies():
        for p in (ckpt, d):
            if os.path.isdir(p) and not os.path.islink(p):
                shutil.rmtree(p)
            elif os.path.lexists(p):
                os.remove(p)
    request.addfinalizer(drop_copies)
    size = os.path.getsize(victim)
    at = 1
    if when == "mid":
        count = tmp_path / "count"
        r = run_mode(ws_bin, mode, *args, env=cut_env(shim, victim, size // 3, 10**9, count))
        assert r.returncode == 0, r.stderr
        shutil.rmtree(outdir)  # what the counting run wrote
        outdir.mkdir()
        at = max(2, int(count.read_text()) // 2)
    r = run_mode(ws_bin, mode, *args, env=cut_env(shim, victim, size // 3, at))
    assert os.path.getsize(victim) == size // 3, "the shim did not cut the file"
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)  # not -SIGBUS
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and str(victim) in lines[0] and "shrank" in lines[0], r.stderr
    assert lines[0].startswith("weightsum: ")
    if mode == "mmap":  # the fault happened and the guard said it
        assert "a mapped page past its new end" in lines[0], lines[0]
    else:
        assert f"shrank to {size // 3} bytes" in lines[0] or "shrank to" in lines[0], lines[0]
        assert "mapped page" not in lines[0]
    if case == "shard":  # rank files are written whole, each after its tensors are read
        left = [f for _, _, fs in os.walk(outdir) for f in fs]
        assert not [f for f in left if ".tmp." in f], left
        assert len(left) <= 1, left  # rank 0's, when the cut came while rank 1 was read
    else:
        assert os.listdir(outdir) == [], os.listdir(outdir)


def test_guard_json_error(model, ws_bin, shim, tmp_path):
    """With --json the guard's error is the JSON error object on stdout too (docs/json.md)."""
    tmp, ckpt0, _ = model
    ckpt = tmp_path / "model.safetensors"
    shutil.copy(ckpt0, ckpt)
    size = os.path.getsize(ckpt)
    r = run_mode(ws_bin, "mmap", "hash", ckpt, "--json", "-j", 1,
                 env=cut_env(shim, ckpt, size // 2))
    assert r.returncode == 2, r.stderr
    doc = json.loads(r.stdout)
    assert doc["format"] == "weightsum-error" and doc["ok"] is False and doc["exit"] == 2
    e = doc["error"]
    assert e["code"] == "WS_ERR_IO" and e["file"] == str(ckpt), e
    assert e["offset"] >= size // 2 - 4096 and e["tensor"], e
    assert e["message"] == r.stderr.strip()[len("weightsum: "):]


@pytest.mark.skipif(ASAN, reason="ASan keeps its own SIGBUS handler and aborts (SIGABRT)")
def test_other_sigbus_still_kills(ws_bin, tmp_path):
    """A SIGBUS that is not a fault in the range being read (here: sent by kill while
    `verify -` waits on stdin) is the default action: death by the signal, not exit 2."""
    import resource

    def no_core():
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    p = subprocess.Popen([os.path.abspath(ws_bin), "verify", "-", str(tmp_path / "x.safetensors")],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         preexec_fn=no_core, cwd=tmp_path)
    try:
        # wait until main has installed the guard (then it blocks reading stdin)
        bit = 1 << (signal.SIGBUS - 1)
        while p.poll() is None:
            with open(f"/proc/{p.pid}/status") as f:
                caught = int(f.read().split("SigCgt:")[1].split()[0], 16)
            if caught & bit:
                break
            time.sleep(0.01)
        assert p.poll() is None, p.communicate()
        os.kill(p.pid, signal.SIGBUS)
        p.communicate(timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == -signal.SIGBUS, p.returncode


def test_library_default_stays_pread():
    lib = ctypes.CDLL(lib_path())
    assert lib.ws_read_mode() == 1  # WS_READ_PREAD: Python and C callers copy, never fault
    assert lib.ws_set_read_mode(7, None) != 0  # WS_ERR_ARG
    assert lib.ws_read_mode() == 1
    buf = ctypes.create_string_buffer(64)
    assert lib.ws_mapped_read_current(buf) == 0  # no read in progress on this thread


def test_serve_sglang_checksum_of_cut_file(model, ws_bin, shim, tmp_path, monkeypatch):
    """`serve` (pread, its default) answers SGLang's own checksum (no "algorithm") by reading
    every tensor through the rank's source: a rank file cut after it was opened is an error
    answer naming it, and the server lives on to answer the next request (it once hashed the
    mapping directly, and the cut killed it with SIGBUS)."""
    from test_http import Server, post
    tmp, _, _ = model
    d = tmp_path / "d"
    shutil.copytree(tmp / "sglang", d)
    victim = rank_file(d, 1)
    size = os.path.getsize(victim)
    for k, v in cut_env(shim, victim, size // 3).items():
        monkeypatch.setenv(k, v)
    with Server(ws_bin, d, "-j", 2) as s:
        st, ans = post(s.port, {"action": "checksum"})
        assert os.path.getsize(victim) == size // 3, "the shim did not cut the file"
        assert ans["success"] is False, ans
        assert str(victim) in ans["message"] and "shrank" in ans["message"], ans
        assert s.proc.poll() is None, "".join(s.err)
        st, ans = post(s.port, {"action": "checksum"})  # still there, still says it
        assert ans["success"] is False and str(victim) in ans["message"], ans
