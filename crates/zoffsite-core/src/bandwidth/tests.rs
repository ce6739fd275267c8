use super::*;
use jiff::tz::Offset;
use proptest::prelude::*;

const MIB: u64 = 1024 * 1024;

fn at(s: &str) -> Timestamp {
    s.parse().unwrap()
}

fn tod(s: &str) -> TimeOfDay {
    TimeOfDay::parse(s, true).unwrap()
}

fn win(from: &str, to: &str, limit: Limit) -> Window {
    Window { from: tod(from), to: tod(to), limit }
}

fn rate(n: u64) -> Limit {
    Limit::BytesPerSec(n)
}

/// Central Europe, as the POSIX rule (no time zone database needed):
/// forward at 01:00 UTC on the last Sunday of March, back at 01:00 UTC on
/// the last Sunday of October.
fn cet() -> TimeZone {
    TimeZone::posix("CET-1CEST,M3.5.0,M10.5.0/3").unwrap()
}

/// Zones with every kind of wall clock: none, whole-hour DST both sides of
/// UTC, half-hour DST, a fixed odd offset.
fn zones() -> Vec<TimeZone> {
    vec![
        TimeZone::UTC,
        cet(),
        TimeZone::posix("EST5EDT,M3.2.0,M11.1.0").unwrap(),
        TimeZone::posix("<+1030>-10:30<+11>-11,M10.1.0,M4.1.0").unwrap(),
        TimeZone::fixed(Offset::from_seconds(5 * 3600 + 45 * 60).unwrap()),
    ]
}

#[test]
fn rates_in_bytes_and_bits() {
    let cases = [
        ("20Mbit/s", 2_500_000),
        ("20 Mbit/s", 2_500_000),
        ("2.5MiB/s", 2_621_440),
        ("500KiB/s", 512_000),
        ("1MB/s", 1_000_000),
        ("2MiB/s", 2 * MIB),
        ("1.5 KiB/s", 1536),
        ("10MB/s", 10_000_000),
        ("2kB/s", 2000),
        ("2KB/s", 2000),
        ("8 Kibit/s", 1024),
        ("100 kbit/s", 12_500),
        ("1Gbit/s", 125_000_000),
        ("1GiB/s", 1 << 30),
        ("1000000B/s", 1_000_000),
        ("16384bit/s", 2048),
        (" 2MiB/s ", 2 * MIB),
    ];
    for (s, want) in cases {
        assert_eq!(parse_limit(s), Ok(rate(want)), "{s}");
    }
    assert_eq!(parse_limit("unlimited"), Ok(Limit::Unlimited));
}

#[test]
fn bad_rates_name_the_value_and_the_accepted_forms() {
    for bad in [
        "2MiB",
        "fast",
        "-1MiB/s",
        "2 mib/s",
        "20Mb/s",
        "20 mbit/s",
        "20MBps",
        "2 MiB /s",
        "1 0MiB/s",
        ".5MiB/s",
        "1.MiB/s",
        "NaNMiB/s",
        "1e400MiB/s",
        "",
        "/s",
        "MiB/s",
        "2MiB/h",
        "2 MiB/s/s",
        "Unlimited",
        "none",
        "0x10MiB/s",
        "2Mib/s",
        "2kiB/s",
        "2mB/s",
    ] {
        let e = parse_limit(bad).unwrap_err();
        assert!(matches!(e, RateError::Malformed(_)), "{bad:?}: {e:?}");
        let msg = e.to_string();
        assert!(msg.contains(&format!("{bad:?}")) && msg.contains("20Mbit/s") && msg.contains("2MiB/s"), "{msg}");
    }
    for slow in ["10B/s", "1kB/s", "0MiB/s", "8000bit/s", "0.0009MiB/s"] {
        assert_eq!(parse_limit(slow), Err(RateError::TooSlow(slow.into())), "{slow}");
    }
    let e = parse_limit("99999999TiB/s").unwrap_err();
    assert_eq!(e, RateError::TooLarge("99999999TiB/s".into()));
    assert!(e.to_string().contains("unlimited"), "{e}");
    assert!(matches!(parse_limit("99999999999999999999999999999999999MiB/s"), Err(RateError::TooLarge(_))));
}

