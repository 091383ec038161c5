#!/usr/bin/env bash
# bundle.sh BIN OUTDIR — make ws-agent self-contained so that it runs in any
# image, whatever libc and libraries the image has (or lacks):
#   OUTDIR/ws-agent        the binary
#   OUTDIR/lib/ld.so       its ELF interpreter (the host's dynamic loader)
#   OUTDIR/lib/*.so*       every library it loads (ldd's closure)
# cortexd binds OUTDIR read-only at /cortex/rt and starts
#   /cortex/rt/lib/ld.so --library-path /cortex/rt/lib /cortex/rt/ws-agent …
# so nothing of the image's /lib is used and no LD_LIBRARY_PATH reaches the
# agent that ws-agent spawns.  Rebuilt with the binary (CMake POST_BUILD).
# A static ws-agent (release builds: no PT_INTERP) is bundled alone, as
# OUTDIR/ws-agent with no lib/; cortexd then starts /cortex/rt/ws-agent.
set -euo pipefail
bin=$1 out=$2
tmp="$out.tmp.$$"
rm -rf "$tmp"
if ! LC_ALL=C readelf -lW "$bin" | grep -q 'Requesting program interpreter'; then
	mkdir -p "$tmp"
	cp "$bin" "$tmp/ws-agent"
	chmod -R a+rX "$tmp"
	rm -rf "$out"
	mv "$tmp" "$out"
	exit 0
fi
mkdir -p "$tmp/lib"
interp=
while read -r line; do
	# "libx.so.1 => /lib/x86_64-linux-gnu/libx.so.1 (0x...)" or "/lib64/ld-linux-x86-64.so.2 (0x...)"
	case "$line" in
	*"=> not found"*) echo "bundle.sh: $bin: $line" >&2; exit 1 ;;
	*"=> /"*) p=${line#*=> }; p=${p%% (*}; cp -L "$p" "$tmp/lib/" ;;
	/*) p=${line%% (*}; interp=$p ;;
	esac
done < <(ldd "$bin")
[ -n "$interp" ] || { echo "bundle.sh: $bin: no ELF interpreter (static?)" >&2; exit 1; }
cp -L "$interp" "$tmp/lib/ld.so"
cp "$bin" "$tmp/ws-agent"
chmod -R a+rX "$tmp"
rm -rf "$out"
mv "$tmp" "$out"
