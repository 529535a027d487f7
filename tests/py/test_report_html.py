"""verify --report: one self-contained HTML page, rendered by headless Chromium and asserted
on as rendered (computed colours of the grid's cells), with a planted mismatch shown red."""
import json
import html
import os
import re
import shutil
import subprocess

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

GREEN, RED, AMBER, EMPTY = "rgb(67, 160, 71)", "rgb(229, 57, 53)", "rgb(251, 140, 0)", \
    "rgb(238, 238, 238)"
# Appended to a copy of the page: records every cell's computed background colour.
PROBE = ("<script>(function(){var o={};document.querySelectorAll('#grid td').forEach("
         "function(td){o[td.id]=getComputedStyle(td).backgroundColor;});"
         "document.body.setAttribute('data-colors',JSON.stringify(o));})();</script>")


def chromium():
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    pytest.fail("headless Chromium is needed to check the HTML report: "
                "scripts/setup.sh --tests installs it (apt-get install chromium)")


def render(page, tmp_path):
    """Cell id -> background colour, as Chromium computed them for this page."""
    probe = tmp_path / "probe.html"
    probe.write_text(page.replace("</body>", PROBE + "</body>"))
    r = subprocess.run([chromium(), "--headless", "--no-sandbox", "--disable-gpu",
                        "--disable-dev-shm-usage", f"--user-data-dir={tmp_path / 'profile'}",
                        "--dump-dom", probe.as_uri()],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    m = re.search(r'data-colors="([^"]*)"', r.stdout)
    assert m, "the page did not render (no probe result):\n" + r.stdout[:2000]
    return json.loads(html.unescape(m.group(1)))


@pytest.fixture(scope="module")
def demo(tmp_path_factory, ws_bin):
    d = tmp_path_factory.mktemp("demo") / "d"
    r = subprocess.run([ws_bin, "demo", "--dir", str(d)], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    return d


def test_report_grid_shows_the_planted_mismatch_red(demo, run, tmp_path):
    out = tmp_path / "report.html"
    r = run("verify", demo / "manifest.json", demo / "sglang-tp2-corrupted", "--report", out)
    assert r.returncode == 1, r.stderr
    page = out.read_text()
    # self-contained: nothing to fetch
    assert not re.search(r"https?://|<link|\ssrc=|@import|url\(", page)
    colors = render(page, tmp_path)
    for layer in (0, 1):
        for kind in ("q", "k", "v", "o", "gate", "up", "down", "norms"):
            assert f"cell-L{layer}-{kind}" in colors, sorted(colors)
    for kind in ("embed", "lm_head", "norms"):
        assert colors[f"cell-model-{kind}"] == GREEN
    assert colors["cell-L1-k"] == RED, colors
    others = {k: v for k, v in colors.items() if k != "cell-L1-k" and v != EMPTY}
    assert others and set(others.values()) == {GREEN}, others
    # the finding is listed under the grid, with the engine tensor, both ranks and the rows
    section = page[page.index('id="f-cell-L1-k"'):]
    row = section[:section.index("</table>")]
    assert "model.layers.1.self_attn.k_proj.weight" in row
    assert "model.layers.1.self_attn.qkv_proj.weight" in row
    assert '<td class="rank">0, 1</td>' in row and "32..48 (rank 0); 32..48 (rank 1)" in row


def test_report_with_locate_names_rank_and_rows(demo, run, tmp_path):
    out = tmp_path / "report.html"
    r = run("verify", demo / "manifest.json", demo / "sglang-tp2-corrupted", "--locate",
            demo / "model.safetensors", "--report", out)
    assert r.returncode == 1
    page = out.read_text()
    assert render(page, tmp_path)["cell-L1-k"] == RED
    assert '<td class="rank">1</td><td class="rows">19..20</td>' in page


def test_report_all_green_and_missing_amber(demo, run, tmp_path):
    out = tmp_path / "ok.html"
    assert run("verify", demo / "manifest.json", demo / "sglang-tp2", "--report",
               out).returncode == 0
    colors = render(out.read_text(), tmp_path)
    assert set(v for v in colors.values() if v != EMPTY) == {GREEN}
    # a checkpoint without layer 0's down_proj: that cell amber, the rest green
    t = load_file(str(demo / "model.safetensors"))
    del t["model.layers.0.mlp.down_proj.weight"]
    part = tmp_path / "part.safetensors"
    save_file(t, str(part))
    out = tmp_path / "missing.html"
    assert run("verify", demo / "manifest.json", part, "--report", out).returncode == 1
    colors = render(out.read_text(), tmp_path)
    assert colors["cell-L0-down"] == AMBER and colors["cell-L1-down"] == GREEN


def test_report_replica_and_padding_red(demo, run, tmp_path):
    """Findings of other kinds land in their cells: a stale replica of a norm on rank 1,
    garbage in the vocab padding of the embedding."""
    bad = tmp_path / "bad"
    shutil.copytree(demo / "sglang-tp2", bad)
    p = bad / "model-rank-1-part-0.safetensors"
    t = load_file(str(p))
    n = t["model.layers.0.input_layernorm.weight"].copy()
    n[3] += 1.0
    t["model.layers.0.input_layernorm.weight"] = n
    e = t["model.embed_tokens.weight"].copy()
    e[-1, 0] = 1.0  # the last row of rank 1's shard is vocab padding (1000 -> 1024)
    t["model.embed_tokens.weight"] = e
    save_file(t, str(p))
    out = tmp_path / "r.html"
    r = run("verify", demo / "manifest.json", bad, "--report", out)
    assert r.returncode == 1, r.stdout + r.stderr
    colors = render(out.read_text(), tmp_path)
    assert colors["cell-L0-norms"] == RED and colors["cell-model-embed"] == RED, colors
    assert colors["cell-L1-norms"] == GREEN


def test_report_unwritable_is_trouble(demo, run, tmp_path):
    r = run("verify", demo / "manifest.json", demo / "sglang-tp2", "--report",
            tmp_path / "no" / "such" / "dir" / "r.html")
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1
