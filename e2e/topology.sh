#!/usr/bin/env bash
# End-to-end test network for zoffsite: a trusted source ("home") and a
# partially trusted backup box ("friend") joined the way the real deployment is
# (seed, section 3.5):
#
#   * the box sits behind its owner's home router with no port forwarding, so it
#     dials OUT to a WireGuard server run by the source;
#   * inside the tunnel the box is the SSH server, listening on its VPN address
#     only, firewalled so that only the source can reach it;
#   * the source's key may only run `zoffsite serve` (forced command).
#
# Usage (as root):
#   topology.sh up STATE_DIR                 build everything, verify it, write STATE_DIR/env
#   topology.sh up-provisioned STATE_DIR     the same network, but made by zoffsite itself:
#                                            `box new` on the source, `box apply` of each
#                                            bundle in its namespace (see below)
#   topology.sh down STATE_DIR               tear down; idempotent, never fails
#   topology.sh rotate-hostkey STATE_DIR [other|original]
#                                            restart the box's sshd with the other host key
#                                            (default "other") to simulate a changed host key
#   topology.sh exec-home STATE_DIR CMD...   run CMD in the source's namespace
#   topology.sh exec-friend STATE_DIR CMD... run CMD in the box's namespace
#
# Environment for `up`: ZOFFSITE_BIN (absolute path, required), BOX_ROOT
# (dataset the forced command serves, required), NETEM (optional netem
# arguments such as "delay 25ms" or "rate 8mbit" for the internet link),
# ZOFFSITE_E2E_KEEP=1 (keep a failed `up` standing, and keep STATE_DIR on
# `down`, for post-mortems).
# `up-provisioned` also needs SOURCE_CONFIG (the source's config, with its
# [source] datasets and no target yet: `box new` appends the target) and
# BOX_USER (the box user `box apply` makes; one per run, so that several
# provisioned topologies can stand side by side; the caller serializes the
# useradd of `up` and the userdel of `down` with its other users' ones).
#
# Provisioned machines get their own /etc where zoffsite writes: `ip netns
# exec NS` bind-mounts each entry of /etc/netns/NS over the same entry of
# /etc, so `box apply` run in the box's namespace installs into
# /etc/netns/FRIEND_NS/{wireguard,ssh,...} exactly as it would into /etc on a
# real box, and the source's files do not collide with the box's (both
# machines have /etc/wireguard/zo-friend.conf). The VM's root is a RAM
# overlay, so /etc may be written at all; nothing here is for a real host.
#
# Constraints this script is written for: it runs as root either directly on a
# Linux host or in the project's QEMU guest (vm/), whose root is the host's `/`
# under a RAM overlay. `up` writes nothing but STATE_DIR and the unavoidable
# runtime entries under /run (/run/netns/<ns> made by `ip netns`, and
# /run/sshd, the privilege separation directory sshd insists on), never
# touches /etc (no wg-quick, no resolvconf, no systemd units), and names
# everything global after a random per-run id so parallel or leftover runs
# cannot collide. `up-provisioned` writes /etc/netns/<ns> (see above) and
# makes the user BOX_USER; it refuses to run outside the VM unless
# ZOFFSITE_E2E_WRITE_ETC=1.
set -euo pipefail

# The guest's PATH may be minimal and the host's user shims are not writable
# there; make sure the sbin directories are searched.
export PATH="/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:${PATH:-}"
# Keys and configs must never be readable by others, whatever the caller's umask.
umask 077

# Fixed addresses (documentation range for the "internet", a private /24 for
# the tunnel), as in the brief and the README.
readonly HOME_WAN_ADDR=192.0.2.1
readonly FRIEND_WAN_ADDR=192.0.2.2
readonly WAN_PREFIX=24
readonly SOURCE_ADDR=10.77.0.1
readonly BOX_ADDR=10.77.0.2
readonly VPN_PREFIX=24
# The source's WireGuard server port (publicly reachable in reality, through
# NAT on the source's router). The box's port is pinned too, only so that the
# box firewall can name it exactly instead of accepting any UDP port.
readonly WG_PORT=51820
readonly FRIEND_WG_PORT=51821
readonly SSH_PORT=22
# Keepalive from the box: the seed uses 1 s so that the tunnel (and the NAT
# mapping at the friend's router) is always up when the source wants to connect.
readonly KEEPALIVE=1

# Interface names live inside the per-run namespaces, so they need not be
# unique across runs. All are <= 15 characters (IFNAMSIZ) and none starts
# with "vf", which `ip link` parses as a keyword.
readonly HOME_WAN_IF=wan-home
readonly FRIEND_WAN_IF=wan-friend
readonly HOME_WG_IF=wg-home
readonly FRIEND_WG_IF=wg-friend

readonly MARKER=.zoffsite-e2e-topology

# ---------------------------------------------------------------------------
# helpers

die() {
	echo "topology.sh: $*" >&2
	exit 1
}

log() {
	echo "topology.sh: $*" >&2
}

usage() {
	sed -n '/^# Usage/,/^# Environment/p' "$0" | sed 's/^# \{0,1\}//' >&2
	exit 2
}

need_root() {
	[[ $(id -u) -eq 0 ]] || die "must run as root"
}

