#!/usr/bin/env bash
# e2e/image-source.sh — the source's side of `make image-test`, run as root
# in the project's VM (vm/run) by scripts/image-test. The box is a second
# QEMU (the image under OVMF with Secure Boot and swtpm), joined to this VM
# by a QEMU datagram link: this VM's second NIC is the box's whole network
# (static 192.168.77.1, a DHCP server for the box, the WireGuard server the
# box dials).
#
#   image-source.sh new       a pool tank (file in $STATE), an encrypted
#                             dataset with data, the config, `box new friend`
#   image-source.sh backup    import the pool, `box apply` the source bundle,
#                             bring up the link, DHCP and WireGuard, then
#                             `box wait friend` (tunnel, pinned ssh, the box's
#                             doctor report, the first backup)
#   image-source.sh inspect   the box's data disk attached here, read-only:
#                             the snapshot is there by GUID, raw, its key
#                             unavailable
#
# STATE (the vm/run --out directory) keeps everything between the runs.
set -euo pipefail
: "${ZOFFSITE_BIN:?set ZOFFSITE_BIN}"
: "${STATE:?set STATE}"
export PATH="/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

readonly LINK_ADDR=192.168.77.1
readonly WG_PORT=51820
readonly BOX=friend
readonly CONFIG=$STATE/zoffsite.toml

log() { printf 'image-source: %s\n' "$*" >&2; }
die() {
	log "FAILED: $*"
	exit 1
}

import_tank() {
	zpool import -d "$STATE/tank.img" tank
	zfs load-key -L "file://$STATE/tank.key" tank/data
}

cmd_new() {
	rm -f "$STATE/tank.img"
	truncate -s 512M "$STATE/tank.img"
	zpool create -o cachefile=none tank "$STATE/tank.img"
	head -c 32 /dev/urandom >"$STATE/tank.key"
	zfs create -o encryption=on -o keyformat=raw -o "keylocation=file://$STATE/tank.key" \
		-o mountpoint=/tank/data tank/data
	for i in 1 2 3; do
		head -c 200000 /dev/urandom >"/tank/data/file$i"
	done
	echo "the only other copy" >/tank/data/note.txt
	cat >"$CONFIG" <<TOML
[source]
datasets = ["tank/data"]
TOML
	rm -rf "$STATE/friend"
	"$ZOFFSITE_BIN" box new "$BOX" --endpoint "$LINK_ADDR:$WG_PORT" --root offsite/home \
		-c "$CONFIG" --dir "$STATE/friend" --source-exe "$ZOFFSITE_BIN" >"$STATE/box-new.out" 2>&1 ||
		{
			cat "$STATE/box-new.out" >&2
			die "box new"
		}
	zpool export tank
	log "made box $BOX: $STATE/friend"
}

# The NIC QEMU's -netdev dgram joins to the box's (the only virtio-net).
link_if() {
	local d
	for d in /sys/class/net/*; do
		[[ -e $d/device/driver ]] || continue
		[[ $(basename "$(readlink -f "$d/device/driver")") == virtio_net ]] && {
			basename "$d"
			return 0
		}
	done
	return 1
}

cmd_backup() {
	modprobe virtio_net 2>/dev/null || true
	local ifc tries=0
	until ifc=$(link_if); do
		((++tries < 50)) || die "no virtio-net interface (QEMU's link to the box)"
		sleep 0.2
	done
	ip link set "$ifc" up
	ip addr add "$LINK_ADDR/24" dev "$ifc"
	mkdir -p /var/lib/misc
	cat >"$STATE/udhcpd.conf" <<CONF
start 192.168.77.10
end 192.168.77.20
interface $ifc
lease_file $STATE/udhcpd.leases
option subnet 255.255.255.0
option router $LINK_ADDR
option dns $LINK_ADDR
CONF
	touch "$STATE/udhcpd.leases"
	busybox udhcpd -f "$STATE/udhcpd.conf" >"$STATE/udhcpd.log" 2>&1 &
	import_tank
	"$ZOFFSITE_BIN" box apply --offline "$STATE/friend/source.bundle" >"$STATE/apply-source.out" 2>&1 ||
		{
			cat "$STATE/apply-source.out" >&2
			die "box apply source.bundle"
		}
	wg-quick up "zo-$BOX" 2>>"$STATE/wg-quick.log" || die "wg-quick up zo-$BOX"
	log "waiting for the box (box wait)"
	local rc=0
	"$ZOFFSITE_BIN" box wait "$BOX" -c "$CONFIG" --timeout "${WAIT_TIMEOUT:-40m}" \
		>"$STATE/box-wait.out" 2>"$STATE/box-wait.err" || rc=$?
	cat "$STATE/box-wait.out" "$STATE/box-wait.err" >&2
	((rc == 0)) || die "box wait exited $rc"
	"$ZOFFSITE_BIN" status -c "$CONFIG" --json >"$STATE/status.json" || die "status after the first backup"
	# The box audits itself two minutes after boot: wait for that audit
	# (status shows it as box_posture) before judging it.
	local tries=0
	until python3 -c '
import json, sys
t = json.load(open(sys.argv[1]))["targets"][0]
sys.exit(0 if (t.get("box_posture") or {}).get("state") == "audited" else 1)' "$STATE/status.json"; do
		((++tries < 60)) || die "no audit from the box after 20 minutes: $(cat "$STATE/status.json")"
		sleep 20
		"$ZOFFSITE_BIN" status -c "$CONFIG" --json >"$STATE/status.json" || true
	done
	"$ZOFFSITE_BIN" doctor --source -c "$CONFIG" --json >"$STATE/doctor-source.json" || true
	zfs list -H -p -o name,guid -t snapshot -r tank/data >"$STATE/source-snapshots"
	wg-quick down "zo-$BOX" 2>>"$STATE/wg-quick.log" || true
	zpool export tank
	log "backup: ok"
}

cmd_inspect() {
	# The box's data disk is this VM's virtio disk (scripts/image-test
	# attaches it read-only): import it read-only, mount nothing.
	local dev=${DATA_DEV:-/dev/vda} tries=0
	modprobe virtio_blk 2>/dev/null || true
	until [[ -b $dev ]]; do
		((++tries < 50)) || die "no $dev (the box's data disk)"
		sleep 0.2
	done
	# ZFS put the pool in a partition of the whole disk it was given, and
	# -d names the devices to scan, so the partitions are named too. -f: the
	# box was powered off with the pool imported (another host's), which is
	# what a disk taken from a box looks like; read-only, nothing is written.
	local devs=("$dev"*)
	zpool import "${devs[@]/#/-d}" -f -o readonly=on -N offsite || die "import the box's pool (scanned ${devs[*]})"
	zfs list -H -p -o name,guid -t snapshot -r offsite >"$STATE/box-snapshots"
	zfs get -H -o name,property,value -r encryption,keystatus,encryptionroot offsite >"$STATE/box-keys"
	zpool export offsite
	log "inspect: ok"
}

case ${1:-} in
new) cmd_new ;;
backup) cmd_backup ;;
inspect) cmd_inspect ;;
*) die "usage: image-source.sh new|backup|inspect" ;;
esac
