//! `zoffsite doctor [--box | --source] [-c CONFIG] [--json] [--output FILE]`:
//! the security posture of this machine, one check per line.
//!
//! The facts are gathered by [`zoffsite_exec::doctor`], the checks decided
//! by [`zoffsite_core::doctor`]; this command picks the side, shows the
//! report and exits with its severity (docs/exit-codes.md: 0 all ok, 6 a
//! warning or an unknown, 3 a failure). With `--output FILE` the JSON
//! report is also written to FILE (atomically, 0644), which the box's audit
//! timer does at [`zoffsite_core::doctor::AUDIT_PATH`] for `serve`.
//!
//! Which side, without `--box` or `--source`: the box when its config
//! (`/etc/zoffsite/box.toml`) exists and the source's does not, the source
//! in the opposite case; otherwise it asks (exit 2), rather than audit the
//! wrong machine and report its findings as the other's.

use std::path::{Path, PathBuf};

use zoffsite_core::doctor::{Report, Side};
use zoffsite_exec::doctor::{self, Host};

use crate::cli::DoctorArgs;
use crate::cmd::common;
use crate::exit::{Code as _, Exit};
use crate::ui::{StopKind, Ui};

pub(crate) fn run(args: &DoctorArgs) -> Exit {
    let mut ui = Ui::new(args.json, true);
    let side = match pick_side(args, Path::new(BOX).exists(), Path::new(SOURCE).exists()) {
        Ok(s) => s,
        Err(e) => {
            ui.err(Exit::Usage, e);
            return ui.bail();
        }
    };
    let now = jiff::Timestamp::now().as_second();
    let host = Host::default();
    let report = match side {
        Side::Box => {
            let path = args.config.clone().unwrap_or_else(|| PathBuf::from(BOX));
            let Some(cfg) = common::box_config(&path, &mut ui) else { return ui.bail() };
            if !zoffsite_exec::system::is_root() {
                ui.warning("doctor --box reads what only root may (efivars, the LUKS header, sshd -T, nft): run it as root, or most checks say unknown");
            }
            doctor::box_report(&host, &cfg, now)
        }
        Side::Source => {
            let path = args.config.clone().unwrap_or_else(|| PathBuf::from(SOURCE));
            // Its key files need not exist: doctor reports a missing one as
            // a finding (`source.box-ssh`).
            let cfg = match common::parse_config(&path) {
                Ok(c) => c,
                Err(p) => {
                    ui.stop(StopKind::Config, p.message, p.hint);
                    return ui.bail();
                }
            };
            doctor::source_report(&host, &cfg, &path, now)
        }
    };
    ui.raise(report.severity());
    let mut doc = document(&report, side, now, ui.exit());
    if let Some(out) = &args.output {
        let text = serde_json::to_string_pretty(&doc).expect("serializes") + "\n";
        if let Err(e) = doctor::write_report(out, text.as_bytes()) {
            ui.err(Exit::Error, format_args!("cannot write the report: {e}"));
            doc["exit_code"] = ui.exit().code().into();
            doc["errors"] = serde_json::json!(ui.errors());
        }
    }
    if ui.json() {
        println!("{}", serde_json::to_string_pretty(&doc).expect("serializes"));
    } else if ui.text() {
        print!("{}", report.text());
    } else {
        print!("{}", not_ok(&report.text()));
    }
    ui.exit()
}

const BOX: &str = zoffsite_core::boxside::DEFAULT_PATH;
const SOURCE: &str = zoffsite_core::config::DEFAULT_PATH;

/// `--box`, `--source`, or the side whose default config exists alone.
fn pick_side(args: &DoctorArgs, box_config: bool, source_config: bool) -> Result<Side, String> {
    match (args.box_side, args.source, box_config, source_config) {
        (true, _, _, _) => Ok(Side::Box),
        (_, true, _, _) => Ok(Side::Source),
        (_, _, true, false) => Ok(Side::Box),
        (_, _, false, true) => Ok(Side::Source),
        (_, _, true, true) => {
            Err(format!("both {BOX} and {SOURCE} exist: say which machine this is, --box or --source"))
        }
        _ => Err(format!(
            "neither {BOX} nor {SOURCE} exists: say which machine this is, --box or --source (and -c FILE)"
        )),
    }
}

/// `-q`: the report's text without the ok checks, and nothing at all when
/// every check is ok (the exit code says so).
fn not_ok(text: &str) -> String {
    if text.lines().all(|l| l.starts_with("ok ") || l.starts_with("ok:")) {
        return String::new();
    }
    text.lines().filter(|l| !l.starts_with("ok ")).map(|l| format!("{l}\n")).collect()
}

