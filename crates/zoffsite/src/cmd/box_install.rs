//! `zoffsite box install [--bundle PATH] --report-dir DIR [-n] [--json]`:
//! the installer on the box's USB stick, started by its unit at boot.
//! Gather ([`zoffsite_exec::boxinstall::gather`]), plan
//! ([`zoffsite_core::image::install::plan`]: refuse, with the reason and
//! the fix, at the first thing not right), execute
//! ([`zoffsite_exec::boxinstall::execute`]), and write the report (text
//! and JSON) into the report directory on the stick and print it on
//! stdout, which the unit sends to the console. With `-n`: the checks, the
//! plan and systemd-repart's own dry run; nothing changed, no report
//! written.
//!
//! Exit codes: 0 installed (or a dry run whose plan repart accepts), 1
//! refused or failed, 2 not root.

use serde_json::Value;
use zoffsite_core::image::install::{self, Outcome, Report};
use zoffsite_exec::boxinstall::{self, Env};
use zoffsite_exec::system;

use crate::cli::BoxInstallArgs;
use crate::exit::{Code as _, Exit};
use crate::ui::Ui;

pub(crate) fn run(args: &BoxInstallArgs) -> Exit {
    let mut ui = Ui::new(args.json, args.dry_run);
    if !system::is_root() {
        ui.err(Exit::Usage, "box install: run it as root (the stick's unit does): it reads efivars and writes disks");
        return ui.bail();
    }
    let env = Env::default();
    let now = jiff::Timestamp::now().as_second();
    let facts = boxinstall::gather(&env, &args.bundle, &args.report_dir, args.dry_run);
    let report = match install::plan(&facts) {
        Err(refused) => Report::refused(*refused, now),
        Ok(plan) if args.dry_run => {
            let mut r = Report::planned(&plan, now, Outcome::DryRun);
            if let Err(e) = boxinstall::repart_check(&env, &plan) {
                r.outcome = Outcome::Refused {
                    reason: format!("systemd-repart refuses the plan: {e}"),
                    fix: "systemd-repart's message says why".into(),
                };
            }
            r
        }
        Ok(plan) => {
            let mut r = Report::planned(&plan, now, Outcome::Installed);
            boxinstall::execute(&env, &plan, &args.bundle, &mut r, &args.report_dir, &mut ui);
            r
        }
    };
    match &report.outcome {
        Outcome::Installed | Outcome::DryRun => {}
        Outcome::Refused { reason, .. } => ui.err(Exit::Error, format_args!("box install: refused: {reason}")),
        Outcome::Failed { step, error, .. } => ui.err(Exit::Error, format_args!("box install: {step}: {error}")),
    }
    // The report on the stick: the only place the recovery key is written.
    // Not with -n (it writes nothing), nor when the directory was the
    // problem.
    let mut written = None;
    if !args.dry_run && facts.report_dir.is_ok() {
        match boxinstall::write_report(&args.report_dir, &report) {
            Ok(name) => written = Some(name),
            Err(e) => ui.err(Exit::Error, format_args!("box install: {e}; the report below is the only copy")),
        }
    }
    if args.json {
        let mut doc = install::render_json(&report);
        if let Value::Object(m) = &mut doc {
            m.insert("dry_run".into(), args.dry_run.into());
            m.insert("errors".into(), ui.errors().into());
            m.insert("exit_code".into(), ui.exit().code().into());
        }
        let text = serde_json::to_string_pretty(&doc).expect("serializes");
        println!("{}", install::ascii(&text));
    } else {
        // The screen (and the console's journal) gets the key only when
        // the report on the stick could not be written.
        let mut text = install::render_text(&report);
        if let (Some(key), Some(name)) = (&report.recovery_key, &written) {
            text = text.replace(key.expose(), &format!("(in {name} on the stick)"));
        }
        print!("{text}");
    }
    ui.exit()
}
