//! `verify`, without any key: does the box hold what the source believes it
//! replicated, with the source's GUIDs, on a healthy, recently scrubbed pool?
//!
//! Pure: it compares the source's snapshots and its hold (the last
//! snapshot a target confirmed) with the box's listing and pool report.
//! The box's own retention may have destroyed older snapshots, so what it
//! *must* hold is the confirmed one; everything else it holds must match the
//! source by GUID wherever both have the name.

use serde::Serialize;

use crate::names::{Dataset, Snapshot};
use crate::parse::SnapshotRow;
use crate::protocol::RemoteDataset;

/// A scrub older than this is worth a warning.
pub const SCRUB_MAX_AGE_DAYS: i64 = 35;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DatasetCheck {
    pub dataset: Dataset,
    /// Snapshots found on both sides with the same GUID.
    pub matched: usize,
    pub problems: Vec<String>,
}

/// Checks one dataset. `confirmed` is the snapshot the source holds for
/// this target (`zoffsite-TARGET`): the last one the box confirmed by GUID.
pub fn check_dataset(
    dataset: &Dataset,
    source: &[SnapshotRow],
    confirmed: Option<&Snapshot>,
    remote: Option<&RemoteDataset>,
) -> DatasetCheck {
    let mut c = DatasetCheck { dataset: dataset.clone(), matched: 0, problems: Vec::new() };
    let on_box = remote.filter(|r| r.exists).map(|r| r.snapshots.as_slice()).unwrap_or_default();
    for r in on_box {
        match source.iter().find(|s| s.snapshot.name == r.name) {
            Some(s) if s.guid == r.guid => c.matched += 1,
            Some(s) => c.problems.push(format!(
                "the box's @{} has GUID {}, the source's {}: not the same snapshot",
                r.name, r.guid, s.guid
            )),
            // Pruned on the source since: nothing to compare with.
            None => {}
        }
    }
    if let Some(want) = confirmed {
        let src = source.iter().find(|s| s.snapshot == *want);
        match (on_box.iter().find(|r| r.name == want.name), src) {
            (None, _) => c.problems.push(format!(
                "@{} is missing on the box, though the box confirmed it (the source holds it for this target)",
                want.name
            )),
            (Some(r), Some(s)) if r.guid != s.guid => {} // reported above
            (Some(_), _) => {}
        }
    }
    c
}

/// The box's pool, as `serve` reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PoolCheck {
    pub pool: String,
    pub health: String,
    /// When the last scrub finished (Unix seconds), if one has.
    pub last_scrub: Option<i64>,
    pub problems: Vec<String>,
    pub warnings: Vec<String>,
}

pub fn check_pool(pool: &str, health: &str, last_scrub: Option<i64>, now: i64) -> PoolCheck {
    let mut c = PoolCheck {
        pool: pool.to_owned(),
        health: health.to_owned(),
        last_scrub,
        problems: Vec::new(),
        warnings: Vec::new(),
    };
    if health != "ONLINE" {
        c.problems
            .push(format!("the box's pool {pool} is {health}: ask the box owner to look at `zpool status {pool}`"));
    }
    match last_scrub {
        None => c.warnings.push(format!(
            "the box's pool {pool} has never finished a scrub: ask the box owner to schedule `zpool scrub {pool}` monthly"
        )),
        Some(t) if now - t > SCRUB_MAX_AGE_DAYS * 86_400 => c.warnings.push(format!(
            "the box's pool {pool} was last scrubbed {} ago (more than {SCRUB_MAX_AGE_DAYS} days): ask the box owner to run `zpool scrub {pool}`",
            crate::human::secs(now - t)
        )),
        Some(_) => {}
    }
    c
}

/// One entry of a file tree, as a drill compares it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    Dir,
    File {
        size: u64,
        sha256: [u8; 32],
    },
    Link(String),
    /// Sockets, fifos, devices: compared by kind only.
    Other,
}

/// What a drill found comparing the restored tree with the source's
/// snapshot of it.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct TreeDiff {
    pub files: u64,
    pub bytes: u64,
    /// Paths that differ (content, kind or link target), are missing from
    /// the restored tree, or are only in it; at most [`MAX_LISTED`].
    pub differences: Vec<String>,
    pub different: u64,
}

/// Most differing paths listed (all are counted).
pub const MAX_LISTED: usize = 50;

