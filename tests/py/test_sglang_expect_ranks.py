"""weightsum.cuda.SglangExpect on host tensors (CI, no GPU): several engine ranks' SGLang
gpu_tensor_hash answers from one description of the HF tensors (ws_sglang_expect_views_ranks)
equal the answers weightsum.expect writes per rank (ws_expect_create, another code path), in
every order asked; a changed element changes exactly the answers of the ranks that hold it;
wrong inputs are refused by name. The GPU run of the same: tests/gpu/test_cuda_backend.py."""
import numpy as np
import pytest

import weightsum
from weightsum.cuda import Batch, SglangExpect

CFG = {"model_type": "qwen2", "hidden_size": 256, "intermediate_size": 704,
       "num_hidden_layers": 2, "num_attention_heads": 8, "num_key_value_heads": 2,
       "vocab_size": 1001, "tie_word_embeddings": True}


@pytest.fixture(scope="module")
def model():
    sx = SglangExpect("sglang", 2, CFG)
    rng = np.random.default_rng(7)
    tensors = {n: (rng.standard_normal(s) * 0.05).astype(np.float32)
               for n, s in _shapes(sx).items()}
    return sx, tensors


def _shapes(sx):
    from weightsum._lib import lib
    out = {}
    for i in range(lib.ws_layout_hf_count(sx.h)):
        d = lib.ws_layout_hf(sx.h, i).contents
        if not d.tied_to:
            out[d.name.decode()] = [d.shape[k] for k in range(d.ndim)]
    return out


def by_rank(exp, sx):
    return {r: {n: int(exp["ranks"][r]["checksums"][n], 16) for n in sx.local_names[r]}
            for r in sx.ranks}


def test_ranks_equal_expect_per_rank(model):
    sx, t = model
    want = by_rank(weightsum.expect(t, "sglang", 2, CFG), sx)
    assert sx(t) == want
    assert sx(t, ranks=[1, 0]) == {1: want[1], 0: want[0]}
    assert list(sx(t, ranks=[1, 0])) == [1, 0]
    assert sx(t, ranks=[1]) == {1: want[1]}
    listed = [t.get(n) for n in sx.hf_names]  # layout order, None for the tied lm_head
    assert sx(listed) == want
    assert sx(Batch([x if x is not None else t[sx.hf_names[0]] for x in listed])) == want


def test_changed_element_changes_its_holders_only(model):
    sx, t = model
    base = sx(t)
    for name, row, holders in (
            ("model.layers.0.input_layernorm.weight", None,             # replicated: both ranks
             {(0, "model.layers.0.input_layernorm.weight"),
              (1, "model.layers.0.input_layernorm.weight")}),
            ("model.layers.1.self_attn.q_proj.weight", 200,             # rows 128.. on rank 1
             {(1, "model.layers.1.self_attn.qkv_proj.weight")})):
        u = dict(t)
        x = u[name].copy()
        (x.reshape(-1) if row is None else x[row])[3] += 1.0
        u[name] = x
        got = sx(u)
        changed = {(r, n) for r in got for n in got[r] if got[r][n] != base[r][n]}
        assert changed == holders, (name, changed)


def test_refusals(model):
    sx, t = model
    with pytest.raises(ValueError, match="not a rank"):
        sx(t, ranks=[2])
    with pytest.raises(weightsum.WeightsumError, match="asked for twice"):
        sx(t, ranks=[0, 0])
    u = dict(t)
    u["model.norm.weight"] = np.zeros(255, np.float32)
    with pytest.raises(ValueError, match="model.norm.weight.*255 elements"):
        sx(u)
    with pytest.raises(KeyError, match="not an HF tensor"):
        sx(dict(t, extra=np.zeros(3, np.float32)))
    u = dict(t)
    del u["model.norm.weight"]
    with pytest.raises(weightsum.WeightsumError, match="no data"):
        sx(u)
