//! `zoffsite status`: for every target and dataset, the newest snapshot on
//! the source and on the box, its age, when a backup run last confirmed
//! the box held all of it, and how many bytes the box is behind. Read-only
//! on both sides. Exits 6 (stale) when any dataset on any target was last
//! confirmed longer than the target's `max_age` ago (a run that found
//! nothing to send confirms the box's newest: [`status`]), holds nothing,
//! or diverged, so it serves as a monitoring check.
//!
//! Each box's posture comes along: in the same session, after the listing,
//! the box's last audit (root's `doctor --box`, handed over by `serve`),
//! judged on the source ([`Posture`]). A posture finding (a failed check, an
//! audit not renewed for two days, a report that contradicts itself) exits
//! 6 as well, never worse: it is about the box, not about the backups, and
//! 3 and 4 mean specific things here (datasets missing, a box unreachable).
//! A warning or an unknown does not (most boxes cannot show a BIOS
//! password, so a well set up box stays unknown), nor a box without an
//! audit (set up by hand, or an older zoffsite): `doctor --source` tells.
//!
//! `--target NAME` looks at that target alone. The table shows bytes and
//! ages in [`zoffsite_core::human`]'s formats (the JSON keeps bytes and
//! seconds); with `-q` it shows only what is wrong (unreachable targets,
//! rows that are not `ok` or `behind`, a posture finding), so a quiet run
//! that prints nothing is a healthy one. With `--json` the document comes
//! on every failure too (the short one when the config cannot be used).
//!
//! `[notify]` hears of every run, and of a stale one as a failure.

use std::collections::BTreeMap;

use serde::Serialize;
use zoffsite_core::doctor::boxaudit::{Fetched, Posture};
use zoffsite_core::doctor::Status as DoctorStatus;
use zoffsite_core::human;
use zoffsite_core::names::{Dataset, SnapName};
use zoffsite_core::notify::Command;
use zoffsite_core::provision::wait::UNREACHABLE_HINT;
use zoffsite_core::status::{self, DatasetStatus, State};
use zoffsite_exec::proto::client::{RemoteError, Session};
use zoffsite_exec::replicate;
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
    /// With an unreachable box: the cause nobody at the source can see
    /// ([`UNREACHABLE_HINT`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    hint: Option<&'static str>,
    datasets: Vec<DatasetStatus>,
    /// The start of the last backup run that confirmed the box holding the
    /// source's newest of any dataset (Unix seconds, source clock; `None`:
    /// none recorded).
    last_run: Option<i64>,
    /// The box's posture (`None` when the box could not be reached).
    box_posture: Option<Posture>,
}

pub(crate) fn run(args: &StatusArgs) -> Exit {
    let mut ui = Ui::new(args.json, true);
    let Some(cfg) = common::config_for_target(&args.config, args.target.as_deref(), &mut ui) else {
        return ui.bail();
    };
    // Read-only, but not a dry run: a stale backup is what `[notify]` is
    // for (a failure, exit 6).
    common::notified(&cfg, Command::Status, false, &mut ui, |ui| {
        let now = jiff::Timestamp::now().as_second();
        let targets = status(&cfg, args, &Zfs::new(), now, ui);
        if !ui.json() {
            print_table(&targets, now, ui.quiet());
        }
        crate::ui::doc(&serde_json::json!({
            "now": now,
            "errors": ui.errors(),
            "targets": targets,
            "exit_code": ui.exit().code(),
        }))
    })
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
        let mut ts = TargetStatus {
            name: t.name.clone(),
            max_age: t.max_age.as_secs(),
            error: None,
            hint: None,
            datasets: vec![],
            last_run: None,
            box_posture: None,
        };
        let listing = Session::connect(t).and_then(|mut s| match s.list(&datasets) {
            // The audit last: an older box ends the session on it.
            Ok(l) => Ok((l, s.audit().unwrap_or_else(|e| Fetched::Unreachable(e.to_string())))),
            Err(e) => {
                s.close();
                Err(e)
            }
        });
        match listing {
            Ok((remote, audit)) => {
                let posture = Posture::judge(&audit, now);
                if posture.is_finding() {
                    ui.raise(Exit::Stale);
                }
                ts.box_posture = Some(posture);
                let max_age = i64::try_from(t.max_age.as_secs()).unwrap_or(i64::MAX);
                // Without them, each dataset counts from its snapshot's
                // creation, as before runs recorded them.
                let confirmed =
                    replicate::confirmations(zfs, &t.name, &datasets, &snaps, &remote).unwrap_or_else(|e| {
                        ui.warning(format_args!("target {}: cannot read the backup runs' confirmations: {e}", t.name));
                        BTreeMap::new()
                    });
                ts.last_run = confirmed.values().copied().max();
                ts.datasets = datasets
                    .iter()
                    .map(|d| status::evaluate(d, &snaps, &bookmarks, remote.get(d), &confirmed, now, max_age))
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
                ts.hint = hint(&e);
                ui.raise(Exit::Target);
            }
        }
        out.push(ts);
    }
    out
}

