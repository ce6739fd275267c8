//! Both ends of the zoffsite protocol, as a library: [`server::Server`]
//! serves one session from any reader to any writer, so the binary's
//! `serve` command is a thin wrapper over stdin/stdout, and
//! [`client::Session`] speaks to a box over ssh or over any reader and
//! writer ([`client::Session::over`]); tests and the fuzzer connect the two
//! in-process (with a fake `zfs`, [`crate::zfs::Zfs::with_binary`]).
//!
//! - [`client`]: the source's end; everything the box says is hostile
//!   input (its module docs state how it is bounded).
//! - [`server`]: the request loop and its handlers; what the box runs and
//!   refuses (its module docs state the invariants).
//! - `pump`: a checked stream from the source's frames into `zfs receive`,
//!   spliced where it can be.
//!
//! The wire format itself (frames, messages, limits) is
//! `zoffsite_core::protocol`.

pub mod client;
mod pump;
pub mod server;
