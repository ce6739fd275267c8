//! `zoffsite box wait NAME`: after the owner powers on a freshly set up
//! box, the source waits for it to come up, shows its audit, makes sure
//! the backup timer runs and makes the first backup. This module decides;
//! `zoffsite_exec::boxwait` observes and acts.
//!
//! # The wait, a state machine
//!
//! [`Wait`] is fed observations and the time (never reads a clock) and
//! answers the next [`Action`]: look at the tunnel, try a session, sleep,
//! or stop with a [`Verdict`]. Two phases:
//!
//! 1. **[`Phase::Tunnel`]**: the box's peer on the source's interface for
//!    it (`zo-NAME`) must show a handshake at most
//!    [`keepalive::STALE_AFTER`] seconds old: the box booted, unlocked its
//!    disk and dialed. An older handshake is from before (the box's last
//!    life), not a sign of this one.
//! 2. **[`Phase::Session`]**: a zoffsite session with the box's pinned host
//!    key, which fetches the box's audit. ssh may be refused for a while
//!    after the tunnel is up (sshd, `serve` and the box's pool come up in
//!    their own time), so a failed attempt is tried again after the poll
//!    interval.
//!
//! # Decisions
//!
//! - **Bounded**: the whole wait ends at its timeout; a session attempt
//!   started before it is bounded by the session's own deadlines (the
//!   target's `connect_timeout`, then the box's greeting's) and may end
//!   after it. With a timeout of 0 each phase is looked at once.
//! - **A host key that is not the pinned one ends the wait at once** (exit
//!   4), with the fix: waiting cannot change it, and it may be someone
//!   else's machine. So does a host key missing from `known_hosts`.
//! - **A refused key is waited out**, not a hard failure: during a by-hand
//!   `box apply` the tunnel comes up before `box init` installs the
//!   source's key. The timeout then names it.
//! - **The source's own end** of the tunnel: when its interface is missing
//!   (or has no peer yet) for [`SOURCE_TUNNEL_GRACE_SECS`], the wait ends
//!   (exit 1) with the fix (start it): the box could never handshake. A
//!   `box apply` of the source's bundle starts it without waiting, so a
//!   moment's absence is not a failure. An interface whose peers do not
//!   include the box's key is not this box's tunnel: the wait ends at once.
//! - **When the tunnel cannot be watched** (not root: `wg show` needs
//!   `CAP_NET_ADMIN` and `/etc/wireguard` is root's; a target not made by
//!   `box new`, which has no `zo-NAME`), the session is tried directly:
//!   the handshake is a cheaper first signal, never a requirement.
//! - **The audit gates the backup** ([`gate`]): a failed check, or a report
//!   the box made up (refused as inconsistent), stops before anything is
//!   enabled or sent (exit 3, doctor's "fix"), unless `--force`, which
//!   still exits at least 3 so a script sees the finding. Warnings and
//!   unknowns (most firmware cannot show a BIOS password), a missing audit
//!   (the box's doctor timer runs 3 min after boot, then hourly) and a stale one (a box
//!   that sat powered off since its install) are shown and do not stop it,
//!   as in `status`.
//! - **The backup timer** ([`timer_step`]) is enabled and started with
//!   `systemctl enable --now`, idempotently (nothing runs when it is
//!   already enabled and active); skipped, with a note saying what to run,
//!   when not root (nothing could be enabled) or when systemd is not the
//!   init (`/run/systemd/system` is missing: a container, another init).
//!   A failure there is reported (exit 1) and the first backup still runs:
//!   it is the point of the command, and the next `box wait` or `box
//!   apply` enables the timer again.

use serde::Serialize;

use super::keepalive;
use super::units;
use crate::doctor::boxaudit::{Fetched, Posture, PostureState};
use crate::doctor::Status;
use crate::report::{BackupReport, Severity};

/// How long `box wait` waits by default.
pub const DEFAULT_TIMEOUT_SECS: u64 = 30 * 60;

/// How often the tunnel is looked at and a session tried again.
pub const POLL_SECS: u64 = 5;

/// How long the source's own interface may be missing (being brought up,
/// e.g. just after `box apply source.bundle`) before the wait gives up.
pub const SOURCE_TUNNEL_GRACE_SECS: u64 = 60;

