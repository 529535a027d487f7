#!/usr/bin/env bash
# The README's first command: set up, build, run the built-in demo.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/build.sh build
exec build/weightsum demo "$@"
