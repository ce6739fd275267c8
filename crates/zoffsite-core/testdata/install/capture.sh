#!/usr/bin/env bash
# Captures the REAL tool outputs that `zoffsite box install`'s tests read
# (crates/zoffsite-core/src/image/install/tests.rs). Run as root on Debian 12
# with systemd 254 (bookworm-backports), cryptsetup, swtpm and tpm2-tools, from
# this directory: ./capture.sh. It writes only here and into a private
# temporary directory, and touches no real disk or TPM.
#
# The root partition systemd-repart makes (Encrypt=key-file+tpm2) has a key
# slot for the key file (no token) and one sealed to the TPM (a systemd-tpm2
# token). Real repart needs device-mapper to encrypt, which the machine these
# were made on lacks, so the same header is made here with `cryptsetup
# luksFormat --key-file` and `systemd-cryptenroll --tpm2-device` against a
# software TPM; then the installer's own steps run on it: the recovery key,
# the dumps, the wipe of the key file's slot.
set -euo pipefail
export PATH="/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
cd "$(dirname "$0")"
out=$PWD
[[ $(id -u) -eq 0 ]] || { echo "capture.sh: run as root" >&2; exit 1; }

tmp=$(mktemp -d /tmp/zoffsite-install-capture.XXXXXX)
cleanup() {
	if [[ -s $tmp/swtpm.pid ]]; then kill "$(cat "$tmp/swtpm.pid")" 2>/dev/null || true; fi
	rm -rf "$tmp"
}
trap cleanup EXIT

mkdir "$tmp/tpmstate"
swtpm_setup --tpm2 --tpmstate "$tmp/tpmstate" --create-ek-cert --create-platform-cert --lock-nvram --overwrite >/dev/null
swtpm socket --tpm2 --tpmstate dir="$tmp/tpmstate" \
	--server type=unixio,path="$tmp/tpm.sock" --ctrl type=unixio,path="$tmp/tpm.sock.ctrl" \
	--flags startup-clear --daemon --pid file="$tmp/swtpm.pid"
for _ in $(seq 50); do [[ -S $tmp/tpm.sock ]] && break; sleep 0.1; done
TPM2TOOLS_TCTI="swtpm:path=$tmp/tpm.sock" tpm2_pcrextend \
	"7:sha256=$(printf 'zoffsite fixture PCR 7' | sha256sum | cut -d' ' -f1)"

(umask 077 && head -c 64 /dev/urandom >"$tmp/key")
truncate -s 32M "$tmp/root.img"
cryptsetup luksFormat --batch-mode --type luks2 --pbkdf pbkdf2 --pbkdf-force-iterations 1000 \
	--key-file "$tmp/key" "$tmp/root.img"
# As the installer enrolls it: PCR 7, and a policy on PCR 11 signed by the
# db key (here a throw-away key: only its public half is enrolled).
openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$tmp/db.key" 2>/dev/null
openssl pkey -in "$tmp/db.key" -pubout -out "$tmp/db.pub.pem"
systemd-cryptenroll --unlock-key-file="$tmp/key" --tpm2-device=swtpm:path="$tmp/tpm.sock" \
	--tpm2-pcrs=7 --tpm2-public-key="$tmp/db.pub.pem" --tpm2-public-key-pcrs=11 "$tmp/root.img"
# The installer's steps. stdout is not a terminal: the key alone on stdout.
systemd-cryptenroll --unlock-key-file="$tmp/key" --recovery-key "$tmp/root.img" \
	>"$out/cryptenroll-recovery-key.stdout" 2>"$out/cryptenroll-recovery-key.stderr"
cryptsetup luksDump --dump-json-metadata "$tmp/root.img" >"$out/luks2-keyfile-tpm2-recovery.json"
slot=$(python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); named={s for t in d["tokens"].values() for s in t["keyslots"]}; print(*[k for k in d["keyslots"] if k not in named])' "$out/luks2-keyfile-tpm2-recovery.json")
systemd-cryptenroll --unlock-key-file="$tmp/key" --wipe-slot="$slot" "$tmp/root.img"
cryptsetup luksDump --dump-json-metadata "$tmp/root.img" >"$out/luks2-tpm2-recovery.json"
# The key file no longer opens it; the recovery key does.
if cryptsetup open --test-passphrase --key-file "$tmp/key" "$tmp/root.img" 2>/dev/null; then
	echo "capture.sh: the key file still opens the volume" >&2; exit 1
fi
printf %s "$(cat "$out/cryptenroll-recovery-key.stdout")" | cryptsetup open --test-passphrase --key-file=- "$tmp/root.img"

# lsblk of this machine (a VM: its root is the whole disk vda).
lsblk --json --bytes --output NAME,PATH,TYPE,SIZE,RM,RO,PTTYPE,PARTTYPE,FSTYPE,MOUNTPOINTS,TRAN,MODEL,SERIAL --tree \
	>"$out/lsblk-vm.json"
echo "capture.sh: done (wiped slot $slot)"
