//! `zoffsite status`: for every target and dataset, the newest snapshot on
//! the source and on the box, its age and how many bytes the box is behind.
//! Read-only on both sides. Exits 6 (stale) when any dataset on any target
//! is older than the target's `max_age`, holds nothing, or diverged, so it
//! serves as a monitoring check.

use std::collections::BTreeMap;

use serde::Serialize;
use zoffsite_core::names::{Dataset, SnapName};
use zoffsite_core::status::{self, DatasetStatus, State};
use zoffsite_exec::proto::client::Session;
use zoffsite_exec::zfs::Zfs;

use zoffsite_core::config::Config;

use crate::cli::StatusArgs;
use crate::cmd::common;
use crate::exit::{Code as _, Exit};
use crate::ui::Ui;

#[derive(Debug, Serialize)]
struct TargetStatus {
    name: String,
    max_age: u64,
    error: Option<String>,
    datasets: Vec<DatasetStatus>,
}

pub(crate) fn run(args: &StatusArgs) -> Exit {
    let mut ui = Ui::new(args.json, true);
    let Some(cfg) = common::config(&args.config, &mut ui) else { return ui.bail() };
    let now = jiff::Timestamp::now().as_second();
    let targets = status(&cfg, args, &Zfs::new(), now, &mut ui);
    if ui.json() {
        let doc = serde_json::json!({
            "now": now,
            "errors": ui.errors(),
            "targets": targets,
            "exit_code": ui.exit().code(),
        });
        println!("{}", serde_json::to_string_pretty(&doc).expect("serializes"));
    } else {
        print_table(&targets);
    }
    ui.exit()
}

/// Plans nothing and changes nothing: lists both sides and evaluates them.
fn status(cfg: &Config, args: &StatusArgs, zfs: &Zfs, now: i64, ui: &mut Ui) -> Vec<TargetStatus> {
    let (sel, missing) = match common::list_selection(cfg, zfs, &args.config) {
        Ok(x) => x,
        Err(e) => {
            ui.err(Exit::Error, format_args!("cannot list the configured datasets: {e}"));
            return Vec::new();
        }
    };
    for m in missing {
        ui.err(Exit::Partial, m);
    }
    let datasets = sel.datasets();
    let (snaps, bookmarks) = match zfs.list_snapshots_and_bookmarks(&datasets) {
        Ok(l) => (l.snapshots, l.bookmarks),
        Err(e) => {
            ui.err(Exit::Error, format_args!("cannot list snapshots and bookmarks: {e}"));
            return Vec::new();
        }
    };
    let mut out = Vec::new();
    for t in &cfg.targets {
        let mut ts = TargetStatus { name: t.name.clone(), max_age: t.max_age.as_secs(), error: None, datasets: vec![] };
        let listing = Session::connect(t).and_then(|mut s| {
            let l = s.list(&datasets);
            s.close();
            l
        });
        match listing {
            Ok(remote) => {
                let max_age = i64::try_from(t.max_age.as_secs()).unwrap_or(i64::MAX);
                ts.datasets = datasets
                    .iter()
                    .map(|d| status::evaluate(d, &snaps, &bookmarks, remote.get(d), now, max_age))
                    .collect();
                fill_behind(zfs, &mut ts.datasets);
                if ts.datasets.iter().any(|d| d.state.is_problem()) {
                    // The table (or the JSON) says which and why.
                    ui.raise(Exit::Stale);
                }
            }
            Err(e) => {
                // The table shows it as UNREACHABLE; the JSON has it per target.
                ts.error = Some(format!("target {}: {e}", t.name));
                ui.raise(Exit::Target);
            }
        }
        out.push(ts);
    }
    out
}

/// `written@SNAP` for each dataset whose box-newest is still a snapshot on
/// the source (one zfs call per distinct snapshot name, usually one).
fn fill_behind(zfs: &Zfs, rows: &mut [DatasetStatus]) {
    let mut by_name: BTreeMap<SnapName, Vec<Dataset>> = BTreeMap::new();
    for r in rows.iter() {
        if let Some(b) = &r.box_newest {
            by_name.entry(b.name.clone()).or_default().push(r.dataset.clone());
        }
    }
    for (name, ds) in by_name {
        // Bookmarks have no `written@`; those rows keep `None`.
        let Ok(found) = zfs.written_since(&name, &ds) else { continue };
        for (d, bytes) in found {
            if let Some(r) = rows.iter_mut().find(|r| r.dataset == d) {
                r.behind_bytes = Some(bytes);
            }
        }
    }
}

fn print_table(targets: &[TargetStatus]) {
    for t in targets {
        println!("target {} (max_age {}):", t.name, age(i64::try_from(t.max_age).unwrap_or(i64::MAX)));
        if let Some(e) = &t.error {
            println!("  UNREACHABLE: {e}");
            continue;
        }
        for d in &t.datasets {
            let on_box = d.box_newest.as_ref().map_or("-".to_owned(), |p| format!("@{}", p.name));
            let on_src = d.source_newest.as_ref().map_or("-".to_owned(), |p| format!("@{}", p.name));
            let behind = d.behind_bytes.map_or("?".to_owned(), |b| format!("{b} B"));
            let state = match d.state {
                State::Current => "ok",
                State::Behind => "behind",
                State::Stale => "STALE",
                State::Never => "NEVER",
                State::Diverged => "DIVERGED",
            };
            println!(
                "  {state:<8} {}  box {on_box} ({} old)  source {on_src}  behind {behind}{}",
                d.dataset,
                d.age.map_or("-".to_owned(), age),
                if d.partial { "  [interrupted transfer waiting]" } else { "" }
            );
        }
    }
}

fn age(secs: i64) -> String {
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s if s < 172_800 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86400),
    }
}
