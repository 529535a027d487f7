"""The engine side of POST /weights_checker, for a Python engine server to mount."""
import ctypes
import json

from ._lib import CANON, _Error, _P, check, encode, lib


class Checker:
    """Answers weights_checker requests for the engine dump in `dir` (see docs/http.md).

    `layout` ("sglang", "vllm", "megatron", "hf"), `tp` and `config` describe the dump; left
    out, they come from dir/weightsum-layout.json and dir/config.json. `canonical` is the
    policy of requests that name none, `key` the fast digest's seed (default: the public one),
    `threads` the hashing threads per request (0: all cores). The dump is re-read on every
    request. handle() may be called from several threads at once.
    """

    def __init__(self, dir, layout=None, tp=0, config=None, canonical="bf16", key=None,
                 threads=0):
        if canonical not in CANON:
            raise ValueError("canonical must be 'bf16' or 'native'")
        self._h = _P()
        err = _Error()
        rc = lib.ws_checker_create(encode(dir), encode(layout), int(tp or 0), encode(config),
                                   CANON[canonical], encode(key), int(threads),
                                   ctypes.byref(self._h), ctypes.byref(err))
        check(rc, err)

    @property
    def key_id(self):
        """Identifier of the fast digest's key (requests may name it as "key_id")."""
        return lib.ws_checker_key_id(self._h).decode()

    def handle(self, body):
        """Answer one request: body is bytes, str or a dict. Returns (http_status, response dict)."""
        if self._h is None or not self._h.value:
            raise ValueError("checker is closed")
        if isinstance(body, dict):
            body = json.dumps(body)
        if isinstance(body, str):
            body = body.encode()
        text, status = _P(), ctypes.c_int()
        rc = lib.ws_checker_handle(self._h, body, len(body), ctypes.byref(text), ctypes.byref(status))
        if rc != 0 or not text.value:
            raise MemoryError("weights_checker: out of memory")
        try:
            return status.value, json.loads(ctypes.string_at(text.value).decode())
        finally:
            lib.ws_free(text)

    def close(self):
        if self._h is not None and self._h.value:
            lib.ws_checker_free(self._h)
        self._h = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass
