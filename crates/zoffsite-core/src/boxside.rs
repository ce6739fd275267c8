//! The box side's own decisions: `box prune` (retention by the box's
//! clock) and `box check` (the dead-man's switch), as pure functions.
//!
//! The box trusts only itself. Every snapshot `serve` receives is stamped
//! with the box's own clock in the user property [`RECEIVED_PROPERTY`]
//! (Unix seconds). Ages here come from that stamp, **never** from a
//! snapshot's `creation`, which a raw stream carries from the source: a
//! compromised source could date a flood of snapshots years back, or its
//! real history years ahead, to make box retention destroy real history.
//!
//! # Configuration (`/etc/zoffsite/box.toml`)
//!
//! ```toml
//! root = "offsite/home"
//! min_age = "7d"      # nothing younger than this (by receive time) is ever destroyed; default 7d
//! max_age = "48h"     # box check: newest receive per dataset must be younger; default 48h
//! heartbeat_grace = "7d"   # box check: how much longer a heartbeat excuses no new data; default 7d
//! notify = ["/usr/local/bin/alert-owner"]   # argv (absolute path); gets the message on stdin
//! [keep]
//! last = 7            # plus hourly/daily/weekly/monthly/yearly bucket counts
//! ```
//!
//! Parsed strictly: unknown keys are errors naming the key. `[keep]` is
//! required by `box prune` only (without it nothing is ever pruned);
//! `notify` is optional (without it `box check` only prints and exits 6).
//!
//! # Box prune
//!
//! [`plan_box_prune`] groups the snapshots under the root by dataset and
//! runs [`retention::plan`] on each, with the receive stamp as the time and
//! `min_age`. Per dataset:
//! - the newest snapshot by `createtxg` (the box's own transaction order,
//!   which the source cannot forge) is protected: it is the next
//!   incremental's base;
//! - a snapshot without a (readable) stamp is kept ("no receive time
//!   recorded"): it was not received by `serve`, or before stamping
//!   existed, and its age is unknown;
//! - everything else follows `[keep]`, by box time.
//!
//! Why a flood cannot push real history out: a flood of snapshots arrives
//! within minutes, so by box time it falls into one hour/day/week bucket
//! and takes one slot of each; `min_age` keeps it all for a while (which is
//! what `--snapshot-limit` caps), and after that the bucket keeps the
//! flood's newest only. Real history received on other days keeps its own
//! daily/weekly/... slots. Only `last = N` can be filled by a flood, which
//! is why bucket counts, not `last`, should carry the long history.
//!
//! # Clock sanity
//!
//! Retention by box time is only as good as the box's clock, so before
//! deciding anything [`check_clock`] refuses (nothing is destroyed) when:
//! - **the clock went back**: some stamp, or the last sane run recorded in
//!   [`LASTRUN_PROPERTY`] on the root, is later than `now` +
//!   [`CLOCK_TOLERANCE`] (10 minutes, for NTP steps). Time cannot run
//!   backwards, so `now` is wrong (or the stamp was forged on the box);
//! - **the clock jumped forward**: `now` is more than [`MAX_CLOCK_JUMP`]
//!   (366 days) past both the newest stamp and the last run. A box that
//!   prunes from a timer runs daily; a year without any run or receive is
//!   far likelier a bad RTC than reality. If it is real, a backup (fresh
//!   stamps) or, once the clock is checked, `zfs set zoffsite:lastrun=$(date
//!   +%s) ROOT` clears it.
//!
//! `box prune` and `box check` write [`LASTRUN_PROPERTY`] after a sane run
//! with the real clock (not with `--now`, not with `-n`).
//!
//! # Box check
//!
//! [`check`] returns findings; none means healthy. A dataset under the root
//! counts as backed up when it holds at least one snapshot (placeholders
//! and the root itself hold none and are ignored). Findings:
//! - a backed-up dataset whose newest receive stamp is older than
//!   `max_age` (and not excused by a heartbeat, below), or which has no
//!   stamp at all;
//! - nothing at all ever received under the root;
//! - an abandoned partial receive: a dataset with a `receive_resume_token`
//!   whose partial state is older than `max_age`. Its age is measured by
//!   the box's own `creation` of what the interrupted receive created: the
//!   hidden `DATASET/%recv` clone for an incremental, or the new dataset
//!   itself for a full receive (both are created by the box when the
//!   receive starts; only snapshots carry the stream's `creation`);
//! - the pool's health is not `ONLINE`;
//! - the clock check fails;
//! - something could not be checked at all (the caller adds
//!   [`Finding::Unchecked`] when `zfs` or `zpool` fails).
//!
//! # Heartbeats
//!
//! A backup run that finds nothing changed sends nothing, so the newest
//! arrival of an unchanged dataset ages although the source and the box
//! are fine. At the end of each run the source says so (`Heartbeat`,
//! [`crate::protocol`]): for each dataset, the GUID of the source's newest
//! snapshot, which the box holds. `serve` records its own clock in
//! [`HEARTBEAT_PROPERTY`], set locally on each such dataset whose newest
//! snapshot (by the box's `createtxg`) has exactly that GUID, and on the
//! root whatever the list (the last time the source's backup reached the
//! end of its session: shown, never decisive). A dataset's is written
//! again only once the recorded one is [`check_in_refresh`] old (an eighth
//! of `max_age`): `box check` may see one up to that much older than the
//! source's last, which only brings its alarm earlier.
//!
//! A heartbeat is the source's word (and the box user's, which can set
//! user properties), so it is never trusted to say that data arrived: the
//! arrival stays the one the box's own pool and journal show. It only
//! delays the "nothing new" alarm, and by a bound the box owner sets: a
//! dataset whose newest arrival `a` is older than `max_age` (`M`) is
//! excused while its last heartbeat `h` is within `M` of now and `a` is
//! within `M + heartbeat_grace` (`G`) of now. So it alarms at
//! [`alarm_at`] `= max(a + M, min(a + M + G, h + M))`: never later than
//! `a + M + G`, whatever heartbeats say, and at `a + M` (as without
//! heartbeats) when there is none newer than the arrival. A heartbeat
//! dated more than [`CLOCK_TOLERANCE`] ahead of now is ignored. The source
//! takes a new snapshot of a dataset that did not change once its newest
//! is [`crate::plan::REFRESH_AFTER`] old, so an honest source's unchanged
//! datasets get new data well within the default `M + G` (9 days).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::config::{parse_duration, ConfigError};
use crate::journal::Journal;
use crate::names::{Dataset, Guid, Snapshot};
use crate::parse::SnapshotRow;
use crate::retention::{self, KeepPolicy, PolicyError};

pub const DEFAULT_PATH: &str = "/etc/zoffsite/box.toml";

/// The user property holding a snapshot's receive time on the box (Unix
/// seconds, box clock), written by `serve`.
pub const RECEIVED_PROPERTY: &str = "zoffsite:received";

/// The user property, set locally on each received dataset, holding the
/// fingerprint of the wrapped key it was first received with
/// ([`crate::nvlist::KeyWrap`]), written by `serve`. Only the box owner
/// clears it, to accept a key change.
pub const KEYWRAP_PROPERTY: &str = "zoffsite:keywrap";

/// The user property `serve` sets, locally, on each received dataset a
/// source's heartbeat named with the GUID of the box's newest snapshot of
/// it, and on the root for every heartbeat (Unix seconds, box clock). See
/// the module docs: it delays the "nothing new" alarm by a bounded time,
/// and never says that anything arrived.
pub const HEARTBEAT_PROPERTY: &str = "zoffsite:heartbeat";

/// The user property on the root holding the time of the last sane
/// `box prune` or `box check` (Unix seconds, box clock).
pub const LASTRUN_PROPERTY: &str = "zoffsite:lastrun";

/// How far a stamp may lie ahead of `now` before the clock counts as gone
/// back (NTP steps, a receive finishing during the run).
pub const CLOCK_TOLERANCE: Duration = Duration::from_secs(10 * 60);

/// How far `now` may lie past the newest stamp and the last run before the
/// clock counts as jumped forward.
pub const MAX_CLOCK_JUMP: Duration = Duration::from_secs(366 * 86400);

const DEFAULT_MIN_AGE: Duration = Duration::from_secs(7 * 86400);
const DEFAULT_MAX_AGE: Duration = Duration::from_secs(48 * 3600);
/// With the default `max_age`, 9 days: above the source's refresh of an
/// unchanged dataset ([`crate::plan::REFRESH_AFTER`], 6 days) plus a day
/// between runs, with two days to spare.
pub const DEFAULT_HEARTBEAT_GRACE: Duration = Duration::from_secs(7 * 86400);
/// The most `heartbeat_grace` may be: however the box is configured, a
/// source that only sends heartbeats is reported within `max_age` + 30
/// days of its last new data.
pub const MAX_HEARTBEAT_GRACE: Duration = Duration::from_secs(30 * 86400);

/// The validated box configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BoxConfig {
    pub root: Dataset,
    pub min_age: Duration,
    pub max_age: Duration,
    /// How much longer than `max_age` a dataset's heartbeats may excuse no
    /// new data (module docs); zero: heartbeats excuse nothing.
    pub heartbeat_grace: Duration,
    /// argv; `notify[0]` is an absolute path. Empty: no notification.
    pub notify: Vec<String>,
    pub keep: Option<KeepPolicy>,
    /// The txg journal ([`crate::journal`]): an absolute path.
    pub journal: PathBuf,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBoxConfig {
    root: String,
    #[serde(default)]
    min_age: Option<String>,
    #[serde(default)]
    max_age: Option<String>,
    #[serde(default)]
    heartbeat_grace: Option<String>,
    #[serde(default)]
    notify: Option<Vec<String>>,
    #[serde(default)]
    keep: Option<KeepPolicy>,
    #[serde(default)]
    journal: Option<String>,
}

fn invalid(key: &str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid { key: key.into(), message: message.into() }
}