/// Compares the source's tree (`want`) with the restored one (`got`), both
/// keyed by path relative to their roots.
pub fn compare_trees(
    want: &std::collections::BTreeMap<String, Entry>,
    got: &std::collections::BTreeMap<String, Entry>,
) -> TreeDiff {
    let mut d = TreeDiff::default();
    let note = |d: &mut TreeDiff, what: String| {
        d.different += 1;
        if d.differences.len() < MAX_LISTED {
            d.differences.push(what);
        }
    };
    for (path, w) in want {
        match (w, got.get(path)) {
            (_, None) => note(&mut d, format!("{path}: missing from the restore")),
            (Entry::File { size, sha256 }, Some(Entry::File { size: s2, sha256: h2 })) => {
                if size == s2 && sha256 == h2 {
                    d.files += 1;
                    d.bytes += size;
                } else {
                    note(&mut d, format!("{path}: content differs"));
                }
            }
            (a, Some(b)) if a == b => {}
            (_, Some(_)) => note(&mut d, format!("{path}: differs (kind or link target)")),
        }
    }
    for path in got.keys().filter(|p| !want.contains_key(*p)) {
        note(&mut d, format!("{path}: only in the restore"));
    }
    d
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::names::{Guid, SnapName};
    use crate::protocol::RemoteSnapshot;

    fn src(names: &[(&str, u64)]) -> Vec<SnapshotRow> {
        names
            .iter()
            .enumerate()
            .map(|(i, (n, g))| SnapshotRow {
                snapshot: Snapshot::new(&format!("tank/d@{n}")).unwrap(),
                guid: Guid::new(*g).unwrap(),
                createtxg: i as u64 + 1,
                creation: 0,
            })
            .collect()
    }

    fn remote(names: &[(&str, u64)]) -> RemoteDataset {
        RemoteDataset {
            name: Dataset::new("tank/d").unwrap(),
            exists: true,
            snapshots: names
                .iter()
                .enumerate()
                .map(|(i, (n, g))| RemoteSnapshot {
                    name: SnapName::new(*n).unwrap(),
                    guid: Guid::new(*g).unwrap(),
                    createtxg: i as u64 + 1,
                })
                .collect(),
            resume_token: None,
        }
    }

    #[test]
    fn matching_guids_pass_and_pruned_ones_are_not_missed() {
        let ds = Dataset::new("tank/d").unwrap();
        let s = src(&[("a", 1), ("b", 2), ("c", 3)]);
        let confirmed = Snapshot::new("tank/d@c").unwrap();
        // The box pruned @a; the source pruned @z.
        let c = check_dataset(&ds, &s, Some(&confirmed), Some(&remote(&[("z", 9), ("b", 2), ("c", 3)])));
        assert_eq!((c.matched, c.problems.len()), (2, 0), "{c:?}");
    }

    #[test]
    fn a_missing_confirmed_snapshot_or_another_guid_fails() {
        let ds = Dataset::new("tank/d").unwrap();
        let s = src(&[("b", 2), ("c", 3)]);
        let confirmed = Snapshot::new("tank/d@c").unwrap();
        let c = check_dataset(&ds, &s, Some(&confirmed), Some(&remote(&[("b", 2)])));
        assert!(matches!(&c.problems[..], [p] if p.contains("@c is missing")), "{c:?}");
        let c = check_dataset(&ds, &s, Some(&confirmed), Some(&remote(&[("b", 2), ("c", 4)])));
        assert!(matches!(&c.problems[..], [p] if p.contains("GUID 4") && p.contains("not the same")), "{c:?}");
        let c = check_dataset(&ds, &s, Some(&confirmed), None);
        assert_eq!(c.problems.len(), 1);
        // Never backed up: nothing the box should hold yet.
        assert!(check_dataset(&ds, &s, None, None).problems.is_empty());
    }

    #[test]
    fn trees_compare_by_content_kind_and_presence() {
        use std::collections::BTreeMap;
        let f = |n: u8, size| Entry::File { size, sha256: [n; 32] };
        let want: BTreeMap<String, Entry> = [
            ("a".to_owned(), f(1, 10)),
            ("d".to_owned(), Entry::Dir),
            ("d/b".to_owned(), f(2, 20)),
            ("l".to_owned(), Entry::Link("a".into())),
        ]
        .into();
        let same = compare_trees(&want, &want.clone());
        assert_eq!((same.files, same.bytes, same.different), (2, 30, 0));
        let mut got = want.clone();
        got.insert("d/b".into(), f(3, 20));
        got.insert("l".into(), Entry::Link("elsewhere".into()));
        got.remove("a");
        got.insert("new".into(), f(4, 1));
        let d = compare_trees(&want, &got);
        assert_eq!((d.files, d.different), (0, 4), "{d:?}");
        assert_eq!(
            d.differences,
            [
                "a: missing from the restore",
                "d/b: content differs",
                "l: differs (kind or link target)",
                "new: only in the restore"
            ]
        );
    }

    #[test]
    fn pool_health_fails_and_old_scrubs_warn() {
        let now = 100 * 86_400;
        let ok = check_pool("off", "ONLINE", Some(now - 86_400), now);
        assert!(ok.problems.is_empty() && ok.warnings.is_empty());
        assert_eq!(check_pool("off", "DEGRADED", Some(now), now).problems.len(), 1);
        assert!(check_pool("off", "ONLINE", Some(now - 40 * 86_400), now).warnings[0].contains("scrubbed 40d ago"));
        assert!(check_pool("off", "ONLINE", None, now).warnings[0].contains("never"));
    }
}
