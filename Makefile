# zoffsite: two commands do everything on a fresh Debian 12 machine (as root):
#   make demo   - set up what is missing, run a real backup in the VM
#   make test   - format check, clippy (warnings are errors), unit tests, VM end-to-end suite
# See README.md. Each target is a thin wrapper; the logic lives in scripts/ and vm/.

CARGO ?= cargo
export CARGO_TERM_COLOR ?= never

.PHONY: all build test check fmt-check clippy unit fuzz e2e demo setup bench image-test clean deb dist-files package-check

all: build

build:
	$(CARGO) build --locked

## Everything CI runs (.ci/run). The unit tests check generated files with the
## real tools (sshd, nft, systemd-analyze), which setup installs; under `make
## test` a missing tool is a failure, not a skipped test.
test: REQUIRE_TOOLS = 1
test: fmt-check clippy setup unit package-check fuzz e2e

check: fmt-check clippy unit

fmt-check:
	$(CARGO) fmt --all -- --check

clippy:
	$(CARGO) clippy --locked --workspace --all-targets -- -D warnings

unit:
	ZOFFSITE_REQUIRE_TOOLS=$(REQUIRE_TOOLS) $(CARGO) test --locked --workspace

## Bounded-time fuzzing of every parser of hostile input and of `serve` (fuzz/README.md):
## FUZZ_SECONDS in total (default 60), FUZZ_SEED to repeat a run (each run prints its seed).
fuzz:
	$(CARGO) run --locked --release --manifest-path fuzz/Cargo.toml

## The Debian package of a release build (cargo-deb, installed once if
## missing): target/debian/zoffsite_VERSION-1_ARCH.deb. README.md, "Install".
deb:
	scripts/deb

## The man pages, shell completions and packaged units in dist/, generated
## from the binary (`zoffsite dist`); a unit test fails when they are stale.
dist-files:
	rm -rf dist/man dist/completions dist/systemd
	$(CARGO) run --locked -q -p zoffsite -- dist --out dist

## Both packages built from this checkout (the Debian one from the dev
## build, the PKGBUILD's package() by makepkg) and their file lists
## compared; the `package` e2e area installs the .deb in the VM.
package-check: setup
	scripts/package-check

## Installs the VM's kernel, OpenZFS, QEMU and test tools; builds the initramfs (cached).
setup:
	vm/setup

## End-to-end tests against real OpenZFS/OpenSSH/WireGuard/nftables in the VM
## (or directly, on a Linux host with ZFS loaded, when run as root).
e2e: setup
	scripts/e2e

## A real backup between the two namespaces in the VM, with a look at what the box holds.
demo: setup
	scripts/demo

## Benchmarks in the VM (zoffsite vs bare zfs send | ssh | zfs receive and
## syncoid, as ratios) and the planner on the host; writes docs/benchmarks.md.
bench: setup
	scripts/bench

## The box image, really booted: `zoffsite box image` (mkosi), then QEMU with
## OVMF's Secure Boot firmware and swtpm across five boots (enroll, install,
## first boot + a real backup, a tampered UKI, another TPM). Slow under
## software emulation, so not part of `make test`; see scripts/image-test.
image-test:
	scripts/image-test

clean:
	$(CARGO) clean
