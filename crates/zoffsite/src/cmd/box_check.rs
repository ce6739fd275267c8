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
//! `notify` argv (at most [`NOTIFY_TIMEOUT`], then killed), and the exit is
//! 6 ("stale", as for `status`: a monitoring check failed). If the notify
//! program cannot be run, fails or times out, the exit is 1 (error), which
//! precedes 6: the owner was not told. Whatever could not be checked (a
//! failing `zfs` or `zpool`) is itself a finding, so a broken box is
//! reported too. After a run with the real clock whose clock check passed,
//! the time is recorded in `zoffsite:lastrun`.

use std::io::Write as _;
use std::time::{Duration, Instant};

use zoffsite_core::boxside::{self, CheckInput, Finding, Partial};
use zoffsite_core::journal::Journal;
use zoffsite_core::names::Dataset;
use zoffsite_exec::process::{Cmd, Running};
use zoffsite_exec::zfs::{Zfs, ZfsError};

use crate::cli::BoxCheckArgs;
use crate::cmd::box_prune::{
    lastrun, list_timed, load_box_config, load_journal, now_or_exit, record_journal, record_lastrun,
};
use crate::exit::{Code as _, Exit};

/// Longest the notify program may take.
pub const NOTIFY_TIMEOUT: Duration = Duration::from_secs(60);

/// Most bytes of message given to the notify program (a pipe buffer holds
/// 64 KiB, so a program that never reads cannot block the write).
const MAX_MESSAGE: usize = 32 * 1024;

pub fn run(args: BoxCheckArgs) -> Exit {
    let cfg = match load_box_config(&args.config) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let (now, fake_now) = match now_or_exit(&args.now) {
        Ok(x) => x,
        Err(code) => return code,
    };
    let zfs = Zfs::new();
    let root = &cfg.root;
    let mut unchecked = Vec::new();
    let (snaps, entry) = match list_timed(&zfs, root) {
        Ok((s, e)) => (Some(s), e),
        Err(e) => {
            unchecked.push(Finding::Unchecked { what: format!("the snapshots under {root}"), error: e.to_string() });
            (None, None)
        }
    };
    let journal = match load_journal(&zfs, &cfg) {
        Ok(j) => Some(j),
        Err(e) => {
            unchecked.push(Finding::Unchecked { what: "the txg journal".into(), error: e });
            None
        }
    };
    let no_journal = Journal::new(0, root.clone());
    let partials = match partials(&zfs, root) {
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
    let last = lastrun(&zfs, root).unwrap_or_else(|e| {
        eprintln!("zoffsite: warning: cannot read {} on {root}: {e}", boxside::LASTRUN_PROPERTY);
        None
    });
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
        record_lastrun(&zfs, root, now);
        if let Some(j) = journal {
            record_journal(&cfg, j, entry);
        }
    }

    let datasets = snaps.as_deref().map(|s| {
        let mut d: Vec<&Dataset> = s.iter().map(|s| &s.snapshot.dataset).collect();
        d.dedup();
        d.len()
    });
    let (exit, notify_error) = if findings.is_empty() {
        if !args.json {
            println!(
                "ok: {} dataset(s) under {root} received within {}; pool {} is ONLINE",
                datasets.unwrap_or(0),
                boxside::fmt_secs(cfg.max_age.as_secs() as i64),
                root.pool()
            );
        }
        (Exit::Ok, None)
    } else {
        let msg = message(root, now, &findings);
        if !args.json {
            print!("{msg}");
        }
        match notify(&cfg.notify, &msg) {
            Ok(()) => (Exit::Stale, None),
            Err(e) => {
                eprintln!("zoffsite: box check: the owner was NOT notified: {e}");
                (Exit::Error, Some(e))
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
            "exit_code": exit.code(),
        });
        println!("{}", serde_json::to_string_pretty(&doc).expect("serializes"));
    }
    exit
}

/// Datasets under the root with partial-receive state, dated by the box.
fn partials(zfs: &Zfs, root: &Dataset) -> Result<Vec<Partial>, ZfsError> {
    let mut out = Vec::new();
    for r in zfs.list_receiver(root)? {
        if r.resume_token.is_none() {
            continue;
        }
        let hidden = format!("{}/%recv", r.dataset);
        let created = match zfs.get_value(&hidden, "creation") {
            Ok(v) => Ok(v),
            Err(ZfsError::NotFound { .. }) => zfs.get_value(r.dataset.as_str(), "creation"),
            Err(e) => Err(e),
        }?;
        out.push(Partial { dataset: r.dataset, since: created.parse().ok() });
    }
    Ok(out)
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

/// Runs the notify argv with `msg` on stdin, bounded in time. No `notify`
/// configured is not an error (the exit status still says it).
fn notify(argv: &[String], msg: &str) -> Result<(), String> {
    let Some((program, rest)) = argv.split_first() else {
        eprintln!("zoffsite: box check: no notify program is configured; only this exit status tells anyone");
        return Ok(());
    };
    let cmd = Cmd::new(program).args(rest);
    let mut r = Running::with_stdin(&cmd).map_err(|e| e.to_string())?;
    let mut bytes = msg.as_bytes();
    if bytes.len() > MAX_MESSAGE {
        bytes = &bytes[..MAX_MESSAGE];
    }
    if let Some(mut stdin) = r.child.stdin.take() {
        // A program that exits without reading gives EPIPE: not a failure
        // of ours; its exit status decides.
        let _ = stdin.write_all(bytes);
    }
    let start = Instant::now();
    loop {
        match r.child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if start.elapsed() >= NOTIFY_TIMEOUT => {
                let _ = r.kill();
                return Err(format!("{program} did not finish within {}s and was killed", NOTIFY_TIMEOUT.as_secs()));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(50)),
            Err(e) => return Err(format!("cannot wait for {program}: {e}")),
        }
    }
    let out = r.finish().map_err(|e| e.to_string())?;
    if out.success() {
        Ok(())
    } else {
        Err(format!("{program} failed ({}): {}", out.status, out.stderr.trim()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn script(dir: &std::path::Path, body: &str) -> String {
        let p = dir.join("notify.sh");
        std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        p.to_str().unwrap().to_owned()
    }

    #[test]
    fn notify_gets_the_message_on_stdin_with_its_arguments() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("got");
        let prog = script(dir.path(), &format!("echo \"$1\" > {0}; cat >> {0}", out.display()));
        notify(&[prog, "--urgent".into()], "line one\nline two\n").unwrap();
        assert_eq!(std::fs::read_to_string(&out).unwrap(), "--urgent\nline one\nline two\n");
    }

    #[test]
    fn notify_failures_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let prog = script(dir.path(), "echo mail server down >&2; exit 3");
        let e = notify(&[prog], "x").unwrap_err();
        assert!(e.contains("mail server down"), "{e}");
        let e = notify(&["/nonexistent/alert".into()], "x").unwrap_err();
        assert!(e.contains("/nonexistent/alert"), "{e}");
        // A program that ignores stdin is fine, also with a long message.
        let prog = script(dir.path(), "exit 0");
        notify(&[prog], &"x".repeat(200_000)).unwrap();
        notify(&[], "nobody configured").unwrap();
    }

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
