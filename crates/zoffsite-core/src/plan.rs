//! Planning: what to snapshot and what to send, as pure functions.
//!
//! The shell lists datasets and snapshots (scoped to the selection, only the
//! columns needed), asks the box what it holds, and passes both here. The
//! functions decide; they never run anything. Two rules matter most:
//!
//! - A dataset whose `encryption` is `off` is never sent: `zfs send -w` of an
//!   unencrypted dataset is plaintext. It is refused by name, and the rest
//!   of the selection goes on.
//! - The incremental base is found by GUID: the box's newest snapshot must be
//!   a snapshot the source still has (same GUID). Anything else is a
//!   divergence, reported, never forced: nothing here can produce `-F`.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::Serialize;

use crate::config::Source;
use crate::holds;
use crate::names::{Dataset, Guid, SnapName, Snapshot};
use crate::parse::{BookmarkRow, DatasetRow, HoldRow, SnapshotRow, BACKUP_PROPERTY};
use crate::protocol::RemoteDataset;
use crate::retention::{self, KeepPolicy, PolicyError};

/// Prefix of every snapshot zoffsite makes (and the only ones it will ever
/// prune, later).
pub const SNAPSHOT_PREFIX: &str = "zoffsite-";

/// Why a listed dataset is not backed up.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "reason")]
pub enum Skip {
    /// Matched `source.exclude` (itself or an ancestor).
    Excluded { by: Dataset },
    /// `zoffsite:backup=off`, set on `set_on` (itself or an ancestor).
    PropertyOff { set_on: Dataset },
    /// `zoffsite:backup` has a value that is neither `on` nor `off`: the
    /// user's intent is unknown, so the dataset is neither sent nor
    /// silently ignored.
    BadProperty { value: String, set_on: Dataset },
    /// Not encrypted: never sent.
    Unencrypted,
}

impl fmt::Display for Skip {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Skip::Excluded { by } => write!(f, "excluded by source.exclude {by}"),
            Skip::PropertyOff { set_on } => write!(f, "{BACKUP_PROPERTY}=off (set on {set_on})"),
            Skip::BadProperty { value, set_on } => write!(
                f,
                "{BACKUP_PROPERTY}={value:?} (set on {set_on}) is neither on nor off; fix it with `zfs set {BACKUP_PROPERTY}=on|off {set_on}` or `zfs inherit {BACKUP_PROPERTY} {set_on}`"
            ),
            Skip::Unencrypted => write!(f, "not encrypted (encryption=off): never sent"),
        }
    }
}

/// Why a listed dataset is backed up.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "reason")]
pub enum Include {
    /// Under `source.datasets` entry `root`.
    Selected { root: Dataset },
    /// `zoffsite:backup=on` (set on `set_on`), which wins over
    /// `source.exclude` entry `over`, if any.
    PropertyOn { set_on: Dataset, over: Option<Dataset> },
}

