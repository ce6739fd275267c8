#!/usr/bin/env bash
# zoffsite benchmarks against real OpenZFS, OpenSSH and WireGuard, run as root
# inside the project VM (`scripts/bench` starts it with vm/run), or directly
# on a Linux host with ZFS loaded.
#
#   bench/in-vm.sh                      run every benchmark
#   bench/in-vm.sh --hwm FILE CMD...    (internal) run CMD, write its peak RSS
#                                       (VmHWM, KiB) to FILE, exit with its status
#
# Environment: ZOFFSITE_BIN (absolute path of a release build, required),
# BENCH_PLAN_BIN (the planner benchmark, run once in calibration: optional),
# ZOFFSITE_VM_OUT (where results.txt and bench.log go; set by vm/run),
# and for quick trial runs BENCH_REPS (3), BENCH_TP_REPS (5, throughput's own),
# BENCH_SCENARIOS (all: "calibration throughput memory bwlimit wan noop history backlog"),
# BENCH_BW_LIMIT (1MiB/s), BENCH_BW_MIB (24), BENCH_WAN_RATE (20mbit),
# BENCH_WAN_DELAY (40ms), BENCH_WAN_JITTER (10ms), BENCH_WAN_LOSS (0.5%),
# BENCH_WAN_MIB (128), BENCH_WAN_REPS (2), BENCH_WAN_PROFILES ("smooth jittery bbr"),
# BENCH_MIB (256), BENCH_MEM_SMALL_MIB (64),
# BENCH_NOOP_CHILDREN (100), BENCH_BACKLOG (200), BENCH_HIST_DATASETS (100),
# BENCH_HIST_SNAPSHOTS (30), BENCH_RTT_DELAY (25ms),
# BENCH_SYNCOID_CAP (90 seconds; see syncoid_noop), BENCH_BUDGET (7800 seconds),
# BENCH_ZOFFSITE_CC (the targets' congestion_control; unset: zoffsite's default).
#
# What it measures, always as zoffsite vs a baseline in the same run (the
# guest is emulated by QEMU/TCG, so only ratios within one run mean anything):
#   a. throughput: a raw full send through `zoffsite backup` vs the bare
#      `zfs send -w | ssh | zfs receive` over the same WireGuard tunnel;
#   b. no-op: `zoffsite backup` with nothing changed, 100 child datasets,
#      50 ms RTT (netem), vs syncoid doing the same no-op replication, and vs
#      the floor (one SSH login running the box's one listing);
#   c. backlog: 200 pending snapshots of one dataset, zoffsite vs syncoid;
#   d. memory: peak RSS of the source process and of `serve` on the box, for
#      a small and a large full send (flat = the transfer path streams), in
#      runs of their own: no sampler runs beside a timed run;
#   e. bandwidth limit: a send under `bandwidth_limit`, its average rate and
#      its fastest second as the box received them;
#   f. a home line (netem rate, delay, jitter, loss): zoffsite vs the bare
#      pipe vs syncoid, on a smooth and on a jittery line.
# Each timed measurement runs BENCH_REPS times (throughput BENCH_TP_REPS),
# alternating which side goes first, so neither always gets the warm caches,
# and the median is kept.
#
# Results: `key=value` lines in $ZOFFSITE_VM_OUT/results.txt (times in
# microseconds, sizes in bytes or KiB as named); everything the commands
# print goes to $ZOFFSITE_VM_OUT/bench.log; progress lines also go to stdout.
# A benchmark whose zoffsite feature fails is recorded as `<name>_status=failed`
# with `<name>_error=<the error line>`, and the others still run: benchmarks
# report, they do not gate. The exit status is non-zero only when the harness
# itself cannot work (no ZFS, no topology, ...).
set -euo pipefail
export PATH="/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:${PATH:-}"
export LC_ALL=C

