//! The end-to-end suite: zoffsite against real OpenZFS, OpenSSH, WireGuard
//! and nftables, one module per area (listed in `e2e/README.md`), with the
//! shared harness in [`harness`]. One test binary, so that the areas'
//! tests share its threads (`--test-threads`); one area runs alone by its
//! module path (`scripts/e2e --area NAME`, a filter `NAME::`).
//!
//! The tests need root and a kernel with ZFS, so they are `#[ignore]`d in a
//! plain `cargo test`; `make e2e` (`scripts/e2e`) runs them inside the
//! project's QEMU VM (see `vm/README.md`), and on a Linux host that has ZFS
//! loaded they run as is:
//!
//! ```text
//! sudo cargo test -p zoffsite --test e2e -- --ignored restore::
//! ```

mod harness;

mod backup;
mod box_init;
mod box_retention;
mod compromised_source;
mod faults;
mod hostile_box;
mod notify;
mod package;
mod provisioned;
mod restore;
