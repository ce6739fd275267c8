use std::cell::Cell;
use std::rc::Rc;

use zoffsite_core::bandwidth::{TimeOfDay, Window};

use super::*;

const MIB: u64 = 1 << 20;
/// The session's largest chunk.
const MAX_CHUNK: usize = 1 << 20;

/// Fake time: sleeping moves it on, and so does writing (at the line's
/// speed); the wall clock runs with it from `wall0`.
#[derive(Clone)]
struct Fake {
    now: Rc<Cell<Duration>>,
    wall0: Timestamp,
}

impl Fake {
    fn at(wall0: &str) -> Fake {
        Fake { now: Rc::new(Cell::new(Duration::ZERO)), wall0: wall0.parse().unwrap() }
    }

    fn advance(&self, d: Duration) {
        self.now.set(self.now.get() + d);
    }
}

impl Clock for Fake {
    fn elapsed(&self) -> Duration {
        self.now.get()
    }
    fn wall(&self) -> Timestamp {
        self.wall0.checked_add(self.now.get()).unwrap()
    }
    fn sleep(&mut self, d: Duration) {
        self.advance(d);
    }
}

fn rate(n: u64) -> Limit {
    Limit::BytesPerSec(n)
}

fn window(from: (u8, u8), to: (u8, u8), limit: Limit) -> Window {
    Window { from: TimeOfDay::new(from.0, from.1).unwrap(), to: TimeOfDay::new(to.0, to.1).unwrap(), limit }
}

/// When each write started, and its bytes.
type Log = Vec<(Duration, u64)>;

/// Streams through `pacer` on a line of `line` bytes per second until the
/// fake clock reaches `until`, the producer pausing for `pause` after every
/// `pause_every` chunks (zfs send is not always ready).
fn stream(pacer: &mut Pacer<Fake>, line: u64, until: Duration, pause_every: usize, pause: Duration) -> Log {
    let clock = pacer.clock().clone();
    let mut log = Log::new();
    while clock.elapsed() < until {
        if pause_every > 0 && log.len() % pause_every == pause_every - 1 {
            clock.advance(pause);
        }
        let n = pacer.chunk_len(MAX_CHUNK) as u64;
        log.push((clock.elapsed(), n));
        clock.advance(Duration::from_secs_f64(n as f64 / line as f64));
        pacer.sent(n);
    }
    log
}

/// Bytes written in `[from, to)`.
fn bytes_in(log: &Log, from: Duration, to: Duration) -> u64 {
    log.iter().filter(|(t, _)| *t >= from && *t < to).map(|(_, n)| n).sum()
}

/// The most bytes written in any 1 s that starts in `[from, to - 1 s]`
/// (the busiest such second starts with a write).
fn busiest_second(log: &Log, from: Duration, to: Duration) -> u64 {
    let second = Duration::from_secs(1);
    log.iter()
        .filter(|(t, _)| *t >= from && *t + second <= to)
        .map(|(t, _)| bytes_in(log, *t, *t + second))
        .max()
        .unwrap_or(0)
}

fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s)
}

#[test]
fn never_more_than_a_fifth_over_the_limit_in_any_second_and_the_limit_on_average() {
    for r in [1024, 3000, 128 * 1024, MIB, 2_500_000, 50 * MIB] {
        for line in [r + r / 2, 10 * r, 1000 * r] {
            for (every, pause) in [(0, Duration::ZERO), (7, secs(2.5))] {
                let mut p = Pacer::new(Schedule::constant(rate(r)), TimeZone::UTC, Fake::at("2025-06-01T12:00:00Z"));
                let end = secs(20.0);
                let log = stream(&mut p, line, end, every, pause);
                let what = format!("{r} B/s on a line of {line} B/s, pausing {pause:?} every {every} chunks");
                let busiest = busiest_second(&log, Duration::ZERO, end);
                assert!(busiest as f64 <= 1.2 * r as f64, "{what}: {busiest} bytes in one second");
                if every == 0 {
                    let average = bytes_in(&log, Duration::ZERO, end) as f64 / end.as_secs_f64();
                    assert!(average >= 0.97 * r as f64, "{what}: {average} B/s on average is not honest either");
                }
            }
        }
    }
}

