//! `zoffsite status`: how far behind each target is, as a pure function.
//!
//! Ages are computed from the *source's* creation time of the snapshot the
//! box holds (matched by GUID): the box's own `creation` of a received
//! snapshot is copied from the stream, and the source's clock is the one
//! the user trusts here.
//!
//! A run that finds nothing changed takes no snapshot, so the box's newest
//! ages although the box holds everything there is. Each backup run
//! therefore records, on each snapshot a target confirmed holding (the
//! run's own snapshot of a dataset, or its newest when nothing changed
//! since), the run's start in [`confirmed_property`] (Unix seconds, source
//! clock). At that time the box held data at least as new as the
//! source's, so a dataset is stale only when neither the box's newest
//! snapshot nor such a confirmation of it is younger than `max_age`
//! (`confirmed`). The record is the source's own, written only after the
//! box reported the snapshot's GUID; nothing the box says can set it. It
//! is written only when due ([`confirmation_due`]): `confirmed` may lag
//! the last run by an eighth of `max_age`, which only makes a dataset
//! stale sooner.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::names::{Dataset, Guid, SnapName, Snapshot};
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
    /// The last time the box was known to hold all of this dataset (Unix
    /// seconds, source clock): `box_newest`'s creation, or the start of a
    /// later backup run that found the box holding it with nothing newer
    /// to send.
    pub confirmed: Option<i64>,
    /// Seconds since `confirmed`: what `state` compares with `max_age`.
    pub confirmed_age: Option<i64>,
    /// Bytes written on the source since `box_newest`, where known.
    pub behind_bytes: Option<u64>,
    /// An interrupted transfer waits on the box.
    pub partial: bool,
    pub state: State,
}

/// The prefix of [`confirmed_property`].
pub const CONFIRMED_PREFIX: &str = "zoffsite:confirmed:";

/// The user property a backup run sets on each snapshot target `target`
/// confirmed holding: `zoffsite:confirmed:` and the target's name. ZFS
/// allows only lowercase letters in a user property's name, and a target's
/// name may have capitals, so each capital is written as `.` and its
/// lowercase letter (a target's name has no `.`, so no two names meet).
pub fn confirmed_property(target: &str) -> String {
    let mut p = String::from(CONFIRMED_PREFIX);
    for c in target.chars() {
        if c.is_ascii_uppercase() {
            p.push('.');
            p.push(c.to_ascii_lowercase());
        } else {
            p.push(c);
        }
    }
    p
}

/// Whether a backup run must record its confirmation, at `now`, of a
/// snapshot created at `creation` whose recorded confirmation is `stored`
/// (both source clock). [`evaluate`] ages the box's copy by the later of
/// the two, so the run writes only when that is due again
/// ([`crate::boxside::check_in_due`]) by the target's `max_age`
/// ([`crate::boxside::check_in_refresh`]): a run that just sent the
/// snapshot, or confirmed it within the refresh, writes nothing, and
/// `status` then sees a confirmation at most the refresh older than the
/// run, which only makes it report stale that much earlier.
pub fn confirmation_due(creation: i64, stored: Option<i64>, now: i64, max_age: std::time::Duration) -> bool {
    // The run's own snapshot is taken after the run started: a creation
    // within a clock step of `now` counts as `now`. A recorded value ahead
    // of `now` is always due (check_in_due).
    let tolerance = crate::boxside::secs(crate::boxside::CLOCK_TOLERANCE);
    let creation = if creation <= now.saturating_add(tolerance) { creation.min(now) } else { creation };
    let latest = stored.map_or(creation, |t| t.max(creation));
    crate::boxside::check_in_due(Some(latest), now, crate::boxside::check_in_refresh(max_age))
}

/// The confirmations of one target as `zfs get -s local -o name,value` of
/// its [`confirmed_property`] lists them: by snapshot, plain Unix seconds
/// only (anything else is left out: the snapshot then counts from its
/// creation, as if it were never confirmed again).
pub fn parse_confirmations(rows: &[(String, String)]) -> BTreeMap<Snapshot, i64> {
    rows.iter().filter_map(|(n, v)| Some((Snapshot::new(n).ok()?, crate::boxside::parse_stamp(v).at()?))).collect()
}