/// What to tell the owner when a box cannot be reached at all (`status`,
/// and a `box wait` that saw no handshake): the one cause nobody at the
/// source can see. One line.
pub const UNREACHABLE_HINT: &str = "a box whose root disk is bound to its TPM stops at the disk's recovery prompt after a firmware update or a Secure Boot change (PCR 7 changes): see docs/box.md#when-the-box-does-not-come-back";

/// The steps of `box wait`, in order; a report lists those it reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// A fresh handshake of the box's peer on the source's interface.
    Tunnel,
    /// A session with the pinned host key, and the box's audit fetched.
    Session,
    /// The box's audit shown, and it let the backup go on.
    Posture,
    /// The backup timer enabled (or found enabled, or skipped with a note).
    Timer,
    /// The first backup ran (whatever its outcome: see its report).
    Backup,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Tunnel => "tunnel",
            Phase::Session => "session",
            Phase::Posture => "posture",
            Phase::Timer => "timer",
            Phase::Backup => "backup",
        }
    }
}

/// The box's peer on the source's interface, as `wg show IF
/// latest-handshakes` has it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TunnelSeen {
    /// The box's peer; its latest handshake (Unix seconds, source clock),
    /// `None`: never.
    Peer { latest_handshake: Option<i64> },
    /// The source's interface is not there, or has no peer yet: its end of
    /// the tunnel is down or coming up. Why, for people.
    Down(String),
    /// The interface has peers, and the box's key is not among them: it is
    /// not the tunnel the source's WireGuard file describes.
    OtherPeers(String),
    /// It could not be looked at (not root, no `wg`, no WireGuard file of
    /// `box new`'s): why.
    Unreadable(String),
}

/// One session attempt with the pinned host key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Login {
    /// Reached and greeted; what the box handed over as its audit.
    Reached(Fetched),
    /// The network did not get there (timed out, refused, no route): the
    /// message, with its fix.
    Unreachable(String),
    /// Got there, but no session yet (the key refused, the box did not
    /// answer, it ended the session): the message.
    NotYet(String),
    /// The box's host key is not the one pinned (or none is pinned): the
    /// message, with the fix.
    HostKey(String),
    /// Nothing can be tried from here (ssh cannot be started): why.
    Local(String),
}

/// What to do next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Look at the tunnel, then call [`Wait::tunnel`].
    ObserveTunnel,
    /// Try a session, then call [`Wait::login`]. `say` is a line for the
    /// narrative (a phase reached).
    Connect { say: Option<String> },
    /// Sleep `secs`, showing `status` (one line, replaced by the next),
    /// then call [`Wait::woke`].
    Sleep { secs: u64, status: String },
    /// The wait is over.
    Done(Verdict),
}

/// How the wait ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Reached with the pinned host key: what the box handed over.
    Reached(Fetched),
    /// The timeout passed in `phase`: what was last seen, and what to check.
    TimedOut { phase: Phase, message: String },
    /// The box's host key is not the pinned one: never retried.
    HostKey(String),
    /// The source's end of the tunnel is missing or not this box's.
    SourceTunnel(String),
    /// Nothing could be tried (ssh could not be started).
    Local(String),
}

impl Verdict {
    /// The run's outcome (docs/exit-codes.md): 4 when the box was not
    /// reached or is not the pinned one, 1 when this machine is the
    /// problem.
    pub fn severity(&self) -> Severity {
        match self {
            Verdict::Reached(_) => Severity::Ok,
            Verdict::TimedOut { .. } | Verdict::HostKey(_) => Severity::Target,
            Verdict::SourceTunnel(_) | Verdict::Local(_) => Severity::Error,
        }
    }

    /// Why it failed, for people (`None` when reached).
    pub fn message(&self) -> Option<&str> {
        match self {
            Verdict::Reached(_) => None,
            Verdict::TimedOut { message, .. }
            | Verdict::HostKey(message)
            | Verdict::SourceTunnel(message)
            | Verdict::Local(message) => Some(message),
        }
    }
}

/// A wait for one box (see the module docs).
#[derive(Debug, Clone)]
pub struct Wait {
    target: String,
    /// The source's interface for the box (`zo-NAME`), when it has one.
    interface: Option<String>,
    started: i64,
    timeout: u64,
    poll: u64,
    phase: Phase,
    /// When the source's interface was first seen missing, and since when
    /// it has been (reset when it is back).
    down_since: Option<i64>,
    /// What the last look or attempt found, for the status line and the
    /// timeout's message.
    last: Option<String>,
    /// The age of the handshake that ended the tunnel phase (seconds).
    pub handshake_age: Option<i64>,
    /// The latest handshake seen while waiting for a fresh one.
    latest_handshake: Option<i64>,
    /// Session attempts made.
    pub attempts: u32,
    /// Phases reached, in order.
    pub phases: Vec<Phase>,
}

