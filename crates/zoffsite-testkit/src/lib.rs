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

/// Makes a FIFO at `path` (mode 0644): what a reader of a file that must be
/// regular is tested with, since opening one for reading blocks until a
/// writer comes.
pub fn mkfifo(path: &std::path::Path) {
    rustix::fs::mknodat(rustix::fs::CWD, path, rustix::fs::FileType::Fifo, rustix::fs::Mode::from_raw_mode(0o644), 0)
        .unwrap_or_else(|e| panic!("mkfifo {}: {e}", path.display()));
}
