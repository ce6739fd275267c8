#!/usr/bin/env bash
# Captures the REAL tool outputs that zoffsite-core's doctor tests read
# (crates/zoffsite-core/src/doctor/). Run as root on Debian 12 from this
# directory: ./capture.sh. It writes only into this directory and a private
# temporary one, and touches no real disk, TPM, firewall or sshd:
#
#   * luks2-*.json: `cryptsetup luksDump --dump-json-metadata` of LUKS2
#     containers in files, with systemd-tpm2 tokens enrolled by
#     `systemd-cryptenroll` against a software TPM (swtpm, socket mode, reached
#     through the tpm2-tss "swtpm" TCTI: `--tpm2-device=swtpm:path=SOCKET`);
#   * nft-*.json: `nft -j list ruleset` of rule sets loaded in a private network
#     namespace (unshare -n);
#   * sshd-T-*.txt: `sshd -T -f CONFIG` in a private mount namespace (sshd
#     insists on /run/sshd; a tmpfs /run there leaves the host's alone).
#
# Packages: cryptsetup-bin swtpm swtpm-tools tpm2-tools (libtss2-tcti-swtpm0)
# systemd (254 from bookworm-backports was used; Debian 12's own 252 was not tried),
# nftables, openssh-server, util-linux.
#
# The WireGuard dumps (wg-*.txt) and efivars bytes are NOT captured here: this
# machine's kernel has no WireGuard and no UEFI. They are written by hand from
# wg(8) ("dump") and the UEFI specification, and say so in README.md.
set -euo pipefail
export PATH="/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
cd "$(dirname "$0")"
out=$PWD
[[ $(id -u) -eq 0 ]] || { echo "capture.sh: run as root" >&2; exit 1; }

tmp=$(mktemp -d /tmp/zoffsite-doctor-capture.XXXXXX)
cleanup() {
	if [[ -s $tmp/swtpm.pid ]]; then kill "$(cat "$tmp/swtpm.pid")" 2>/dev/null || true; fi
	rm -rf "$tmp"
}
trap cleanup EXIT

# --- LUKS2 + systemd-tpm2 against swtpm -----------------------------------
mkdir "$tmp/tpmstate"
swtpm_setup --tpm2 --tpmstate "$tmp/tpmstate" --create-ek-cert --create-platform-cert --lock-nvram --overwrite >/dev/null
swtpm socket --tpm2 --tpmstate dir="$tmp/tpmstate" \
	--server type=unixio,path="$tmp/tpm.sock" --ctrl type=unixio,path="$tmp/tpm.sock.ctrl" \
	--flags startup-clear --daemon --pid file="$tmp/swtpm.pid"
for _ in $(seq 50); do [[ -S $tmp/tpm.sock ]] && break; sleep 0.1; done
# A fresh swtpm's PCRs are all zero, as if no firmware had measured anything
# (systemd-cryptenroll then warns "PCR policy effectively unenforced"):
# extend 0, 2 and 7 once each, as firmware would at boot.
for pcr in 0 2 7; do
	TPM2TOOLS_TCTI="swtpm:path=$tmp/tpm.sock" tpm2_pcrextend \
		"$pcr:sha256=$(printf 'zoffsite fixture PCR %s' "$pcr" | sha256sum | cut -d' ' -f1)"
done
printf 'test-passphrase' >"$tmp/pass"

# new_luks NAME: a 32 MiB LUKS2 container with one passphrase key slot (a fast
# KDF: these are fixtures, not secrets).
new_luks() {
	truncate -s 32M "$tmp/$1.img"
	cryptsetup luksFormat --batch-mode --type luks2 --pbkdf pbkdf2 --pbkdf-force-iterations 1000 \
		--key-file "$tmp/pass" "$tmp/$1.img"
}
# enroll NAME PCRS: a systemd-tpm2 token bound to PCRS ("" = none at all).
enroll() {
	PASSWORD=test-passphrase systemd-cryptenroll --tpm2-device=swtpm:path="$tmp/tpm.sock" \
		--tpm2-pcrs="$2" "$tmp/$1.img"
}
dump() {
	cryptsetup luksDump --dump-json-metadata "$tmp/$1.img" >"$out/$2"
}

