//! `zoffsite box check`: the box's dead-man's switch.
//!
//! Run by root on the box from a timer. It gathers, under the configured
//! root only: every snapshot with its receive stamp, every partial receive
//! with the box's own `creation` of its state (`DATASET/%recv` for an
//! interrupted incremental, the dataset itself for an interrupted full
//! receive; verified on OpenZFS 2.3.2: both carry the box's clock, while
//! snapshots carry the stream's), the pool's health (`zpool list -H -o
//! health`), the last run (`zoffsite:lastrun`) and the source's heartbeats
//! (`zoffsite:heartbeat`, as `serve` recorded them), and lets
//! [`boxside::check`] decide (see that module for the findings, and for
//! how far a heartbeat may excuse no new data).
//!
//! Both what the box last heard from the source (its last heartbeat) and
//! when it last received new data are shown, in the text and in `--json`
//! (`heard`, `last_received`, and per dataset).
//!
//! Healthy: a summary, exit 0. Otherwise every finding is printed on
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

use zoffsite_core::boxside::{self, CheckInput, DatasetState, Finding, Heartbeats};
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
    // Without them, every dataset alarms as it did before heartbeats:
    // said, not a finding of its own.
    let heartbeats = boxstate::heartbeats(&zfs, root, &mut ui).unwrap_or_else(|e| {
        ui.warning(format_args!(
            "cannot read the source's heartbeats ({}) under {root}: {e}",
            boxside::HEARTBEAT_PROPERTY
        ));
        Heartbeats::default()
    });
    // Decide.
    let input = CheckInput {
        root,
        max_age: cfg.max_age,
        heartbeat_grace: cfg.heartbeat_grace,
        heartbeats: &heartbeats,
        snaps: snaps.as_deref(),
        partials: &partials,
        pool_health: health.as_deref(),
        lastrun: last,
        journal: journal.as_ref().unwrap_or(&no_journal),
        now,
    };
    let states = boxside::dataset_states(&input);
    let mut findings = unchecked;
    findings.extend(boxside::check(&input));
    let clock_ok = snaps.is_some() && !findings.iter().any(|f| matches!(f, Finding::Clock { .. }));
    if clock_ok && !fake_now {
        boxstate::record_lastrun(&zfs, root, now, &mut ui);
        if let Some(j) = journal {
            boxstate::record_journal(&cfg, j, entry, &mut ui);
        }
    }

    // Show, and tell the owner.
    let notify_error = if findings.is_empty() {
        for line in summary(root, cfg.max_age, now, &states, heartbeats.root) {
            ui.say(line);
        }
        None
    } else {
        let msg = message(root, now, &findings, &states, heartbeats.root);
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
        let mut doc = serde_json::json!({
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
        add_liveness(&mut doc, cfg.heartbeat_grace, &states, heartbeats.root);
        println!("{}", serde_json::to_string_pretty(&doc).expect("serializes"));
    }
    ui.exit()
}

/// The newest arrival of any dataset (box clock).
fn last_received(states: &[DatasetState]) -> Option<i64> {
    states.iter().filter_map(|d| d.received).max()
}

/// `--json`'s fields of what the box last heard from the source and last
/// received (added to the document; docs/json.md).
fn add_liveness(doc: &mut serde_json::Value, grace: std::time::Duration, states: &[DatasetState], heard: Option<i64>) {
    doc["heartbeat_grace"] = grace.as_secs().into();
    doc["heard"] = heard.into();
    doc["last_received"] = last_received(states).into();
    doc["datasets"] = serde_json::to_value(states).expect("serializes");
}

/// "3h 5m ago", or "never".
fn ago(now: jiff::Timestamp, t: Option<i64>) -> String {
    t.map_or_else(|| "never".into(), |t| format!("{} ago", zoffsite_core::human::secs(now.as_second() - t)))
}

/// The lines of a healthy check: how many datasets, how many of them only
/// a heartbeat keeps from being stale (each named, with when it is stale
/// at the latest without new data), and when the box last received new
/// data and last heard from the source.
fn summary(
    root: &Dataset,
    max_age: std::time::Duration,
    now: jiff::Timestamp,
    states: &[DatasetState],
    heard: Option<i64>,
) -> Vec<String> {
    let max_age = zoffsite_core::human::duration(max_age);
    let excused: Vec<&DatasetState> = states.iter().filter(|d| d.excused).collect();
    let mut out = vec![if excused.is_empty() {
        format!(
            "ok: {} dataset(s) under {root} received within {max_age}; pool {} is ONLINE",
            states.len(),
            root.pool()
        )
    } else {
        format!(
            "ok: {} dataset(s) under {root}: {} received within {max_age}, {} unchanged on the source (it checked in within {max_age}); pool {} is ONLINE",
            states.len(),
            states.len() - excused.len(),
            excused.len(),
            root.pool()
        )
    }];
    out.push(format!(
        "last new data received {}, last heard from the source {}",
        ago(now, last_received(states)),
        ago(now, heard)
    ));
    for d in excused {
        let latest = d.alarm_at_latest.and_then(|t| jiff::Timestamp::from_second(t).ok());
        out.push(format!(
            "{}: nothing new for {}, the source confirmed it unchanged {}; stale {} at the latest unless new data arrives",
            d.dataset,
            ago(now, d.received).trim_end_matches(" ago"),
            ago(now, d.heartbeat),
            latest.map_or_else(|| "?".into(), |t| t.to_string())
        ));
    }
    out
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "the box".into())
}

