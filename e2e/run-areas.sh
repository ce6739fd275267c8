#!/usr/bin/env bash
# Runs end-to-end test binaries (one per area, built by scripts/e2e) one
# after the other, as root where ZFS is loaded: inside the VM, so that all
# areas share one boot, or directly on a host with ZFS.
#
#   e2e/run-areas.sh BINARY... -- [ARGS...]
#
# ARGS go to every binary (libtest's: --ignored, --test-threads=N, a test
# name filter, --list...). Every binary runs even after one failed; a
# summary follows, and the exit status is the first failing binary's (0 when
# all passed).
set -uo pipefail
bins=()
while (($#)) && [[ $1 != -- ]]; do
	bins+=("$1")
	shift
done
if [[ ${1:-} != -- || ${#bins[@]} -eq 0 ]]; then
	echo "usage: $0 BINARY... -- [ARGS...]" >&2
	exit 2
fi
shift

# The area from the binary's name: .../deps/e2e_<area>-<hash>.
area_of() {
	local name=${1##*/}
	name=${name%-*}
	printf '%s' "${name#e2e_}"
}

status=0
summary=()
for exe in "${bins[@]}"; do
	area=$(area_of "$exe")
	printf '\n==== e2e area %s ====\n' "$area"
	started=$SECONDS
	"$exe" "$@"
	rc=$?
	took=$((SECONDS - started))
	if ((rc == 0)); then
		summary+=("ok      $area (${took}s)")
	else
		summary+=("FAILED  $area (exit $rc, ${took}s)")
		((status == 0)) && status=$rc
	fi
done
printf '\n==== e2e summary ====\n'
printf '%s\n' "${summary[@]}"
exit "$status"