/// The JSON document (docs/json.md): core's report, the side, the time and
/// the exit code.
fn document(report: &Report, side: Side, now: i64, exit: Exit) -> serde_json::Value {
    let mut report = report.clone();
    report.set_generated_at(now);
    let mut doc = serde_json::to_value(&report).expect("serializes");
    doc["side"] = match side {
        Side::Box => "box",
        Side::Source => "source",
    }
    .into();
    doc["exit_code"] = exit.code().into();
    doc
}

#[cfg(test)]
mod tests {
    use super::*;
    use zoffsite_core::doctor::{Check, CheckId};

    fn args(b: bool, s: bool) -> DoctorArgs {
        DoctorArgs { box_side: b, source: s, config: None, json: false, output: None }
    }

    #[test]
    fn the_side_is_said_or_unambiguous() {
        assert_eq!(pick_side(&args(true, false), false, true), Ok(Side::Box));
        assert_eq!(pick_side(&args(false, true), true, false), Ok(Side::Source));
        assert_eq!(pick_side(&args(false, false), true, false), Ok(Side::Box));
        assert_eq!(pick_side(&args(false, false), false, true), Ok(Side::Source));
        assert!(pick_side(&args(false, false), true, true).unwrap_err().contains("--box or --source"));
        assert!(pick_side(&args(false, false), false, false).unwrap_err().contains("neither"));
    }

    fn report() -> Report {
        let mut r = Report::new();
        r.push(Check::ok(CheckId::SecureBoot, "Secure Boot is enabled, in user mode"));
        r.push(Check::unknown(CheckId::BiosPassword, "not exposed", "look in the firmware setup"));
        r
    }

    #[test]
    fn text_is_one_line_per_check_with_the_fix_below() {
        let t = report().text();
        assert_eq!(
            t,
            "ok       box.secure-boot             Secure Boot is enabled, in user mode\n\
             unknown  box.bios-password           not exposed\n         fix: look in the firmware setup\n\
             unknown: 1 ok, 0 warn, 1 unknown, 0 fail\n"
        );
        assert_eq!(
            not_ok(&t),
            "unknown  box.bios-password           not exposed\n         fix: look in the firmware setup\n\
             unknown: 1 ok, 0 warn, 1 unknown, 0 fail\n",
            "-q: the ok checks left out"
        );
        let mut ok = Report::new();
        ok.push(Check::ok(CheckId::SecureBoot, "on"));
        assert_eq!(not_ok(&ok.text()), "", "-q: nothing when all is well");
    }

    /// The exit codes of docs/exit-codes.md, and the JSON of docs/json.md.
    #[test]
    fn json_and_exit_codes() {
        let mut r = report();
        assert_eq!(r.severity().code(), 6, "an unknown is not a pass");
        let doc = document(&r, Side::Box, 1_796_000_000, r.severity());
        assert_eq!(doc["status"], "unknown");
        assert_eq!(doc["side"], "box");
        assert_eq!(doc["generated_at"], 1_796_000_000);
        assert_eq!(doc["exit_code"], 6);
        assert_eq!(doc["counts"], serde_json::json!({"ok": 1, "warn": 0, "unknown": 1, "fail": 0}));
        assert_eq!(doc["checks"][1]["fix"], "look in the firmware setup");
        assert!(doc["checks"][0].get("fix").is_none());
        r.push(Check::fail(CheckId::Firewall, "ssh open", "load the rule set"));
        assert_eq!(r.severity().code(), 3);
        let mut ok = Report::new();
        ok.push(Check::ok(CheckId::SecureBoot, "on"));
        assert_eq!(ok.severity().code(), 0);
        let doc = document(&ok, Side::Source, 0, ok.severity());
        assert_eq!((doc["side"].as_str(), doc["exit_code"].as_u64()), (Some("source"), Some(0)));
        // What the box's audit timer writes is what the source reads
        // (serve hands it over); a source's report is not a box's.
        let text = serde_json::to_string_pretty(&document(&r, Side::Box, 1_796_000_000, r.severity())).unwrap();
        if let Err(e) = zoffsite_core::doctor::boxaudit::parse(&text) {
            panic!("{e}: {text}");
        }
        let posture = zoffsite_core::doctor::boxaudit::Posture::judge(
            &zoffsite_core::doctor::boxaudit::Fetched::Report(text.clone()),
            1_796_000_060,
        );
        assert!(posture.line().contains("fail"), "{}", posture.line());
        let theirs = serde_json::to_string(&document(&r, Side::Source, 1_796_000_000, r.severity())).unwrap();
        assert!(zoffsite_core::doctor::boxaudit::parse(&theirs).is_err(), "a source's report is not a box's");
        let docs = include_str!("../../../../docs/json.md");
        assert!(docs.contains("zoffsite doctor"), "docs/json.md documents doctor");
    }
}
