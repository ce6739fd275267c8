//! The box's transaction-group journal: bounds on when each snapshot was
//! received that rest on the box's own pool, not on any property.
//!
//! Why: box retention ages snapshots by their receive stamp
//! (`zoffsite:received`), a user property. `serve` writes it once, only on
//! snapshots a receive created, but the delegated box user may set user
//! properties (`userprop`), so a bug in `serve` (or root on the box) could
//! restamp years of history as received today, or date new snapshots years
//! back; `box prune` would then thin the history as if it were one day's.
//!
//! A snapshot's `createtxg` is assigned by the box's pool when it is
//! received and cannot be chosen by any sender or changed by the box user,
//! and transaction groups only grow. So each `box prune` and `box check`
//! run (as root) appends one [`Entry`] to a root-owned file: the highest
//! `createtxg` among the snapshots under the root, with the box's time
//! before (`start`) and after (`end`) it listed them. Then, for a snapshot
//! under the root with `createtxg` = t:
//! - if t <= some entry's txg, the snapshot existed when that entry's
//!   listing ended: it was received at or before that entry's `end`;
//! - if t > some entry's txg, it was not there when that listing ran (it
//!   would have been listed, and the entry's txg would be at least t): it
//!   was received after that entry's `start`.
//!
//! [`Journal::received`] clamps a stamp into that window, and gives an
//! unstamped snapshot the window's end, so a forged stamp can move a
//! snapshot's age by at most the time between two runs, and a snapshot a
//! receive left unstamped still ages. Dropping entries only widens the
//! windows, which keeps everything older than it is: the journal is
//! thinned ([`Journal::record`]) to stay small over years.
//!
//! Entries are only meaningful for the pool (and root) they were taken on:
//! the file names both, and a journal of another pool is not used.
//!
//! Text format (strict: anything else is refused, never half read):
//! ```text
//! zoffsite-txg-journal 1
//! pool 1234567890123
//! root offsite/home
//! 8812 1764979200 1764979201
//! ```
//! one entry a line: txg, start and end (Unix seconds, box clock); txg,
//! start and end never go down from one line to the next.

use std::collections::BTreeSet;

use crate::names::Dataset;

/// The first line of a journal this version writes and reads.
pub const MAGIC: &str = "zoffsite-txg-journal 1";

/// Where `box prune` and `box check` keep the journal unless `box.toml`
/// says otherwise: root's own state, outside the box user's home
/// (`/var/lib/zoffsite`), which that user could rewrite.
pub const DEFAULT_PATH: &str = "/var/lib/zoffsite-box/txg-journal";

/// Most entries a journal file may hold; more is refused as corrupt.
/// Thinning keeps a journal far below this (about 1,200 entries for
/// hourly runs, plus 52 a year).
pub const MAX_ENTRIES: usize = 20_000;

/// Entries this recent are all kept.
const KEEP_ALL_SECS: i64 = 32 * 86400;
/// Older than [`KEEP_ALL_SECS`]: one entry per UTC day; older than this,
/// one per week.
const DAILY_SECS: i64 = 400 * 86400;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    /// The highest `createtxg` under the root when the run listed it.
    pub txg: u64,
    /// Box time before the listing (Unix seconds).
    pub start: i64,
    /// Box time after the listing.
    pub end: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Journal {
    /// `zpool get guid`: txgs of another pool say nothing about this one.
    pub pool_guid: u64,
    pub root: Dataset,
    /// Ascending in txg, start and end.
    pub entries: Vec<Entry>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JournalError {
    #[error("line {line}: {what}")]
    Malformed { line: usize, what: String },
    #[error("more than {MAX_ENTRIES} entries")]
    TooLong,
}

/// When a snapshot was received, as the journal bounds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Window {
    /// It was there by then (Unix seconds, box clock).
    pub by: Option<i64>,
    /// It was not there yet then.
    pub after: Option<i64>,
}

fn bad(line: usize, what: impl Into<String>) -> JournalError {
    JournalError::Malformed { line, what: what.into() }
}

impl Journal {
    pub fn new(pool_guid: u64, root: Dataset) -> Journal {
        Journal { pool_guid, root, entries: Vec::new() }
    }

