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
//! - Children are matched by name, and a compromised source can create a
//!   child on the box under an old run's snapshot name. So a child comes
//!   back only when the restored point's own properties manifest lists it
//!   ([`vet_children`]): that list was written inside the encrypted root
//!   before its snapshot was taken, and nobody can change it since. Without
//!   a list (no manifest, an older one), children come back only when the
//!   user says so (`--children-unverified`).
//! - A box's pool imported here must be imported read-only, under an
//!   altroot, with nothing mounted ([`check_imported_pool`]): otherwise it
//!   is the box that decides what is mounted where on this machine.
//! - A restore never changes a key. Each restored dataset is its own
//!   encryption root, wrapped exactly as the box holds (and pinned) it; the
//!   key file goes into each one's `keylocation`, which is not part of the
//!   wrapped key ([`unlock_commands`]). A `zfs change-key` (`-i` too) would
//!   re-wrap it, and the box would refuse every later backup of it.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use crate::names::{Dataset, Guid, NameError, SnapName};
use crate::protocol::RemoteDataset;

/// What a restore did, or with `-n` would do: `zoffsite restore --json`'s
/// document (docs/json.md), filled as the restore goes, so it says how far
/// a failed one got.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Report {
    pub dry_run: bool,
    /// Every receive of the plan, parents first, with how it went.
    pub steps: Vec<StepReport>,
    /// Children that do not come back, with why.
    pub left_out: Vec<LeftOut>,
    /// Children brought back unchecked (`--children-unverified`).
    pub unverified: Vec<Dataset>,
    /// The most stream bytes accepted from the box in all.
    pub max_bytes: Option<u64>,
    /// The time limit, in seconds.
    pub max_time: Option<u64>,
    /// `--keylocation`, set on every restored dataset.
    pub keylocation: Option<String>,
    /// Every restored dataset's key is loaded.
    pub unlocked: bool,
    /// Where the tree is mounted (null when it is not).
    pub mountpoint: Option<String>,
}

/// One receive of a [`Report`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StepReport {
    pub source: Dataset,
    pub dest: Dataset,
    pub snapshot: SnapName,
    pub guid: Guid,
    pub state: StepState,
    /// Stream bytes received (restored only).
    pub bytes: Option<u64>,
}

/// How far a receive got.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StepState {
    /// In the plan (`-n`, or not reached: an earlier step failed, or the
    /// manifest left it out).
    Planned,
    Restored,
    Failed,
}

/// A child that does not come back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LeftOut {
    pub dataset: Dataset,
    pub reason: String,
}

impl Report {
    /// The plan's steps, all [`StepState::Planned`].
    pub fn planned(dry_run: bool, steps: &[Step]) -> Report {
        Report {
            dry_run,
            steps: steps
                .iter()
                .map(|s| StepReport {
                    source: s.source.clone(),
                    dest: s.dest.clone(),
                    snapshot: s.snapshot.clone(),
                    guid: s.guid,
                    state: StepState::Planned,
                    bytes: None,
                })
                .collect(),
            ..Report::default()
        }
    }

    /// Records how the receive into `dest` went.
    pub fn received(&mut self, dest: &Dataset, outcome: Option<u64>) {
        if let Some(s) = self.steps.iter_mut().find(|s| s.dest == *dest) {
            s.state = if outcome.is_some() { StepState::Restored } else { StepState::Failed };
            s.bytes = outcome;
        }
    }

    /// Records a child left out (and takes it out of the steps).
    pub fn left_out(&mut self, dataset: &Dataset, reason: &str) {
        self.steps.retain(|s| s.source != *dataset);
        self.left_out.push(LeftOut { dataset: dataset.clone(), reason: reason.to_owned() });
    }
}

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
    #[error("the box's pool {pool} is imported in a way that lets the box decide what this machine mounts ({problems}). Import it with nothing mounted, read-only, under an altroot: zpool export {pool} && zpool import -N -o readonly=on -R {altroot} {pool}", altroot = BOX_POOL_ALTROOT)]
    PoolNotSafe { pool: String, problems: String },
    #[error("{0}")]
    Name(#[from] NameError),
}

/// The altroot the guide and the errors name for a box's pool imported
/// here (`zpool import -R`): nothing of the box's lands in this machine's
/// tree even if something were mounted later, and the pool is not written
/// to the cache file (not imported again at boot).
pub const BOX_POOL_ALTROOT: &str = "/run/zoffsite/box-pool";

