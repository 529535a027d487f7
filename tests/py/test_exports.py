"""One prefix, nothing else exported: every dynamic symbol the shared library defines starts
with ws_ (internal ones are hidden), and every public function of both headers (the stable
weightsum.h and weightsum_experimental.h) is exported."""
import os
import re
import subprocess

from conftest import ROOT


def lib_path():
    return os.environ.get("WEIGHTSUM_LIB", os.path.join(ROOT, "build", "libweightsum.so"))


def test_exported_symbols_have_the_prefix():
    out = subprocess.run(["nm", "-D", "--defined-only", lib_path()], capture_output=True,
                         text=True, check=True).stdout
    names = [l.split()[-1] for l in out.splitlines() if l.split()[-2] in ("T", "D", "B", "R")]
    assert names, out
    bad = [n for n in names if not n.startswith("ws_")]
    assert bad == [], bad


def test_header_functions_are_exported():
    header = "".join(open(os.path.join(ROOT, "include", h)).read()
                     for h in ("weightsum.h", "weightsum_experimental.h"))
    declared = set(re.findall(r"WS_API[^;(]*?\b(ws_\w+)\s*\(", header))
    out = subprocess.run(["nm", "-D", "--defined-only", lib_path()], capture_output=True,
                         text=True, check=True).stdout
    exported = {l.split()[-1] for l in out.splitlines()}
    assert declared and declared <= exported, sorted(declared - exported)