    pub fn parse(text: &str) -> Result<Journal, JournalError> {
        let mut lines = text.split_terminator('\n').enumerate().map(|(i, l)| (i + 1, l));
        let mut header = |key: &str| -> Result<&str, JournalError> {
            let (n, l) = lines.next().ok_or_else(|| bad(0, format!("missing the {key:?} line")))?;
            if key == "magic" {
                return if l == MAGIC { Ok(l) } else { Err(bad(n, format!("expected {MAGIC:?} (another version?)"))) };
            }
            l.strip_prefix(key).and_then(|v| v.strip_prefix(' ')).ok_or_else(|| bad(n, format!("expected {key} ...")))
        };
        header("magic")?;
        let pool = header("pool")?;
        let pool_guid = digits(pool).ok_or_else(|| bad(2, "pool GUID is not a number"))?;
        let root = Dataset::new(header("root")?).map_err(|e| bad(3, format!("root: {e}")))?;
        let mut entries: Vec<Entry> = Vec::new();
        for (n, l) in lines {
            if entries.len() == MAX_ENTRIES {
                return Err(JournalError::TooLong);
            }
            let f: Vec<&str> = l.split(' ').collect();
            let [txg, start, end] = f[..] else { return Err(bad(n, "expected: txg start end")) };
            let num = |s: &str| digits(s).and_then(|v| i64::try_from(v).ok());
            let (Some(txg), Some(start), Some(end)) = (digits(txg), num(start), num(end)) else {
                return Err(bad(n, "txg, start and end must be plain numbers"));
            };
            let e = Entry { txg, start, end };
            if start > end {
                return Err(bad(n, "start after end"));
            }
            if let Some(p) = entries.last() {
                if e.txg < p.txg || e.start < p.start || e.end < p.end {
                    return Err(bad(n, "goes back from the line before"));
                }
            }
            entries.push(e);
        }
        Ok(Journal { pool_guid, root, entries })
    }

    pub fn render(&self) -> String {
        let mut s = format!("{MAGIC}\npool {}\nroot {}\n", self.pool_guid, self.root);
        for e in &self.entries {
            s.push_str(&format!("{} {} {}\n", e.txg, e.start, e.end));
        }
        s
    }

    /// Whether this journal was kept for `pool_guid` and `root`.
    pub fn is_for(&self, pool_guid: u64, root: &Dataset) -> bool {
        self.pool_guid == pool_guid && self.root == *root
    }

    /// Adds `e` (a run at `e.end`), unless it would go back from the last
    /// entry (a clock or pool that went back: the caller's clock check
    /// reports that; recording it would break the bounds), then thins old
    /// entries. Returns whether `e` was added.
    pub fn record(&mut self, e: Entry) -> bool {
        if e.start > e.end {
            return false;
        }
        if let Some(p) = self.entries.last() {
            if e.txg < p.txg || e.start < p.start || e.end < p.end {
                return false;
            }
        }
        self.entries.push(e);
        self.thin(e.end);
        true
    }

    /// Keeps every entry of the last 32 days, then the first of each UTC
    /// day, and past 400 days the first of each week (of Unix time).
    fn thin(&mut self, now: i64) {
        let mut seen = BTreeSet::new();
        self.entries.retain(|e| {
            let age = now - e.end;
            if age <= KEEP_ALL_SECS {
                return true;
            }
            let bucket =
                if age <= DAILY_SECS { (0, e.end.div_euclid(86400)) } else { (1, e.end.div_euclid(7 * 86400)) };
            seen.insert(bucket)
        });
    }

    /// When a snapshot with this `createtxg` (under the journal's root, on
    /// its pool) was received, as far as the journal knows.
    pub fn window(&self, createtxg: u64) -> Window {
        let i = self.entries.partition_point(|e| e.txg < createtxg);
        Window { by: self.entries.get(i).map(|e| e.end), after: i.checked_sub(1).map(|j| self.entries[j].start) }
    }

    /// The receive time to age a snapshot by: its stamp clamped into the
    /// journal's window, or the window's end when it has no stamp (it was
    /// there by then, so it is at least that old). `None`: no stamp and no
    /// bound, so its age is unknown.
    pub fn received(&self, createtxg: u64, stamp: Option<i64>) -> Option<i64> {
        let w = self.window(createtxg);
        let t = match (stamp, w.by) {
            (Some(s), Some(by)) => s.min(by),
            (Some(s), None) => s,
            (None, by) => by?,
        };
        Some(w.after.map_or(t, |a| t.max(a)))
    }
}

