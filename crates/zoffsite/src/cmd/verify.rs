//! `zoffsite verify`: without any key, checks that every target holds the
//! snapshot it last confirmed for each selected dataset, that whatever it
//! holds matches the source by GUID, and that its pool is healthy and
//! scrubbed. Read-only on both sides. `[notify]` hears of every run
//! (`--drill` too: the drill timer runs it). `--drill` shows the transfer's
//! progress on a terminal (as `backup` does), its total the source's own
//! estimate of the snapshot's stream.

use serde::Serialize;
use zoffsite_core::config::Config;
use zoffsite_core::holds;
use zoffsite_core::human;
use zoffsite_core::names::{Dataset, SnapName};
use zoffsite_core::notify::Command;
use zoffsite_core::parse::{HoldRow, SnapshotRow};
use zoffsite_core::verify::{self, DatasetCheck, PoolCheck, TreeDiff};
use zoffsite_exec::drill::{self, Pick};
use zoffsite_exec::proto::client::Session;
use zoffsite_exec::zfs::Zfs;

use crate::cli::VerifyArgs;
use crate::cmd::common;
use crate::exit::{Code as _, Exit};
use crate::ui::Ui;

/// `verify --drill --json`'s document (docs/json.md).
#[derive(Debug, Serialize)]
struct DrillJson<'a> {
    /// The drill's fields at the top level; absent when it could not run
    /// or failed.
    #[serde(flatten)]
    drill: Option<DrillDoc<'a>>,
    errors: &'a [String],
    exit_code: u8,
}

#[derive(Debug, Serialize)]
struct DrillDoc<'a> {
    dataset: &'a Dataset,
    snapshot: &'a SnapName,
    scratch: &'a Dataset,
    diff: &'a TreeDiff,
}

#[derive(Debug, Serialize)]
struct TargetVerify {
    name: String,
    error: Option<String>,
    pool: Option<PoolCheck>,
    datasets: Vec<DatasetCheck>,
}

pub(crate) fn run(args: &VerifyArgs) -> Exit {
    // Progress (on a terminal) only for a drill: nothing else moves.
    let mut ui = Ui::new(args.json, !args.drill);
    let Some(cfg) = common::config_for_target(&args.config, args.target.as_deref(), &mut ui) else {
        return ui.bail();
    };
    common::notified(&cfg, Command::Verify, false, &mut ui, |ui| {
        if args.drill {
            let d = drill(&cfg, args, &Zfs::new(), ui);
            let doc = DrillJson {
                drill: d.as_ref().map(|d| DrillDoc {
                    dataset: &d.dataset,
                    snapshot: &d.snapshot,
                    scratch: &d.scratch,
                    diff: &d.diff,
                }),
                errors: ui.errors(),
                exit_code: ui.exit().code(),
            };
            return crate::ui::doc(&doc);
        }
        let targets = verify(&cfg, args, &Zfs::new(), ui);
        crate::ui::doc(&serde_json::json!({ "targets": targets, "errors": ui.errors(), "exit_code": ui.exit().code() }))
    })
}

/// What both modes need from the source: the selected datasets, their
/// snapshots, and which of those are a target's confirmed base.
struct Source {
    datasets: Vec<Dataset>,
    snaps: Vec<SnapshotRow>,
    bases: Vec<HoldRow>,
}

fn source(cfg: &Config, args: &VerifyArgs, zfs: &Zfs, ui: &mut Ui) -> Option<Source> {
    let (sel, missing) = match common::list_selection(cfg, zfs, &args.config) {
        Ok(x) => x,
        Err(e) => {
            ui.err(Exit::Error, format_args!("cannot list the configured datasets: {e}"));
            return None;
        }
    };
    for m in missing {
        ui.err(Exit::Partial, m);
    }
    let datasets = sel.datasets();
    let (snaps, held) = match zfs.list_snapshots(&datasets) {
        Ok(l) => (l.snapshots, l.held),
        Err(e) => {
            ui.err(Exit::Error, format_args!("cannot list snapshots: {e}"));
            return None;
        }
    };
    // Only a held snapshot can be a target's confirmed base.
    let bases = match zfs.holds(&holds::held_ours(&snaps, &held)) {
        Ok(h) => h,
        Err(e) => {
            ui.err(Exit::Error, format_args!("cannot list holds: {e}"));
            return None;
        }
    };
    Some(Source { datasets, snaps, bases })
}