impl fmt::Display for Include {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Include::Selected { root } => write!(f, "selected by source.datasets {root}"),
            Include::PropertyOn { set_on, over: Some(by) } => {
                write!(f, "{BACKUP_PROPERTY}=on (set on {set_on}) wins over source.exclude {by}")
            }
            Include::PropertyOn { set_on, over: None } => write!(f, "{BACKUP_PROPERTY}=on (set on {set_on})"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Included {
    pub row: DatasetRow,
    pub why: Include,
}

/// The outcome of applying the config and the property to the listed
/// datasets.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Selection {
    /// Encrypted datasets to back up, parents before children.
    pub included: Vec<Included>,
    /// Excluded or refused, in name order.
    pub skipped: Vec<(Dataset, Skip)>,
}

impl Selection {
    pub fn datasets(&self) -> Vec<Dataset> {
        self.included.iter().map(|i| i.row.dataset.clone()).collect()
    }
}

/// Applies `source.datasets` / `source.exclude` and the `zoffsite:backup`
/// property to what `zfs list -r` found under the configured roots. The
/// property wins over the config: `off` leaves a subtree out, `on` brings a
/// subtree back even inside an excluded one. Encryption is checked last, so
/// an unencrypted dataset is refused by name whatever selected it.
pub fn select(source: &Source, listed: &[DatasetRow]) -> Selection {
    let mut rows: BTreeMap<&Dataset, &DatasetRow> = BTreeMap::new();
    for r in listed {
        if source.datasets.iter().any(|root| r.dataset.is_within(root)) {
            rows.insert(&r.dataset, r);
        }
    }
    // Where a dataset's property value comes from: the outermost listed
    // ancestor in an unbroken run of the same value (ZFS inheritance).
    let set_on = |ds: &Dataset, value: &str| -> Dataset {
        let mut at = ds.clone();
        while let Some(p) = at.parent() {
            match rows.get(&p) {
                Some(r) if r.backup.as_deref() == Some(value) => at = p,
                _ => break,
            }
        }
        at
    };
    let mut sel = Selection::default();
    // BTreeMap order is name order, which puts every parent before its
    // children (a name sorts before any name it is a prefix of).
    for (ds, row) in &rows {
        let excluded_by = source.exclude.iter().filter(|e| ds.is_within(e)).max_by_key(|e| e.depth());
        let why = match row.backup.as_deref() {
            Some("off") => Err(Skip::PropertyOff { set_on: set_on(ds, "off") }),
            Some("on") => Ok(Include::PropertyOn { set_on: set_on(ds, "on"), over: excluded_by.cloned() }),
            Some(v) => Err(Skip::BadProperty { value: v.to_owned(), set_on: set_on(ds, v) }),
            None => match excluded_by {
                Some(by) => Err(Skip::Excluded { by: by.clone() }),
                None => Ok(Include::Selected {
                    root: source
                        .datasets
                        .iter()
                        .filter(|r| ds.is_within(r))
                        .max_by_key(|r| r.depth())
                        .cloned()
                        .expect("listed under a root"),
                }),
            },
        };
        match why {
            Ok(_) if !row.encryption.is_on() => sel.skipped.push(((*ds).clone(), Skip::Unencrypted)),
            Ok(why) => sel.included.push(Included { row: (*row).clone(), why }),
            Err(skip) => sel.skipped.push(((*ds).clone(), skip)),
        }
    }
    sel
}

/// `zoffsite-YYYYMMDDTHHMMSSZ` for `now`, moved on by whole seconds past any
/// name `taken` already holds (two runs in one second must not collide).
pub fn snapshot_name(now: jiff::Timestamp, taken: impl Fn(&SnapName) -> bool) -> SnapName {
    let mut t = now;
    loop {
        let name = SnapName::new(format!("{SNAPSHOT_PREFIX}{}", t.strftime("%Y%m%dT%H%M%SZ")))
            .expect("timestamp names are valid");
        if !taken(&name) {
            return name;
        }
        t = t.checked_add(jiff::SignedDuration::from_secs(1)).expect("time in range");
    }
}

/// How old a dataset's newest zoffsite snapshot may get before a run
/// takes a new one although nothing changed. A box learns that the source
/// is alive from its heartbeats, but takes them as an excuse for no new
/// data only for a bounded time (`heartbeat_grace`,
/// [`crate::boxside`]: by default 9 days without new data): a snapshot of
/// an unchanged dataset is a few hundred bytes of stream, and with one at
/// least every 6 days plus a day between runs an honest source stays well
/// inside that bound.
pub const REFRESH_AFTER: std::time::Duration = std::time::Duration::from_secs(6 * 86400);

/// The dataset's newest snapshot, if it is one of ours, nothing was
/// written since (`written` counts from the newest snapshot of any kind, so
/// a newer snapshot of the user's hides whether anything changed since
/// ours: that counts as changed), and it is younger than
/// [`REFRESH_AFTER`] at `now` (Unix seconds, the source's clock).
pub fn unchanged_since_ours<'a>(row: &DatasetRow, snaps: &'a [SnapshotRow], now: i64) -> Option<&'a SnapshotRow> {
    let newest = snaps.iter().filter(|s| s.snapshot.dataset == row.dataset).max_by_key(|s| s.createtxg)?;
    let refresh = i64::try_from(REFRESH_AFTER.as_secs()).unwrap_or(i64::MAX);
    let fresh = now.saturating_sub(newest.creation) < refresh;
    (row.written == 0 && fresh && newest.snapshot.name.as_str().starts_with(SNAPSHOT_PREFIX)).then_some(newest)
}

