#!/bin/bash
# mkbase.sh — build a minimal Debian bookworm rootfs with mmdebstrap (variant
# minbase + ca-certificates) from the mirror this machine's apt already uses,
# and import it into buildah storage as localhost/cortex-base:bookworm.
#
# Cached: the image carries the label cortex.base.hash (this script + the
# apt sources); a second run with the same hash prints "cached" and exits.
# Env: CORTEX_IMAGE_CACHE (default /var/cache/cortex/images), CORTEX_BASE_IMAGE.
here=$(cd "$(dirname "$0")" && pwd)
. "$here/buildah-common.sh"
start=$(date +%s)
command -v mmdebstrap >/dev/null || die "mmdebstrap missing: make deps"

# The host's apt sources as one-line "deb URI SUITE COMPONENTS" entries, bookworm
# suites only: deb822 files (*.sources) and the classic sources.list.
host_sources() {
	local f
	for f in /etc/apt/sources.list.d/*.sources; do
		[ -f "$f" ] || continue
		awk '
		function flush() {
			if (types ~ /(^| )deb( |$)/ && uris != "" && enabled != "no") {
				n = split(uris, U, " "); m = split(suites, S, " ")
				for (i = 1; i <= n; i++) for (j = 1; j <= m; j++)
					if (S[j] ~ /^bookworm/) print "deb " U[i] " " S[j] " " comps
			}
			types = uris = suites = comps = enabled = ""
		}
		/^[ \t]*#/ { next }
		/^[ \t]*$/ { flush(); next }
		{
			k = tolower($1); sub(/:$/, "", k); v = $0; sub(/^[^:]*:[ \t]*/, "", v)
			if (k == "types") types = v; else if (k == "uris") uris = v
			else if (k == "suites") suites = v; else if (k == "components") comps = v
			else if (k == "enabled") enabled = tolower(v)
		}
		END { flush() }' "$f"
	done
	for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
		[ -f "$f" ] || continue
		# drop "[options]" (signed-by etc.): the rootfs uses its own keyring
		sed -e 's/#.*//' -e 's/\[[^]]*\]//' "$f" | awk '$1 == "deb" && $3 ~ /^bookworm/ { print }'
	done
}
sources=$(host_sources | awk '!seen[$0]++')
[ -n "$sources" ] || die "no bookworm 'deb' source in /etc/apt/sources.list{,.d/*.sources,.d/*.list}"

# apt proxy settings of the host, passed to the apt inside mmdebstrap
aptopts=()
while IFS= read -r line; do
	[ -n "$line" ] && aptopts+=(--aptopt="$line")
done < <(apt-config dump 2>/dev/null | grep -Ei '^Acquire::(https?|ftp)::Proxy' || true)

hash=$( { cat "$0"; echo "$sources"; printf '%s\n' "${aptopts[@]+"${aptopts[@]}"}" | grep -v -i proxy || true; } \
	| sha256sum | cut -c1-16)
have=$(bah inspect --type image --format '{{index .OCIv1.Config.Labels "cortex.base.hash"}}' "$BASE_IMAGE" 2>/dev/null || true)
if [ "$have" = "$hash" ]; then
	log "$BASE_IMAGE: cached (hash $hash, driver $DRIVER)"
	exit 0
fi

log "sources:"; echo "$sources" | sed 's/^/    /'
tar=$CORTEX_IMAGE_CACHE/base-$hash.tar
if [ -s "$tar" ]; then
	log "rootfs tar cached: $tar"
else
	log "mmdebstrap bookworm minbase (a few minutes) -> $tar"
	tmp=$tar.tmp.$$
	trap 'rm -f "$tmp"' EXIT
	t0=$(date +%s)
	# one mirror argument per source line
	mirrors=(); while IFS= read -r l; do mirrors+=("$l"); done <<<"$sources"
	mmdebstrap --variant=minbase --include=ca-certificates --format=tar \
		--aptopt='Acquire::Retries "3"' "${aptopts[@]+"${aptopts[@]}"}" \
		bookworm "$tmp" "${mirrors[@]}"
	mv "$tmp" "$tar"; trap - EXIT
	log "mmdebstrap done in $(( $(date +%s) - t0 ))s ($(du -m "$tar" | cut -f1) MB)"
fi

log "importing into buildah ($DRIVER) as $BASE_IMAGE"
ctr=$(bah from --name "cortex-base-$$" scratch)
trap 'bah rm "$ctr" >/dev/null 2>&1 || true' EXIT
bah add "$ctr" "$tar" /
bah config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
	--env LANG=C.UTF-8 --cmd /bin/bash --label "cortex.base.hash=$hash" \
	--label "org.opencontainers.image.description=Debian bookworm minbase (mmdebstrap) for Cortex" "$ctr"
bah commit --rm "$ctr" "$BASE_IMAGE" >/dev/null
trap - EXIT
log "$BASE_IMAGE ready (hash $hash) in $(( $(date +%s) - start ))s"
