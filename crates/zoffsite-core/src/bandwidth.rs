//! A target's bandwidth limits by time of day (the friend's upload line),
//! and the rates they are written in.
//!
//! A target has a default limit (`bandwidth_limit`; unlimited without it)
//! and any number of windows (`[[target.bandwidth_window]]`) that replace
//! it between two times of day: full speed from 01:00 to 06:00 while the
//! friend sleeps, 1 MiB/s otherwise. The pacer of a stream
//! (`zoffsite_exec::pace`) asks [`Schedule::limit_at`] again every second,
//! so a transfer that crosses a window's edge changes its rate there.
//!
//! Invariants:
//! - A [`Schedule`]'s windows are on whole minutes, never empty, and never
//!   overlap ([`Schedule::new`] refuses otherwise), so at every instant at
//!   most one window applies and the limit is well defined.
//! - The limit at an instant depends only on the wall-clock time of day at
//!   that instant in the given time zone. It is piecewise constant in time
//!   and changes only where the wall clock reaches a window's edge or jumps
//!   (a daylight saving time transition); [`Schedule::next_change`] finds
//!   the next such change.
//! - Nothing here reads a clock or the system's time zone: both are
//!   arguments (the source's system time zone in production).
//!
//! Daylight saving time: windows follow the wall clock, so the limit is
//! always the one for the time the clock shows. When clocks go forward
//! (02:00 becomes 03:00), a window that starts inside the skipped hour
//! starts at the jump, one that ends inside it ends at the jump, and one
//! wholly inside it does not happen that night. When clocks go back (03:00
//! becomes 02:00), the repeated hour is lived twice, and so are the windows
//! in it: a window from 01:00 to 02:30 ends at the first 02:30, applies
//! again from the jump back to 02:00, and ends at the second 02:30.
//!
//! Rates ([`parse_limit`]): a number, an optional space, a unit, `/s`; or
//! `unlimited`. Units: `B` (bytes) or `bit` (bits), after an optional
//! prefix: `k`/`K`, `M`, `G`, `T` are powers of 1000 (SI, as line speeds
//! are sold: `20Mbit/s` is 2 500 000 bytes per second), `Ki`, `Mi`, `Gi`,
//! `Ti` powers of 1024 (`2MiB/s` is 2 097 152). The spelling is checked
//! exactly (`mb`, `Mb` and `MBps` are refused: a megabit and a megabyte
//! differ eightfold); the number and the arithmetic are `byte-unit`'s,
//! exact (decimal, not floating point; a fraction of a byte rounds up).

use std::fmt;

use byte_unit::{Byte, ParseError, UnitType, ValueParseError};
use jiff::civil::{Date, Time};
use jiff::tz::TimeZone;
use jiff::{SignedDuration, Span, Timestamp};

/// The least rate accepted: below it a backup would never finish.
pub const MIN_RATE: u64 = 1024;

/// How far ahead [`Schedule::next_change`] looks.
pub const NEXT_CHANGE_HORIZON: SignedDuration = SignedDuration::from_hours(48);

/// The units a rate may be written in, spelled exactly.
const UNITS: &[&str] = &[
    "B", "kB", "KB", "MB", "GB", "TB", "KiB", "MiB", "GiB", "TiB", "bit", "kbit", "Kbit", "Mbit", "Gbit", "Tbit",
    "Kibit", "Mibit", "Gibit", "Tibit",
];

/// The most bytes per second a stream may take.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Limit {
    Unlimited,
    /// At least [`MIN_RATE`].
    BytesPerSec(u64),
}

impl Limit {
    /// Bytes per second, or `None` for no limit.
    pub fn bytes_per_sec(self) -> Option<u64> {
        match self {
            Limit::Unlimited => None,
            Limit::BytesPerSec(n) => Some(n),
        }
    }
}

