//! Source retention of zoffsite's own snapshots, carried out: lists the
//! snapshots (or takes the caller's listing), reads the targets' bases,
//! has core decide ([`plan::prune_source`]) and destroys what it decided,
//! one `zfs destroy` per dataset. `zoffsite prune` runs it, and `backup`
//! after it sends.
//!
//! Invariants (the decisions are core's, stated there): only snapshots
//! named `zoffsite-*` are candidates; a dataset's newest snapshot and every
//! held snapshot (each target's base carries its tag, [`holds`]) are kept;
//! when the holds cannot be read, nothing is pruned.

use std::collections::{BTreeMap, BTreeSet};

use zoffsite_core::holds;
use zoffsite_core::names::{Dataset, SnapName, Snapshot};
use zoffsite_core::parse::SnapshotRow;
use zoffsite_core::plan::{self, PruneDecision};
use zoffsite_core::report::Severity;
use zoffsite_core::retention::KeepPolicy;

use crate::events::Events;
use crate::zfs::Zfs;

/// What a prune applies, and when.
#[derive(Debug, Clone, Copy)]
pub struct Prune<'a> {
    pub policy: &'a KeepPolicy,
    /// The time retention measures from (the source's clock is trusted).
    pub now: jiff::Timestamp,
    /// Decide and say, destroy nothing.
    pub dry_run: bool,
}

/// Plans and (unless a dry run) applies retention to `datasets`. Every
/// failure is reported through `events`, with its severity.
pub fn prune(zfs: &Zfs, datasets: &[Dataset], p: &Prune<'_>, events: &mut dyn Events) -> Vec<PruneDecision> {
    match zfs.list_snapshots(datasets) {
        Ok(l) => prune_listed(zfs, &l.snapshots, &l.held, p, events),
        Err(e) => {
            events.error(Severity::Error, &format!("prune: cannot list snapshots: {e}"));
            Vec::new()
        }
    }
}

/// [`prune`] over snapshots the caller has just listed (`backup`, after
/// its snapshot). The holds are read here, of the snapshots in `held`
/// only: those that carried a hold when listed, and any the caller has
/// held since. A hold placed by someone else after the listing is missed
/// here but still stops the destroy: the kernel refuses to destroy a held
/// snapshot, so a stale view costs an error, never a base.
pub fn prune_listed(
    zfs: &Zfs,
    snaps: &[SnapshotRow],
    held: &BTreeSet<Snapshot>,
    p: &Prune<'_>,
    events: &mut dyn Events,
) -> Vec<PruneDecision> {
    let holds = match zfs.holds(&holds::held_ours(snaps, held)) {
        Ok(h) => h,
        Err(e) => {
            // Without the holds the bases are unknown: prune nothing.
            events.error(Severity::Error, &format!("prune: cannot list holds, so nothing is pruned: {e}"));
            return Vec::new();
        }
    };
    let decisions = match plan::prune_source(p.policy, snaps, &holds, p.now) {
        Ok(d) => d,
        Err(e) => {
            events.error(Severity::Usage, &format!("source.keep: {e}"));
            return Vec::new();
        }
    };
    let mut doomed: BTreeMap<&Dataset, Vec<SnapName>> = BTreeMap::new();
    for d in &decisions {
        if p.dry_run || d.destroy {
            events.line(&format!("{}{}: {}", if p.dry_run { "would " } else { "" }, d.snapshot, d.verdict));
        }
        if d.destroy {
            doomed.entry(&d.snapshot.dataset).or_default().push(d.snapshot.name.clone());
        }
    }
    if !p.dry_run {
        for (ds, names) in doomed {
            if let Err(e) = zfs.destroy_own_snapshots(ds, &names) {
                events.error(Severity::Partial, &format!("prune: {e}"));
            }
        }
    }
    decisions
}

#[cfg(test)]
mod tests {
    //! Which snapshots `zfs holds` is asked about and what is destroyed,
    //! against the fake `zfs` of `zoffsite_testkit` (the real holds are
    //! tested in the VM, e2e).
    use super::*;
    use crate::events::Recorded;
    use zoffsite_testkit::fake::world::FaultAction;
    use zoffsite_testkit::FakeZfs;

    fn row(name: &str, guid: u64, txg: u64) -> SnapshotRow {
        SnapshotRow {
            snapshot: Snapshot::new(name).unwrap(),
            guid: zoffsite_core::names::Guid::new(guid).unwrap(),
            createtxg: txg,
            creation: 1_795_000_000 + i64::try_from(txg).unwrap() * 3600,
        }
    }

