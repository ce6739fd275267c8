use std::cell::{Cell, RefCell};
use std::os::unix::fs::PermissionsExt as _;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};

use super::*;
use crate::events::Recorded;

const BOX_WG: &str = "Hz64cXtZeK1304qYfOILdM5dNHCFy3q7C2DJM+rRU04=";
const OTHER: &str = "dRxa9htU+RVUuCymxLHBa675zq3mKpdXLAGKijKxuTo=";
const T0: i64 = 1_800_000_000;

fn target(name: &str) -> Target {
    Target {
        name: name.into(),
        host: "10.77.0.2".into(),
        port: 22,
        user: "zoffsite".into(),
        identity_file: PathBuf::from("/nonexistent/id"),
        known_hosts: PathBuf::from("/nonexistent/known_hosts"),
        connect_timeout: Duration::from_secs(15),
        max_age: Duration::from_secs(93_600),
        bandwidth: Default::default(),
        congestion_control: Default::default(),
    }
}

fn config() -> Config {
    Config::parse(
        "[source]\ndatasets = [\"tank/data\"]\n[[target]]\nname = \"friend\"\nhost = \"10.77.0.2\"\nuser = \"zoffsite\"\nidentity_file = \"/nonexistent/id\"\nknown_hosts = \"/nonexistent/known_hosts\"\n",
    )
    .unwrap()
}

/// An executable shell script in `dir`.
fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    p
}

/// A root with the source's wg-quick file of zo-friend (its peer the box)
/// and a `wg` that prints `body`'s output.
fn world(wg_body: &str) -> (tempfile::TempDir, Wg) {
    let d = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(d.path().join("etc/wireguard")).unwrap();
    std::fs::write(
        d.path().join("etc/wireguard/zo-friend.conf"),
        format!("[Interface]\nAddress = 10.77.0.1/24\nListenPort = 51820\n\n[Peer]\nPublicKey = {BOX_WG}\nAllowedIPs = 10.77.0.2/32\n"),
    )
    .unwrap();
    let wg = Wg::at(script(d.path(), "wg", wg_body));
    (d, wg)
}

#[test]
fn the_tunnel_is_the_boxs_peer_on_the_sources_interface() {
    let seen = |body: &str| {
        let (d, wg) = world(body);
        observe_tunnel(d.path(), &wg, Some("zo-friend"))
    };
    // `wg show zo-friend latest-handshakes`, and nothing else is asked.
    let (d, wg) =
        world(&format!("echo \"$@\" > \"$(dirname \"$0\")/args\"; printf '%s\\t%s\\n' '{BOX_WG}' 1799999990"));
    assert_eq!(
        observe_tunnel(d.path(), &wg, Some("zo-friend")),
        TunnelSeen::Peer { latest_handshake: Some(1_799_999_990) }
    );
    assert_eq!(std::fs::read_to_string(d.path().join("args")).unwrap(), "show zo-friend latest-handshakes\n");
    assert_eq!(seen(&format!("printf '%s\\t0\\n' '{BOX_WG}'")), TunnelSeen::Peer { latest_handshake: None });
    let TunnelSeen::Down(m) = seen("echo 'Unable to access interface: No such device' >&2; exit 1") else { panic!() };
    assert!(m.contains("zo-friend does not exist"), "{m}");
    assert!(matches!(seen("true"), TunnelSeen::Down(m) if m.contains("no peer yet")));
    let TunnelSeen::OtherPeers(m) = seen(&format!("printf '%s\\t5\\n' '{OTHER}'")) else { panic!() };
    assert!(m.contains(BOX_WG), "{m}");
    let TunnelSeen::Unreadable(m) = seen("echo 'Unable to access interface: Operation not permitted' >&2; exit 1")
    else {
        panic!()
    };
    assert!(m.contains("Operation not permitted"), "{m}");
    assert!(matches!(seen("echo garbage"), TunnelSeen::Unreadable(_)));
}

