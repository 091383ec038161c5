#!/bin/bash
# build.sh PREFIX VERSION [static] — libwebsockets from Debian's own source
# package, with our patches (third_party/lws/*.patch, after Debian's),
# installed into PREFIX (lib/libwebsockets.so.17, the evlib plugins, include/,
# lib/pkgconfig/libwebsockets.pc).  `make deps` runs it once per patch set
# (PREFIX/.stamp-VERSION-<hash of this dir>); CMakeLists.txt finds PREFIX
# (CORTEX_LWS_DIR) and links it with an rpath.  Why: docs/hacking.md
# "The patched libwebsockets".
#
# With "static": the same source and patches as a static library for
# ws-agent alone (lib/libwebsockets.a, include/; CORTEX_LWS_STATIC_DIR):
# ws-agent serves plain WebSocket on a socket cortexd hands it and polls, so
# no TLS, no compression extension, no zlib, no event-library plugins.  A
# statically linked ws-agent starts without a dynamic loader (docs/
# benchmarks.md "Create bursts": loading lws + OpenSSL was ~20 ms of CPU per
# sandbox).
#
# The source of exactly VERSION (Debian 12's libwebsockets-dev) is fetched
# with `apt-get source` from a deb-src list of our own (the system's apt
# configuration is not touched), as tests/fuzz/jansson.sh does; apt checks it
# against the signed Sources index.  Configured with debian/rules' options,
# the hardening flags dpkg-buildflags gives for them, minus:
#   LWS_WITH_GLIB    its build dependency, libglib2.0-dev, is not installed
#                    with libwebsockets-dev (the ev and uv plugins' are);
#   static library, test apps   not used here, and half the build time;
#   git               lws names its version after `git describe`, which
#                     would find this repository's commit (Debian's build
#                     has no git: "4.1.6-").
set -euo pipefail
prefix=$(realpath -m "$1")
ver=$2
mode=${3:-shared}
here=$(cd "$(dirname "$0")" && pwd)
stamp="$prefix/.stamp-$ver-$(cat "$here"/build.sh "$here"/*.patch | md5sum | cut -c1-8)"
[ -f "$stamp" ] && exit 0
work="$prefix.work"
rm -rf "$work" && mkdir -p "$work"/apt/{lists/partial,cache/archives/partial}
t0=$(date +%s)
. /etc/os-release
uri=$(sed -n 's/^URIs: *//p' /etc/apt/sources.list.d/debian.sources 2>/dev/null | head -1)
echo "deb-src ${uri:-http://deb.debian.org/debian} ${VERSION_CODENAME} main" > "$work/apt/sources.list"
aopt=(-o Dir::Etc::SourceList="$work/apt/sources.list" -o Dir::Etc::SourceParts=/dev/null
      -o Dir::State::Lists="$work/apt/lists" -o Dir::Cache="$work/apt/cache" -o APT::Sandbox::User=root)
