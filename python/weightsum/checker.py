"""The engine side of POST /weights_checker, for a Python engine server to mount."""
import ctypes
import json

from ._lib import CANON, _Error, _P, check, encode, lib
from .cuda import Batch, _View, host_contiguous, is_torch, on_device, sglang_hash_tensors


_LAYOUT_FORCE = 1  # WS_LAYOUT_FORCE
lib.ws_checker_create_flags.restype = ctypes.c_int
lib.ws_checker_create_flags.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_int,
                                        ctypes.c_char_p, ctypes.c_uint, ctypes.c_int,
                                        ctypes.c_char_p, ctypes.c_int, ctypes.POINTER(_P),
                                        ctypes.POINTER(_Error)]


class Checker:
    """Answers weights_checker requests for the engine dump in `dir` (see docs/http.md).

    `layout` ("sglang", "vllm", "megatron", "hf"), `tp` and `config` describe the dump; left
    out, they come from dir/weightsum-layout.json and dir/config.json. `canonical` is the
    policy of requests that name none, `key` the fast digest's seed (default: the public one),
    `threads` the hashing threads per request (0: all cores). `force` lets `layout` / `tp` win
    over a disagreeing dir/weightsum-layout.json (what `serve --force` does); the layout must
    still fit the dump. The dump is re-read on every request. handle() may be called from
    several threads at once.
    """

    def __init__(self, dir, layout=None, tp=0, config=None, canonical="bf16", key=None,
                 threads=0, force=False):
        if canonical not in CANON:
            raise ValueError("canonical must be 'bf16' or 'native'")
        self._h = _P()
        err = _Error()
        rc = lib.ws_checker_create_flags(encode(dir), encode(layout), int(tp or 0),
                                         encode(config), _LAYOUT_FORCE if force else 0,
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


# ---- the trainer's side of "checksum": predict every engine rank's answer, judge one ---------

_PP = ctypes.POINTER(_P)
_PE = ctypes.POINTER(_Error)
for _name, _res, _args in [
        ("ws_model_config_parse", ctypes.c_int, [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_char_p, _PP, _PE]),
        ("ws_model_config_free", None, [_P]),
        ("ws_layout_create", ctypes.c_int, [ctypes.c_char_p, _P, ctypes.c_int, _PP, _PE]),
        ("ws_layout_free", None, [_P]),
        ("ws_dtype_size", ctypes.c_size_t, [ctypes.c_int]),
        ("ws_expect_create_views", ctypes.c_int, [_P, ctypes.POINTER(_View), ctypes.c_size_t,
                                                  ctypes.c_int, ctypes.c_int, ctypes.c_char_p, _P,
                                                  ctypes.c_int, _PP, _PE]),
        ("ws_expect_to_json", ctypes.c_int, [_P, _PP, _PE]),
        ("ws_expect_parse", ctypes.c_int, [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_char_p, _PP, _PE]),
        ("ws_expect_free", None, [_P]),
        ("ws_expect_request", ctypes.c_int, [_P, ctypes.POINTER(ctypes.c_char_p), ctypes.c_size_t,
                                             ctypes.c_char_p, _PP, _PE]),
        ("ws_expect_judge", ctypes.c_int, [_P, ctypes.c_char_p, ctypes.c_size_t, ctypes.c_int,
                                           ctypes.POINTER(ctypes.c_char_p), ctypes.c_size_t, _P, _PE]),
        ("ws_report_new", _P, []),
        ("ws_report_free", None, [_P]),
        ("ws_report_to_json", ctypes.c_int, [_P, _PP, _PE]),
        ("ws_compare_judge", ctypes.c_int, [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_int, _P,
                                            _PE]),
        ("ws_sglang_hash", ctypes.c_int, [ctypes.c_int, _P, ctypes.c_uint64,
                                          ctypes.POINTER(ctypes.c_uint64), _PE])]:
    _f = getattr(lib, _name)
    _f.restype, _f.argtypes = _res, _args

_ENGINES = {"sglang": 0, "vllm": 1}
_DEVICES = {"cuda": 0, "cpu": 1}


def _take_text(p):
    try:
        return ctypes.string_at(p.value).decode()
    finally:
        lib.ws_free(p)


def sglang_tensor_hash(x, device="cuda"):
    """SGLang's tensor_hash of a tensor (numpy or torch), as its /weights_checker writes it
    (16 hex digits): device "cuda" is gpu_tensor_hash (read in place, on the GPU for a CUDA
    tensor), "cpu" the first 8 bytes of SHA-256 (of the C-contiguous bytes in host memory)."""
    if device == "cuda":
        return f"{sglang_hash_tensors([x])[0]:016x}"
    _, ptr, _, numel, keep = host_contiguous(x)
    nbytes = keep.nbytes if hasattr(keep, "nbytes") else keep.numel() * keep.element_size()
    out, err = ctypes.c_uint64(), _Error()
    check(lib.ws_sglang_hash(_DEVICES[device], ptr if nbytes else None, nbytes, ctypes.byref(out),
                             ctypes.byref(err)), err)
    del keep
    return f"{out.value:016x}"


def expect(tensors, layout, tp, config, engine="sglang", device="cuda", threads=0,
           source="memory"):
    """What every rank of an engine that loaded `tensors` must answer to {"action": "checksum"}.

    tensors: {HF name: numpy array or torch tensor} (the trainer's weights); layout: the
    engine's family ("sglang", "vllm", ...); tp: its tensor-parallel size; config: the model's
    config.json (a path or a dict). engine "sglang" predicts SGLang's answer (device: where it
    holds the weights, "cuda" or "cpu"), "vllm" the proposed vLLM one. CUDA tensors (all on one
    device) are read in place on the GPU: SGLang's gpu_tensor_hash answers of every rank are
    computed there from the HF tensors (ws_expect_create_views), the SHA-256 answers stream each
    local tensor's image from them through the CUDA backend's pinned staging. Returns the expectation as a dict (the JSON `weightsum expect` writes; judge()
    takes it).
    """
    if engine not in _ENGINES or device not in _DEVICES:
        raise ValueError("engine must be sglang or vllm, device cuda or cpu")
    if isinstance(config, dict):
        text = json.dumps(config).encode()
    else:
        with open(config, "rb") as f:
            text = f.read()
    cfg = _P()
    err = _Error()
    check(lib.ws_model_config_parse(text, len(text), b"config", ctypes.byref(cfg), ctypes.byref(err)), err)
    lay = _P()
    rc = lib.ws_layout_create(encode(layout), cfg, int(tp), ctypes.byref(lay), ctypes.byref(err))
    lib.ws_model_config_free(cfg)  # the layout keeps nothing of it
    check(rc, err)
    try:
        named = {}
        for name, x in tensors.items():
            if is_torch(x) and not on_device(x) and not x.is_contiguous():
                x = x.contiguous()  # host memory: the pieces are read as HF rows
            elif not is_torch(x):
                import numpy as np
                x = np.asarray(x)
                if not x.flags.c_contiguous:
                    x = np.ascontiguousarray(x)
            named[name] = x
        b = Batch(named)
        e = _P()
        check(lib.ws_expect_create_views(lay, b.ptr, b.n, _ENGINES[engine], _DEVICES[device],
                                         encode(source), b.stream, int(threads), ctypes.byref(e),
                                         ctypes.byref(err)), err)
        del b
        try:
            text_p = _P()
            check(lib.ws_expect_to_json(e, ctypes.byref(text_p), ctypes.byref(err)), err)
            return json.loads(_take_text(text_p))
        finally:
            lib.ws_expect_free(e)
    finally:
        lib.ws_layout_free(lay)


def report_warnings(rep):
    """The warnings of a ws_report (caveats about what a check could not see, e.g.
    "low_bits_unchecked"): [{"kind", "detail", "count", "names"}], as verify --json gives."""
    text, err = _P(), _Error()
    check(lib.ws_report_to_json(rep, ctypes.byref(text), ctypes.byref(err)), err)
    return json.loads(_take_text(text)).get("warnings", [])


def _expect_handle(expected):
    text = (expected if isinstance(expected, (str, bytes)) else json.dumps(expected))
    text = text.encode() if isinstance(text, str) else text
    e, err = _P(), _Error()
    check(lib.ws_expect_parse(text, len(text), b"expectation", ctypes.byref(e), ctypes.byref(err)), err)
    return e


def _strings(items):
    items = [s.encode() for s in items]
    return (ctypes.c_char_p * max(1, len(items)))(*items), len(items)


def checksum_request(expected, skip=(), selector=None):
    """The request body (a dict) that asks the engine for what `expected` predicts."""
    e = _expect_handle(expected)
    try:
        arr, n = _strings(skip)
        body, err = _P(), _Error()
        check(lib.ws_expect_request(e, arr, n, encode(selector), ctypes.byref(body), ctypes.byref(err)), err)
        return json.loads(_take_text(body))
    finally:
        lib.ws_expect_free(e)


def judge(expected, answer, http_status=200, skip=()):
    """Judge an engine's answer (dict, str or bytes) to the checksum request against `expected`
    (from expect(), or a `weightsum expect` file's text): {"ok", "matched", "findings": [{status,
    tensor, local, rank, rows, detail}]}. Raises WeightsumError (code WS_ERR_REMOTE, the
    engine's message) when the engine answered an error instead of its checksums."""
    e = _expect_handle(expected)
    rep = lib.ws_report_new()
    try:
        if isinstance(answer, dict):
            answer = json.dumps(answer)
        if isinstance(answer, str):
            answer = answer.encode()
        arr, n = _strings(skip)
        err = _Error()
        check(lib.ws_expect_judge(e, answer, len(answer), int(http_status), arr, n, rep,
                                  ctypes.byref(err)), err)
        text = _P()
        check(lib.ws_report_to_json(rep, ctypes.byref(text), ctypes.byref(err)), err)
        return json.loads(_take_text(text))
    finally:
        lib.ws_report_free(rep)
        lib.ws_expect_free(e)


def compare_judge(answer, http_status=200):
    """Judge an engine's answer (dict, str or bytes) to a compare_checksum request (the digests
    `weightsum push MANIFEST` sends): {"ok", "matched", "findings": [{status, tensor, local,
    rank, rows, detail}]}, as push prints them. Raises WeightsumError (WS_ERR_REMOTE with the
    engine's message, WS_ERR_JSON for an answer that is no compare_checksum answer) when the
    engine answered an error instead of its verdict."""
    if isinstance(answer, dict):
        answer = json.dumps(answer)
    if isinstance(answer, str):
        answer = answer.encode()
    rep = lib.ws_report_new()
    if not rep:
        raise MemoryError("ws_report: out of memory")
    try:
        err = _Error()
        check(lib.ws_compare_judge(answer, len(answer), int(http_status), rep, ctypes.byref(err)),
              err)
        text = _P()
        check(lib.ws_report_to_json(rep, ctypes.byref(text), ctypes.byref(err)), err)
        return json.loads(_take_text(text))
    finally:
        lib.ws_report_free(rep)