#[test]
fn a_tunnel_box_new_did_not_make_is_not_watched() {
    let (d, wg) = world("exit 99");
    assert!(matches!(observe_tunnel(d.path(), &wg, None), TunnelSeen::Unreadable(m) if m.contains("box new")));
    let TunnelSeen::Unreadable(m) = observe_tunnel(d.path(), &wg, Some("zo-other")) else { panic!() };
    assert!(m.contains("/etc/wireguard/zo-other.conf") && m.contains("zo-other.netdev"), "{m}");
    // A networkd file is read by its own section name.
    std::fs::create_dir_all(d.path().join("etc/systemd/network")).unwrap();
    std::fs::write(d.path().join("etc/systemd/network/zo-nd.netdev"), format!("[WireGuardPeer]\nPublicKey={BOX_WG}\n"))
        .unwrap();
    let wg = Wg::at(script(d.path(), "wg2", &format!("printf '%s\\t7\\n' '{BOX_WG}'")));
    assert_eq!(observe_tunnel(d.path(), &wg, Some("zo-nd")), TunnelSeen::Peer { latest_handshake: Some(7) });
    assert_eq!(interface(&target("friend")).as_deref(), Some("zo-friend"));
    assert_eq!(interface(&target("Not_A_Box")), None);
}

#[test]
fn session_failures_are_judged_by_kind() {
    let host_key = RemoteError::HostKeyChanged { known_hosts: "/etc/zoffsite/boxes/friend/known_hosts".into() };
    let Login::HostKey(m) = login(Err(host_key)) else { panic!() };
    assert!(m.contains("replace its line in /etc/zoffsite/boxes/friend/known_hosts"), "{m}");
    assert!(matches!(login(Err(RemoteError::HostKeyUnknown { known_hosts: "k".into() })), Login::HostKey(_)));
    let unreachable = RemoteError::Unreachable { host: "10.77.0.2".into(), detail: "Connection refused".into() };
    assert!(matches!(login(Err(unreachable)), Login::Unreachable(m) if m.contains("Connection refused")));
    assert!(matches!(login(Err(RemoteError::AuthFailed { identity: "id".into() })), Login::NotYet(_)));
    assert!(matches!(login(Err(RemoteError::Timeout(Duration::from_secs(1)))), Login::NotYet(_)));
    assert!(matches!(login(Err(RemoteError::Ssh("cannot run ssh".into()))), Login::Local(_)));
    assert_eq!(login(Ok(Fetched::Missing)), Login::Reached(Fetched::Missing));
}

/// A fake clock that sleeping advances, and a connect that fails with
/// what `fail` makes (counting the attempts).
fn observed<'a>(
    tunnel: &'a mut dyn FnMut() -> TunnelSeen,
    clock: &'a mut dyn FnMut() -> i64,
    sleep: &'a mut dyn FnMut(Duration),
    fail: fn(&Target) -> RemoteError,
    tries: Arc<AtomicU32>,
) -> Observers<'a> {
    Observers {
        tunnel,
        connect: Arc::new(move |t: &Target| {
            tries.fetch_add(1, Ordering::SeqCst);
            Err(fail(t))
        }),
        clock,
        sleep,
    }
}

