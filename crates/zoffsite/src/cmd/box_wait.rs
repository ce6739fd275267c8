//! `zoffsite box wait NAME [--timeout DURATION] [--force] [-n] [--json]`:
//! on the source, after the owner powers on a freshly set up box. Waits
//! (bounded) for the box's WireGuard handshake on this machine's `zo-NAME`
//! and then for a session with its pinned host key, shows the box's audit
//! (by doctor's renderer), makes sure `zoffsite-backup.timer` is enabled
//! and started, and runs the first backup to that target only.
//!
//! The decisions (when to wait on, when to stop, what the audit allows,
//! the timer) are [`zoffsite_core::provision::wait`]'s; the observing and
//! the run are [`zoffsite_exec::boxwait`]'s, whose backup is
//! [`zoffsite_exec::replicate`], `zoffsite backup`'s driver. This command
//! loads the config, picks the target, wires the real observers (`wg`,
//! ssh, the clock) and renders; the status line of the wait goes to stderr
//! on a terminal only.
//!
//! Exit codes (docs/exit-codes.md): the first backup's; 4 when the box did
//! not come up within the timeout or its host key is not the pinned one;
//! 3 when its audit has a failed check (nothing enabled or sent; with
//! `--force` the backup runs and 3 stays); 1 when this machine's end of
//! the tunnel is down or `systemctl` failed; 5 when a run holds the lock;
//! 2 for a bad command line, config or target name.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use zoffsite_core::provision::wait::POLL_SECS;
use zoffsite_exec::boxwait::{self, Observers, Options, System};
use zoffsite_exec::keepalive::Wg;
use zoffsite_exec::proto::client::Session;
use zoffsite_exec::zfs::Zfs;
use zoffsite_exec::{lock, process, system};

use crate::cli::BoxWaitArgs;
use crate::cmd::common;
use crate::exit::{Code as _, Exit};
use crate::ui::Ui;

pub(crate) fn run(args: &BoxWaitArgs) -> Exit {
    let mut ui = Ui::new(args.json, args.dry_run);
    let Some(cfg) = common::config(&args.config, &mut ui) else { return ui.bail() };
    let Some(target) = cfg.targets.iter().find(|t| t.name == args.name) else {
        let names: Vec<&str> = cfg.targets.iter().map(|t| t.name.as_str()).collect();
        ui.err(
            Exit::Usage,
            format_args!(
                "{} has no target named {:?} (it has: {}): `zoffsite box new {}` makes a box and its target",
                args.config.display(),
                zoffsite_core::protocol::sanitize(&args.name, 40),
                if names.is_empty() { "none".to_owned() } else { names.join(", ") },
                zoffsite_core::protocol::sanitize(&args.name, 40),
            ),
        );
        return ui.bail();
    };
    let wg = Wg::new();
    let interface = boxwait::interface(target);
    let mut tunnel = || boxwait::observe_tunnel(Path::new("/"), &wg, interface.as_deref());
    let mut clock = || jiff::Timestamp::now().as_second();
    let mut sleep = std::thread::sleep;
    let mut obs =
        Observers { tunnel: &mut tunnel, connect: Arc::new(Session::connect), clock: &mut clock, sleep: &mut sleep };
    let dry_run = args.dry_run;
    let take_lock = || if dry_run { Ok(None) } else { lock::acquire_default(&args.config).map(Some) };
    let sys = System {
        root: system::is_root(),
        systemd: boxwait::systemd_booted(),
        systemctl: process::find_program("systemctl"),
        lock: &take_lock,
    };
    let opts = Options {
        target,
        timeout: args.timeout,
        poll: Duration::from_secs(POLL_SECS),
        dry_run,
        force: args.force,
        config_path: &args.config,
    };
    let out = boxwait::run(&cfg, &Zfs::new(), &opts, &mut obs, &sys, &mut ui);
    let mut report = out.report;
    if let (Some(b), Some(severity)) = (report.backup.as_mut(), out.backup) {
        b.exit_code = severity.code();
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&document(&report, &ui)).expect("serializes"));
    }
    ui.exit()
}

/// The `--json` document (docs/json.md): core's report, the errors and
/// the exit code.
fn document(report: &zoffsite_core::provision::wait::WaitReport, ui: &Ui) -> serde_json::Value {
    let mut doc = serde_json::to_value(report).expect("serializes");
    doc["errors"] = serde_json::json!(ui.errors());
    doc["exit_code"] = ui.exit().code().into();
    doc
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser as _;
    use zoffsite_core::provision::wait::{Phase, WaitReport, DEFAULT_TIMEOUT_SECS};

    fn parse(args: &[&str]) -> BoxWaitArgs {
        let cli = crate::cli::Cli::try_parse_resolved([&["zoffsite", "box", "wait"], args].concat()).unwrap();
        match cli.command {
            crate::cli::Command::Box(crate::cli::BoxCommand::Wait(a)) => a,
            _ => panic!("not box wait"),
        }
    }

    #[test]
    fn the_flags_and_their_defaults() {
        let a = parse(&["friend"]);
        assert_eq!(a.name, "friend");
        assert_eq!(a.timeout, Duration::from_secs(DEFAULT_TIMEOUT_SECS), "the default is core's");
        assert_eq!(a.config, Path::new(zoffsite_core::config::DEFAULT_PATH));
        assert!(!a.force && !a.dry_run && !a.json);
        let a = parse(&["friend", "--timeout", "2h", "-c", "/tmp/z.toml", "-n", "--json", "--force"]);
        assert_eq!(a.timeout, Duration::from_secs(7200));
        assert_eq!(a.config, Path::new("/tmp/z.toml"));
        assert!(a.force && a.dry_run && a.json);
        let e = crate::cli::Cli::try_parse_from(["zoffsite", "box", "wait", "friend", "--timeout", "soon"]);
        assert!(e.is_err_and(|e| e.to_string().contains("--timeout")));
    }

    #[test]
    fn the_json_document_has_the_report_the_errors_and_the_exit_code() {
        let mut ui = Ui::new(true, false);
        ui.err(Exit::Target, "box friend did not come up within 30m");
        let report = WaitReport { target: "friend".into(), phases: vec![Phase::Tunnel], ..WaitReport::default() };
        let doc = document(&report, &ui);
        assert_eq!(doc["target"], "friend");
        assert_eq!(doc["phases"], serde_json::json!(["tunnel"]));
        assert_eq!(doc["exit_code"], 4);
        assert_eq!(doc["errors"][0], "box friend did not come up within 30m");
        for key in
            ["dry_run", "force", "interface", "handshake_age", "attempts", "waited", "box_posture", "timer", "backup"]
        {
            assert!(doc.get(key).is_some(), "{key} is always there");
        }
        let docs = include_str!("../../../../docs/json.md");
        assert!(docs.contains("zoffsite box wait"), "docs/json.md documents box wait");
    }
}