# ---------------------------------------------------------------------------
# --hwm: a transparent wrapper that watches one process's peak RSS. Used in
# front of `zoffsite backup` and as the box's forced command in front of
# `zoffsite serve`. /usr/bin/time -v reports the largest process of the tree
# it waited for (zoffsite or one of its children: zfs send, ssh, zfs receive),
# so this gives zoffsite's own figure. VmHWM is a high-water mark, so sampling
# it every 0.1 s misses at most a peak reached in the last 0.1 s of the run.
# The wrapper is not in the data path: CMD inherits stdin and stdout.
if [[ ${1:-} == --hwm ]]; then
	(($# >= 3)) || {
		echo "usage: $0 --hwm FILE CMD..." >&2
		exit 2
	}
	hwm_file=$2
	shift 2
	# An asynchronous command's stdin would be /dev/null in a non-interactive
	# shell; the explicit redirection keeps the real one (serve speaks the
	# protocol on it).
	"$@" <&0 &
	pid=$!
	# Sleep without forking: a read with a timeout on a pipe nobody writes.
	exec {nap}<> <(:)
	hwm=0
	while kill -0 "$pid" 2>/dev/null; do
		# Builtins only: no fork per sample to disturb the measurement.
		while read -r k v _; do
			[[ $k == VmHWM: ]] && hwm=$v
		done <"/proc/$pid/status" 2>/dev/null || true
		read -r -t 0.1 -u "$nap" _ || true
	done
	rc=0
	wait "$pid" || rc=$?
	echo "$hwm" >"$hwm_file"
	exit "$rc"
fi

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SELF="$REPO/bench/in-vm.sh"
TOPOLOGY="$REPO/e2e/topology.sh"
: "${ZOFFSITE_BIN:?set ZOFFSITE_BIN to the release zoffsite binary}"
OUT=${ZOFFSITE_VM_OUT:?set ZOFFSITE_VM_OUT to the directory for results.txt and bench.log}
REPS=${BENCH_REPS:-3}
# The throughput ratio is a small difference between two long runs, each
# swayed by whatever else the host does: it gets more repetitions.
TP_REPS=${BENCH_TP_REPS:-$((REPS > 5 ? REPS : 5))}
# Which scenarios run (all by default; e.g. "noop" to look at one).
SCENARIOS=${BENCH_SCENARIOS:-calibration throughput memory bwlimit wan noop history backlog}
MIB=${BENCH_MIB:-256}
MEM_SMALL_MIB=${BENCH_MEM_SMALL_MIB:-64}
NOOP_CHILDREN=${BENCH_NOOP_CHILDREN:-100}
BACKLOG=${BENCH_BACKLOG:-200}
HIST_DATASETS=${BENCH_HIST_DATASETS:-100}
HIST_SNAPSHOTS=${BENCH_HIST_SNAPSHOTS:-30}
# One-way delay on each end of the "internet" link: 25 ms + 25 ms = 50 ms RTT.
RTT_DELAY=${BENCH_RTT_DELAY:-25ms}
# Longest a syncoid no-op run may take before it is stopped and extrapolated.
SYNCOID_CAP=${BENCH_SYNCOID_CAP:-90}
# Seconds this script may run: scripts/bench gives the VM 8500 s, and on a
# busy or slow host (other VMs sharing the 2 cores) the full set of
# repetitions can take longer than that (run 20261208T001615Z, on a quiet
# host whose guest sends 3.6 MB/s, reached the home lines after 84 min of
# 105 and lost the jittery line's second repetition and BBR). A repetition
# that would end past the budget is not started; medians are then over the
# repetitions done (<name>_reps_done).
BUDGET=${BENCH_BUDGET:-7800}

RESULTS=$OUT/results.txt
LOG=$OUT/bench.log
mkdir -p "$OUT"
: >"$RESULTS"
: >"$LOG"
# fd 3 = the console (vm/run streams it live); everything else goes to the log.
exec 3>&1 >>"$LOG" 2>&1

say() {
	local m
	printf -v m '[%(%H:%M:%S)T] %s' -1 "$*"
	echo "$m"
	echo "$m" >&3
}
die() {
	say "FATAL: $*"
	exit 1
}
record() {
	# One key=value line; values never contain newlines.
	local v=${2//$'\n'/ }
	echo "$1=$v" >>"$RESULTS"
	echo "result: $1=$v"
}

[[ $(id -u) == 0 ]] || die "must run as root"
[[ -e /dev/zfs ]] || die "no /dev/zfs: run through vm/run (scripts/bench)"
[[ -x $ZOFFSITE_BIN ]] || die "ZOFFSITE_BIN is not executable: $ZOFFSITE_BIN"
for t in zpool zfs ssh ssh-keygen syncoid ip tc /usr/bin/time awk accton dump-acct; do
	command -v "$t" >/dev/null || die "missing tool: $t"
done

# ---------------------------------------------------------------------------
# world: two pools on sparse files, one topology, cleaned up on any exit

WORK=$(mktemp -d /tmp/zbench.XXXXXX)
chmod 0755 "$WORK"
SRC=zbsrc$$
BOX=zbbox$$
STATE=$WORK/net
POOLS_MADE=()
TOPO_UP=0

cleanup() {
	local rc=$?
	set +e
	# Stop a scenario still running in the background (interrupted run).
	jobs -p | xargs -r kill 2>/dev/null
	if ((TOPO_UP)); then "$TOPOLOGY" down "$STATE" >/dev/null 2>&1; fi
	local p
	for p in "${POOLS_MADE[@]}"; do zpool destroy -f "$p"; done
	rm -rf "$WORK"
	if ((rc == 0)); then say "done"; else say "harness failed (exit $rc); see $LOG"; fi
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

say "bench: scenarios=[$SCENARIOS] reps=$REPS throughput_reps=$TP_REPS size=${MIB}MiB noop_children=$NOOP_CHILDREN backlog=$BACKLOG rtt_delay=$RTT_DELAY"
record reps "$REPS"
record throughput_reps "$TP_REPS"
record scenarios "$SCENARIOS"
record budget_s "$BUDGET"
record versions_kernel "$(uname -r)"
record versions_zfs "$(zfs version 2>/dev/null | tr '\n' ' ' | sed 's/ *$//')"
record versions_openssh "$(ssh -V 2>&1)"
record versions_syncoid "$(syncoid --version 2>&1 | head -n 1 | sed 's/^[^ ]* //')"
record versions_zoffsite "$("$ZOFFSITE_BIN" --version 2>&1 || echo unknown)"
record guest_cpus "$(nproc)"
record guest_mem_kib "$(awk '/^MemTotal:/ {print $2}' /proc/meminfo)"

# The pool files live in guest RAM (tmpfs /tmp), and so would the ARC:
# keep the ARC small so that 256 MiB of data on each side, the box's copies
# and the ARC all fit in the VM's memory. Only in the VM: on a real host this
# is a machine-wide setting that is not ours to change.
if [[ ${ZOFFSITE_VM:-} == 1 && -w /sys/module/zfs/parameters/zfs_arc_max ]]; then
	echo $((512 << 20)) >/sys/module/zfs/parameters/zfs_arc_max || true
fi

# Sparse 2 GiB vdevs: only what is written takes memory. compression=off so
# that data sizes (and so MB/s) are what they say. autotrim: ZFS writes
# every new block somewhere new, so without it the files only grow (a
# file vdev frees by punching holes) until the guest's RAM runs out and
# txg_sync blocks for good: runs 20261207T211254Z (the long history's
# seeding) and 20261207T220126Z (the home line, after throughput, memory,
# bandwidth limit and backlog) sat idle with txg_sync hung.
for p in "$SRC" "$BOX"; do
	truncate -s 2G "$WORK/$p.img"
	zpool create -o autotrim=on -O compression=off -O mountpoint=none -O atime=off "$p" "$WORK/$p.img"
	POOLS_MADE+=("$p")
done
head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$WORK/key"
chmod 0600 "$WORK/key"

# Box roots: zoffsite's (the forced command's --root), and separate ones for
# the baselines so that they never see each other's datasets.
zfs create -o canmount=off "$BOX/z"
zfs create -o canmount=off "$BOX/bare"
zfs create -o canmount=off "$BOX/sync"

say "topology up"
ZOFFSITE_BIN=$ZOFFSITE_BIN BOX_ROOT=$BOX/z "$TOPOLOGY" up "$STATE" || die "topology up failed"
TOPO_UP=1
env_get() { sed -n "s/^$1=//p" "$STATE/env"; }
HOME_NS=$(env_get HOME_NS)
FRIEND_NS=$(env_get FRIEND_NS)
BOX_ADDR=$(env_get BOX_ADDR)
IDENTITY=$(env_get IDENTITY)
KNOWN_HOSTS=$(env_get KNOWN_HOSTS)
AUTHORIZED_KEYS=$(env_get AUTHORIZED_KEYS)
HOME_WAN_IF=$(env_get HOME_WAN_IF)
FRIEND_WAN_IF=$(env_get FRIEND_WAN_IF)

# The baselines (bare pipe, syncoid) need a shell on the box, which the
# forced command rightly refuses. For the benchmark only, a second key
# without restrictions is appended to the box's authorized_keys.
BENCH_KEY=$WORK/bench_key
ssh-keygen -q -t ed25519 -N '' -C zoffsite-bench-baseline -f "$BENCH_KEY"
FORCED_LINE=$(head -n 1 "$AUTHORIZED_KEYS")
BENCH_LINE=$(cat "$BENCH_KEY.pub")
# set_forced_command [CMD]: rewrite authorized_keys with the source key forced
# to CMD (default: serve_cmd of the box root, as the topology forces it), plus the bench
# key. sshd reads the file at every login, so the next session uses it.
# A scenario may add lines of its own (EXTRA_AUTH: a second source key for a
# second box root), kept by every rewrite until it clears them.
EXTRA_AUTH=''
# A real box has box.toml, and serve reads its max_age (how often a
# dataset's heartbeat is written again): each box root here gets its own
# (box.toml's defaults), passed with -c. Not /etc/zoffsite/box.toml: the
# guest shares the host's root filesystem.
# serve_cmd ROOT: the forced command serving ROOT, with its box.toml.
serve_cmd() {
	local cfg=$WORK/box-${1##*/}.toml
	[[ -e $cfg ]] || printf 'root = "%s"\n' "$1" >"$cfg"
	chmod 0644 "$cfg"
	echo "$ZOFFSITE_BIN -c $cfg serve --root $1"
}
set_forced_command() {
	local key=${FORCED_LINE#*\" }
	printf 'restrict,command="%s" %s\n%s\n' "${1:-$(serve_cmd "$BOX/z")}" "$key" "$BENCH_LINE" >"$AUTHORIZED_KEYS"
	[[ -z $EXTRA_AUTH ]] || printf '%s\n' "$EXTRA_AUTH" >>"$AUTHORIZED_KEYS"
}
set_forced_command



# syncoid as one would run it against this box: existing snapshots only (it
# must not add its own, so both tools replicate the same snapshots), raw,
# received unmounted, no compression (raw streams are ciphertext; lzo would
# only burn CPU), the same key, pinned host key and batch mode. syncoid
# itself adds its ControlMaster connection sharing.
SYNCOID=(syncoid --no-sync-snap --sendoptions=w --recvoptions=u --compress=none
	"--sshkey=$BENCH_KEY" "--sshoption=UserKnownHostsFile=$KNOWN_HOSTS"
	--sshoption=GlobalKnownHostsFile=/dev/null --sshoption=StrictHostKeyChecking=yes
	--sshoption=BatchMode=yes --sshoption=IdentitiesOnly=yes)

# ---------------------------------------------------------------------------
# helpers

# A config for `zoffsite backup` of the given datasets, to the topology's box.
write_config() {
	local file=$1 list='' d
	shift
	for d in "$@"; do list+="${list:+, }\"$d\""; done
	local cc_line=''
	[[ -z ${BENCH_ZOFFSITE_CC:-} ]] || cc_line="congestion_control = \"$BENCH_ZOFFSITE_CC\""
	cat >"$file" <<EOF
[source]
datasets = [$list]
exclude = []

[[target]]
name = "friend"
host = "$BOX_ADDR"
user = "root"
identity_file = "$IDENTITY"
known_hosts = "$KNOWN_HOSTS"
$cc_line
EOF
}

# An encrypted dataset (its own encryption root), mounted under $WORK/mnt.
create_encrypted() {
	zfs create -o encryption=aes-256-gcm -o keyformat=hex -o "keylocation=file://$WORK/key" \
		-o "mountpoint=$WORK/mnt/$1" "$SRC/$1"
}

# zoffsite's own snapshot name for Unix time $1.
zname() {
	local n
	TZ=UTC printf -v n 'zoffsite-%(%Y%m%dT%H%M%SZ)T' "$1"
	echo "$n"
}

# timed VAR CMD...: runs CMD (output to $WORK/last.out, then the log), stores
# its wall time in microseconds in VAR, returns its exit status.
timed() {
	local -n _us=$1
	shift
	local t0 t1 rc=0
	t0=$EPOCHREALTIME
	"$@" >"$WORK/last.out" 2>&1 || rc=$?
	t1=$EPOCHREALTIME
	_us=$((${t1/./} - ${t0/./}))
	echo "+ $* (exit $rc, $((_us / 1000)) ms)"
	cat "$WORK/last.out"
	return "$rc"
}

# The line that explains a failure: zoffsite's own message if there is one.
error_line() {
	{ grep -m1 '^zoffsite:' "$WORK/last.out" || grep -m1 -i 'error\|cannot\|fail' "$WORK/last.out" ||
		tail -n 1 "$WORK/last.out"; } | cut -c1-400
}

median() {
	printf '%s\n' "$@" | sort -n | sed -n "$((($# + 1) / 2))p"
}

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.3f", a / b; else print "nan" }'; }

mbitps() { awk -v n="$1" -v u="$2" 'BEGIN { printf "%.2f", n * 8 / u }'; } # BYTES MICROSECONDS

# next_rep NAME I START [MAX]: whether repetition I of NAME may start, given
# that the previous one started at START (SECONDS); MAX repetitions at most
# (default REPS). Records how many were done when the answer is no. The
# first always runs unless the budget is spent.
next_rep() {
	local name=$1 i=$2 start=$3 max=${4:-$REPS} need=0
	((i > 0)) && need=$((SECONDS - start))
	((i < max && SECONDS + need <= BUDGET)) && return 0
	record "${name}_reps_done" "$i"
	((i == max)) || say "$name: stopping after $i of $max repetitions (time budget BENCH_BUDGET=$BUDGET s)"
	return 1
}

zoffsite_backup() { # CONFIG [ARGS...]
	local cfg=$1
	shift
	ip netns exec "$HOME_NS" "$ZOFFSITE_BIN" backup -c "$cfg" "$@"
}

syncoid_run() { ip netns exec "$HOME_NS" "${SYNCOID[@]}" "$@"; }

# Wait until both pools have freed what a destroy released (async destroy),
# so that the next run does not compete with background frees. The source
# pool too: a scenario's `zfs destroy -r` of its source tree (the long
# history's 3,000 snapshots) otherwise goes on freeing under the next
# scenarios, and zoffsite's `zpool sync` waits for it where the bare pipe
# runs none.
settle_pools() {
	zpool sync "$BOX" "$SRC"
	local i
	for ((i = 0; i < 300; i++)); do
		# One line per pool: done when both say 0.
		[[ $(zpool get -Hp -o value freeing "$BOX" "$SRC" | sort -u) == 0 ]] && return 0
		sleep 0.2
	done
}

netem() { # on|off: exactly the qdisc e2e/topology.sh installs for NETEM, on both ends
	local dev ns
	for ns in "$HOME_NS:$HOME_WAN_IF" "$FRIEND_NS:$FRIEND_WAN_IF"; do
		dev=${ns#*:}
		ns=${ns%%:*}
		if [[ $1 == on ]]; then
			ip netns exec "$ns" tc qdisc replace dev "$dev" root netem delay "$RTT_DELAY"
		else
			ip netns exec "$ns" tc qdisc del dev "$dev" root 2>/dev/null || true
		fi
	done
}

# Each scenario runs in a background subshell and is waited for: `set -e`
# then still applies inside it (it would not in `scenario || ...`), a failure
# ends only that scenario, and the next one starts from a clean state.
# What a scenario leaves on either pool goes before the next begins. serve
# lists its whole root on every run, so another scenario's leftovers (the
# no-op's 101 datasets, the backlog's 200 snapshots) made every later
# zoffsite run list them too (under emulation, seconds a run), and never the
# bare pipe or its floor: the home lines' and the backlog's zoffsite runs
# were slower for it in earlier full runs.
clear_trees() {
	local parent ds
	for parent in "$SRC" "$BOX/z/$SRC" "$BOX/bare" "$BOX/sync"; do
		zfs list -H -o name -d 1 "$parent" 2>/dev/null | while read -r ds; do
			[[ $ds == "$parent" ]] || zfs destroy -r "$ds" || say "cannot clear $ds"
		done
	done
	zfs destroy -r "$BOX/z2" 2>/dev/null || true
	settle_pools
}

run_scenario() {
	local name=$1 t0 rc=0
	say "== $name"
	t0=$SECONDS
	("$name") &
	wait $! || rc=$?
	clear_trees
	record "${name}_wall_s" $((SECONDS - t0))
	if ((rc != 0)); then
		say "$name: harness error (exit $rc); see bench.log"
		record "${name}_harness" "error (exit $rc)"
	fi
}

# ---------------------------------------------------------------------------
# The bare pipe's ssh: the argv zoffsite itself runs (its one owner is
# crates/zoffsite-exec/src/ssh.rs), asked of zoffsite: a `status` run finds
# an `ssh` first in PATH that only writes down its arguments. Then the bench
# key replaces the source's (`-i`) and zoffsite's remote command is left
# off, so the bare pipe differs from zoffsite only by zoffsite itself: same
# client options, same (default) ciphers. zoffsite's ProxyCommand (its own
# socket, on its target's congestion control) is left off too: the bare
# pipe's ssh connects by itself, on the source's default, as a hand-typed
# `ssh` does; what that is worth shows on the lossy home line.
ssh_argv_of_zoffsite() {
	local shim=$WORK/argv-shim
	mkdir -p "$shim"
	printf '#!/bin/sh\nfor a in "$@"; do printf "%%s\\0" "$a"; done >"%s"\nexit 255\n' "$WORK/ssh-argv" >"$shim/ssh"
	chmod +x "$shim/ssh"
	create_encrypted argv-probe
	write_config "$WORK/argv.toml" "$SRC/argv-probe"
	PATH="$shim:$PATH" "$ZOFFSITE_BIN" status -c "$WORK/argv.toml" >/dev/null 2>&1 || true
	[[ -s $WORK/ssh-argv ]] || die "zoffsite status ran no ssh"
	local -a got
	mapfile -d '' got <"$WORK/ssh-argv"
	((${#got[@]} > 2)) || die "zoffsite's ssh argv is too short: ${got[*]}"
	SSH_BARE=(ssh)
	local i
	for ((i = 0; i < ${#got[@]} - 1; i++)); do
		if [[ ${got[i]} == -i ]]; then
			SSH_BARE+=(-i "$BENCH_KEY")
			((i++))
		elif [[ ${got[i]} == -o && ${got[i + 1]} == Proxy* ]]; then
			((i++))
		else
			SSH_BARE+=("${got[i]}")
		fi
	done
	[[ ${got[-1]} == "zoffsite serve" ]] || die "zoffsite's ssh argv does not end with its remote command: ${got[*]}"
	zfs destroy -r "$SRC/argv-probe"
}
ssh_argv_of_zoffsite
record ssh_argv "${SSH_BARE[*]}"
ip netns exec "$HOME_NS" "${SSH_BARE[@]}" true </dev/null || die "the bench key cannot log in to the box"

# ---------------------------------------------------------------------------
# calibration: what one process start and one SSH login cost in this VM right
# now, so that absolute times can be read (a no-op run is a handful of each).

calibration() {
	local i us zl=() sl=()
	for ((i = 0; i < REPS; i++)); do
		timed us zfs list -H -o name "$SRC"
		zl+=("$us")
		timed us ip netns exec "$HOME_NS" "${SSH_BARE[@]}" true
		sl+=("$us")
	done
	record calib_zfs_list_us "$(median "${zl[@]}")"
	record calib_ssh_login_us "$(median "${sl[@]}")"
	# How much slower this guest computes than the host: the planner
	# benchmark (pure CPU and memory, no I/O), the same binary scripts/bench
	# runs on the host, median of 3 iterations here. docs/benchmarks.md's
	# scale section divides the guest's CPU seconds by it.
	if [[ -n ${BENCH_PLAN_BIN:-} && -x $BENCH_PLAN_BIN ]]; then
		"$BENCH_PLAN_BIN" 3 >"$WORK/plan-guest.txt"
		record calib_plan_bench_ms "$(sed -n 's/^elapsed_ms=//p' "$WORK/plan-guest.txt")"
	fi
}

# ---------------------------------------------------------------------------
# a. throughput and d. memory

# zoffsite_measured TAG CONFIG [ARGS...]: `zoffsite backup` with both ends
# watched for memory (d): the client under /usr/bin/time -v and the --hwm
# wrapper, the box's forced command likewise for this one session. The
# wrappers only wait and sample /proc; zoffsite's stdin/stdout are not
# copied through them. Leaves $WORK/{client,serve}-TAG.{time,hwm}.
zoffsite_measured() {
	local tag=$1 cfg=$2
	shift 2
	set_forced_command "/usr/bin/time -v -o $WORK/serve-$tag.time $SELF --hwm $WORK/serve-$tag.hwm $(serve_cmd "$BOX/z")"
	local rc=0
	ip netns exec "$HOME_NS" /usr/bin/time -v -o "$WORK/client-$tag.time" \
		"$SELF" --hwm "$WORK/client-$tag.hwm" "$ZOFFSITE_BIN" backup -c "$cfg" "$@" || rc=$?
	set_forced_command
	return "$rc"
}

# mem_of TAG client|serve hwm|tree: one figure (KiB) of a zoffsite_measured run.
mem_of() {
	local f=$WORK/$2-$1
	# The forced command's files appear once its session has ended.
	local i
	for ((i = 0; i < 50; i++)); do [[ -s $f.time ]] && break; sleep 0.2; done
	if [[ $3 == hwm ]]; then
		cat "$f.hwm" 2>/dev/null || echo 0
	else
		awk -F': ' '/Maximum resident set size/ {print $2}' "$f.time" 2>/dev/null || echo 0
	fi
}

max_of() { printf '%s\n' "$@" | sort -n | tail -n 1; }

# ---------------------------------------------------------------------------
# zoffsite's own CPU cost. BSD process accounting (accton, from the acct
# package) writes one record per process as it exits, with its user and
# system time summed over all its threads, whatever network namespace it ran
# in: both ends of the tunnel land in one file. A send's pipeline is every
# zoffsite (the source's `backup`, the box's `serve`), zfs and zpool command
# either end starts, ssh, and the box's sshd processes for the session;
# zoffsite's share is its two processes' time over the pipeline's. Times are
# in accounting ticks (1/100 s), rounded down per process: a short listing
# loses up to one tick, which only raises zoffsite's share. Kernel threads
# (WireGuard's encryption, ZFS's I/O pipeline) belong to no process and are
# counted on neither side.

# acct_on FILE / acct_off: accounting into FILE around a timed run (outside
# its timing: acct_off waits for the box's side to exit).
acct_on() {
	: >"$1"
	accton "$1" >/dev/null
}
acct_off() {
	local i
	# serve and the box's sshd exit just after the client's ssh returns.
	for ((i = 0; i < 50; i++)); do
		pgrep -f -- "serve --root $BOX/" >/dev/null || break
		sleep 0.1
	done
	sleep 0.2
	accton off >/dev/null
}

# cpu_of FILE: "zoffsite pipeline box source zoffsite_box" ticks of that
# file's records: zoffsite's (both ends), the whole pipeline's, the
# pipeline's part on each end, and serve's (zoffsite on the box). A process is on the box if it or an ancestor that exited within
# the file is an sshd (the box's forced command runs under sshd; the
# source's processes descend from this script, which has not exited).
cpu_of() {
	dump-acct "$1" | awk -F'|' '
		{ c = $1; sub(/ +$/, "", c); n++; comm[n] = c; t[n] = $3 + $4; pid[n] = $10 + 0; par[n] = $11 + 0; at[$10 + 0] = n }
		END {
			for (i = 1; i <= n; i++) {
				c = comm[i]
				if (c != "zoffsite" && c != "zfs" && c != "zpool" && c != "ssh" && c != "sshd") continue
				box = 0; j = i
				for (k = 0; k < 64 && j; k++) {
					if (comm[j] == "sshd") { box = 1; break }
					j = (par[j] in at) ? at[par[j]] : 0
				}
				p += t[i]; if (box) b += t[i]; else s += t[i]
				if (c == "zoffsite") { z += t[i]; if (box) zb += t[i] }
				by[c (box ? " (box)" : " (source)")] += t[i]
			}
			printf "%d %d %d %d %d\n", z, p, b, s, zb
			# Where it went, by command and end, for bench.log (stderr).
			for (k in by) printf "  %s %.2f s\n", k, by[k] / 100 | "sort >&2"
		}'
}

# cpu_share FILE...: zoffsite's share of the pipeline's CPU over those runs
# together, "share zoffsite_s pipeline_s box_s_per_run source_s_per_run
# serve_s_per_run" (the share as a fraction, 4 decimals; seconds).
cpu_share() {
	local f z=0 p=0 bx=0 sc=0 zb=0 a b c d e
	for f in "$@"; do
		echo "cpu of ${f##*/}:" >&2
		read -r a b c d e < <(cpu_of "$f")
		z=$((z + a))
		p=$((p + b))
		bx=$((bx + c))
		sc=$((sc + d))
		zb=$((zb + e))
	done
	awk -v z="$z" -v p="$p" -v b="$bx" -v s="$sc" -v zb="$zb" -v n=$# 'BEGIN {
		if (p > 0) printf "%.4f %.2f %.2f %.3f %.3f %.3f\n", z / p, z / 100, p / 100, b / 100 / n, s / 100 / n, zb / 100 / n
		else print "nan 0 0 0 0 0" }'
}

# record_cpu NAME FILE...: NAME_cpu_share, NAME_cpu_zoffsite_s and
# NAME_cpu_pipeline_s over the runs accounted in FILE..., and what one run
# cost each end (NAME_cpu_box_s_per_run, NAME_cpu_source_s_per_run) and
# serve's part of the box's (NAME_cpu_serve_s_per_run).
record_cpu() {
	local name=$1 share zs ps bs ss zb
	shift
	(($#)) || return 0
	read -r share zs ps bs ss zb < <(cpu_share "$@")
	record "${name}_cpu_share" "$share"
	record "${name}_cpu_zoffsite_s" "$zs"
	record "${name}_cpu_pipeline_s" "$ps"
	record "${name}_cpu_box_s_per_run" "$bs"
	record "${name}_cpu_source_s_per_run" "$ss"
	record "${name}_cpu_serve_s_per_run" "$zb"
}

# ---------------------------------------------------------------------------
# How many zfs and zpool processes a run starts: wrappers first on PATH that
# write down their arguments and exec the real command. zoffsite finds both
# through PATH (zpool next to zfs), the source's directly, the box's through
# its forced command's environment.

# count_shim DIR LOG: DIR/zfs and DIR/zpool, each appending "zfs ARGS" or
# "zpool ARGS" to LOG.
count_shim() {
	local dir=$1 log=$2 t real
	mkdir -p "$dir"
	: >"$log"
	for t in zfs zpool; do
		real=$(command -v "$t")
		printf '#!/bin/sh\necho "%s $*" >>"%s"\nexec "%s" "$@"\n' "$t" "$log" "$real" >"$dir/$t"
		chmod +x "$dir/$t"
	done
}

# The forced command of a box root with the counting wrappers on its PATH.
counted_serve() { # ROOT SHIM_DIR
	echo "env PATH=$2:/usr/sbin:/usr/bin:/sbin:/bin $(serve_cmd "$1")"
}

# summarize_counts LOG: "N (list x2, get x1, ...)" for a report cell.
summarize_counts() {
	printf '%s (%s)\n' "$(wc -l <"$1")" "$(awk '{ print ($1 == "zpool" ? "zpool " $2 : $2) }' "$1" |
		sort | uniq -c | awk '{ c = $1; $1 = ""; sub(/^ /, ""); printf "%s%s x%d", s, $0, c; s = ", " }')"
}

# count_run NAME CONFIG [ROOT2 PUB2]: one untimed run of CONFIG with the
# counting wrappers on both ends (and on the second box root's forced
# command, for the key PUB2, if given); records NAME_zfs_source and
# NAME_zfs_box (both targets' box sides together), each "N (what xcount)".
count_run() {
	local name=$1 cfg=$2 root2=${3:-} pub2=${4:-} d=$WORK/count-$1 saved=$EXTRA_AUTH rc=0
	count_shim "$d/src" "$d/src.log"
	count_shim "$d/box" "$d/box.log"
	[[ -z $root2 ]] || EXTRA_AUTH="restrict,command=\"$(counted_serve "$root2" "$d/box")\" $pub2"
	set_forced_command "$(counted_serve "$BOX/z" "$d/box")"
	(
		PATH="$d/src:$PATH"
		timed _ zoffsite_backup "$cfg" --json
	) || rc=$?
	EXTRA_AUTH=$saved
	set_forced_command
	if ((rc != 0)); then
		record "${name}_zfs_count_error" "$(error_line)"
		return 0
	fi
	record "${name}_zfs_source" "$(summarize_counts "$d/src.log")"
	record "${name}_zfs_box" "$(summarize_counts "$d/box.log")"
	record "${name}_zfs_count_up_to_date" "$(grep -c '"kind": "up_to_date"' "$WORK/last.out" || true)"
}

throughput() {
	create_encrypted tp
	# One untimed run while the dataset is still empty: it records the
	# properties manifest (a first run writes it, and a write forces a
	# snapshot), so that the timed runs below find nothing changed.
	local cfg0=$WORK/tp0.toml
	write_config "$cfg0" "$SRC/tp"
	zoffsite_backup "$cfg0" || true
	zfs destroy -r "$BOX/z/$SRC/tp" 2>/dev/null || true
	say "writing $MIB MiB of random data"
	head -c $((MIB << 20)) /dev/urandom >"$WORK/mnt/tp/random.bin"
	# Take the snapshot up front with zoffsite's naming scheme: every run
	# then sends this same snapshot (nothing changed, so zoffsite takes none),
	# and no timed run pays for a `zfs snapshot`.
	local snap
	snap=$(zname "$(date +%s)")
	zfs snapshot "$SRC/tp@$snap"
	local bytes
	bytes=$(zfs send -nP -w "$SRC/tp@$snap" | awk '$1 == "size" {print $2}')
	record throughput_stream_bytes "$bytes"
	local cfg=$WORK/tp.toml
	write_config "$cfg" "$SRC/tp"

	local i us z_times=() b_times=() z_failed='' z_acct=() b_acct=()
	local rep_t0=$SECONDS
	for ((i = 0; ; i++)); do
		next_rep throughput "$i" "$rep_t0" "$TP_REPS" || break
		rep_t0=$SECONDS
		local order=(z b)
		((i % 2)) && order=(b z)
		local who
		for who in "${order[@]}"; do
			if [[ $who == z ]]; then
				[[ -z $z_failed ]] || continue
				# Timed exactly like the bare pipe: nothing else runs beside
				# it (memory is watched in a run of its own below; a sampler
				# here would take CPU from the transfer under emulation).
				acct_on "$WORK/acct-tp-z$i"
				if timed us zoffsite_backup "$cfg"; then
					acct_off
					z_times+=("$us")
					z_acct+=("$WORK/acct-tp-z$i")
					# Once: what a run costs that finds the box up to date
					# (connect, list, plan, verify, holds): the fixed part
					# of the times above, for reading a missed ratio.
					if ((i == 0)) && timed us zoffsite_backup "$cfg"; then
						record throughput_zoffsite_fixed_us "$us"
					fi
				else
					acct_off
					z_failed=$(error_line)
				fi
				zfs destroy -r "$BOX/z/$SRC/tp" 2>/dev/null || true
			else
				acct_on "$WORK/acct-tp-b$i"
				# shellcheck disable=SC2016 # expanded by the inner bash, from its argv
				if timed us bash -c 'set -o pipefail; zfs send -w "$1" | ip netns exec "$2" "${@:4}" zfs receive -u "$3"' \
					_ "$SRC/tp@$snap" "$HOME_NS" "$BOX/bare/tp" "${SSH_BARE[@]}"; then
					acct_off
					b_times+=("$us")
					b_acct+=("$WORK/acct-tp-b$i")
				else
					acct_off
					record throughput_bare_error "$(error_line)"
				fi
				zfs destroy -r "$BOX/bare/tp" 2>/dev/null || true
			fi
			settle_pools
		done
	done
	# (d), the large case: the same send once more, untimed, with both ends
	# watched for peak memory.
	if [[ -z $z_failed ]] && ((${#z_times[@]})); then
		if timed us zoffsite_measured large "$cfg"; then
			record memory_large_mib "$MIB"
			record memory_large_stream_bytes "$bytes"
			record memory_large_client_hwm_kib "$(mem_of large client hwm)"
			record memory_large_client_tree_maxrss_kib "$(mem_of large client tree)"
			record memory_large_serve_hwm_kib "$(mem_of large serve hwm)"
			record memory_large_serve_tree_maxrss_kib "$(mem_of large serve tree)"
		else
			record memory_large_error "$(error_line)"
		fi
		zfs destroy -r "$BOX/z/$SRC/tp" 2>/dev/null || true
		settle_pools
	fi
	record throughput_bare_runs_us "${b_times[*]:-none}"
	record throughput_zoffsite_runs_us "${z_times[*]:-none}"
	# Each repetition's own ratio (its two runs were back to back): how far
	# the host's noise moves the figure.
	local pairs=() k
	for ((k = 0; k < ${#z_times[@]} && k < ${#b_times[@]}; k++)); do
		pairs+=("$(ratio "${b_times[k]}" "${z_times[k]}")")
	done
	record throughput_pair_ratios "${pairs[*]:-none}"
	# zoffsite's own CPU over its pipeline's, and the bare pipe's pipeline
	# (zfs, ssh, sshd) for comparison: what zoffsite adds, in CPU seconds.
	record_cpu throughput "${z_acct[@]}"
	if ((${#b_acct[@]})); then
		local bs
		read -r _ _ bs _ _ _ < <(cpu_share "${b_acct[@]}")
		record throughput_bare_cpu_pipeline_s "$bs"
		record throughput_cpu_runs "${#z_acct[@]} ${#b_acct[@]}"
	fi
	local b=''
	if ((${#b_times[@]})); then
		b=$(median "${b_times[@]}")
		record throughput_bare_us "$b"
		record throughput_bare_mbps "$(awk -v n="$bytes" -v t="$b" 'BEGIN { printf "%.2f", n / t }')"
	fi
	if [[ -n $z_failed ]]; then
		record throughput_status failed
		record throughput_error "$z_failed"
	elif ((${#z_times[@]})) && [[ -n $b ]]; then
		local z
		z=$(median "${z_times[@]}")
		record throughput_zoffsite_us "$z"
		record throughput_zoffsite_mbps "$(awk -v n="$bytes" -v t="$z" 'BEGIN { printf "%.2f", n / t }')"
		# zoffsite's speed relative to bare = bare time / zoffsite time.
		record throughput_ratio "$(ratio "$b" "$z")"
		record throughput_status ok
	elif ((${#z_times[@]} == 0 && ${#b_times[@]} == 0)); then
		record throughput_status skipped
		record throughput_error "no repetition fitted in the time budget"
	else
		record throughput_status failed
		record throughput_error "no baseline measurement"
	fi
}

# d., the small case (the large one is measured by the throughput runs).
memory() {
	create_encrypted m
	head -c $((MEM_SMALL_MIB << 20)) /dev/urandom >"$WORK/mnt/m/random.bin"
	local snap
	snap=$(zname "$(date +%s)")
	zfs snapshot "$SRC/m@$snap"
	write_config "$WORK/mem.toml" "$SRC/m"
	local us
	if timed us zoffsite_measured small "$WORK/mem.toml"; then
		record memory_small_mib "$MEM_SMALL_MIB"
		record memory_small_stream_bytes "$(zfs send -nP -w "$SRC/m@$snap" | awk '$1 == "size" {print $2}')"
		record memory_small_client_hwm_kib "$(mem_of small client hwm)"
		record memory_small_client_tree_maxrss_kib "$(mem_of small client tree)"
		record memory_small_serve_hwm_kib "$(mem_of small serve hwm)"
		record memory_small_serve_tree_maxrss_kib "$(mem_of small serve tree)"
		record memory_status ok
	else
		record memory_status failed
		record memory_error "$(error_line)"
	fi
	zfs destroy -r "$BOX/z/$SRC/m" 2>/dev/null || true
}

# ---------------------------------------------------------------------------
# e. the bandwidth limit, honestly kept: `bandwidth_limit = BENCH_BW_LIMIT`
# (1MiB/s) over a full send of BENCH_BW_MIB (24) MiB. What counts is what
# the source puts on the line: the bytes the source's ssh has read from
# zoffsite (its rchar in /proc: the stream and its frame headers, without
# SSH's, TCP's or WireGuard's overhead), sampled every 50 ms. (The box's
# `zfs receive` is the wrong place: when it stalls, the pipes and SSH's
# window fill, and it then reads them in a burst the line never carried.)
# The stream's part: from the last sample before the first 64 KiB (the
# session's listing comes first) to the first within 64 KiB of the end
# (the confirmation exchange after it); a one-second window is every pair
# of samples at least 1 s apart (the first such after each), so a burst
# cannot fall between windows.

# bw_sample PATTERN: "microseconds rchar" lines of the newest process whose
# command line matches PATTERN (waiting up to 120 s for it), until it ends.
bw_sample() {
	local pid='' i k v nap
	exec {nap}<> <(:)
	for ((i = 0; i < 2400; i++)); do
		pid=$(pgrep -n -f -- "$1" || true)
		[[ -z $pid ]] || break
		read -r -t 0.05 -u "$nap" _ || true
	done
	[[ -n $pid ]] || return 0
	while [[ -r /proc/$pid/io ]]; do
		# Builtins only, as --hwm: no fork per sample.
		# (The loop's status is its last test's: no break on it. A process
		# that is gone fails the -r test above.)
		while read -r k v; do
			[[ $k == rchar: ]] && echo "${EPOCHREALTIME/./} $v"
		done <"/proc/$pid/io" 2>/dev/null || true
		read -r -t 0.05 -u "$nap" _ || true
	done
}

bwlimit() {
	local limit=${BENCH_BW_LIMIT:-1MiB/s} mib=${BENCH_BW_MIB:-24} limit_bps
	limit_bps=$(awk -v l="$limit" 'BEGIN { n = l + 0; if (l ~ /MiB\/s$/) n *= 1048576; else if (l ~ /KiB\/s$/) n *= 1024; else n = 0; print n }')
	((limit_bps > 0)) || die "BENCH_BW_LIMIT must be in KiB/s or MiB/s: $limit"
	create_encrypted bw
	# The manifest run, as for throughput: the timed run then sends exactly
	# the snapshot below.
	write_config "$WORK/bw0.toml" "$SRC/bw"
	zoffsite_backup "$WORK/bw0.toml" || true
	zfs destroy -r "$BOX/z/$SRC/bw" 2>/dev/null || true
	head -c $((mib << 20)) /dev/urandom >"$WORK/mnt/bw/random.bin"
	local snap bytes
	snap=$(zname "$(date +%s)")
	zfs snapshot "$SRC/bw@$snap"
	# Exact (-nP estimates): the sampler must see at least all of it.
	bytes=$(zfs send -w "$SRC/bw@$snap" | wc -c)
	write_config "$WORK/bw.toml" "$SRC/bw"
	printf 'bandwidth_limit = "%s"\n' "$limit" >>"$WORK/bw.toml"
	settle_pools
	record bwlimit_limit "$limit"
	record bwlimit_limit_bps "$limit_bps"
	record bwlimit_stream_bytes "$bytes"
	local samples=$WORK/bw.samples us
	bw_sample "^ssh .*zoffsite serve\$" >"$samples" &
	local sampler=$!
	acct_on "$WORK/acct-bw"
	if timed us zoffsite_backup "$WORK/bw.toml"; then
		acct_off
		record_cpu bwlimit "$WORK/acct-bw"
		wait "$sampler" || true
		record bwlimit_zoffsite_us "$us"
		record bwlimit_samples "$(wc -l <"$samples")"
		# Each line: avg_bps max_window_bps bytes_seen.
		local got
		got=$(awk '
			{ t[NR] = $1 / 1e6; r[NR] = $2 }
			END {
				n = NR
				if (n < 3) { print "nan nan 0"; exit }
				s = 1; for (i = 1; i <= n; i++) if (r[i] >= 65536) { s = (i > 1) ? i - 1 : 1; break }
				e = n; for (i = 1; i <= n; i++) if (r[i] >= r[n] - 65536) { e = i; break }
				avg = (t[e] > t[s]) ? (r[e] - r[s]) / (t[e] - t[s]) : 0
				max = 0; j = s
				for (i = s; i <= e; i++) {
					if (j <= i) j = i + 1
					while (j <= n && t[j] - t[i] < 1.0) j++
					if (j > n) break
					w = (r[j] - r[i]) / (t[j] - t[i]); if (w > max) max = w
				}
				printf "%.0f %.0f %d\n", avg, max, r[n]
			}' "$samples")
		read -r avg maxw seen <<<"$got"
		record bwlimit_avg_bps "$avg"
		record bwlimit_max_window_bps "$maxw"
		record bwlimit_bytes_read "$seen"
		record bwlimit_avg_ratio "$(ratio "$avg" "$limit_bps")"
		record bwlimit_max_window_ratio "$(ratio "$maxw" "$limit_bps")"
		if [[ $avg == nan ]] || ((seen < bytes)); then
			record bwlimit_status failed
			record bwlimit_error "the sampler saw $seen of $bytes bytes in $(wc -l <"$samples") samples"
		else
			record bwlimit_status ok
		fi
	else
		acct_off
		kill "$sampler" 2>/dev/null || true
		wait "$sampler" 2>/dev/null || true
		record bwlimit_status failed
		record bwlimit_error "$(error_line)"
	fi
	zfs destroy -r "$BOX/z/$SRC/bw" 2>/dev/null || true
	settle_pools
}

# ---------------------------------------------------------------------------
# f. a friend's home line: netem on the source's side of the outer link
# (the upload a backup crosses), carrying the WireGuard tunnel: a smooth
# line, rate BENCH_WAN_RATE (20mbit) with BENCH_WAN_DELAY (40ms), and a
# jittery one with BENCH_WAN_JITTER (10ms) and BENCH_WAN_LOSS (0.5%) on top.
# The rate is below what this VM's emulated CPU moves through the tunnel,
# so the line is the limit. On each, a full raw send of BENCH_WAN_MIB (128)
# MiB by zoffsite, by the bare pipe and by syncoid (with mbuffer, its
# default when installed), BENCH_WAN_REPS (2) times each, in turns.
# zoffsite's connection uses its target's congestion control (BBR by
# default, on its own socket); the bare pipe and syncoid the source's
# default (CUBIC). Then the jittery line once more with BBR as the source's
# default (zoffsite and the bare pipe): the pipelines alike, and what BBR
# alone is worth to the bare pipe.

wan_send() { # TOOL SNAP: one full send to that tool's box root, timed into $us
	case $1 in
	z)
		# Which TCP congestion control zoffsite's connection really uses
		# (its target's, BBR by default, on its own socket only), seen from
		# outside a few seconds into the run: one ss beside it.
		(
			sleep 3
			ip netns exec "$HOME_NS" ss -tinH state established dst "$BOX_ADDR"
		) >"$WORK/ss-wan" 2>/dev/null &
		local sampler=$! rc=0
		timed us zoffsite_backup "$WORK/wan.toml" || rc=$?
		wait "$sampler" || true
		return "$rc"
		;;
	b)
		# shellcheck disable=SC2016 # expanded by the inner bash, from its argv
		timed us bash -c 'set -o pipefail; zfs send -w "$1" | ip netns exec "$2" "${@:4}" zfs receive -u "$3"' \
			_ "$SRC/wan@$2" "$HOME_NS" "$BOX/bare/wan" "${SSH_BARE[@]}"
		;;
	s) timed us syncoid_run "$SRC/wan" "root@$BOX_ADDR:$BOX/sync/wan" ;;
	esac
}

wan_clear() {
	zfs destroy -r "$BOX/z/$SRC/wan" 2>/dev/null || true
	zfs destroy -r "$BOX/bare/wan" 2>/dev/null || true
	zfs destroy -r "$BOX/sync/wan" 2>/dev/null || true
	settle_pools
}

wan() {
	local rate=${BENCH_WAN_RATE:-20mbit} delay=${BENCH_WAN_DELAY:-40ms} jitter=${BENCH_WAN_JITTER:-10ms}
	local loss=${BENCH_WAN_LOSS:-0.5%} mib=${BENCH_WAN_MIB:-128} reps=${BENCH_WAN_REPS:-2}
	create_encrypted wan
	write_config "$WORK/wan.toml" "$SRC/wan"
	zoffsite_backup "$WORK/wan.toml" || true
	wan_clear
	head -c $((mib << 20)) /dev/urandom >"$WORK/mnt/wan/random.bin"
	local snap bytes
	snap=$(zname "$(date +%s)")
	zfs snapshot "$SRC/wan@$snap"
	bytes=$(zfs send -nP -w "$SRC/wan@$snap" | awk '$1 == "size" {print $2}')
	record wan_stream_bytes "$bytes"
	record wan_rate "$rate"
	local profile name cc_was
	cc_was=$(ip netns exec "$HOME_NS" sysctl -n net.ipv4.tcp_congestion_control)
	for name in ${BENCH_WAN_PROFILES:-smooth jittery bbr}; do
		if [[ $name == smooth ]]; then
			profile="rate $rate delay $delay"
		else
			profile="rate $rate delay $delay $jitter loss $loss"
		fi
		if [[ $name == bbr ]]; then
			# The jittery line again, with the source's TCP congestion
			# control BBR instead of the default (CUBIC), which backs off at
			# every loss: what an owner can change (docs/benchmarks.md).
			# zoffsite and the bare pipe only, to show what it is worth.
			modprobe tcp_bbr 2>/dev/null || true
			if ! ip netns exec "$HOME_NS" sysctl -q -w net.ipv4.tcp_congestion_control=bbr; then
				record wan_bbr_errors "BBR is not available in this kernel"
				continue
			fi
		fi
		record "wan_${name}_netem" "$profile"
		record "wan_${name}_congestion_control" "$(ip netns exec "$HOME_NS" sysctl -n net.ipv4.tcp_congestion_control)"
		# shellcheck disable=SC2086 # a list of tc arguments
		ip netns exec "$HOME_NS" tc qdisc replace dev "$HOME_WAN_IF" root netem $profile
		local i who us z=() b=() sy=() zf=() bf=() failed='' z_acct=()
		local rep_t0=$SECONDS
		for ((i = 0; ; i++)); do
			next_rep "wan_$name" "$i" "$rep_t0" "$reps" || break
			rep_t0=$SECONDS
			local order=(z b s)
			((i % 3 == 1)) && order=(b s z)
			((i % 3 == 2)) && order=(s z b)
			if [[ $name == bbr ]]; then
				order=(z b)
				((i % 2)) && order=(b z)
			fi
			for who in "${order[@]}"; do
				[[ $who != z ]] || acct_on "$WORK/acct-wan-$name$i"
				local sent=''
				if wan_send "$who" "$snap"; then
					sent=1
					case $who in z) z+=("$us") z_acct+=("$WORK/acct-wan-$name$i") ;; b) b+=("$us") ;; s) sy+=("$us") ;; esac
				else
					failed+="$who: $(error_line); "
				fi
				[[ $who != z ]] || acct_off
				# What the run costs besides the transfer, on the same line
				# right after it: zoffsite's run with the snapshot already
				# on the box (login, listing, checks, no stream), the bare
				# pipe's login. Taken off both, what is left is the
				# transfer, which is what buffering can change.
				if [[ -n $sent ]]; then
					case $who in
					z) timed us zoffsite_backup "$WORK/wan.toml" && zf+=("$us") ;;
					b) timed us ip netns exec "$HOME_NS" "${SSH_BARE[@]}" true && bf+=("$us") ;;
					esac || failed+="$who (without a stream): $(error_line); "
				fi
				wan_clear
			done
		done
		ip netns exec "$HOME_NS" tc qdisc del dev "$HOME_WAN_IF" root 2>/dev/null || true
		ip netns exec "$HOME_NS" sysctl -q -w "net.ipv4.tcp_congestion_control=$cc_was"
		local cc
		cc=$(grep -owE 'bbr|cubic|reno|htcp|vegas|westwood' "$WORK/ss-wan" 2>/dev/null | sort -u | paste -sd' ')
		record "wan_${name}_zoffsite_congestion_control" "${cc:-unknown}"
		record "wan_${name}_zoffsite_runs_us" "${z[*]:-none}"
		record "wan_${name}_bare_runs_us" "${b[*]:-none}"
		record "wan_${name}_syncoid_runs_us" "${sy[*]:-none}"
		[[ -z $failed ]] || record "wan_${name}_errors" "$failed"
		record_cpu "wan_${name}" "${z_acct[@]}"
		local mz='' mb='' ms=''
		((${#z[@]})) && mz=$(median "${z[@]}") && record "wan_${name}_zoffsite_us" "$mz"
		((${#b[@]})) && mb=$(median "${b[@]}") && record "wan_${name}_bare_us" "$mb"
		((${#sy[@]})) && ms=$(median "${sy[@]}") && record "wan_${name}_syncoid_us" "$ms"
		# Speeds relative to each other (time ratios) and to the line.
		[[ -z $mz || -z $mb ]] || record "wan_${name}_zoffsite_over_bare" "$(ratio "$mb" "$mz")"
		record "wan_${name}_zoffsite_fixed_runs_us" "${zf[*]:-none}"
		record "wan_${name}_bare_fixed_runs_us" "${bf[*]:-none}"
		if [[ -n $mz && -n $mb ]] && ((${#zf[@]} && ${#bf[@]})); then
			local fz fb xz xb
			fz=$(median "${zf[@]}")
			fb=$(median "${bf[@]}")
			record "wan_${name}_zoffsite_fixed_us" "$fz"
			record "wan_${name}_bare_fixed_us" "$fb"
			xz=$((mz - fz))
			xb=$((mb - fb))
			if ((xz > 0 && xb > 0)); then
				record "wan_${name}_transfer_zoffsite_over_bare" "$(ratio "$xb" "$xz")"
				record "wan_${name}_transfer_zoffsite_mbitps" "$(mbitps "$bytes" "$xz")"
				record "wan_${name}_transfer_bare_mbitps" "$(mbitps "$bytes" "$xb")"
			fi
		fi
		[[ -z $mz || -z $ms ]] || record "wan_${name}_zoffsite_over_syncoid" "$(ratio "$ms" "$mz")"
		local t
		for t in zoffsite:$mz bare:$mb syncoid:$ms; do
			[[ -n ${t#*:} ]] || continue
			record "wan_${name}_${t%%:*}_mbitps" "$(mbitps "$bytes" "${t#*:}")"
		done
	done
	if [[ -n $(sed -n 's/^wan_[a-z]*_zoffsite_us=//p' "$RESULTS") ]]; then
		record wan_status ok
	else
		record wan_status failed
		record wan_error "$(sed -n 's/^wan_smooth_errors=//p' "$RESULTS" | cut -c1-300)"
	fi
}

# ---------------------------------------------------------------------------
# b. no-op run, 50 ms RTT

# accounted_noop NAME I CONFIG: scenario NAME's repetition I of a timed,
# accounted no-op run of CONFIG. Appends to the caller's z_times and z_acct
# and records how many datasets it found up to date, or sets z_failed.
accounted_noop() {
	local name=$1 i=$2 cfg=$3 us
	acct_on "$WORK/acct-$name$i"
	if timed us zoffsite_backup "$cfg" --json; then
		acct_off
		z_acct+=("$WORK/acct-$name$i")
		z_times+=("$us")
		# A no-op must send nothing: every dataset up to date.
		record "${name}_zoffsite_run${i}_up_to_date" "$(grep -c '"kind": "up_to_date"' "$WORK/last.out" || true)"
	else
		acct_off
		z_failed=$(error_line)
	fi
}

# syncoid_noop REP: one syncoid no-op over the whole tree, stopped after
# SYNCOID_CAP seconds. syncoid handles datasets one after the other with
# several SSH commands each (about 6 per dataset for a no-op), so under
# emulation a full pass over 100 datasets takes far longer than this
# benchmark may. Its --debug lines, timestamped here, mark where each dataset
# starts; a stopped run is extrapolated linearly:
#   startup (until the first dataset) + N x mean time per finished dataset.
# Prints "total_us per_dataset_us datasets_finished extrapolated(0|1)".
syncoid_noop() {
	local log=$WORK/syncoid-noop$1.log t0 t1 rc=0 n
	n=$(zfs list -H -o name -r "$SRC/noop" | wc -l)
	t0=$EPOCHREALTIME
	timeout --kill-after=10 "$SYNCOID_CAP" ip netns exec "$HOME_NS" "${SYNCOID[@]}" --debug -r \
		"$SRC/noop" "root@$BOX_ADDR:$BOX/sync/noop" </dev/null 2>&1 |
		while IFS= read -r l; do printf '%s %s\n' "$EPOCHREALTIME" "$l"; done >"$log" || rc=$?
	t1=$EPOCHREALTIME
	echo "+ syncoid no-op run $1 (exit $rc, $(((${t1/./} - ${t0/./}) / 1000)) ms)" >&2
	cat "$log" >&2
	cp "$log" "$WORK/last.out"
	case $rc in
	0)
		awk -v t0="$t0" -v t1="$t1" '/DEBUG: syncing source / { k++ }
			END { printf "%.0f %.0f %d 0\n", (t1 - t0) * 1e6, k ? (t1 - t0) * 1e6 / k : 0, k }' "$log"
		;;
	124 | 137)
		awk -v t0="$t0" -v n="$n" '/DEBUG: syncing source / { s[++k] = $1 }
			END {
				if (k < 2) exit 1
				per = (s[k] - s[1]) / (k - 1)
				# %.0f, not %d: mawk'"'"'s %d clamps at 2^31-1 (36 minutes in µs).
				printf "%.0f %.0f %d 1\n", ((s[1] - t0) + n * per) * 1e6, per * 1e6, k - 1
			}' "$log" || {
			echo "syncoid finished none of the $n datasets within the ${SYNCOID_CAP} s cap: nothing to extrapolate from (raise BENCH_SYNCOID_CAP)" >"$WORK/last.out"
			return 1
		}
		;;
	*) return "$rc" ;;
	esac
}

noop() {
	create_encrypted noop
	say "creating $NOOP_CHILDREN child datasets"
	# Creates in parallel share transaction groups (one at a time, each would
	# wait for its own txg sync: minutes under emulation). Children inherit
	# the parent's encryption; unmounted, as nothing is written to them.
	seq -f "$SRC/noop/c%03g" 1 "$NOOP_CHILDREN" | xargs -P 8 -n 1 zfs create -o canmount=off
	local cfg=$WORK/noop.toml
	write_config "$cfg" "$SRC/noop"
	record noop_datasets "$(zfs list -H -o name -r "$SRC/noop" | wc -l)"

	# Both boxes start from the same state, made locally (no SSH, no netem):
	# every dataset holding the same zoffsite snapshot with the source's
	# GUIDs, as after a first backup. (zoffsite's own first backup of 101
	# datasets took ~10 min under emulation on a busy host, syncoid's ~30 s
	# per dataset; only the no-op runs are measured.)
	local snap
	snap="$SRC/noop@$(zname "$(date +%s)")"
	zfs snapshot -r "$snap"
	zfs list "$BOX/z/$SRC" >/dev/null 2>&1 || zfs create -o canmount=off "$BOX/z/$SRC"
	zfs send -R -w "$snap" | zfs receive -u "$BOX/z/$SRC/noop"
	zfs send -R -w "$snap" | zfs receive -u "$BOX/sync/noop"
	# One untimed zoffsite run: it finds everything up to date and anchors
	# its chain (a bookmark and the target's hold per dataset), which leaves
	# the source as after any real run.
	say "first (untimed) zoffsite run over $NOOP_CHILDREN children"
	local us
	if ! timed us zoffsite_backup "$cfg" --json; then
		record noop_status failed
		record noop_error "first run: $(error_line)"
		return 0
	fi
	record noop_first_zoffsite_us "$us"
	record noop_first_zoffsite_up_to_date "$(grep -c '"kind": "up_to_date"' "$WORK/last.out" || true)"
	# What a no-op starts, counted once, untimed (the wrappers cost a
	# shell each).
	count_run noop "$cfg"
	local snaps_before
	snaps_before=$(zfs list -H -t snapshot -o name -r "$SRC" | wc -l)

	netem on
	record noop_netem_delay "$RTT_DELAY"
	record noop_syncoid_cap_s "$SYNCOID_CAP"
	# Measure the RTT through the tunnel (box -> source: the direction the
	# box firewall lets ping through).
	local rtt
	rtt=$(ip netns exec "$FRIEND_NS" ping -n -q -c 5 -i 0.2 -I wg-friend 10.77.0.1 | awk -F/ '/^rtt/ {print $5}') || rtt=''
	record noop_rtt_ms "${rtt:-unknown}"

	local i z_times=() f_times=() s_tot=() s_per=() z_failed='' s_ok=1 s_line z_acct=()
	local rep_t0=$SECONDS
	for ((i = 0; ; i++)); do
		next_rep noop "$i" "$rep_t0" || break
		rep_t0=$SECONDS
		local order=(z s)
		((i % 2)) && order=(s z)
		local who
		for who in "${order[@]}"; do
			if [[ $who == z ]]; then
				[[ -z $z_failed ]] || continue
				accounted_noop noop "$i" "$cfg"
				# The floor: the least any tool must do to confirm a no-op
				# (log in once, list what the box holds) over the same
				# tunnel and netem, with the same listing serve makes.
				if timed us ip netns exec "$HOME_NS" "${SSH_BARE[@]}" zfs list -H -p -r \
					-t filesystem,volume,snapshot -o name,guid,createtxg,creation,receive_resume_token "$BOX/z/$SRC/noop"; then
					f_times+=("$us")
				fi
			elif ((s_ok)); then
				if s_line=$(syncoid_noop "$i"); then
					local tot per k ex
					read -r tot per k ex <<<"$s_line"
					record "noop_syncoid_run${i}" "total_us=$tot per_dataset_us=$per datasets_timed=$k extrapolated=$ex"
					s_tot+=("$tot")
					s_per+=("$per")
				else
					s_ok=0
					record noop_syncoid_error "$(error_line)"
				fi
			fi
		done
	done
	netem off
	local snaps_after
	snaps_after=$(zfs list -H -t snapshot -o name -r "$SRC" | wc -l)
	record noop_new_snapshots $((snaps_after - snaps_before))
	local z='' s=''
	if ((${#s_tot[@]})); then
		s=$(median "${s_tot[@]}")
		record noop_syncoid_us "$s"
		record noop_syncoid_per_dataset_us "$(median "${s_per[@]}")"
	fi
	if [[ -n $z_failed ]]; then
		record noop_status failed
		record noop_error "$z_failed"
		return 0
	fi
	if ((${#z_times[@]} == 0)); then
		record noop_status skipped
		record noop_error "no repetition fitted in the time budget"
		return 0
	fi
	record noop_zoffsite_runs_us "${z_times[*]}"
	z=$(median "${z_times[@]}")
	record noop_zoffsite_us "$z"
	record_cpu noop "${z_acct[@]}"
	record noop_box_snapshots "$(zfs list -H -t snapshot -o name -r "$BOX/z/$SRC/noop" | wc -l)"
	if ((${#f_times[@]})); then
		local f
		f=$(median "${f_times[@]}")
		record noop_floor_runs_us "${f_times[*]}"
		record noop_floor_us "$f"
		# How many times the floor zoffsite's no-op takes.
		record noop_zoffsite_over_floor "$(ratio "$z" "$f")"
	fi
	# How many times longer syncoid takes than zoffsite.
	[[ -z $s ]] || record noop_syncoid_over_zoffsite "$(ratio "$s" "$z")"
	record noop_status ok
}

# ---------------------------------------------------------------------------
# g. a long history: HIST_DATASETS (100) datasets with HIST_SNAPSHOTS (30)
# zoffsite snapshots each, backed up to two targets (two box roots, each
# with its own source key and forced command), nothing changed, at the
# no-op's RTT. The floor: per target one login and one listing of what the
# box holds, one target after the other. And the number of zfs and zpool
# processes such a no-op starts on each end (count_run), beside the no-op
# scenario's (one snapshot per dataset, one target): it should follow the
# targets, not the datasets or the snapshots.

# One SSH login per target, each listing that target's box as serve does.
history_floor() {
	local root
	for root in z z2; do
		ip netns exec "$HOME_NS" "${SSH_BARE[@]}" zfs list -H -p -r -t filesystem,volume,snapshot \
			-o name,guid,createtxg,creation,receive_resume_token "$BOX/$root/$SRC/hist" || return
	done
}

history() {
	create_encrypted hist
	say "creating $((HIST_DATASETS - 1)) child datasets, $HIST_SNAPSHOTS snapshots of each"
	seq -f "$SRC/hist/c%03g" 1 $((HIST_DATASETS - 1)) | xargs -r -P 8 -n 1 zfs create -o canmount=off
	# zoffsite's names, an hour apart, the newest a minute old: retention
	# (last = HIST_SNAPSHOTS) keeps them all and no refresh is due.
	local now i newest oldest=''
	now=$(date +%s)
	for ((i = HIST_SNAPSHOTS - 1; i >= 0; i--)); do
		newest="$SRC/hist@$(zname $((now - 60 - i * 3600)))"
		zfs snapshot -r "$newest"
		oldest=${oldest:-$newest}
	done
	record history_datasets "$(zfs list -H -o name -r "$SRC/hist" | wc -l)"
	record history_source_snapshots "$(zfs list -H -t snapshot -o name -r "$SRC/hist" | wc -l)"
	record history_targets 2
	record history_snapshots_each "$HIST_SNAPSHOTS"

	# The second target: a key of its own, forced to a box root of its own.
	local key2=$WORK/hist_key2
	ssh-keygen -q -t ed25519 -N '' -C zoffsite-bench-target2 -f "$key2"
	zfs list "$BOX/z2" >/dev/null 2>&1 || zfs create -o canmount=off "$BOX/z2"
	EXTRA_AUTH="restrict,command=\"$(serve_cmd "$BOX/z2")\" $(<"$key2.pub")"
	set_forced_command

	# Both boxes hold the whole history, made locally (as for the no-op):
	# the tree with its oldest snapshot in one raw -R stream (which keeps
	# the parent the children's encryption root, as a first backup does),
	# then each dataset's other snapshots as its own raw -I stream, 16 at a
	# time. Every received snapshot is a transaction group commit: one -R
	# stream of all 3,000 commits them one after another (over 35 minutes
	# under emulation); side by side they share commits.
	say "replicating the history to both box roots locally"
	local root pids=()
	for root in z z2; do
		zfs list "$BOX/$root/$SRC" >/dev/null 2>&1 || zfs create -o canmount=off "$BOX/$root/$SRC"
		zfs send -R -w "$oldest" | zfs receive -u "$BOX/$root/$SRC/hist" &
		pids+=($!)
	done
	for i in "${pids[@]}"; do wait "$i"; done
	if ((HIST_SNAPSHOTS > 1)); then
		# Each bash: the oldest and newest names ($0, $1), then from xargs
		# a dataset ($2) and where it goes ($3).
		# shellcheck disable=SC2016 # expanded by the inner bash, from its argv
		zfs list -H -o name -r "$SRC/hist" | while read -r ds; do
			printf '%s %s\n%s %s\n' "$ds" "$BOX/z/$ds" "$ds" "$BOX/z2/$ds"
		# Each pipeline is bounded: run 20261207T211254Z sat idle here for
		# 30 min (a receive that never ended), and one hung pipeline must
		# fail this scenario, not stall the whole run until its timeout.
		done | xargs -P 16 -n 2 timeout 1200 bash -c 'set -o pipefail; zfs send -w -I "@$0" "$2@$1" | zfs receive -u "$3"' \
			"${oldest#*@}" "${newest#*@}" ||
			die "history: the local incremental replication failed (see bench.log)"
	fi
	record history_box_snapshots "$(zfs list -H -t snapshot -o name -r "$BOX/z/$SRC/hist" | wc -l)"

	local cfg=$WORK/hist.toml
	cat >"$cfg" <<CONFIG
[source]
datasets = ["$SRC/hist"]
exclude = []

[source.keep]
last = $HIST_SNAPSHOTS

[[target]]
name = "friend"
host = "$BOX_ADDR"
user = "root"
identity_file = "$IDENTITY"
known_hosts = "$KNOWN_HOSTS"

[[target]]
name = "second"
host = "$BOX_ADDR"
user = "root"
identity_file = "$key2"
known_hosts = "$KNOWN_HOSTS"
CONFIG
	say "first (untimed) zoffsite run: $HIST_DATASETS datasets, two targets"
	local us
	if ! timed us zoffsite_backup "$cfg" --json; then
		record history_status failed
		record history_error "first run: $(error_line)"
		EXTRA_AUTH=''
		set_forced_command
		return 0
	fi
	record history_first_zoffsite_us "$us"
	record history_first_zoffsite_up_to_date "$(grep -c '"kind": "up_to_date"' "$WORK/last.out" || true)"
	count_run history "$cfg" "$BOX/z2" "$(<"$key2.pub")"
	local snaps_before
	snaps_before=$(zfs list -H -t snapshot -o name -r "$SRC/hist" | wc -l)

	netem on
	local z_times=() f_times=() z_failed='' z_acct=()
	local rep_t0=$SECONDS
	for ((i = 0; ; i++)); do
		next_rep history "$i" "$rep_t0" || break
		rep_t0=$SECONDS
		local order=(z f)
		((i % 2)) && order=(f z)
		local who
		for who in "${order[@]}"; do
			if [[ $who == z ]]; then
				[[ -z $z_failed ]] || continue
				accounted_noop history "$i" "$cfg"
			elif timed us history_floor; then
				f_times+=("$us")
			fi
		done
	done
	netem off
	record history_new_snapshots $(($(zfs list -H -t snapshot -o name -r "$SRC/hist" | wc -l) - snaps_before))
	EXTRA_AUTH=''
	set_forced_command
	# Later scenarios' serve lists its whole root: leave the boxes as the
	# other scenarios found them.
	zfs destroy -r "$BOX/z/$SRC/hist" &
	zfs destroy -r "$BOX/z2" &
	zfs destroy -r "$SRC/hist" &
	wait
	settle_pools

	if [[ -n $z_failed ]]; then
		record history_status failed
		record history_error "$z_failed"
		return 0
	fi
	if ((${#z_times[@]} == 0)); then
		record history_status skipped
		record history_error "no repetition fitted in the time budget"
		return 0
	fi
	record history_zoffsite_runs_us "${z_times[*]}"
	local z f
	z=$(median "${z_times[@]}")
	record history_zoffsite_us "$z"
	# What one no-op costs each end in CPU (for docs/benchmarks.md's scale).
	record_cpu history "${z_acct[@]}"
	if ((${#f_times[@]})); then
		f=$(median "${f_times[@]}")
		record history_floor_runs_us "${f_times[*]}"
		record history_floor_us "$f"
		record history_zoffsite_over_floor "$(ratio "$z" "$f")"
	fi
	record history_status ok
}

# ---------------------------------------------------------------------------
# c. backlog: BACKLOG pending snapshots of one dataset

backlog() {
	create_encrypted bl
	echo start >"$WORK/mnt/bl/log.txt"
	local cfg=$WORK/bl.toml
	write_config "$cfg" "$SRC/bl"
	local us
	if ! timed us zoffsite_backup "$cfg"; then
		record backlog_status failed
		record backlog_error "initial backup: $(error_line)"
		return 0
	fi
	local base
	base=$(zfs list -H -o name -t snapshot -s createtxg "$SRC/bl" | tail -n 1)
	base=${base#*@}
	local s_ok=1
	if ! timed us syncoid_run "$SRC/bl" "root@$BOX_ADDR:$BOX/sync/bl"; then
		s_ok=0
		record backlog_syncoid_error "initial sync: $(error_line)"
	fi

	# The box was away: BACKLOG snapshots, each after a small change, named
	# the way zoffsite names its own (so it sends them, as one -I stream),
	# one second apart, after the initial one.
	say "taking $BACKLOG snapshots"
	local t0 i
	t0=$(($(date +%s) + 3600))
	for ((i = 1; i <= BACKLOG; i++)); do
		echo "change $i" >>"$WORK/mnt/bl/log.txt"
		zfs snapshot "$SRC/bl@$(zname $((t0 + i)))"
	done
	record backlog_snapshots "$BACKLOG"
	local newest
	newest=$(zfs list -H -o name -t snapshot -s createtxg "$SRC/bl" | tail -n 1)
	record backlog_stream_bytes "$(zfs send -nP -w -I "@$base" "$newest" | awk '$1 == "size" {print $2}')"

	local z_times=() s_times=() z_failed='' z_acct=()
	local rep_t0=$SECONDS
	for ((i = 0; ; i++)); do
		next_rep backlog "$i" "$rep_t0" || break
		rep_t0=$SECONDS
		local order=(z s)
		((i % 2)) && order=(s z)
		local who
		for who in "${order[@]}"; do
			if [[ $who == z ]]; then
				[[ -z $z_failed ]] || continue
				acct_on "$WORK/acct-bl$i"
				if timed us zoffsite_backup "$cfg" --json; then
					acct_off
					z_acct+=("$WORK/acct-bl$i")
					z_times+=("$us")
					local held
					held=$(zfs list -H -t snapshot -o name "$BOX/z/$SRC/bl" | wc -l)
					record "backlog_zoffsite_run${i}_box_snapshots" "$held"
				else
					acct_off
					z_failed=$(error_line)
				fi
				# Back to the starting state: the box holds only the base.
				zfs rollback -r "$BOX/z/$SRC/bl@$base" || true
			elif ((s_ok)); then
				if timed us syncoid_run "$SRC/bl" "root@$BOX_ADDR:$BOX/sync/bl"; then
					s_times+=("$us")
				else
					s_ok=0
					record backlog_syncoid_error "$(error_line)"
				fi
				zfs rollback -r "$BOX/sync/bl@$base" || true
			fi
			settle_pools
		done
	done
	local s=''
	if ((${#s_times[@]})); then
		s=$(median "${s_times[@]}")
		record backlog_syncoid_us "$s"
	fi
	if [[ -n $z_failed ]]; then
		record backlog_status failed
		record backlog_error "$z_failed"
		return 0
	fi
	if ((${#z_times[@]} == 0)); then
		record backlog_status skipped
		record backlog_error "no repetition fitted in the time budget"
		return 0
	fi
	record backlog_zoffsite_runs_us "${z_times[*]}"
	record backlog_syncoid_runs_us "${s_times[*]:-none}"
	local z
	z=$(median "${z_times[@]}")
	record backlog_zoffsite_us "$z"
	record_cpu backlog "${z_acct[@]}"
	[[ -z $s ]] || record backlog_syncoid_over_zoffsite "$(ratio "$s" "$z")"
	record backlog_status ok
}

# ---------------------------------------------------------------------------

# In this order whatever BENCH_SCENARIOS says: backlog and the home line
# last, the longest (200 snapshots received twice per repetition; six sends
# of 128 MiB at 20 Mbit/s, three of them through loss), so that a busy
# host's time budget cuts their repetitions rather than the others'.
for s in calibration throughput memory bwlimit noop history backlog wan; do
	if [[ " $SCENARIOS " == *" $s "* ]]; then run_scenario "$s"; fi
done