need_tools() {
	local t missing=()
	for t in "$@"; do
		command -v "$t" >/dev/null 2>&1 || missing+=("$t")
	done
	((${#missing[@]} == 0)) || die "missing tools: ${missing[*]} (apt-get install wireguard-tools openssh-server openssh-client nftables iproute2 iputils-ping)"
}

# Paths end up unquoted in sshd_config, authorized_keys and the env file, so
# restrict them to characters that need no quoting anywhere.
check_safe_path() {
	[[ $2 =~ ^/[A-Za-z0-9_./+-]*$ ]] || die "$1 must be an absolute path of [A-Za-z0-9_./+-] characters: '$2'"
}

# Resolve STATE_DIR to an absolute path without requiring it to exist.
abs_state_dir() {
	local d=$1
	[[ -n $d ]] || usage
	[[ $d == /* ]] || d="$PWD/$d"
	# Strip trailing slashes (but keep "/" itself so that the checks below reject it).
	while [[ $d == */ && $d != / ]]; do d=${d%/}; done
	echo "$d"
}

# Load the names written by `up` (first thing it does, before creating
# anything, so that `down` can clean up after a partial `up`).
load_names() {
	local f="$STATE/names"
	[[ -f $f ]] || return 1
	# Only KEY=VALUE lines we wrote ourselves; parse instead of sourcing so a
	# tampered state directory cannot make root run code.
	local k v
	while IFS='=' read -r k v; do
		case $k in
		HOME_NS) HOME_NS=$v ;;
		FRIEND_NS) FRIEND_NS=$v ;;
		PROVISIONED) PROVISIONED=$v ;;
		PROV_USER) [[ $v =~ ^[a-z][a-z0-9]{1,15}$ ]] && PROV_USER=$v ;;
		esac
	done <"$f"
	[[ ${HOME_NS:-} =~ ^zh-[0-9a-f]+$ && ${FRIEND_NS:-} =~ ^zf-[0-9a-f]+$ ]] ||
		die "$f does not name this script's namespaces"
}

in_home() { ip netns exec "$HOME_NS" "$@"; }
in_friend() { ip netns exec "$FRIEND_NS" "$@"; }

# Poll CMD... every 0.2 s for up to $1 seconds. Timeouts are generous because
# the VM runs under software emulation (TCG) where everything is slow.
wait_for() {
	local secs=$1
	shift
	local i
	for ((i = 0; i < secs * 5; i++)); do
		if "$@"; then return 0; fi
		sleep 0.2
	done
	return 1
}

sshd_pid() {
	local p
	[[ -s $STATE/sshd.pid ]] || return 1
	p=$(<"$STATE/sshd.pid")
	[[ $p =~ ^[0-9]+$ ]] || return 1
	echo "$p"
}

# True if PID is alive and is a process inside the friend namespace, so that a
# stale pid file can never make us kill an unrelated process that reused the id.
pid_in_friend_ns() {
	local p=$1 q
	for q in $(ip netns pids "$FRIEND_NS" 2>/dev/null); do
		[[ $q == "$p" ]] && return 0
	done
	return 1
}

stop_sshd() {
	local p
	p=$(sshd_pid) || return 0
	if pid_in_friend_ns "$p"; then
		kill "$p" 2>/dev/null || true
		wait_for 10 not_alive "$p" || kill -KILL "$p" 2>/dev/null || true
		wait_for 5 not_alive "$p" || true
	fi
	rm -f "$STATE/sshd.pid"
}

not_alive() { ! kill -0 "$1" 2>/dev/null; }

