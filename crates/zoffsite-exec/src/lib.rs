//! The imperative shell of zoffsite: everything that starts a process.
//!
//! [`process`] is the only place a child process is spawned; [`zfs`] builds
//! every zfs argv; [`ssh`] builds the one ssh argv; [`remote`] speaks the
//! protocol to a box over it. Decisions are made in `zoffsite-core`; this
//! crate gathers facts and carries plans out.

pub mod journal;
pub mod lock;
pub mod manifest_file;
pub mod process;
pub mod remote;
pub mod rundir;
pub mod splice;
pub mod ssh;
pub mod system;
pub mod zfs;
