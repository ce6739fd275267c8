//! How the source keeps each target's next incremental possible: a user
//! hold, tagged `zoffsite-TARGET`, on the newest snapshot that target is
//! known to hold (its "base"), so that neither retention nor the user can
//! destroy it by accident (the kernel refuses to destroy a held snapshot).
//!
//! This module owns the tag's format and the decisions around it; the
//! shell lists holds and places or releases them as told.
//!
//! Invariants:
//! - Only zoffsite's own snapshots (named [`SNAPSHOT_PREFIX`]`*`) that
//!   carried a hold when listed can carry a target's tag: zoffsite places
//!   it on nothing else, under the run lock ([`held_ours`]).
//! - After a target confirms new snapshots, each is held before any older
//!   base is released, and only that target's tag on the confirmed
//!   datasets is ever released ([`after_confirmation`]): the base is never
//!   unprotected, and no other target's base or user hold is touched.

use std::collections::BTreeSet;

use crate::names::{Dataset, Snapshot};
use crate::parse::{HoldRow, SnapshotRow};
use crate::plan::SNAPSHOT_PREFIX;

/// Prefix of the hold tag that marks a target's incremental base.
pub const HOLD_PREFIX: &str = "zoffsite-";

/// The hold tag of `target`'s incremental base.
pub fn tag(target: &str) -> String {
    format!("{HOLD_PREFIX}{target}")
}

/// The target whose base a hold with `tag` marks; `None` for any other
/// hold (the user's).
pub fn target_of(tag: &str) -> Option<&str> {
    tag.strip_prefix(HOLD_PREFIX)
}

/// Of `snaps`, zoffsite's own that carried a hold when listed (`held`):
/// the only snapshots whose holds need reading to find the targets' bases.
pub fn held_ours<'a>(snaps: impl IntoIterator<Item = &'a SnapshotRow>, held: &BTreeSet<Snapshot>) -> Vec<Snapshot> {
    snaps
        .into_iter()
        .filter(|s| s.snapshot.name.as_str().starts_with(SNAPSHOT_PREFIX) && held.contains(&s.snapshot))
        .map(|s| s.snapshot.clone())
        .collect()
}

/// The snapshot of `dataset` that `target` last confirmed (the one its tag
/// is on), among `holds`.
pub fn base<'a>(holds: &'a [HoldRow], target: &str, dataset: &Dataset) -> Option<&'a Snapshot> {
    let tag = tag(target);
    holds.iter().find(|h| h.tag == tag && h.snapshot.dataset == *dataset).map(|h| &h.snapshot)
}

/// One step of moving a target's holds, in the order given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Place the target's tag on these snapshots.
    Hold(Vec<Snapshot>),
    /// Release the target's tag from these snapshots.
    Release(Vec<Snapshot>),
}