/// "27m", "45s": a duration for the status line.
fn left(secs: u64) -> String {
    crate::human::secs(i64::try_from(secs).unwrap_or(i64::MAX))
}

impl Wait {
    /// A wait for box `target` (its source interface `interface`, if it
    /// has one) that starts at `now` and gives up `timeout` seconds later,
    /// looking again every `poll` seconds (at least 1).
    pub fn new(target: &str, interface: Option<&str>, now: i64, timeout: u64, poll: u64) -> Wait {
        Wait {
            target: target.to_owned(),
            interface: interface.map(str::to_owned),
            started: now,
            timeout,
            poll: poll.max(1),
            phase: Phase::Tunnel,
            down_since: None,
            last: None,
            handshake_age: None,
            latest_handshake: None,
            attempts: 0,
            phases: Vec::new(),
        }
    }

    /// The phase the wait is in ([`Phase::Tunnel`] or [`Phase::Session`]).
    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// Seconds waited at `now`.
    pub fn waited(&self, now: i64) -> u64 {
        u64::try_from(now.saturating_sub(self.started)).unwrap_or(0)
    }

    /// Seconds left at `now` (0: timed out).
    fn remaining(&self, now: i64) -> u64 {
        self.timeout.saturating_sub(self.waited(now))
    }

    /// The first action.
    pub fn start(&mut self) -> Action {
        Action::ObserveTunnel
    }

    /// Sleep, or give up when the time is over.
    fn again(&self, now: i64, status: &str) -> Action {
        match self.remaining(now) {
            0 => Action::Done(self.timed_out(now)),
            r => Action::Sleep { secs: self.poll.min(r), status: format!("{status} ({} left)", left(r)) },
        }
    }

    fn timed_out(&self, now: i64) -> Verdict {
        let t = &self.target;
        let within = left(self.timeout);
        let message = match self.phase {
            Phase::Tunnel => {
                let seen = match (self.latest_handshake, &self.last) {
                    (Some(at), _) => format!("its last handshake was {} ago", left(self.age(at, now).unsigned_abs())),
                    (None, Some(last)) => last.clone(),
                    (None, None) => "no handshake yet".to_owned(),
                };
                format!(
                    "box {t} did not come up within {within}: no fresh WireGuard handshake on {} ({seen}). Check that the box is powered and has a network cable in, that this machine's WireGuard port is forwarded to it and its name resolves to this home's address; {UNREACHABLE_HINT}",
                    self.interface.as_deref().unwrap_or("its tunnel")
                )
            }
            _ => {
                let last = self.last.as_deref().unwrap_or("no attempt finished");
                let hint =
                    if self.phases.contains(&Phase::Tunnel) { String::new() } else { format!("; {UNREACHABLE_HINT}") };
                format!(
                    "no session with box {t} within {within} ({} attempt{}); the last: {last}{hint}",
                    self.attempts,
                    if self.attempts == 1 { "" } else { "s" }
                )
            }
        };
        Verdict::TimedOut { phase: self.phase, message }
    }

    /// `at`'s age at `now`, never negative (a handshake "in the future"
    /// is a clock step, as good as now).
    fn age(&self, at: i64, now: i64) -> i64 {
        now.saturating_sub(at).max(0)
    }