impl BoxConfig {
    pub fn parse(text: &str) -> Result<BoxConfig, ConfigError> {
        let raw: RawBoxConfig = toml::from_str(text).map_err(|e| ConfigError::Toml(e.to_string()))?;
        let root = Dataset::new(raw.root.as_str()).map_err(|e| {
            invalid("root", format!("{:?} is not a valid dataset name: {e}; write it like \"offsite/home\"", raw.root))
        })?;
        if root.depth() < 2 {
            return Err(invalid(
                "root",
                format!("{root} is a whole pool; use a dataset below it, e.g. \"{root}/home\", as `serve --root` does"),
            ));
        }
        let min_age =
            raw.min_age.as_deref().map(|s| parse_duration("min_age", s)).transpose()?.unwrap_or(DEFAULT_MIN_AGE);
        let max_age =
            raw.max_age.as_deref().map(|s| parse_duration("max_age", s)).transpose()?.unwrap_or(DEFAULT_MAX_AGE);
        if max_age.is_zero() {
            return Err(invalid("max_age", "must be more than 0s, e.g. \"48h\" (one missed daily backup plus slack)"));
        }
        let heartbeat_grace = raw
            .heartbeat_grace
            .as_deref()
            .map(|s| parse_duration("heartbeat_grace", s))
            .transpose()?
            .unwrap_or(DEFAULT_HEARTBEAT_GRACE);
        if heartbeat_grace > MAX_HEARTBEAT_GRACE {
            return Err(invalid(
                "heartbeat_grace",
                format!(
                    "may be at most {}d: it is how long a source that only checks in, sending nothing new, goes unreported; \"7d\" covers the source's weekly snapshot of an unchanged dataset, \"0s\" turns heartbeats off",
                    MAX_HEARTBEAT_GRACE.as_secs() / 86400
                ),
            ));
        }
        // Short of the source's weekly snapshot of an unchanged dataset
        // (plus a day between runs), every unchanged dataset would alarm
        // for part of each week: refused, but "0s" (no heartbeats) is the
        // owner's explicit choice.
        let needed = crate::plan::REFRESH_AFTER + Duration::from_secs(86_400);
        if !heartbeat_grace.is_zero() && max_age + heartbeat_grace < needed {
            return Err(invalid(
                "heartbeat_grace",
                format!(
                    "{} with max_age {} leaves an unchanged dataset stale before the source snapshots it again (every {}d, runs a day apart): give at least {}, or \"0s\" to turn heartbeats off",
                    crate::human::duration(heartbeat_grace),
                    crate::human::duration(max_age),
                    crate::plan::REFRESH_AFTER.as_secs() / 86_400,
                    crate::human::duration(needed.saturating_sub(max_age)),
                ),
            ));
        }
        if let Some(n) = &raw.notify {
            let Some(program) = n.first() else {
                return Err(invalid("notify", "is empty: give a program and its arguments, e.g. [\"/usr/local/bin/alert-owner\"], or remove the key"));
            };
            if !program.starts_with('/') {
                return Err(invalid(
                    "notify",
                    format!("{program:?} must be an absolute path (box check runs from a timer with a minimal PATH)"),
                ));
            }
            if n.iter().any(|a| a.contains('\0')) {
                return Err(invalid("notify", "arguments must not contain NUL bytes"));
            }
        }
        if let Some(k) = &raw.keep {
            k.validate().map_err(|e| invalid("keep", e.to_string()))?;
        }
        let journal = PathBuf::from(raw.journal.as_deref().unwrap_or(crate::journal::DEFAULT_PATH));
        if !journal.is_absolute() || journal.file_name().is_none() {
            return Err(invalid(
                "journal",
                format!("{:?} must be an absolute path to a file, e.g. {:?}", journal, crate::journal::DEFAULT_PATH),
            ));
        }
        Ok(BoxConfig {
            root,
            min_age,
            max_age,
            heartbeat_grace,
            notify: raw.notify.unwrap_or_default(),
            keep: raw.keep,
            journal,
        })
    }
}

impl BoxConfig {
    /// How old a recorded heartbeat may be before `serve --root ROOT`
    /// writes it again ([`check_in_refresh`] of `max_age`): only where
    /// this box's check judges what is under ROOT (its root and ROOT
    /// overlap); elsewhere nothing is judged by these heartbeats' age, and
    /// zero (every heartbeat writes) keeps them exact.
    pub fn heartbeat_refresh(&self, serve_root: &Dataset) -> Duration {
        if serve_root.is_within(&self.root) || self.root.is_within(serve_root) {
            check_in_refresh(self.max_age)
        } else {
            Duration::ZERO
        }
    }
}

/// A snapshot's receive stamp as read from [`RECEIVED_PROPERTY`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Received {
    /// Not set (`-`): not received by `serve`, or before stamping existed.
    Missing,
    /// Set, but not Unix seconds: kept, never guessed.
    Unreadable,
    At(i64),
}

impl Received {
    pub fn at(self) -> Option<i64> {
        match self {
            Received::At(t) => Some(t),
            _ => None,
        }
    }
}

/// A snapshot on the box, as [`box_snapshots`] joins it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BoxSnapshot {
    pub snapshot: Snapshot,
    pub guid: Guid,
    /// The box's transaction group: the box's own order of receipt.
    pub createtxg: u64,
    /// From the stream: the source's clock. Shown, never used for age.
    pub creation: i64,
    pub received: Received,
}

/// A receive stamp's text: plain Unix seconds, or [`Received::Unreadable`]
/// (one odd property must not stop retention of everything else, and the
/// snapshot it is on is then kept, or aged by the journal).
pub fn parse_stamp(v: &str) -> Received {
    if !v.is_empty() && v.len() <= 18 && v.bytes().all(|b| b.is_ascii_digit()) {
        v.parse().map_or(Received::Unreadable, Received::At)
    } else {
        Received::Unreadable
    }
}

/// Joins the box's snapshot listing ([`crate::parse::SNAPSHOT_COLUMNS`]) with the
/// receive stamps set *locally* on them (`zfs get -s local`, by full
/// snapshot name). A user property set on a dataset is inherited by its
/// snapshots and `zfs list -o` would show it as theirs: only a stamp of a
/// snapshot's own counts.
pub fn box_snapshots(rows: Vec<SnapshotRow>, stamps: &BTreeMap<String, String>) -> Vec<BoxSnapshot> {
    rows.into_iter()
        .map(|r| {
            let received = stamps.get(&r.snapshot.to_string()).map_or(Received::Missing, |v| parse_stamp(v));
            BoxSnapshot { snapshot: r.snapshot, guid: r.guid, createtxg: r.createtxg, creation: r.creation, received }
        })
        .collect()
}

/// The snapshots of one dataset that a receive created, from its listing
/// before (`before`) and after (`after`) and the substreams the stream
/// carried (`streamed`): those in `after` whose GUID the stream carried,
/// that `before` did not hold, and whose `createtxg` is above every one in
/// `before`. `createtxg` is assigned by the box's own pool, so no sender
/// can make an old snapshot pass for one this receive made; only these are
/// stamped with the receive time, so nothing a source sends can make old
/// history look newly received.
pub fn created_by_receive<'a>(
    before: &[SnapshotRow],
    after: &'a [SnapshotRow],
    streamed: &[(Snapshot, Guid)],
) -> Vec<&'a SnapshotRow> {
    let floor = before.iter().map(|s| s.createtxg).max().unwrap_or(0);
    let held: BTreeSet<Guid> = before.iter().map(|s| s.guid).collect();
    let sent: BTreeSet<Guid> = streamed.iter().map(|(_, g)| *g).collect();
    after.iter().filter(|s| s.createtxg > floor && !held.contains(&s.guid) && sent.contains(&s.guid)).collect()
}

/// Why the box clock is not trusted for this run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ClockError {
    #[error("the box clock went back: it says {}, but {what} is dated {} ({} later); ages by box time cannot be trusted, so nothing is destroyed. Set the clock right (NTP) and run again", fmt_ts(*now), fmt_ts(*at), crate::human::secs(at - now))]
    WentBack { now: i64, what: String, at: i64 },
    #[error("the box clock jumped forward: it says {}, more than {} days after the newest receive ({}) and the last run ({}); nothing is destroyed. If the clock is right (the box was off that long), run a backup first or record it with `zfs set {LASTRUN_PROPERTY}=$(date +%s) {root}`", fmt_ts(*now), MAX_CLOCK_JUMP.as_secs() / 86400, fmt_opt(*newest), fmt_opt(*lastrun))]
    JumpedForward { now: i64, newest: Option<i64>, lastrun: Option<i64>, root: String },
}

fn fmt_ts(t: i64) -> String {
    Timestamp::from_second(t).map_or_else(|_| format!("{t} (Unix seconds)"), |t| t.to_string())
}

fn fmt_opt(t: Option<i64>) -> String {
    t.map_or_else(|| "never".into(), fmt_ts)
}

/// The clock rules of the module docs. `lastrun` is [`LASTRUN_PROPERTY`].
pub fn check_clock(
    root: &Dataset,
    snaps: &[BoxSnapshot],
    lastrun: Option<i64>,
    now: Timestamp,
) -> Result<(), ClockError> {
    let now_s = now.as_second();
    let tol = secs(CLOCK_TOLERANCE);
    let newest = snaps.iter().filter_map(|s| s.received.at().map(|t| (t, s))).max_by_key(|&(t, s)| (t, s.createtxg));
    if let Some((t, s)) = newest {
        if t > now_s.saturating_add(tol) {
            return Err(ClockError::WentBack { now: now_s, what: format!("the receive of {}", s.snapshot), at: t });
        }
    }
    if let Some(l) = lastrun {
        if l > now_s.saturating_add(tol) {
            return Err(ClockError::WentBack {
                now: now_s,
                what: format!("the last run ({LASTRUN_PROPERTY} on {root})"),
                at: l,
            });
        }
    }
    let newest = newest.map(|(t, _)| t);
    if let Some(reference) = newest.max(lastrun) {
        if now_s > reference.saturating_add(secs(MAX_CLOCK_JUMP)) {
            return Err(ClockError::JumpedForward { now: now_s, newest, lastrun, root: root.to_string() });
        }
    }
    Ok(())
}