new_luks none && dump none luks2-no-token.json
new_luks pcr7 && enroll pcr7 7 && dump pcr7 luks2-tpm2-pcr7.json
new_luks empty && enroll empty "" && dump empty luks2-tpm2-empty-policy.json
new_luks pcr02 && enroll pcr02 0+2 && dump pcr02 luks2-tpm2-pcr0+2.json

# --- nftables ---------------------------------------------------------------
nft_json() { # NAME: loads nft-NAME.nft in a fresh network namespace, dumps it
	unshare -n sh -c 'nft -f "$1" && nft -j list ruleset' _ "$tmp/$1.nft" >"$out/nft-$1.json"
}
# The box's rule set as e2e/topology.sh loads it today (interfaces renamed).
cat >"$tmp/box.nft" <<'NFT'
flush ruleset
table inet zoffsite_box {
	chain input {
		type filter hook input priority filter; policy drop;
		iif "lo" accept
		ct state invalid drop
		ct state established,related accept
		iifname "eth0" ip saddr 192.0.2.1 udp sport 51820 udp dport 51821 accept
		iifname "wg0" ip saddr 10.77.0.1 tcp dport 22 accept
	}
	chain forward {
		type filter hook forward priority filter; policy drop;
	}
	chain output {
		type filter hook output priority filter; policy accept;
	}
}
NFT
nft_json box
# Flushed: nothing at all.
printf 'flush ruleset\n' >"$tmp/flushed.nft"
nft_json flushed
# ssh open to all: policy drop, but port 22 accepted from anywhere.
sed 's/iifname "wg0" ip saddr 10.77.0.1 tcp dport 22 accept/tcp dport 22 accept/' "$tmp/box.nft" >"$tmp/open.nft"
nft_json open
# Restricted by source address only (no interface).
sed 's/iifname "wg0" ip saddr 10.77.0.1 tcp dport 22 accept/ip saddr 10.77.0.1 tcp dport 22 accept/' "$tmp/box.nft" >"$tmp/saddr.nft"
nft_json saddr
# The accept goes through a set the evaluator does not resolve.
sed 's/iifname "wg0" ip saddr 10.77.0.1 tcp dport 22 accept/tcp dport 22 ip saddr @friends accept/; s/chain input {/set friends { type ipv4_addr; elements = { 10.77.0.1 } }\n\tchain input {/' \
	"$tmp/box.nft" >"$tmp/set.nft"
nft_json set
# Input policy accept.
sed 's/hook input priority filter; policy drop;/hook input priority filter; policy accept;/' "$tmp/box.nft" >"$tmp/accept.nft"
nft_json accept

# --- sshd -T ----------------------------------------------------------------
ssh-keygen -q -t ed25519 -N '' -C zoffsite-doctor-fixture -f "$tmp/hostkey"
sshd_t() { # NAME: sshd -T of sshd-NAME.conf
	unshare -m sh -c 'mount -t tmpfs tmpfs /run && mkdir -m 0755 /run/sshd && sshd -T -f "$1"' _ "$tmp/$1.conf" >"$out/sshd-T-$1.txt"
}
cat >"$tmp/box.conf" <<CONF
HostKey $tmp/hostkey
ListenAddress 10.77.0.2:22
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin no
AllowUsers zoffsite
CONF
sshd_t box
# Debian's defaults: every address, passwords, root with keys, anyone.
printf 'HostKey %s\n' "$tmp/hostkey" >"$tmp/default.conf"
sshd_t default

echo "capture.sh: wrote $(ls "$out" | grep -c -v -e capture.sh -e README.md) fixtures into $out"
