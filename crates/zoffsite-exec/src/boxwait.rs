//! `box wait`'s shell: observes the box's tunnel and tries sessions for
//! the state machine of [`zoffsite_core::provision::wait`], shows the box's
//! audit, enables the backup timer and runs the first backup to that one
//! target through [`crate::replicate`] (what `zoffsite backup` runs).
//!
//! Everything the wait observes comes through [`Observers`] (the tunnel,
//! sessions, the clock, sleeping), so tests run it without `wg`, ssh or
//! real time; [`observe_tunnel`] and [`Session::connect`] are production's.
//!
//! Invariants:
//! - The tunnel is read with `wg show IF latest-handshakes` only (never
//!   `dump`, which prints the private key), and the box's key from the
//!   source's own WireGuard file of that tunnel, bounded
//!   ([`keepalive::MAX_BYTES`]).
//! - Only the one target is backed up: the run's config is the user's with
//!   every other target left out, so the rest of the run (selection,
//!   snapshot, retention) is exactly `zoffsite backup`'s.
//! - Nothing prints: lines, warnings, failures and the status line go to
//!   [`Events`]; the box's audit is rendered by the one doctor renderer
//!   ([`zoffsite_core::doctor::render_text`]).

use std::ffi::OsString;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use zoffsite_core::config::{Config, Target};
use zoffsite_core::doctor::boxaudit::{self, Fetched, Posture};
use zoffsite_core::provision::keepalive::{self as ka, parse_source_peer_key};
use zoffsite_core::provision::values::BoxName;
use zoffsite_core::provision::wait::{
    self, Action, Gate, Login, Phase, TimerAction, TimerFacts, TimerReport, TimerStep, TunnelSeen, Verdict, Wait,
    WaitReport,
};
use zoffsite_core::provision::{netdev_path, units, wg_quick_path, Backend};
use zoffsite_core::report::Severity;

use crate::events::{Events, Progress};
use crate::keepalive::{Wg, WG_DEADLINE};
use crate::lock::{LockError, RunLock};
use crate::process::{self, Cmd};
use crate::proto::client::{RemoteError, Session};
use crate::replicate::{self, Connect};
use crate::zfs::Zfs;

/// Where systemd keeps its runtime state: present exactly when systemd is
/// the init (sd_booted(3)).
pub const SYSTEMD_RUNTIME: &str = "/run/systemd/system";

/// How long one `systemctl` may take.
const SYSTEMCTL_DEADLINE: Duration = Duration::from_secs(60);

/// How to wait; never a command-line type.
#[derive(Debug, Clone)]
pub struct Options<'a> {
    /// The box's target.
    pub target: &'a Target,
    /// Give up after this long.
    pub timeout: Duration,
    /// Look again this often.
    pub poll: Duration,
    /// Wait and show; enable nothing, and only plan the backup.
    pub dry_run: bool,
    /// Back up even when the box's audit has a failed check.
    pub force: bool,
    /// The config file, named in messages.
    pub config_path: &'a Path,
}

/// What the wait looks at, and how time passes.
pub struct Observers<'a> {
    /// The box's peer on this machine's interface ([`observe_tunnel`]).
    pub tunnel: &'a mut dyn FnMut() -> TunnelSeen,
    /// Opens a session to the target ([`Session::connect`]); the backup
    /// uses it too.
    pub connect: Arc<Connect>,
    /// Unix seconds now.
    pub clock: &'a mut dyn FnMut() -> i64,
    pub sleep: &'a mut dyn FnMut(Duration),
}

/// This machine, for the backup timer and the run lock.
pub struct System<'a> {
    /// Running as root.
    pub root: bool,
    /// systemd is the init ([`systemd_booted`]).
    pub systemd: bool,
    /// The `systemctl` program.
    pub systemctl: OsString,
    /// Takes the config's run lock (`None` for a dry run), held from the
    /// timer to the end of the backup.
    pub lock: &'a dyn Fn() -> Result<Option<RunLock>, LockError>,
}

/// Whether systemd is the init here.
pub fn systemd_booted() -> bool {
    Path::new(SYSTEMD_RUNTIME).is_dir()
}

/// The source's interface for `target`'s box: `zo-NAME`, when its name is
/// a box name (`box new` made it).
pub fn interface(target: &Target) -> Option<String> {
    BoxName::new(&target.name).ok().map(|n| n.interface())
}

