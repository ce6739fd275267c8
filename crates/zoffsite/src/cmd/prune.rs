//! `zoffsite prune`: source retention of zoffsite's own snapshots.
//!
//! Only snapshots named `zoffsite-*` are candidates; a dataset's newest
//! snapshot and every held snapshot (each target's incremental base carries
//! a `zoffsite-TARGET` hold) are always kept. Times are the snapshots'
//! `creation` on the source, whose clock is trusted; `--now` replaces the
//! clock for what-if runs. `backup` runs the same prune after it sends.

use std::collections::{BTreeMap, BTreeSet};

use zoffsite_core::names::{Dataset, SnapName, Snapshot};
use zoffsite_core::parse::SnapshotRow;
use zoffsite_core::plan::{self, PruneDecision};
use zoffsite_core::retention::KeepPolicy;
use zoffsite_exec::zfs::Zfs;

use crate::cli::PruneArgs;
use crate::cmd::common;
use crate::exit::{Code as _, Exit};

pub fn run(args: PruneArgs) -> Exit {
    let cfg = match common::config_or_exit(&args.config) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let Some(policy) = cfg.source.keep else {
        eprintln!(
            "zoffsite: {}: source.keep is not configured, so nothing is ever pruned; add e.g.\n[source.keep]\nlast = 24\ndaily = 7",
            args.config.display()
        );
        return Exit::Usage;
    };
    let now = match &args.now {
        Some(t) => match common::parse_now(t) {
            Ok(t) => t,
            Err(e) => {
                eprintln!("zoffsite: {e}");
                return Exit::Usage;
            }
        },
        None => jiff::Timestamp::now(),
    };
    let _lock = match common::lock_unless_dry_run(&args.config, args.dry_run) {
        Ok(l) => l,
        Err(code) => return code,
    };
    let zfs = Zfs::new();
    let (sel, missing) = match common::list_selection(&cfg, &zfs, &args.config) {
        Ok(x) => x,
        Err(e) => {
            eprintln!("zoffsite: cannot list the configured datasets: {e}");
            return Exit::Error;
        }
    };
    for m in &missing {
        eprintln!("zoffsite: {m}");
    }
    let say = |l: String| {
        if !args.json {
            println!("{l}");
        }
    };
    let (decisions, exit) = prune(&zfs, &sel.datasets(), &policy, now, args.dry_run, &say);
    if args.json {
        let doc = serde_json::json!({ "dry_run": args.dry_run, "now": now.to_string(), "decisions": decisions, "exit_code": exit.code() });
        println!("{}", serde_json::to_string_pretty(&doc).expect("serializes"));
    }
    if missing.is_empty() {
        exit
    } else {
        exit.max(Exit::Partial)
    }
}

/// Plans and (unless `dry_run`) applies retention to `datasets`.
pub fn prune(
    zfs: &Zfs,
    datasets: &[Dataset],
    policy: &KeepPolicy,
    now: jiff::Timestamp,
    dry_run: bool,
    say: &dyn Fn(String),
) -> (Vec<PruneDecision>, Exit) {
    match zfs.list_snapshots(datasets) {
        Ok(l) => prune_listed(zfs, &l.snapshots, &l.held, policy, now, dry_run, say),
        Err(e) => {
            eprintln!("zoffsite: prune: cannot list snapshots: {e}");
            (Vec::new(), Exit::Error)
        }
    }
}