#[test]
fn limits_display_in_binary_units() {
    assert_eq!(rate(2 * MIB).to_string(), "2 MiB/s");
    assert_eq!(rate(2_500_000).to_string(), "2.4 MiB/s");
    assert_eq!(rate(512_000).to_string(), "500 KiB/s");
    assert_eq!(Limit::Unlimited.to_string(), "unlimited");
    // What is displayed parses back (to within the rounding of one decimal).
    assert_eq!(parse_limit(&rate(3 * MIB).to_string()), Ok(rate(3 * MIB)));
}

#[test]
fn times_of_day_are_exactly_hh_mm() {
    assert_eq!(TimeOfDay::parse("00:00", false).unwrap().minutes(), 0);
    assert_eq!(TimeOfDay::parse("23:59", false).unwrap().minutes(), 1439);
    assert_eq!(TimeOfDay::parse("01:30", false).unwrap().to_string(), "01:30");
    assert_eq!(TimeOfDay::parse("24:00", true).unwrap().minutes(), 0, "a window may end at 24:00 (midnight)");
    assert!(TimeOfDay::parse("24:00", false).is_err(), "but not start there");
    for bad in ["1:00", "25:00", "01:60", "0100", "01:00:00", " 01:00", "01:0a", "１1:00", "-1:00", "24:01", "", "1am"]
    {
        let e = TimeOfDay::parse(bad, true).unwrap_err().to_string();
        assert!(e.contains(&format!("{bad:?}")) && e.contains("HH:MM"), "{e}");
    }
}

#[test]
fn empty_and_overlapping_windows_are_refused() {
    let one = rate(MIB);
    let e = Schedule::new(one, vec![win("01:00", "01:00", Limit::Unlimited)]).unwrap_err();
    assert_eq!(e.index(), 0);
    assert!(e.to_string().contains("empty") && e.to_string().contains("bandwidth_limit"), "{e}");
    let e = Schedule::new(one, vec![win("01:00", "06:00", Limit::Unlimited), win("05:00", "07:00", rate(2 * MIB))])
        .unwrap_err();
    assert_eq!(e.index(), 1);
    assert!(e.to_string().contains("05:00-07:00 overlaps bandwidth_window[0] (01:00-06:00)"), "{e}");
    // Across midnight, both ways.
    for (a, b) in [(("22:00", "02:00"), ("01:00", "03:00")), (("23:00", "01:00"), ("22:00", "23:30"))] {
        let ws = vec![win(a.0, a.1, Limit::Unlimited), win(b.0, b.1, one)];
        assert!(matches!(Schedule::new(one, ws), Err(ScheduleError::Overlap { .. })), "{a:?} {b:?}");
    }
    // One may end where the next begins, midnight included.
    let ok = [
        vec![win("01:00", "06:00", Limit::Unlimited), win("06:00", "07:00", rate(2 * MIB))],
        vec![win("22:00", "02:00", Limit::Unlimited), win("02:00", "03:00", one)],
        vec![win("18:00", "24:00", Limit::Unlimited), win("00:00", "06:00", rate(2 * MIB))],
    ];
    for ws in ok {
        assert!(Schedule::new(one, ws.clone()).is_ok(), "{ws:?}");
    }
}

#[test]
fn the_limit_by_time_of_day_across_midnight() {
    let s = Schedule::new(rate(MIB), vec![win("22:00", "02:00", Limit::Unlimited)]).unwrap();
    let utc = TimeZone::UTC;
    for (t, want) in [
        ("2025-06-01T21:59:59Z", rate(MIB)),
        ("2025-06-01T22:00:00Z", Limit::Unlimited),
        ("2025-06-01T23:59:59Z", Limit::Unlimited),
        ("2025-06-02T00:00:00Z", Limit::Unlimited),
        ("2025-06-02T01:59:59.999Z", Limit::Unlimited),
        ("2025-06-02T02:00:00Z", rate(MIB)),
    ] {
        assert_eq!(s.limit_at(at(t), &utc), want, "{t}");
    }
    // Local time, not UTC: 22:00 in Central European Summer Time is 20:00Z.
    assert_eq!(s.limit_at(at("2025-06-01T20:00:00Z"), &cet()), Limit::Unlimited);
    assert_eq!(s.limit_at(at("2025-06-01T19:59:00Z"), &cet()), rate(MIB));
}