/// The box's peer on this machine's `interface` (`None`: the target has
/// none), as `wg show IF latest-handshakes` has it; the box's key is read
/// from the interface's WireGuard file under `root` (`/` but in tests).
pub fn observe_tunnel(root: &Path, wg: &Wg, interface: Option<&str>) -> TunnelSeen {
    let Some(interface) = interface else {
        return TunnelSeen::Unreadable("its target was not made by `zoffsite box new`: no zo-NAME tunnel".into());
    };
    let under = |abs: String| root.join(abs.trim_start_matches('/'));
    let mut key = None;
    for (path, backend) in [(wg_quick_path(interface), Backend::WgQuick), (netdev_path(interface), Backend::Networkd)] {
        match crate::doctor::read_file(&under(path.clone()), ka::MAX_BYTES) {
            Ok(None) => continue,
            Ok(Some(bytes)) => {
                let text = String::from_utf8_lossy(&bytes);
                key = Some(parse_source_peer_key(&text, backend).map_err(|e| format!("{path}: {e}")));
                break;
            }
            // Not root: /etc/wireguard is root's, 0700.
            Err(e) => return TunnelSeen::Unreadable(e),
        }
    }
    let key = match key {
        None => {
            return TunnelSeen::Unreadable(format!(
                "no {} or {}: not a tunnel `zoffsite box new` made",
                wg_quick_path(interface),
                netdev_path(interface)
            ))
        }
        Some(Err(e)) => return TunnelSeen::Unreadable(e),
        Some(Ok(k)) => k,
    };
    let cmd = wg.show_cmd(interface, "latest-handshakes");
    let out = match process::run_by(&cmd, ka::MAX_BYTES, Some(WG_DEADLINE)) {
        Ok(o) => o,
        Err(e) => return TunnelSeen::Unreadable(e.to_string()),
    };
    if !out.success() {
        let first = out.stderr.lines().map(str::trim).find(|l| !l.is_empty()).unwrap_or("(no message)");
        return if out.stderr.contains("No such device") {
            TunnelSeen::Down(format!("{interface} does not exist"))
        } else {
            TunnelSeen::Unreadable(format!("`{cmd}` failed: {}", zoffsite_core::protocol::sanitize(first, 200)))
        };
    }
    let handshakes = match ka::parse_handshakes(&String::from_utf8_lossy(&out.stdout)) {
        Ok(h) => h,
        Err(e) => return TunnelSeen::Unreadable(e.to_string()),
    };
    match handshakes.get(key.as_str()) {
        Some(0) => TunnelSeen::Peer { latest_handshake: None },
        Some(t) => TunnelSeen::Peer { latest_handshake: Some(i64::try_from(*t).unwrap_or(i64::MAX)) },
        None if handshakes.is_empty() => TunnelSeen::Down(format!("{interface} has no peer yet")),
        None => TunnelSeen::OtherPeers(format!(
            "its {} peer(s) do not include the box's key {key} (from its WireGuard file)",
            handshakes.len()
        )),
    }
}

/// A session attempt's outcome, as the wait judges it.
pub fn login(result: Result<Fetched, RemoteError>) -> Login {
    match result {
        Ok(f) => Login::Reached(f),
        Err(e @ (RemoteError::HostKeyChanged { .. } | RemoteError::HostKeyUnknown { .. })) => {
            Login::HostKey(e.to_string())
        }
        Err(e @ RemoteError::Unreachable { .. }) => Login::Unreachable(e.to_string()),
        Err(e @ (RemoteError::Ssh(_) | RemoteError::Local(_))) => Login::Local(e.to_string()),
        Err(e) => Login::NotYet(e.to_string()),
    }
}