/// The source's snapshot that the box's newest snapshot of `dataset` is
/// (by GUID): the one whose confirmation [`evaluate`] takes.
pub fn box_newest_on_source(
    dataset: &Dataset,
    snaps: &[SnapshotRow],
    remote: Option<&RemoteDataset>,
) -> Option<Snapshot> {
    let g = remote.filter(|r| r.exists)?.snapshots.iter().max_by_key(|s| s.createtxg)?.guid;
    snaps.iter().find(|s| s.snapshot.dataset == *dataset && s.guid == g).map(|s| s.snapshot.clone())
}

/// Evaluates one dataset on one target, with that target's confirmations
/// ([`parse_confirmations`]).
pub fn evaluate(
    dataset: &Dataset,
    snaps: &[SnapshotRow],
    bookmarks: &[BookmarkRow],
    remote: Option<&RemoteDataset>,
    confirmations: &BTreeMap<Snapshot, i64>,
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
    // Only a snapshot carries a confirmation (a bookmark counts from its
    // creation).
    // One dated further ahead than a clock step explains is not taken (a
    // clock that went back, or a value set by hand): it would keep the
    // dataset current until that date.
    let ahead = now.saturating_add(crate::boxside::secs(crate::boxside::CLOCK_TOLERANCE));
    let stamp = snaps
        .iter()
        .find(|r| r.snapshot.dataset == *dataset && Some(r.guid) == box_guid)
        .and_then(|r| confirmations.get(&r.snapshot).copied())
        .filter(|t| *t <= ahead);
    let confirmed = known.as_ref().map(|p| stamp.map_or(p.creation, |t| t.max(p.creation)));
    let confirmed_age = confirmed.map(|c| now.saturating_sub(c).max(0));
    let state = match (box_guid, &known, confirmed_age) {
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
        confirmed,
        confirmed_age,
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
        let none = BTreeMap::new();
        let at = |r: Option<&RemoteDataset>, now| evaluate(&ds, &snaps, &[], r, &none, now, hour);
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

    #[test]
    fn a_run_that_found_nothing_to_send_keeps_the_dataset_from_going_stale() {
        let ds = Dataset::new("tank/a").unwrap();
        let snaps = [snap("tank/a@zoffsite-1", 1, 10, 1000), snap("tank/a@zoffsite-2", 2, 20, 5000)];
        let day = 86_400;
        let max_age = 26 * 3600;
        // The box holds zoffsite-2, taken at 5000; runs found nothing
        // changed since, the last of them 10 days later.
        let last_run = 5000 + 10 * day;
        let c: BTreeMap<Snapshot, i64> =
            [(Snapshot::new("tank/a@zoffsite-2").unwrap(), last_run)].into_iter().collect();
        let now = last_run + 3600;
        let st = evaluate(&ds, &snaps, &[], Some(&remote(&[1, 2])), &c, now, max_age);
        assert_eq!(
            (st.state, st.age, st.confirmed, st.confirmed_age),
            (State::Current, Some(now - 5000), Some(last_run), Some(3600))
        );
        // Without the record it is stale, as before; and a record older
        // than max_age does not help either.
        let none = BTreeMap::new();
        assert_eq!(evaluate(&ds, &snaps, &[], Some(&remote(&[1, 2])), &none, now, max_age).state, State::Stale);
        let later = last_run + max_age + 1;
        assert_eq!(evaluate(&ds, &snaps, &[], Some(&remote(&[1, 2])), &c, later, max_age).state, State::Stale);
        // A confirmation of a snapshot the box no longer has as its newest
        // counts for nothing: the box holds zoffsite-1 only (a rollback, a
        // lost receive), whose own age decides.
        let c1: BTreeMap<Snapshot, i64> = [(Snapshot::new("tank/a@zoffsite-2").unwrap(), now)].into_iter().collect();
        let st = evaluate(&ds, &snaps, &[], Some(&remote(&[1])), &c1, now, max_age);
        assert_eq!((st.state, st.confirmed), (State::Stale, Some(1000)));
        // Behind, confirmed recently: the next run sends it, not stale.
        let c2: BTreeMap<Snapshot, i64> =
            [(Snapshot::new("tank/a@zoffsite-1").unwrap(), now - 60)].into_iter().collect();
        assert_eq!(evaluate(&ds, &snaps, &[], Some(&remote(&[1])), &c2, now, max_age).state, State::Behind);
        assert_eq!(box_newest_on_source(&ds, &snaps, Some(&remote(&[1]))).unwrap().to_string(), "tank/a@zoffsite-1");
        assert_eq!(box_newest_on_source(&ds, &snaps, Some(&remote(&[99]))), None);
    }

    #[test]
    fn confirmations_are_read_strictly() {
        let rows: Vec<(String, String)> = [
            ("tank/a@zoffsite-1", "1795000000"),
            ("tank/b@zoffsite-1", "yesterday"),
            ("tank/c@zoffsite-1", "-5"),
            ("tank/d", "1795000000"),
            ("tank/../x@y", "1"),
        ]
        .iter()
        .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
        .collect();
        let c = parse_confirmations(&rows);
        assert_eq!(c.len(), 1, "{c:?}");
        assert_eq!(c[&Snapshot::new("tank/a@zoffsite-1").unwrap()], 1_795_000_000);
    }

    #[test]
    fn a_confirmation_is_recorded_again_only_once_status_would_see_it_an_eighth_of_max_age_old() {
        let day = std::time::Duration::from_secs(86400);
        let now = 1_800_000_000;
        assert!(!confirmation_due(now - 60, None, now, day), "just sent: its creation says as much");
        assert!(!confirmation_due(now + 90, None, now, day), "taken by this run, after it started");
        assert!(confirmation_due(now - 3 * 3600, None, now, day), "older than 3h, never confirmed");
        assert!(!confirmation_due(now - 30 * 86400, Some(now - 3600), now, day), "confirmed an hour ago");
        assert!(confirmation_due(now - 30 * 86400, Some(now - 3 * 3600), now, day));
        assert!(confirmation_due(now - 30 * 86400, Some(now + 86400), now, day), "a confirmation from the future");
        assert!(confirmation_due(now - 60, Some(now + 86400), now, day), "even on a snapshot just taken");
        // What status makes of it, either way: never later than recording
        // every run, and at most the refresh earlier.
        let (creation, last_run) = (now - 30 * 86400, now - 2 * 3600);
        let snap = snap("tank/a@zoffsite-1", 1, 1, creation);
        let judge = |stored: i64, at: i64| {
            let c = BTreeMap::from([(snap.snapshot.clone(), stored)]);
            evaluate(&snap.snapshot.dataset, std::slice::from_ref(&snap), &[], Some(&remote(&[1])), &c, at, 86400).state
        };
        assert!(!confirmation_due(creation, Some(last_run), now, day), "this run writes nothing");
        assert_eq!(judge(last_run, now + 86400 - 2 * 3600), State::Current);
        assert_eq!(judge(last_run, now + 86400 - 2 * 3600 + 1), State::Stale, "2h before recording every run would");
        // A confirmation dated ahead (a clock set back, a hand-made value)
        // keeps nothing current past max_age.
        assert_eq!(judge(now + 30 * 86400, now + 2 * 86400), State::Stale);
        assert_eq!(judge(now + 5 * 60, now), State::Current, "a few minutes ahead: a clock step");
    }

    #[test]
    fn confirmed_property_names_are_valid_zfs_user_properties() {
        assert_eq!(confirmed_property("friend"), "zoffsite:confirmed:friend");
        assert_eq!(confirmed_property("Friend_2-B"), "zoffsite:confirmed:.friend_2-.b");
    }

    proptest::proptest! {
        #[test]
        fn confirmed_property_names_are_distinct_per_target_and_valid(
            a in "[A-Za-z0-9_-]{1,64}", b in "[A-Za-z0-9_-]{1,64}",
        ) {
            let (pa, pb) = (confirmed_property(&a), confirmed_property(&b));
            // ZFS: lowercase letters, digits, ':', '-', '.', '_'; at most 256.
            proptest::prop_assert!(pa.len() < 256);
            proptest::prop_assert!(pa.bytes().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || b":-._".contains(&c)));
            proptest::prop_assert_eq!(a == b, pa == pb);
        }
    }
}
