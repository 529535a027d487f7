"""A loopback stand-in for SGLang's POST /weights_checker "checksum", built from SGLang's own
response schema (sglang 0.5.x: io_struct.ChecksumInfo / ParallelismInfo, weight_updater.
_merge_checksum_payloads, tokenizer_control_mixin.check_weights, http_server.check_weights),
answering from an engine dump (model-rank-R-part-0.safetensors). Hashes come from the
independent numpy model of SGLang's kernel (sglang_hash_ref), not from weightsum's C code.

Knobs (attributes of the server, set per test): form "list" (today) or "dict" (older builds),
shuffle (ranks in a random order), draft (a draft runner whose names carry "draft."),
drop_rank, tp_size (a lie), error (answer success false with this message), vllm (vLLM's
proposed dialect on /weight_checker instead).
"""
import hashlib
import json
import os
import random
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import ml_dtypes  # noqa: F401  (registers bfloat16 for safetensors.numpy)
import numpy as np
from safetensors.numpy import load_file

from sglang_hash_ref import cpu_tensor_hash, gpu_tensor_hash

NON_PERSISTENT = ("cos_sin_cache", "cos_cache", "sin_cache", "inv_freq", "freqs_cis",
                  "expert_mask_gpu")


def overall_checksum(checksums):
    h = hashlib.sha256()
    for name in sorted(checksums):
        h.update(name.encode())
        h.update(checksums[name].encode())
    return h.hexdigest()


def parallelism_info(role, tp_rank, tp_size):
    return {"role": role, "tp_rank": tp_rank, "tp_size": tp_size, "dp_rank": 0, "dp_size": 1,
            "pp_rank": 0, "pp_size": 1, "rank": tp_rank, "size": tp_size}


class StandIn(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, dump, tp):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.dump, self.tp = dump, tp
        self.form, self.shuffle, self.draft, self.drop_rank = "list", False, False, None
        self.tp_size, self.error, self.vllm, self.device = None, None, False, "cuda"
        self.skip_target = None  # a target tensor the engine leaves out (its draft twin stays)
        self.requests = []
        self._t = threading.Thread(target=self.serve_forever, daemon=True)

    @property
    def url(self):
        return f"http://127.0.0.1:{self.server_address[1]}"

    def __enter__(self):
        self._t.start()
        return self

    def __exit__(self, *exc):
        self.shutdown()
        self.server_close()

    def rank_tensors(self, r):
        return load_file(os.path.join(self.dump, f"model-rank-{r}-part-0.safetensors"))

    def hash(self, a):
        b = np.ascontiguousarray(a).tobytes()
        if self.vllm:
            return hashlib.sha256(b).hexdigest()
        return f"{(gpu_tensor_hash(b) if self.device == 'cuda' else cpu_tensor_hash(b)):016x}"

    def answer(self, req):
        if self.error:
            return 400, {"success": False, "message": self.error}
        action = req.get("action", "checksum")
        if action != "checksum":
            return 400, {"success": False, "message": f"Unsupported action='{action}'"}
        skip = req.get("skip_tensor_list") or []
        if self.vllm:
            sums = {}
            for r in range(self.tp):
                for name, a in self.rank_tensors(r).items():
                    sums[f"{r}:{name}"] = self.hash(a)
            return 200, {"checksums": sums}
        infos = []
        for r in range(self.tp):
            if r == self.drop_rank:
                continue
            merged, roles = {}, []
            runners = [("target", self.rank_tensors(r))]
            if self.draft:
                t = self.rank_tensors(r)
                runners.append(("draft", {k: v for k, v in t.items() if "layers.0." not in k}))
            for role, tensors in runners:
                for name, a in tensors.items():
                    if any(p in name for p in NON_PERSISTENT) or any(s in name for s in skip):
                        continue
                    if role == "target" and name == self.skip_target:
                        continue
                    key = name if role == "target" else f"{role}.{name}"
                    merged[key] = self.hash(a)
                roles.append(parallelism_info(role, r, self.tp_size or self.tp))
            info = {"checksums": merged, "per_gpu_checksum": overall_checksum(merged),
                    "parallelism_info": roles if self.form == "list" else roles[0]}
            infos.append(info)
        if self.shuffle:
            random.Random(7).shuffle(infos)
        h = hashlib.sha256()
        for info in infos:
            h.update(info["per_gpu_checksum"].encode())
        return 200, {"success": True, "message": "Success.", "ranks": infos,
                     "per_engine_checksum": h.hexdigest()}


class _Handler(BaseHTTPRequestHandler):
    def log_message(self, *a):
        pass

    def do_POST(self):
        route = "/weight_checker" if self.server.vllm else "/weights_checker"
        n = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(n)
        if self.path != route:
            status, ans = 404, {"detail": "Not Found"}
        else:
            req = json.loads(body or b"{}")
            self.server.requests.append(req)
            status, ans = self.server.answer(req)
        data = json.dumps(ans).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