/// Waits for the box of `opts.target` (see the module docs of
/// [`zoffsite_core::provision::wait`]): the wait as it ended, and how.
pub fn wait(opts: &Options<'_>, obs: &mut Observers<'_>, events: &mut dyn Events) -> (Wait, Verdict) {
    let target = opts.target;
    let interface = interface(target);
    let start = (obs.clock)();
    let mut w = Wait::new(&target.name, interface.as_deref(), start, opts.timeout.as_secs(), opts.poll.as_secs());
    events.line(&format!(
        "waiting up to {} for box {} (power it on: it dials in over WireGuard)",
        zoffsite_core::human::duration(opts.timeout),
        target.name
    ));
    let mut action = w.start();
    loop {
        action = match action {
            Action::ObserveTunnel => {
                let seen = (obs.tunnel)();
                w.tunnel(seen, (obs.clock)())
            }
            Action::Connect { say } => {
                if let Some(s) = say {
                    events.line(&s);
                }
                let got = login((obs.connect)(target).and_then(Session::audit));
                w.login(got, (obs.clock)())
            }
            Action::Sleep { secs, status } => {
                events.status(&status);
                (obs.sleep)(Duration::from_secs(secs));
                w.woke((obs.clock)())
            }
            Action::Done(v) => return (w, v),
        };
    }
}

/// Shows the box's audit: its checks by doctor's renderer when the box
/// handed over a report the source accepts, then the posture's line.
fn show_audit(target: &str, fetched: &Fetched, posture: &Posture, events: &mut dyn Events) {
    if let Fetched::Report(text) = fetched {
        if let Ok(audit) = boxaudit::parse(text) {
            events.line(&format!("box {target}'s doctor report:"));
            for l in audit.text().lines() {
                events.line(&format!("  {l}"));
            }
        }
    }
    events.line(&format!("box {target} posture: {}", posture.line()));
}

/// `systemctl ARGS`, its stdout's first line; `Err` why it could not run.
fn systemctl(sys: &System<'_>, args: &[&str]) -> Result<(bool, String, String), String> {
    let cmd = Cmd::new(&sys.systemctl).args(args);
    let out = process::run_by(&cmd, 64 * 1024, Some(SYSTEMCTL_DEADLINE)).map_err(|e| e.to_string())?;
    let first = String::from_utf8_lossy(&out.stdout).lines().next().unwrap_or_default().trim().to_owned();
    Ok((out.success(), first, out.stderr.trim().to_owned()))
}

/// Makes sure the backup timer is enabled and started (see the decisions
/// of [`zoffsite_core::provision::wait`]).
fn backup_timer(sys: &System<'_>, dry_run: bool, events: &mut dyn Events) -> TimerReport {
    let unit = units::BACKUP_TIMER;
    let mut facts = TimerFacts { root: sys.root, systemd: sys.systemd, enabled: false, active: false };
    if sys.root && sys.systemd {
        // Anything but a clear yes (an error included) is a no: `enable
        // --now` is idempotent, and says what is wrong.
        let yes = |args: &[&str], want: &str| systemctl(sys, args).is_ok_and(|(ok, out, _)| ok && out == want);
        facts.enabled = yes(&["is-enabled", "--", unit], "enabled");
        facts.active = yes(&["is-active", "--", unit], "active");
    }
    let report = |action, detail: Option<String>| TimerReport { unit, action, detail };
    match wait::timer_step(&facts) {
        TimerStep::Skip(why) => {
            events.warn(&why);
            report(TimerAction::Skipped, Some(why))
        }
        TimerStep::Ready => {
            events.line(&format!("{unit} is enabled and active"));
            report(TimerAction::Already, None)
        }
        TimerStep::Enable => {
            let argv = wait::enable_timer_argv();
            if dry_run {
                events.line(&format!("would run: {}", argv.join(" ")));
                return report(TimerAction::WouldEnable, None);
            }
            let args: Vec<&str> = argv[1..].iter().map(String::as_str).collect();
            match systemctl(sys, &args) {
                Ok((true, _, _)) => {
                    events.line(&format!("enabled and started {unit}"));
                    report(TimerAction::Enabled, None)
                }
                Ok((false, _, stderr)) | Err(stderr) => {
                    let why = format!(
                        "`{}` failed: {}; the first backup runs anyway. `zoffsite box apply` of the box's source.bundle installs the timer",
                        argv.join(" "),
                        zoffsite_core::protocol::sanitize(&stderr, 300)
                    );
                    events.error(Severity::Error, &why);
                    report(TimerAction::Failed, Some(why))
                }
            }
        }
    }
}

/// Passes everything on and keeps the worst severity: the backup's own.
struct Worst<'a> {
    inner: &'a mut dyn Events,
    worst: Severity,
}

