//! `zoffsite backup`: snapshot the selection, send it raw to every target.
//!
//! The run itself is `zoffsite_exec::replicate` (its module docs give the
//! order of work and why). Here: the config and its files are checked
//! first (a bad config changes nothing), the run lock is taken (none for
//! `-n`, which changes nothing anywhere), and the run is rendered: text and
//! progress as it goes, the JSON report at the end with `--json`; and
//! `[notify]` hears of the start and the end ([`common::notified`]).
//! `--target NAME` runs it as if the config had that target alone (the
//! snapshot is taken all the same; the other targets get it next time).

use std::sync::Arc;

use zoffsite_core::notify::Command;
use zoffsite_exec::proto::client::Session;
use zoffsite_exec::replicate::{self, Options};
use zoffsite_exec::zfs::Zfs;

use crate::cli::BackupArgs;
use crate::cmd::common;
use crate::exit::{Code as _, Exit};
use crate::ui::Ui;

pub(crate) fn run(args: &BackupArgs) -> Exit {
    let mut ui = Ui::new(args.json, args.dry_run);
    // `--target NAME`: the run as if the config had only that target.
    let Some(cfg) = common::config_for_target(&args.config, args.target.as_deref(), &mut ui) else {
        return ui.bail();
    };
    common::notified(&cfg, Command::Backup, args.dry_run, &mut ui, |ui| {
        let Some(_lock) = common::lock_unless_dry_run(&args.config, args.dry_run, ui) else { return ui.bail_doc() };
        let opts = Options {
            dry_run: args.dry_run,
            force_snapshot: args.force_snapshot,
            config_path: &args.config,
            now: jiff::Timestamp::now(),
            connect: Arc::new(Session::connect),
        };
        let mut report = replicate::backup(&cfg, &Zfs::new(), &opts, ui);
        report.exit_code = ui.exit().code();
        crate::ui::doc(&report)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn missing_config_file_names_the_file_and_the_fix() {
        let e = common::load_config(Path::new("/nonexistent/zoffsite.toml")).unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("/nonexistent/zoffsite.toml") && msg.contains("-c FILE"), "{msg}");
        assert!(e.hint.is_some_and(|h| h.starts_with("create it") && h.contains("examples/zoffsite.toml")));
    }
}