/// How the box's pool is imported here: `zpool get readonly,altroot` and
/// each filesystem's `mounted`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportedPool {
    pub readonly: bool,
    /// `None`: imported without `-R`.
    pub altroot: Option<String>,
    /// The filesystems of the pool that are mounted.
    pub mounted: Vec<Dataset>,
}

/// Columns of `zfs list -H -o name,mounted -t filesystem -r POOL`.
pub const MOUNTED_COLUMNS: &str = "name,mounted";

impl ImportedPool {
    /// Reads `zpool get -H -p -o property,value readonly,altroot POOL` and
    /// `zfs list -H -o name,mounted -t filesystem -r POOL`, strictly: each
    /// property once, known values only.
    pub fn parse(props: &str, mounted: &str) -> Result<ImportedPool, crate::parse::ParseError> {
        use crate::parse::{rows, ParseError};
        let (mut readonly, mut altroot) = (None, None);
        for (i, c) in rows(props, 2)?.into_iter().enumerate() {
            let bad = |what| ParseError::Value { line: i + 1, what, value: c.join("\t") };
            match (c[0], c[1]) {
                ("readonly", v) if readonly.is_none() => {
                    readonly = Some(match v {
                        "on" => true,
                        "off" => false,
                        _ => return Err(bad("readonly")),
                    });
                }
                ("altroot", v) if altroot.is_none() => {
                    altroot = Some(match v {
                        "-" => None,
                        p if p.starts_with('/') => Some(p.to_owned()),
                        _ => return Err(bad("altroot")),
                    });
                }
                _ => return Err(bad("pool property")),
            }
        }
        let (Some(readonly), Some(altroot)) = (readonly, altroot) else {
            return Err(ParseError::Value {
                line: 0,
                what: "readonly and altroot",
                value: props.chars().take(64).collect(),
            });
        };
        let mut out = ImportedPool { readonly, altroot, mounted: Vec::new() };
        for (i, c) in rows(mounted, 2)?.into_iter().enumerate() {
            let line = i + 1;
            let ds = Dataset::new(c[0]).map_err(|source| ParseError::Name { line, what: "dataset", source })?;
            match c[1] {
                "yes" => out.mounted.push(ds),
                "no" => {}
                v => return Err(ParseError::Value { line, what: "mounted", value: v.to_owned() }),
            }
        }
        Ok(out)
    }
}

/// Refuses a box's pool that is writable, has no altroot, or has anything
/// mounted: each of those lets what the box stored act on this machine
/// (a dataset mounted as root at a mountpoint the box chose, such as
/// `/etc/cron.d`). The error carries the exact import command.
pub fn check_imported_pool(pool: &str, state: &ImportedPool) -> Result<(), RestoreError> {
    let mut problems = Vec::new();
    if !state.mounted.is_empty() {
        let names: Vec<&str> = state.mounted.iter().take(5).map(Dataset::as_str).collect();
        let more = state.mounted.len().saturating_sub(names.len());
        let more = if more > 0 { format!(" and {more} more") } else { String::new() };
        problems.push(format!("mounted: {}{more}", names.join(", ")));
    }
    if !state.readonly {
        problems.push("not read-only".into());
    }
    if state.altroot.is_none() {
        problems.push("no altroot".into());
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(RestoreError::PoolNotSafe { pool: pool.to_owned(), problems: problems.join("; ") })
    }
}

/// What the restored point says about its own tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Witness {
    /// Its manifest lists these datasets, relative to the top (`""`).
    Listed(BTreeSet<String>),
    /// No list to check the children against, and why (no manifest, a
    /// manifest from before the list, one that could not be read or
    /// trusted).
    Missing(String),
}

/// The children of a plan, checked against the restored point's manifest.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Vetted {
    /// The children to receive, parents first.
    pub steps: Vec<Step>,
    /// Children left out, with why (the box holds them under the restored
    /// snapshot's name, but nothing says they were part of it).
    pub left_out: Vec<(Dataset, String)>,
    /// Children brought back without a list to check them against
    /// (`accept_unverified`).
    pub unverified: Vec<Dataset>,
}

