//! A stateful fake `zfs` and `zpool`, one program (`fake-zfs`) that tests
//! run through `zoffsite_exec::zfs::Zfs::with_binary`.
//!
//! Each [`FakeZfs`] is one machine: a directory holding the state
//! ([`world`]), a lock, a log of every call and the bytes every receive
//! read, and two links, `zfs` and `zpool`, to the program. The program finds
//! its directory from the path it was run by (its `argv[0]`), so tests
//! running side by side never share a machine by accident, and the source
//! and the box of one test are two of them.
//!
//! Layout: [`world`] is the model, [`cli`] the commands and their output,
//! [`stream`] the send streams, [`receive`] the receive. [`FakeZfs`] is
//! what a test holds: it sets machines up, reads them back, and plants
//! faults (a failing call, a send cut after N bytes, a line on stderr).

pub mod cli;
pub mod receive;
pub mod stream;
pub mod world;

mod handle;

pub use handle::{binary, FakeZfs};