impl fmt::Display for Limit {
    /// `unlimited`, or the rate in binary units: `2 MiB/s`, `2.4 MiB/s`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Limit::Unlimited => f.write_str("unlimited"),
            Limit::BytesPerSec(n) => write!(f, "{:#.1}/s", Byte::from_u64(*n).get_appropriate_unit(UnitType::Binary)),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RateError {
    #[error("{0:?} is not a rate; write it like \"2MiB/s\", \"500KiB/s\", \"1MB/s\", \"20Mbit/s\" or \"unlimited\" (k or K, M, G, T: powers of 1000; Ki, Mi, Gi, Ti: powers of 1024; B: bytes, bit: bits)")]
    Malformed(String),
    #[error("{0:?} is below 1KiB/s; zoffsite would never finish")]
    TooSlow(String),
    #[error("{0:?} is more than zoffsite can count; write \"unlimited\" for no limit")]
    TooLarge(String),
}

/// Parses a rate such as `"2MiB/s"`, `"2.5 MiB/s"`, `"20Mbit/s"`,
/// `"1MB/s"` or `"unlimited"` (the grammar is in the module docs).
pub fn parse_limit(s: &str) -> Result<Limit, RateError> {
    let t = s.trim();
    if t == "unlimited" {
        return Ok(Limit::Unlimited);
    }
    let malformed = || RateError::Malformed(s.to_owned());
    let body = t.strip_suffix("/s").ok_or_else(malformed)?;
    // byte-unit reads units loosely ("mb" would be megabits, "M" megabytes):
    // the unit must be one of ours, spelled exactly, before it is asked.
    let unit_at = body.find(|c: char| !(c.is_ascii_digit() || c == '.' || c == ' ')).ok_or_else(malformed)?;
    if !UNITS.contains(&&body[unit_at..]) {
        return Err(malformed());
    }
    let bytes = Byte::parse_str(body, false).map_err(|e| match e {
        ParseError::Value(ValueParseError::ExceededBounds(_) | ValueParseError::NumberTooLong) => {
            RateError::TooLarge(s.to_owned())
        }
        _ => malformed(),
    })?;
    match bytes.as_u64() {
        n if n < MIN_RATE => Err(RateError::TooSlow(s.to_owned())),
        n => Ok(Limit::BytesPerSec(n)),
    }
}

/// A time of day on a whole minute, `00:00` to `23:59`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TimeOfDay(u16);

const MINUTES_PER_DAY: u16 = 24 * 60;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a time of day; write it as \"HH:MM\" on the 24-hour clock, like \"01:00\" or \"18:30\" (\"24:00\" as a window's end)")]
pub struct TimeError(String);

impl TimeOfDay {
    /// `None` unless `hour` < 24 and `minute` < 60.
    pub fn new(hour: u8, minute: u8) -> Option<TimeOfDay> {
        (hour < 24 && minute < 60).then(|| TimeOfDay(u16::from(hour) * 60 + u16::from(minute)))
    }

    /// Parses exactly `HH:MM` (two digits each). With `end`, `24:00` is
    /// accepted too and means midnight (a window's end).
    pub fn parse(s: &str, end: bool) -> Result<TimeOfDay, TimeError> {
        let bad = || TimeError(s.to_owned());
        let b = s.as_bytes();
        if b.len() != 5 || b[2] != b':' || ![0, 1, 3, 4].iter().all(|&i| b[i].is_ascii_digit()) {
            return Err(bad());
        }
        let (hour, minute) = ((b[0] - b'0') * 10 + (b[1] - b'0'), (b[3] - b'0') * 10 + (b[4] - b'0'));
        if end && (hour, minute) == (24, 0) {
            return Ok(TimeOfDay(0));
        }
        TimeOfDay::new(hour, minute).ok_or_else(bad)
    }

    /// Minutes since midnight, below 1440.
    pub fn minutes(self) -> u16 {
        self.0
    }

    fn of(t: Time) -> TimeOfDay {
        // jiff's hour and minute are 0-23 and 0-59.
        TimeOfDay(u16::try_from(i16::from(t.hour()) * 60 + i16::from(t.minute())).unwrap_or(0))
    }

    fn to_time(self) -> Option<Time> {
        Time::new(i8::try_from(self.0 / 60).ok()?, i8::try_from(self.0 % 60).ok()?, 0, 0).ok()
    }
}

impl fmt::Display for TimeOfDay {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:02}:{:02}", self.0 / 60, self.0 % 60)
    }
}

/// From `from` (included) to `to` (excluded), wrapping past midnight when
/// `to` is earlier in the day than `from`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub from: TimeOfDay,
    pub to: TimeOfDay,
    pub limit: Limit,
}

impl Window {
    pub fn contains(&self, t: TimeOfDay) -> bool {
        if self.from < self.to {
            self.from <= t && t < self.to
        } else {
            t >= self.from || t < self.to
        }
    }

    /// The window as at most two spans of minutes `[a, b)` within one day.
    fn spans(&self) -> impl Iterator<Item = (u16, u16)> {
        let (f, t) = (self.from.0, self.to.0);
        let spans = if f < t { [(f, t), (0, 0)] } else { [(f, MINUTES_PER_DAY), (0, t)] };
        spans.into_iter().filter(|(a, b)| a < b)
    }

    fn overlaps(&self, other: &Window) -> bool {
        self.spans().any(|(a1, b1)| other.spans().any(|(a2, b2)| a1 < b2 && a2 < b1))
    }

    /// `01:00-06:00`.
    fn span_text(&self) -> String {
        format!("{}-{}", self.from, self.to)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    #[error(
        "{window} is empty (`from` and `to` are the same time); for one limit all day, set bandwidth_limit instead"
    )]
    Empty { index: usize, window: String },
    #[error("{window} overlaps bandwidth_window[{other}] ({other_window}); windows must not overlap (one may end where the next begins)")]
    Overlap { index: usize, window: String, other: usize, other_window: String },
}

impl ScheduleError {
    /// The index of the window at fault, as given to [`Schedule::new`].
    pub fn index(&self) -> usize {
        match self {
            ScheduleError::Empty { index, .. } | ScheduleError::Overlap { index, .. } => *index,
        }
    }
}

