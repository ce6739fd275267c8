//! `zoffsite box prune`: box retention by the box's own receive times.
//!
//! Run by root on the box (from a timer) with `/etc/zoffsite/box.toml`. It
//! lists every snapshot under the configured root with its receive stamp
//! (`zoffsite:received`, written by `serve` from the box's clock), decides
//! with [`boxside::plan_box_prune`] (see that module for the rules: ages by
//! receive time never `creation`, each dataset's newest kept, `min_age`,
//! unstamped snapshots kept, and the clock checks that make it refuse), and
//! destroys with one `zfs destroy DS@a,b,...` per dataset, only below the
//! root. `-n` lists every snapshot with keep/destroy and why; `--now`
//! replaces the clock for what-if runs. A clock refusal exits 1 and destroys
//! nothing. After a sane run with the real clock (not `-n`, not `--now`) the
//! time is recorded in `zoffsite:lastrun` on the root, which the clock check
//! of the next run compares with.

use std::collections::BTreeMap;
use std::path::Path;

use zoffsite_core::boxside::{self, BoxConfig, BoxDecision, BoxError, BoxSnapshot};
use zoffsite_core::journal::{Entry, Journal};
use zoffsite_core::names::{Dataset, SnapName, Snapshot};
use zoffsite_exec::journal;
use zoffsite_exec::zfs::{Zfs, ZfsError};

use crate::cli::BoxPruneArgs;
use crate::cmd::common;
use crate::exit::{Code as _, Exit};

/// Reads and validates the box config, or prints why and gives exit 2.
pub fn load_box_config(path: &Path) -> Result<BoxConfig, Exit> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        eprintln!(
            "zoffsite: cannot read box config file {}: {e}; create it (root = \"offsite/home\", see `zoffsite box prune --help`) or pass another with -c FILE",
            path.display()
        );
        Exit::Usage
    })?;
    BoxConfig::parse(&text).map_err(|e| {
        eprintln!("zoffsite: box config file {}: {e}", path.display());
        Exit::Usage
    })
}

/// `--now`, or the clock. `Err` after printing.
pub fn now_or_exit(now: &Option<String>) -> Result<(jiff::Timestamp, bool), Exit> {
    match now {
        Some(t) => common::parse_now(t).map(|t| (t, true)).map_err(|e| {
            eprintln!("zoffsite: {e}");
            Exit::Usage
        }),
        None => Ok((jiff::Timestamp::now(), false)),
    }
}

/// The root's `zoffsite:lastrun`, if set and readable.
pub fn lastrun(zfs: &Zfs, root: &Dataset) -> Result<Option<i64>, ZfsError> {
    let v = zfs.get_value(root.as_str(), boxside::LASTRUN_PROPERTY)?;
    if v == "-" {
        return Ok(None);
    }
    match v.parse::<i64>() {
        Ok(t) => Ok(Some(t)),
        Err(_) => {
            eprintln!(
                "zoffsite: warning: {} on {root} is {v:?}, not Unix seconds; ignored (it is rewritten after this run)",
                boxside::LASTRUN_PROPERTY
            );
            Ok(None)
        }
    }
}

/// Records a sane run's time on the root.
pub fn record_lastrun(zfs: &Zfs, root: &Dataset, now: jiff::Timestamp) {
    if let Err(e) = zfs.set_user_property(&[root.to_string()], boxside::LASTRUN_PROPERTY, &now.as_second().to_string())
    {
        eprintln!("zoffsite: warning: cannot record this run in {} on {root}: {e}", boxside::LASTRUN_PROPERTY);
    }
}

/// The box's snapshots, and the txg journal entry this listing makes: the
/// highest `createtxg` it saw, with the real clock before and after it.
pub fn list_timed(zfs: &Zfs, root: &Dataset) -> Result<(Vec<BoxSnapshot>, Option<Entry>), ZfsError> {
    let start = jiff::Timestamp::now().as_second();
    let snaps = zfs.list_box_snapshots(root)?;
    let end = jiff::Timestamp::now().as_second();
    let entry = snaps.iter().map(|s| s.createtxg).max().map(|txg| Entry { txg, start, end });
    Ok((snaps, entry))
}

