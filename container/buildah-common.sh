# buildah-common.sh — sourced by mkbase.sh and build-default.sh.
# Picks the storage driver once per machine (overlay, else vfs) and keeps the
# choice in /var/cache/cortex/images/storage-driver so every later buildah call
# (these scripts and cortexd's builder) uses the same one.
set -euo pipefail

CORTEX_IMAGE_CACHE=${CORTEX_IMAGE_CACHE:-/var/cache/cortex/images}
BASE_IMAGE=${CORTEX_BASE_IMAGE:-localhost/cortex-base:bookworm}

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*"; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "run as root (buildah and mmdebstrap are used rootful)"
command -v buildah >/dev/null || die "buildah missing: make deps"
mkdir -p "$CORTEX_IMAGE_CACHE"

pick_driver() {
	local f=$CORTEX_IMAGE_CACHE/storage-driver
	if [ -s "$f" ]; then cat "$f"; return; fi
	local d
	for d in overlay vfs; do
		if buildah --storage-driver "$d" images >/dev/null 2>&1; then
			echo "$d" >"$f"; echo "$d"; return
		fi
	done
	die "buildah works with neither the overlay nor the vfs storage driver"
}
DRIVER=${CORTEX_STORAGE_DRIVER:-$(pick_driver)}
bah() { buildah --storage-driver "$DRIVER" "$@"; }
