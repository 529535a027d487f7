"""Progress on a terminal (a pty): bytes done / total, rate and ETA on stderr, wiped at the end,
before an error line, and on Ctrl-C; nothing of it when stderr is not a terminal."""
import os
import pty
import select
import signal
import subprocess
import time

import numpy as np
from safetensors.numpy import save_file

WIPE = "\r\x1b[K"


def big_checkpoint(path, mib):
    n = mib * 1024 * 1024 // 4
    save_file({f"t{i}": np.full(n // 8, i, np.float32) for i in range(8)}, str(path))


def run_on_pty(args, interrupt_after=None, timeout=300, sig=signal.SIGINT):
    """Run with stderr on a pty; returns (returncode, stdout, what the terminal got)."""
    master, slave = pty.openpty()
    p = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=slave, stdin=subprocess.DEVNULL)
    os.close(slave)
    got, t0, sent = b"", time.monotonic(), False
    while True:
        r, _, _ = select.select([master], [], [], 0.05)
        if r:
            try:
                chunk = os.read(master, 65536)
            except OSError:
                chunk = b""
            if not chunk:
                break
            got += chunk
        if interrupt_after and not sent and interrupt_after in got:
            p.send_signal(sig)
            sent = True
        if p.poll() is not None and not r:
            break
        assert time.monotonic() - t0 < timeout
    p.wait(timeout=timeout)
    out = p.stdout.read().decode()
    os.close(master)
    return p.returncode, out, got.decode(errors="replace")


def test_progress_line_and_wipe(tmp_path, ws_bin):
    ckpt = tmp_path / "big.safetensors"
    big_checkpoint(ckpt, 64)
    rc, out, term = run_on_pty([ws_bin, "hash", str(ckpt), "-j", "1"])
    assert rc == 0 and len([l for l in out.splitlines() if not l.startswith('#')]) == 8
    assert "ETA" in term and "/s" in term and "MB" in term and "%" in term, repr(term)
    assert term.endswith(WIPE), repr(term[-200:])
    # not a terminal: no progress at all
    r = subprocess.run([ws_bin, "hash", str(ckpt)], capture_output=True, text=True)
    assert r.returncode == 0 and r.stderr == ""


def test_progress_wiped_before_an_error(tmp_path, ws_bin):
    ckpt = tmp_path / "big.safetensors"
    big_checkpoint(ckpt, 16)
    man = tmp_path / "m.json"
    assert subprocess.run([ws_bin, "hash", str(ckpt), "-o", str(man)]).returncode == 0
    rc, _, term = run_on_pty([ws_bin, "verify", str(man), str(ckpt), "--report",
                              str(tmp_path / "no" / "dir" / "r.html")])
    assert rc == 2
    assert "ETA" in term
    before, _, line = term.rpartition("weightsum: ")
    assert before.endswith(WIPE), repr(term[-300:])
    assert "r.html" in line


def test_ctrl_c_wipes_the_line(tmp_path, ws_bin):
    ckpt = tmp_path / "big.safetensors"
    big_checkpoint(ckpt, 512)
    rc, _, term = run_on_pty([ws_bin, "hash", str(ckpt), "-j", "1"], interrupt_after=b"ETA")
    # the signal goes out at the first drawn line, well before 512 MiB are hashed on one thread
    assert rc == -signal.SIGINT, (rc, term[-300:])
    assert term.endswith(WIPE), repr(term[-300:])


def test_progress_of_diff_against_a_dump_and_of_expect(tmp_path, ws_bin):
    """diff CKPT DUMP and expect draw the line too (bytes of the reference / of the local
    tensors), wipe it at the end, and draw nothing when stderr is no terminal."""
    cfg = os.path.join(os.path.dirname(__file__), "..", "cli", "fixture", "config.json")
    ckpt, dump = tmp_path / "model.safetensors", tmp_path / "tp2"
    for args in (["synth", cfg, "-o", ckpt], ["shard", ckpt, "--layout", "sglang", "--tp", "2",
                                               "--config", cfg, "-o", dump]):
        assert subprocess.run([ws_bin, *map(str, args)]).returncode == 0
    runs = {"diff": [ws_bin, "diff", str(ckpt), str(dump)],
            "expect": [ws_bin, "expect", str(ckpt), "--layout", "sglang", "--tp", "2",
                       "--config", cfg, "-o", str(tmp_path / "e.json")]}
    for name, args in runs.items():
        rc, out, term = run_on_pty(args)
        assert rc == 0, (name, out, term)
        assert "ETA" in term and "/s" in term and "100.0%" in term, (name, repr(term))
        assert term.endswith(WIPE), (name, repr(term[-200:]))
        r = subprocess.run(args, capture_output=True, text=True)
        assert r.returncode == 0 and r.stderr == "", (name, r.stderr)
        r = subprocess.run(args + ["--no-progress"], capture_output=True, text=True)
        assert r.returncode == 0 and r.stderr == "", (name, r.stderr)
    assert "diff: 27 matched -> OK" in run_on_pty(runs["diff"])[1]


def test_sigterm_wipes_the_line_too(tmp_path, ws_bin):
    """SIGTERM (a job scheduler's stop) wipes as Ctrl-C does, and the process still dies of
    it; two threads race to draw here, the wipe must come last."""
    ckpt = tmp_path / "big.safetensors"
    big_checkpoint(ckpt, 512)
    rc, _, term = run_on_pty([ws_bin, "hash", str(ckpt), "-j", "2"], interrupt_after=b"ETA",
                             sig=signal.SIGTERM)
    assert rc == -signal.SIGTERM, (rc, term[-300:])
    assert term.endswith(WIPE), repr(term[-300:])
