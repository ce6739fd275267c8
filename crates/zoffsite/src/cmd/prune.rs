//! `zoffsite prune`: source retention of zoffsite's own snapshots.
//!
//! Only snapshots named `zoffsite-*` are candidates; a dataset's newest
//! snapshot and every held snapshot (each target's incremental base carries
//! a `zoffsite-TARGET` hold) are always kept. Times are the snapshots'
//! `creation` on the source, whose clock is trusted; `--now` replaces the
//! clock for what-if runs. `backup` runs the same prune after it sends.

use std::collections::BTreeMap;

use zoffsite_core::names::{Dataset, SnapName, Snapshot};
use zoffsite_core::plan::{self, PruneDecision};
use zoffsite_core::retention::KeepPolicy;
use zoffsite_exec::zfs::Zfs;

use crate::cli::PruneArgs;
use crate::cmd::common;
use crate::exit::Exit;

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
    let snaps = match zfs.list_snapshots(datasets) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("zoffsite: prune: cannot list snapshots: {e}");
            return (Vec::new(), Exit::Error);
        }
    };
    let ours: Vec<Snapshot> = snaps
        .iter()
        .filter(|s| s.snapshot.name.as_str().starts_with(plan::SNAPSHOT_PREFIX))
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
    let decisions = match plan::prune_source(policy, &snaps, &holds, now) {
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