/// Groups the new snapshots by pool: `zfs snapshot` of several names in one
/// pool is atomic, so each group is one consistent point in time.
pub fn snapshot_groups(datasets: &[Dataset], name: &SnapName) -> Vec<Vec<Snapshot>> {
    let mut by_pool: BTreeMap<&str, Vec<Snapshot>> = BTreeMap::new();
    for d in datasets {
        // A selected name plus a timestamp can exceed 255 bytes only for
        // names within 25 bytes of the limit; those are skipped by the
        // caller's length check, never truncated.
        if let Ok(s) = d.snapshot(name) {
            by_pool.entry(d.pool()).or_default().push(s);
        }
    }
    by_pool.into_values().collect()
}

/// What to send for one dataset to one target.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Send {
    /// The box has nothing of this dataset.
    Full { to: SnapshotRef },
    /// From the box's newest snapshot, which the source also has (as a
    /// snapshot, or only as a bookmark). `intermediates` counts the source
    /// snapshots between the two, which go along in one `-I` stream; from a
    /// bookmark they cannot (`-I` needs a snapshot) and are skipped.
    Incremental { from: SnapshotRef, to: SnapshotRef, base: BaseKind, intermediates: u32 },
    /// The box already holds the snapshot.
    UpToDate { at: SnapshotRef },
}

impl Send {
    pub fn target(&self) -> &SnapshotRef {
        match self {
            Send::Full { to } | Send::Incremental { to, .. } => to,
            Send::UpToDate { at } => at,
        }
    }
}

/// What the incremental base is on the source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BaseKind {
    Snapshot,
    /// The snapshot is gone; its bookmark (same GUID) still anchors the chain.
    Bookmark,
}

/// A snapshot with its GUID: the GUID is the identity, the name is for
/// people.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SnapshotRef {
    pub name: SnapName,
    pub guid: Guid,
}

impl fmt::Display for SnapshotRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "@{} (guid {})", self.name, self.guid)
    }
}

/// Why a dataset cannot be sent to a target as things stand.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Blocked {
    #[error("the box's newest snapshot @{box_newest} (guid {guid}) is unknown to the source: the histories diverged. Nothing was forced. Find out why the box has it (e.g. a snapshot made on the box, or the source dataset was recreated); to start this dataset over, back it up under a new name or have the box's owner move the old copy aside")]
    Diverged { box_newest: SnapName, guid: Guid },
    #[error("the box holds the dataset but no snapshot of it (a placeholder, or a first transfer that did not finish); a full send would need to overwrite it, which zoffsite never does. On the box, check it and, if it holds nothing of value, destroy it so the next run sends it in full")]
    NoCommonSnapshot,
    #[error("the box holds partial state from an interrupted transfer; this version cannot resume it yet. On the box run `zfs receive -A {box_dataset}` to discard it; the next run sends again")]
    PartialReceive { box_dataset: String },
    #[error("a selected parent, {0}, failed in this run, so it is left for the next run")]
    ParentFailed(Dataset),
}

/// Decides the send for `dataset` given its new snapshot, all its snapshots
/// and bookmarks on the source, and what the box reported.
pub fn plan_send(
    new: &SnapshotRow,
    source_snaps: &[SnapshotRow],
    source_bookmarks: &[BookmarkRow],
    remote: Option<&RemoteDataset>,
    box_dataset: &Dataset,
) -> Result<Send, Blocked> {
    let to = SnapshotRef { name: new.snapshot.name.clone(), guid: new.guid };
    let Some(remote) = remote.filter(|r| r.exists) else {
        return Ok(Send::Full { to });
    };
    if remote.resume_token.is_some() {
        return Err(Blocked::PartialReceive { box_dataset: box_dataset.to_string() });
    }
    // The box's own createtxg orders its snapshots; GUIDs identify them.
    let Some(newest) = remote.snapshots.iter().max_by_key(|s| s.createtxg) else {
        return Err(Blocked::NoCommonSnapshot);
    };
    if newest.guid == new.guid {
        return Ok(Send::UpToDate { at: to });
    }
    if let Some(base) = source_snaps.iter().find(|s| s.guid == newest.guid && s.createtxg < new.createtxg) {
        let between = source_snaps.iter().filter(|s| s.createtxg > base.createtxg && s.createtxg < new.createtxg);
        return Ok(Send::Incremental {
            from: SnapshotRef { name: base.snapshot.name.clone(), guid: base.guid },
            to,
            base: BaseKind::Snapshot,
            intermediates: u32::try_from(between.count()).unwrap_or(u32::MAX),
        });
    }
    if let Some(bm) = source_bookmarks.iter().find(|b| b.guid == newest.guid && b.createtxg < new.createtxg) {
        return Ok(Send::Incremental {
            from: SnapshotRef { name: bm.bookmark.name.clone(), guid: bm.guid },
            to,
            base: BaseKind::Bookmark,
            intermediates: 0,
        });
    }
    Err(Blocked::Diverged { box_newest: newest.name.clone(), guid: newest.guid })
}