/// What to hold and release once `target` confirmed holding `confirmed`
/// (its newest snapshot of each of those datasets), given the `holds`
/// currently on those datasets' snapshots: the tag moves onto every
/// confirmed snapshot first, then leaves the older bases of the same
/// datasets. Holds of other tags, and of other datasets, are left alone.
pub fn after_confirmation(target: &str, confirmed: &[Snapshot], holds: &[HoldRow]) -> Vec<Step> {
    let tag = tag(target);
    let keep: BTreeSet<&Snapshot> = confirmed.iter().collect();
    let datasets: BTreeSet<&Dataset> = confirmed.iter().map(|s| &s.dataset).collect();
    let tagged: BTreeSet<&Snapshot> =
        holds.iter().filter(|h| h.tag == tag && datasets.contains(&h.snapshot.dataset)).map(|h| &h.snapshot).collect();
    let to_hold: Vec<Snapshot> = keep.iter().filter(|s| !tagged.contains(*s)).map(|s| (*s).clone()).collect();
    let to_release: Vec<Snapshot> = tagged.into_iter().filter(|s| !keep.contains(s)).cloned().collect();
    let mut steps = Vec::new();
    if !to_hold.is_empty() {
        steps.push(Step::Hold(to_hold));
    }
    if !to_release.is_empty() {
        steps.push(Step::Release(to_release));
    }
    steps
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::names::Guid;
    use proptest::prelude::*;

    fn snap(s: &str) -> Snapshot {
        Snapshot::new(s).unwrap()
    }

    fn hold(s: &str, tag: &str) -> HoldRow {
        HoldRow { snapshot: snap(s), tag: tag.into() }
    }

    fn row(s: &str) -> SnapshotRow {
        SnapshotRow { snapshot: snap(s), guid: Guid::new(1).unwrap(), createtxg: 1, creation: 1 }
    }

    #[test]
    fn the_tag_is_the_prefix_and_the_target() {
        assert_eq!(tag("friend"), "zoffsite-friend");
        assert_eq!(target_of(&tag("friend")), Some("friend"));
        assert_eq!(target_of("keep"), None);
    }

    #[test]
    fn only_our_held_snapshots_can_be_bases() {
        let snaps = [row("tank/a@zoffsite-1"), row("tank/a@zoffsite-2"), row("tank/a@manual")];
        let held: BTreeSet<Snapshot> = [snap("tank/a@zoffsite-2"), snap("tank/a@manual")].into();
        assert_eq!(held_ours(&snaps, &held), [snap("tank/a@zoffsite-2")]);
        assert!(held_ours(&snaps, &BTreeSet::new()).is_empty());
    }

    #[test]
    fn a_targets_base_is_where_its_tag_is() {
        let holds = [hold("tank/a@zoffsite-1", "zoffsite-other"), hold("tank/a@zoffsite-2", "zoffsite-friend")];
        let a = Dataset::new("tank/a").unwrap();
        assert_eq!(base(&holds, "friend", &a), Some(&snap("tank/a@zoffsite-2")));
        assert_eq!(base(&holds, "other", &a), Some(&snap("tank/a@zoffsite-1")));
        assert_eq!(base(&holds, "third", &a), None);
        assert_eq!(base(&holds, "friend", &Dataset::new("tank/b").unwrap()), None);
    }

    #[test]
    fn the_tag_moves_to_the_new_base_first() {
        let holds = [
            hold("tank/a@zoffsite-1", "zoffsite-friend"),
            hold("tank/a@zoffsite-1", "zoffsite-other"),
            hold("tank/a@zoffsite-1", "keep"),
            hold("tank/b@zoffsite-1", "zoffsite-friend"),
        ];
        let steps = after_confirmation("friend", &[snap("tank/a@zoffsite-2")], &holds);
        assert_eq!(
            steps,
            [Step::Hold(vec![snap("tank/a@zoffsite-2")]), Step::Release(vec![snap("tank/a@zoffsite-1")])],
            "tank/b was not confirmed: its base stays; other tags stay"
        );
        // Confirmed again: nothing to do.
        assert!(after_confirmation("friend", &[snap("tank/a@zoffsite-1")], &holds).is_empty());
        assert!(after_confirmation("friend", &[], &holds).is_empty());
    }

    /// Snapshots `tank/{a,b,c}@zoffsite-{0..4}`.
    fn any_snap() -> impl Strategy<Value = Snapshot> {
        (0..3usize, 0..5u8).prop_map(|(d, n)| snap(&format!("tank/{}@zoffsite-{n}", ["a", "b", "c"][d])))
    }

    proptest! {
        #[test]
        fn bases_are_held_before_anything_is_released(
            confirmed in prop::collection::vec(any_snap(), 0..4),
            holds in prop::collection::vec((any_snap(), prop::sample::select(vec!["zoffsite-friend", "zoffsite-other", "keep"])), 0..12),
        ) {
            let holds: Vec<HoldRow> = holds.into_iter().map(|(s, t)| HoldRow { snapshot: s, tag: t.into() }).collect();
            let datasets: BTreeSet<&Dataset> = confirmed.iter().map(|s| &s.dataset).collect();
            // The holds as the kernel keeps them, as the steps are applied.
            let mut state: BTreeSet<(Snapshot, String)> = holds.iter().map(|h| (h.snapshot.clone(), h.tag.clone())).collect();
            let before = state.clone();
            let tag = tag("friend");
            for step in after_confirmation("friend", &confirmed, &holds) {
                match step {
                    Step::Hold(s) => {
                        prop_assert!(!s.is_empty());
                        for x in s {
                            prop_assert!(state.insert((x, tag.clone())), "held twice");
                        }
                    }
                    Step::Release(s) => {
                        prop_assert!(!s.is_empty());
                        for c in &confirmed {
                            prop_assert!(state.contains(&(c.clone(), tag.clone())), "{c} not held before a release");
                        }
                        for x in s {
                            prop_assert!(datasets.contains(&x.dataset), "{x} is outside the confirmed datasets");
                            prop_assert!(!confirmed.contains(&x), "{x} was just confirmed");
                            prop_assert!(state.remove(&(x, tag.clone())), "released a hold it did not have");
                        }
                    }
                }
            }
            // After: exactly the confirmed snapshots carry the tag on their
            // datasets; every other hold is as it was.
            for (s, t) in &state {
                if *t == tag && datasets.contains(&s.dataset) {
                    prop_assert!(confirmed.contains(s));
                }
            }
            for c in &confirmed {
                prop_assert!(state.contains(&(c.clone(), tag.clone())));
            }
            for (s, t) in &before {
                if *t != tag || !datasets.contains(&s.dataset) {
                    prop_assert!(state.contains(&(s.clone(), t.clone())));
                }
            }
        }
    }
}