/// Decides which of the plan's children come back: those `witness` lists;
/// with no list, all of them only if `accept_unverified`. A child below
/// one left out is left out too (it has nowhere to go).
pub fn vet_children(plan: &Plan, witness: &Witness, accept_unverified: bool) -> Vetted {
    let mut out = Vetted::default();
    let Some(top) = plan.steps.first() else { return out };
    for step in &plan.steps[1..] {
        if let Some((p, _)) = out.left_out.iter().find(|(p, _)| step.source.is_within(p)) {
            let why = format!("its parent {p} was left out");
            out.left_out.push((step.source.clone(), why));
            continue;
        }
        let rel = step.source.strip_root(&top.source).map_or_else(String::new, |d| d.to_string());
        match witness {
            Witness::Listed(tree) if tree.contains(&rel) => out.steps.push(step.clone()),
            Witness::Listed(_) => out.left_out.push((
                step.source.clone(),
                format!(
                    "the box holds it as @{snap}, but the manifest of {top}@{snap} does not list it: it was not part of the tree when that snapshot was taken, so it was created on the box later (as a compromised source could). If you know it to be yours, restore it on its own: --dataset {child} --snapshot {snap} --no-children",
                    snap = step.snapshot,
                    top = top.source,
                    child = step.source,
                ),
            )),
            Witness::Missing(_) if accept_unverified => {
                out.steps.push(step.clone());
                out.unverified.push(step.source.clone());
            }
            Witness::Missing(why) => out.left_out.push((
                step.source.clone(),
                format!(
                    "{why}, so nothing says it was part of the tree at @{snap} rather than created on the box later: restore it on its own (--dataset {child} --snapshot {snap}), or restore the tree again elsewhere (--to) with --children-unverified",
                    snap = step.snapshot,
                    child = step.source,
                ),
            )),
        }
    }
    out
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
                plan.steps.push(Step {
                    source: name.clone(),
                    dest: child_dest,
                    snapshot: s.name.clone(),
                    guid: s.guid,
                });
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

/// The commands that unlock and mount a restored tree by hand (`top` and
/// its restored `children`, parents first), with the key file at `uri`:
/// `keylocation` on each encryption root, one `zfs load-key -r`, then each
/// mount. Never a `zfs change-key`: see the module's invariants.
pub fn unlock_commands(top: &Dataset, children: &[&Dataset], uri: &str) -> Vec<String> {
    let mut out: Vec<String> = std::iter::once(top)
        .chain(children.iter().copied())
        .map(|d| format!("zfs set keylocation={uri} {d}"))
        .collect();
    out.push(format!("zfs load-key -r {top}"));
    out.push(
        std::iter::once(top)
            .chain(children.iter().copied())
            .map(|d| format!("zfs mount {d}"))
            .collect::<Vec<_>>()
            .join(" && "),
    );
    out
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

    fn names(v: &[(Dataset, String)]) -> Vec<&str> {
        v.iter().map(|(d, _)| d.as_str()).collect()
    }

    #[test]
    fn only_the_children_the_restored_points_manifest_lists_come_back() {
        // A compromised source added `planted` (and a child of it) on the
        // box under the old run's name s1, after s1's manifest was written.
        let mut items = TREE.to_vec();
        items.push(("tank/data/planted", &[("s1", 30)]));
        items.push(("tank/data/planted/inner", &[("s1", 31)]));
        let l = listing(&items);
        let r = Request { snapshot: Some(SnapName::new("s1").unwrap()), to: Some(ds("tank/old")), ..req("tank/data") };
        let p = plan(&r, &l, |d| d.as_str() == "tank").unwrap();
        assert!(p.steps.iter().any(|s| s.source.as_str() == "tank/data/planted"), "matched by name alone");
        let tree: BTreeSet<String> =
            ["", "docs", "docs/old", "docs/old/deeper"].iter().map(std::string::ToString::to_string).collect();
        let v = vet_children(&p, &Witness::Listed(tree), false);
        let kept: Vec<&str> = v.steps.iter().map(|s| s.source.as_str()).collect();
        assert_eq!(kept, ["tank/data/docs", "tank/data/docs/old", "tank/data/docs/old/deeper"]);
        assert_eq!(names(&v.left_out), ["tank/data/planted", "tank/data/planted/inner"]);
        assert!(v.left_out[0].1.contains("does not list it"), "{}", v.left_out[0].1);
        assert!(v.left_out[1].1.contains("parent tank/data/planted"), "{}", v.left_out[1].1);
        assert!(v.unverified.is_empty());
        // `--no-children`: nothing to vet.
        let p1 = plan(&Request { children: false, ..r.clone() }, &l, |d| d.as_str() == "tank").unwrap();
        assert_eq!(vet_children(&p1, &Witness::Listed(BTreeSet::new()), false), Vetted::default());
    }

    #[test]
    fn without_a_list_children_come_back_only_when_asked() {
        let l = listing(TREE);
        let p = plan(&req("tank/data"), &l, |d| d.as_str() == "tank").unwrap();
        let w = Witness::Missing("the manifest has no list of its datasets (written before zoffsite kept one)".into());
        let v = vet_children(&p, &w, false);
        assert!(v.steps.is_empty());
        assert_eq!(names(&v.left_out), ["tank/data/docs", "tank/data/photos"]);
        assert!(v.left_out[0].1.contains("written before") && v.left_out[0].1.contains("--children-unverified"));
        let v = vet_children(&p, &w, true);
        assert_eq!(v.steps.len(), 2);
        assert!(v.left_out.is_empty());
        assert_eq!(v.unverified, [ds("tank/data/docs"), ds("tank/data/photos")]);
    }

    #[test]
    fn how_the_box_pool_is_imported_is_read_strictly() {
        let p = ImportedPool::parse(
            "readonly\ton\naltroot\t/run/zoffsite/box-pool\n",
            "moved\tno\nmoved/home\tno\nmoved/evil\tyes\n",
        )
        .unwrap();
        assert_eq!(
            p,
            ImportedPool {
                readonly: true,
                altroot: Some("/run/zoffsite/box-pool".into()),
                mounted: vec![ds("moved/evil")]
            }
        );
        assert_eq!(ImportedPool::parse("altroot\t-\nreadonly\toff\n", "").unwrap().altroot, None);
        for (props, mounted) in [
            ("readonly\ton\n", ""),
            ("readonly\ton\nreadonly\toff\naltroot\t-\n", ""),
            ("readonly\tmaybe\naltroot\t-\n", ""),
            ("readonly\ton\naltroot\trelative\n", ""),
            ("readonly\ton\naltroot\t-\nfailmode\twait\n", ""),
            ("readonly\ton\naltroot\t-\n", "moved\t-\n"),
            ("readonly\ton\naltroot\t-\n", "moved\n"),
        ] {
            assert!(ImportedPool::parse(props, mounted).is_err(), "{props:?} {mounted:?}");
        }
    }

    #[test]
    fn a_box_pool_must_be_imported_read_only_under_an_altroot_with_nothing_mounted() {
        let safe = ImportedPool { readonly: true, altroot: Some(BOX_POOL_ALTROOT.into()), mounted: vec![] };
        assert_eq!(check_imported_pool("moved", &safe), Ok(()));
        let e = check_imported_pool("moved", &ImportedPool { mounted: vec![ds("moved/evil")], ..safe.clone() })
            .unwrap_err()
            .to_string();
        assert!(e.contains("mounted: moved/evil"), "{e}");
        assert!(
            e.contains("zpool export moved && zpool import -N -o readonly=on -R /run/zoffsite/box-pool moved"),
            "{e}"
        );
        let e = check_imported_pool("moved", &ImportedPool { readonly: false, altroot: None, mounted: vec![] })
            .unwrap_err()
            .to_string();
        assert!(e.contains("not read-only") && e.contains("no altroot"), "{e}");
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

    #[test]
    fn the_unlock_commands_set_each_keylocation_and_change_no_key() {
        let (docs, photos) = (ds("tank/data/docs"), ds("tank/data/photos"));
        let cmds = unlock_commands(&ds("tank/data"), &[&docs, &photos], "file:///k");
        assert_eq!(
            cmds,
            [
                "zfs set keylocation=file:///k tank/data",
                "zfs set keylocation=file:///k tank/data/docs",
                "zfs set keylocation=file:///k tank/data/photos",
                "zfs load-key -r tank/data",
                "zfs mount tank/data && zfs mount tank/data/docs && zfs mount tank/data/photos",
            ]
        );
        assert!(cmds.iter().all(|c| !c.contains("change-key")), "{cmds:?}");
    }
}