# Kill every process still inside namespace NS. Everything in there was started
# by this run (sshd, its per-connection children, forced commands, test
# clients): the namespace name is unique to the run. A namespace with live
# processes would outlive `ip netns del` together with its interfaces.
kill_ns_procs() {
	local ns=$1 pids
	ip netns list 2>/dev/null | grep -q "^$ns\( \|$\)" || return 0
	pids=$(ip netns pids "$ns" 2>/dev/null | tr '\n' ' ')
	[[ -n ${pids// /} ]] || return 0
	# shellcheck disable=SC2086 # word splitting into pids is intended
	kill $pids 2>/dev/null || true
	if ! wait_for 10 ns_empty "$ns"; then
		pids=$(ip netns pids "$ns" 2>/dev/null | tr '\n' ' ')
		if [[ -n ${pids// /} ]]; then
			# shellcheck disable=SC2086
			kill -KILL $pids 2>/dev/null || true
		fi
		wait_for 5 ns_empty "$ns" || log "warning: processes remain in $ns: $(ip netns pids "$ns" | tr '\n' ' ')"
	fi
}

ns_empty() { [[ -z $(ip netns pids "$1" 2>/dev/null) ]]; }

# Writes the sshd config for host key $1.
write_sshd_config() {
	local hostkey=$1
	cat >"$STATE/sshd_config" <<EOF
# Box sshd for one zoffsite e2e run. Generated by e2e/topology.sh.
# Only the VPN address: the box is never an SSH server on the internet link
# (and the friend's router forwards no port to it).
ListenAddress $BOX_ADDR:$SSH_PORT
AddressFamily inet
HostKey $hostkey
PidFile $STATE/sshd.pid
AuthorizedKeysFile $STATE/authorized_keys
# In this first version the box user is root. prohibit-password: keys only.
PermitRootLogin prohibit-password
PubkeyAuthentication yes
AuthenticationMethods publickey
PasswordAuthentication no
KbdInteractiveAuthentication no
HostbasedAuthentication no
GSSAPIAuthentication no
KerberosAuthentication no
# PAM would read /etc/pam.d and write session state; not wanted here. Note:
# without PAM, sshd itself refuses accounts whose password field is locked
# with "!" (root is "*" on Debian, which is fine).
UsePAM no
# StrictModes makes sshd refuse an authorized_keys file if it or any parent
# directory is group/world-writable. STATE_DIR lives under /tmp (mode 1777),
# so the check would always fail. STATE_DIR itself is 0700 and root-owned,
# which protects the file just as well.
StrictModes no
# The source gets a forced command and nothing else (authorized_keys also
# says "restrict").
DisableForwarding yes
AllowTcpForwarding no
AllowStreamLocalForwarding no
AllowAgentForwarding no
X11Forwarding no
PermitTunnel no
GatewayPorts no
PermitTTY no
PermitUserEnvironment no
PermitUserRC no
# No Subsystem line at all: no sftp (or any other subsystem) is offered.
PrintMotd no
PrintLastLog no
UseDNS no
LoginGraceTime 30
MaxAuthTries 3
# Notice a dead source (tunnel gone, source crashed) within about a minute so
# a half-finished receive does not linger forever.
ClientAliveInterval 15
ClientAliveCountMax 4
# VERBOSE logs key fingerprints of accepted/refused keys.
LogLevel VERBOSE
EOF
}

start_sshd() {
	local sshd_bin
	# sshd re-executes itself and therefore must be started by absolute path.
	sshd_bin=$(command -v sshd)
	# Privilege separation directory; must exist and be root-owned, not
	# group/world-writable. Created if missing (it normally comes from
	# systemd-tmpfiles, which did not run in the VM). Deliberately never
	# removed: another sshd may be using it.
	if [[ ! -d /run/sshd ]]; then
		mkdir -p /run/sshd
		chmod 0755 /run/sshd
	fi
	in_friend "$sshd_bin" -t -f "$STATE/sshd_config" || die "sshd rejects $STATE/sshd_config"
	rm -f "$STATE/sshd.pid"
	# sshd daemonises and writes PidFile. -E sends its log to a file in STATE_DIR.
	# Our stdio is detached so that a caller capturing our output does not wait
	# for the daemon to close the pipe.
	in_friend "$sshd_bin" -f "$STATE/sshd_config" -E "$STATE/sshd.log" \
		</dev/null >>"$STATE/sshd.stderr" 2>&1 || die "sshd failed to start"
	wait_for 30 sshd_listening || die "sshd does not listen on $BOX_ADDR:$SSH_PORT"
}

sshd_listening() {
	sshd_pid >/dev/null &&
		in_friend ss -Hltn 2>/dev/null | awk '{print $4}' | grep -qx "$BOX_ADDR:$SSH_PORT"
}

# Writes STATE_DIR/env atomically: the keys both kinds of `up` share (the
# box user $1), then the kind's own, read from stdin.
write_env_file() {
	local tmp="$STATE/env.tmp"
	{
		cat <<EOF
HOME_NS=$HOME_NS
FRIEND_NS=$FRIEND_NS
STATE_DIR=$STATE
SOURCE_ADDR=$SOURCE_ADDR
BOX_ADDR=$BOX_ADDR
SSH_PORT=$SSH_PORT
SSH_USER=$1
HOME_WAN_ADDR=$HOME_WAN_ADDR
FRIEND_WAN_ADDR=$FRIEND_WAN_ADDR
HOME_WAN_IF=$HOME_WAN_IF
FRIEND_WAN_IF=$FRIEND_WAN_IF
WG_PORT=$WG_PORT
SSHD_LOG=$STATE/sshd.log
SSHD_PID=$(sshd_pid || echo 0)
ZOFFSITE_BIN=$ZOFFSITE_BIN
BOX_ROOT=$BOX_ROOT
EOF
		cat
	} >"$tmp"
	mv -f "$tmp" "$STATE/env"
}

# Rewrite STATE_DIR/env (also after rotate-hostkey, whose sshd pid differs).
write_env() {
	write_env_file root <<EOF
HOME_WG_IF=$HOME_WG_IF
FRIEND_WG_IF=$FRIEND_WG_IF
IDENTITY=$STATE/id_ed25519
KNOWN_HOSTS=$STATE/known_hosts
SSH_CONFIG=$STATE/ssh_config
SSH_HOST_ALIAS=box
AUTHORIZED_KEYS=$STATE/authorized_keys
HOST_KEY=$STATE/ssh_host_ed25519_key
OTHER_HOST_KEY=$STATE/other_host_key
ACTIVE_HOST_KEY=$1
SSHD_CONFIG=$STATE/sshd_config
EOF
}

# Reads one key from STATE_DIR/env (parsed, not sourced).
env_get() {
	local k v
	while IFS='=' read -r k v; do
		[[ $k == "$1" ]] && { echo "$v"; return 0; }
	done <"$STATE/env"
	return 1
}

# ---------------------------------------------------------------------------
# up

UP_OK=0
up_failed() {
	local rc=$?
	((UP_OK)) && return 0
	log "up FAILED (exit $rc); diagnostics follow"
	{
		echo "----- $STATE/sshd.log"
		cat "$STATE/sshd.log" 2>/dev/null || echo "(none)"
		cat "$STATE/sshd.stderr" 2>/dev/null || true
		if [[ -n ${HOME_NS:-} ]]; then
			echo "----- wg show ($HOME_NS)"
			in_home wg show 2>&1 || true
			echo "----- wg show ($FRIEND_NS)"
			in_friend wg show 2>&1 || true
			echo "----- nft list ruleset ($FRIEND_NS)"
			in_friend nft list ruleset 2>&1 || true
		fi
	} >&2
	if [[ ${ZOFFSITE_E2E_KEEP:-0} == 1 ]]; then
		log "ZOFFSITE_E2E_KEEP=1: leaving the topology up; run: $0 down $STATE"
	else
		# Remove namespaces and processes, keep STATE_DIR for the post-mortem.
		teardown
		log "torn down; $STATE kept (remove it with: $0 down $STATE)"
	fi
	exit 1
}

# Checks the environment, makes STATE_DIR, the two namespaces and the
# "internet" link between them: what both kinds of `up` share.
make_link() {
	need_root
	need_tools ip wg nft sshd ssh ssh-keygen ping ss timeout od
	[[ -z ${NETEM:-} ]] || need_tools tc

	: "${ZOFFSITE_BIN:?ZOFFSITE_BIN must be set (absolute path of the zoffsite binary)}"
	: "${BOX_ROOT:?BOX_ROOT must be set (e.g. offsitepool123/home)}"
	check_safe_path ZOFFSITE_BIN "$ZOFFSITE_BIN"
	[[ -x $ZOFFSITE_BIN && ! -d $ZOFFSITE_BIN ]] || die "ZOFFSITE_BIN is not executable: $ZOFFSITE_BIN"
	# A ZFS dataset name; it goes inside command="..." in authorized_keys.
	[[ $BOX_ROOT =~ ^[A-Za-z0-9][A-Za-z0-9_.:/-]*$ ]] || die "BOX_ROOT is not a plain dataset name: '$BOX_ROOT'"
	if [[ -n ${NETEM:-} ]]; then
		[[ $NETEM =~ ^[A-Za-z0-9.%\ _-]+$ ]] || die "NETEM has unexpected characters: '$NETEM'"
	fi

	check_safe_path STATE_DIR "$STATE"
	[[ $STATE != / ]] || die "STATE_DIR must not be /"
	# Fresh, private state directory. An existing EMPTY directory is accepted
	# (e.g. one made by a test harness's tempdir); anything else is refused so
	# that a second `up` can never reuse or clobber a live run.
	if [[ -e $STATE ]]; then
		[[ -d $STATE && ! -L $STATE ]] || die "$STATE exists and is not a directory"
		[[ -z $(ls -A "$STATE") ]] || die "$STATE exists and is not empty (leftover run? use: $0 down $STATE)"
		[[ $(stat -c %u "$STATE") == 0 ]] || die "$STATE is not owned by root"
	else
		mkdir -m 0700 "$STATE"
	fi
	chmod 0700 "$STATE"
	: >"$STATE/$MARKER"

	# Per-run id: 8 random hex digits. Namespace names have no length limit
	# but short names keep `ip netns` output readable.
	local id
	id=$(od -An -N4 -tx1 /dev/urandom | tr -d ' \n')
	HOME_NS="zh-$id"
	FRIEND_NS="zf-$id"
	# Recorded before anything is created, so `down` can undo a partial `up`.
	printf 'HOME_NS=%s\nFRIEND_NS=%s\n' "$HOME_NS" "$FRIEND_NS" >"$STATE/names"
	trap up_failed EXIT

	log "building topology $HOME_NS <-> $FRIEND_NS in $STATE"

	# Best effort: on a modular kernel (the VM's 6.12) the kernel would
	# autoload these on first use, but only if its modprobe helper is usable;
	# loading them up front gives clearer errors. On a kernel without module
	# support (the host) they are built in or absent, and modprobe just fails.
	local m
	for m in veth wireguard nf_tables nft_ct ${NETEM:+sch_netem}; do
		modprobe -q "$m" 2>/dev/null || true
	done

	# --- namespaces and the "internet" link -------------------------------
	ip netns add "$HOME_NS"
	ip netns add "$FRIEND_NS"
	in_home ip link set lo up
	in_friend ip link set lo up
	# Create the veth pair inside the namespaces directly: nothing ever appears
	# in the caller's namespace, so no global interface name can collide.
	ip -n "$HOME_NS" link add "$HOME_WAN_IF" type veth peer name "$FRIEND_WAN_IF" netns "$FRIEND_NS"
	ip -n "$HOME_NS" addr add "$HOME_WAN_ADDR/$WAN_PREFIX" dev "$HOME_WAN_IF"
	ip -n "$FRIEND_NS" addr add "$FRIEND_WAN_ADDR/$WAN_PREFIX" dev "$FRIEND_WAN_IF"
	ip -n "$HOME_NS" link set "$HOME_WAN_IF" up
	ip -n "$FRIEND_NS" link set "$FRIEND_WAN_IF" up
	if [[ -n ${NETEM:-} ]]; then
		# Shape both directions of the internet link (egress of each end).
		# shellcheck disable=SC2086 # NETEM is a list of tc arguments
		in_home tc qdisc replace dev "$HOME_WAN_IF" root netem $NETEM
		# shellcheck disable=SC2086
		in_friend tc qdisc replace dev "$FRIEND_WAN_IF" root netem $NETEM
	fi
}

cmd_up() {
	make_link

	# --- box firewall (before anything in the box listens) ----------------
	# The box is only partially trusted, but it is the friend's network that
	# must not be exposed: nothing is reachable from the internet link except
	# the WireGuard replies from the source's endpoint, and over the tunnel
	# only SSH from the source's tunnel address. Output stays open (the box
	# dials out). Established/related covers replies to the box's own traffic
	# (its WireGuard handshakes and keepalives, pings it sends).
	cat >"$STATE/friend.nft" <<EOF
# Box firewall for one zoffsite e2e run (loaded inside $FRIEND_NS only).
flush ruleset
table inet zoffsite_box {
	chain input {
		type filter hook input priority filter; policy drop;
		iif "lo" accept
		ct state invalid drop
		ct state established,related accept
		# WireGuard from the source's server endpoint only.
		iifname "$FRIEND_WAN_IF" ip saddr $HOME_WAN_ADDR udp sport $WG_PORT udp dport $FRIEND_WG_PORT accept
		# SSH only through the tunnel and only from the source.
		iifname "$FRIEND_WG_IF" ip saddr $SOURCE_ADDR tcp dport $SSH_PORT accept
	}
	chain forward {
		type filter hook forward priority filter; policy drop;
	}
	chain output {
		type filter hook output priority filter; policy accept;
	}
}
EOF
	in_friend nft -f "$STATE/friend.nft"

	# --- WireGuard ---------------------------------------------------------
	wg genkey >"$STATE/wg-home.key"
	wg pubkey <"$STATE/wg-home.key" >"$STATE/wg-home.pub"
	wg genkey >"$STATE/wg-friend.key"
	wg pubkey <"$STATE/wg-friend.key" >"$STATE/wg-friend.pub"
	local home_pub friend_pub
	home_pub=$(<"$STATE/wg-home.pub")
	friend_pub=$(<"$STATE/wg-friend.pub")

	# Interfaces are created inside their namespace so that their UDP socket
	# lives there too (a WireGuard socket stays in the namespace the interface
	# was created in). Configured with `wg set` + `ip`, not wg-quick, which
	# would write /etc and call resolvconf.
	# Home = server: fixed ListenPort, no Endpoint (it learns the box's
	# address from the box's handshakes, as behind the friend's NAT), and
	# AllowedIPs only the box's tunnel address.
	ip -n "$HOME_NS" link add "$HOME_WG_IF" type wireguard
	in_home wg set "$HOME_WG_IF" private-key "$STATE/wg-home.key" listen-port "$WG_PORT" \
		peer "$friend_pub" allowed-ips "$BOX_ADDR/32"
	ip -n "$HOME_NS" addr add "$SOURCE_ADDR/$VPN_PREFIX" dev "$HOME_WG_IF"
	ip -n "$HOME_NS" link set "$HOME_WG_IF" up
	# Friend = client: Endpoint = the source's public address, persistent
	# keepalive so the tunnel comes up by itself and stays up, AllowedIPs only
	# the source's tunnel address.
	ip -n "$FRIEND_NS" link add "$FRIEND_WG_IF" type wireguard
	in_friend wg set "$FRIEND_WG_IF" private-key "$STATE/wg-friend.key" listen-port "$FRIEND_WG_PORT" \
		peer "$home_pub" endpoint "$HOME_WAN_ADDR:$WG_PORT" allowed-ips "$SOURCE_ADDR/32" \
		persistent-keepalive "$KEEPALIVE"
	ip -n "$FRIEND_NS" addr add "$BOX_ADDR/$VPN_PREFIX" dev "$FRIEND_WG_IF"
	ip -n "$FRIEND_NS" link set "$FRIEND_WG_IF" up

	# --- SSH keys ----------------------------------------------------------
	# Box host key, and a second one that rotate-hostkey can swap in.
	ssh-keygen -q -t ed25519 -N '' -C zoffsite-box -f "$STATE/ssh_host_ed25519_key"
	ssh-keygen -q -t ed25519 -N '' -C zoffsite-box-other -f "$STATE/other_host_key"
	# Source client key, allowed to run exactly `zoffsite serve --root BOX_ROOT`:
	# "restrict" disables forwarding, pty, agent, X11 and ~/.ssh/rc; command=
	# ignores whatever the client asked for (sshd puts that in
	# SSH_ORIGINAL_COMMAND).
	ssh-keygen -q -t ed25519 -N '' -C zoffsite-source -f "$STATE/id_ed25519"
	printf 'restrict,command="%s serve --root %s" %s\n' \
		"$ZOFFSITE_BIN" "$BOX_ROOT" "$(<"$STATE/id_ed25519.pub")" >"$STATE/authorized_keys"
	# Pin the box's host key (no ssh-keyscan trust-on-first-use). The
	# comment is dropped: known_hosts lines are "host keytype key".
	local kt kb _
	read -r kt kb _ <"$STATE/ssh_host_ed25519_key.pub"
	printf '%s %s %s\n' "$BOX_ADDR" "$kt" "$kb" >"$STATE/known_hosts"
	# Client config for tests: `ssh -F $STATE/ssh_config box CMD` (run in the
	# home namespace) uses exactly the pinned key and identity, never the
	# invoking user's ~/.ssh, agent or /etc/ssh/ssh_known_hosts.
	cat >"$STATE/ssh_config" <<EOF
Host box
	HostName $BOX_ADDR
	Port $SSH_PORT
	User root
	IdentityFile $STATE/id_ed25519
	IdentitiesOnly yes
	IdentityAgent none
	UserKnownHostsFile $STATE/known_hosts
	GlobalKnownHostsFile /dev/null
	StrictHostKeyChecking yes
	UpdateHostKeys no
	BatchMode yes
	ConnectTimeout 20
	ServerAliveInterval 15
	ServerAliveCountMax 4
EOF

	# --- sshd in the box -----------------------------------------------------
	write_sshd_config "$STATE/ssh_host_ed25519_key"
	start_sshd
	write_env "$STATE/ssh_host_ed25519_key"

	verify
	UP_OK=1
	trap - EXIT
	log "up: ok (env in $STATE/env)"
}

# ---------------------------------------------------------------------------
# up-provisioned: the same network, made by `zoffsite box new` + `box apply`

readonly BOX_NAME=friend
readonly PROV_IF=zo-friend
# The source's name as the box dials it (the box resolves it through its
# own /etc/hosts, which a test rewrites to move the source).
readonly SOURCE_NAME=home.zoffsite.test

# Gives namespace $1 its own copy of each /etc entry named after it (see the
# header). `ip netns exec` binds only entries that exist in /etc too.
ns_etc() {
	local ns=$1 e
	shift
	mkdir -p "/etc/netns/$ns"
	for e in "$@"; do
		[[ -e /etc/$e ]] || mkdir -p "/etc/$e"
		cp -a "/etc/$e" "/etc/netns/$ns/$e"
	done
}

# Runs the ExecStart= lines of an installed unit, in namespace $1, as
# systemd would start it (the guest has no systemd as PID 1). The units
# zoffsite renders quote nothing, so word splitting is their parsing.
unit_exec() {
	local ns=$1 unit=$2 line
	local file="/etc/netns/$ns/systemd/system/$unit"
	[[ -f $file ]] || die "$unit was not installed in $ns"
	while IFS= read -r line; do
		[[ $line == ExecStart=* ]] || continue
		# shellcheck disable=SC2086 # the unit's argv, split as systemd splits it
		ip netns exec "$ns" ${line#ExecStart=} || die "$unit: ${line#ExecStart=} failed"
	done <"$file"
}

cmd_up_provisioned() {
	[[ ${ZOFFSITE_VM:-} == 1 || ${ZOFFSITE_E2E_WRITE_ETC:-} == 1 ]] ||
		die "up-provisioned writes /etc/netns and makes the user $PROV_USER: it runs in the project's VM (vm/run); on a throw-away host set ZOFFSITE_E2E_WRITE_ETC=1"
	: "${SOURCE_CONFIG:?SOURCE_CONFIG must be set (the config of the source, without a target yet)}"
	: "${BOX_USER:?BOX_USER must be set (the box user box apply makes)}"
	[[ $BOX_USER =~ ^[a-z][a-z0-9]{1,15}$ ]] || die "BOX_USER is not a plain user name: '$BOX_USER'"
	PROV_USER=$BOX_USER
	check_safe_path SOURCE_CONFIG "$SOURCE_CONFIG"
	need_tools wg-quick systemctl
	! id "$PROV_USER" >/dev/null 2>&1 || die "user $PROV_USER exists: another provisioned topology is up"
	make_link
	printf 'PROVISIONED=1\nPROV_USER=%s\n' "$PROV_USER" >>"$STATE/names"
	PROVISIONED=1

	ns_etc "$HOME_NS" wireguard systemd zoffsite
	ns_etc "$FRIEND_NS" wireguard ssh systemd sysctl.d zoffsite hosts
	printf '%s %s\n' "$HOME_WAN_ADDR" "$SOURCE_NAME" >>"/etc/netns/$FRIEND_NS/hosts"

	# --- what the owner types: box new on the source, box apply on each ---
	log "box new $BOX_NAME (in $HOME_NS)"
	in_home "$ZOFFSITE_BIN" box new "$BOX_NAME" --endpoint "$SOURCE_NAME:$WG_PORT" --root "$BOX_ROOT" \
		-c "$SOURCE_CONFIG" --dir "$STATE/bundle" --box-exe "$ZOFFSITE_BIN" --source-exe "$ZOFFSITE_BIN" \
		--user "$PROV_USER" \
		>"$STATE/box-new.out" 2>&1 || { cat "$STATE/box-new.out" >&2; die "box new failed"; }
	in_home "$ZOFFSITE_BIN" box apply --offline "$STATE/bundle/source.bundle" \
		>"$STATE/apply-source.out" 2>&1 || { cat "$STATE/apply-source.out" >&2; die "box apply (source) failed"; }
	in_friend "$ZOFFSITE_BIN" box apply --offline "$STATE/bundle/box.bundle" \
		>"$STATE/apply-box.out" 2>&1 || { cat "$STATE/apply-box.out" >&2; die "box apply (box) failed"; }

	# --- and what systemd would start, from the installed files ------------
	# The box: the sysctl that lets sshd bind the tunnel address early, the
	# firewall, sshd (before the tunnel: it must not need it), the tunnel.
	in_friend sysctl -q -p /etc/sysctl.d/60-zoffsite.conf
	unit_exec "$FRIEND_NS" zoffsite-firewall.service
	if [[ ! -d /run/sshd ]]; then
		mkdir -p /run/sshd
		chmod 0755 /run/sshd
	fi
	local sshd_bin
	sshd_bin=$(command -v sshd)
	in_friend "$sshd_bin" -t || die "sshd rejects the box's configuration"
	in_friend "$sshd_bin" -E "$STATE/sshd.log" -o "PidFile=$STATE/sshd.pid" \
		</dev/null >>"$STATE/sshd.stderr" 2>&1 || die "sshd failed to start"
	wait_for 30 sshd_listening || die "sshd does not listen on $BOX_ADDR:$SSH_PORT"
	in_friend wg-quick up "$PROV_IF" 2>>"$STATE/wg-quick.log" || die "wg-quick up $PROV_IF failed on the box"
	# The source: its tunnel table, its end of the tunnel.
	unit_exec "$HOME_NS" "zoffsite-firewall-$BOX_NAME.service"
	in_home wg-quick up "$PROV_IF" 2>>"$STATE/wg-quick.log" || die "wg-quick up $PROV_IF failed on the source"

	write_env_provisioned
	verify_provisioned
	UP_OK=1
	trap - EXIT
	log "up-provisioned: ok (env in $STATE/env)"
}

write_env_provisioned() {
	write_env_file "$PROV_USER" <<ENV
PROVISIONED=1
HOME_WG_IF=$PROV_IF
FRIEND_WG_IF=$PROV_IF
SOURCE_NAME=$SOURCE_NAME
BOX_HOSTS=/etc/netns/$FRIEND_NS/hosts
HOME_ETC=/etc/netns/$HOME_NS
FRIEND_ETC=/etc/netns/$FRIEND_NS
BUNDLE_DIR=$STATE/bundle
IDENTITY=$STATE/bundle/id_ed25519
KNOWN_HOSTS=$STATE/bundle/known_hosts
ENV
}

verify_provisioned() {
	# The box dialled the source by name; the source saw its handshake.
	wait_for 60 handshake_done "$PROV_IF" || die "no WireGuard handshake seen on $PROV_IF in $HOME_NS"
	log "verified: the box dialled $SOURCE_NAME; WireGuard handshake"
	# The source logs in as the box user with what box new made: its key for
	# this box and the pinned host key; the forced command runs.
	ssh_to_box "$PROV_USER" "$STATE/bundle/id_ed25519" "$STATE/bundle/known_hosts"
	only_tunnel_ssh
}

# ---------------------------------------------------------------------------
# checks run at the end of `up`

# Whether the source's interface $1 saw a handshake from the box.
handshake_done() {
	local _k ts
	read -r _k ts < <(in_home wg show "$1" latest-handshakes) || return 1
	[[ ${ts:-0} =~ ^[0-9]+$ && $ts -gt 0 ]]
}

# The source reaches the box's sshd through the tunnel as user $1 with key
# $2, pinning the host key in $3, and the forced command runs. Exit 255 is
# ssh's own failure (connect, host key, auth); anything else is the forced
# command's status, whatever ZOFFSITE_BIN does with "anything" and an empty
# stdin.
ssh_to_box() {
	local user=$1 key=$2 known=$3 rc=0
	timeout 60 ip netns exec "$HOME_NS" ssh -F none -i "$key" \
		-o IdentitiesOnly=yes -o IdentityAgent=none \
		-o UserKnownHostsFile="$known" -o GlobalKnownHostsFile=/dev/null \
		-o StrictHostKeyChecking=yes -o BatchMode=yes -o ConnectTimeout=20 \
		"$user@$BOX_ADDR" anything </dev/null >"$STATE/verify-ssh.out" 2>"$STATE/verify-ssh.err" || rc=$?
	if ((rc == 255 || rc == 124)); then
		cat "$STATE/verify-ssh.err" "$STATE/sshd.log" >&2
		die "ssh from $HOME_NS to $user@$BOX_ADDR failed (exit $rc)"
	fi
	grep -q "Accepted publickey for $user" "$STATE/sshd.log" ||
		die "sshd log shows no accepted publickey login for $user"
	log "verified: ssh source -> $user@$BOX_ADDR with the pinned host key (forced command exit $rc)"
}

# The box's SSH port is not reachable on its internet address (sshd does
# not listen there, and the firewall drops it anyway), and sshd listens on
# nothing but the tunnel address.
only_tunnel_ssh() {
	if tcp_open "$HOME_NS" "$FRIEND_WAN_ADDR" "$SSH_PORT"; then
		die "TCP $SSH_PORT on $FRIEND_WAN_ADDR is reachable from $HOME_NS"
	fi
	local listeners
	listeners=$(in_friend ss -Hltn | awk '{print $4}' | sort -u | tr '\n' ' ')
	[[ $listeners == "$BOX_ADDR:$SSH_PORT " ]] || die "unexpected TCP listeners in $FRIEND_NS: $listeners"
	log "verified: TCP $SSH_PORT closed on $FRIEND_WAN_ADDR; only $BOX_ADDR:$SSH_PORT listens in $FRIEND_NS"
}

ping_through_tunnel() {
	in_friend ping -n -q -c 1 -W 1 -I "$FRIEND_WG_IF" "$SOURCE_ADDR" >/dev/null 2>&1
}

tcp_open() { # ns addr port
	# shellcheck disable=SC2016 # expanded by the inner bash, from its argv
	ip netns exec "$1" timeout 3 bash -c 'exec 3<>"/dev/tcp/$0/$1"' "$2" "$3" 2>/dev/null
}

verify() {
	# 1. The tunnel carries traffic and the source saw a handshake. The ping
	# goes box -> source: that is the direction the real box uses (it dials
	# out), and the box firewall drops unsolicited ICMP from the source,
	# replies to the box's own ping pass as established.
	wait_for 30 ping_through_tunnel || die "no ping reply from $SOURCE_ADDR through the tunnel"
	wait_for 10 handshake_done "$HOME_WG_IF" || die "no WireGuard handshake seen on $HOME_WG_IF"
	log "verified: WireGuard handshake; ping box -> source through the tunnel"
	# 2. The forced command runs for root's pinned login.
	ssh_to_box root "$STATE/id_ed25519" "$STATE/known_hosts"
	# 3. ssh inside the tunnel only.
	only_tunnel_ssh
}

# ---------------------------------------------------------------------------
# down

teardown() {
	# Each step tolerates missing pieces: down must work after any partial up.
	set +e
	if [[ -n ${FRIEND_NS:-} ]]; then
		stop_sshd
		kill_ns_procs "$FRIEND_NS"
		ip netns del "$FRIEND_NS" 2>/dev/null
	fi
	if [[ -n ${HOME_NS:-} ]]; then
		kill_ns_procs "$HOME_NS"
		# Deleting a namespace destroys its veth end (and so the peer) and its
		# WireGuard interface.
		ip netns del "$HOME_NS" 2>/dev/null
	fi
	if [[ ${PROVISIONED:-0} == 1 ]]; then
		[[ -z ${HOME_NS:-} ]] || rm -rf -- "/etc/netns/$HOME_NS"
		[[ -z ${FRIEND_NS:-} ]] || rm -rf -- "/etc/netns/$FRIEND_NS"
		[[ -n ${PROV_USER:-} ]] && id "$PROV_USER" >/dev/null 2>&1 && userdel -r "$PROV_USER" 2>/dev/null
	fi
	set -e
}

cmd_down() {
	need_root
	if [[ ! -d $STATE ]]; then
		return 0
	fi
	if load_names 2>/dev/null; then
		teardown
		local left
		left=$(ip netns list 2>/dev/null | grep -E "^($HOME_NS|$FRIEND_NS)( |$)" || true)
		[[ -z $left ]] || log "warning: namespaces remain: $left"
	fi
	if [[ ${ZOFFSITE_E2E_KEEP:-0} != 1 ]]; then
		# Remove the state directory only if this script made it (marker), so a
		# mistyped argument can never delete anything else.
		if [[ -f $STATE/$MARKER && $STATE != / ]]; then
			rm -rf -- "$STATE"
		fi
	fi
	return 0
}

# ---------------------------------------------------------------------------
# rotate-hostkey

cmd_rotate_hostkey() {
	need_root
	local which=${1:-other} key
	case $which in
	other) key="$STATE/other_host_key" ;;
	original) key="$STATE/ssh_host_ed25519_key" ;;
	*) die "rotate-hostkey: expected 'other' or 'original', got '$which'" ;;
	esac
	[[ -f $STATE/env ]] || die "$STATE/env missing: is the topology up?"
	load_names
	ZOFFSITE_BIN=$(env_get ZOFFSITE_BIN)
	BOX_ROOT=$(env_get BOX_ROOT)
	[[ -f $key ]] || die "$key missing"
	# Restart the listener only: like a real sshd restart, sessions already
	# running keep going. known_hosts is NOT changed, so the next ssh from the
	# source must fail host key verification (and succeed again after
	# `rotate-hostkey STATE_DIR original`).
	stop_sshd
	write_sshd_config "$key"
	start_sshd
	write_env "$key"
	log "sshd restarted with host key $key (pid $(sshd_pid))"
}

# ---------------------------------------------------------------------------

main() {
	(($# >= 2)) || usage
	local cmd=$1
	STATE=$(abs_state_dir "$2")
	shift 2
	case $cmd in
	up)
		(($# == 0)) || usage
		cmd_up
		;;
	up-provisioned)
		(($# == 0)) || usage
		cmd_up_provisioned
		;;
	down)
		(($# == 0)) || usage
		cmd_down
		;;
	rotate-hostkey)
		(($# <= 1)) || usage
		cmd_rotate_hostkey "$@"
		;;
	exec-home | exec-friend)
		(($# >= 1)) || usage
		need_root
		load_names || die "$STATE/names missing: is the topology up?"
		if [[ $cmd == exec-home ]]; then
			exec ip netns exec "$HOME_NS" "$@"
		else
			exec ip netns exec "$FRIEND_NS" "$@"
		fi
		;;
	*) usage ;;
	esac
}

main "$@"