#[derive(Debug, thiserror::Error)]
pub enum BoxError {
    #[error(transparent)]
    Clock(#[from] ClockError),
    #[error("keep: {0}")]
    Policy(#[from] PolicyError),
}

/// One snapshot's fate in a box prune.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BoxDecision {
    /// Serialized as its full name, `dataset@name`.
    pub snapshot: Snapshot,
    /// The receive stamp, Unix seconds, box clock; `null` when unset.
    pub received: Option<i64>,
    /// The receive time retention aged it by: the stamp clamped into what
    /// the txg journal knows ([`Journal::received`]); `null` when unknown
    /// (then it is kept).
    pub aged_from: Option<i64>,
    /// The stream's creation (source clock), for reference only.
    pub creation: i64,
    pub destroy: bool,
    /// `keep (daily 2026-11-25, protected: ...)` or `destroy`.
    pub verdict: String,
}

/// Decides keep/destroy for every snapshot in `snaps` (the caller lists
/// only what is under the root); see the module docs. Output: by dataset,
/// then by the box's `createtxg`.
pub fn plan_box_prune(
    root: &Dataset,
    policy: &KeepPolicy,
    min_age: Duration,
    snaps: &[BoxSnapshot],
    journal: &Journal,
    lastrun: Option<i64>,
    now: Timestamp,
) -> Result<Vec<BoxDecision>, BoxError> {
    policy.validate()?;
    check_clock(root, snaps, lastrun, now)?;
    let mut by_ds: BTreeMap<&Dataset, Vec<&BoxSnapshot>> = BTreeMap::new();
    for s in snaps {
        by_ds.entry(&s.snapshot.dataset).or_default().push(s);
    }
    let mut out = Vec::with_capacity(snaps.len());
    for (_, mut list) in by_ds {
        list.sort_by_key(|s| s.createtxg);
        let newest = list.last().map(|s| &s.snapshot);
        let aged: BTreeMap<&Snapshot, i64> =
            list.iter().filter_map(|s| Some((&s.snapshot, journal.received(s.createtxg, s.received.at())?))).collect();
        let mut items = Vec::new();
        for s in &list {
            // A time that does not fit a Timestamp is treated as unknown.
            if let Some(time) = aged.get(&s.snapshot).and_then(|t| Timestamp::from_second(*t).ok()) {
                items.push(retention::Item { key: &s.snapshot, time });
            }
        }
        let protected: Vec<(&Snapshot, String)> =
            newest.map(|n| (n, "newest snapshot, the next incremental's base".to_owned())).into_iter().collect();
        let mut verdicts: BTreeMap<&Snapshot, retention::Decision<&Snapshot>> = BTreeMap::new();
        for d in retention::plan(policy, &items, &protected, now, Some(min_age))? {
            verdicts.insert(d.key, d);
        }
        for s in list {
            let (destroy, verdict) = match verdicts.get(&s.snapshot) {
                Some(d) => (!d.is_kept(), d.verdict.to_string()),
                None => {
                    let why = match s.received {
                        Received::Unreadable => "receive time unreadable",
                        _ => "no receive time recorded",
                    };
                    let newest = if Some(&s.snapshot) == newest { ", protected: newest snapshot" } else { "" };
                    (false, format!("keep ({why}{newest})"))
                }
            };
            out.push(BoxDecision {
                snapshot: s.snapshot.clone(),
                received: s.received.at(),
                aged_from: aged.get(&s.snapshot).copied(),
                creation: s.creation,
                destroy,
                verdict,
            });
        }
    }
    Ok(out)
}

/// A dataset under the root with partial-receive state, and when the box
/// created that state (Unix seconds, box clock; `None` if unknown).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Partial {
    pub dataset: Dataset,
    pub since: Option<i64>,
}

/// One problem `box check` found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Finding {
    /// A backed-up dataset's newest receive is older than `max_age`, and
    /// no heartbeat excuses it (`received` is `None` when none of its
    /// snapshots is stamped). `heartbeat` is the dataset's last one, if
    /// any, and `heartbeat_age` its age.
    Stale {
        dataset: Dataset,
        newest: String,
        received: Option<i64>,
        age: Option<i64>,
        max_age: u64,
        heartbeat: Option<i64>,
        heartbeat_age: Option<i64>,
        heartbeat_grace: u64,
    },
    /// Nothing was ever received under the root.
    Empty { root: Dataset },
    /// Partial-receive state older than `max_age` (or of unknown age).
    AbandonedPartial { dataset: Dataset, since: Option<i64>, age: Option<i64>, max_age: u64 },
    /// The pool's health is not ONLINE.
    Pool { pool: String, health: String },
    /// The clock check failed.
    Clock { error: ClockError },
    /// Something could not be checked (the caller's `zfs`/`zpool` failed):
    /// not knowing is itself worth a notification.
    Unchecked { what: String, error: String },
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let max = |m: &u64| crate::human::secs(i64::try_from(*m).unwrap_or(i64::MAX));
        match self {
            Finding::Stale {
                dataset,
                newest,
                received: Some(r),
                age,
                max_age,
                heartbeat_age: Some(h),
                heartbeat_grace,
                ..
            } if i64::try_from(*max_age).is_ok_and(|m| *h <= m) => write!(
                f,
                "{dataset}: nothing received for {} (newest {newest} received {}), although the source checks in (last {} ago): heartbeats excuse no new data for at most max_age + heartbeat_grace ({}), and the source snapshots even an unchanged dataset every {} days, so its snapshots of it are not arriving: are its sends of it failing, or is it only checking in?",
                crate::human::secs(age.unwrap_or(0)),
                fmt_ts(*r),
                crate::human::secs(*h),
                max(&max_age.saturating_add(*heartbeat_grace)),
                crate::plan::REFRESH_AFTER.as_secs() / 86400
            ),
            Finding::Stale { dataset, newest, received: Some(r), age, max_age, heartbeat_age, .. } => {
                write!(
                    f,
                    "{dataset}: nothing received for {} (newest {newest} received {}; max_age {}): is the source down, its backups failing, or the network?",
                    crate::human::secs(age.unwrap_or(0)),
                    fmt_ts(*r),
                    max(max_age)
                )?;
                match heartbeat_age {
                    Some(h) => write!(f, " (the source last checked in for it {} ago)", crate::human::secs(*h)),
                    None => Ok(()),
                }
            }
            Finding::Stale { dataset, newest, received: None, .. } => {
                write!(f, "{dataset}: no snapshot has a receive time recorded (newest {newest}), so nothing is known to have arrived")
            }
            Finding::Empty { root } => {
                write!(f, "{root}: nothing has ever been received; has the source run its first backup?")
            }
            Finding::AbandonedPartial { dataset, since: Some(s), age, max_age } => write!(
                f,
                "{dataset}: a partial receive started {} ({} ago, max_age {}) was never finished; the next backup resumes it, or clear it with `zfs receive -A {dataset}`",
                fmt_ts(*s),
                crate::human::secs(age.unwrap_or(0)),
                max(max_age)
            ),
            Finding::AbandonedPartial { dataset, since: None, .. } => write!(
                f,
                "{dataset}: holds a partial receive of unknown age; the next backup resumes it, or clear it with `zfs receive -A {dataset}`"
            ),
            Finding::Pool { pool, health } => {
                write!(f, "pool {pool} is {health}, not ONLINE: see `zpool status -v {pool}`")
            }
            Finding::Clock { error } => error.fmt(f),
            Finding::Unchecked { what, error } => write!(f, "cannot check {what}: {error}"),
        }
    }
}

/// What `box check` sees.
#[derive(Debug, Clone, Copy)]
pub struct CheckInput<'a> {
    pub root: &'a Dataset,
    pub max_age: Duration,
    /// `heartbeat_grace` from box.toml (module docs).
    pub heartbeat_grace: Duration,
    /// What `serve` recorded of the source's heartbeats.
    pub heartbeats: &'a Heartbeats,
    /// Every snapshot under the root; `None` when they could not be listed
    /// (the caller reports that; the dataset and clock checks are skipped).
    pub snaps: Option<&'a [BoxSnapshot]>,
    /// Every dataset under the root with partial-receive state.
    pub partials: &'a [Partial],
    /// `zpool list -H -o health` of the root's pool; `None` when unknown
    /// (the caller reports that).
    pub pool_health: Option<&'a str>,
    pub lastrun: Option<i64>,
    /// The txg journal of the root's pool (empty when there is none yet).
    pub journal: &'a Journal,
    pub now: Timestamp,
}

/// The findings of the module docs, in a stable order: clock, pool,
/// nothing ever received, stale datasets, abandoned partial receives.
pub fn check(input: &CheckInput<'_>) -> Vec<Finding> {
    let now = input.now.as_second();
    let max_age = input.max_age.as_secs();
    let too_old = |age: i64| age > i64::try_from(max_age).unwrap_or(i64::MAX);
    let mut out = Vec::new();
    if let Some(snaps) = input.snaps {
        if let Err(error) = check_clock(input.root, snaps, input.lastrun, input.now) {
            out.push(Finding::Clock { error });
        }
    }
    if let Some(health) = input.pool_health.filter(|h| *h != "ONLINE") {
        out.push(Finding::Pool { pool: input.root.pool().to_owned(), health: health.to_owned() });
    }
    let states = dataset_states(input);
    if input.snaps.is_some() && states.is_empty() && input.partials.is_empty() {
        out.push(Finding::Empty { root: input.root.clone() });
    }
    let grace = input.heartbeat_grace.as_secs();
    for d in states.into_iter().filter(|d| d.stale) {
        out.push(Finding::Stale {
            age: d.received.map(|t| now - t),
            // A heartbeat dated ahead is not taken, nor named.
            heartbeat_age: usable_heartbeat(d.heartbeat, now).map(|h| now - h),
            dataset: d.dataset,
            newest: d.newest,
            received: d.received,
            max_age,
            heartbeat: d.heartbeat,
            heartbeat_grace: grace,
        });
    }
    for p in input.partials {
        let age = p.since.map(|s| now - s);
        if age.is_none_or(too_old) {
            out.push(Finding::AbandonedPartial { dataset: p.dataset.clone(), since: p.since, age, max_age });
        }
    }
    out
}

