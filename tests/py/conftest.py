"""Shared fixtures: the weightsum binary under test (WEIGHTSUM_BIN, default build/weightsum)."""
import os
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope="session")
def ws_bin():
    path = os.environ.get("WEIGHTSUM_BIN", os.path.join(ROOT, "build", "weightsum"))
    assert os.access(path, os.X_OK), f"build weightsum first: {path}"
    return path


@pytest.fixture
def run(ws_bin):
    """run(args...) -> CompletedProcess with text stdout/stderr; never raises on exit code."""
    def _run(*args, stdin=None, timeout=600):
        return subprocess.run([ws_bin, *map(str, args)], capture_output=True, text=True,
                              input=stdin, timeout=timeout)
    return _run


def parse_lines(text):
    """{name: digest} from sha256sum-style output (the '# weightsum-manifest' header and other
    comment lines skipped)."""
    out = {}
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        digest, name = line.split("  ", 1)
        out[name] = digest
    return out
