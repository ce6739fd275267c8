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
//!
//! The gathering and the destroys are [`zoffsite_exec::boxstate`]'s; this
//! command plans with core, shows, and has them carried out.

use zoffsite_core::boxside::{self, BoxDecision, BoxError};
use zoffsite_core::names::Dataset;
use zoffsite_exec::boxstate;
use zoffsite_exec::zfs::{Zfs, ZfsError};

use crate::cli::BoxPruneArgs;
use crate::cmd::common;
use crate::exit::{Code as _, Exit};
use crate::ui::Ui;

fn when(t: Option<i64>) -> String {
    t.and_then(|t| jiff::Timestamp::from_second(t).ok())
        .map_or_else(|| "receive time unknown".into(), |t| format!("received {t}"))
}

pub(crate) fn run(args: &BoxPruneArgs) -> Exit {
    let mut ui = Ui::new(args.json, args.dry_run);
    let Some(cfg) = common::box_config(&args.config, &mut ui) else { return ui.bail() };
    let Some(policy) = cfg.keep else {
        ui.err(
            Exit::Usage,
            format_args!(
                "{}: [keep] is not configured, so nothing is ever pruned on the box; add e.g.\n[keep]\nlast = 7\ndaily = 14\nweekly = 8",
                args.config.display()
            ),
        );
        return ui.bail();
    };
    let (now, fake_now) = match common::now_or_clock(args.now.as_deref()) {
        Ok(x) => x,
        Err(e) => {
            ui.err(Exit::Usage, e);
            return ui.bail();
        }
    };
    let Some(_lock) = common::lock_unless_dry_run(&args.config, args.dry_run, &mut ui) else { return ui.bail() };
    let zfs = Zfs::new();
    let root = &cfg.root;
    // Gather.
    let (snaps, entry) = match boxstate::list_timed(&zfs, root) {
        Ok(s) => s,
        Err(e @ ZfsError::NotFound { .. }) => {
            ui.err(Exit::Usage, format_args!("box root {root} ({e}); fix root in {}", args.config.display()));
            return ui.bail();
        }
        Err(e) => {
            ui.err(Exit::Error, format_args!("box prune: cannot list snapshots under {root}: {e}"));
            return ui.bail();
        }
    };
    let last = match boxstate::lastrun(&zfs, root, &mut ui) {
        Ok(l) => l,
        Err(e) => {
            ui.err(Exit::Error, format_args!("box prune: cannot read {} on {root}: {e}", boxside::LASTRUN_PROPERTY));
            return ui.bail();
        }
    };
    let journal = match boxstate::load_journal(&zfs, &cfg, &mut ui) {
        Ok(j) => j,
        Err(e) => {
            ui.err(Exit::Error, format_args!("box prune refused, nothing is destroyed: {e}"));
            if args.json {
                print_json(args, now, root, &[], Some(&e.to_string()), ui.exit());
            }
            return ui.exit();
        }
    };
    // Plan.
    let decisions = match boxside::plan_box_prune(root, &policy, cfg.min_age, &snaps, &journal, last, now) {
        Ok(d) => d,
        Err(BoxError::Clock(e)) => {
            ui.err(Exit::Error, format_args!("box prune refused: {e}"));
            if args.json {
                print_json(args, now, root, &[], Some(&e.to_string()), ui.exit());
            }
            return ui.exit();
        }
        Err(e @ BoxError::Policy(_)) => {
            ui.err(Exit::Usage, format_args!("{}: {e}", args.config.display()));
            return ui.bail();
        }
    };
    // Show (dry run: every decision; otherwise what is destroyed).
    for d in decisions.iter().filter(|d| args.dry_run || d.destroy) {
        let verb = if args.dry_run { "" } else { "destroying " };
        ui.say(format_args!("{verb}{} ({}): {}", d.snapshot, when(d.received), d.verdict));
    }
    // Execute.
    if !args.dry_run {
        boxstate::destroy(&zfs, root, &decisions, &mut ui);
        if !fake_now {
            boxstate::record_lastrun(&zfs, root, now, &mut ui);
            boxstate::record_journal(&cfg, journal, entry, &mut ui);
        }
    }
    if args.json {
        print_json(args, now, root, &decisions, None, ui.exit());
    }
    ui.exit()
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