#[test]
fn the_wait_polls_the_injected_observers_until_it_times_out() {
    let now = Cell::new(T0);
    let looks = Cell::new(0);
    let mut tunnel = || {
        looks.set(looks.get() + 1);
        // The box dials in after 20 s.
        TunnelSeen::Peer { latest_handshake: (now.get() >= T0 + 20).then_some(now.get() - 1) }
    };
    let mut clock = || now.get();
    let mut sleep = |d: Duration| now.set(now.get() + i64::try_from(d.as_secs()).unwrap());
    let tries = Arc::new(AtomicU32::new(0));
    let refused = |t: &Target| RemoteError::Unreachable { host: t.host.clone(), detail: "Connection refused".into() };
    let mut obs = observed(&mut tunnel, &mut clock, &mut sleep, refused, tries.clone());
    let t = target("friend");
    let opts = Options {
        target: &t,
        timeout: Duration::from_secs(60),
        poll: Duration::from_secs(5),
        dry_run: false,
        force: false,
        config_path: Path::new("/etc/zoffsite/zoffsite.toml"),
    };
    let mut ev = Statused::default();
    let (w, v) = wait(&opts, &mut obs, &mut ev);
    assert_eq!(looks.get(), 5, "at 0, 5, 10, 15 and 20 s");
    assert_eq!(w.handshake_age, Some(1));
    let Verdict::TimedOut { phase: Phase::Session, message } = &v else { panic!("{v:?}") };
    assert!(message.contains("Connection refused"), "{message}");
    assert_eq!(tries.load(Ordering::SeqCst), 8, "at 20, 25, ... 55 s");
    assert_eq!(w.attempts, 8);
    assert_eq!(now.get(), T0 + 60);
    assert!(ev.recorded.lines[0].contains("waiting up to 1m for box friend"), "{:?}", ev.recorded.lines);
    assert!(ev.recorded.lines[1].contains("box friend is up"), "{:?}", ev.recorded.lines);
    assert_eq!(ev.statuses.len(), 4 + 8, "a status line per sleep: {:?}", ev.statuses);
    assert!(ev.statuses[5].contains("the tunnel is up, but no session yet"), "{}", ev.statuses[5]);
}

#[test]
fn a_changed_host_key_ends_the_wait_at_the_first_attempt() {
    let now = Cell::new(T0);
    let mut tunnel = || TunnelSeen::Unreadable("not root".into());
    let mut clock = || now.get();
    let mut sleep = |_d: Duration| panic!("no sleep after a changed host key");
    let tries = Arc::new(AtomicU32::new(0));
    let changed = |t: &Target| RemoteError::HostKeyChanged { known_hosts: t.known_hosts.display().to_string() };
    let mut obs = observed(&mut tunnel, &mut clock, &mut sleep, changed, tries.clone());
    let t = target("friend");
    let opts = Options {
        target: &t,
        timeout: Duration::from_secs(1800),
        poll: Duration::from_secs(5),
        dry_run: true,
        force: false,
        config_path: Path::new("/etc/zoffsite/zoffsite.toml"),
    };
    let cfg = config();
    // Taken (and let go) once before the wait, to fail early; not again.
    let locks = Cell::new(0);
    let lock = || {
        locks.set(locks.get() + 1);
        Ok(None)
    };
    let sys = System { root: true, systemd: true, systemctl: "/nonexistent/systemctl".into(), lock: &lock };
    let mut ev = Recorded::default();
    let out = run(&cfg, &Zfs::with_binary("/nonexistent/zfs"), &opts, &mut obs, &sys, &mut ev);
    assert_eq!(tries.load(Ordering::SeqCst), 1);
    assert_eq!(ev.worst, Severity::Target);
    let (_, msg) = &ev.errors[0];
    assert!(
        msg.contains("box friend: the box's SSH host key is not the one pinned in /nonexistent/known_hosts"),
        "{msg}"
    );
    assert!(out.report.phases.is_empty() && out.report.box_posture.is_none() && out.report.backup.is_none());
    assert_eq!(out.report.attempts, 1);
    assert!(out.backup.is_none());
    assert!(ev.lines.iter().any(|l| l.contains("trying the box directly")), "{:?}", ev.lines);
    assert_eq!(locks.get(), 1);
}

