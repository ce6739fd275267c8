# shellcheck shell=bash
# Helpers shared by vm/setup and vm/run (sourced, never executed).
#
# Both scripts must agree on three things, so they live here once:
#   * where the cache is,
#   * which kernel the guest boots (the newest installed 6.12 kernel; that is the
#     series bookworm-backports ships and for which dkms builds zfs.ko),
#   * the cache key of the initramfs, so that vm/run can tell in a few
#     milliseconds whether vm/setup has to run again.

VM_CACHE=${ZOFFSITE_VM_CACHE:-/var/cache/zoffsite-vm}
# Kernel series to boot. bookworm-backports' linux-image-amd64 is 6.12 and
# zfs-dkms 2.3.2 supports it; the host's own running kernel is irrelevant.
VM_KERNEL_SERIES=${ZOFFSITE_VM_KERNEL_SERIES:-6.12}

vm_log() {
	printf 'zoffsite-vm: %s\n' "$*" >&2
}

# Print the guest kernel version, or nothing if there is none:
# $ZOFFSITE_VM_KERNEL if set, else the newest installed generic-flavour
# $VM_KERNEL_SERIES kernel that has zfs.ko (--need-zfs: vm/run) or at
# least headers to build it (--need-headers: vm/setup). Other flavours (-rt, -cloud) are
# skipped: other packages may pull them in (wireguard-tools recommends a
# kernel providing wireguard-modules, which can install 6.12-rt from bookworm)
# and they have no headers, so dkms never builds zfs for them.
vm_kernel_version() {
	if [[ -n ${ZOFFSITE_VM_KERNEL:-} ]]; then
		printf '%s\n' "$ZOFFSITE_VM_KERNEL"
		return 0
	fi
	local f v versions=()
	for f in /boot/vmlinuz-"$VM_KERNEL_SERIES".*-amd64; do
		v=${f#/boot/vmlinuz-}
		[[ -e $f && $v != *-rt-amd64 && $v != *-cloud-amd64 ]] || continue
		[[ -d /lib/modules/$v/kernel ]] || continue
		if [[ ${1:-} == --need-zfs ]]; then
			[[ -n $(vm_zfs_module "$v") ]] || continue
		else
			[[ -e /lib/modules/$v/build/Makefile ]] || continue
		fi
		versions+=("$v")
	done
	((${#versions[@]})) || return 0
	printf '%s\n' "${versions[@]}" | sort -V | tail -n 1
}

# Print the path of zfs.ko for kernel $1 (dkms installs it under updates/),
# or nothing.
vm_zfs_module() {
	local kver=$1 f
	for f in /lib/modules/"$kver"/updates/dkms/zfs.ko* /lib/modules/"$kver"/extra/zfs.ko* \
		/lib/modules/"$kver"/kernel/zfs/zfs.ko*; do
		if [[ -e $f ]]; then
			printf '%s\n' "$f"
			return 0
		fi
	done
}

# Cache key of the initramfs for kernel $1: everything the image is built from.
# The kernel's, busybox' and zfs.ko's size+mtime stand in for their contents (hashing
# them would cost time on every vm/run); the scripts are hashed because they
# are what we edit.
vm_initramfs_key() {
	local kver=$1 dir
	dir=$(dirname "${BASH_SOURCE[0]}")
	{
		printf '%s\n' "$kver"
		stat -L -c '%n %s %Y' "/boot/vmlinuz-$kver" /bin/busybox "$(vm_zfs_module "$kver")" 2>/dev/null || true
		cat "$dir/guest/init" "$dir/guest/stage2" "$dir/setup" "$dir/lib.sh"
	} | sha256sum | cut -c1-16
}

vm_initramfs_path() {
	printf '%s/initramfs-%s-%s.cpio\n' "$VM_CACHE" "$1" "$(vm_initramfs_key "$1")"
}
