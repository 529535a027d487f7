#!/usr/bin/env bash
# The README's second command: set up, build (plain and with ASan+UBSan), run every test.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --tests
scripts/build.sh build
scripts/build.sh build-asan -DWS_SANITIZE=ON
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
echo "== C unit tests (plain)";            ctest --test-dir build --output-on-failure
echo "== C unit tests (ASan+UBSan)";       ctest --test-dir build-asan --output-on-failure
echo "== CLI and cross-checks (ASan+UBSan)"
WEIGHTSUM_BIN=build-asan/weightsum python3 -m pytest -q -p no:cacheprovider tests/py
echo "== CLI and cross-checks (plain)"
WEIGHTSUM_BIN=build/weightsum python3 -m pytest -q -p no:cacheprovider tests/py
