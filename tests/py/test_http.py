"""The weights_checker protocol over real HTTP, loopback only: `weightsum serve` answering,
`weightsum push` asking. Every test starts and stops its own server on a port the server
picks (port 0, read back from its 'listening on' line)."""
import http.client
import json
import os
import queue
import re
import shutil
import signal
import socket
import subprocess
import threading
import time

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

CONFIG = {"model_type": "qwen2", "hidden_size": 64, "intermediate_size": 96,
          "num_hidden_layers": 2, "num_attention_heads": 8, "num_key_value_heads": 4,
          "vocab_size": 1000, "tie_word_embeddings": False, "head_dim": 8}
L1 = "model.layers.1."
QKV1 = L1 + "self_attn.qkv_proj.weight"


class Server:
    """`weightsum serve DUMP --port 0 ARGS...`; stderr is drained by a thread, always."""

    def __init__(self, ws_bin, dump, *args):
        self.proc = subprocess.Popen([ws_bin, "serve", str(dump), "--port", "0", *map(str, args)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        self.lines, self.err = queue.Queue(), []
        self.drain = threading.Thread(target=self._drain, daemon=True)
        self.drain.start()
        try:
            first = self.lines.get(timeout=60)
        except queue.Empty:
            self.proc.kill()
            raise AssertionError("serve printed nothing")
        m = re.fullmatch(r"listening on http://127\.0\.0\.1:(\d+)\n", first)
        assert m, first + "".join(self.err)
        self.port = int(m.group(1))
        self.base = f"http://127.0.0.1:{self.port}"
        self.url = self.base + "/weights_checker"

    def _drain(self):
        for line in self.proc.stderr:
            self.err.append(line)
            self.lines.put(line)

    def stop(self, sig=signal.SIGTERM, timeout=30):
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        rc = self.proc.wait(timeout=timeout)
        self.drain.join(timeout=timeout)  # its last lines are read before anyone looks at err
        return rc

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        rc = self.stop()
        assert rc == 0, "".join(self.err)


def post(port, body, path="/weights_checker", method="POST", timeout=60, headers=None):
    """(status, parsed JSON answer) of one request on a fresh connection."""
    if isinstance(body, dict):
        body = json.dumps(body)
    if isinstance(body, str):
        body = body.encode()
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        c.request(method, path, body=body,
                  headers={"Content-Type": "application/json", **(headers or {})})
        r = c.getresponse()
        return r.status, json.loads(r.read())
    finally:
        c.close()


def raw(port, data, timeout=10):
    """Send bytes on a raw socket and read what comes back until the server closes or the
    answer is complete (for requests http.client will not send)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        s.sendall(data)
        out = b""
        while True:
            try:
                chunk = s.recv(65536)
            except (ConnectionResetError, socket.timeout):
                break
            if not chunk:
                break
            out += chunk
            head, sep, body = out.partition(b"\r\n\r\n")
            m = re.search(rb"content-length: *(\d+)", head, re.I)
            if sep and m and len(body) >= int(m.group(1)):
                break
        return out
    finally:
        s.close()


def status_of(answer):
    m = re.match(rb"HTTP/1\.[01] (\d{3})", answer)
    return int(m.group(1)) if m else None


@pytest.fixture(scope="module")
def model(tmp_path_factory, ws_bin):
    """A tiny Qwen2 (8 heads, 4 kv heads, bias), its manifest, and its SGLang tp=2 dump."""
    d = tmp_path_factory.mktemp("http-model")
    with open(d / "config.json", "w") as f:
        json.dump(CONFIG, f)
    ckpt, man, dump = d / "model.safetensors", d / "manifest.json", d / "tp2"
    for args in (["synth", d / "config.json", "-o", ckpt], ["hash", ckpt, "-o", man],
                 ["shard", ckpt, "--layout", "sglang", "--tp", 2, "-o", dump]):
        r = subprocess.run([ws_bin, *map(str, args)], capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
    return d, man, dump


@pytest.fixture
def dump_copy(model, tmp_path):
    """A dump of one's own to damage."""
    _, man, dump = model
    shutil.copytree(dump, tmp_path / "tp2")
    return man, tmp_path / "tp2"


def trainer_digests(man):
    with open(man) as f:
        return {k: v["sha256"] for k, v in json.load(f)["tensors"].items()}


def mutate(dump, rank, name, index):
    """Flip a high bit of one element of `name` in rank's file (rewritten atomically)."""
    p = os.path.join(dump, f"model-rank-{rank}-part-0.safetensors")
    t = load_file(p)
    a = t[name].copy()
    a.reshape(-1).view(np.uint32)[index] ^= np.uint32(1 << 30)
    t[name] = a
    save_file(t, p + ".tmp")
    os.replace(p + ".tmp", p)


def test_handshake_tp2(model, ws_bin, run, tmp_path):
    _, man, dump = model
    with Server(ws_bin, dump) as s:
        r = run("push", s.base, man)
        assert r.returncode == 0, r.stdout + r.stderr
        assert r.stdout == f"{s.url}: 27 matched -> OK\n"
        st, ans = post(s.port, {"action": "checksum", "algorithm": "sha256"})
        assert st == 200 and ans["success"] is True, ans
        assert ans["tp"] == 2 and ans["family"] == "sglang" and ans["canonical"] == "bf16"
        assert ans["checksums"] == trainer_digests(man)
        assert [x["parallelism_info"]["tp_rank"] for x in ans["ranks"]] == [0, 1]
        assert all(x["parallelism_info"]["tp_size"] == 2 for x in ans["ranks"])
        assert QKV1 in ans["ranks"][1]["checksums"]
        # the per-rank answer, saved, is what a trainer can push back as per-rank dicts
        ref = tmp_path / "ranks.json"
        ref.write_text(json.dumps(ans))
        r = run("push", s.url, ref)
        assert r.returncode == 0, r.stdout + r.stderr
        assert "34 matched -> OK" in r.stdout
        # several engines at once (here the same one twice), and the raw protocol
        r = run("push", s.base, s.url, man, "--json")
        assert r.returncode == 0, r.stderr
        answers = json.loads(r.stdout)
        assert [a["http_status"] for a in answers] == [200, 200]
        assert all(a["response"]["success"] for a in answers)
        st, ans = post(s.port, {"action": "compare_checksum", "checksums": trainer_digests(man)})
        assert st == 200 and ans["success"] and ans["matched"] == 27
        assert ans["mismatched"] == ans["missing"] == ans["unexpected"] == ans["replica_mismatch"] == []


def test_corrupted_dump_named_by_tensor_and_rank(dump_copy, ws_bin, run, tmp_path):
    man, dump = dump_copy
    with Server(ws_bin, dump) as s:
        st, ans = post(s.port, {"action": "checksum", "algorithm": "sha256"})
        ref = tmp_path / "ranks.json"  # per-rank references taken before the damage
        ref.write_text(json.dumps([x["checksums"] for x in ans["ranks"]]))
        assert run("push", s.base, man).returncode == 0
        # rank 1 holds k rows 32..48 of its qkv_proj: element 40*64+3 is in k_proj; the
        # server re-reads the dump, so the next request sees the damage
        mutate(dump, 1, QKV1, 40 * 64 + 3)
        r = run("push", s.base, man)
        assert r.returncode == 1, r.stdout + r.stderr
        lines = r.stdout.splitlines()
        assert lines[0].startswith(f"{s.url}: {L1}self_attn.k_proj.weight: mismatch "
                                   f"[{QKV1} on ranks 0,1]: sha256 "), lines
        assert lines[-1] == f"{s.url}: 26 matched, 1 mismatched -> FAILED", lines
        # per-rank dicts pin the rank down
        r = run("push", s.base, ref)
        assert r.returncode == 1
        assert f"{s.url}: {QKV1}: mismatch [{QKV1} on rank 1]: sha256 " in r.stdout, r.stdout
        # the same through a raw POST
        st, ans = post(s.port, {"action": "compare_checksum", "checksums": trainer_digests(man)})
        assert st == 400 and ans["success"] is False
        assert [(m["tensor"], m["local"], m["ranks"]) for m in ans["mismatched"]] == \
            [(L1 + "self_attn.k_proj.weight", QKV1, [0, 1])]
        assert "k_proj" in ans["message"]
        st, ans = post(s.port, {"action": "compare_checksum",
                                "checksums": json.loads(ref.read_text())})
        assert st == 400 and [(m["tensor"], m["rank"]) for m in ans["mismatched"]] == [(QKV1, 1)]
        # a replicated norm drifting on rank 1 is a replica mismatch on rank 1
        mutate(dump, 1, L1 + "input_layernorm.weight", 7)
        r = run("push", s.base, man)
        assert r.returncode == 1
        assert (f"{s.url}: {L1}input_layernorm.weight: replica_mismatch "
                f"[{L1}input_layernorm.weight on rank 1]") in r.stdout, r.stdout


MALFORMED = [b"", b"not json", b"{\"action\": \"checksum\"", b"[]", b"42", b"{}",
             b"{\"action\": 7}", b"{\"action\": \"snapshot\"}",
             b"{\"action\": \"compare_checksum\"}",
             b"{\"action\": \"compare_checksum\", \"checksums\": \"x\"}",
             b"{\"action\": \"compare_checksum\", \"checksums\": {\"a\": \"12\"}}",
             b"{\"action\": \"compare_checksum\", \"checksums\": [{}], \"rank_offset\": -3}",
             b"{\"action\": \"checksum\", \"canonical\": \"fp4\"}",
             b"\xff\xfe{", b"[" * 200000, b"{\"a\":" * 5000]


def test_malformed_requests_answered_400_and_server_keeps_serving(model, ws_bin):
    _, man, dump = model
    good = {"action": "compare_checksum", "checksums": trainer_digests(man)}
    with Server(ws_bin, dump) as s:
        for body in MALFORMED:
            st, ans = post(s.port, body)
            assert st == 400 and ans["success"] is False and ans["message"], (body[:40], ans)
            assert "mismatched" not in ans  # no check ran
        st, ans = post(s.port, good, path="/nope")
        assert st == 404 and "POST /weights_checker" in ans["message"]
        st, ans = post(s.port, b"", method="GET")
        assert st == 405
        st, ans = post(s.port, b"", method="PUT")
        assert st == 405
        # not HTTP at all, and a request line cut short
        raw(s.port, b"GARBAGE\r\n\r\n")
        raw(s.port, b"POST /weights_checker HTTP/1.1\r\nContent-Le")
        assert post(s.port, good)[0] == 200
        assert s.proc.poll() is None


def test_oversized_body_413(model, ws_bin):
    _, man, dump = model
    good = {"action": "compare_checksum", "checksums": trainer_digests(man)}
    with Server(ws_bin, dump, "--max-body", 8192) as s:
        # announced too big: refused from the headers alone, nothing read
        a = raw(s.port, b"POST /weights_checker HTTP/1.1\r\nHost: x\r\n"
                        b"Content-Length: 104857600\r\n\r\n{\"action\"")
        assert status_of(a) == 413, a
        st, ans = post(s.port, b"{" + b" " * 9000 + b"}")
        assert st == 413 and ans["success"] is False
        # chunked, no length announced: 413 once the limit is crossed
        chunk = b"%x\r\n%s\r\n" % (4096, b" " * 4096)
        a = raw(s.port, b"POST /weights_checker HTTP/1.1\r\nHost: x\r\n"
                        b"Transfer-Encoding: chunked\r\n\r\n" + chunk * 3 + b"0\r\n\r\n")
        assert status_of(a) == 413, a
        assert post(s.port, good)[0] == 200
    with Server(ws_bin, dump) as s:  # the default limit, 64 MiB
        a = raw(s.port, b"POST /weights_checker HTTP/1.1\r\nHost: x\r\n"
                        b"Content-Length: 67108865\r\n\r\n")
        assert status_of(a) == 413, a
        assert post(s.port, good)[0] == 200


def test_stalled_clients_dropped_while_others_are_answered(model, ws_bin):
    _, man, dump = model
    good = {"action": "compare_checksum", "checksums": trainer_digests(man)}
    with Server(ws_bin, dump, "--timeout", 8) as s:
        half = socket.create_connection(("127.0.0.1", s.port))
        half.sendall(b"POST /weights_checker HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n"
                     + b" " * 500)
        silent = socket.create_connection(("127.0.0.1", s.port))
        t0 = time.monotonic()
        for _ in range(10):  # others are served while the stalled clients wait
            assert post(s.port, good, timeout=30)[0] == 200
        for sock in (half, silent):  # still connected: served beside them, not after them
            sock.setblocking(False)
            with pytest.raises(BlockingIOError):
                sock.recv(1)
            sock.setblocking(True)
        for sock in (half, silent):
            sock.settimeout(40)
            try:
                data = sock.recv(4096)
            except ConnectionResetError:
                data = b""
            # dropped by the server's idle timeout: closed with nothing, or a 4xx at most
            assert data == b"" or 400 <= (status_of(data) or 0) < 500, data
            sock.close()
        waited = time.monotonic() - t0
        assert 6 <= waited < 40, waited
        assert post(s.port, good)[0] == 200


def test_trickling_body_dropped(model, ws_bin):
    """A body sent a byte at a time never goes idle, but must arrive within 4 timeouts."""
    _, man, dump = model
    with Server(ws_bin, dump, "--timeout", 1) as s:
        sock = socket.create_connection(("127.0.0.1", s.port))
        sock.sendall(b"POST /weights_checker HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n")
        t0 = time.monotonic()
        dropped = None
        while time.monotonic() - t0 < 15:
            try:
                sock.sendall(b" ")
                time.sleep(0.3)
            except OSError:
                dropped = time.monotonic() - t0
                break
        sock.close()
        assert dropped is not None and 3.5 < dropped < 15, dropped
        assert post(s.port, {"action": "checksum"})[0] == 200


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_clean_exit(model, ws_bin, sig):
    _, _, dump = model
    s = Server(ws_bin, dump)
    try:
        assert post(s.port, {"action": "checksum"})[0] == 200
        idle = socket.create_connection(("127.0.0.1", s.port))  # a connection left open
        t0 = time.monotonic()
        assert s.stop(sig) == 0
        assert time.monotonic() - t0 < 60  # a hang check (an idle client must not hold it)
        idle.close()
        name = "SIGTERM" if sig == signal.SIGTERM else "SIGINT"
        assert f"stopped ({name})" in "".join(s.err)
    finally:
        if s.proc.poll() is None:
            s.proc.kill()


def test_push_transport_and_protocol_errors(model, ws_bin, run, tmp_path):
    _, man, dump = model
    free = socket.socket()
    free.bind(("127.0.0.1", 0))
    port = free.getsockname()[1]
    free.close()  # nothing listens here now
    r = run("push", f"http://127.0.0.1:{port}", man, "--timeout", 5)
    assert r.returncode == 2 and len(r.stderr.splitlines()) == 1, r.stderr
    assert f"127.0.0.1:{port}" in r.stderr
    r = run("push", "ftp://127.0.0.1/x", man)
    assert r.returncode == 2 and "not an http" in r.stderr
    (tmp_path / "bad.json").write_text("{\"format\": \"nope\"}")
    r = run("push", "http://127.0.0.1:1", tmp_path / "bad.json")
    assert r.returncode == 2
    with Server(ws_bin, dump) as s:
        r = run("push", s.base + "/elsewhere", man)  # a 404 is not an answer about weights
        assert r.returncode == 2 and "HTTP 404" in r.stderr, r.stderr
        # an engine with a key of its own refuses fast digests made with the public one
    fast = tmp_path / "fast.json"
    h = run("hash", model[0] / "model.safetensors", "--algo", "fast", "-o", fast)
    assert h.returncode == 0, h.stderr
    with Server(ws_bin, dump, "--key", "secret") as s:
        r = run("push", s.base, fast)
        assert r.returncode == 2 and "key" in r.stderr, r.stderr
    with Server(ws_bin, dump) as s:
        r = run("push", s.base, fast)
        assert r.returncode == 0, r.stdout + r.stderr


def test_load(model, ws_bin, capsys):
    """1,000 small compare_checksum requests from 16 concurrent clients: no failure."""
    _, man, dump = model
    body = json.dumps({"action": "compare_checksum", "checksums": trainer_digests(man)}).encode()
    n_clients, n_requests = 16, 1000
    per = [n_requests // n_clients + (i < n_requests % n_clients) for i in range(n_clients)]
    lat, failures, lock = [], [], threading.Lock()

    def client(count, port):
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        mine = []
        try:
            for _ in range(count):
                t0 = time.perf_counter()
                c.request("POST", "/weights_checker", body=body,
                          headers={"Content-Type": "application/json"})
                r = c.getresponse()
                ans = json.loads(r.read())
                mine.append(time.perf_counter() - t0)
                if r.status != 200 or ans.get("success") is not True:
                    failures.append((r.status, ans.get("message")))
        except Exception as e:  # noqa: BLE001 - any failure is a finding
            failures.append(repr(e))
        finally:
            c.close()
            with lock:
                lat.extend(mine)

    with Server(ws_bin, dump, "-j", 1) as s:
        threads = [threading.Thread(target=client, args=(k, s.port)) for k in per]
        t0 = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=900)  # bounded: a hung server fails the test, never the CI clock
        wall = time.perf_counter() - t0
    assert not failures, failures[:5]
    assert len(lat) == n_requests
    lat.sort()
    p50, p99 = lat[len(lat) // 2] * 1e3, lat[int(len(lat) * 0.99)] * 1e3
    with capsys.disabled():
        print(f"\nweights_checker load ({os.path.basename(ws_bin)} "
              f"{os.path.basename(os.path.dirname(ws_bin))}): {n_requests} requests, "
              f"{n_clients} clients, {wall:.2f} s, {n_requests / wall:.0f} requests/s, "
              f"p50 {p50:.2f} ms, p99 {p99:.2f} ms")
    # No timed assertion: speed is a benchmark figure (README), not a test verdict; on a
    # loaded or sanitized build this takes minutes and still proves every answer came back.
