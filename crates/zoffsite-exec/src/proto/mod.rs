//! The zoffsite protocol's box end, as a library: [`server::Server`] serves
//! one session from any reader to any writer, so the binary's `serve`
//! command is a thin wrapper over stdin/stdout and tests and the fuzzer
//! drive it in-process (with a fake `zfs`, [`crate::zfs::Zfs::with_binary`]).
//!
//! - [`server`]: the request loop and its handlers; what the box runs and
//!   refuses (its module docs state the invariants).
//! - `pump`: a checked stream from the source's frames into `zfs receive`,
//!   spliced where it can be.
//!
//! The wire format itself (frames, messages, limits) is
//! `zoffsite_core::protocol`; the source's end is [`crate::remote`].

mod pump;
pub mod server;