#[test]
fn the_next_change_is_the_next_edge_with_a_different_limit() {
    let s = Schedule::new(
        rate(MIB),
        vec![
            win("01:00", "06:00", Limit::Unlimited),
            win("06:00", "07:00", rate(MIB)),
            win("23:00", "23:30", rate(MIB)),
        ],
    )
    .unwrap();
    let utc = TimeZone::UTC;
    let next = |t: &str| s.next_change(at(t), &utc).map(|c| (c.at.to_string(), c.limit));
    assert_eq!(next("2025-06-01T00:30:00Z"), Some(("2025-06-01T01:00:00Z".into(), Limit::Unlimited)));
    // 06:00 and 23:00 are edges, but the limit stays 1 MiB/s across them.
    assert_eq!(next("2025-06-01T03:00:00Z"), Some(("2025-06-01T06:00:00Z".into(), rate(MIB))));
    assert_eq!(next("2025-06-01T06:00:00Z"), Some(("2025-06-02T01:00:00Z".into(), Limit::Unlimited)));
    assert_eq!(Schedule::constant(rate(MIB)).next_change(at("2025-06-01T00:00:00Z"), &utc), None);
    let same = Schedule::new(rate(MIB), vec![win("01:00", "06:00", rate(MIB))]).unwrap();
    assert_eq!(same.next_change(at("2025-06-01T00:00:00Z"), &utc), None, "a window with the default's limit");
}

#[test]
fn clocks_going_forward_skip_what_is_in_the_skipped_hour() {
    // 2025-03-30 in Central Europe: 02:00 CET is 03:00 CEST (01:00Z).
    let tz = cet();
    let inside = Schedule::new(rate(MIB), vec![win("02:15", "02:45", rate(2 * MIB))]).unwrap();
    let mut t = at("2025-03-29T23:00:00Z");
    while t < at("2025-03-30T04:00:00Z") {
        assert_eq!(inside.limit_at(t, &tz), rate(MIB), "{t}: a window wholly in the skipped hour does not happen");
        t = t.checked_add(SignedDuration::from_secs(60)).unwrap();
    }
    let c = inside.next_change(at("2025-03-29T23:00:00Z"), &tz).unwrap();
    assert_eq!(c.at, at("2025-03-31T00:15:00Z"), "the next night's 02:15 CEST");
    // One that starts in the skipped hour starts at the jump.
    let across = Schedule::new(rate(MIB), vec![win("02:30", "03:30", Limit::Unlimited)]).unwrap();
    let c = across.next_change(at("2025-03-30T00:00:00Z"), &tz).unwrap();
    assert_eq!((c.at, c.limit), (at("2025-03-30T01:00:00Z"), Limit::Unlimited));
    let c = across.next_change(c.at, &tz).unwrap();
    assert_eq!((c.at, c.limit), (at("2025-03-30T01:30:00Z"), rate(MIB)));
}

#[test]
fn clocks_going_back_repeat_the_windows_of_the_repeated_hour() {
    // 2025-10-26 in Central Europe: 03:00 CEST is 02:00 CET (01:00Z).
    let tz = cet();
    let s = Schedule::new(rate(MIB), vec![win("01:00", "02:30", Limit::Unlimited)]).unwrap();
    let mut t = at("2025-10-25T22:00:00Z");
    let mut seen = Vec::new();
    while let Some(c) = s.next_change(t, &tz).filter(|c| c.at < at("2025-10-26T12:00:00Z")) {
        seen.push((c.at.to_string(), c.limit));
        t = c.at;
    }
    let want = [
        ("2025-10-25T23:00:00Z", Limit::Unlimited), // 01:00 CEST
        ("2025-10-26T00:30:00Z", rate(MIB)),        // 02:30 CEST
        ("2025-10-26T01:00:00Z", Limit::Unlimited), // 02:00 CET, the clock goes back
        ("2025-10-26T01:30:00Z", rate(MIB)),        // 02:30 CET
    ];
    assert_eq!(seen, want.map(|(t, l)| (t.to_owned(), l)));
}

#[test]
fn the_ends_of_time_do_not_panic() {
    let s =
        Schedule::new(rate(MIB), vec![win("23:00", "01:00", Limit::Unlimited), win("02:00", "02:30", rate(2 * MIB))])
            .unwrap();
    let edge = SignedDuration::from_hours(30);
    for tz in zones() {
        for t in [
            Timestamp::MIN,
            Timestamp::MIN.checked_add(edge).unwrap(),
            Timestamp::MAX.checked_sub(edge).unwrap(),
            Timestamp::MAX,
            Timestamp::UNIX_EPOCH,
        ] {
            let now = s.limit_at(t, &tz);
            if let Some(c) = s.next_change(t, &tz) {
                assert!(c.at > t && c.limit != now);
            }
        }
    }
}