/// The hint for a box that could not be reached: only one the network did
/// not get to (a box whose ssh answered is up, whatever else failed).
fn hint(e: &RemoteError) -> Option<&'static str> {
    matches!(e, RemoteError::Unreachable { .. }).then_some(UNREACHABLE_HINT)
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

fn print_table(targets: &[TargetStatus], now: i64, quiet: bool) {
    for t in targets {
        print!("{}", render_target(t, now, quiet));
    }
}

/// One target's lines of the table (`now`: to say how long ago); with
/// `quiet`, only what is wrong (nothing at all for a healthy target).
fn render_target(t: &TargetStatus, now: i64, quiet: bool) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let finding = t.box_posture.as_ref().is_some_and(Posture::is_finding);
    let problems = t.error.is_some() || finding || t.datasets.iter().any(|d| d.state.is_problem());
    if quiet && !problems {
        return out;
    }
    let _ = write!(out, "target {} (max_age {}", t.name, age(i64::try_from(t.max_age).unwrap_or(i64::MAX)));
    if t.error.is_none() {
        let _ = write!(
            out,
            "; last backup run {}",
            t.last_run.map_or("none recorded".to_owned(), |r| format!("{} ago", age(now - r)))
        );
    }
    let _ = writeln!(out, "):");
    if let Some(e) = &t.error {
        let _ = writeln!(out, "  UNREACHABLE: {e}");
        if let Some(h) = t.hint {
            let _ = writeln!(out, "  hint: {h}");
        }
        return out;
    }
    for d in t.datasets.iter().filter(|d| !quiet || d.state.is_problem()) {
        let on_box = d.box_newest.as_ref().map_or("-".to_owned(), |p| format!("@{}", p.name));
        let on_src = d.source_newest.as_ref().map_or("-".to_owned(), |p| format!("@{}", p.name));
        let behind = d.behind_bytes.map_or("?".to_owned(), human::bytes);
        let state = match d.state {
            State::Current => "ok",
            State::Behind => "behind",
            State::Stale => "STALE",
            State::Never => "NEVER",
            State::Diverged => "DIVERGED",
        };
        // When a later run found nothing to send, the box's copy is
        // current as of that run: say so beside the snapshot's own age.
        let confirmed = match (d.confirmed_age, d.age) {
            (Some(c), Some(a)) if c < a => format!(", confirmed {} ago", age(c)),
            _ => String::new(),
        };
        let _ = writeln!(
            out,
            "  {state:<8} {}  box {on_box} ({} old{confirmed})  source {on_src}  behind {behind}{}",
            d.dataset,
            d.age.map_or("-".to_owned(), age),
            if d.partial { "  [interrupted transfer waiting]" } else { "" }
        );
    }
    if let Some(p) = t.box_posture.as_ref().filter(|p| !quiet || p.is_finding()) {
        let details =
            if p.status == DoctorStatus::Ok && !p.stale { "" } else { "; run `zoffsite doctor --source` for details" };
        let _ = writeln!(out, "  box posture: {}{details}", p.line());
    }
    out
}