impl Events for Worst<'_> {
    fn line(&mut self, text: &str) {
        self.inner.line(text);
    }
    fn warn(&mut self, text: &str) {
        self.inner.warn(text);
    }
    fn error(&mut self, severity: Severity, text: &str) {
        self.worst.raise(severity);
        self.inner.error(severity, text);
    }
    fn progress(&mut self, p: Progress<'_>) {
        self.inner.progress(p);
    }
    fn wants_progress(&self) -> bool {
        self.inner.wants_progress()
    }
}

/// What [`run`] did, and the first backup's own outcome (for its
/// report's `exit_code`, which the binary sets).
pub struct Outcome {
    pub report: WaitReport,
    /// The backup's worst severity (when it ran).
    pub backup: Option<Severity>,
}

/// The whole of `box wait`: wait, show the audit, the timer, the first
/// backup of `cfg`'s selection to `opts.target` only. Failures go to
/// `events` with their severity; what was reached is in the report.
pub fn run(
    cfg: &Config,
    zfs: &Zfs,
    opts: &Options<'_>,
    obs: &mut Observers<'_>,
    sys: &System<'_>,
    events: &mut dyn Events,
) -> Outcome {
    let target = opts.target;
    let mut report = WaitReport {
        target: target.name.clone(),
        dry_run: opts.dry_run,
        force: opts.force,
        interface: interface(target),
        ..WaitReport::default()
    };
    let out = |report, backup| Outcome { report, backup };
    // A run that could never take the lock (not root: /run/zoffsite is
    // root's) would fail only after the whole wait: say so now. A run
    // holding it is fine: it is likely over by the time the box is up.
    match (sys.lock)() {
        Err(e) if !matches!(e, LockError::Busy { .. }) => {
            events.error(Severity::Error, &e.to_string());
            return out(report, None);
        }
        _ => {}
    }
    let (w, verdict) = wait(opts, obs, events);
    let now = (obs.clock)();
    report.phases.clone_from(&w.phases);
    report.attempts = w.attempts;
    report.handshake_age = w.handshake_age;
    report.waited = w.waited(now);
    let fetched = match verdict {
        Verdict::Reached(f) => f,
        v => {
            events.error(v.severity(), v.message().unwrap_or("the wait failed"));
            return out(report, None);
        }
    };

    // The box's audit, and whether it lets the backup go on.
    let posture = Posture::judge(&fetched, now);
    show_audit(&target.name, &fetched, &posture, events);
    let gate = wait::gate(&target.name, &posture, opts.force);
    report.box_posture = Some(posture);
    match gate {
        Gate::Go(note) => {
            if let Some(n) = note {
                events.warn(&n);
            }
        }
        Gate::Stop(why) => {
            events.error(Severity::Partial, &why);
            return out(report, None);
        }
        Gate::Forced(why) => events.error(Severity::Partial, &why),
    }
    report.phases.push(Phase::Posture);

    // The timer and the backup, under the run lock: a timer's run that
    // starts meanwhile finds it taken and leaves this one alone.
    let _lock = match (sys.lock)() {
        Ok(l) => l,
        Err(e) => {
            let severity = if matches!(e, LockError::Busy { .. }) { Severity::Busy } else { Severity::Error };
            events.error(severity, &e.to_string());
            return out(report, None);
        }
    };
    report.timer = Some(backup_timer(sys, opts.dry_run, events));
    report.phases.push(Phase::Timer);

    events.line(&format!(
        "{} the first backup to box {}",
        if opts.dry_run { "planning" } else { "running" },
        target.name
    ));
    let one = Config { targets: vec![target.clone()], ..cfg.clone() };
    let ropts = replicate::Options {
        dry_run: opts.dry_run,
        force_snapshot: false,
        config_path: opts.config_path,
        now: jiff::Timestamp::from_second((obs.clock)()).unwrap_or_else(|_| jiff::Timestamp::now()),
        connect: obs.connect.clone(),
    };
    let mut worst = Worst { inner: events, worst: Severity::Ok };
    report.backup = Some(replicate::backup(&one, zfs, &ropts, &mut worst));
    report.phases.push(Phase::Backup);
    let backup = worst.worst;
    out(report, Some(backup))
}

#[cfg(test)]
mod tests;
