#!/usr/bin/env bash
# The `make demo` scenario, run as root in the project's VM: a source with an
# encrypted dataset tree, a box in another network namespace set up the
# recommended way (`zoffsite box new` on the source, `zoffsite box apply` of
# each bundle: WireGuard dialled by the box, sshd inside the tunnel only, both
# firewalls, the unprivileged box user whose key can only run `serve`), two
# backups (full, then incremental), and a look at what the box holds and that
# it cannot read it. Everything is created fresh and removed at the end.
set -euo pipefail
: "${ZOFFSITE_BIN:?set ZOFFSITE_BIN to the zoffsite binary}"
export PATH="/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:$PATH"
here=$(cd "$(dirname "$0")" && pwd)

say() { printf '\n== %s\n' "$*"; }
run() { printf '$ %s\n' "$*"; "$@"; }

# Pool names read like the README's; suffixed only if they already exist.
tank=tank offsite=offsite
if zpool list -H "$tank" >/dev/null 2>&1 || zpool list -H "$offsite" >/dev/null 2>&1; then
	tank=tank$$ offsite=offsite$$
fi
work=$(mktemp -d /tmp/zoffsite-demo.XXXXXX)
state=/tmp/box
[[ -e $state ]] && state=$work/box

cleanup() {
	"$here/topology.sh" down "$state" >/dev/null 2>&1 || true
	zpool destroy -f "$tank" 2>/dev/null || true
	zpool destroy -f "$offsite" 2>/dev/null || true
	rm -rf "$work"
}
trap cleanup EXIT

say "The source: pool $tank, an encrypted tree $tank/data (key stays here)"
for p in "$tank" "$offsite"; do
	truncate -s 256M "$work/$p.img"
	zpool create -O compression=off -O mountpoint=none "$p" "$work/$p.img"
done
head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$work/key"
run zfs create -o encryption=aes-256-gcm -o keyformat=hex -o "keylocation=file://$work/key" \
	-o "mountpoint=$work/mnt/data" "$tank/data"
for c in docs photos games; do zfs create "$tank/data/$c"; done
canary="CANARY-$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')"
echo "$canary: my tax return" >"$work/mnt/data/docs/taxes.txt"
head -c 4M /dev/urandom >"$work/mnt/data/photos/holiday.jpg"
run zfs list -r -o name,encryption,keystatus,mounted "$tank"

say "The config on the source: what to back up (no box yet)"
cat >"$work/zoffsite.toml" <<TOML
[source]
datasets = ["$tank/data"]          # each is backed up with all its children...
exclude = ["$tank/data/games"]     # ...except these, with their children
TOML
cat "$work/zoffsite.toml"
# The box user opens /dev/zfs itself (udev makes it 0666 on a real box).
chmod 666 /dev/zfs

say "The box: pool $offsite; zoffsite sets up both machines (docs/box.md)"
echo "\$ zoffsite box new friend --endpoint home.zoffsite.test:51820 --root $offsite/home -c zoffsite.toml --dir BUNDLE   # on the source"
echo "\$ zoffsite box apply BUNDLE/source.bundle   # on the source"
echo "\$ zoffsite box apply box.bundle             # on the box"
ZOFFSITE_BIN="$ZOFFSITE_BIN" BOX_ROOT="$offsite/home" SOURCE_CONFIG="$work/zoffsite.toml" BOX_USER=zoffsite \
	"$here/topology.sh" up-provisioned "$state" >/dev/null
home_ns=$(sed -n 's/^HOME_NS=//p' "$state/env")
friend_etc=$(sed -n 's/^FRIEND_ETC=//p' "$state/env")
say "box new said"
cat "$state/box-new.out"
say "box apply on the box said"
cat "$state/apply-box.out"
say "The box's sshd: the tunnel address only, the zoffsite user only, keys only"
grep -E '^(ListenAddress|AllowUsers|PermitRootLogin|AuthenticationMethods)' "$friend_etc/ssh/sshd_config.d/zoffsite.conf"
echo "the zoffsite user's authorized_keys (the source's key can only run serve):"
sed 's/ssh-ed25519 \(.\{16\}\).*/ssh-ed25519 \1.../' ~zoffsite/.ssh/authorized_keys
say "The config on the source, with the target box new added"
cat "$work/zoffsite.toml"

say "First backup: full, raw"
run ip netns exec "$home_ns" "$ZOFFSITE_BIN" backup -c "$work/zoffsite.toml"
sleep 1
echo "a second page" >>"$work/mnt/data/docs/taxes.txt"
say "Second backup: incremental from the snapshot both sides hold (matched by GUID)"
run ip netns exec "$home_ns" "$ZOFFSITE_BIN" backup -c "$work/zoffsite.toml"

say "serve ran as the unprivileged box user (sshd's log on the box)"
grep -o 'Accepted publickey for [a-z]* from [0-9.]*' "$state/sshd.log" | sort | uniq -c

say "What the box now holds"
run zfs list -r -t all -o name,encryption,keystatus,mounted "$offsite"

say "...and that it cannot read it"
snap=$(zfs list -H -o name -t snapshot -s createtxg "$offsite/home/$tank/data/docs" | tail -n 1)
# A non-raw send would need the plaintext, i.e. the key the box never has.
if zfs send "$snap" >/dev/null 2>"$work/err"; then
	echo "UNEXPECTED: the box could produce plaintext" >&2
	exit 1
fi
echo "zfs send (decrypted) of $snap on the box: $(head -n 1 "$work/err")"
zpool sync "$offsite"
if grep -qa "$canary" "$work/$offsite.img"; then
	echo "UNEXPECTED: plaintext found on the box's disk" >&2
	exit 1
fi
echo "the file's text ($canary) is nowhere on the box's disk: it holds only ciphertext"
say "Demo done: the box holds every snapshot, encrypted, and no key"
