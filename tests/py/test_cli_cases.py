"""The CLI as a user meets it: tests/cli/CASE/{cmd,stdout,stderr,rc} (see tests/cli/README.md),
each run in a fresh copy of one fixture, output compared exactly after normalising paths."""
import os
import shutil
import subprocess

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from conftest import ROOT

CASES_DIR = os.path.join(ROOT, "tests", "cli")
CASES = sorted(d for d in os.listdir(CASES_DIR)
               if os.path.isfile(os.path.join(CASES_DIR, d, "cmd")))
UPDATE = os.environ.get("WS_CLI_CASES_UPDATE") == "1"


@pytest.fixture(scope="session")
def bindir(ws_bin, tmp_path_factory):
    d = tmp_path_factory.mktemp("bin")
    os.symlink(os.path.abspath(ws_bin), d / "weightsum")
    return d


@pytest.fixture(scope="session")
def fixture(bindir, tmp_path_factory):
    d = tmp_path_factory.mktemp("fixture")
    src = os.path.join(CASES_DIR, "fixture")
    for f in os.listdir(src):
        shutil.copy(os.path.join(src, f), d / f)
    ws = str(bindir / "weightsum")

    def run(*args):
        subprocess.run([ws, *map(str, args)], cwd=d, check=True, capture_output=True)

    run("synth", "config.json", "-o", "model.safetensors")
    run("synth", "config-1layer.json", "-o", "part.safetensors")
    run("hash", "model.safetensors", "-o", "manifest.json")
    (d / "model.sha256").write_text(subprocess.run(
        [ws, "hash", "model.safetensors"], cwd=d, check=True, capture_output=True,
        text=True).stdout)
    run("shard", "model.safetensors", "--layout", "sglang", "--tp", "2", "-o", "sglang-tp2")
    os.mkdir(d / "bare-tp2")
    for r in (0, 1):
        name = f"model-rank-{r}-part-0.safetensors"
        shutil.copy(d / "sglang-tp2" / name, d / "bare-tp2" / name)
    t = load_file(str(d / "model.safetensors"))
    k = t["model.layers.1.self_attn.k_proj.weight"].copy()
    k.view(np.uint32)[3, 5] ^= np.uint32(1 << 30)  # an exponent bit: survives the bf16 cast
    t["model.layers.1.self_attn.k_proj.weight"] = k
    save_file(t, str(d / "bad.safetensors"), metadata={"format": "pt"})
    return d


def normalise(text, tmp):
    return text.replace(str(tmp), "$TMP")


@pytest.mark.parametrize("case", CASES)
def test_cli_case(case, fixture, bindir, tmp_path):
    work = tmp_path / "w"
    shutil.copytree(fixture, work, symlinks=True)
    env = dict(os.environ, PATH=f"{bindir}:{os.environ['PATH']}", LC_ALL="C", TMP=str(work))
    cmd = os.path.join(CASES_DIR, case, "cmd")
    r = subprocess.run(["bash", "-o", "pipefail", cmd], cwd=work, env=env, capture_output=True, text=True,
                       timeout=300)
    got = {"stdout": normalise(r.stdout, work), "stderr": normalise(r.stderr, work),
           "rc": f"{r.returncode}\n"}
    for name, text in got.items():
        path = os.path.join(CASES_DIR, case, name)
        if UPDATE:
            with open(path, "w") as f:
                f.write(text)
            continue
        want = open(path).read() if os.path.exists(path) else ""
        assert text == want, f"{case}/{name}:\n--- expected\n{want}--- got\n{text}"