/// The limit in force at each time of day: a default, and windows that
/// replace it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule {
    default: Limit,
    /// Sorted by `from`; disjoint and non-empty.
    windows: Vec<Window>,
}

impl Default for Schedule {
    /// Unlimited at all hours.
    fn default() -> Self {
        Schedule::constant(Limit::Unlimited)
    }
}

/// When the limit changes next, and to what.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Change {
    pub at: Timestamp,
    pub limit: Limit,
}

impl Schedule {
    /// One limit at all hours.
    pub fn constant(limit: Limit) -> Schedule {
        Schedule { default: limit, windows: Vec::new() }
    }

    /// Refuses an empty window (`from` = `to`) and any two windows that share
    /// a minute; errors name the windows by their index in `windows`.
    pub fn new(default: Limit, windows: Vec<Window>) -> Result<Schedule, ScheduleError> {
        for (i, w) in windows.iter().enumerate() {
            if w.from == w.to {
                return Err(ScheduleError::Empty { index: i, window: w.span_text() });
            }
            // Those before are disjoint already, so this stops at the first
            // pair however long the list.
            if let Some((j, o)) = windows[..i].iter().enumerate().find(|(_, o)| o.overlaps(w)) {
                return Err(ScheduleError::Overlap {
                    index: i,
                    window: w.span_text(),
                    other: j,
                    other_window: o.span_text(),
                });
            }
        }
        let mut windows = windows;
        windows.sort_by_key(|w| w.from);
        Ok(Schedule { default, windows })
    }

    /// The limit outside every window.
    pub fn default_limit(&self) -> Limit {
        self.default
    }

    /// The windows, by their start in the day.
    pub fn windows(&self) -> &[Window] {
        &self.windows
    }

    /// True when no hour of the day has a limit.
    pub fn is_unlimited(&self) -> bool {
        self.default == Limit::Unlimited && self.windows.iter().all(|w| w.limit == Limit::Unlimited)
    }

    /// The limit at a time of day.
    pub fn limit_at_time(&self, t: TimeOfDay) -> Limit {
        self.windows.iter().find(|w| w.contains(t)).map_or(self.default, |w| w.limit)
    }

    /// The limit at instant `t`, by the wall clock of `tz` (the source's
    /// system time zone).
    pub fn limit_at(&self, t: Timestamp, tz: &TimeZone) -> Limit {
        if self.windows.is_empty() {
            return self.default;
        }
        self.limit_at_time(TimeOfDay::of(tz.to_datetime(t).time()))
    }

    /// The first instant after `t`, within [`NEXT_CHANGE_HORIZON`], where
    /// the limit differs from the one at `t`; `None` when it stays the same
    /// that long (no windows, or windows with the default's limit).
    pub fn next_change(&self, t: Timestamp, tz: &TimeZone) -> Option<Change> {
        if self.windows.is_empty() {
            return None;
        }
        let now = self.limit_at(t, tz);
        let horizon = t.checked_add(NEXT_CHANGE_HORIZON).unwrap_or(Timestamp::MAX);
        // The limit changes only where the wall clock reaches an edge (each
        // edge, on each date the horizon can touch, at both offsets a fold
        // gives it) or jumps (a transition): those are the candidates.
        let mut candidates: Vec<Timestamp> =
            tz.following(t).map(|tr| tr.timestamp()).take_while(|c| *c <= horizon).collect();
        let today: Date = tz.to_datetime(t).date();
        for days in -1..=3_i64 {
            let Ok(date) = today.checked_add(Span::new().days(days)) else { continue };
            for edge in self.windows.iter().flat_map(|w| [w.from, w.to]) {
                let Some(time) = edge.to_time() else { continue };
                let at = tz.to_ambiguous_timestamp(date.to_datetime(time));
                candidates.extend(at.earlier().ok());
                candidates.extend(at.later().ok());
            }
        }
        candidates.retain(|c| *c > t && *c <= horizon);
        candidates.sort_unstable();
        candidates.dedup();
        candidates.into_iter().map(|at| Change { at, limit: self.limit_at(at, tz) }).find(|c| c.limit != now)
    }

    /// The schedule in words, e.g. `1 MiB/s, except unlimited from 01:00 to
    /// 06:00 (the source's local time)`.
    pub fn describe(&self) -> String {
        if self.windows.is_empty() {
            return self.default.to_string();
        }
        let windows: Vec<String> = self
            .windows
            .iter()
            .map(|w| {
                let to = match w.to.0 {
                    0 => "midnight".to_owned(),
                    _ if w.to < w.from => format!("{} the next day", w.to),
                    _ => w.to.to_string(),
                };
                format!("{} from {} to {to}", w.limit, w.from)
            })
            .collect();
        format!("{}, except {} (the source's local time)", self.default, windows.join(", and "))
    }
}

#[cfg(test)]
mod tests;