    /// What the tunnel looks like at `now`.
    pub fn tunnel(&mut self, seen: TunnelSeen, now: i64) -> Action {
        let t = self.target.clone();
        let interface = self.interface.clone().unwrap_or_else(|| "its tunnel".to_owned());
        if !matches!(seen, TunnelSeen::Down(_)) {
            self.down_since = None;
        }
        match seen {
            TunnelSeen::Peer { latest_handshake: Some(at) }
                if self.age(at, now) <= i64::try_from(keepalive::STALE_AFTER).unwrap_or(i64::MAX) =>
            {
                let age = self.age(at, now);
                self.handshake_age = Some(age);
                self.phase = Phase::Session;
                self.phases.push(Phase::Tunnel);
                Action::Connect {
                    say: Some(format!(
                        "box {t} is up: a WireGuard handshake on {interface} {} ago; connecting with its pinned host key",
                        crate::human::secs(age)
                    )),
                }
            }
            TunnelSeen::Peer { latest_handshake } => {
                self.latest_handshake = latest_handshake;
                let seen = match latest_handshake {
                    None => "no handshake yet".to_owned(),
                    Some(at) => format!("last handshake {} ago", left(self.age(at, now).unsigned_abs())),
                };
                self.last = Some(seen.clone());
                self.again(now, &format!("waiting for box {t} to dial in on {interface}: {seen}"))
            }
            TunnelSeen::Down(why) => {
                let since = *self.down_since.get_or_insert(now);
                if now.saturating_sub(since) >= i64::try_from(SOURCE_TUNNEL_GRACE_SECS).unwrap_or(i64::MAX) {
                    return Action::Done(Verdict::SourceTunnel(format!(
                        "this machine's end of the tunnel to box {t} is not up ({why}) after {}: start it (`systemctl start wg-quick@{interface}`, or `networkctl up {interface}` with networkd; `zoffsite box apply` of the box's source.bundle installs it) and run `zoffsite box wait {t}` again",
                        left(SOURCE_TUNNEL_GRACE_SECS)
                    )));
                }
                self.last = Some(why.clone());
                self.again(now, &format!("waiting for this machine's {interface} to come up: {why}"))
            }
            TunnelSeen::OtherPeers(why) => Action::Done(Verdict::SourceTunnel(format!(
                "{interface} is not the tunnel to box {t}: {why}. Apply the box's source.bundle again (`zoffsite box apply /etc/zoffsite/boxes/{t}/source.bundle`), or restart the interface"
            ))),
            TunnelSeen::Unreadable(why) => {
                self.phase = Phase::Session;
                Action::Connect { say: Some(format!("cannot watch box {t}'s tunnel ({why}); trying the box directly")) }
            }
        }
    }

    /// How a session attempt ended at `now`.
    pub fn login(&mut self, login: Login, now: i64) -> Action {
        self.attempts += 1;
        let t = self.target.clone();
        match login {
            Login::Reached(fetched) => {
                self.phases.push(Phase::Session);
                Action::Done(Verdict::Reached(fetched))
            }
            Login::HostKey(msg) => Action::Done(Verdict::HostKey(format!("box {t}: {msg}"))),
            Login::Local(msg) => Action::Done(Verdict::Local(msg)),
            Login::Unreachable(msg) | Login::NotYet(msg) => {
                let up = if self.phases.contains(&Phase::Tunnel) { "the tunnel is up, but " } else { "" };
                self.last = Some(msg.clone());
                self.again(now, &format!("box {t}: {up}no session yet (attempt {}): {msg}", self.attempts))
            }
        }
    }

    /// After a sleep, at `now`.
    pub fn woke(&mut self, now: i64) -> Action {
        if self.remaining(now) == 0 {
            return Action::Done(self.timed_out(now));
        }
        match self.phase {
            Phase::Tunnel => Action::ObserveTunnel,
            _ => Action::Connect { say: None },
        }
    }
}

/// Whether the box's audit lets the first backup go on ([`gate`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Gate {
    /// Go on; a note when the posture is not all ok (not a finding).
    Go(Option<String>),
    /// Stop: the audit has a failed check or was refused. Why, with the fix.
    Stop(String),
    /// Go on because of `--force`, despite what stops otherwise.
    Forced(String),
}

impl Gate {
    /// The run's outcome of the gate alone: 3 (doctor's "fix") when the
    /// posture stops the run, forced or not.
    pub fn severity(&self) -> Severity {
        match self {
            Gate::Go(_) => Severity::Ok,
            Gate::Stop(_) | Gate::Forced(_) => Severity::Partial,
        }
    }
}

