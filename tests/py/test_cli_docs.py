"""The man page and the bash completion keep up with the CLI: every command and every long
option a command's --help names is in both; cmake --install puts them where man and
bash-completion look."""
import os
import re
import subprocess

import pytest

from conftest import ROOT

MAN = os.path.join(ROOT, "docs", "weightsum.1")
COMPLETION = os.path.join(ROOT, "completion", "weightsum.bash")
COMMANDS = ["hash", "verify", "diff", "shard", "synth", "demo", "serve", "push", "expect"]


def long_options(run, cmd):
    return set(re.findall(r"(--[a-z][a-z-]+)", run(cmd, "--help").stdout)) - {"--help"}


@pytest.mark.parametrize("cmd", COMMANDS)
def test_man_page_and_completion_name_every_option(run, cmd):
    man = open(MAN).read().replace("\\-", "-")
    comp = open(COMPLETION).read()
    opts = long_options(run, cmd)
    assert opts
    for o in sorted(opts):
        plain = o.replace("--[no-]", "--")
        assert plain in man, f"{cmd} {plain} not in docs/weightsum.1"
    block = re.search(rf"\n\s+{cmd}\) opts=\"([^\"]*)\"", comp)
    assert block, cmd
    words = set(block.group(1).replace("$dump", "--layout --tp --config --force")
                .replace("$common", "--help --progress --no-progress -j --jobs").split())
    missing = {o for o in opts if o not in words and o != "--no-"}
    assert not missing, f"completion of {cmd} lacks {sorted(missing)}"
    assert f".B {cmd}" in open(MAN).read()


def test_completion_completes(tmp_path):
    script = (f"source {COMPLETION}; COMP_WORDS=(weightsum verify --ign); COMP_CWORD=2; "
              "_weightsum; echo ${COMPREPLY[@]}; COMP_WORDS=(weightsum ve); COMP_CWORD=1; "
              "_weightsum; echo ${COMPREPLY[@]}; COMP_WORDS=(weightsum shard x --layout me); "
              "COMP_CWORD=4; _weightsum; echo ${COMPREPLY[@]}")
    out = subprocess.run(["bash", "-c", script], capture_output=True, text=True).stdout
    assert out.splitlines() == ["--ignore-missing", "verify version", "megatron"], out


def test_installed(ws_bin, tmp_path):
    build = os.path.dirname(os.path.abspath(ws_bin))
    r = subprocess.run(["cmake", "--install", build, "--prefix", str(tmp_path)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "share" / "man" / "man1" / "weightsum.1").read_text() == open(MAN).read()
    comp = tmp_path / "share" / "bash-completion" / "completions" / "weightsum"
    assert comp.read_text() == open(COMPLETION).read()