/// The txg journal kept for this root's pool (see `zoffsite_core::journal`).
pub fn load_journal(zfs: &Zfs, cfg: &BoxConfig) -> Result<Journal, String> {
    let guid = zfs.pool_guid(cfg.root.pool()).map_err(|e| e.to_string())?;
    let loaded = journal::load(&cfg.journal, guid, &cfg.root).map_err(|e| e.to_string())?;
    if let Some(was) = loaded.replaced {
        eprintln!(
            "zoffsite: warning: txg journal {} was kept for {was}, not pool {guid} root {}; starting a new one",
            cfg.journal.display(),
            cfg.root
        );
    }
    Ok(loaded.journal)
}

/// Adds this run's entry to the journal (after a clock check passed, with
/// the real clock: an entry from a wrong clock would skew every bound).
pub fn record_journal(cfg: &BoxConfig, mut j: Journal, entry: Option<Entry>) {
    if let Some(e) = entry {
        if j.record(e) {
            if let Err(e) = journal::save(&cfg.journal, &j) {
                eprintln!("zoffsite: warning: cannot record this run in the txg journal: {e}");
            }
        }
    }
}

fn when(t: Option<i64>) -> String {
    t.and_then(|t| jiff::Timestamp::from_second(t).ok())
        .map_or_else(|| "receive time unknown".into(), |t| format!("received {t}"))
}

/// Most names per `zfs destroy` call (keeps the argv well under limits).
const DESTROY_CHUNK: usize = 200;

pub fn run(args: BoxPruneArgs) -> Exit {
    let cfg = match load_box_config(&args.config) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let Some(policy) = cfg.keep else {
        eprintln!(
            "zoffsite: {}: [keep] is not configured, so nothing is ever pruned on the box; add e.g.\n[keep]\nlast = 7\ndaily = 14\nweekly = 8",
            args.config.display()
        );
        return Exit::Usage;
    };
    let (now, fake_now) = match now_or_exit(&args.now) {
        Ok(x) => x,
        Err(code) => return code,
    };
    let _lock = match common::lock_unless_dry_run(&args.config, args.dry_run) {
        Ok(l) => l,
        Err(code) => return code,
    };
    let zfs = Zfs::new();
    let root = &cfg.root;
    let (snaps, entry) = match list_timed(&zfs, root) {
        Ok(s) => s,
        Err(e @ ZfsError::NotFound { .. }) => {
            eprintln!("zoffsite: box root {root} ({e}); fix root in {}", args.config.display());
            return Exit::Usage;
        }
        Err(e) => {
            eprintln!("zoffsite: box prune: cannot list snapshots under {root}: {e}");
            return Exit::Error;
        }
    };
    let last = match lastrun(&zfs, root) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("zoffsite: box prune: cannot read {} on {root}: {e}", boxside::LASTRUN_PROPERTY);
            return Exit::Error;
        }
    };
    let journal = match load_journal(&zfs, &cfg) {
        Ok(j) => j,
        Err(e) => {
            eprintln!("zoffsite: box prune refused, nothing is destroyed: {e}");
            if args.json {
                print_json(&args, now, root, &[], Some(&e), Exit::Error);
            }
            return Exit::Error;
        }
    };
    let decisions = match boxside::plan_box_prune(root, &policy, cfg.min_age, &snaps, &journal, last, now) {
        Ok(d) => d,
        Err(BoxError::Clock(e)) => {
            eprintln!("zoffsite: box prune refused: {e}");
            if args.json {
                print_json(&args, now, root, &[], Some(&e.to_string()), Exit::Error);
            }
            return Exit::Error;
        }
        Err(e @ BoxError::Policy(_)) => {
            eprintln!("zoffsite: {}: {e}", args.config.display());
            return Exit::Usage;
        }
    };
    let exit = apply(&zfs, root, &decisions, args.dry_run, args.json);
    if !args.dry_run && !fake_now {
        record_lastrun(&zfs, root, now);
        record_journal(&cfg, journal, entry);
    }
    if args.json {
        print_json(&args, now, root, &decisions, None, exit);
    }
    exit
}

