//! `zoffsite box check`: the box's dead-man's switch.
//!
//! Run by root on the box from a timer. It gathers, under the configured
//! root only: every snapshot with its receive stamp, every partial receive
//! with the box's own `creation` of its state (`DATASET/%recv` for an
//! interrupted incremental, the dataset itself for an interrupted full
//! receive; verified on OpenZFS 2.3.2: both carry the box's clock, while
//! snapshots carry the stream's), the pool's health (`zpool list -H -o
//! health`) and the last run (`zoffsite:lastrun`), and lets
//! [`boxside::check`] decide (see that module for the findings).
//!
//! Healthy: one summary line, exit 0. Otherwise every finding is printed on
//! stdout (or in `--json`), the message goes on stdin to the configured
//! `notify` argv (at most [`boxstate::NOTIFY_TIMEOUT`], then killed), and
//! the exit is 6 ("stale", as for `status`: a monitoring check failed). If the notify
//! program cannot be run, fails or times out, the exit is 1 (error), which
//! precedes 6: the owner was not told. Whatever could not be checked (a
//! failing `zfs` or `zpool`) is itself a finding, so a broken box is
//! reported too. After a run with the real clock whose clock check passed,
//! the time is recorded in `zoffsite:lastrun`.
//!
//! The gathering and the notification are [`zoffsite_exec::boxstate`]'s;
//! the findings are core's; this command shows them.

use zoffsite_core::boxside::{self, CheckInput, Finding};
use zoffsite_core::journal::Journal;
use zoffsite_core::names::Dataset;
use zoffsite_exec::boxstate::{self, Notified};
use zoffsite_exec::zfs::Zfs;

use crate::cli::BoxCheckArgs;
use crate::cmd::common;
use crate::exit::{Code as _, Exit};
use crate::ui::Ui;

pub(crate) fn run(args: &BoxCheckArgs) -> Exit {
    let mut ui = Ui::new(args.json, true);
    let Some(cfg) = common::box_config(&args.config, &mut ui) else { return ui.bail() };
    let (now, fake_now) = match common::now_or_clock(args.now.as_deref()) {
        Ok(x) => x,
        Err(e) => {
            ui.err(Exit::Usage, e);
            return ui.bail();
        }
    };
    let zfs = Zfs::new();
    let root = &cfg.root;
    // Gather: whatever cannot be looked at is itself a finding.
    let mut unchecked = Vec::new();
    let (snaps, entry) = match boxstate::list_timed(&zfs, root) {
        Ok((s, e)) => (Some(s), e),
        Err(e) => {
            unchecked.push(Finding::Unchecked { what: format!("the snapshots under {root}"), error: e.to_string() });
            (None, None)
        }
    };
    let journal = match boxstate::load_journal(&zfs, &cfg, &mut ui) {
        Ok(j) => Some(j),
        Err(e) => {
            unchecked.push(Finding::Unchecked { what: "the txg journal".into(), error: e.to_string() });
            None
        }
    };
    let no_journal = Journal::new(0, root.clone());
    let partials = match boxstate::partials(&zfs, root) {
        Ok(p) => p,
        Err(e) => {
            unchecked.push(Finding::Unchecked { what: format!("partial receives under {root}"), error: e.to_string() });
            Vec::new()
        }
    };
    let health = match zfs.pool_health(root.pool()) {
        Ok(h) => Some(h),
        Err(e) => {
            unchecked
                .push(Finding::Unchecked { what: format!("the health of pool {}", root.pool()), error: e.to_string() });
            None
        }
    };
    let last = boxstate::lastrun(&zfs, root, &mut ui).unwrap_or_else(|e| {
        ui.warning(format_args!("cannot read {} on {root}: {e}", boxside::LASTRUN_PROPERTY));
        None
    });
    // Decide.
    let mut findings = unchecked;
    findings.extend(boxside::check(&CheckInput {
        root,
        max_age: cfg.max_age,
        snaps: snaps.as_deref(),
        partials: &partials,
        pool_health: health.as_deref(),
        lastrun: last,
        journal: journal.as_ref().unwrap_or(&no_journal),
        now,
    }));
    let clock_ok = snaps.is_some() && !findings.iter().any(|f| matches!(f, Finding::Clock { .. }));
    if clock_ok && !fake_now {
        boxstate::record_lastrun(&zfs, root, now, &mut ui);
        if let Some(j) = journal {
            boxstate::record_journal(&cfg, j, entry, &mut ui);
        }
    }

    // Show, and tell the owner.
    let datasets = snaps.as_deref().map(|s| {
        let mut d: Vec<&Dataset> = s.iter().map(|s| &s.snapshot.dataset).collect();
        d.dedup();
        d.len()
    });
    let notify_error = if findings.is_empty() {
        ui.say(format_args!(
            "ok: {} dataset(s) under {root} received within {}; pool {} is ONLINE",
            datasets.unwrap_or(0),
            zoffsite_core::human::duration(cfg.max_age),
            root.pool()
        ));
        None
    } else {
        let msg = message(root, now, &findings);
        if !args.json {
            print!("{msg}");
        }
        match boxstate::notify(&cfg.notify, &msg) {
            Ok(told) => {
                if told == Notified::Nobody {
                    // Said, not raised: the exit status below is the alarm.
                    ui.err(Exit::Ok, "box check: no notify program is configured; only this exit status tells anyone");
                }
                ui.raise(Exit::Stale);
                None
            }
            Err(e) => {
                ui.err(Exit::Error, format_args!("box check: the owner was NOT notified: {e}"));
                Some(e.to_string())
            }
        }
    };
    if args.json {
        let doc = serde_json::json!({
            "now": now.to_string(),
            "root": root,
            "max_age": cfg.max_age.as_secs(),
            "findings": findings.iter().map(|f| {
                let mut v = serde_json::to_value(f).expect("serializes");
                v["message"] = f.to_string().into();
                v
            }).collect::<Vec<_>>(),
            "notified": !findings.is_empty() && notify_error.is_none() && !cfg.notify.is_empty(),
            "notify_error": notify_error,
            "exit_code": ui.exit().code(),
        });
        println!("{}", serde_json::to_string_pretty(&doc).expect("serializes"));
    }
    ui.exit()
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "the box".into())
}

/// The text printed and given to `notify`.
fn message(root: &Dataset, now: jiff::Timestamp, findings: &[Finding]) -> String {
    let mut m = format!("zoffsite box check on {} at {now}: {} problem(s) under {root}:\n", hostname(), findings.len());
    for f in findings {
        m.push_str(&format!("- {f}\n"));
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_lists_every_finding() {
        let root = Dataset::new("offsite/home").unwrap();
        let f = [
            Finding::Pool { pool: "offsite".into(), health: "DEGRADED".into() },
            Finding::Empty { root: root.clone() },
        ];
        let m = message(&root, "2026-11-25T12:00:00Z".parse().unwrap(), &f);
        assert!(m.contains("2 problem(s) under offsite/home"), "{m}");
        assert!(
            m.contains("\n- pool offsite is DEGRADED")
                && m.contains("\n- offsite/home: nothing has ever been received"),
            "{m}"
        );
    }
}
