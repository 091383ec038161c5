#!/bin/bash
# build-default.sh — build the root Dockerfile (the default sandbox image) with
# buildah on top of localhost/cortex-base:bookworm (mkbase.sh, run first) and
# export it as an OCI layout dir under the machine-wide cache:
#     /var/cache/cortex/images/default-<hash>/
# <hash> covers the Dockerfile, the base script (mkbase.sh) and the Claude Code
# version the Makefile pins; a second run with the same inputs prints "cached".
# /var/cache/cortex/images/default points at the newest layout (what cortexd's
# images.import_dir_default names).  Prints the layout dir on its last line.
# Unattended, as root, after `make deps`.
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
. "$here/buildah-common.sh"
start=$(date +%s)

ver=$(sed -n 's/^CLAUDE_CODE_VERSION[ :]*=[ ]*//p' "$repo/Makefile" | head -1)
[ -n "$ver" ] || die "CLAUDE_CODE_VERSION not found in $repo/Makefile"
hash=$( { cat "$repo/Dockerfile" "$here/mkbase.sh"; echo "$ver"; } \
	| sha256sum | cut -c1-16)
out=$CORTEX_IMAGE_CACHE/default-$hash
if [ -s "$out/index.json" ]; then
	ln -sfn "default-$hash" "$CORTEX_IMAGE_CACHE/default"
	log "default image: cached ($out)"
	echo "$out"
	exit 0
fi

# The Claude Code executable: the platform package next to the wrapper package.
nm=$repo/.deps/node_modules/@anthropic-ai
bin= ; pkg=
for d in "$nm"/claude-code-linux-x64 "$nm"/claude-code-linux-arm64 "$nm"/claude-code; do
	if [ -x "$d/claude" ]; then bin=$d/claude; pkg=$d/package.json; break; fi
done
[ -n "$bin" ] || die "no claude executable under $nm (run make deps)"
got=$(sed -n 's/^ *"version": *"\([^"]*\)".*/\1/p' "$pkg" | head -1)
[ "$got" = "$ver" ] || die "claude under $nm is $got, the Makefile pins $ver (run make deps)"

"$here/mkbase.sh"
# older base rootfs tars (a changed mkbase.sh or apt sources) are not needed again
cur=$(bah inspect --type image --format '{{index .OCIv1.Config.Labels "cortex.base.hash"}}' "$BASE_IMAGE")
for f in "$CORTEX_IMAGE_CACHE"/base-*.tar; do
	[ -e "$f" ] && [ "$f" != "$CORTEX_IMAGE_CACHE/base-$cur.tar" ] && rm -f "$f"
done

ctx=$(mktemp -d /var/tmp/cortex-ctx.XXXXXX)
trap 'rm -rf "$ctx" "$out.tmp.$$"' EXIT
cp "$repo/Dockerfile" "$ctx/Dockerfile"
ln "$bin" "$ctx/claude" 2>/dev/null || cp "$bin" "$ctx/claude"
log "build context: Dockerfile + claude $ver ($(du -m "$bin" | cut -f1) MB)"

# The host CA bundle for RUN steps that fetch over TLS (an https mirror).
mounts=()
if grep -rqs 'https://' /etc/apt/sources.list /etc/apt/sources.list.d/; then
	mounts=(-v /etc/ssl/certs:/etc/ssl/certs:ro)
fi
img=localhost/cortex-default:$hash
log "buildah bud ($DRIVER, isolation chroot) -> $img"
t0=$(date +%s)
bah bud --isolation chroot --force-rm --layers "${mounts[@]+"${mounts[@]}"}" \
	--build-arg "BASE=$BASE_IMAGE" --build-arg "CLAUDE_CODE_VERSION=$ver" \
	-t "$img" -f "$ctx/Dockerfile" "$ctx"
log "built in $(( $(date +%s) - t0 ))s"

log "exporting OCI layout -> $out"
rm -rf "$out.tmp.$$"
bah push --quiet "$img" "oci:$out.tmp.$$"
rm -rf "$out"; mv "$out.tmp.$$" "$out"
ln -sfn "default-$hash" "$CORTEX_IMAGE_CACHE/default.tmp" && mv -T "$CORTEX_IMAGE_CACHE/default.tmp" "$CORTEX_IMAGE_CACHE/default"
trap - EXIT; rm -rf "$ctx"
for d in "$CORTEX_IMAGE_CACHE"/default-*; do # layouts of older inputs
	[ -d "$d" ] && [ "$d" != "$out" ] && rm -rf "$d"
done
for t in $(bah images --format '{{.Name}}:{{.Tag}}' localhost/cortex-default 2>/dev/null); do
	case $t in "$img"|*:latest) ;; *) bah rmi "$t" >/dev/null 2>&1 || true ;; esac
done
bah tag "$img" localhost/cortex-default:latest
size=$(du -sm "$out" | cut -f1)
log "default image ready: $size MB compressed layout, total $(( $(date +%s) - start ))s"
echo "$out"
