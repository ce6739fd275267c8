//! Pacing a send stream to a target's bandwidth schedule.
//!
//! A token bucket: tokens (bytes) accrue at the limit in force, up to a
//! burst of a tenth of a second's worth; each chunk written spends its
//! bytes (frame header included), and the sender sleeps while the bucket
//! is in debt. Chunks hold at most 1/16 s worth ([`Pacer::chunk_len`]), so
//! under one limit `r` the bytes written in any 1 s are at most
//! `r × (1 + 1/10 + 1/16)`: within the 20 % the benchmark allows, and the
//! long-run rate is `r` itself.
//!
//! The limit is the pure [`Schedule::limit_at`] of the wall clock, asked
//! again at least every [`RECHECK`] of the monotonic clock, so a transfer
//! that crosses a window's edge changes its rate within a second of it
//! without being restarted. On a change the bucket starts empty (no debt
//! and no burst carried over from the old rate). The bucket itself runs on
//! the monotonic clock: a step of the wall clock (NTP, a DST jump) changes
//! which limit applies, never the accounting.
//!
//! Time is injected ([`Clock`]): [`SystemClock`] in production, a fake one
//! in the tests, which check the 1 s bound and a change mid-transfer.

use std::time::{Duration, Instant};

use jiff::tz::TimeZone;
use jiff::Timestamp;
use zoffsite_core::bandwidth::{Limit, Schedule};

/// How often the limit is asked again while a stream runs.
pub const RECHECK: Duration = Duration::from_secs(1);
/// The least bytes a paced chunk holds (the rate's 1/16 s is smaller only
/// below 1 KiB/s, which the config refuses).
const MIN_CHUNK: u64 = 64;

/// The time a [`Pacer`] reads and waits on.
pub trait Clock {
    /// Monotonic time since any fixed start: the bucket's time.
    fn elapsed(&self) -> Duration;
    /// The wall clock: which window applies.
    fn wall(&self) -> Timestamp;
    fn sleep(&mut self, d: Duration);
}

/// The system's clocks.
pub struct SystemClock {
    start: Instant,
}

impl SystemClock {
    pub fn new() -> Self {
        SystemClock { start: Instant::now() }
    }
}

impl Default for SystemClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for SystemClock {
    fn elapsed(&self) -> Duration {
        self.start.elapsed()
    }

    fn wall(&self) -> Timestamp {
        Timestamp::now()
    }

    fn sleep(&mut self, d: Duration) {
        std::thread::sleep(d);
    }
}

/// Paces one stream: ask [`chunk_len`](Self::chunk_len) before reading a
/// chunk, call [`sent`](Self::sent) after writing it.
pub struct Pacer<C: Clock> {
    schedule: Schedule,
    tz: TimeZone,
    clock: C,
    limit: Limit,
    /// When the limit was last asked (monotonic).
    checked: Duration,
    /// Bytes that may go now; negative: owed, to be slept off.
    tokens: f64,
    /// When `tokens` was last brought up to date (monotonic).
    refilled: Duration,
}

impl<C: Clock> Pacer<C> {
    /// Starts with a full bucket, at the limit in force now.
    pub fn new(schedule: Schedule, tz: TimeZone, clock: C) -> Self {
        let now = clock.elapsed();
        let limit = schedule.limit_at(clock.wall(), &tz);
        let tokens = burst(limit);
        Pacer { schedule, tz, clock, limit, checked: now, tokens, refilled: now }
    }

    /// The limit in force.
    pub fn limit(&self) -> Limit {
        self.limit
    }

    /// The clock (a test reads its fake time).
    pub fn clock(&self) -> &C {
        &self.clock
    }

    /// Most bytes the next chunk may hold, at most `max`: a small part of a
    /// second's worth, so that no single write is a burst.
    pub fn chunk_len(&mut self, max: usize) -> usize {
        self.recheck();
        match self.limit {
            Limit::Unlimited => max,
            Limit::BytesPerSec(r) => usize::try_from(chunk(r)).unwrap_or(usize::MAX).min(max).max(1),
        }
    }

    /// Spends `n` bytes just written and sleeps until the bucket is out of
    /// debt (in steps of at most [`RECHECK`], so a window that lifts or
    /// raises the limit meanwhile is honoured at once).
    pub fn sent(&mut self, n: u64) {
        self.recheck();
        self.refill();
        if self.limit != Limit::Unlimited {
            self.tokens -= n as f64;
        }
        loop {
            self.recheck();
            let Limit::BytesPerSec(r) = self.limit else { return };
            self.refill();
            if self.tokens >= 0.0 {
                return;
            }
            let owed = Duration::from_secs_f64(-self.tokens / r as f64);
            let next_check = RECHECK.saturating_sub(self.clock.elapsed().saturating_sub(self.checked));
            self.clock.sleep(owed.min(next_check).max(Duration::from_millis(1)));
        }
    }

    /// Asks the schedule again when [`RECHECK`] has passed.
    fn recheck(&mut self) {
        let now = self.clock.elapsed();
        if now.saturating_sub(self.checked) < RECHECK {
            return;
        }
        self.refill();
        self.checked = now;
        let limit = self.schedule.limit_at(self.clock.wall(), &self.tz);
        if limit != self.limit {
            tracing::info!(from = %self.limit, to = %limit, "bandwidth limit changed ({})", self.schedule.describe());
            self.limit = limit;
            self.tokens = 0.0;
        }
    }

    /// Accrues tokens at the limit in force since the last refill.
    fn refill(&mut self) {
        let now = self.clock.elapsed();
        if let Limit::BytesPerSec(r) = self.limit {
            let accrued = r as f64 * now.saturating_sub(self.refilled).as_secs_f64();
            self.tokens = (self.tokens + accrued).min(burst(self.limit));
        }
        self.refilled = now;
    }
}

/// A chunk at rate `r`: 1/16 s worth.
fn chunk(r: u64) -> u64 {
    (r / 16).max(MIN_CHUNK)
}

/// The bucket's size: 1/10 s worth, and at least one chunk.
fn burst(limit: Limit) -> f64 {
    match limit {
        Limit::Unlimited => 0.0,
        Limit::BytesPerSec(r) => (r / 10).max(chunk(r)) as f64,
    }
}

#[cfg(test)]
mod tests;
