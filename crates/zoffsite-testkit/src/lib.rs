//! Test helpers for zoffsite, never shipped.
//!
//! - [`fake`]: a stateful fake `zfs`/`zpool` (the `fake-zfs` program), the
//!   one every test that runs zfs uses: the box's server tests in
//!   `zoffsite-exec`, the binary's command tests, and the whole-session
//!   tests in this crate's `tests/`, where the real client talks to the
//!   real `Server` over a pipe pair, each side with its own fake machine.
//! - [`http`]: a real HTTP listener on 127.0.0.1 that records what it is
//!   sent, for `[notify] ping_url`.

pub mod fake;
pub mod http;

pub use fake::FakeZfs;
