#!/usr/bin/env bash
# Self-test of e2e/topology.sh, without zoffsite: a stand-in forced command
# that prints its argv and SSH_ORIGINAL_COMMAND. Runs `up` ... `down` twice in a
# row (fresh state each time) and checks, beyond what `up` verifies itself:
#   * the generated ssh_config works and the forced command always runs with
#     `serve --root BOX_ROOT`, whatever the client asks for;
#   * forwarding and TTYs are refused;
#   * a changed host key is refused (rotate-hostkey), and accepted again after
#     rotating back;
#   * a tunnel source address other than 10.77.0.1 cannot reach sshd;
#   * the box firewall drops unsolicited traffic from the source (ping);
#   * `down` leaves no namespace, no process and no state directory behind,
#     and a second `down` succeeds.
# With --netem, a third round runs with NETEM="delay 25ms" and checks the
# round-trip time (needs sch_netem: the VM has it, the dev host does not).
#
# Usage (root): e2e/topology-selftest.sh [--netem]
#   or:         vm/run -- e2e/topology-selftest.sh --netem
set -euo pipefail
export PATH="/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:${PATH:-}"

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
TOPO="$HERE/topology.sh"
netem=0
[[ ${1:-} == --netem ]] && netem=1

BASE=$(mktemp -d "${TMPDIR:-/tmp}/zoffsite-topo-selftest.XXXXXX")
STATE=''
cleanup() {
	if [[ -n $STATE ]]; then "$TOPO" down "$STATE" || true; fi
	rm -rf "$BASE"
}
trap cleanup EXIT

fail() {
	echo "SELFTEST FAIL: $*" >&2
	[[ -n $STATE && -f $STATE/sshd.log ]] && { echo "--- sshd.log" >&2; cat "$STATE/sshd.log" >&2; }
	exit 1
}
ok() { echo "ok: $*"; }

# The stand-in for zoffsite. Lives in BASE (0700, root's): sshd runs it as root.
FAKE="$BASE/fake-zoffsite"
cat >"$FAKE" <<'EOF'
#!/bin/sh
echo "argv: $*"
echo "orig: ${SSH_ORIGINAL_COMMAND-<unset>}"
EOF
chmod 0755 "$FAKE"

envval() { sed -n "s/^$1=//p" "$STATE/env"; }

round() {
	local n=$1 rc out home_ns friend_ns pid
	STATE="$BASE/state$n"
	ZOFFSITE_BIN="$FAKE" BOX_ROOT=offsitepool123/home "$TOPO" up "$STATE" || fail "up (round $n)"
	[[ $(stat -c %a "$STATE") == 700 ]] || fail "STATE_DIR not 0700"
	home_ns=$(envval HOME_NS)
	friend_ns=$(envval FRIEND_NS)
	pid=$(envval SSHD_PID)
	ok "round $n: up ($home_ns, $friend_ns, sshd $pid)"

	local ssh=("$TOPO" exec-home "$STATE" ssh -F "$(envval SSH_CONFIG)")
	out=$("${ssh[@]}" box 'rm -rf /' </dev/null) || fail "ssh via ssh_config"
	[[ $out == *"argv: serve --root offsitepool123/home"* && $out == *"orig: rm -rf /"* ]] ||
		fail "forced command output: $out"
	ok "forced command runs with serve --root; client command only in SSH_ORIGINAL_COMMAND"

	rc=0
	"${ssh[@]}" -W 192.0.2.1:22 box </dev/null >/dev/null 2>&1 || rc=$?
	((rc != 0)) || fail "stdio forwarding (-W) was allowed"
	ok "stdio forwarding refused"

	"$TOPO" rotate-hostkey "$STATE" >/dev/null 2>&1 || fail "rotate-hostkey"
	[[ $(envval SSHD_PID) != "$pid" ]] || fail "sshd pid unchanged after rotate-hostkey"
	rc=0
	out=$("${ssh[@]}" box x </dev/null 2>&1) || rc=$?
	if ((rc != 255)) || [[ $out != *"REMOTE HOST IDENTIFICATION HAS CHANGED"* ]]; then
		fail "changed host key not refused (rc $rc): $out"
	fi
	"$TOPO" rotate-hostkey "$STATE" original >/dev/null 2>&1 || fail "rotate-hostkey original"
	"${ssh[@]}" box x </dev/null >/dev/null || fail "ssh after rotating back"
	ok "changed host key refused; original accepted again"

	"$TOPO" exec-home "$STATE" ip addr add 10.77.0.3/24 dev "$(envval HOME_WG_IF)"
	rc=0
	"${ssh[@]}" -o ConnectTimeout=3 -b 10.77.0.3 box x </dev/null >/dev/null 2>&1 || rc=$?
	((rc == 255)) || fail "ssh from tunnel address 10.77.0.3 was not blocked (rc $rc)"
	"$TOPO" exec-home "$STATE" ip addr del 10.77.0.3/24 dev "$(envval HOME_WG_IF)"
	ok "ssh from another tunnel address blocked"

	if "$TOPO" exec-home "$STATE" ping -n -q -c 1 -W 1 10.77.0.2 >/dev/null 2>&1; then
		fail "box answers unsolicited ping from the source"
	fi
	ok "box drops unsolicited ping"

	# Leave processes in both namespaces for down to clean up.
	"$TOPO" exec-friend "$STATE" sleep 600 &
	"$TOPO" exec-home "$STATE" sleep 601 &
	sleep 0.5

	"$TOPO" down "$STATE" || fail "down"
	wait || true
	"$TOPO" down "$STATE" || fail "second down"
	[[ ! -e $STATE ]] || fail "STATE_DIR still exists after down"
	if ip netns list | grep -qE "^($home_ns|$friend_ns)( |$)"; then fail "namespace left behind"; fi
	if kill -0 "$pid" 2>/dev/null; then fail "sshd $pid still alive"; fi
	if pgrep -f "$BASE/state$n/" >/dev/null; then fail "process referring to $STATE still alive"; fi
	STATE=''
	ok "round $n: down twice; no namespace, process or state left"
}

round_netem() {
	local rtt
	STATE="$BASE/netem"
	NETEM="delay 25ms" ZOFFSITE_BIN="$FAKE" BOX_ROOT=offsitepool123/home "$TOPO" up "$STATE" ||
		fail "up with NETEM"
	# 25 ms each way on the internet link: the tunnelled ping must take >= 50 ms.
	rtt=$("$TOPO" exec-friend "$STATE" ping -n -c 3 10.77.0.1 | sed -n 's|.*= [0-9.]*/\([0-9.]*\)/.*|\1|p')
	if [[ -z $rtt ]] || ! awk -v r="$rtt" 'BEGIN { exit !(r >= 50) }'; then
		fail "netem: average rtt '$rtt' ms < 50"
	fi
	"$TOPO" down "$STATE"
	STATE=''
	ok "NETEM delay 25ms applied (average tunnelled rtt $rtt ms)"
}

round 1
round 2
((netem == 0)) || round_netem
echo "SELFTEST PASSED"