/// The text printed and given to `notify`: the findings, then when the
/// box last received new data and last heard from the source (whether the
/// source is down or only its sends are failing).
fn message(
    root: &Dataset,
    now: jiff::Timestamp,
    findings: &[Finding],
    states: &[DatasetState],
    heard: Option<i64>,
) -> String {
    let mut m = format!("zoffsite box check on {} at {now}: {} problem(s) under {root}:\n", hostname(), findings.len());
    for f in findings {
        m.push_str(&format!("- {f}\n"));
    }
    m.push_str(&format!(
        "Last new data received {}; last heard from the source {}.\n",
        ago(now, last_received(states)),
        ago(now, heard)
    ));
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
        let m = message(&root, "2026-11-25T12:00:00Z".parse().unwrap(), &f, &[], None);
        assert!(m.contains("2 problem(s) under offsite/home"), "{m}");
        assert!(
            m.contains("\n- pool offsite is DEGRADED")
                && m.contains("\n- offsite/home: nothing has ever been received"),
            "{m}"
        );
        assert!(m.ends_with("\nLast new data received never; last heard from the source never.\n"), "{m}");
    }

    fn state(ds: &str, received: i64, heartbeat: Option<i64>, excused: bool) -> DatasetState {
        DatasetState {
            dataset: Dataset::new(ds).unwrap(),
            newest: "zoffsite-1".into(),
            received: Some(received),
            heartbeat,
            alarm_at: Some(received + 2 * 86400),
            alarm_at_latest: Some(received + 9 * 86400),
            excused,
            stale: false,
        }
    }

    #[test]
    fn a_healthy_check_says_when_data_last_came_and_the_source_last_checked_in() {
        let root = Dataset::new("offsite/home").unwrap();
        let now: jiff::Timestamp = "2026-11-25T12:00:00Z".parse().unwrap();
        let t = now.as_second();
        let states = [
            state("offsite/home/tank/a", t - 3600, Some(t - 3600), false),
            state("offsite/home/tank/b", t - 5 * 86400, Some(t - 1800), true),
        ];
        let day2 = std::time::Duration::from_secs(2 * 86400);
        let lines = summary(&root, day2, now, &states, Some(t - 1800));
        assert_eq!(
            lines,
            [
                "ok: 2 dataset(s) under offsite/home: 1 received within 2d, 1 unchanged on the source (it checked in within 2d); pool offsite is ONLINE",
                "last new data received 1h ago, last heard from the source 30m ago",
                "offsite/home/tank/b: nothing new for 5d, the source confirmed it unchanged 30m ago; stale 2026-11-29T12:00:00Z at the latest unless new data arrives",
            ]
        );
        let lines = summary(&root, day2, now, &states[..1], None);
        assert_eq!(lines[0], "ok: 1 dataset(s) under offsite/home received within 2d; pool offsite is ONLINE");
        assert_eq!(lines[1], "last new data received 1h ago, last heard from the source never");

        let mut doc = serde_json::json!({"exit_code": 0});
        add_liveness(&mut doc, std::time::Duration::from_secs(7 * 86400), &states, Some(t - 1800));
        assert_eq!(doc["heartbeat_grace"], 7 * 86400);
        assert_eq!(doc["heard"], t - 1800);
        assert_eq!(doc["last_received"], t - 3600);
        let b = &doc["datasets"][1];
        assert_eq!(b["dataset"], "offsite/home/tank/b");
        assert_eq!((b["received"].as_i64(), b["heartbeat"].as_i64()), (Some(t - 5 * 86400), Some(t - 1800)));
        assert_eq!((b["excused"].as_bool(), b["stale"].as_bool()), (Some(true), Some(false)));
        assert_eq!(b["alarm_at_latest"], t + 4 * 86400);
        assert!(b.get("alarm_at").is_some() && b.get("newest").is_some());
        let mut empty = serde_json::json!({});
        add_liveness(&mut empty, std::time::Duration::ZERO, &[], None);
        assert_eq!(
            empty,
            serde_json::json!({"heartbeat_grace": 0, "heard": null, "last_received": null, "datasets": []})
        );
    }
}
