"""The partials of a rank computed from CUDA tensors (a device source: ws_source_add_device, the
backend's fast_rects) on a real GPU, against the same rank's partials from its dump file
(ws_source_dump) and from host buffers (ws_source_add): byte for byte equal in their serialised
form; merged over both ranks they judge clean against the trainer's manifest, and an element
changed in one rank's CUDA tensor is found and named (HF tensor, engine tensor, rank)."""
import ctypes
import os

import pytest
import torch

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

import weightsum.torch as wt  # noqa: E402
from weightsum._lib import _Error, _P, check, lib  # noqa: E402
from weightsum.cuda import CANON  # noqa: E402
from gpu_common import Layout  # noqa: E402

MID = ('{"model_type": "qwen2", "hidden_size": 1024, "intermediate_size": 2816,'
       ' "num_hidden_layers": 2, "num_attention_heads": 8, "num_key_value_heads": 2,'
       ' "vocab_size": 5003, "tie_word_embeddings": false}')

for _n, _r, _a in [("ws_dump_open", ctypes.c_int, [ctypes.c_char_p, ctypes.POINTER(_P),
                                                   ctypes.POINTER(_Error)]),
                   ("ws_dump_free", None, [_P]),
                   ("ws_source_dump", ctypes.c_int, [_P, ctypes.c_int, ctypes.c_int,
                                                     ctypes.POINTER(_P), ctypes.POINTER(_Error)])]:
    _f = getattr(lib, _n)
    _f.restype, _f.argtypes = _r, _a


def serialised(lay, rank, src_h, key):
    pa = _P()
    wt.call("ws_partials_compute", lay.plan, rank, src_h, key.h, CANON["bf16"], ctypes.byref(pa))
    part = wt._Partials(pa)
    buf, ln = _P(), ctypes.c_size_t()
    wt.call("ws_partials_serialize", part.h, ctypes.byref(buf), ctypes.byref(ln))
    try:
        return part, ctypes.string_at(buf.value, ln.value)
    finally:
        lib.ws_free(buf)


def judge(lay, parts, manifest):
    merged = None
    for p in parts:  # merge copies: deserialise each rank's bytes, as the exchange does
        h = _P()
        wt.call("ws_partials_deserialize", p, len(p), ctypes.byref(h))
        one = wt._Partials(h)
        if merged is None:
            merged = one
        else:
            wt.call("ws_partials_merge", merged.h, one.h)
    r = wt._CReport()
    wt.call("ws_partials_judge", lay.plan, merged.h, manifest.h, r.h)
    return wt._findings(r.h)


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    from safetensors.torch import save_file
    g = torch.Generator(device="cuda")
    g.manual_seed(int.from_bytes(os.urandom(4), "little"))
    glay = Layout(MID, "sglang", 2)
    hf = [(torch.randn(s, device="cuda", generator=g) * 0.05).to(torch.bfloat16)
          for _, s, _ in glay.hf_shapes()]
    locals_ = [glay.build_local(r, hf) for r in range(2)]
    d = tmp_path_factory.mktemp("dump")
    for r in range(2):
        save_file({n: t.cpu() for n, t in locals_[r].items()},
                  os.path.join(d, f"model-rank-{r}-part-0.safetensors"))
    m = wt.Manifest(algo="fast")
    m.add_all({n: t.cpu() for (n, _, tied), t in zip(glay.hf_shapes(), hf) if not tied})
    return glay, hf, locals_, str(d), wt._load_manifest(m)


def test_device_partials_equal_dump_and_host(model):
    glay, hf, locals_, d, manifest = model
    lay = wt._Layout("sglang", MID, 2)
    key = wt._Key(None)
    dump, err = _P(), _Error()
    check(lib.ws_dump_open(d.encode(), ctypes.byref(dump), ctypes.byref(err)), err)
    try:
        dev_bytes = []
        for r in range(2):
            named = list(locals_[r].items())
            # one tensor as a strided view (the backend reads views in place): a transposed copy
            # of the first 2-D tensor, transposed back
            for i, (n, t) in enumerate(named):
                if t.dim() == 2 and t.shape[0] > 1:
                    named[i] = (n, t.t().contiguous().t())
                    assert not named[i][1].is_contiguous()
                    break
            src_dev = wt._Source(named)
            assert all(t.is_cuda for t in src_dev.tensors.values())
            _, b_dev = serialised(lay, r, src_dev.h, key)
            src_host = wt._Source([(n, t.cpu()) for n, t in locals_[r].items()])
            _, b_host = serialised(lay, r, src_host.h, key)
            fs = _P()
            check(lib.ws_source_dump(dump, r, 0, ctypes.byref(fs), ctypes.byref(err)), err)
            try:
                _, b_file = serialised(lay, r, fs, key)
            finally:
                lib.ws_source_free(fs)
            assert b_dev == b_host, f"rank {r}: device partials differ from host buffers'"
            assert b_dev == b_file, f"rank {r}: device partials differ from the dump file's"
            dev_bytes.append(b_dev)
        assert judge(lay, dev_bytes, manifest) == []
    finally:
        lib.ws_dump_free(dump)


@pytest.mark.parametrize("name,want", [
    # split by columns over both ranks: the merged digest mismatches, the detail names the holders
    ("model.layers.1.mlp.down_proj.weight", ("mismatch", None)),
    # held whole by both ranks: rank 1's replica differs from rank 0's
    ("model.layers.0.input_layernorm.weight", ("replica_mismatch", 1))])
def test_device_partials_name_a_changed_element(model, name, want):
    glay, hf, locals_, d, manifest = model
    lay = wt._Layout("sglang", MID, 2)
    key = wt._Key(None)
    srcs = [wt._Source(list(locals_[r].items())) for r in range(2)]  # kept alive while read
    good = [serialised(lay, r, srcs[r].h, key)[1] for r in range(2)]
    t = locals_[1][name]
    keep = t.clone()
    try:
        flat = t.view(-1)
        flat[777] = -flat[777] + 1  # one element of rank 1's CUDA tensor, changed on the GPU
        bad1 = serialised(lay, 1, srcs[1].h, key)[1]  # the source reads the tensor in place
    finally:
        t.copy_(keep)
    assert bad1 != good[1]
    fs = judge(lay, [good[0], bad1], manifest)
    assert [(f.status, f.tensor, f.local, f.rank) for f in fs] == [(want[0], name, name, want[1])], fs
    if want[1] is None:  # the merged sum cannot tell the ranks apart: the detail lists both
        assert "rank 1" in fs[0].detail and "rank 0" in fs[0].detail, fs[0].detail
    assert judge(lay, good, manifest) == []
