#!/bin/sh
# Install a build tree into a temporary prefix, then build and run tests/install/consumer.c
# against it with nothing but pkg-config (as a program outside the tree would), and check the
# shared library's SONAME.  Usage: run.sh BUILD_DIR CC SOVERSION [EXTRA_CFLAGS]
set -eu
build=$1 cc=$2 soversion=$3 extra=${4:-}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cmake --install "$build" --prefix "$tmp/prefix" >/dev/null
pc=$(find "$tmp/prefix" -name weightsum.pc)
test -n "$pc" || { echo "no weightsum.pc installed"; exit 1; }
export PKG_CONFIG_PATH="$(dirname "$pc")"
cflags=$(pkg-config --cflags weightsum)
libs=$(pkg-config --libs weightsum)
libdir=$(pkg-config --variable=libdir weightsum)
case "$cflags $libs" in *"$(pwd)"*) echo "pkg-config points into the source tree: $cflags $libs"; exit 1;; esac
# shellcheck disable=SC2086
"$cc" -std=c11 -Wall -Wextra -Werror -pedantic $extra -o "$tmp/consumer" tests/install/consumer.c \
    $cflags $libs -Wl,-rpath,"$libdir"
soname=$(objdump -p "$libdir/libweightsum.so" | awk '/SONAME/ {print $2}')
test "$soname" = "libweightsum.so.$soversion" || { echo "SONAME '$soname', want libweightsum.so.$soversion"; exit 1; }
needed=$(objdump -p "$tmp/consumer" | awk '/NEEDED/ && /weightsum/ {print $2}')
test "$needed" = "libweightsum.so.$soversion" || { echo "consumer needs '$needed'"; exit 1; }
"$tmp/consumer"
