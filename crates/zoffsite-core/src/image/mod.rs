//! The box image: a USB stick that turns a blank mini PC into a box.
//! [`build`] renders what `zoffsite box image` builds on the source with
//! mkosi; [`install`] decides what `zoffsite box install`, started by a
//! unit on the stick at boot, does to the box's disks.
//!
//! Invariants:
//! - Nothing here touches a disk, a device or a clock: the exec layer
//!   (`zoffsite_exec::boximage`, `zoffsite_exec::boxinstall`) gathers the
//!   facts and carries out the plans returned here.

pub mod build;
pub mod install;

/// Where the image puts the box's bundle (`zoffsite box new`'s
/// `box.bundle`): `box install` reads the pool's name from it, and the
/// installed system applies it.
pub const STICK_BUNDLE: &str = "/usr/lib/zoffsite/box.bundle";