fn age(secs: i64) -> String {
    human::secs(secs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use zoffsite_core::doctor::{Check, CheckId, Report};

    fn target(posture: Option<Posture>) -> TargetStatus {
        TargetStatus {
            name: "friend".into(),
            max_age: 93_600,
            error: None,
            hint: None,
            datasets: vec![],
            last_run: None,
            box_posture: posture,
        }
    }

    #[test]
    fn the_boxs_posture_is_one_line_per_target_in_text_and_an_object_in_json() {
        let now = 1_796_000_000;
        let mut r = Report::new();
        r.push(Check::ok(CheckId::Firewall, "fine"));
        r.push(Check::fail(CheckId::SecureBoot, "Secure Boot is disabled", "enable it"));
        r.push(Check::unknown(CheckId::BiosPassword, "not exposed", "look in the firmware setup"));
        r.set_generated_at(now - 3 * 3600);
        let p = Posture::judge(&Fetched::Report(serde_json::to_string(&r).unwrap()), now);
        assert_eq!(
            render_target(&target(Some(p.clone())), now, false),
            "target friend (max_age 1d 2h; last backup run none recorded):\n  box posture: fail (1 fail, 1 unknown), audited 3h ago; run `zoffsite doctor --source` for details\n"
        );
        let v = serde_json::to_value(target(Some(p))).unwrap();
        assert_eq!(v["box_posture"]["status"], "fail");
        assert_eq!(v["box_posture"]["state"], "audited");
        assert_eq!(v["box_posture"]["counts"], serde_json::json!({"ok": 1, "warn": 0, "unknown": 1, "fail": 1}));
        assert_eq!(v["box_posture"]["age"], 3 * 3600);
        assert_eq!(v["box_posture"]["not_ok"], serde_json::json!(["box.secure-boot", "box.bios-password"]));

        let mut ok = Report::new();
        ok.push(Check::ok(CheckId::Firewall, "fine"));
        ok.set_generated_at(now - 60);
        let p = Posture::judge(&Fetched::Report(serde_json::to_string(&ok).unwrap()), now);
        assert!(render_target(&target(Some(p)), now, false).ends_with("\n  box posture: ok (1 ok), audited 1m ago\n"));
        let old = render_target(&target(Some(Posture::judge(&Fetched::Unsupported, now))), now, false);
        assert!(old.ends_with("box posture: unknown (the box's zoffsite is too old to report its posture); run `zoffsite doctor --source` for details\n"), "{old}");
        // Unreachable: no posture line, and null in the JSON.
        let mut t = target(None);
        t.error = Some("target friend: cannot reach the box".into());
        assert!(!render_target(&t, 0, false).contains("posture"));
        assert_eq!(serde_json::to_value(&t).unwrap()["box_posture"], serde_json::Value::Null);
    }

    #[test]
    fn the_table_shows_bytes_and_ages_for_people_and_quiet_shows_only_what_is_wrong() {
        use zoffsite_core::names::Guid;
        use zoffsite_core::status::Point;
        let point = |name: &str| Point {
            name: SnapName::new(name).unwrap(),
            guid: Guid::new(7).unwrap(),
            creation: 1_796_000_000,
        };
        let row = |ds: &str, state: State, age: i64| DatasetStatus {
            dataset: Dataset::new(ds).unwrap(),
            source_newest: Some(point("zoffsite-b")),
            box_newest: Some(point("zoffsite-a")),
            age: Some(age),
            confirmed: None,
            confirmed_age: None,
            behind_bytes: Some(3 << 20),
            partial: false,
            state,
        };
        let mut t = target(None);
        t.datasets =
            vec![row("tank/data", State::Behind, 3 * 3600 + 600), row("tank/old", State::Stale, 3 * 86400 + 7200)];
        assert_eq!(
            render_target(&t, 0, false),
            "target friend (max_age 1d 2h; last backup run none recorded):\n\
             \x20 behind   tank/data  box @zoffsite-a (3h 10m old)  source @zoffsite-b  behind 3.00 MiB\n\
             \x20 STALE    tank/old  box @zoffsite-a (3d 2h old)  source @zoffsite-b  behind 3.00 MiB\n"
        );
        let quiet = render_target(&t, 0, true);
        assert!(quiet.contains("tank/old") && !quiet.contains("tank/data"), "{quiet}");
        t.datasets.pop();
        assert_eq!(render_target(&t, 0, true), "", "a healthy target: nothing with -q");
        // The JSON keeps raw numbers.
        let v = serde_json::to_value(&t).unwrap();
        assert_eq!(
            (v["datasets"][0]["behind_bytes"].as_u64(), v["datasets"][0]["age"].as_u64()),
            (Some(3 << 20), Some(11400))
        );
    }

    #[test]
    fn a_dataset_confirmed_by_a_later_run_shows_both_ages_and_the_last_run() {
        use zoffsite_core::names::Guid;
        use zoffsite_core::status::Point;
        let now = 1_796_000_000;
        let point = Point {
            name: SnapName::new("zoffsite-1").unwrap(),
            guid: Guid::new(7).unwrap(),
            creation: now - 5 * 86_400,
        };
        let mut t = target(None);
        t.last_run = Some(now - 3600);
        t.datasets.push(DatasetStatus {
            dataset: Dataset::new("tank/a").unwrap(),
            source_newest: Some(point.clone()),
            box_newest: Some(point),
            age: Some(5 * 86_400),
            confirmed: Some(now - 3600),
            confirmed_age: Some(3600),
            behind_bytes: Some(0),
            partial: false,
            state: State::Current,
        });
        let text = render_target(&t, now, false);
        assert!(text.starts_with("target friend (max_age 1d 2h; last backup run 1h ago):\n"), "{text}");
        assert!(
            text.contains("  ok       tank/a  box @zoffsite-1 (5d old, confirmed 1h ago)  source @zoffsite-1"),
            "{text}"
        );
        let v = serde_json::to_value(&t).unwrap();
        assert_eq!(v["last_run"], now - 3600);
        assert_eq!(v["datasets"][0]["confirmed"], now - 3600);
        assert_eq!(v["datasets"][0]["confirmed_age"], 3600);
        assert_eq!(v["datasets"][0]["age"], 5 * 86_400, "the data's own age is kept");
    }

    #[test]
    fn an_unreachable_box_gets_the_tpm_recovery_hint_and_no_other_failure_does() {
        let e = RemoteError::Unreachable { host: "10.77.0.2".into(), detail: "Connection timed out".into() };
        let mut t = target(None);
        t.error = Some(format!("target friend: {e}"));
        t.hint = hint(&e);
        let text = render_target(&t, 0, false);
        assert!(text.ends_with(&format!("  hint: {UNREACHABLE_HINT}\n")), "{text}");
        assert_eq!(text.lines().filter(|l| l.contains("TPM")).count(), 1, "one line: {text}");
        assert!(UNREACHABLE_HINT.contains("docs/box.md#when-the-box-does-not-come-back"));
        assert_eq!(serde_json::to_value(&t).unwrap()["hint"], UNREACHABLE_HINT);
        for other in [
            RemoteError::HostKeyChanged { known_hosts: "k".into() },
            RemoteError::AuthFailed { identity: "id".into() },
            RemoteError::Timeout(std::time::Duration::from_secs(300)),
        ] {
            assert_eq!(hint(&other), None, "{other}");
        }
        t.hint = None;
        assert!(!render_target(&t, 0, false).contains("hint"));
        assert!(serde_json::to_value(&t).unwrap().get("hint").is_none());
    }
}