#[test]
fn describe_says_it_in_words() {
    assert_eq!(Schedule::default().describe(), "unlimited");
    assert_eq!(Schedule::constant(rate(2 * MIB)).describe(), "2 MiB/s");
    let s = Schedule::new(
        rate(MIB),
        vec![
            win("22:30", "02:00", rate(4 * MIB)),
            win("18:00", "22:00", rate(512 * 1024)),
            win("02:00", "06:00", Limit::Unlimited),
        ],
    )
    .unwrap();
    assert_eq!(
        s.describe(),
        "1 MiB/s, except unlimited from 02:00 to 06:00, and 512 KiB/s from 18:00 to 22:00, and 4 MiB/s from 22:30 to \
         02:00 the next day (the source's local time)"
    );
    let s = Schedule::new(Limit::Unlimited, vec![win("08:00", "24:00", rate(MIB))]).unwrap();
    assert_eq!(s.describe(), "unlimited, except 1 MiB/s from 08:00 to midnight (the source's local time)");
    assert!(!s.is_unlimited() && Schedule::default().is_unlimited());
}

// ---- properties ----

fn any_limit() -> impl Strategy<Value = Limit> {
    prop_oneof![Just(Limit::Unlimited), Just(rate(MIN_RATE)), Just(rate(MIB)), Just(rate(2 * MIB))]
}

/// Valid schedules: windows between consecutive points of a sorted set
/// (some adjacent, the last one maybe wrapping to the first point), turned
/// around the clock so that any of them may cross midnight.
fn any_schedule() -> impl Strategy<Value = Schedule> {
    (
        proptest::collection::btree_set(0..MINUTES_PER_DAY, 2..10),
        proptest::collection::vec((any::<bool>(), any_limit()), 10),
        0..MINUTES_PER_DAY,
        any_limit(),
    )
        .prop_map(|(points, picks, turn, default)| {
            let p: Vec<u16> = points.into_iter().collect();
            let mut windows = Vec::new();
            for (i, (take, limit)) in picks.into_iter().enumerate().take(p.len()) {
                let (from, to) = (p[i], p[(i + 1) % p.len()]);
                if take && from != to {
                    let t = |m: u16| TimeOfDay((m + turn) % MINUTES_PER_DAY);
                    windows.push(Window { from: t(from), to: t(to), limit });
                }
            }
            Schedule::new(default, windows).expect("disjoint by construction")
        })
}

/// Instants from 1900 to 2200, to the nanosecond.
fn any_instant() -> impl Strategy<Value = Timestamp> {
    (-2_208_988_800_i64..7_258_118_400, 0..1_000_000_000_i32)
        .prop_map(|(s, ns)| Timestamp::new(s, ns).expect("in range"))
}

/// Instants within a day and a bit of one of the zone's transitions (when
/// it has any), where the wall clock jumps: the hard cases.
fn near_transition(tz: &TimeZone, year: i16, which: usize, secs: i64) -> Timestamp {
    let start =
        jiff::civil::date(year, 1, 1).to_datetime(Time::midnight()).to_zoned(TimeZone::UTC).unwrap().timestamp();
    let base = tz.following(start).nth(which).map_or(start, |tr| tr.timestamp());
    base.checked_add(SignedDuration::from_secs(secs)).unwrap()
}

fn is_transition(tz: &TimeZone, at: Timestamp) -> bool {
    tz.preceding(at.checked_add(SignedDuration::from_nanos(1)).unwrap()).next().is_some_and(|tr| tr.timestamp() == at)
}