#[test]
fn a_lock_that_can_never_be_taken_fails_before_the_wait() {
    let now = Cell::new(T0);
    let mut tunnel = || panic!("no wait");
    let mut clock = || now.get();
    let mut sleep = |_d: Duration| panic!("no wait");
    let tries = Arc::new(AtomicU32::new(0));
    let mut obs = observed(&mut tunnel, &mut clock, &mut sleep, |_| RemoteError::Local("x".into()), tries);
    let t = target("friend");
    let opts = Options {
        target: &t,
        timeout: Duration::from_secs(1800),
        poll: Duration::from_secs(5),
        dry_run: false,
        force: false,
        config_path: Path::new("/c"),
    };
    let cfg = config();
    let denied = || {
        Err(LockError::Io {
            lock: "/run/zoffsite/zoffsite-1.lock".into(),
            source: std::io::Error::from(std::io::ErrorKind::PermissionDenied),
        })
    };
    let sys = System { root: false, systemd: true, systemctl: "/nonexistent".into(), lock: &denied };
    let mut ev = Recorded::default();
    let out = run(&cfg, &Zfs::with_binary("/nonexistent/zfs"), &opts, &mut obs, &sys, &mut ev);
    assert_eq!(ev.worst, Severity::Error);
    assert!(ev.errors[0].1.contains("/run/zoffsite/zoffsite-1.lock"), "{:?}", ev.errors);
    assert!(out.report.phases.is_empty() && out.report.attempts == 0);
    // Busy is not a reason to refuse: that run ends before the box is up.
    let busy = || Err(LockError::Busy { pid: "7".into(), config: "/c".into(), lock: "/l".into() });
    let mut tunnel = || TunnelSeen::Peer { latest_handshake: None };
    let mut sleep = |d: Duration| now.set(now.get() + i64::try_from(d.as_secs()).unwrap());
    let mut clock = || now.get();
    let tries = Arc::new(AtomicU32::new(0));
    let mut obs = observed(&mut tunnel, &mut clock, &mut sleep, |_| RemoteError::Local("x".into()), tries);
    let sys = System { root: true, systemd: true, systemctl: "/nonexistent".into(), lock: &busy };
    let opts = Options { timeout: Duration::from_secs(5), ..opts };
    let mut ev = Recorded::default();
    let out = run(&cfg, &Zfs::with_binary("/nonexistent/zfs"), &opts, &mut obs, &sys, &mut ev);
    assert_eq!(ev.worst, Severity::Target, "it waited, and timed out: {:?}", ev.errors);
    assert!(out.report.waited >= 5);
}

/// [`Recorded`], with the status lines kept too.
#[derive(Default)]
struct Statused {
    recorded: Recorded,
    statuses: Vec<String>,
}

impl Events for Statused {
    fn line(&mut self, text: &str) {
        self.recorded.line(text);
    }
    fn warn(&mut self, text: &str) {
        self.recorded.warn(text);
    }
    fn error(&mut self, severity: Severity, text: &str) {
        self.recorded.error(severity, text);
    }
    fn status(&mut self, text: &str) {
        self.statuses.push(text.to_owned());
    }
}

/// A `systemctl` answering `is-enabled` and `is-active` as told, logging
/// every call to `calls`.
fn fake_systemctl(dir: &Path, enabled: &str, active: &str, enable_fails: bool) -> PathBuf {
    let log = dir.join("calls");
    script(
        dir,
        "systemctl",
        &format!(
            "echo \"$*\" >> '{}'\ncase \"$1\" in\n  is-enabled) echo {enabled}; [ {enabled} = enabled ];;\n  is-active) echo {active}; [ {active} = active ];;\n  enable) {};;\nesac",
            log.display(),
            if enable_fails { "echo 'Failed to enable unit: Unit file zoffsite-backup.timer does not exist.' >&2; exit 1" } else { "exit 0" }
        ),
    )
}

fn calls(dir: &Path) -> Vec<String> {
    std::fs::read_to_string(dir.join("calls")).unwrap_or_default().lines().map(str::to_owned).collect()
}