/// Prints (dry run: every decision; otherwise what is destroyed) and,
/// unless `dry_run`, destroys.
fn apply(zfs: &Zfs, root: &Dataset, decisions: &[BoxDecision], dry_run: bool, quiet: bool) -> Exit {
    let mut doomed: BTreeMap<Dataset, Vec<SnapName>> = BTreeMap::new();
    for d in decisions {
        if !quiet && (dry_run || d.destroy) {
            let verb = if dry_run { "" } else { "destroying " };
            println!("{verb}{} ({}): {}", d.snapshot, when(d.received), d.verdict);
        }
        if d.destroy {
            match Snapshot::new(&d.snapshot) {
                Ok(s) if s.dataset.is_within(root) => doomed.entry(s.dataset).or_default().push(s.name),
                _ => eprintln!("zoffsite: box prune: not destroying {}: not a snapshot under {root}", d.snapshot),
            }
        }
    }
    if dry_run {
        return Exit::Ok;
    }
    let mut exit = Exit::Ok;
    for (ds, names) in doomed {
        for chunk in names.chunks(DESTROY_CHUNK) {
            if let Err(e) = zfs.destroy_received_snapshots(root, &ds, chunk) {
                eprintln!("zoffsite: box prune: {e}");
                exit = Exit::Partial;
            }
        }
    }
    exit
}

fn print_json(
    args: &BoxPruneArgs,
    now: jiff::Timestamp,
    root: &Dataset,
    decisions: &[BoxDecision],
    error: Option<&str>,
    exit: Exit,
) {
    let doc = serde_json::json!({
        "dry_run": args.dry_run,
        "now": now.to_string(),
        "root": root,
        "error": error,
        "decisions": decisions,
        "exit_code": exit.code(),
    });
    println!("{}", serde_json::to_string_pretty(&doc).expect("serializes"));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serve_stamps_the_property_box_retention_reads() {}

    #[test]
    fn destroy_never_leaves_the_root() {
        // Refused before any zfs runs (the binary does not exist).
        let z = Zfs::with_binary("/nonexistent/zfs");
        let root = Dataset::new("offsite/home").unwrap();
        let name = [SnapName::new("zoffsite-1").unwrap()];
        for outside in ["offsite", "offsite/homework", "tank/home"] {
            let e = z.destroy_received_snapshots(&root, &Dataset::new(outside).unwrap(), &name).unwrap_err();
            assert!(e.to_string().contains("not under the box root"), "{e}");
        }
        // Inside, it would run zfs (and here fail to spawn it).
        let e = z.destroy_received_snapshots(&root, &Dataset::new("offsite/home/tank/a").unwrap(), &name).unwrap_err();
        assert!(!e.to_string().contains("not under the box root"), "{e}");
        // A forged decision outside the root is skipped by apply as well.
        let d = [BoxDecision {
            snapshot: "tank/data@zoffsite-1".into(),
            received: Some(1),
            aged_from: Some(1),
            creation: 1,
            destroy: true,
            verdict: "destroy".into(),
        }];
        assert_eq!(apply(&z, &root, &d, false, true), Exit::Ok);
    }

    #[test]
    fn config_errors_are_usage() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("box.toml");
        assert_eq!(load_box_config(&p).unwrap_err(), Exit::Usage);
        std::fs::write(&p, "root = \"offsite/home\"\nkeeep = 1\n").unwrap();
        assert_eq!(load_box_config(&p).unwrap_err(), Exit::Usage);
        std::fs::write(&p, "root = \"offsite/home\"\n").unwrap();
        assert_eq!(load_box_config(&p).unwrap().root.as_str(), "offsite/home");
    }
}