echo "lws: fetching the source of libwebsockets $ver (apt-get source)"
apt-get "${aopt[@]}" -qq update
(cd "$work" && apt-get "${aopt[@]}" -qq source --download-only "libwebsockets=$ver") || {
	echo "lws: libwebsockets $ver is not in Debian's archive (any more?): set LWS_DEB_VERSION in the" \
	     "Makefile to the version libwebsockets-dev has ($(dpkg-query -W -f='${source:Version}' \
	     libwebsockets-dev 2>/dev/null)) and check that third_party/lws/*.patch still apply" >&2
	exit 1
}
# dpkg-source applies Debian's patches (debian/patches/series); then ours.
(cd "$work" && dpkg-source -x --no-check ./libwebsockets_*.dsc src >/dev/null)
for p in "$here"/*.patch; do
	echo "lws: applying $(basename "$p")"
	patch -d "$work/src" -p1 --forward --quiet < "$p"
done
# debian/rules: DEB_BUILD_MAINT_OPTIONS and DEB_CFLAGS_MAINT_APPEND.
export DEB_BUILD_MAINT_OPTIONS="hardening=+all future=+lfs"
export DEB_CFLAGS_MAINT_APPEND="-Wno-error=deprecated-declarations -fno-strict-aliasing"
cflags=$(dpkg-buildflags --get CFLAGS) cppflags=$(dpkg-buildflags --get CPPFLAGS)
ldflags=$(dpkg-buildflags --get LDFLAGS)
if [ "$mode" = static ]; then
	# position-independent (ws-agent is a static PIE); lws's own check finds
	# libcap: with no uid/gid to drop to, ws-agent never calls it
	opts=(-DLWS_WITH_SSL=OFF -DLWS_WITH_ZLIB=OFF -DLWS_WITHOUT_EXTENSIONS=ON -DLWS_WITH_LIBEV=OFF
	      -DLWS_WITH_LIBUV=OFF -DLWS_WITH_GLIB=OFF -DLWS_WITH_STATIC=ON -DLWS_WITH_SHARED=OFF
	      -DCMAKE_POSITION_INDEPENDENT_CODE=ON)
else
	opts=(-DLWS_WITHOUT_DAEMONIZE=OFF -DLWS_WITH_LIBEV=ON -DLWS_WITH_LIBUV=ON -DLWS_WITH_ZLIB=ON
	      -DLWS_WITHOUT_EXTENSIONS=OFF -DLWS_WITH_GLIB=OFF -DLWS_WITH_STATIC=OFF)
fi
cmake -S "$work/src" -B "$work/build" -DCMAKE_BUILD_TYPE=None -DCMAKE_INSTALL_PREFIX="$prefix" \
	-DCMAKE_C_FLAGS="$cflags $cppflags" -DCMAKE_SHARED_LINKER_FLAGS="$ldflags" \
	-DCMAKE_MODULE_LINKER_FLAGS="$ldflags" -DCMAKE_EXE_LINKER_FLAGS="$ldflags" \
	"${opts[@]}" -DLWS_UNIX_SOCK=ON -DLWS_IPV6=ON -DLWS_WITHOUT_TESTAPPS=ON \
	-DCMAKE_DISABLE_FIND_PACKAGE_Git=ON >"$work/configure.log" 2>&1 ||
	{ tail -40 "$work/configure.log" >&2; exit 1; }
cmake --build "$work/build" -j"${JOBS:-2}" >"$work/build.log" 2>&1 || { tail -40 "$work/build.log" >&2; exit 1; }
rm -rf "$prefix"
cmake --install "$work/build" >/dev/null
# each patch's mark in what was installed: 0001's log line, 0002's symbol
# (exported) and its feature macro (CMakeLists.txt checks the macro again),
# 0004's fallback log line and its option bit; 0005's epoll_pwait2 import;
# grep reads all of nm's output: with -q it would exit early, and nm's SIGPIPE
# fail the pipeline (pipefail)
lib="$prefix"/lib/libwebsockets.so nmopt=-D
[ "$mode" = static ] && lib="$prefix"/lib/libwebsockets.a nmopt=
grep -q 'unmasked frame from a client' "$lib"* ||
	{ echo "lws: the built library lacks our patch 0001" >&2; exit 1; }
nm $nmopt --defined-only "$lib" 2>/dev/null | grep -w lws_hdr_custom_name_foreach >/dev/null &&
	grep -q 'define LWS_HAS_HDR_CUSTOM_NAME_FOREACH' "$prefix"/include/libwebsockets/lws-http.h ||
	{ echo "lws: the built library lacks our patch 0002 (lws_hdr_custom_name_foreach)" >&2; exit 1; }
grep -q 'using poll()' "$lib"* &&
	grep -q 'define LWS_SERVER_OPTION_EPOLL' "$prefix"/include/libwebsockets/lws-context-vhost.h ||
	{ echo "lws: the built library lacks our patch 0004 (LWS_SERVER_OPTION_EPOLL)" >&2; exit 1; }
nm $nmopt --undefined-only "$lib" 2>/dev/null | grep -w epoll_pwait2 >/dev/null ||
	{ echo "lws: the built library lacks our patch 0005 (waits to the microsecond)" >&2; exit 1; }
rm -rf "$work"
touch "$stamp"
echo "lws: libwebsockets $ver ($mode) + $(ls "$here"/*.patch | wc -l) patch(es) in $prefix ($(($(date +%s) - t0)) s)"
