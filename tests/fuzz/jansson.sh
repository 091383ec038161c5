#!/bin/bash
# Build jansson instrumented for libFuzzer (coverage + ASan + UBSan) into
# $1 (a prefix: lib/libjansson.a, include/, lib/pkgconfig/jansson.pc).
# Fuzzing against Debian's uninstrumented libjansson finds nothing in it and
# gives libFuzzer no coverage of the parse, so the source of the very version
# Debian ships is fetched with `apt-get source` from a deb-src list of our own
# (the system's apt configuration is not touched) and built with clang.
set -euo pipefail
prefix=$(realpath -m "$1")
[ -f "$prefix/lib/libjansson.a" ] && [ -f "$prefix/lib/pkgconfig/jansson.pc" ] && exit 0
work="$prefix.work"
rm -rf "$work" && mkdir -p "$work"/apt/{lists/partial,cache/archives/partial}
# The Debian release and the version of libjansson-dev installed here.
. /etc/os-release
ver=$(dpkg-query -W -f='${source:Version}' libjansson-dev)
uri=$(sed -n 's/^URIs: *//p' /etc/apt/sources.list.d/debian.sources 2>/dev/null | head -1)
echo "deb-src ${uri:-http://deb.debian.org/debian} ${VERSION_CODENAME} main" > "$work/apt/sources.list"
aopt=(-o Dir::Etc::SourceList="$work/apt/sources.list" -o Dir::Etc::SourceParts=/dev/null
      -o Dir::State::Lists="$work/apt/lists" -o Dir::Cache="$work/apt/cache" -o APT::Sandbox::User=root)
echo "fuzz: fetching the source of jansson $ver (apt-get source)"
apt-get "${aopt[@]}" -qq update
(cd "$work" && apt-get "${aopt[@]}" -qq source --download-only "jansson=$ver")
(cd "$work" && dpkg-source -x --no-check ./jansson_*.dsc src >/dev/null)
flags="-g -O1 -fno-omit-frame-pointer -fsanitize=fuzzer-no-link,address,undefined"
cmake -S "$work/src" -B "$work/build" -DCMAKE_C_COMPILER=clang -DCMAKE_BUILD_TYPE=None \
	-DCMAKE_C_FLAGS="$flags" -DCMAKE_INSTALL_PREFIX="$prefix" \
	-DJANSSON_BUILD_SHARED_LIBS=OFF -DJANSSON_BUILD_DOCS=OFF -DJANSSON_EXAMPLES=OFF \
	-DJANSSON_WITHOUT_TESTS=ON >/dev/null
cmake --build "$work/build" -j"${JOBS:-2}" >/dev/null
cmake --install "$work/build" >/dev/null
rm -rf "$work"
echo "fuzz: instrumented jansson $ver in $prefix"