/// Whether box `target`'s posture lets the first backup go on (see the
/// module docs), `force` being `--force`.
pub fn gate(target: &str, posture: &Posture, force: bool) -> Gate {
    let check = posture.check(target);
    let fix = check.fix().unwrap_or_default();
    let stops = match posture.state {
        PostureState::Audited => posture.status == Status::Fail,
        PostureState::Invalid => true,
        _ => false,
    };
    if stops {
        let what = if posture.state == PostureState::Invalid {
            "the box's audit was refused as inconsistent".to_owned()
        } else {
            // `not_ok` is worst first: the failed checks lead it.
            let failed = posture.counts.map_or(0, |c| c.fail).clamp(1, 5);
            let ids: Vec<String> = posture.not_ok.iter().take(failed).map(ToString::to_string).collect();
            format!("the box's audit has a failed check ({})", ids.join(", "))
        };
        return if force {
            Gate::Forced(format!("box {target}: {what}; backing up anyway (--force); {fix}"))
        } else {
            Gate::Stop(format!(
                "box {target}: {what}: nothing was enabled or sent; {fix}; the box audits itself again within the hour (or at once with `systemctl start zoffsite-box-doctor.service` there): then run `zoffsite box wait {target}` again (or add --force to back up to it anyway)"
            ))
        };
    }
    let ok = posture.state == PostureState::Audited && posture.status == Status::Ok && !posture.stale;
    let fix = if posture.state == PostureState::Missing {
        format!(
            "its doctor timer ({}) writes it 3 min after boot (then hourly); `zoffsite doctor --source` shows it then",
            units::BOX_DOCTOR_TIMER
        )
    } else {
        fix.to_owned()
    };
    Gate::Go((!ok).then(|| format!("box {target}: posture {}; {fix}", posture.line())))
}

/// What is known of the backup timer on this machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimerFacts {
    /// Running as root.
    pub root: bool,
    /// systemd is the init (`/run/systemd/system` exists).
    pub systemd: bool,
    /// `systemctl is-enabled` says `enabled` (read only as root under systemd).
    pub enabled: bool,
    /// `systemctl is-active` says `active`.
    pub active: bool,
}

/// What to do about the backup timer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TimerStep {
    /// Nothing can be done here: why, and what to run instead.
    Skip(String),
    /// Enabled and active already: nothing to run.
    Ready,
    /// Run [`enable_timer_argv`].
    Enable,
}

/// The step for the backup timer (see the module docs).
pub fn timer_step(f: &TimerFacts) -> TimerStep {
    let unit = units::BACKUP_TIMER;
    if !f.systemd {
        TimerStep::Skip(format!(
            "systemd is not running here (no /run/systemd/system): {unit} was not enabled; schedule `zoffsite backup` another way"
        ))
    } else if !f.root {
        TimerStep::Skip(format!("not root: {unit} was not checked; as root, run `systemctl enable --now {unit}`"))
    } else if f.enabled && f.active {
        TimerStep::Ready
    } else {
        TimerStep::Enable
    }
}

/// `systemctl enable --now -- zoffsite-backup.timer`: idempotent.
pub fn enable_timer_argv() -> Vec<String> {
    ["systemctl", "enable", "--now", "--", units::BACKUP_TIMER].map(str::to_owned).to_vec()
}

/// What became of the backup timer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TimerAction {
    /// `systemctl enable --now` ran.
    Enabled,
    /// It was enabled and active already.
    Already,
    /// `-n`: it would have been enabled.
    WouldEnable,
    /// Not looked at (not root, no systemd): see `detail`.
    Skipped,
    /// `systemctl` failed: see `detail`.
    Failed,
}

/// The timer's part of the report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TimerReport {
    pub unit: &'static str,
    pub action: TimerAction,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// What `box wait` did: its `--json` document (docs/json.md), but for
/// `errors` and `exit_code`, which the binary adds.
#[derive(Debug, Default, Serialize)]
pub struct WaitReport {
    pub target: String,
    pub dry_run: bool,
    pub force: bool,
    /// The phases reached, in order ([`Phase`]).
    pub phases: Vec<Phase>,
    /// The source's interface for the box (`zo-NAME`), when it has one.
    pub interface: Option<String>,
    /// The age of the handshake that showed the box up (seconds).
    pub handshake_age: Option<i64>,
    /// Session attempts made.
    pub attempts: u32,
    /// Seconds spent waiting for the box.
    pub waited: u64,
    /// The box's posture (the same object as `status`'s `box_posture`),
    /// once reached.
    pub box_posture: Option<Posture>,
    pub timer: Option<TimerReport>,
    /// The first backup's report (`zoffsite backup --json`'s document).
    pub backup: Option<BackupReport>,
}

#[cfg(test)]
mod tests;
