//! The imperative shell of zoffsite: everything that starts a process.
//!
//! [`process`] spawns every child process but one: [`remote`] spawns the
//! ssh to the box itself, since its pipes are the session (by the argv
//! [`ssh`] builds, never a shell, its stderr collected bounded). [`zfs`]
//! builds every zfs argv; [`remote`] speaks the protocol to a box, and
//! [`proto::server`] is the box's end of it. [`restore`](mod@restore) and [`drill`](mod@drill)
//! bring a tree back (one checked "send raw into a sink" for both, and for
//! the box's sends); [`boxstate`] is what `box prune` and `box check` read
//! and record on the box. Decisions are made in
//! `zoffsite-core`; this crate gathers facts and carries plans out.

pub mod boxstate;
pub mod drill;
pub mod events;
pub mod journal;
pub mod lock;
pub mod manifest_file;
pub mod process;
pub mod proto;
pub mod remote;
pub mod restore;
pub mod rundir;
pub mod splice;
pub mod ssh;
pub mod system;
pub mod zfs;