/// `verify --drill`: one dataset's confirmed (or a random) snapshot
/// fetched back, decrypted in scratch and compared with the source.
fn drill(cfg: &Config, args: &VerifyArgs, zfs: &Zfs, ui: &mut Ui) -> Option<drill::Drill> {
    let Source { datasets, snaps, bases } = source(cfg, args, zfs, ui)?;
    let Some(t) = cfg.targets.iter().find(|t| args.target.as_ref().is_none_or(|n| *n == t.name)) else {
        ui.err(Exit::Usage, "no target to drill with");
        return None;
    };
    let ds = match &args.dataset {
        Some(d) if datasets.contains(d) => d.clone(),
        Some(d) => {
            ui.err(Exit::Usage, format_args!("{d} is not among the selected datasets of {}", args.config.display()));
            return None;
        }
        None => {
            let Some(d) = datasets.first() else {
                ui.raise(Exit::Partial);
                return None;
            };
            d.clone()
        }
    };
    let pick = if args.random {
        Pick::RandomOf(snaps.iter().filter(|s| s.snapshot.dataset == ds).cloned().collect())
    } else {
        let Some(s) = holds::base(&bases, &t.name, &ds) else {
            ui.err(
                Exit::Partial,
                format_args!("target {} has confirmed no snapshot of {ds} yet: back it up first", t.name),
            );
            return None;
        };
        Pick::Named(s.name.clone())
    };
    let d = match drill::drill(zfs, t, &ds, pick, args.max_time, ui) {
        Ok(d) => d,
        Err(e) => {
            ui.err(Exit::Error, format_args!("drill of {ds} from {}: {:#}", t.name, anyhow::Error::from(e)));
            return None;
        }
    };
    ui.say(format_args!(
        "drill {ds}@{} from {}: {} files, {} compared, {} differences; scratch {} destroyed",
        d.snapshot,
        t.name,
        d.diff.files,
        human::bytes(d.diff.bytes),
        d.diff.different,
        d.scratch
    ));
    for p in &d.diff.differences {
        ui.err(Exit::Partial, format_args!("drill: {p}"));
    }
    if d.diff.different > 0 {
        ui.raise(Exit::Partial);
    }
    Some(d)
}

/// Every (selected) target's listing and pool health against the source.
fn verify(cfg: &Config, args: &VerifyArgs, zfs: &Zfs, ui: &mut Ui) -> Vec<TargetVerify> {
    let Some(Source { datasets, snaps, bases }) = source(cfg, args, zfs, ui) else { return Vec::new() };
    let now = jiff::Timestamp::now().as_second();
    let mut out = Vec::new();
    for t in cfg.targets.iter().filter(|t| args.target.as_ref().is_none_or(|n| *n == t.name)) {
        let mut tv = TargetVerify { name: t.name.clone(), error: None, pool: None, datasets: Vec::new() };
        let answers = Session::connect(t).and_then(|mut s| {
            let listing = s.list(&datasets)?;
            let health = s.health()?;
            s.close();
            Ok((listing, health))
        });
        let (listing, (pool, health, last_scrub)) = match answers {
            Ok(a) => a,
            Err(e) => {
                let msg = format!("target {}: {e}", t.name);
                ui.err(Exit::Target, &msg);
                tv.error = Some(msg);
                out.push(tv);
                continue;
            }
        };
        let pc = verify::check_pool(&pool, &health, last_scrub, now);
        for p in &pc.problems {
            ui.err(Exit::Partial, format_args!("target {}: {p}", t.name));
        }
        for w in &pc.warnings {
            ui.warning(format_args!("target {}: {w}", t.name));
        }
        for ds in &datasets {
            let source: Vec<_> = snaps.iter().filter(|s| s.snapshot.dataset == *ds).cloned().collect();
            let confirmed = holds::base(&bases, &t.name, ds);
            let c = verify::check_dataset(ds, &source, confirmed, listing.get(ds));
            let state = if c.problems.is_empty() { "ok" } else { "MISMATCH" };
            ui.say(format_args!("{}: {ds}: {state}, {} snapshot(s) match the source by GUID", t.name, c.matched));
            for p in &c.problems {
                ui.err(Exit::Partial, format_args!("target {}: {ds}: {p}", t.name));
            }
            tv.datasets.push(c);
        }
        let scrub = last_scrub.map_or("never".to_owned(), |s| {
            jiff::Timestamp::from_second(s).map_or_else(|_| s.to_string(), |t| t.to_string())
        });
        ui.say(format_args!("{}: pool {pool}: {health}, last scrub finished {scrub}", t.name));
        tv.pool = Some(pc);
        out.push(tv);
    }
    out
}