/// A decimal `u64` (a pool GUID takes all 20 digits), nothing else: no
/// sign, no spaces, no overflow.
fn digits(s: &str) -> Option<u64> {
    (!s.is_empty() && s.len() <= 20 && s.bytes().all(|b| b.is_ascii_digit())).then(|| s.parse().ok()).flatten()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn root() -> Dataset {
        Dataset::new("offsite/home").unwrap()
    }

    const DAY: i64 = 86400;

    fn journal(entries: &[(u64, i64)]) -> Journal {
        let mut j = Journal::new(77, root());
        for &(txg, t) in entries {
            assert!(j.record(Entry { txg, start: t - 5, end: t }));
        }
        j
    }

    #[test]
    fn a_restamped_old_snapshot_is_aged_by_the_run_that_saw_it() {
        // Runs on day 0 (txg 100), day 10 (txg 200), day 20 (txg 300).
        let j = journal(&[(100, 0), (200, 10 * DAY), (300, 20 * DAY)]);
        // Received on day 3 (txg 150): seen by the day-10 run. A stamp that
        // says day 25 (restamped) is pulled back to day 10.
        assert_eq!(j.received(150, Some(25 * DAY)), Some(10 * DAY));
        // An honest stamp inside the window stays.
        assert_eq!(j.received(150, Some(3 * DAY)), Some(3 * DAY));
        // A stamp that says it is older than it can be (before the day-0
        // run, which did not see it) is pulled forward: younger, kept longer.
        assert_eq!(j.received(150, Some(-100 * DAY)), Some(-5));
        // Unstamped: at least as old as the first run that saw it.
        assert_eq!(j.received(150, None), Some(10 * DAY));
        assert_eq!(j.received(100, None), Some(0));
        // Newer than every run: only the stamp, not before the last run.
        assert_eq!(j.received(301, Some(30 * DAY)), Some(30 * DAY));
        assert_eq!(j.received(301, Some(DAY)), Some(20 * DAY - 5));
        assert_eq!(j.received(301, None), None);
        // Before any run at all: the stamp is all there is.
        assert_eq!(Journal::new(77, root()).received(5, Some(42)), Some(42));
    }

    #[test]
    fn an_entry_that_goes_back_is_not_recorded() {
        let mut j = journal(&[(100, DAY)]);
        assert!(!j.record(Entry { txg: 99, start: 2 * DAY, end: 2 * DAY }), "txg went back");
        assert!(!j.record(Entry { txg: 101, start: 0, end: 0 }), "clock went back");
        assert!(!j.record(Entry { txg: 101, start: 3 * DAY, end: 2 * DAY }), "start after end");
        assert_eq!(j.entries.len(), 1);
        assert!(j.record(Entry { txg: 100, start: DAY, end: DAY + 1 }), "same txg later is fine");
    }

    #[test]
    fn thinning_keeps_a_month_then_days_then_weeks_and_only_loosens_bounds() {
        // Hourly runs for three years, one txg per run.
        let mut j = Journal::new(1, root());
        let hours = 3 * 365 * 24;
        for h in 0..hours {
            let t = h * 3600;
            j.record(Entry { txg: 1000 + u64::try_from(h).unwrap(), start: t, end: t + 1 });
        }
        let n = j.entries.len();
        assert!(n < 32 * 24 + 400 + 3 * 53, "{n} entries");
        assert!(n > 32 * 24, "the last month is whole: {n}");
        // Every bound is still true: a snapshot of txg 1000+h was received
        // at hour h; the thinned journal says "by" no earlier than that and
        // "after" no later.
        for h in (0..hours).step_by(97) {
            let w = j.window(1000 + u64::try_from(h).unwrap());
            assert!(w.by.is_none_or(|by| by >= h * 3600), "h={h} {w:?}");
            assert!(w.after.is_none_or(|a| a <= h * 3600), "h={h} {w:?}");
        }
    }

    #[test]
    fn the_text_form_round_trips_and_anything_else_is_refused() {
        let j = journal(&[(100, 50), (200, 60)]);
        let text = j.render();
        assert_eq!(Journal::parse(&text), Ok(j.clone()));
        assert!(j.is_for(77, &root()) && !j.is_for(78, &root()));
        assert!(!j.is_for(77, &Dataset::new("offsite/other").unwrap()));
        let bad = [
            text.replace(MAGIC, "zoffsite-txg-journal 2"),
            text.replace("pool 77", "pool x"),
            text.replace("pool 77", "pool 77 "),
            text.replace("root offsite/home", "root /etc"),
            text.replace("100 45 50", "100 45"),
            text.replace("100 45 50", "100 45 50 1"),
            text.replace("100 45 50", "100 -45 50"),
            text.replace("100 45 50", "100 51 50"),
            text.replace("100 45 50", "300 45 50"),
            text.replace("100 45 50", "100 45 70"),
            format!("{text}\n"),
            String::new(),
            MAGIC.into(),
        ];
        for b in bad {
            assert!(Journal::parse(&b).is_err(), "{b:?}");
        }
        // Any pool GUID (found by the e2e run: a random one had 20 digits),
        // and nothing past u64.
        let big = Journal { pool_guid: u64::MAX, ..j };
        assert_eq!(Journal::parse(&big.render()), Ok(big.clone()));
        assert!(Journal::parse(&big.render().replace(&u64::MAX.to_string(), "18446744073709551616")).is_err());
    }

    proptest! {
        #[test]
        fn never_panics_and_what_parses_renders_back(s in "[0-9 a-z/\n-]{0,200}") {
            let text = format!("{MAGIC}\npool 1\nroot a/b\n{s}");
            if let Ok(j) = Journal::parse(&text) {
                prop_assert_eq!(j.render(), if text.ends_with('\n') || s.is_empty() { text.clone() } else { format!("{text}\n") });
            }
        }
    }
}