    /// A source with tank/a@zoffsite-1..4, `zoffsite-friend` holding
    /// tank/a@zoffsite-2.
    fn fake() -> (FakeZfs, Zfs) {
        let f = FakeZfs::new();
        f.create("tank/a", true);
        for i in 1..=4 {
            f.snapshot(&format!("tank/a@zoffsite-{i}"));
        }
        assert!(f.run(&["hold", "zoffsite-friend", "tank/a@zoffsite-2"]).status.success());
        f.clear_log();
        let zfs = Zfs::with_binary(f.path());
        (f, zfs)
    }

    fn last_one(policy: &KeepPolicy, dry_run: bool) -> Prune<'_> {
        Prune { policy, now: jiff::Timestamp::from_second(1_795_100_000).unwrap(), dry_run }
    }

    #[test]
    fn only_held_snapshots_are_asked_about_and_a_held_base_is_kept() {
        let (f, zfs) = fake();
        let snaps: Vec<SnapshotRow> = (1..=4).map(|i| row(&format!("tank/a@zoffsite-{i}"), 100 + i, i)).collect();
        let held: BTreeSet<Snapshot> = [Snapshot::new("tank/a@zoffsite-2").unwrap()].into();
        let policy = KeepPolicy { last: 1, ..KeepPolicy::default() };
        let mut ev = Recorded::default();
        let decisions = prune_listed(&zfs, &snaps, &held, &last_one(&policy, false), &mut ev);
        assert_eq!(ev.worst, Severity::Ok, "{:?}", ev.errors);
        let log = f.log();
        let lines: Vec<&str> = log.lines().collect();
        assert_eq!(lines[0], "holds -H -p tank/a@zoffsite-2", "{log}");
        // The held base and the newest stay; the others go, in one destroy.
        let destroyed: Vec<String> = decisions.iter().filter(|d| d.destroy).map(|d| d.snapshot.to_string()).collect();
        assert_eq!(destroyed, ["tank/a@zoffsite-1", "tank/a@zoffsite-3"]);
        assert_eq!(lines[1], "destroy tank/a@zoffsite-1,zoffsite-3", "{log}");
        assert_eq!(lines.len(), 2, "{log}");
        assert_eq!(ev.lines, ["tank/a@zoffsite-1: destroy", "tank/a@zoffsite-3: destroy"]);
        assert_eq!(f.snapshot_names("tank/a"), ["zoffsite-2", "zoffsite-4"]);
    }

    #[test]
    fn nothing_held_means_no_holds_lookup_at_all() {
        let (f, zfs) = fake();
        let snaps = vec![row("tank/a@zoffsite-1", 7, 1)];
        let policy = KeepPolicy { last: 1, ..KeepPolicy::default() };
        let mut ev = Recorded::default();
        prune_listed(&zfs, &snaps, &BTreeSet::new(), &last_one(&policy, true), &mut ev);
        assert_eq!(ev.worst, Severity::Ok);
        assert_eq!(f.log(), "", "zfs was run");
        assert_eq!(ev.lines.len(), 1, "a dry run says every decision: {:?}", ev.lines);
        assert!(ev.lines[0].starts_with("would tank/a@zoffsite-1: keep"), "{:?}", ev.lines);
    }

    #[test]
    fn failures_are_reported_with_their_severity_and_nothing_is_destroyed() {
        let (f, zfs) = fake();
        for command in ["list", "holds", "destroy"] {
            f.fault(command, None, 0, FaultAction::Fail { code: 1, stderr: format!("cannot do {command}\n") });
        }
        let policy = KeepPolicy { last: 1, ..KeepPolicy::default() };
        let snaps: Vec<SnapshotRow> = (1..=2).map(|i| row(&format!("tank/a@zoffsite-{i}"), 100 + i, i)).collect();
        // No listing: an error.
        let mut ev = Recorded::default();
        let d = prune(&zfs, &[Dataset::new("tank/a").unwrap()], &last_one(&policy, false), &mut ev);
        assert!(d.is_empty());
        assert_eq!(ev.worst, Severity::Error);
        assert!(ev.errors[0].1.starts_with("prune: cannot list snapshots: "), "{:?}", ev.errors);
        // No holds: nothing pruned.
        let held: BTreeSet<Snapshot> = [snaps[0].snapshot.clone()].into();
        let mut ev = Recorded::default();
        assert!(prune_listed(&zfs, &snaps, &held, &last_one(&policy, false), &mut ev).is_empty());
        assert!(ev.errors[0].1.starts_with("prune: cannot list holds, so nothing is pruned: "), "{:?}", ev.errors);
        // A failed destroy: partial, the decisions still returned.
        let mut ev = Recorded::default();
        let d = prune_listed(&zfs, &snaps, &BTreeSet::new(), &last_one(&policy, false), &mut ev);
        assert_eq!(d.iter().filter(|d| d.destroy).count(), 1);
        assert_eq!(ev.worst, Severity::Partial);
        assert!(ev.errors[0].1.starts_with("prune: "), "{:?}", ev.errors);
    }
}