/// One snapshot's fate in a source prune.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PruneDecision {
    /// Serialized as its full name, `dataset@name`.
    pub snapshot: Snapshot,
    /// Unix seconds (source clock).
    pub creation: i64,
    pub destroy: bool,
    /// `keep (last 1 of 24, daily 2026-11-25)` or `destroy`.
    pub verdict: String,
}

/// Source retention: decides, per dataset, which of zoffsite's own
/// snapshots (and only those) to destroy. Never destroys a dataset's newest
/// snapshot or a held one: a hold with a `zoffsite-TARGET` tag marks that
/// target's next incremental base, and any other hold is the user's.
pub fn prune_source(
    policy: &KeepPolicy,
    snaps: &[SnapshotRow],
    holds: &[HoldRow],
    now: jiff::Timestamp,
) -> Result<Vec<PruneDecision>, PolicyError> {
    // Grouped once, looked up by name: linear in snapshots and holds (a
    // hold is often on every dataset; scanning every hold for every
    // dataset was quadratic).
    let mut by_ds: BTreeMap<&Dataset, BTreeMap<&Snapshot, &SnapshotRow>> = BTreeMap::new();
    let mut ours = 0;
    for s in snaps.iter().filter(|s| s.snapshot.name.as_str().starts_with(SNAPSHOT_PREFIX)) {
        by_ds.entry(&s.snapshot.dataset).or_default().insert(&s.snapshot, s);
        ours += 1;
    }
    let mut holds_by_ds: BTreeMap<&Dataset, Vec<&HoldRow>> = BTreeMap::new();
    for h in holds {
        holds_by_ds.entry(&h.snapshot.dataset).or_default().push(h);
    }
    let mut out = Vec::with_capacity(ours);
    for (ds, list) in by_ds {
        let items: Vec<retention::Item<&Snapshot>> = list
            .values()
            .map(|s| retention::Item {
                key: &s.snapshot,
                time: jiff::Timestamp::from_second(s.creation).unwrap_or(jiff::Timestamp::MAX),
            })
            .collect();
        let mut protected: Vec<(&Snapshot, String)> = Vec::new();
        if let Some(newest) = list.values().max_by_key(|s| s.createtxg) {
            protected.push((&newest.snapshot, "newest snapshot".into()));
        }
        for h in holds_by_ds.get(ds).into_iter().flatten() {
            if let Some(s) = list.get(&h.snapshot) {
                let why = match holds::target_of(&h.tag) {
                    Some(t) => format!("incremental base for target {t}"),
                    None => format!("held by {:?}", h.tag),
                };
                protected.push((&s.snapshot, why));
            }
        }
        for d in retention::plan(policy, &items, &protected, now, None)? {
            let creation = list.get(d.key).map_or(0, |s| s.creation);
            out.push(PruneDecision {
                snapshot: d.key.clone(),
                creation,
                destroy: !d.is_kept(),
                verdict: d.verdict.to_string(),
            });
        }
    }
    Ok(out)
}

