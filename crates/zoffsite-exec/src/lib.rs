//! The imperative shell of zoffsite: everything that starts a process.
//!
//! [`process`] spawns every child process, by argv, never a shell, its
//! stderr collected bounded: the ssh to a box too (by the argv [`ssh`]
//! builds; its pipes are the session). [`zfs`] builds every zfs argv;
//! [`proto::client`] speaks the protocol to a box, and [`proto::server`] is
//! the box's end of it. Decisions are made in `zoffsite-core`; this crate
//! gathers facts and carries plans out.

pub mod events;
pub mod journal;
pub mod lock;
pub mod manifest_file;
pub mod process;
pub mod proto;
pub mod prune;
pub mod replicate;
pub mod rundir;
pub mod selection;
pub mod splice;
pub mod ssh;
pub mod system;
pub mod zfs;
