//! `zoffsite status`: how far behind each target is, as a pure function.
//!
//! Ages are computed from the *source's* creation time of the snapshot the
//! box holds (matched by GUID): the box's own `creation` of a received
//! snapshot is copied from the stream, and the source's clock is the one
//! the user trusts here.

use serde::Serialize;

use crate::names::{Dataset, Guid, SnapName};
use crate::parse::{BookmarkRow, SnapshotRow};
use crate::plan::SNAPSHOT_PREFIX;
use crate::protocol::RemoteDataset;

/// A snapshot as status shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Point {
    pub name: SnapName,
    pub guid: Guid,
    /// Unix seconds, source clock.
    pub creation: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// The box holds the source's newest zoffsite snapshot, younger than
    /// `max_age`.
    Current,
    /// The box is behind the source but its newest is younger than
    /// `max_age`.
    Behind,
    /// The box's newest snapshot is older than `max_age`.
    Stale,
    /// The box holds nothing of this dataset.
    Never,
    /// The box's newest snapshot is unknown to the source.
    Diverged,
}

impl State {
    /// Whether a monitoring check should fail.
    pub fn is_problem(self) -> bool {
        matches!(self, State::Stale | State::Never | State::Diverged)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DatasetStatus {
    pub dataset: Dataset,
    /// The source's newest zoffsite snapshot.
    pub source_newest: Option<Point>,
    /// The box's newest snapshot, named and dated as on the source.
    pub box_newest: Option<Point>,
    /// Seconds since `box_newest` was taken (source clock).
    pub age: Option<i64>,
    /// Bytes written on the source since `box_newest`, where known.
    pub behind_bytes: Option<u64>,
    /// An interrupted transfer waits on the box.
    pub partial: bool,
    pub state: State,
}

/// Evaluates one dataset on one target.
pub fn evaluate(
    dataset: &Dataset,
    snaps: &[SnapshotRow],
    bookmarks: &[BookmarkRow],
    remote: Option<&RemoteDataset>,
    now: i64,
    max_age_secs: i64,
) -> DatasetStatus {
    let source_newest = snaps
        .iter()
        .filter(|s| s.snapshot.dataset == *dataset && s.snapshot.name.as_str().starts_with(SNAPSHOT_PREFIX))
        .max_by_key(|s| s.createtxg)
        .map(|s| Point { name: s.snapshot.name.clone(), guid: s.guid, creation: s.creation });
    let remote = remote.filter(|r| r.exists);
    let partial = remote.is_some_and(|r| r.resume_token.is_some());
    let box_guid = remote.and_then(|r| r.snapshots.iter().max_by_key(|s| s.createtxg)).map(|s| s.guid);
    let known = box_guid.and_then(|g| {
        snaps
            .iter()
            .filter(|s| s.snapshot.dataset == *dataset)
            .find(|s| s.guid == g)
            .map(|s| Point { name: s.snapshot.name.clone(), guid: g, creation: s.creation })
            .or_else(|| {
                bookmarks.iter().filter(|b| b.bookmark.dataset == *dataset).find(|b| b.guid == g).map(|b| Point {
                    name: b.bookmark.name.clone(),
                    guid: g,
                    creation: b.creation,
                })
            })
    });
    let age = known.as_ref().map(|p| now.saturating_sub(p.creation));
    let state = match (box_guid, &known, age) {
        (None, _, _) => State::Never,
        (Some(_), None, _) => State::Diverged,
        (Some(_), Some(_), Some(a)) if a > max_age_secs => State::Stale,
        (Some(g), Some(_), _) if source_newest.as_ref().is_some_and(|s| s.guid == g) => State::Current,
        _ => State::Behind,
    };
    DatasetStatus {
        dataset: dataset.clone(),
        source_newest,
        box_newest: known,
        age,
        behind_bytes: None,
        partial,
        state,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::names::Snapshot;
    use crate::protocol::RemoteSnapshot;

    fn snap(name: &str, guid: u64, txg: u64, creation: i64) -> SnapshotRow {
        SnapshotRow { snapshot: Snapshot::new(name).unwrap(), guid: Guid::new(guid).unwrap(), createtxg: txg, creation }
    }

    fn remote(guids: &[u64]) -> RemoteDataset {
        RemoteDataset {
            name: Dataset::new("tank/a").unwrap(),
            exists: true,
            resume_token: None,
            snapshots: guids
                .iter()
                .enumerate()
                .map(|(i, g)| RemoteSnapshot {
                    // The box's names and times are not trusted: a lie here
                    // must not change the outcome.
                    name: SnapName::new("whatever").unwrap(),
                    guid: Guid::new(*g).unwrap(),
                    createtxg: i as u64,
                })
                .collect(),
        }
    }

    #[test]
    fn states_from_the_sources_view() {
        let ds = Dataset::new("tank/a").unwrap();
        let snaps = [snap("tank/a@zoffsite-1", 1, 10, 1000), snap("tank/a@zoffsite-2", 2, 20, 5000)];
        let hour = 3600;
        let at = |r: Option<&RemoteDataset>, now| evaluate(&ds, &snaps, &[], r, now, hour);
        assert_eq!(at(None, 5000).state, State::Never);
        let cur = at(Some(&remote(&[1, 2])), 5100);
        assert_eq!((cur.state, cur.age), (State::Current, Some(100)));
        assert_eq!(cur.box_newest.unwrap().name.as_str(), "zoffsite-2", "named as on the source");
        assert_eq!(at(Some(&remote(&[1])), 1500).state, State::Behind);
        assert_eq!(at(Some(&remote(&[1])), 1000 + hour + 1).state, State::Stale);
        assert_eq!(at(Some(&remote(&[2])), 5000 + hour + 1).state, State::Stale, "current but old is stale");
        assert_eq!(at(Some(&remote(&[99])), 5000).state, State::Diverged);
        assert!(State::Stale.is_problem() && !State::Behind.is_problem());
    }
}
