//! `box wait` (`zoffsite_exec::boxwait::run`) against a fake box: the
//! tunnel and the clock are injected, the box is the real `Server` on a
//! thread over pipes with a fake machine and an audit file, the source a
//! fake machine, `systemctl` a script that logs its calls. The first
//! backup is the real backup driver's: what lands on the box is what it
//! sent.

mod common;

use std::cell::Cell;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use zoffsite_core::config::{Config, Target};
use zoffsite_core::doctor::{Check, CheckId, Report};
use zoffsite_core::provision::wait::{Phase, TimerAction, TunnelSeen};
use zoffsite_core::report::{DatasetStatus, Severity};
use zoffsite_exec::boxwait::{run, Observers, Options, Outcome, System};
use zoffsite_exec::events::Recorded;
use zoffsite_exec::proto::client::RemoteError;
use zoffsite_exec::zfs::Zfs;

const DS: &str = "tank/data";
const T0: i64 = 1_767_225_600;

/// A source with one dataset, its box `friend` (with an audit of
/// `checks`), and a second target `other` that must never be reached.
struct World {
    src: zoffsite_testkit::FakeZfs,
    b: Arc<BoxSide>,
    dir: tempfile::TempDir,
    audit: PathBuf,
}

impl World {
    fn new(checks: &[Check]) -> World {
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let audit = dir.path().join("box.json");
        let mut r = Report::new();
        r.extend(checks.iter().cloned());
        r.set_generated_at(T0 - 300);
        std::fs::write(&audit, serde_json::to_string_pretty(&r).unwrap()).unwrap();
        std::fs::set_permissions(&audit, std::fs::Permissions::from_mode(0o644)).unwrap();
        let systemctl = dir.path().join("systemctl");
        std::fs::write(
            &systemctl,
            format!(
                "#!/bin/sh\necho \"$*\" >> '{}'\ncase \"$1\" in is-enabled) echo disabled; exit 1;; is-active) echo inactive; exit 3;; esac\n",
                dir.path().join("calls").display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&systemctl, std::fs::Permissions::from_mode(0o755)).unwrap();
        World { src: source(), b: Arc::new(BoxSide::new("offsite/home")), dir, audit }
    }

    fn config(&self) -> Config {
        let mut text = format!("[source]\ndatasets = [\"{DS}\"]\n");
        for t in ["friend", "other"] {
            text.push_str(&format!(
                "[[target]]\nname = \"{t}\"\nhost = \"10.77.0.2\"\nuser = \"zoffsite\"\nidentity_file = \"/nonexistent/id\"\nknown_hosts = \"/nonexistent/kh\"\n"
            ));
        }
        Config::parse(&text).unwrap()
    }

    fn systemctl_calls(&self) -> Vec<String> {
        std::fs::read_to_string(self.dir.path().join("calls")).unwrap_or_default().lines().map(str::to_owned).collect()
    }

    /// `box wait friend`: the box dials in after 10 s and its ssh answers
    /// from the second attempt on.
    fn wait(&self, dry_run: bool, force: bool) -> (Outcome, Recorded, u32) {
        let cfg = self.config();
        let target: Target = cfg.targets[0].clone();
        let now = Cell::new(T0);
        let mut tunnel = || TunnelSeen::Peer { latest_handshake: (now.get() >= T0 + 10).then_some(now.get() - 2) };
        let mut clock = || now.get();
        let mut sleep = |d: Duration| now.set(now.get() + i64::try_from(d.as_secs()).unwrap());
        let tries = Arc::new(AtomicU32::new(0));
        let (b, audit, counted) = (self.b.clone(), self.audit.clone(), tries.clone());
        let me = rustix::process::geteuid().as_raw();
        let connect = Arc::new(move |t: &Target| {
            assert_eq!(t.name, "friend", "only the waited-for box is reached");
            if counted.fetch_add(1, Ordering::SeqCst) == 0 {
                return Err(RemoteError::Unreachable { host: t.host.clone(), detail: "Connection refused".into() });
            }
            let audit = audit.clone();
            Ok(b.connect_with(move |srv| srv.with_audit(&audit, me)).0)
        });
        let mut obs = Observers { tunnel: &mut tunnel, connect, clock: &mut clock, sleep: &mut sleep };
        let lock = || Ok(None);
        let sys =
            System { root: true, systemd: true, systemctl: self.dir.path().join("systemctl").into(), lock: &lock };
        let opts = Options {
            target: &target,
            timeout: Duration::from_secs(600),
            poll: Duration::from_secs(5),
            dry_run,
            force,
            config_path: Path::new("/etc/zoffsite/zoffsite.toml"),
        };
        let mut ev = Recorded::default();
        let out = run(&cfg, &Zfs::with_binary(self.src.path()), &opts, &mut obs, &sys, &mut ev);
        (out, ev, tries.load(Ordering::SeqCst))
    }
}

fn a_good_box() -> Vec<Check> {
    vec![
        Check::ok(CheckId::SecureBoot, "Secure Boot is enabled (user mode)"),
        Check::ok(CheckId::Firewall, "ssh is reachable from the tunnel only"),
        Check::unknown(CheckId::BiosPassword, "not exposed by this firmware", "check it in the firmware setup"),
    ]
}

#[test]
fn box_wait_shows_the_audit_enables_the_timer_and_backs_up_to_that_box_only() {
    let _one = serial();
    let w = World::new(&a_good_box());
    let (out, ev, tries) = w.wait(false, false);
    assert_eq!(ev.worst, Severity::Ok, "{:?}", ev.errors);
    let r = &out.report;
    assert_eq!(r.phases, [Phase::Tunnel, Phase::Session, Phase::Posture, Phase::Timer, Phase::Backup]);
    assert_eq!((r.handshake_age, r.waited), (Some(2), 15), "up at 10 s, refused then, answered at 15 s");
    // Two sessions for the audit (one refused), one for the backup.
    assert_eq!((r.attempts, tries), (2, 3));
    assert_eq!(r.interface.as_deref(), Some("zo-friend"));

    // The audit, by doctor's renderer, and the posture line; an unknown
    // is a note, not a stop.
    let at = ev.lines.iter().position(|l| l == "box friend's doctor report:").expect("the report is shown");
    assert_eq!(ev.lines[at + 1], "  ok       box.secure-boot             Secure Boot is enabled (user mode)");
    assert!(ev.lines.iter().any(|l| l == "  unknown: 2 ok, 0 warn, 1 unknown, 0 fail"), "{:?}", ev.lines);
    assert!(
        ev.lines.contains(&"box friend posture: unknown (1 unknown), audited 5m 15s ago".to_owned()),
        "{:?}",
        ev.lines
    );
    assert!(ev.warnings.iter().any(|w| w.contains("box.bios-password")), "{:?}", ev.warnings);
    let p = r.box_posture.as_ref().unwrap();
    assert_eq!(p.not_ok.len(), 1);

    // The timer: asked, then enabled and started.
    assert_eq!(r.timer.as_ref().unwrap().action, TimerAction::Enabled);
    assert_eq!(w.systemctl_calls().last().unwrap(), "enable --now -- zoffsite-backup.timer");

    // The first backup, to friend only, landed: same snapshots, same GUIDs.
    assert_eq!(out.backup, Some(Severity::Ok));
    let backup = r.backup.as_ref().unwrap();
    assert_eq!(backup.targets.iter().map(|t| t.name.as_str()).collect::<Vec<_>>(), ["friend"]);
    assert_eq!(backup.targets[0].datasets[0].status, DatasetStatus::Ok);
    let snap = format!("{DS}@{}", backup.snapshot.as_ref().unwrap());
    assert_eq!(w.b.fake.snapshots(&w.b.at(DS)), w.src.snapshots(DS));
    assert_eq!(w.b.fake.content(&w.b.at(&snap)), w.src.content(&snap));
    assert_eq!(w.src.holds(&snap), ["zoffsite-friend"], "only friend's hold: other was never backed up");
    // The snapshot is named by the injected clock (after the wait).
    assert!(snap.ends_with("zoffsite-20260101T000015Z"), "{snap}");
}

#[test]
fn a_failed_audit_stops_before_the_timer_and_the_backup_unless_forced() {
    let _one = serial();
    let mut checks = a_good_box();
    checks.push(Check::fail(CheckId::SshdListen, "sshd listens on 0.0.0.0:22", "listen on the tunnel address only"));
    let w = World::new(&checks);
    let (out, ev, tries) = w.wait(false, false);
    assert_eq!(ev.worst, Severity::Partial, "doctor's 3: {:?}", ev.errors);
    assert_eq!(out.report.phases, [Phase::Tunnel, Phase::Session]);
    assert!(
        ev.errors[0].1.contains("failed check (box.sshd-listen)") && ev.errors[0].1.contains("--force"),
        "{:?}",
        ev.errors
    );
    assert!(
        ev.lines.iter().any(|l| l.starts_with("  fail     box.sshd-listen")),
        "the failure is shown: {:?}",
        ev.lines
    );
    assert_eq!(tries, 2, "no session for a backup");
    assert!(out.report.timer.is_none() && out.report.backup.is_none() && out.backup.is_none());
    assert!(w.systemctl_calls().is_empty(), "the timer was left as it is");
    assert!(w.src.snapshots(DS).is_empty(), "no snapshot taken");
    assert!(w.b.fake.calls("receive").is_empty());

    // --force: backed up, and the exit code still says 3.
    let (out, ev, _) = w.wait(false, true);
    assert_eq!(ev.worst, Severity::Partial);
    assert_eq!(out.backup, Some(Severity::Ok), "the backup itself went well");
    assert_eq!(out.report.phases.last(), Some(&Phase::Backup));
    assert_eq!(w.b.fake.snapshots(&w.b.at(DS)), w.src.snapshots(DS));
    assert_eq!(w.src.snapshots(DS).len(), 1);
}

#[test]
fn a_dry_run_waits_and_shows_and_changes_nothing() {
    let _one = serial();
    let w = World::new(&a_good_box());
    let (out, ev, _) = w.wait(true, false);
    assert_eq!(ev.worst, Severity::Ok, "{:?}", ev.errors);
    let r = &out.report;
    assert!(r.dry_run);
    assert_eq!(r.timer.as_ref().unwrap().action, TimerAction::WouldEnable);
    assert!(w.systemctl_calls().iter().all(|c| c.starts_with("is-")), "{:?}", w.systemctl_calls());
    assert!(
        ev.lines.iter().any(|l| l == "would run: systemctl enable --now -- zoffsite-backup.timer"),
        "{:?}",
        ev.lines
    );
    let backup = r.backup.as_ref().unwrap();
    assert!(backup.dry_run);
    assert_eq!(backup.targets[0].datasets[0].status, DatasetStatus::Planned);
    assert!(w.src.snapshots(DS).is_empty(), "no snapshot taken");
    assert!(w.b.fake.calls("receive").is_empty(), "nothing sent");
}
