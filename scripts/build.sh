#!/usr/bin/env bash
# Configure and build into DIR (default build/); extra arguments go to cmake.
set -euo pipefail
dir=${1:-build}; shift || true
cmake -S "$(dirname "$0")/.." -B "$dir" -DCMAKE_BUILD_TYPE=RelWithDebInfo "$@" >/dev/null
cmake --build "$dir" -j"$(nproc)" 2>&1 | grep -E 'warning|error' || true
test -x "$dir/weightsum"