/// [`prune`] over snapshots the caller has just listed (`backup`, after
/// its snapshot). The holds are read here, of the snapshots in `held`
/// only: those that carried a hold when listed, and any the caller has
/// held since. A hold placed by someone else after the listing is missed
/// here but still stops the destroy: the kernel refuses to destroy a held
/// snapshot, so a stale view costs an error, never a base.
#[allow(clippy::too_many_arguments)]
pub fn prune_listed(
    zfs: &Zfs,
    snaps: &[SnapshotRow],
    held: &BTreeSet<Snapshot>,
    policy: &KeepPolicy,
    now: jiff::Timestamp,
    dry_run: bool,
    say: &dyn Fn(String),
) -> (Vec<PruneDecision>, Exit) {
    let ours: Vec<Snapshot> = snaps
        .iter()
        .filter(|s| s.snapshot.name.as_str().starts_with(plan::SNAPSHOT_PREFIX) && held.contains(&s.snapshot))
        .map(|s| s.snapshot.clone())
        .collect();
    let holds = match zfs.holds(&ours) {
        Ok(h) => h,
        Err(e) => {
            // Without the holds the bases are unknown: prune nothing.
            eprintln!("zoffsite: prune: cannot list holds, so nothing is pruned: {e}");
            return (Vec::new(), Exit::Error);
        }
    };
    let decisions = match plan::prune_source(policy, snaps, &holds, now) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("zoffsite: source.keep: {e}");
            return (Vec::new(), Exit::Usage);
        }
    };
    let mut doomed: BTreeMap<Dataset, Vec<SnapName>> = BTreeMap::new();
    for d in &decisions {
        if dry_run || d.destroy {
            say(format!("{}{}: {}", if dry_run { "would " } else { "" }, d.snapshot, d.verdict));
        }
        if d.destroy {
            if let Ok(s) = Snapshot::new(&d.snapshot) {
                doomed.entry(s.dataset).or_default().push(s.name);
            }
        }
    }
    let mut exit = Exit::Ok;
    if !dry_run {
        for (ds, names) in doomed {
            if let Err(e) = zfs.destroy_own_snapshots(&ds, &names) {
                eprintln!("zoffsite: prune: {e}");
                exit = Exit::Partial;
            }
        }
    }
    (decisions, exit)
}

#[cfg(test)]
mod tests {
    //! Which snapshots `zfs holds` is asked about, against a fake `zfs`
    //! that logs its argv (the real holds are tested in the VM, e2e).
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    fn row(name: &str, guid: u64, txg: u64) -> SnapshotRow {
        SnapshotRow {
            snapshot: Snapshot::new(name).unwrap(),
            guid: zoffsite_core::names::Guid::new(guid).unwrap(),
            createtxg: txg,
            creation: 1_795_000_000 + txg as i64 * 3600,
        }
    }

    /// A fake zfs: logs each argv as a line; `holds` prints one hold of
    /// `zoffsite-friend` on `tank/a@zoffsite-2`.
    fn fake() -> (tempfile::TempDir, Zfs) {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("zfs");
        let log = dir.path().join("log");
        let script = format!(
            "#!/bin/sh\necho \"$*\" >>'{}'\nif [ \"$1\" = holds ]; then printf 'tank/a@zoffsite-2\\tzoffsite-friend\\t1795000000\\n'; fi\n",
            log.display()
        );
        std::fs::write(&p, script).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        (dir, Zfs::with_binary(p))
    }

    #[test]
    fn only_held_snapshots_are_asked_about_and_a_held_base_is_kept() {
        let (dir, zfs) = fake();
        let snaps: Vec<SnapshotRow> = (1..=4).map(|i| row(&format!("tank/a@zoffsite-{i}"), 100 + i, i)).collect();
        let held: BTreeSet<Snapshot> = [Snapshot::new("tank/a@zoffsite-2").unwrap()].into();
        let policy = KeepPolicy { last: 1, ..KeepPolicy::default() };
        let now = jiff::Timestamp::from_second(1_795_100_000).unwrap();
        let (decisions, exit) = prune_listed(&zfs, &snaps, &held, &policy, now, false, &|_| {});
        assert_eq!(exit, Exit::Ok);
        let log = std::fs::read_to_string(dir.path().join("log")).unwrap();
        let lines: Vec<&str> = log.lines().collect();
        assert_eq!(lines[0], "holds -H -p tank/a@zoffsite-2", "{log}");
        // The held base and the newest stay; the others go, in one destroy.
        let destroyed: Vec<&str> = decisions.iter().filter(|d| d.destroy).map(|d| d.snapshot.as_str()).collect();
        assert_eq!(destroyed, ["tank/a@zoffsite-1", "tank/a@zoffsite-3"]);
        assert_eq!(lines[1], "destroy tank/a@zoffsite-1,zoffsite-3", "{log}");
        assert_eq!(lines.len(), 2, "{log}");
    }

    #[test]
    fn nothing_held_means_no_holds_lookup_at_all() {
        let (dir, zfs) = fake();
        let snaps = vec![row("tank/a@zoffsite-1", 7, 1)];
        let policy = KeepPolicy { last: 1, ..KeepPolicy::default() };
        let now = jiff::Timestamp::from_second(1_795_100_000).unwrap();
        let (_, exit) = prune_listed(&zfs, &snaps, &BTreeSet::new(), &policy, now, true, &|_| {});
        assert_eq!(exit, Exit::Ok);
        assert!(!dir.path().join("log").exists(), "zfs was run");
    }
}
