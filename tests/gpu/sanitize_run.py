"""Each kernel once on small odd inputs, for compute-sanitizer (memcheck, racecheck)."""
import json

import torch

import weightsum
from gpu_common import SMALL, Layout

g = torch.Generator(device="cuda")
g.manual_seed(5)
ts = []
for dt in (torch.uint8, torch.bfloat16, torch.float32, torch.float64, torch.float8_e4m3fn,
           torch.int64):
    for n in (1, 7, 1025, 9001):
        b = torch.randint(0, 256, (n * torch.empty((), dtype=dt).element_size(),),
                          dtype=torch.uint8, device="cuda", generator=g)
        ts.append(b.view(dt))
ts.append(ts[7][3:])
big = torch.randint(0, 256, (70 * 2048 * 2,), dtype=torch.uint8, device="cuda", generator=g)
ts.append(big.view(torch.bfloat16)[8:])                          # tensor-core fast digest
ts.append(big.view(torch.bfloat16).view(70, 2048)[:, 1024:])    # SGLang tiles read directly
ts.append(torch.randn(33, 65, device="cuda", generator=g)[:, 1::2])
ts.append(torch.randn(9, 7, 5, device="cuda", generator=g).permute(2, 1, 0))
print(weightsum.digest_tensors(ts, "bf16")[:2])
print(weightsum.digest_tensors(ts, "native", threads=3)[:2])
print(weightsum.sglang_hash_tensors(ts)[:4])
lay = Layout(SMALL, "sglang", 2)
hf = [torch.randn(s, device="cuda", generator=g) for _, s, _ in lay.hf_shapes()]
print(lay.expect(0, hf)[:3], lay.expect(1, [t.to(torch.bfloat16) for t in hf])[:3])
from weightsum.cuda import SglangExpect  # noqa: E402
print({r: list(a.values())[:2] for r, a in SglangExpect("sglang", 2, SMALL)(hf).items()})
# a rank's partials from CUDA tensors (a device source: the backend's fast_rects)
import ctypes  # noqa: E402
import weightsum.torch as wt  # noqa: E402
from weightsum.cuda import CANON  # noqa: E402
wl = wt._Layout("sglang", SMALL, 2)
src = wt._Source(list(lay.build_local(1, [t.to(torch.bfloat16) for t in hf]).items()))
pa, key = ctypes.c_void_p(), wt._Key(None)
wt.call("ws_partials_compute", wl.plan, 1, src.h, key.h, CANON["bf16"], ctypes.byref(pa))
wt._Partials(pa)
print("device partials computed")
# expect's SHA-256 answers from CUDA tensors (vLLM's, and SGLang's CPU path): the padded vocab
# rows are zero rectangles of the local image, in cast.cu (fp32 -> bf16) and sha256_pipeline.cu
m = wt.Manifest(algo="fast", keep_tensors=True)
m.add_all({n: t for (n, _, tied), t in zip(lay.hf_shapes(), hf) if tied is None})
for engine, where in (("vllm", "cuda"), ("sglang", "cpu")):
    print(engine, where, str(m.expect("sglang", 2, json.loads(SMALL), engine=engine, device=where))[:120])
torch.cuda.synchronize()
print("sanitize_run done")