/// The source's heartbeats as `serve` recorded them ([`HEARTBEAT_PROPERTY`],
/// each set locally), read by [`parse_heartbeats`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Heartbeats {
    /// The root's own: the last heartbeat of any kind (the last time the
    /// source's backup reached the end of its session). Shown only.
    pub root: Option<i64>,
    /// Each dataset's own: the last heartbeat that named the GUID of the
    /// box's newest snapshot of it.
    pub datasets: BTreeMap<Dataset, i64>,
    /// What was not taken, as `name=value` (sanitized): a value that is
    /// not Unix seconds, a name that is not a dataset under the root.
    pub ignored: Vec<String>,
}

/// Reads the `(name, value)` rows of `zfs get -r -s local` of
/// [`HEARTBEAT_PROPERTY`] under `root` strictly: plain Unix seconds only
/// ([`parse_stamp`]), names only the root or a dataset below it. Anything
/// else is ignored (listed in [`Heartbeats::ignored`]), never guessed:
/// without a heartbeat a dataset alarms as it would have before
/// heartbeats existed. The box user can write these values, so they are
/// hostile input; what they can change is bounded by [`alarm_at`].
pub fn parse_heartbeats(root: &Dataset, rows: &[(String, String)]) -> Heartbeats {
    let mut out = Heartbeats::default();
    for (name, value) in rows {
        let ds = Dataset::new(name).ok().filter(|d| d.is_within(root));
        match (ds, parse_stamp(value)) {
            (Some(d), Received::At(t)) if d == *root => out.root = Some(t),
            (Some(d), Received::At(t)) => {
                out.datasets.insert(d, t);
            }
            _ => out.ignored.push(crate::protocol::sanitize(&format!("{name}={value}"), 200)),
        }
    }
    out
}

/// How often a check-in time that only ever makes an alarm *later* (a
/// box's heartbeat, the source's confirmation that a target holds its
/// newest data) is rewritten: an eighth of the `max_age` that alarm is
/// judged by. Each write is a `zfs set`, a pool sync per name, and a run
/// that found nothing changed would otherwise write one per dataset every
/// run (measured: 5.5-6.5 s for 101 snapshots in the test VM, the pool's
/// disk never idle under hourly runs). A value left up to this old only
/// makes the alarm come up to this much earlier, never later.
pub fn check_in_refresh(max_age: Duration) -> Duration {
    max_age / 8
}

/// Whether a check-in time recorded as `stored` must be written again at
/// `now` ([`check_in_refresh`]): when there is none, when it is `refresh`
/// old or older, or when it lies ahead of `now` at all (a clock that went
/// back, or a forged value: kept, even one [`usable_heartbeat`] takes as
/// `now`, it would count later than the truth). `refresh` zero: always.
pub fn check_in_due(stored: Option<i64>, now: i64, refresh: Duration) -> bool {
    match stored {
        Some(t) if !refresh.is_zero() => t > now || now.saturating_sub(t) >= secs(refresh),
        _ => true,
    }
}

/// Of the datasets a heartbeat may be recorded on (`current`: their
/// newest snapshot is the one the source named), those whose own
/// recorded heartbeat is due again at `now` ([`check_in_due`]).
pub fn heartbeats_due<'a>(
    current: impl IntoIterator<Item = &'a Dataset>,
    stored: &Heartbeats,
    now: i64,
    refresh: Duration,
) -> Vec<&'a Dataset> {
    current.into_iter().filter(|d| check_in_due(stored.datasets.get(*d).copied(), now, refresh)).collect()
}

/// When `box check` reports a dataset stale that last received new data
/// at `arrival` and last had a heartbeat at `heartbeat` (box clock, Unix
/// seconds): stale exactly when `now > alarm_at(..)`. Without a heartbeat
/// newer than the arrival, `arrival + max_age`, as before heartbeats
/// existed; with one, `heartbeat + max_age`, but never later than
/// `arrival + max_age + grace`, whatever the heartbeat says.
pub fn alarm_at(arrival: i64, heartbeat: Option<i64>, max_age: Duration, grace: Duration) -> i64 {
    let plain = arrival.saturating_add(secs(max_age));
    match heartbeat {
        Some(h) => plain.max(plain.saturating_add(secs(grace)).min(h.saturating_add(secs(max_age)))),
        None => plain,
    }
}

/// A heartbeat's time as [`alarm_at`] may use it at `now`: one dated more
/// than [`CLOCK_TOLERANCE`] ahead is not taken (a clock gone back, or a
/// forged value), one a little ahead counts as `now`.
pub fn usable_heartbeat(heartbeat: Option<i64>, now: i64) -> Option<i64> {
    heartbeat.filter(|h| *h <= now.saturating_add(secs(CLOCK_TOLERANCE))).map(|h| h.min(now))
}

/// One backed-up dataset as `box check` sees it (`--json`'s `datasets`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DatasetState {
    pub dataset: Dataset,
    /// Its newest snapshot by the box's `createtxg`: what arrived last.
    pub newest: String,
    /// When that arrived (box clock), as retention ages it (the stamp
    /// within the txg journal's window); `None`: unknown.
    pub received: Option<i64>,
    /// Its last heartbeat (box clock) as recorded; `None`: none.
    pub heartbeat: Option<i64>,
    /// When it is reported stale if nothing new arrives and no further
    /// heartbeat comes; `None` when its arrival is unknown (stale now).
    pub alarm_at: Option<i64>,
    /// The latest it can be reported stale without new data, whatever
    /// heartbeats come: `received + max_age + heartbeat_grace`.
    pub alarm_at_latest: Option<i64>,
    /// Older than `max_age`, and only a heartbeat keeps it from being
    /// stale (the source checks in, and found nothing to send).
    pub excused: bool,
    pub stale: bool,
}

/// Every backed-up dataset under the root (one holding a snapshot), by
/// name: its newest arrival, heartbeat, and whether it is stale.
pub fn dataset_states(input: &CheckInput<'_>) -> Vec<DatasetState> {
    let now = input.now.as_second();
    let mut by_ds: BTreeMap<&Dataset, Vec<&BoxSnapshot>> = BTreeMap::new();
    for s in input.snaps.unwrap_or_default().iter().filter(|s| s.snapshot.dataset.is_within(input.root)) {
        by_ds.entry(&s.snapshot.dataset).or_default().push(s);
    }
    let mut out = Vec::new();
    for (ds, list) in by_ds {
        // What arrived last is the snapshot the box's own pool made last
        // (createtxg), not the one with the freshest stamp: a stamp can be
        // rewritten, and restamped old snapshots are not new data.
        let Some(newest) = list.iter().max_by_key(|s| s.createtxg) else { continue };
        let received = input.journal.received(newest.createtxg, newest.received.at());
        let heartbeat = input.heartbeats.datasets.get(ds).copied();
        let usable = usable_heartbeat(heartbeat, now);
        let alarm = received.map(|a| alarm_at(a, usable, input.max_age, input.heartbeat_grace));
        let plain = received.map(|a| alarm_at(a, None, input.max_age, input.heartbeat_grace));
        let stale = alarm.is_none_or(|t| now > t);
        out.push(DatasetState {
            dataset: ds.clone(),
            newest: newest.snapshot.name.to_string(),
            received,
            heartbeat,
            alarm_at: alarm,
            alarm_at_latest: received.map(|a| alarm_at(a, Some(i64::MAX), input.max_age, input.heartbeat_grace)),
            excused: !stale && plain.is_some_and(|t| now > t),
            stale,
        });
    }
    out
}

/// The box's answer to `ListTree{asked}` from its inventory (the rows of
/// one `zfs list -r` of the root): `asked` and every dataset below it, named
/// as on the source, each with its snapshots (oldest first by `createtxg`)
/// and any partial-receive token. Empty when the box does not hold `asked`.
pub fn tree_listing(
    root: &Dataset,
    asked: &Dataset,
    datasets: Vec<crate::parse::ReceiverRow>,
    snapshots: Vec<crate::parse::SnapshotRow>,
) -> Vec<crate::protocol::RemoteDataset> {
    use crate::protocol::{RemoteDataset, RemoteSnapshot};
    let Ok(top) = root.join(asked) else { return Vec::new() };
    let mut out: std::collections::BTreeMap<Dataset, RemoteDataset> = datasets
        .into_iter()
        .filter(|r| r.dataset.is_within(&top))
        .filter_map(|r| {
            let name = r.dataset.strip_root(root)?;
            Some((r.dataset, RemoteDataset { name, exists: true, snapshots: Vec::new(), resume_token: r.resume_token }))
        })
        .collect();
    let mut snapshots = snapshots;
    snapshots.sort_by_key(|s| s.createtxg);
    for s in snapshots {
        if let Some(d) = out.get_mut(&s.snapshot.dataset) {
            d.snapshots.push(RemoteSnapshot { name: s.snapshot.name, guid: s.guid, createtxg: s.createtxg });
        }
    }
    out.into_values().collect()
}