/// What both `next_change` properties check: the limit at `t` holds, probed
/// every 59 s, up to the change `next_change` names (or the horizon), and
/// that change is later than `t`, different, and only just: an instant
/// before it the old limit still holds. Returns the change.
fn limit_holds_until_next_change(s: &Schedule, t: Timestamp, tz: &TimeZone) -> Result<Option<Change>, TestCaseError> {
    let now = s.limit_at(t, tz);
    let change = s.next_change(t, tz);
    let end = change.map_or(t.checked_add(NEXT_CHANGE_HORIZON).unwrap(), |c| c.at);
    let mut probe = t;
    while probe < end {
        prop_assert_eq!(s.limit_at(probe, tz), now, "at {} (from {}, change {:?})", probe, t, change);
        probe = probe.checked_add(SignedDuration::from_secs(59)).unwrap();
    }
    if let Some(c) = change {
        prop_assert!(c.at > t && c.limit != now);
        prop_assert_eq!(s.limit_at(c.at.checked_sub(SignedDuration::from_nanos(1)).unwrap(), tz), now);
    }
    Ok(change)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// The limit holds from `t` up to the change `next_change` names, which
    /// is a real change; with none, it holds for the whole horizon.
    #[test]
    fn next_change_is_the_first_change(s in any_schedule(), t in any_instant(), zone in 0..5_usize) {
        let tz = &zones()[zone];
        if let Some(c) = limit_holds_until_next_change(&s, t, tz)? {
            prop_assert_eq!(s.limit_at(c.at, tz), c.limit);
        }
    }

    /// The same, near the jumps of the wall clock.
    #[test]
    fn next_change_is_the_first_change_near_transitions(
        s in any_schedule(),
        year in 1971_i16..2100,
        which in 0..2_usize,
        secs in -30 * 3600_i64..30 * 3600,
        zone in 1..4_usize,
    ) {
        let tz = &zones()[zone];
        let t = near_transition(tz, year, which, secs);
        limit_holds_until_next_change(&s, t, tz)?;
    }

    /// The limit changes only where the wall clock shows a window's edge, or
    /// at a transition of the zone (the clock jumps).
    #[test]
    fn changes_happen_only_at_edges_or_transitions(s in any_schedule(), t in any_instant(), zone in 0..5_usize) {
        let tz = &zones()[zone];
        if let Some(c) = s.next_change(t, tz) {
            let wall = tz.to_datetime(c.at);
            let on_edge = wall.second() == 0
                && wall.subsec_nanosecond() == 0
                && s.windows().iter().any(|w| [w.from, w.to].contains(&TimeOfDay::of(wall.time())));
            prop_assert!(on_edge || is_transition(tz, c.at), "{} ({}) is neither", c.at, wall);
        }
    }

    /// `Schedule::new` accepts exactly the windows no minute of the day
    /// falls in twice.
    #[test]
    fn overlap_is_a_shared_minute(ws in proptest::collection::vec((0..MINUTES_PER_DAY, 0..MINUTES_PER_DAY), 0..5)) {
        let windows: Vec<Window> =
            ws.iter().map(|&(f, t)| Window { from: TimeOfDay(f), to: TimeOfDay(t), limit: Limit::Unlimited }).collect();
        let empty = windows.iter().any(|w| w.from == w.to);
        let shared = (0..MINUTES_PER_DAY).any(|m| windows.iter().filter(|w| w.contains(TimeOfDay(m))).count() > 1);
        match Schedule::new(rate(MIB), windows.clone()) {
            Ok(s) => {
                prop_assert!(!empty && !shared);
                for m in 0..MINUTES_PER_DAY {
                    let want = windows.iter().find(|w| w.contains(TimeOfDay(m))).map_or(rate(MIB), |w| w.limit);
                    prop_assert_eq!(s.limit_at_time(TimeOfDay(m)), want);
                }
            }
            Err(ScheduleError::Empty { .. }) => prop_assert!(empty),
            Err(ScheduleError::Overlap { .. }) => prop_assert!(shared),
        }
    }

    /// A rate written in any unit reads back as the same number of bytes.
    #[test]
    fn rates_read_back(n in 2_u64..1_000_000, unit in 0..6_usize, space in any::<bool>()) {
        let (u, mult, div) = [("KiB", 1024, 1), ("MiB", 1 << 20, 1), ("kB", 1000, 1), ("MB", 1_000_000, 1), ("Mbit", 1_000_000, 8), ("Kibit", 1024, 8)][unit];
        let text = format!("{n}{}{u}/s", if space { " " } else { "" });
        let want = (n * mult).div_ceil(div);
        prop_assert_eq!(parse_limit(&text), if want < MIN_RATE { Err(RateError::TooSlow(text.clone())) } else { Ok(rate(want)) });
    }
}
