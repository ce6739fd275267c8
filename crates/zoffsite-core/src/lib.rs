//! The pure core of zoffsite.
//!
//! Everything here is a function of its inputs: no processes, no clocks, no
//! filesystem. The execution crate (`zoffsite-exec`) gathers facts from ZFS
//! and the box, hands them to these functions, and carries out the plans
//! they return. Keeping decisions here means every decision can be unit
//! tested, and every input that crosses a trust boundary is parsed by code
//! that has its own tests (and fuzz/property tests).
//!
//! Invariants upheld by this crate:
//! - A value of type [`names::Dataset`], [`names::SnapName`] or
//!   [`names::Snapshot`] is a valid ZFS name: whatever the box says is parsed
//!   into these types before it is used, so a hostile name cannot reach an
//!   argv or a comparison.
//! - The planner matches snapshots by GUID, never by name.
//! - Nothing here ever produces a forced receive, a rollback or a rename.
//!   The only destroy decisions come from [`retention`] (applied by
//!   [`plan::prune_source`] to zoffsite's own snapshots on the source, and
//!   later on the box by its owner), and this crate never executes them.

pub mod bandwidth;
pub mod boxinit;
pub mod boxside;
pub mod config;
pub mod doctor;
pub mod holds;
pub mod human;
pub mod image;
pub mod journal;
pub mod limits;
pub mod manifest;
pub mod names;
pub mod notify;
pub mod nvlist;
pub mod parse;
pub mod plan;
pub mod protocol;
pub mod provision;
pub mod records;
pub mod report;
pub mod restore;
pub mod resume;
pub mod retention;
pub mod status;
#[cfg(any(test, feature = "test-util"))]
pub mod stream;
pub mod verify;