/// The nearest selected ancestor of `ds` that failed in this run, if any:
/// sending a child then would make the box create a placeholder where the
/// parent's full stream must later land.
pub fn failed_ancestor<'a>(ds: &Dataset, failed: &'a BTreeSet<Dataset>) -> Option<&'a Dataset> {
    failed.iter().filter(|f| *f != ds && ds.is_within(f)).max_by_key(|f| f.depth())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse::Encryption;
    use crate::protocol::RemoteSnapshot;

    fn ds(s: &str) -> Dataset {
        Dataset::new(s).unwrap()
    }

    fn row(name: &str, enc: bool) -> DatasetRow {
        DatasetRow {
            dataset: ds(name),
            guid: Guid::new(1).unwrap(),
            encryption: if enc { Encryption::On("aes-256-gcm".into()) } else { Encryption::Off },
            written: 0,
            backup: None,
        }
    }

    fn prop(mut r: DatasetRow, v: &str) -> DatasetRow {
        r.backup = Some(v.into());
        r
    }

    fn snap(name: &str, guid: u64, txg: u64) -> SnapshotRow {
        SnapshotRow {
            snapshot: Snapshot::new(name).unwrap(),
            guid: Guid::new(guid).unwrap(),
            createtxg: txg,
            creation: i64::try_from(txg).unwrap(),
        }
    }

    fn remote(snaps: &[(&str, u64, u64)]) -> RemoteDataset {
        RemoteDataset {
            name: ds("tank/data"),
            exists: true,
            resume_token: None,
            snapshots: snaps
                .iter()
                .map(|(n, g, t)| RemoteSnapshot {
                    name: SnapName::new(*n).unwrap(),
                    guid: Guid::new(*g).unwrap(),
                    createtxg: *t,
                })
                .collect(),
        }
    }

    #[test]
    fn selection_excludes_subtrees_and_refuses_plaintext() {
        let source = Source { datasets: vec![ds("tank/data")], exclude: vec![ds("tank/data/games")], keep: None };
        let listed = [
            row("tank/data/games/steam", true),
            row("tank/data", true),
            row("tank/data/docs", true),
            row("tank/data/games", true),
            row("tank/data/plain", false),
            row("tank/data/gamesave", true),
            row("tank/other", true),
        ];
        let sel = select(&source, &listed);
        let names: Vec<_> = sel.included.iter().map(|r| r.row.dataset.as_str()).collect();
        assert_eq!(names, ["tank/data", "tank/data/docs", "tank/data/gamesave"]);
        assert_eq!(
            sel.skipped,
            vec![
                (ds("tank/data/games"), Skip::Excluded { by: ds("tank/data/games") }),
                (ds("tank/data/games/steam"), Skip::Excluded { by: ds("tank/data/games") }),
                (ds("tank/data/plain"), Skip::Unencrypted),
            ]
        );
        assert_eq!(sel.included[1].why, Include::Selected { root: ds("tank/data") });
    }

    #[test]
    fn the_property_wins_over_the_config_and_says_where_it_is_set() {
        let source = Source { datasets: vec![ds("tank/data")], exclude: vec![ds("tank/data/games")], keep: None };
        let listed = [
            row("tank/data", true),
            prop(row("tank/data/vm", true), "off"),
            prop(row("tank/data/vm/disk", true), "off"),
            row("tank/data/games", true),
            prop(row("tank/data/games/saves", true), "on"),
            prop(row("tank/data/games/saves/old", true), "on"),
            prop(row("tank/data/odd", true), "yes please"),
            prop(row("tank/data/plainsaves", false), "on"),
        ];
        let sel = select(&source, &listed);
        let inc: Vec<(String, String)> =
            sel.included.iter().map(|i| (i.row.dataset.to_string(), i.why.to_string())).collect();
        assert_eq!(
            inc,
            [
                ("tank/data".into(), "selected by source.datasets tank/data".into()),
                (
                    "tank/data/games/saves".into(),
                    "zoffsite:backup=on (set on tank/data/games/saves) wins over source.exclude tank/data/games".into()
                ),
                (
                    "tank/data/games/saves/old".into(),
                    "zoffsite:backup=on (set on tank/data/games/saves) wins over source.exclude tank/data/games".into()
                ),
            ]
        );
        let skipped: BTreeMap<String, Skip> = sel.skipped.into_iter().map(|(d, s)| (d.to_string(), s)).collect();
        assert_eq!(skipped["tank/data/vm/disk"], Skip::PropertyOff { set_on: ds("tank/data/vm") });
        assert_eq!(skipped["tank/data/games"], Skip::Excluded { by: ds("tank/data/games") });
        assert!(matches!(&skipped["tank/data/odd"], Skip::BadProperty { value, .. } if value == "yes please"));
        assert!(skipped["tank/data/odd"].to_string().contains("zfs inherit zoffsite:backup tank/data/odd"));
        // Whatever selects it, an unencrypted dataset is refused.
        assert_eq!(skipped["tank/data/plainsaves"], Skip::Unencrypted);
    }

    #[test]
    fn parents_come_before_children_even_with_spaces() {
        let source = Source { datasets: vec![ds("tank")], exclude: vec![], keep: None };
        let listed = [row("tank/a/b", true), row("tank/a b", true), row("tank/a", true), row("tank", true)];
        let names: Vec<_> = select(&source, &listed).datasets().iter().map(std::string::ToString::to_string).collect();
        assert_eq!(names, ["tank", "tank/a", "tank/a b", "tank/a/b"]);
    }

    #[test]
    fn snapshot_names_are_utc_and_never_collide() {
        let now: jiff::Timestamp = "2026-11-26T07:30:00Z".parse().unwrap();
        assert_eq!(snapshot_name(now, |_| false).as_str(), "zoffsite-20261126T073000Z");
        let taken = |n: &SnapName| n.as_str() <= "zoffsite-20261126T073001Z";
        assert_eq!(snapshot_name(now, taken).as_str(), "zoffsite-20261126T073002Z");
    }

    #[test]
    fn unchanged_means_nothing_written_since_our_newest_snapshot() {
        let mut r = row("tank/a", true);
        let ours = [snap("tank/a@zoffsite-1", 1, 10), snap("tank/a@zoffsite-2", 2, 20)];
        let now = ours[1].creation + 3600;
        assert_eq!(unchanged_since_ours(&r, &ours, now).map(|s| s.guid.get()), Some(2));
        assert_eq!(unchanged_since_ours(&r, &[], now), None, "never snapshotted");
        let users_newer = [snap("tank/a@zoffsite-1", 1, 10), snap("tank/a@manual", 3, 30)];
        assert_eq!(unchanged_since_ours(&r, &users_newer, now), None);
        r.written = 4096;
        assert_eq!(unchanged_since_ours(&r, &ours, now), None);
    }

    #[test]
    fn an_unchanged_dataset_is_snapshotted_again_once_its_newest_is_six_days_old() {
        // So that a box, which takes heartbeats as an excuse for no new
        // data only for a bounded time, still gets new data.
        let r = row("tank/a", true);
        let ours = [snap("tank/a@zoffsite-1", 1, 10)];
        let refresh = i64::try_from(REFRESH_AFTER.as_secs()).unwrap();
        assert_eq!(refresh, 6 * 86400);
        let t = ours[0].creation;
        assert!(unchanged_since_ours(&r, &ours, t + refresh - 1).is_some());
        assert_eq!(unchanged_since_ours(&r, &ours, t + refresh), None);
        // A source clock behind the snapshot (set back) is no reason.
        assert!(unchanged_since_ours(&r, &ours, t - 86400).is_some());
    }

    #[test]
    fn groups_are_per_pool() {
        let n = SnapName::new("zoffsite-1").unwrap();
        let g = snapshot_groups(&[ds("tank/a"), ds("rpool/x"), ds("tank/b")], &n);
        let g: Vec<Vec<String>> = g.iter().map(|v| v.iter().map(std::string::ToString::to_string).collect()).collect();
        assert_eq!(g, [vec!["rpool/x@zoffsite-1"], vec!["tank/a@zoffsite-1", "tank/b@zoffsite-1"]]);
    }

    #[test]
    fn base_is_chosen_by_guid_not_name() {
        let bd = ds("offsite/home/tank/data");
        let new = snap("tank/data@zoffsite-3", 30, 300);
        let src = [snap("tank/data@zoffsite-1", 10, 100), snap("tank/data@zoffsite-2", 20, 200), new.clone()];
        // Box has nothing: full.
        assert_eq!(
            plan_send(&new, &src, &[], None, &bd),
            Ok(Send::Full { to: SnapshotRef { name: new.snapshot.name.clone(), guid: new.guid } })
        );
        // Box's newest (by its own txg) is guid 20: incremental from @zoffsite-2.
        let r = remote(&[("zoffsite-2", 20, 9), ("zoffsite-1", 10, 5)]);
        match plan_send(&new, &src, &[], Some(&r), &bd).unwrap() {
            Send::Incremental { from, to, base, intermediates } => {
                assert_eq!((from.name.as_str(), from.guid.get()), ("zoffsite-2", 20));
                assert_eq!(to.guid.get(), 30);
                assert_eq!((base, intermediates), (BaseKind::Snapshot, 0));
            }
            other => panic!("{other:?}"),
        }
        // Same name, different GUID: a different snapshot, so a divergence.
        let r = remote(&[("zoffsite-2", 99, 9)]);
        assert_eq!(
            plan_send(&new, &src, &[], Some(&r), &bd),
            Err(Blocked::Diverged { box_newest: SnapName::new("zoffsite-2").unwrap(), guid: Guid::new(99).unwrap() })
        );
        // A renamed snapshot with a known GUID is still a valid base.
        let r = remote(&[("renamed", 10, 9)]);
        assert!(
            matches!(plan_send(&new, &src, &[], Some(&r), &bd), Ok(Send::Incremental { from, .. }) if from.name.as_str() == "zoffsite-1")
        );
        // The box already holds the new snapshot.
        let r = remote(&[("zoffsite-3", 30, 12)]);
        assert!(matches!(plan_send(&new, &src, &[], Some(&r), &bd), Ok(Send::UpToDate { .. })));
        // Box newest is an older common snapshot than another box snapshot that
        // is unknown: the box's newest decides, so this is a divergence.
        let r = remote(&[("zoffsite-2", 20, 9), ("boxmade", 77, 10)]);
        assert!(matches!(plan_send(&new, &src, &[], Some(&r), &bd), Err(Blocked::Diverged { .. })));
        // Existing dataset without snapshots, and partial state.
        assert_eq!(plan_send(&new, &src, &[], Some(&remote(&[])), &bd), Err(Blocked::NoCommonSnapshot));
        let mut r = remote(&[("zoffsite-2", 20, 9)]);
        r.resume_token = Some("1-ab-cd-ef".into());
        assert!(matches!(plan_send(&new, &src, &[], Some(&r), &bd), Err(Blocked::PartialReceive { .. })));
        // A dataset that the box reports as absent is a full send.
        let mut r = remote(&[]);
        r.exists = false;
        assert!(matches!(plan_send(&new, &src, &[], Some(&r), &bd), Ok(Send::Full { .. })));
    }

    #[test]
    fn pending_snapshots_go_in_one_stream_and_bookmarks_anchor_the_chain() {
        let bd = ds("offsite/home/tank/data");
        let new = snap("tank/data@zoffsite-5", 50, 500);
        let src: Vec<SnapshotRow> =
            (1..=5).map(|i| snap(&format!("tank/data@zoffsite-{i}"), i * 10, i * 100)).collect();
        // The box was away since @zoffsite-2: 3 and 4 are pending.
        let r = remote(&[("zoffsite-2", 20, 9)]);
        assert!(matches!(
            plan_send(&new, &src, &[], Some(&r), &bd),
            Ok(Send::Incremental { intermediates: 2, base: BaseKind::Snapshot, .. })
        ));
        // Retention destroyed @zoffsite-2 on the source; its bookmark remains.
        let src_left: Vec<SnapshotRow> = src.iter().filter(|s| s.guid.get() != 20).cloned().collect();
        let bms = [BookmarkRow {
            bookmark: crate::names::Bookmark::new("tank/data#zoffsite-2").unwrap(),
            guid: Guid::new(20).unwrap(),
            createtxg: 200,
            creation: 200,
        }];
        match plan_send(&new, &src_left, &bms, Some(&r), &bd).unwrap() {
            Send::Incremental { from, base: BaseKind::Bookmark, intermediates: 0, .. } => {
                assert_eq!(from.name.as_str(), "zoffsite-2");
            }
            other => panic!("{other:?}"),
        }
        // Without the bookmark, that is a divergence, reported, never forced.
        assert!(matches!(plan_send(&new, &src_left, &[], Some(&r), &bd), Err(Blocked::Diverged { .. })));
    }

    #[test]
    fn source_prune_keeps_bases_newest_and_foreign_snapshots() {
        let policy = KeepPolicy { last: 1, ..KeepPolicy::default() };
        let snaps = [
            snap("tank/a@zoffsite-1", 1, 10),
            snap("tank/a@zoffsite-2", 2, 20),
            snap("tank/a@zoffsite-3", 3, 30),
            snap("tank/a@manual", 4, 40),
            snap("tank/b@zoffsite-1", 5, 10),
        ];
        let holds = [HoldRow { snapshot: Snapshot::new("tank/a@zoffsite-1").unwrap(), tag: "zoffsite-friend".into() }];
        let now = jiff::Timestamp::from_second(1000).unwrap();
        let d = prune_source(&policy, &snaps, &holds, now).unwrap();
        let verdict: BTreeMap<String, (bool, &str)> =
            d.iter().map(|d| (d.snapshot.to_string(), (d.destroy, d.verdict.as_str()))).collect();
        assert_eq!(verdict.len(), 4, "only zoffsite- snapshots are candidates: {verdict:?}");
        assert_eq!(verdict["tank/a@zoffsite-1"], (false, "keep (protected: incremental base for target friend)"));
        assert!(verdict["tank/a@zoffsite-2"].0);
        assert!(!verdict["tank/a@zoffsite-3"].0 && verdict["tank/a@zoffsite-3"].1.contains("newest snapshot"));
        assert!(!verdict["tank/b@zoffsite-1"].0);
        // The JSON has the full name, as docs/json.md shows.
        let j = serde_json::to_value(&d[0]).unwrap();
        assert_eq!(j["snapshot"], serde_json::json!("tank/a@zoffsite-1"), "{j}");
    }

    #[test]
    fn source_prune_applies_each_hold_to_its_own_dataset_only() {
        // The same snapshot name in three datasets, held in one: only that
        // dataset keeps it (holds are grouped by dataset, then looked up by
        // the full name), and a hold on a snapshot nobody listed changes
        // nothing.
        let policy = KeepPolicy { last: 1, ..KeepPolicy::default() };
        let mut snaps = Vec::new();
        for (i, d) in ["tank/a", "tank/a/b", "tank/c"].iter().enumerate() {
            let base = 10 * u64::try_from(i).unwrap();
            snaps.push(snap(&format!("{d}@zoffsite-1"), base + 1, 10));
            snaps.push(snap(&format!("{d}@zoffsite-2"), base + 2, 20));
        }
        let holds = [
            HoldRow { snapshot: Snapshot::new("tank/a/b@zoffsite-1").unwrap(), tag: "zoffsite-friend".into() },
            HoldRow { snapshot: Snapshot::new("tank/x@zoffsite-1").unwrap(), tag: "keep".into() },
            HoldRow { snapshot: Snapshot::new("tank/c@manual").unwrap(), tag: "keep".into() },
        ];
        let now = jiff::Timestamp::from_second(1000).unwrap();
        let d = prune_source(&policy, &snaps, &holds, now).unwrap();
        let destroyed: Vec<String> = d.iter().filter(|d| d.destroy).map(|d| d.snapshot.to_string()).collect();
        assert_eq!(destroyed, ["tank/a@zoffsite-1", "tank/c@zoffsite-1"]);
        let held = d.iter().find(|d| d.snapshot.to_string() == "tank/a/b@zoffsite-1").unwrap();
        assert_eq!(held.verdict, "keep (protected: incremental base for target friend)");
        // Each decision carries its own snapshot's creation time.
        assert!(d.iter().all(|d| d.creation == if d.snapshot.name.as_str().ends_with('1') { 10 } else { 20 }));
    }

    #[test]
    fn children_of_failed_parents_wait() {
        let failed: BTreeSet<Dataset> = [ds("tank/a"), ds("tank/a/b")].into();
        assert_eq!(failed_ancestor(&ds("tank/a/b/c"), &failed), Some(&ds("tank/a/b")));
        assert_eq!(failed_ancestor(&ds("tank/a"), &failed), None);
        assert_eq!(failed_ancestor(&ds("tank/ab"), &failed), None);
    }
}
