#!/bin/sh
# Build and run the gateway harness (ASan + UBSan).  Usage: tests/gateway/run.sh [outdir]
set -eu
root=$(cd "$(dirname "$0")/../.." && pwd)
out=${1:-${TMPDIR:-/tmp}/cortex-gateway-harness}
mkdir -p "$out"
${CC:-cc} -std=gnu11 -g -O1 -D_GNU_SOURCE -Wall -Wextra -Wshadow -Wconversion -Wno-sign-conversion \
  -Wformat=2 -Wmissing-prototypes -Wstrict-prototypes -Wpointer-arith -Wundef -Wvla \
  -Wno-format-truncation -Werror -fno-strict-aliasing -fsanitize=address,undefined -fno-omit-frame-pointer \
  -I"$root/cortexd" -I"$root/common" -I"$root/sandbox" \
  "$root/cortexd/gateway.c" "$root/cortexd/log.c" "$root/common/cx.c" \
  "$root/tests/gateway/gateway_harness.c" \
  -o "$out/gateway_harness" \
  $(pkg-config --cflags --libs libwebsockets libcurl jansson libsodium) -lpthread
exec "$out/gateway_harness"