/// A duration in whole seconds as the signed seconds clocks are compared
/// in (saturating: no configured duration comes near 2^63 s).
pub(crate) fn secs(d: std::time::Duration) -> i64 {
    i64::try_from(d.as_secs()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse;
    use std::path::Path;

    const EXAMPLE: &str = r#"
root = "offsite/home"
min_age = "7d"      # nothing younger than this is ever destroyed
max_age = "48h"     # for `box check`
notify = ["/usr/local/bin/alert-owner"]   # argv; gets the message on stdin
[keep]
last = 7            # plus hourly/daily/weekly/monthly/yearly bucket counts
"#;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn secs(s: &str) -> i64 {
        ts(s).as_second()
    }

    fn root() -> Dataset {
        Dataset::new("offsite/home").unwrap()
    }

    fn ds(name: &str) -> Dataset {
        Dataset::new(name).unwrap()
    }

    /// A snapshot of `offsite/home/tank/DS` received at `rcv` (None: no
    /// stamp), txg = order given.
    #[test]
    fn a_receive_created_only_new_snapshots_above_what_the_box_held() {
        let row = |name: &str, guid: u64, txg: u64| SnapshotRow {
            snapshot: Snapshot::new(&format!("offsite/home/tank/a@{name}")).unwrap(),
            guid: Guid::new(guid).unwrap(),
            createtxg: txg,
            creation: 0,
        };
        let before = [row("a", 1, 10), row("b", 2, 20)];
        let after = [row("a", 1, 10), row("b", 2, 20), row("old", 3, 15), row("c", 4, 30), row("x", 5, 31)];
        let sent = |g: &[u64]| -> Vec<(Snapshot, Guid)> {
            g.iter().map(|&g| (Snapshot::new("t/a@n").unwrap(), Guid::new(g).unwrap())).collect()
        };
        // The stream named b (held), old (below the box's newest txg: not
        // made by this receive), c; x is new but not in the stream.
        let got: Vec<&str> =
            created_by_receive(&before, &after, &sent(&[2, 3, 4])).iter().map(|s| s.snapshot.name.as_str()).collect();
        assert_eq!(got, ["c"]);
        // A first receive: everything the stream carried.
        let got = created_by_receive(&[], &after, &sent(&[1, 4]));
        assert_eq!(got.len(), 2);
    }

    fn snap(ds: &str, name: &str, txg: u64, rcv: Option<&str>) -> BoxSnapshot {
        BoxSnapshot {
            snapshot: Snapshot::new(&format!("offsite/home/tank/{ds}@{name}")).unwrap(),
            guid: Guid::new(1000 + txg).unwrap(),
            createtxg: txg,
            creation: 0,
            received: rcv.map_or(Received::Missing, |r| Received::At(secs(r))),
        }
    }

    fn verdicts(ds: &[BoxDecision]) -> Vec<(String, bool, String)> {
        ds.iter().map(|d| (d.snapshot.name.to_string(), d.destroy, d.verdict.clone())).collect()
    }

    /// A journal with a run at the end of each of these days (txg = day).
    fn daily_journal(days: std::ops::RangeInclusive<i64>) -> Journal {
        let mut j = nojournal();
        for d in days {
            let t = secs("2026-01-01T00:00:00Z") + d * 86400 + 86399;
            assert!(j.record(crate::journal::Entry { txg: u64::try_from(d).unwrap() * 10 + 9, start: t - 60, end: t }));
        }
        j
    }

    #[test]
    fn restamped_history_is_aged_by_the_journal_not_the_stamps() {
        // One snapshot a day for 60 days (txg 10*day), then all of them
        // restamped as received on day 61 (a replay, a bug, root on the
        // box). Without the journal, daily=14 after min_age would keep one
        // slot for all of them; with it, each keeps its own day.
        let p = KeepPolicy { daily: 14, ..Default::default() };
        let now = ts("2026-03-15T00:00:00Z"); // day 73
        let restamp = secs("2026-03-03T00:00:00Z");
        let s: Vec<BoxSnapshot> = (0..60)
            .map(|d| BoxSnapshot { received: Received::At(restamp), ..snap("a", &format!("d{d}"), d * 10 + 1, None) })
            .collect();
        let kept = |j: &Journal| {
            plan_box_prune(&root(), &p, Duration::from_secs(7 * 86400), &s, j, None, now)
                .unwrap()
                .iter()
                .filter(|d| !d.destroy)
                .count()
        };
        // By the stamps alone: one daily slot, plus the newest (protected).
        assert_eq!(kept(&nojournal()), 2, "what the stamps alone would do");
        let j = daily_journal(0..=72);
        assert_eq!(kept(&j), 14, "daily=14 over 60 real days");
        let d = plan_box_prune(&root(), &p, Duration::ZERO, &s, &j, None, now).unwrap();
        assert_eq!(d[0].received, Some(restamp));
        assert_eq!(d[0].aged_from, Some(secs("2026-01-01T23:59:59Z")), "{:?}", d[0]);
    }

    #[test]
    fn unstamped_snapshots_age_by_the_journal_and_are_pruned_in_time() {
        // A flood whose receive never got stamped: no longer kept forever.
        let p = KeepPolicy { last: 1, ..Default::default() };
        let s: Vec<BoxSnapshot> = (0..20).map(|i| snap("a", &format!("f{i}"), 11 + i, None)).collect();
        let now = ts("2026-01-30T00:00:00Z");
        let d =
            plan_box_prune(&root(), &p, Duration::from_secs(7 * 86400), &s, &daily_journal(0..=20), None, now).unwrap();
        assert_eq!(d.iter().filter(|d| d.destroy).count(), 19, "{:?}", verdicts(&d));
        // txg 11..=19 was there by the end of day 1, 20..=29 by day 2, ...
        assert_eq!(d[0].aged_from, Some(secs("2026-01-02T23:59:59Z")));
        assert_eq!(d[19].aged_from, Some(secs("2026-01-04T23:59:59Z")));
        assert!(d.iter().all(|d| d.received.is_none()));
    }

    #[test]
    fn box_check_counts_only_new_snapshots_as_received() {
        let now = "2026-01-20T12:00:00Z";
        // Nothing new since day 10, but old snapshots restamped just now.
        let mut s: Vec<BoxSnapshot> = (0..10).map(|d| snap("a", &format!("d{d}"), d * 10 + 1, Some(now))).collect();
        // By the stamps alone (no journal) the newest by txg looks fresh;
        // the journal says it was there by the end of day 9.
        let j = daily_journal(0..=18);
        let with = |j: &'static Journal, s: &[BoxSnapshot]| {
            let mut i = input(s, &[], "ONLINE", now);
            i.journal = j;
            check(&i)
        };
        let j: &'static Journal = Box::leak(Box::new(j));
        let f = with(j, &s);
        assert!(
            matches!(&f[..], [Finding::Stale { newest, received: Some(r), .. }] if newest == "d9" && *r == secs("2026-01-10T23:59:59Z")),
            "{f:?}"
        );
        // A restamped old snapshot is not the newest; a new one is.
        s[3].received = Received::At(secs(now));
        s.push(snap("a", "new", 500, Some("2026-01-20T11:00:00Z")));
        assert_eq!(with(j, &s), []);
        // Before this change the freshest stamp counted, whichever it was on:
        // an old snapshot with a fresh stamp is not enough.
        s.pop();
        s[9].received = Received::At(secs("2026-01-01T00:00:00Z"));
        assert!(matches!(&with(j, &s)[..], [Finding::Stale { newest, .. }] if newest == "d9"));
    }

    #[test]
    fn the_documented_example_parses() {
        let c = BoxConfig::parse(EXAMPLE).unwrap();
        assert_eq!(c.root, root());
        assert_eq!(c.min_age, Duration::from_secs(7 * 86400));
        assert_eq!(c.max_age, Duration::from_secs(48 * 3600));
        assert_eq!(c.notify, ["/usr/local/bin/alert-owner"]);
        assert_eq!(c.keep.unwrap().last, 7);
        let minimal = BoxConfig::parse("root = \"offsite/home\"\n").unwrap();
        assert_eq!((minimal.min_age, minimal.max_age), (DEFAULT_MIN_AGE, DEFAULT_MAX_AGE));
        assert!(minimal.notify.is_empty() && minimal.keep.is_none());
        assert_eq!(minimal.journal, Path::new(crate::journal::DEFAULT_PATH));
        let other = BoxConfig::parse("root = \"offsite/home\"\njournal = \"/srv/j\"\n").unwrap();
        assert_eq!(other.journal, Path::new("/srv/j"));
    }

    #[test]
    fn heartbeat_grace_defaults_to_a_week_and_is_capped() {
        let minimal = BoxConfig::parse("root = \"offsite/home\"\n").unwrap();
        assert_eq!(minimal.heartbeat_grace, Duration::from_secs(7 * 86400));
        assert_eq!(DEFAULT_MAX_AGE + DEFAULT_HEARTBEAT_GRACE, Duration::from_secs(9 * 86400));
        // The defaults leave room for the source's refresh of an unchanged
        // dataset and a day between runs, with a day or more to spare.
        assert!(
            DEFAULT_MAX_AGE + DEFAULT_HEARTBEAT_GRACE > crate::plan::REFRESH_AFTER + Duration::from_secs(2 * 86400)
        );
        let parse = |g: &str| BoxConfig::parse(&format!("root = \"offsite/home\"\nheartbeat_grace = \"{g}\"\n"));
        assert_eq!(parse("0s").unwrap().heartbeat_grace, Duration::ZERO);
        assert_eq!(parse("30d").unwrap().heartbeat_grace, MAX_HEARTBEAT_GRACE);
        let e = parse("31d").unwrap_err().to_string();
        assert!(
            e.starts_with("heartbeat_grace: may be at most 30d") && e.contains("\"0s\" turns heartbeats off"),
            "{e}"
        );
        let e = parse("soon").unwrap_err().to_string();
        assert!(e.starts_with("heartbeat_grace: \"soon\" is not a duration"), "{e}");
        // Too short to cover the source's weekly refresh: refused, with
        // the least that does (max_age 48h by default).
        assert_eq!(
            parse("1d").unwrap_err().to_string(),
            "heartbeat_grace: 1d with max_age 2d leaves an unchanged dataset stale before the source snapshots it again (every 6d, runs a day apart): give at least 5d, or \"0s\" to turn heartbeats off"
        );
        assert_eq!(parse("5d").unwrap().heartbeat_grace, Duration::from_secs(5 * 86400));
    }

    #[test]
    fn heartbeats_are_read_strictly_and_anything_odd_is_ignored() {
        let rows: Vec<(String, String)> = [
            ("offsite/home", "1795000000"),
            ("offsite/home/tank/a", "1795000100"),
            ("offsite/home/tank/b", "yesterday"),
            ("offsite/home/tank/c", "-5"),
            ("offsite/home/tank/d", "1e9"),
            ("offsite/homework", "1795000000"),
            ("offsite", "1795000000"),
            ("offsite/home/tank/e\u{1b}[2J", "1795000000"),
        ]
        .iter()
        .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
        .collect();
        let h = parse_heartbeats(&root(), &rows);
        assert_eq!(h.root, Some(1_795_000_000));
        assert_eq!(h.datasets.len(), 1);
        assert_eq!(h.datasets[&Dataset::new("offsite/home/tank/a").unwrap()], 1_795_000_100);
        assert_eq!(h.ignored.len(), 6, "{:?}", h.ignored);
        assert!(h.ignored.iter().all(|i| !i.contains('\u{1b}')), "sanitized: {:?}", h.ignored);
    }

    /// One dataset received at `rcv` (box clock), with a heartbeat `hb`.
    fn with_heartbeat(rcv: &str, hb: Option<&str>, now: &str) -> (Vec<Finding>, Vec<DatasetState>) {
        let s = vec![snap("a", "s1", 1, Some(rcv))];
        let h = Heartbeats {
            root: hb.map(secs),
            datasets: hb.map(|t| (Dataset::new("offsite/home/tank/a").unwrap(), secs(t))).into_iter().collect(),
            ignored: vec![],
        };
        let h: &'static Heartbeats = Box::leak(Box::new(h));
        let mut i = input(&s, &[], "ONLINE", now);
        i.heartbeats = h;
        (check(&i), dataset_states(&i))
    }

    #[test]
    fn a_heartbeat_excuses_no_new_data_only_within_the_grace() {
        // Received on the 1st; max_age 48h, grace 7d: at most 9 days.
        let rcv = "2026-11-01T00:00:00Z";
        // Day 5, a heartbeat an hour ago: quiet, excused.
        let (f, d) = with_heartbeat(rcv, Some("2026-11-05T23:00:00Z"), "2026-11-06T00:00:00Z");
        assert_eq!(f, []);
        assert!(d[0].excused && !d[0].stale, "{d:?}");
        assert_eq!(d[0].alarm_at, Some(secs("2026-11-07T23:00:00Z")), "the heartbeat + max_age");
        assert_eq!(d[0].alarm_at_latest, Some(secs("2026-11-10T00:00:00Z")), "arrival + max_age + grace");
        // The same without a heartbeat: stale, as before heartbeats.
        let (f, d) = with_heartbeat(rcv, None, "2026-11-06T00:00:00Z");
        assert!(matches!(&f[..], [Finding::Stale { heartbeat: None, .. }]), "{f:?}");
        assert_eq!(d[0].alarm_at, Some(secs("2026-11-03T00:00:00Z")));
        // A heartbeat older than max_age does not excuse.
        let (f, _) = with_heartbeat(rcv, Some("2026-11-03T23:00:00Z"), "2026-11-06T00:00:00Z");
        let msg = f[0].to_string();
        assert!(
            msg.starts_with("offsite/home/tank/a: nothing received for 5d")
                && msg.ends_with("(the source last checked in for it 2d 1h ago)"),
            "{msg}"
        );
        // Day 9 and a second, a heartbeat a minute ago: past the bound,
        // stale, and said why.
        let (f, d) = with_heartbeat(rcv, Some("2026-11-09T23:59:00Z"), "2026-11-10T00:00:01Z");
        assert!(d[0].stale && !d[0].excused);
        let msg = f[0].to_string();
        assert!(
            msg.contains("although the source checks in (last 1m 1s ago)")
                && msg.contains("max_age + heartbeat_grace (9d)")
                && msg.contains("every 6 days"),
            "{msg}"
        );
        let j = serde_json::to_value(&f[0]).unwrap();
        assert_eq!(
            (j["kind"].as_str(), j["heartbeat"].as_i64(), j["heartbeat_grace"].as_u64()),
            (Some("stale"), Some(secs("2026-11-09T23:59:00Z")), Some(7 * 86400))
        );
        // A heartbeat dated ahead (clock gone back, or forged) is not taken.
        let (f, d) = with_heartbeat(rcv, Some("2026-12-01T00:00:00Z"), "2026-11-06T00:00:00Z");
        assert!(d[0].stale && matches!(&f[..], [Finding::Stale { heartbeat_age: None, .. }]), "{f:?}");
        assert!(!f[0].to_string().contains("checked in"), "{}", f[0]);
        // A little ahead (an NTP step) counts as now.
        let (f, _) = with_heartbeat(rcv, Some("2026-11-06T00:05:00Z"), "2026-11-06T00:00:00Z");
        assert_eq!(f, []);
    }

    #[test]
    fn a_heartbeat_never_excuses_an_unknown_arrival_or_an_abandoned_partial() {
        let s = vec![snap("a", "legacy", 1, None)];
        let h = Heartbeats {
            root: None,
            datasets: [(Dataset::new("offsite/home/tank/a").unwrap(), secs("2026-11-25T11:00:00Z"))].into(),
            ignored: vec![],
        };
        let partials = [Partial {
            dataset: Dataset::new("offsite/home/tank/a").unwrap(),
            since: Some(secs("2026-11-20T00:00:00Z")),
        }];
        let mut i = input(&s, &partials, "ONLINE", "2026-11-25T12:00:00Z");
        i.heartbeats = &h;
        let kinds: Vec<String> =
            check(&i).iter().map(|f| serde_json::to_value(f).unwrap()["kind"].to_string()).collect();
        assert_eq!(kinds, ["\"stale\"", "\"abandoned_partial\""]);
    }

    /// What a source can do to the box over time, in the model of the
    /// property below.
    #[derive(Debug, Clone)]
    enum Act {
        /// A receive lands a new snapshot, `dt` seconds on.
        Send(i64),
        /// A heartbeat naming the box's newest, `dt` seconds on.
        Heartbeat(i64),
        /// The box user (a bug in serve) writes any value at all.
        Forge(i64),
    }

    fn act() -> impl proptest::strategy::Strategy<Value = Act> {
        use proptest::prelude::*;
        prop_oneof![
            (0i64..20 * 86400).prop_map(Act::Send),
            (0i64..3 * 86400).prop_map(Act::Heartbeat),
            (-400 * 86400i64..400 * 86400).prop_map(Act::Forge),
        ]
    }

    proptest::proptest! {
        /// Check-ins at any times, recorded only when due: box check's
        /// alarm is never later than had each been recorded, and at most
        /// the refresh earlier; a source that checks in at least every
        /// `max_age - refresh` is never reported stale while it does.
        #[test]
        fn refreshing_check_ins_only_brings_the_alarm_earlier_and_by_at_most_the_refresh(
            gaps in proptest::collection::vec(0i64..30 * 3600, 1..60),
            max_age_h in 1u64..240,
            grace_h in 0u64..=720,
        ) {
            let max_age = Duration::from_secs(max_age_h * 3600);
            let grace = Duration::from_secs(grace_h * 3600);
            let refresh = check_in_refresh(max_age);
            let arrival = secs("2026-01-01T00:00:00Z");
            let (mut t, mut every, mut kept) = (arrival, None::<i64>, None::<i64>);
            for g in gaps {
                // Before this check-in, judged by what each way recorded.
                let (full, thin) = (alarm_at(arrival, every, max_age, grace), alarm_at(arrival, kept, max_age, grace));
                proptest::prop_assert!(thin <= full && full - thin <= super::secs(refresh), "{thin} vs {full}");
                if g <= super::secs(max_age) - super::secs(refresh) && every.is_some() {
                    // Checked in often enough: not stale before the next.
                    proptest::prop_assert!(
                        t + g <= thin || t + g > arrival + super::secs(max_age) + super::secs(grace),
                        "stale at {} (alarm {thin})", t + g
                    );
                }
                t += g;
                every = Some(t);
                if check_in_due(kept, t, refresh) {
                    kept = Some(t);
                }
            }
        }
    }

    #[test]
    fn serve_refreshes_heartbeats_by_the_max_age_of_the_check_that_judges_them() {
        let cfg = BoxConfig::parse("root = \"offsite/home\"\nmax_age = \"24h\"\n").unwrap();
        assert_eq!(cfg.heartbeat_refresh(&ds("offsite/home")), Duration::from_secs(3 * 3600));
        assert_eq!(cfg.heartbeat_refresh(&ds("offsite/home/friend")), Duration::from_secs(3 * 3600));
        assert_eq!(cfg.heartbeat_refresh(&ds("offsite/homes")), Duration::ZERO, "not judged by this check");
        let cfg = BoxConfig::parse("root = \"offsite/home/tank\"\n").unwrap();
        assert_eq!(cfg.heartbeat_refresh(&ds("offsite/home")), Duration::from_secs(6 * 3600), "default 48h");
    }

    #[test]
    fn a_check_in_is_written_again_only_once_an_eighth_of_max_age_old() {
        let refresh = check_in_refresh(Duration::from_secs(48 * 3600));
        assert_eq!(refresh, Duration::from_secs(6 * 3600));
        let now = secs("2026-06-01T12:00:00Z");
        assert!(check_in_due(None, now, refresh), "never recorded");
        assert!(!check_in_due(Some(now - 3600), now, refresh), "an hour old");
        assert!(!check_in_due(Some(now - 6 * 3600 + 1), now, refresh));
        assert!(check_in_due(Some(now - 6 * 3600), now, refresh), "refresh old");
        assert!(!check_in_due(Some(now), now, refresh));
        assert!(check_in_due(Some(now + 60), now, refresh), "ahead, however little: written again");
        assert!(check_in_due(Some(now - 60), now, Duration::ZERO), "no refresh: every time");
        let hb = Heartbeats {
            root: Some(now),
            datasets: [(ds("offsite/home/tank/a"), now - 60), (ds("offsite/home/tank/b"), now - 7 * 3600)].into(),
            ignored: vec![],
        };
        let current = [ds("offsite/home/tank/a"), ds("offsite/home/tank/b"), ds("offsite/home/tank/c")];
        let due: Vec<&str> = heartbeats_due(&current, &hb, now, refresh).iter().map(|d| d.as_str()).collect();
        assert_eq!(due, ["offsite/home/tank/b", "offsite/home/tank/c"]);
        assert_eq!(heartbeats_due(&current, &hb, now, Duration::ZERO).len(), 3);
    }

    proptest::proptest! {
        /// For any sequence of source actions (and any value the box user
        /// could forge), box check with heartbeats alarms no later than
        /// `max_age + heartbeat_grace` after the last new data, never
        /// reports stale what it would not have reported without them, and
        /// is exactly as before when no heartbeat came after the data.
        #[test]
        fn heartbeats_delay_the_alarm_by_at_most_the_grace(
            acts in proptest::collection::vec(act(), 1..40),
            max_age_h in 1u64..240,
            grace_h in 0u64..=720,
            wait in 0i64..40 * 86400,
        ) {
            let start = secs("2026-01-01T00:00:00Z");
            let (mut t, mut txg) = (start, 0u64);
            let mut snaps = Vec::new();
            let mut hb: Option<i64> = None;
            // The first receive, then whatever the source does.
            for a in std::iter::once(Act::Send(0)).chain(acts) {
                match a {
                    Act::Send(dt) => {
                        t += dt;
                        txg += 1;
                        snaps.push(BoxSnapshot {
                            snapshot: Snapshot::new(&format!("offsite/home/tank/a@s{txg}")).unwrap(),
                            guid: Guid::new(txg).unwrap(),
                            createtxg: txg,
                            creation: 0,
                            received: Received::At(t),
                        });
                    }
                    Act::Heartbeat(dt) => {
                        t += dt;
                        hb = Some(t);
                    }
                    Act::Forge(v) => hb = Some(t + v),
                }
            }
            let now = t + wait;
            let arrival = t.min(snaps.iter().filter_map(|s| s.received.at()).max().unwrap());
            let (m, g) = (Duration::from_secs(max_age_h * 3600), Duration::from_secs(grace_h * 3600));
            let ds = Dataset::new("offsite/home/tank/a").unwrap();
            let with = Heartbeats { root: hb, datasets: hb.map(|h| (ds, h)).into_iter().collect(), ignored: vec![] };
            let none = Heartbeats::default();
            let j = nojournal();
            let mk = |h: &'static Heartbeats| CheckInput {
                root: Box::leak(Box::new(root())),
                max_age: m,
                heartbeat_grace: g,
                heartbeats: h,
                snaps: Some(Box::leak(snaps.clone().into_boxed_slice())),
                partials: &[],
                pool_health: Some("ONLINE"),
                lastrun: None,
                journal: Box::leak(Box::new(j.clone())),
                now: Timestamp::from_second(now).unwrap(),
            };
            let stale = |i: &CheckInput<'_>| check(i).iter().any(|f| matches!(f, Finding::Stale { .. }));
            let new = mk(Box::leak(Box::new(with)));
            let old = mk(Box::leak(Box::new(none)));
            let (s_new, s_old) = (stale(&new), stale(&old));
            let bound = arrival + i64::try_from(m.as_secs() + g.as_secs()).unwrap();
            proptest::prop_assert!(!s_new || s_old, "heartbeats made something stale");
            proptest::prop_assert!(now <= bound || s_new, "quiet at {now}, past the bound {bound}");
            if hb.is_none_or(|h| h <= arrival) {
                proptest::prop_assert_eq!(s_new, s_old);
            }
            // What --json shows agrees with the verdict.
            let d = dataset_states(&new);
            proptest::prop_assert_eq!(d[0].stale, s_new);
            proptest::prop_assert!(d[0].alarm_at.unwrap() <= d[0].alarm_at_latest.unwrap());
            proptest::prop_assert_eq!(d[0].alarm_at_latest, Some(bound));
            proptest::prop_assert_eq!(s_new, now > d[0].alarm_at.unwrap());
        }
    }

    #[test]
    fn bad_configs_name_the_key_and_the_fix() {
        let cases = [
            (EXAMPLE.replace("min_age", "minage"), "minage"),
            (EXAMPLE.replace("last = 7", "lsat = 7"), "lsat"),
            (EXAMPLE.replace("last = 7", "last = 0"), "keep: keeps nothing"),
            (EXAMPLE.replace("\"offsite/home\"", "\"offsite/../x\""), "root"),
            (EXAMPLE.replace("\"offsite/home\"", "\"offsite\""), "whole pool"),
            (EXAMPLE.replace("\"7d\"", "\"a week\""), "min_age"),
            (EXAMPLE.replace("\"48h\"", "\"0s\""), "max_age: must be more than 0s"),
            (EXAMPLE.replace("\"/usr/local/bin/alert-owner\"", "\"alert-owner\""), "absolute path"),
            (EXAMPLE.replace("[\"/usr/local/bin/alert-owner\"]", "[]"), "notify: is empty"),
            (EXAMPLE.replace("root = \"offsite/home\"", ""), "root"),
            (format!("{EXAMPLE}\njournal = \"txg-journal\"\n").replace("[keep]\nlast = 7", ""), "journal"),
        ];
        for (text, want) in cases {
            let e = BoxConfig::parse(&text).unwrap_err().to_string();
            assert!(e.contains(want), "want {want:?} in {e:?}");
        }
    }

    #[test]
    fn listing_is_parsed_strictly_but_odd_stamps_are_kept_not_fatal() {
        let rows = parse::snapshots(
            "offsite/home/tank/a@zoffsite-1\t11\t5\t1700000000\n\
             offsite/home/tank/a@manual\t12\t6\t1700000001\n\
             offsite/home/tank/a@odd\t13\t7\t1700000002\n",
        )
        .unwrap();
        // As `zfs get -s local` lists them: the dataset's own value (which
        // the snapshots would inherit) is not a stamp of any snapshot.
        let stamps: BTreeMap<String, String> = [
            ("offsite/home/tank/a@zoffsite-1", "1800000000"),
            ("offsite/home/tank/a@odd", "yesterday"),
            ("offsite/home/tank/a", "1900000000"),
        ]
        .into_iter()
        .map(|(a, b)| (a.to_owned(), b.to_owned()))
        .collect();
        let rows = box_snapshots(rows, &stamps);
        assert_eq!(
            rows.iter().map(|r| r.received).collect::<Vec<_>>(),
            [Received::At(1_800_000_000), Received::Missing, Received::Unreadable]
        );
        assert_eq!(rows[1].createtxg, 6);
        for bad in ["", "-5", "1e9", "12345678901234567890", " 5"] {
            assert_eq!(parse_stamp(bad), Received::Unreadable, "{bad:?}");
        }
    }

    #[test]
    fn ages_come_from_receive_stamps_never_creation() {
        let p = KeepPolicy { last: 1, ..Default::default() };
        let now = ts("2026-11-25T12:00:00Z");
        // Creation says "ancient" for the newest and "just now" for the
        // oldest: the forged times change nothing.
        let mut s = vec![
            snap("a", "s1", 1, Some("2026-11-01T00:00:00Z")),
            snap("a", "s2", 2, Some("2026-11-02T00:00:00Z")),
            snap("a", "s3", 3, Some("2026-11-20T00:00:00Z")),
        ];
        s[0].creation = now.as_second();
        s[2].creation = 0;
        let d = plan_box_prune(&root(), &p, Duration::from_secs(7 * 86400), &s, &nojournal(), None, now).unwrap();
        assert_eq!(
            verdicts(&d),
            [
                ("s1".into(), true, "destroy".into()),
                ("s2".into(), true, "destroy".into()),
                (
                    "s3".into(),
                    false,
                    "keep (last 1 of 1, protected: newest snapshot, the next incremental's base, younger than min_age)"
                        .into()
                ),
            ]
        );
    }

    #[test]
    fn newest_by_txg_is_protected_and_unstamped_are_kept() {
        let p = KeepPolicy { last: 1, ..Default::default() };
        let now = ts("2026-11-25T12:00:00Z");
        // b's newest by txg has an older stamp than its predecessor (a
        // receive that was re-stamped by hand, say): still protected.
        let s = vec![
            snap("b", "x1", 1, Some("2026-11-10T00:00:00Z")),
            snap("b", "x2", 2, Some("2026-11-12T00:00:00Z")),
            snap("b", "x3", 3, Some("2026-11-11T00:00:00Z")),
            snap("b", "made-on-box", 4, None),
            snap("c", "only", 1, None),
        ];
        let d = plan_box_prune(&root(), &p, Duration::ZERO, &s, &nojournal(), None, now).unwrap();
        assert_eq!(
            verdicts(&d),
            [
                ("x1".into(), true, "destroy".into()),
                ("x2".into(), false, "keep (last 1 of 1)".into()),
                ("x3".into(), true, "destroy".into()),
                ("made-on-box".into(), false, "keep (no receive time recorded, protected: newest snapshot)".into()),
                ("only".into(), false, "keep (no receive time recorded, protected: newest snapshot)".into()),
            ]
        );
        // Without the unstamped one, x3 is the newest and protected.
        let d = plan_box_prune(&root(), &p, Duration::ZERO, &s[..3], &nojournal(), None, now).unwrap();
        assert!(!d[2].destroy && d[2].verdict.contains("protected: newest snapshot"), "{:?}", d[2]);
    }

    #[test]
    fn min_age_keeps_young_snapshots() {
        let p = KeepPolicy { last: 1, ..Default::default() };
        let now = ts("2026-11-25T12:00:00Z");
        let s = vec![
            snap("a", "old", 1, Some("2026-11-10T00:00:00Z")),
            snap("a", "young1", 2, Some("2026-11-24T00:00:00Z")),
            snap("a", "young2", 3, Some("2026-11-25T00:00:00Z")),
        ];
        let d = plan_box_prune(&root(), &p, Duration::from_secs(7 * 86400), &s, &nojournal(), None, now).unwrap();
        assert_eq!(d.iter().map(|d| d.destroy).collect::<Vec<_>>(), [true, false, false]);
        assert!(d[1].verdict.contains("younger than min_age"));
    }

    #[test]
    fn a_flood_cannot_push_real_history_out() {
        // Real history: one receive a day for 20 days. Then a compromised
        // source sends 5000 tiny snapshots within minutes.
        let p = KeepPolicy { last: 3, daily: 14, weekly: 8, ..Default::default() };
        let start = ts("2026-11-01T03:00:00Z");
        let day = jiff::SignedDuration::from_hours(24);
        let mut s = Vec::new();
        let mut txg = 0;
        for i in 0..20 {
            txg += 1;
            let t = start.checked_add(day * i).unwrap();
            s.push(BoxSnapshot {
                snapshot: Snapshot::new(&format!("offsite/home/tank/a@real-{i:02}")).unwrap(),
                guid: Guid::new(txg).unwrap(),
                createtxg: txg,
                creation: 0,
                received: Received::At(t.as_second()),
            });
        }
        let flood_at = start.checked_add(day * 20).unwrap().as_second();
        for i in 0..5000 {
            txg += 1;
            s.push(BoxSnapshot {
                snapshot: Snapshot::new(&format!("offsite/home/tank/a@zoffsite-flood-{i:05}")).unwrap(),
                guid: Guid::new(txg).unwrap(),
                createtxg: txg,
                // Forged creation: the source claims they are old.
                creation: 0,
                received: Received::At(flood_at + i / 100),
            });
        }
        let real_kept = |d: &[BoxDecision]| {
            d.iter().filter(|d| d.snapshot.name.as_str().starts_with("real-") && !d.destroy).count()
        };
        // Right after the flood: min_age keeps all of it; real history as
        // before.
        let now = Timestamp::from_second(flood_at + 3600).unwrap();
        let d = plan_box_prune(&root(), &p, Duration::from_secs(7 * 86400), &s, &nojournal(), None, now).unwrap();
        assert!(d.iter().filter(|d| d.snapshot.to_string().contains("flood")).all(|d| !d.destroy));
        // Daily: the flood's day takes one slot, real-19..real-07 the other
        // 13; weekly: the flood's week, then W46 and W45 (their newest are
        // real-14 and real-07, kept daily anyway) and W44 (real-00).
        assert_eq!(real_kept(&d), 13 + 1);
        // Ten days later, past min_age: the flood shrinks to its bucket's
        // newest and `last`, and real history still has its days.
        let now = Timestamp::from_second(flood_at + 10 * 86400).unwrap();
        let d = plan_box_prune(&root(), &p, Duration::from_secs(7 * 86400), &s, &nojournal(), None, now).unwrap();
        let flood_kept = d.iter().filter(|d| d.snapshot.to_string().contains("flood") && !d.destroy).count();
        assert_eq!(flood_kept, 3, "last 3 (the newest also its day's and week's)");
        assert!(real_kept(&d) >= 13, "{}", real_kept(&d));
        let newest_real = d.iter().find(|d| d.snapshot.name.as_str() == "real-19").unwrap();
        assert!(!newest_real.destroy, "{newest_real:?}");
    }

    #[test]
    fn clock_that_went_back_refuses() {
        let p = KeepPolicy { last: 1, ..Default::default() };
        let s =
            vec![snap("a", "s1", 1, Some("2026-11-01T00:00:00Z")), snap("a", "s2", 2, Some("2026-11-20T00:00:00Z"))];
        let e = plan_box_prune(&root(), &p, Duration::ZERO, &s, &nojournal(), None, ts("2026-11-19T00:00:00Z"))
            .unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains("went back") && msg.contains("offsite/home/tank/a@s2") && msg.contains("nothing is destroyed"),
            "{msg}"
        );
        // Within the tolerance is fine.
        plan_box_prune(&root(), &p, Duration::ZERO, &s, &nojournal(), None, ts("2026-11-19T23:55:00Z")).unwrap();
        // The last run counts too, even with no snapshots at all.
        let e = check_clock(&root(), &[], Some(secs("2026-12-01T00:00:00Z")), ts("2026-11-19T00:00:00Z")).unwrap_err();
        assert!(e.to_string().contains("zoffsite:lastrun on offsite/home"), "{e}");
    }

    #[test]
    fn clock_that_jumped_forward_refuses() {
        let s = vec![snap("a", "s1", 1, Some("2026-11-01T00:00:00Z"))];
        let e = check_clock(&root(), &s, None, ts("2030-01-01T00:00:00Z")).unwrap_err();
        assert!(matches!(e, ClockError::JumpedForward { .. }), "{e}");
        assert!(e.to_string().contains("zfs set zoffsite:lastrun=$(date +%s) offsite/home"), "{e}");
        // A recent last run vouches for the clock.
        check_clock(&root(), &s, Some(secs("2029-12-30T00:00:00Z")), ts("2030-01-01T00:00:00Z")).unwrap();
        // Nothing to compare with: nothing to refuse.
        check_clock(&root(), &[], None, ts("2030-01-01T00:00:00Z")).unwrap();
        check_clock(&root(), &s, None, ts("2027-11-01T00:00:00Z")).unwrap();
    }

    fn input<'a>(snaps: &'a [BoxSnapshot], partials: &'a [Partial], health: &'a str, now: &str) -> CheckInput<'a> {
        static ROOT: std::sync::OnceLock<Dataset> = std::sync::OnceLock::new();
        CheckInput {
            root: ROOT.get_or_init(root),
            max_age: Duration::from_secs(48 * 3600),
            heartbeat_grace: DEFAULT_HEARTBEAT_GRACE,
            heartbeats: NOHEARTBEATS.get_or_init(Heartbeats::default),
            snaps: Some(snaps),
            partials,
            pool_health: Some(health),
            lastrun: None,
            journal: NOJOURNAL.get_or_init(nojournal),
            now: ts(now),
        }
    }

    static NOJOURNAL: std::sync::OnceLock<Journal> = std::sync::OnceLock::new();
    static NOHEARTBEATS: std::sync::OnceLock<Heartbeats> = std::sync::OnceLock::new();

    fn nojournal() -> Journal {
        Journal::new(1, root())
    }

    #[test]
    fn check_is_quiet_when_all_is_well() {
        let s =
            vec![snap("a", "s1", 1, Some("2026-11-24T00:00:00Z")), snap("b", "s1", 2, Some("2026-11-25T00:00:00Z"))];
        assert_eq!(check(&input(&s, &[], "ONLINE", "2026-11-25T12:00:00Z")), []);
    }

    #[test]
    fn check_finds_stale_datasets_pool_and_partials() {
        let s = vec![
            snap("a", "s1", 1, Some("2026-11-20T00:00:00Z")),
            snap("a", "s2", 2, Some("2026-11-22T00:00:00Z")),
            snap("b", "s1", 3, Some("2026-11-25T00:00:00Z")),
            snap("c", "legacy", 4, None),
        ];
        let partials = [
            Partial {
                dataset: Dataset::new("offsite/home/tank/b").unwrap(),
                since: Some(secs("2026-11-25T06:00:00Z")),
            },
            Partial {
                dataset: Dataset::new("offsite/home/tank/d").unwrap(),
                since: Some(secs("2026-11-21T00:00:00Z")),
            },
            Partial { dataset: Dataset::new("offsite/home/tank/e").unwrap(), since: None },
        ];
        let f = check(&input(&s, &partials, "DEGRADED", "2026-11-25T12:00:00Z"));
        let text: Vec<String> = f.iter().map(ToString::to_string).collect();
        assert_eq!(text.len(), 5, "{text:#?}");
        assert!(text[0].starts_with("pool offsite is DEGRADED"), "{text:#?}");
        assert!(text[1].starts_with("offsite/home/tank/a: nothing received for 3d 12h"), "{text:#?}");
        assert!(text[2].starts_with("offsite/home/tank/c: no snapshot has a receive time"), "{text:#?}");
        assert!(
            text[3].starts_with("offsite/home/tank/d: a partial receive started") && text[3].contains("zfs receive -A"),
            "{text:#?}"
        );
        assert!(text[4].starts_with("offsite/home/tank/e: holds a partial receive of unknown age"), "{text:#?}");
        let j = serde_json::to_value(&f[1]).unwrap();
        assert_eq!(j["kind"], "stale");
        assert_eq!(j["age"], 3 * 86400 + 12 * 3600);
    }

    #[test]
    fn check_reports_an_empty_root_and_a_bad_clock() {
        let f = check(&input(&[], &[], "ONLINE", "2026-11-25T12:00:00Z"));
        assert_eq!(f, [Finding::Empty { root: root() }]);
        let s = vec![snap("a", "s1", 1, Some("2026-11-25T00:00:00Z"))];
        let f = check(&input(&s, &[], "ONLINE", "2026-11-20T00:00:00Z"));
        assert!(matches!(&f[0], Finding::Clock { error: ClockError::WentBack { .. } }), "{f:?}");
        assert_eq!(serde_json::to_value(&f[0]).unwrap()["error"]["kind"], "went_back");
        // What could not be listed is skipped here (the caller reports it).
        let mut i = input(&s, &[], "ONLINE", "2026-11-20T00:00:00Z");
        i.snaps = None;
        i.pool_health = None;
        assert_eq!(check(&i), []);
    }

    #[test]
    fn the_tree_listing_names_datasets_as_on_the_source() {
        use crate::parse::{ReceiverRow, SnapshotRow};
        let root = Dataset::new("off/home").unwrap();
        let ds = |s: &str| Dataset::new(s).unwrap();
        let rows =
            ["off/home", "off/home/tank", "off/home/tank/data", "off/home/tank/data/docs", "off/home/tank/database"]
                .map(|d| ReceiverRow { dataset: ds(d), resume_token: None })
                .to_vec();
        let snap = |s: &str, txg: u64| SnapshotRow {
            snapshot: Snapshot::new(s).unwrap(),
            guid: Guid::new(txg).unwrap(),
            createtxg: txg,
            creation: 0,
        };
        let snaps = vec![
            snap("off/home/tank/data@b", 20),
            snap("off/home/tank/data@a", 10),
            snap("off/home/tank/database@x", 5),
        ];
        let l = tree_listing(&root, &ds("tank/data"), rows.clone(), snaps);
        let names: Vec<&str> = l.iter().map(|d| d.name.as_str()).collect();
        assert_eq!(names, ["tank/data", "tank/data/docs"], "tank/database only shares a prefix");
        let got: Vec<&str> = l[0].snapshots.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(got, ["a", "b"], "oldest first");
        assert!(tree_listing(&root, &ds("tank/nope"), rows, vec![]).is_empty());
    }

    #[test]
    fn a_decision_serializes_its_snapshot_by_full_name() {
        // docs/json.md's `box prune` schema: `snapshot` is one string.
        let d = BoxDecision {
            snapshot: Snapshot::new("offsite/home/tank/data@zoffsite-1").unwrap(),
            received: Some(5),
            aged_from: None,
            creation: 4,
            destroy: false,
            verdict: "keep (daily 2026-11-26)".into(),
        };
        assert_eq!(
            serde_json::to_string(&d).unwrap(),
            r#"{"snapshot":"offsite/home/tank/data@zoffsite-1","received":5,"aged_from":null,"creation":4,"destroy":false,"verdict":"keep (daily 2026-11-26)"}"#
        );
    }
}
