//! Planning a restore: which snapshot of which dataset comes back where.
//!
//! Pure: it takes what the box holds (a `ListTree` listing, from `serve` or
//! from the box's pool imported locally) and what exists locally, and
//! returns the receives to run, parents first.
//!
//! Invariants:
//! - Nothing local is ever overwritten: a destination that exists is an
//!   error that names `--to`; receives never use `-F`.
//! - One snapshot name for the whole tree (zoffsite snapshots every
//!   selected dataset under one name per run), so the restored tree is one
//!   point in time. A child without that snapshot is left out, said why,
//!   and so are the datasets below it.

use std::collections::{BTreeMap, BTreeSet};

use crate::names::{Dataset, Guid, NameError, SnapName};
use crate::protocol::RemoteDataset;

/// What the user asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// The dataset as named on the source (and under the box's root).
    pub dataset: Dataset,
    /// `None`: the dataset's newest snapshot on the box.
    pub snapshot: Option<SnapName>,
    /// `None`: restore in place, as `dataset`.
    pub to: Option<Dataset>,
    pub children: bool,
}

/// One receive: the box's `source@snapshot` into local `dest`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub source: Dataset,
    pub dest: Dataset,
    pub snapshot: SnapName,
    pub guid: Guid,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Plan {
    /// Parents first; the first is the top of the tree.
    pub steps: Vec<Step>,
    /// Children left out, with why.
    pub skipped: Vec<(Dataset, String)>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RestoreError {
    #[error("the box holds no {dataset}: check the name (as on the source) with `zoffsite status`, or the box's root")]
    NotOnBox { dataset: Dataset },
    #[error("the box holds {dataset} but no snapshot of it (an interrupted first transfer?): nothing to restore")]
    NoSnapshots { dataset: Dataset },
    #[error("the box has no {dataset}@{snapshot}; its newest are: {available}")]
    NoSuchSnapshot { dataset: Dataset, snapshot: SnapName, available: String },
    #[error("{dest} exists here, and a restore never overwrites or destroys anything: restore beside it with --to NEW (e.g. --to {dest}-restored)")]
    DestExists { dest: Dataset },
    #[error("{parent} does not exist here, so {dest} cannot be created under it: create it first (zfs create -p {parent}) or choose another --to")]
    NoParent { dest: Dataset, parent: Dataset },
    #[error("{0}")]
    Name(#[from] NameError),
}

/// Decides the receives. `exists` tells whether a local dataset exists.
pub fn plan(
    req: &Request,
    listing: &BTreeMap<Dataset, RemoteDataset>,
    mut exists: impl FnMut(&Dataset) -> bool,
) -> Result<Plan, RestoreError> {
    let top = listing.get(&req.dataset).ok_or_else(|| RestoreError::NotOnBox { dataset: req.dataset.clone() })?;
    let newest = top.snapshots.iter().max_by_key(|s| s.createtxg);
    let snap = match (&req.snapshot, newest) {
        (_, None) => return Err(RestoreError::NoSnapshots { dataset: req.dataset.clone() }),
        (None, Some(n)) => n,
        (Some(want), Some(_)) => top.snapshots.iter().find(|s| s.name == *want).ok_or_else(|| {
            let mut names: Vec<_> = top.snapshots.iter().collect();
            names.sort_by_key(|s| std::cmp::Reverse(s.createtxg));
            RestoreError::NoSuchSnapshot {
                dataset: req.dataset.clone(),
                snapshot: want.clone(),
                available: names.iter().take(5).map(|s| s.name.to_string()).collect::<Vec<_>>().join(", "),
            }
        })?,
    };
    let dest = req.to.clone().unwrap_or_else(|| req.dataset.clone());
    if exists(&dest) {
        return Err(RestoreError::DestExists { dest });
    }
    if let Some(parent) = dest.parent() {
        if !exists(&parent) {
            return Err(RestoreError::NoParent { dest, parent });
        }
    }
    let mut plan = Plan {
        steps: vec![Step {
            source: req.dataset.clone(),
            dest: dest.clone(),
            snapshot: snap.name.clone(),
            guid: snap.guid,
        }],
        skipped: Vec::new(),
    };
    if !req.children {
        return Ok(plan);
    }
    let mut left_out: BTreeSet<Dataset> = BTreeSet::new();
    // BTreeMap order: a parent sorts before everything below it.
    for (name, d) in listing.range(req.dataset.clone()..) {
        if !name.is_within(&req.dataset) {
            break;
        }
        if *name == req.dataset {
            continue;
        }
        let rel = name.strip_root(&req.dataset).expect("below the top");
        let child_dest = dest.join(&rel)?;
        if let Some(p) = left_out.iter().find(|p| name.is_within(p)) {
            let why = format!("its parent {p} was left out");
            plan.skipped.push((name.clone(), why));
            left_out.insert(name.clone());
            continue;
        }
        match d.snapshots.iter().find(|s| s.name == snap.name) {
            Some(s) => {
                plan.steps.push(Step { source: name.clone(), dest: child_dest, snapshot: s.name.clone(), guid: s.guid })
            }
            None => {
                let why = format!(
                    "it has no @{} (it was not backed up in that run); restore it on its own with --dataset {name} --snapshot ...",
                    snap.name
                );
                plan.skipped.push((name.clone(), why));
                left_out.insert(name.clone());
            }
        }
    }
    Ok(plan)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::RemoteSnapshot;

    fn ds(s: &str) -> Dataset {
        Dataset::new(s).unwrap()
    }

    fn listing(items: &[(&str, &[(&str, u64)])]) -> BTreeMap<Dataset, RemoteDataset> {
        items
            .iter()
            .map(|(name, snaps)| {
                let snapshots = snaps
                    .iter()
                    .map(|(n, txg)| RemoteSnapshot {
                        name: SnapName::new(*n).unwrap(),
                        guid: Guid::new(txg * 1000 + name.len() as u64).unwrap(),
                        createtxg: *txg,
                    })
                    .collect();
                (ds(name), RemoteDataset { name: ds(name), exists: true, snapshots, resume_token: None })
            })
            .collect()
    }

    fn req(dataset: &str) -> Request {
        Request { dataset: ds(dataset), snapshot: None, to: None, children: true }
    }

    const TREE: &[(&str, &[(&str, u64)])] = &[
        ("tank/data", &[("s1", 10), ("s2", 20)]),
        ("tank/data/docs", &[("s1", 11), ("s2", 21)]),
        ("tank/data/docs/old", &[("s1", 12)]),
        ("tank/data/docs/old/deeper", &[("s1", 13), ("s2", 23)]),
        ("tank/data/photos", &[("s2", 22)]),
        ("tank/database", &[("s2", 24)]),
    ];

    #[test]
    fn the_newest_snapshot_comes_back_in_place_with_its_children() {
        let l = listing(TREE);
        let only_pool = |d: &Dataset| d.as_str() == "tank";
        let p = plan(&req("tank/data"), &l, only_pool).unwrap();
        let got: Vec<(String, String, String)> =
            p.steps.iter().map(|s| (s.source.to_string(), s.dest.to_string(), s.snapshot.to_string())).collect();
        assert_eq!(
            got,
            [
                ("tank/data".into(), "tank/data".into(), "s2".into()),
                ("tank/data/docs".into(), "tank/data/docs".into(), "s2".into()),
                ("tank/data/photos".into(), "tank/data/photos".into(), "s2".into()),
            ]
        );
        assert_eq!(p.steps[0].guid, l[&ds("tank/data")].snapshots[1].guid);
        // `old` lacks @s2, and `deeper` cannot go without its parent;
        // `tank/database` only shares a prefix of the name.
        let skipped: Vec<&str> = p.skipped.iter().map(|(d, _)| d.as_str()).collect();
        assert_eq!(skipped, ["tank/data/docs/old", "tank/data/docs/old/deeper"]);
        assert!(p.skipped[0].1.contains("no @s2") && p.skipped[1].1.contains("parent tank/data/docs/old"));
    }

    #[test]
    fn an_older_snapshot_to_a_new_name_without_children() {
        let l = listing(TREE);
        let r = Request {
            snapshot: Some(SnapName::new("s1").unwrap()),
            to: Some(ds("tank/old")),
            children: false,
            ..req("tank/data")
        };
        let p = plan(&r, &l, |d| d.as_str() == "tank" || d.as_str() == "tank/data").unwrap();
        assert_eq!(p.steps.len(), 1);
        assert_eq!((p.steps[0].dest.as_str(), p.steps[0].snapshot.as_str()), ("tank/old", "s1"));
        // With children, the tree follows under the new name.
        let p = plan(&Request { children: true, ..r }, &l, |d| d.as_str() == "tank").unwrap();
        let dests: Vec<&str> = p.steps.iter().map(|s| s.dest.as_str()).collect();
        assert_eq!(dests, ["tank/old", "tank/old/docs", "tank/old/docs/old", "tank/old/docs/old/deeper"]);
        assert_eq!(p.skipped.len(), 1, "photos has no @s1: {:?}", p.skipped);
    }

    #[test]
    fn refusals_name_the_fix() {
        let l = listing(TREE);
        let e = plan(&req("tank/data"), &l, |_| true).unwrap_err();
        assert!(e.to_string().contains("--to") && e.to_string().contains("never overwrites"), "{e}");
        let e = plan(&Request { to: Some(ds("other/x/y")), ..req("tank/data") }, &l, |_| false).unwrap_err();
        assert_eq!(e, RestoreError::NoParent { dest: ds("other/x/y"), parent: ds("other/x") });
        let e = plan(&req("tank/nope"), &l, |_| false).unwrap_err();
        assert!(matches!(e, RestoreError::NotOnBox { .. }));
        let r = Request { snapshot: Some(SnapName::new("s9").unwrap()), ..req("tank/data") };
        let e = plan(&r, &l, |d| d.as_str() == "tank").unwrap_err();
        assert!(e.to_string().contains("newest are: s2, s1"), "{e}");
        let empty = listing(&[("tank/data", &[])]);
        assert!(matches!(plan(&req("tank/data"), &empty, |_| false), Err(RestoreError::NoSnapshots { .. })));
    }
}
