//! The imperative shell of zoffsite: everything that starts a process.
//!
//! [`process`] spawns every child process, by argv, never a shell, its
//! stderr collected bounded: the ssh to a box too (by the argv [`ssh`]
//! builds; its pipes are the session). [`zfs`] builds every zfs argv;
//! [`proto::client`] speaks the protocol to a box (its streams paced to the
//! target's bandwidth schedule by [`pace`]), and [`proto::server`] is
//! the box's end of it. [`replicate`] runs a backup, [`prune`] the
//! source's retention; [`restore`](mod@restore) and [`drill`](mod@drill)
//! bring a tree back (one checked "send raw into a sink" for both, and for
//! the box's sends); [`boxstate`] is what `box prune` and `box check` read
//! and record on the box; [`doctor`](mod@doctor) gathers the audit's facts;
//! [`boxnew`] makes a new box's keys and bundles on the source; [`notify`]
//! runs the `[notify]` programs and sends the pings. Decisions are made in `zoffsite-core`; this crate
//! gathers facts and carries plans out.

pub mod boxapply;
pub mod boxaudit;
pub mod boximage;
pub mod boxinit;
pub mod boxinstall;
pub mod boxnew;
pub mod boxstate;
pub mod boxwait;
pub mod doctor;
pub mod drill;
pub mod events;
pub mod journal;
pub mod keepalive;
pub mod lock;
pub mod manifest_file;
pub mod notify;
pub mod pace;
pub mod private;
pub mod process;
pub mod proto;
pub mod prune;
pub mod replicate;
pub mod restore;
pub mod rundir;
pub mod selection;
pub mod splice;
pub mod ssh;
pub mod system;
pub mod zfs;
