"""The committed fast-digest vectors equal what the independent generator produces now."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import gen_fast_vectors as gen  # noqa: E402


def test_committed_vectors_match_generator():
    with open(gen.OUT_PATH, encoding="utf-8") as f:
        committed = f.read()
    assert committed == gen.build(), (
        "tests/vectors/fast_digest.json drifted; rerun tests/py/gen_fast_vectors.py and review")


def test_generator_basics():
    K, y, key_id = gen.derive(gen.DEFAULT_SEED)
    assert all(len(lane) == gen.B for lane in K)
    assert all(0 < k < 2**32 for lane in K for k in lane)
    assert all(0 < v < gen.P for v in y)
    assert len(key_id) == 16
    # the empty run is the zero digest; a unit of 1 at index j is K[j mod B] * y^(j // B)
    assert gen.fast_digest(K, y, [], 5) == "0" * 48
    d = gen.fast_digest(K, y, [1], 3 * gen.B + 7)
    want = "".join("%016x" % (K[l][7] * pow(y[l], 3, gen.P) % gen.P) for l in range(3))
    assert d == want
