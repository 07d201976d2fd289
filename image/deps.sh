#!/usr/bin/env bash
# deps.sh — host dependencies for building and booting keel (run by `make deps`).
#
#  1. installs the Debian packages the build and the VM harness need;
#  2. fetches the pinned Debian kernel package into build/cache/ (never into git);
#  3. unpacks it into build/kernel/: vmlinuz, version (the kernel release), config
#     and lib/modules/<release>/, which `go run ./initramfs -kernel build/kernel` reads.
#
# It is idempotent: a second run with everything in place only runs dpkg-query and
# compares a stamp file.
#
# Overrides (environment): KERNEL_PKG, KERNEL_VERSION pin another kernel package.
set -euo pipefail

KERNEL_PKG="${KERNEL_PKG:-linux-image-6.1.0-56-amd64}"
KERNEL_VERSION="${KERNEL_VERSION:-6.1.192-2}"
KERNEL_META=linux-image-amd64

PACKAGES=(
	qemu-system-x86 qemu-utils ovmf
	grub-efi-amd64-bin grub-common
	kmod e2fsprogs squashfs-tools mtools dosfstools
	iproute2 ca-certificates
	dnsmasq-base chrony
	python3 curl openssl
	iputils-arping
	keepalived
	chromium
)

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="$ROOT/build/cache"
KDIR="$ROOT/build/kernel"

log() { printf 'deps: %s\n' "$*" >&2; }
die() { printf 'deps: error: %s\n' "$*" >&2; exit 1; }

is_root() { [ "$(id -u)" -eq 0 ]; }

# apt_update runs `apt-get update` at most once per invocation: both the package
# install and a kernel download that misses may need fresh lists.
APT_UPDATED=0
apt_update() {
	if [ "$APT_UPDATED" -eq 0 ]; then
		log "apt-get update"
		apt-get update -qq
		APT_UPDATED=1
	fi
}

install_packages() {
	local missing=() p status
	for p in "${PACKAGES[@]}"; do
		status="$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null || true)"
		[ "$status" = installed ] || missing+=("$p")
	done
	if [ "${#missing[@]}" -eq 0 ]; then
		log "packages: all ${#PACKAGES[@]} installed"
		return
	fi
	if ! is_root; then
		printf 'deps: missing packages: %s\n' "${missing[*]}" >&2
		printf 'deps: run as root:\n  apt-get update && apt-get install -y %s\n' "${missing[*]}" >&2
		exit 1
	fi
	apt_update
	log "apt-get install -y ${missing[*]}"
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
}

# deb_name prints the file name `apt-get download` gives PKG at VERSION
# (Debian encodes an epoch's colon as %3a).
deb_name() { printf '%s_%s_amd64.deb' "$1" "${2//:/%3a}"; }

# download PKG VERSION into the cache unless the .deb is already there.
download() {
	local pkg="$1" ver="$2" deb
	deb="$(deb_name "$pkg" "$ver")"
	if [ -s "$CACHE/$deb" ]; then
		return 0
	fi
	# apt-get download runs as the _apt user when it can; the cache belongs to
	# whoever runs make, so the "unsandboxed" warning is expected and harmless.
	(cd "$CACHE" && apt-get download -q "$pkg=$ver") >&2 || return 1
	[ -s "$CACHE/$deb" ] || return 1
}

# fetch_kernel prints the path of the kernel .deb to unpack.
fetch_kernel() {
	mkdir -p "$CACHE"
	local deb
	deb="$(deb_name "$KERNEL_PKG" "$KERNEL_VERSION")"
	if [ -s "$CACHE/$deb" ]; then
		printf '%s\n' "$CACHE/$deb"
		return
	fi
	log "fetching $KERNEL_PKG $KERNEL_VERSION"
	if download "$KERNEL_PKG" "$KERNEL_VERSION"; then
		printf '%s\n' "$CACHE/$deb"
		return
	fi
	# The lists may predate the pin, or the mirror may have dropped it: refresh
	# once and retry before giving up on the pinned version.
	if is_root && [ "$APT_UPDATED" -eq 0 ]; then
		apt_update
		if download "$KERNEL_PKG" "$KERNEL_VERSION"; then
			printf '%s\n' "$CACHE/$deb"
			return
		fi
	fi

	# Fallback: the metapackage's current candidate names the ABI package in its
	# Depends, e.g. "linux-image-6.1.0-57-amd64 (= 6.1.200-1)".
	local dep pkg ver
	dep="$(apt-cache show --no-all-versions "$KERNEL_META" 2>/dev/null | sed -n 's/^Depends: //p' | head -n1)"
	pkg="$(printf '%s' "$dep" | sed -n 's/^\(linux-image-[^ ,]*\).*/\1/p')"
	ver="$(printf '%s' "$dep" | sed -n 's/^linux-image-[^ ,]* (= \([^)]*\)).*/\1/p')"
	if [ -z "$pkg" ]; then
		die "pinned kernel $KERNEL_PKG $KERNEL_VERSION is not served and $KERNEL_META names no kernel (Depends: '$dep')"
	fi
	if [ -z "$ver" ]; then
		ver="$(apt-cache policy "$pkg" | sed -n 's/^ *Candidate: //p')"
	fi
	log "WARNING: pinned kernel $KERNEL_PKG $KERNEL_VERSION is not available;"
	log "WARNING: falling back to $pkg $ver (current $KERNEL_META); pin it in image/deps.sh"
	download "$pkg" "$ver" || die "apt-get download $pkg=$ver failed"
	printf '%s\n' "$CACHE/$(deb_name "$pkg" "$ver")"
}

# unpack_kernel DEB: lays out build/kernel/ from the package. A stamp naming the
# .deb makes the second run a no-op; the tree is built aside and renamed so an
# interrupted run never leaves a half-populated build/kernel/.
unpack_kernel() {
	local deb="$1" stamp="$KDIR/.stamp" want
	want="$(basename "$deb")"
	if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] &&
		[ -s "$KDIR/vmlinuz" ] && [ -s "$KDIR/version" ]; then
		log "kernel: $want already unpacked ($(cat "$KDIR/version"))"
		return
	fi
	local tmp="$KDIR.tmp"
	rm -rf "$tmp"
	mkdir -p "$tmp/x"
	log "unpacking $want"
	dpkg-deb -x "$deb" "$tmp/x"

	local vmlinuz release
	vmlinuz="$(find "$tmp/x/boot" -maxdepth 1 -name 'vmlinuz-*' | head -n1)"
	[ -n "$vmlinuz" ] || die "$want contains no boot/vmlinuz-*"
	release="${vmlinuz##*/vmlinuz-}"
	[ -d "$tmp/x/lib/modules/$release" ] || die "$want has no lib/modules/$release"

	mv "$vmlinuz" "$tmp/vmlinuz"
	printf '%s\n' "$release" >"$tmp/version"
	if [ -f "$tmp/x/boot/config-$release" ]; then
		mv "$tmp/x/boot/config-$release" "$tmp/config"
	fi
	mkdir -p "$tmp/lib/modules"
	mv "$tmp/x/lib/modules/$release" "$tmp/lib/modules/$release"
	rm -rf "$tmp/x"
	printf '%s\n' "$want" >"$tmp/.stamp"

	rm -rf "$KDIR"
	mv "$tmp" "$KDIR"
	log "kernel: $release in ${KDIR#"$ROOT"/}"
}

install_packages
deb="$(fetch_kernel)"
unpack_kernel "$deb"