#[test]
fn the_backup_timer_is_enabled_once_and_its_failure_is_reported() {
    let lock = || Ok(None);
    let d = tempfile::tempdir().unwrap();
    let sys = |p: PathBuf| System { root: true, systemd: true, systemctl: p.into_os_string(), lock: &lock };
    // Enabled and active: only asked.
    let mut ev = Recorded::default();
    let r = backup_timer(&sys(fake_systemctl(d.path(), "enabled", "active", false)), false, &mut ev);
    assert_eq!(r.action, TimerAction::Already);
    assert_eq!(calls(d.path()), ["is-enabled -- zoffsite-backup.timer", "is-active -- zoffsite-backup.timer"]);
    // Disabled: enabled and started; with -n, only said.
    let d = tempfile::tempdir().unwrap();
    let r = backup_timer(&sys(fake_systemctl(d.path(), "disabled", "inactive", false)), true, &mut ev);
    assert_eq!(r.action, TimerAction::WouldEnable);
    assert_eq!(calls(d.path()).len(), 2, "-n enables nothing");
    assert!(ev.lines.last().unwrap().contains("would run: systemctl enable --now -- zoffsite-backup.timer"));
    let r = backup_timer(&sys(fake_systemctl(d.path(), "disabled", "inactive", false)), false, &mut ev);
    assert_eq!(r.action, TimerAction::Enabled);
    assert_eq!(calls(d.path()).last().unwrap(), "enable --now -- zoffsite-backup.timer");
    assert_eq!(ev.worst, Severity::Ok);
    // Not installed: an error (exit 1) with the fix.
    let d = tempfile::tempdir().unwrap();
    let r = backup_timer(&sys(fake_systemctl(d.path(), "not-found", "inactive", true)), false, &mut ev);
    assert_eq!(r.action, TimerAction::Failed);
    assert_eq!(ev.worst, Severity::Error);
    let detail = r.detail.unwrap();
    assert!(detail.contains("does not exist") && detail.contains("source.bundle"), "{detail}");
    // Not root, or no systemd: nothing is asked.
    let d = tempfile::tempdir().unwrap();
    let p = fake_systemctl(d.path(), "enabled", "active", false);
    let mut ev = Recorded::default();
    let r =
        backup_timer(&System { root: false, systemd: true, systemctl: p.clone().into(), lock: &lock }, false, &mut ev);
    assert_eq!(r.action, TimerAction::Skipped);
    let r = backup_timer(&System { root: true, systemd: false, systemctl: p.into(), lock: &lock }, false, &mut ev);
    assert_eq!(r.action, TimerAction::Skipped);
    assert!(calls(d.path()).is_empty());
    assert_eq!(ev.warnings.len(), 2);
    assert_eq!(ev.worst, Severity::Ok, "a skip is a note");
}

#[test]
fn the_wait_ends_at_its_timeout_without_a_last_look() {
    // Observers borrow their state (they need not be 'static).
    let seen = RefCell::new(Vec::new());
    let mut tunnel = || {
        seen.borrow_mut().push(1);
        TunnelSeen::Peer { latest_handshake: None }
    };
    let now = Cell::new(T0);
    let mut clock = || now.get();
    let mut sleep = |d: Duration| now.set(now.get() + i64::try_from(d.as_secs()).unwrap());
    let tries = Arc::new(AtomicU32::new(0));
    let mut obs = observed(&mut tunnel, &mut clock, &mut sleep, |_| RemoteError::Local("x".into()), tries);
    let t = target("friend");
    let opts = Options {
        target: &t,
        timeout: Duration::from_secs(10),
        poll: Duration::from_secs(5),
        dry_run: false,
        force: false,
        config_path: Path::new("/c"),
    };
    let (_, v) = wait(&opts, &mut obs, &mut Recorded::default());
    assert!(matches!(v, Verdict::TimedOut { phase: Phase::Tunnel, .. }));
    assert_eq!(seen.borrow().len(), 2, "at 0 and 5 s; at 10 s the time is up");
}
