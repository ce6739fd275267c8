//! What a run reports: the severity order every command shares, and the
//! typed report of `backup` (its JSON schema is docs/json.md).
//!
//! The binary maps a [`Severity`] to a process exit code
//! (docs/exit-codes.md); the order lives here, once, so that the library's
//! drivers can say how bad a failure is without knowing any exit code.

use serde::Serialize;

use crate::names::{Dataset, SnapName, Snapshot};
use crate::plan::{Send, Skip};

/// How bad an outcome is, from best to worst: when several apply, the
/// greatest wins (`max`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// Everything asked for was done and verified.
    #[default]
    Ok,
    /// `status`: some dataset's newest snapshot on a target is older than
    /// the target's `max_age`, or the target holds none of it.
    Stale,
    /// Some datasets were not backed up (refused, diverged, failed); the
    /// others were.
    Partial,
    /// A target could not be reached or verified (network, host key, auth,
    /// protocol); other targets were still served.
    Target,
    /// Something unexpected failed locally (e.g. `zfs list` itself).
    Error,
    /// Another run holds this config's lock; nothing was done.
    Busy,
    /// Bad command line or configuration; nothing was done.
    Usage,
}

impl Severity {
    /// Raises `self` to `other` if that is worse.
    pub fn raise(&mut self, other: Severity) {
        *self = (*self).max(other);
    }
}

/// Everything a `backup` run did (or, with `-n`, would do).
#[derive(Debug, Default, Serialize)]
pub struct BackupReport {
    pub dry_run: bool,
    pub snapshot: Option<SnapName>,
    /// Problems not tied to one target (missing datasets, snapshot failures).
    pub errors: Vec<String>,
    pub skipped: Vec<SkippedDataset>,
    pub targets: Vec<TargetReport>,
    /// Snapshots source retention destroyed (or, with -n, would destroy).
    pub pruned: Vec<Snapshot>,
    /// The process's exit code (docs/exit-codes.md), set by the binary.
    pub exit_code: u8,
}

/// A dataset the selection left out, with why.
#[derive(Debug, Serialize)]
pub struct SkippedDataset {
    pub dataset: Dataset,
    #[serde(flatten)]
    pub reason: Skip,
    pub message: String,
}

/// One target's part of a run.
#[derive(Debug, Serialize)]
pub struct TargetReport {
    pub name: String,
    /// Set when the target as a whole failed (unreachable, host key, ...).
    pub error: Option<String>,
    pub datasets: Vec<DatasetReport>,
    /// How many datasets the box recorded this run's heartbeat of
    /// ([`crate::boxside`], "Heartbeats"); `None` when none was sent or
    /// recorded (a dry run, a lost session, an older box).
    pub heartbeat: Option<u32>,
}

/// How one dataset's send to one target ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DatasetStatus {
    /// The box holds the planned snapshot with the source's GUID.
    Ok,
    /// Dry run: what would be sent.
    Planned,
    Failed,
}

/// One dataset on one target.
#[derive(Debug, Serialize)]
pub struct DatasetReport {
    pub dataset: Dataset,
    pub status: DatasetStatus,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub send: Option<Send>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bytes: Option<u64>,
    /// Bytes sent to finish an interrupted transfer first, if there was one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resumed_bytes: Option<u64>,
    /// `zfs send -nvP`'s estimate, in dry runs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub estimated_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl DatasetReport {
    /// A dataset whose send ended as `status` (not failed).
    pub fn done(dataset: &Dataset, status: DatasetStatus, send: Send, bytes: Option<u64>) -> Self {
        DatasetReport {
            dataset: dataset.clone(),
            status,
            send: Some(send),
            bytes,
            resumed_bytes: None,
            estimated_bytes: None,
            error: None,
        }
    }

    /// A dataset whose send failed with `error`.
    pub fn failed(dataset: &Dataset, send: Option<Send>, error: String) -> Self {
        DatasetReport {
            dataset: dataset.clone(),
            status: DatasetStatus::Failed,
            send,
            bytes: None,
            resumed_bytes: None,
            estimated_bytes: None,
            error: Some(error),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_worst_severity_wins() {
        let mut s = Severity::Ok;
        s.raise(Severity::Partial);
        s.raise(Severity::Stale);
        assert_eq!(s, Severity::Partial);
        s.raise(Severity::Target);
        assert_eq!(s, Severity::Target);
        assert!(Severity::Usage > Severity::Busy && Severity::Busy > Severity::Error);
        assert!(Severity::Error > Severity::Target && Severity::Partial > Severity::Stale);
    }

    #[test]
    fn dataset_status_serializes_as_docs_json_md_says() {
        let v = serde_json::to_value([DatasetStatus::Ok, DatasetStatus::Planned, DatasetStatus::Failed]).unwrap();
        assert_eq!(v, serde_json::json!(["ok", "planned", "failed"]));
    }
}
