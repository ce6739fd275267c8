//! `zoffsite prune`: source retention of zoffsite's own snapshots.
//!
//! Only snapshots named `zoffsite-*` are candidates; a dataset's newest
//! snapshot and every held snapshot (each target's incremental base carries
//! a `zoffsite-TARGET` hold) are always kept. Times are the snapshots'
//! `creation` on the source, whose clock is trusted; `--now` replaces the
//! clock for what-if runs. The work is `zoffsite_exec::prune`, which `backup`
//! runs too, after it sends.

use zoffsite_core::config::Config;
use zoffsite_core::notify::Command;
use zoffsite_exec::prune::{self, Prune};
use zoffsite_exec::zfs::Zfs;

use crate::cli::PruneArgs;
use crate::cmd::common;
use crate::exit::{Code as _, Exit};
use crate::ui::Ui;

pub(crate) fn run(args: &PruneArgs) -> Exit {
    let mut ui = Ui::new(args.json, args.dry_run);
    let Some(cfg) = common::config(&args.config, &mut ui) else { return ui.bail() };
    common::notified(&cfg, Command::Prune, args.dry_run, &mut ui, |ui| prune(&cfg, args, ui))
}

/// The run, and its JSON document.
fn prune(cfg: &Config, args: &PruneArgs, ui: &mut Ui) -> String {
    let Some(policy) = &cfg.source.keep else {
        ui.err(
            Exit::Usage,
            format_args!(
                "{}: source.keep is not configured, so nothing is ever pruned; add e.g.\n[source.keep]\nlast = 24\ndaily = 7",
                args.config.display()
            ),
        );
        return ui.bail_doc();
    };
    let now = match &args.now {
        Some(t) => match common::parse_now(t) {
            Ok(t) => t,
            Err(e) => {
                ui.err(Exit::Usage, e);
                return ui.bail_doc();
            }
        },
        None => jiff::Timestamp::now(),
    };
    let Some(_lock) = common::lock_unless_dry_run(&args.config, args.dry_run, ui) else { return ui.bail_doc() };
    let zfs = Zfs::new();
    let sel = match common::list_selection(cfg, &zfs, &args.config) {
        Ok((sel, missing)) => {
            for m in missing {
                ui.err(Exit::Partial, m);
            }
            sel
        }
        Err(e) => {
            ui.err(Exit::Error, format_args!("cannot list the configured datasets: {e}"));
            return ui.bail_doc();
        }
    };
    let how = Prune { policy, now, dry_run: args.dry_run };
    let decisions = prune::prune(&zfs, &sel.datasets(), &how, ui);
    crate::ui::doc(
        &serde_json::json!({ "dry_run": args.dry_run, "now": now.to_string(), "decisions": decisions, "exit_code": ui.exit().code() }),
    )
}