#[test]
fn chunks_are_a_small_part_of_a_second() {
    let mut p = Pacer::new(Schedule::constant(rate(MIB)), TimeZone::UTC, Fake::at("2025-06-01T12:00:00Z"));
    assert_eq!(p.chunk_len(MAX_CHUNK), 64 * 1024);
    assert_eq!(p.chunk_len(1000), 1000, "never more than the caller's");
    let mut p = Pacer::new(Schedule::constant(rate(1024)), TimeZone::UTC, Fake::at("2025-06-01T12:00:00Z"));
    assert_eq!(p.chunk_len(MAX_CHUNK), 64);
    let mut p = Pacer::new(Schedule::default(), TimeZone::UTC, Fake::at("2025-06-01T12:00:00Z"));
    assert_eq!(p.chunk_len(MAX_CHUNK), MAX_CHUNK);
    assert_eq!(p.clock().elapsed(), Duration::ZERO);
    p.sent(10 * MIB);
    assert_eq!(p.clock().elapsed(), Duration::ZERO, "unlimited: no sleep");
}

#[test]
fn a_window_opening_mid_transfer_raises_the_rate_at_its_edge() {
    // 1 MiB/s by day, 8 MiB/s from 01:00: the stream starts at 00:59:30.
    let s = Schedule::new(rate(MIB), vec![window((1, 0), (6, 0), rate(8 * MIB))]).unwrap();
    let mut p = Pacer::new(s, TimeZone::UTC, Fake::at("2025-06-01T00:59:30Z"));
    let log = stream(&mut p, 100 * MIB, secs(60.0), 0, Duration::ZERO);
    let before = bytes_in(&log, Duration::ZERO, secs(30.0)) as f64 / 30.0;
    assert!((0.97..=1.03).contains(&(before / MIB as f64)), "{before} B/s before 01:00");
    assert!(busiest_second(&log, Duration::ZERO, secs(30.0)) as f64 <= 1.2 * MIB as f64);
    // Within RECHECK of the edge, at the new rate.
    let after = bytes_in(&log, secs(30.0) + RECHECK, secs(60.0)) as f64 / (30.0 - RECHECK.as_secs_f64());
    assert!((0.97..=1.03).contains(&(after / (8 * MIB) as f64)), "{after} B/s after 01:00");
    assert!(busiest_second(&log, secs(30.0), secs(60.0)) as f64 <= 1.2 * (8 * MIB) as f64);
    assert_eq!(p.limit(), rate(8 * MIB));
}

#[test]
fn an_unlimited_window_closing_mid_transfer_brings_the_limit_back_at_its_edge() {
    // Full speed until 06:00 local time (Central European Summer Time,
    // 04:00Z), 1 MiB/s after: the stream starts at 05:59:50.
    let tz = TimeZone::posix("CET-1CEST,M3.5.0,M10.5.0/3").unwrap();
    let s = Schedule::new(rate(MIB), vec![window((1, 0), (6, 0), Limit::Unlimited)]).unwrap();
    let mut p = Pacer::new(s, tz, Fake::at("2025-06-01T03:59:50Z"));
    assert_eq!(p.limit(), Limit::Unlimited);
    let line = 100 * MIB;
    let log = stream(&mut p, line, secs(40.0), 0, Duration::ZERO);
    let before = bytes_in(&log, Duration::ZERO, secs(10.0)) as f64 / 10.0;
    assert!(before >= 0.97 * line as f64, "{before} B/s: the line's speed before 06:00");
    assert!(bytes_in(&log, secs(10.0) + RECHECK, secs(40.0)) as f64 <= 1.03 * (30 * MIB) as f64);
    let busiest = busiest_second(&log, secs(10.0) + RECHECK, secs(40.0));
    assert!(busiest as f64 <= 1.2 * MIB as f64, "{busiest} bytes in one second after 06:00");
    assert_eq!(p.limit(), rate(MIB));
}

#[test]
fn a_long_sleep_is_cut_short_when_a_window_lifts_the_limit() {
    // At 1 KiB/s, a chunk owed for long would hold a lifted limit back; the
    // pacer asks again at least every RECHECK, sleeping or not.
    let s = Schedule::new(rate(1024), vec![window((1, 0), (6, 0), Limit::Unlimited)]).unwrap();
    let mut p = Pacer::new(s, TimeZone::UTC, Fake::at("2025-06-01T00:59:59.5Z"));
    p.sent(1 << 20); // a megabyte owed at 1 KiB/s: 17 minutes
    assert!(p.clock().elapsed() <= RECHECK + secs(0.01), "slept {:?}", p.clock().elapsed());
    assert_eq!(p.limit(), Limit::Unlimited);
}
