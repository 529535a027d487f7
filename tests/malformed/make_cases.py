#!/usr/bin/env python3
"""Write the malformed-input corpus: one directory per case, holding the input and `expected`
(first line: exit code; second: a substring the one-line error must contain).
Run from anywhere: python3 tests/malformed/make_cases.py"""
import json
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))


def image(header, data=b"", claimed=None):
    h = header.encode() if isinstance(header, str) else header
    n = len(h) if claimed is None else claimed
    return struct.pack("<Q", n) + h + data


def good_header(**over):
    d = {"a": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]}}
    d.update(over)
    return json.dumps(d)


CASES = {
    "truncated": (image(good_header(), bytes(16))[:-5], "past the data section (11 bytes)"),
    "empty_file": (b"", "too short"),
    "absurd_header_length": (image(good_header(), bytes(16), claimed=1 << 50), "exceeds"),
    "header_past_eof": (image(good_header(), bytes(16), claimed=4000), "runs past the end"),
    "not_json": (image("{this is not json}", b""), "invalid JSON"),
    "unknown_dtype": (image(good_header(a={"dtype": "F4", "shape": [2], "data_offsets": [0, 1]}),
                            bytes(1)), 'unknown dtype "F4"'),
    "offsets_lie": (image(good_header(a={"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}),
                          bytes(8)), "past the data section"),
    "numel_mismatch": (image(good_header(a={"dtype": "F32", "shape": [3], "data_offsets": [0, 16]}),
                             bytes(16)), "need 12 bytes"),
    "overlapping": (image(json.dumps({
        "a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
        "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}}), bytes(12)), "overlaps"),
    "duplicate_names": (image('{"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},'
                              '"a":{"dtype":"U8","shape":[1],"data_offsets":[1,2]}}', bytes(2)),
                        "duplicate"),
    "hole": (image(good_header(a={"dtype": "U8", "shape": [2], "data_offsets": [2, 4]}), bytes(4)),
             "hole"),
}


def main():
    for name, (data, text) in CASES.items():
        d = os.path.join(HERE, name)
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, "input.safetensors"), "wb") as f:
            f.write(data)
        with open(os.path.join(d, "expected"), "w") as f:
            f.write(f"2\n{text}\n")
    # an index that names a file that is not there
    d = os.path.join(HERE, "index_missing_file")
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {}, "weight_map": {"a": "model-00001-of-00002.safetensors"}}, f)
    with open(os.path.join(d, "expected"), "w") as f:
        f.write("2\nmodel-00001-of-00002.safetensors: cannot open\n")
    # an index that forgets a tensor its file holds
    d = os.path.join(HERE, "index_unlisted_tensor")
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "model-00001-of-00001.safetensors"), "wb") as f:
        f.write(image(json.dumps({"a": {"dtype": "U8", "shape": [1], "data_offsets": [0, 1]},
                                  "b": {"dtype": "U8", "shape": [1], "data_offsets": [1, 2]}}),
                      bytes(2)))
    with open(os.path.join(d, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {}, "weight_map": {"a": "model-00001-of-00001.safetensors"}}, f)
    with open(os.path.join(d, "expected"), "w") as f:
        f.write("2\ntensor 'b': tensor not listed in the index\n")


if __name__ == "__main__":
    main()
