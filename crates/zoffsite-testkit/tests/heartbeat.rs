//! Heartbeats, in-process: whole backup runs (`replicate::backup`) and
//! hand-made sessions (a compromised source) against real `Server`s on fake
//! machines, with the clocks of both sides played forward day by day, and
//! then what `status` and `box check` decide from what the runs left (the
//! same gathering and the same pure decisions as the commands).
//!
//! What they show: a run that finds nothing changed refreshes the box's
//! heartbeat and the source's confirmation, so neither side calls an
//! unchanged dataset stale; an honest source sends new data at least every
//! six days anyway; a source that only checks in is reported once
//! `max_age + heartbeat_grace` has passed since its last new data, however
//! often it checks in; and a dataset whose sends fail gets no heartbeat.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use zoffsite_core::boxside::{self, CheckInput, DatasetState, Finding, DEFAULT_HEARTBEAT_GRACE, HEARTBEAT_PROPERTY};
use zoffsite_core::config::{Config, Target};
use zoffsite_core::journal::Journal;
use zoffsite_core::protocol::HeartbeatDataset;
use zoffsite_core::report::{BackupReport, DatasetStatus as SendStatus};
use zoffsite_core::status::{self, State};
use zoffsite_exec::boxstate;
use zoffsite_exec::events::Recorded;
use zoffsite_exec::proto::client::Heard;
use zoffsite_exec::replicate::{self, backup, Connect, Options};
use zoffsite_exec::zfs::Zfs;
use zoffsite_testkit::FakeZfs;

const DS: &str = "tank/data";
const DAY: i64 = 86_400;
/// 2026-01-01T00:00:00Z: where both clocks start.
const T0: i64 = 1_767_225_600;
/// The box's `max_age` (box.toml's default).
const BOX_MAX_AGE: Duration = Duration::from_secs(48 * 3600);
/// How old a heartbeat the box's `serve` writes again, as box.toml's
/// default `max_age` makes it (6 h).
const REFRESH: Duration = BOX_MAX_AGE.checked_div(8).unwrap();

/// A source and one box ("friend"), each with a clock the test moves.
struct World {
    src: FakeZfs,
    the_box: Arc<BoxSide>,
    /// The box's clock, as its `serve` reads it.
    box_clock: Arc<AtomicI64>,
    /// Both sides' time now.
    now: i64,
}

impl World {
    fn new() -> World {
        let src = source();
        src.world(|w| w.clock = Some(T0));
        World { src, the_box: Arc::new(BoxSide::new("offsite/home")), box_clock: Arc::new(AtomicI64::new(T0)), now: T0 }
    }

    /// Moves both clocks on.
    fn wait(&mut self, secs: i64) {
        self.now += secs;
        self.src.world(|w| w.clock = Some(self.now));
        self.box_clock.store(self.now, Ordering::SeqCst);
    }

    fn config(&self) -> Config {
        Config::parse(&format!(
            "[source]\ndatasets = [\"{DS}\"]\n[[target]]\nname = \"friend\"\nhost = \"10.77.0.2\"\nuser = \"root\"\nidentity_file = \"/nonexistent/id\"\nknown_hosts = \"/nonexistent/kh\"\n"
        ))
        .unwrap()
    }

    /// A session to the box, its `serve` on the box's clock.
    fn session(&self) -> zoffsite_exec::proto::client::Session {
        let clock = self.box_clock.clone();
        self.the_box
            .connect_with(move |srv| {
                srv.with_clock(Arc::new(move || clock.load(Ordering::SeqCst))).with_heartbeat_refresh(REFRESH)
            })
            .0
    }

    /// One `zoffsite backup` run, now.
    fn run(&self) -> (BackupReport, Recorded) {
        let (b, clock) = (self.the_box.clone(), self.box_clock.clone());
        let connect: Arc<Connect> = Arc::new(move |_t: &Target| {
            let clock = clock.clone();
            Ok(b.connect_with(move |srv| {
                srv.with_clock(Arc::new(move || clock.load(Ordering::SeqCst))).with_heartbeat_refresh(REFRESH)
            })
            .0)
        });
        let opts = Options {
            dry_run: false,
            force_snapshot: false,
            config_path: Path::new("/etc/zoffsite/test.toml"),
            now: jiff::Timestamp::from_second(self.now).unwrap(),
            connect,
        };
        let mut ev = Recorded::default();
        let report = backup(&self.config(), &Zfs::with_binary(self.src.path()), &opts, &mut ev);
        (report, ev)
    }

    /// What `status` decides for the dataset now (the target's default
    /// `max_age`, 26 h), with the runs' confirmations and without them.
    fn status(&self) -> (status::DatasetStatus, State) {
        let zfs = Zfs::with_binary(self.src.path());
        let ds = [ds(DS)];
        let l = zfs.list_snapshots_and_bookmarks(&ds).unwrap();
        let mut s = self.session();
        let remote = s.list(&ds).unwrap();
        s.close();
        let max_age = i64::try_from(self.config().targets[0].max_age.as_secs()).unwrap();
        let confirmed = replicate::confirmations(&zfs, "friend", &ds, &l.snapshots, &remote).unwrap();
        let with =
            status::evaluate(&ds[0], &l.snapshots, &l.bookmarks, remote.get(&ds[0]), &confirmed, self.now, max_age);
        let without = status::evaluate(
            &ds[0],
            &l.snapshots,
            &l.bookmarks,
            remote.get(&ds[0]),
            &BTreeMap::new(),
            self.now,
            max_age,
        );
        (with, without.state)
    }

    /// What `box check` decides now, from what the box holds (no txg
    /// journal yet, a healthy pool), with box.toml's defaults.
    fn box_check(&self) -> (Vec<Finding>, Vec<DatasetState>) {
        let zfs = self.the_box.zfs();
        let root = &self.the_box.root;
        let (snaps, _) = boxstate::list_timed(&zfs, root).unwrap();
        let mut ev = Recorded::default();
        let heartbeats = boxstate::heartbeats(&zfs, root, &mut ev).unwrap();
        assert!(ev.warnings.is_empty(), "{:?}", ev.warnings);
        let journal = Journal::new(0, root.clone());
        let input = CheckInput {
            root,
            max_age: BOX_MAX_AGE,
            heartbeat_grace: DEFAULT_HEARTBEAT_GRACE,
            heartbeats: &heartbeats,
            snaps: Some(&snaps),
            partials: &[],
            pool_health: Some("ONLINE"),
            lastrun: None,
            journal: &journal,
            now: jiff::Timestamp::from_second(self.now).unwrap(),
        };
        (boxside::check(&input), boxside::dataset_states(&input))
    }

    fn box_heartbeat(&self, name: &str) -> Option<i64> {
        self.the_box.fake.local(name, HEARTBEAT_PROPERTY).map(|v| v.parse().unwrap())
    }

    /// The source's newest snapshot of DS.
    fn newest(&self) -> String {
        format!("{DS}@{}", self.src.snapshot_names(DS).last().unwrap())
    }
}

fn stale(f: &[Finding]) -> bool {
    f.iter().any(|f| matches!(f, Finding::Stale { .. }))
}

#[test]
fn a_run_that_finds_nothing_changed_keeps_status_and_box_check_from_calling_it_stale() {
    let _one = serial();
    let mut w = World::new();
    let (r, ev) = w.run();
    assert_eq!(r.targets[0].datasets[0].status, SendStatus::Ok, "{:?}", ev.errors);
    assert_eq!(r.targets[0].heartbeat, Some(1), "the box recorded the first run's heartbeat");
    let first = w.newest();
    let confirmed = status::confirmed_property("friend");
    assert_eq!(w.src.local(&first, &confirmed), Some(T0.to_string()), "the run's date, on its first snapshot");
    assert_eq!(w.box_heartbeat(&w.the_box.at(DS)), Some(T0));
    assert_eq!(w.box_heartbeat("offsite/home"), Some(T0));

    // A day later nothing has changed: no snapshot, nothing sent, but the
    // box hears of it and the source records it.
    w.wait(DAY);
    let (r, ev) = w.run();
    assert_eq!(r.snapshot, None, "nothing changed: no snapshot");
    assert!(ev.errors.is_empty() && ev.warnings.is_empty(), "{:?} {:?}", ev.errors, ev.warnings);
    assert_eq!(r.targets[0].heartbeat, Some(1));
    assert_eq!(w.newest(), first);
    assert_eq!(w.src.local(&first, &confirmed), Some((T0 + DAY).to_string()));
    assert_eq!(w.box_heartbeat(&w.the_box.at(DS)), Some(T0 + DAY), "the no-change run refreshed the heartbeat");

    // 25 h after that (49 h after the data was taken): status counts from
    // the last run, not from the snapshot.
    w.wait(25 * 3600);
    let (st, without) = w.status();
    assert_eq!((st.state, st.confirmed, st.age), (State::Current, Some(T0 + DAY), Some(DAY + 25 * 3600)));
    assert_eq!(without, State::Stale, "what status said before runs recorded confirmations");
    // The box: nothing new for 49 h (over max_age), but the source checked
    // in 25 h ago.
    let (f, d) = w.box_check();
    assert_eq!(f, [], "{f:?}");
    assert!(d[0].excused && !d[0].stale, "{d:?}");
    assert_eq!((d[0].received, d[0].heartbeat), (Some(T0), Some(T0 + DAY)));

    // No run for 2 more days: both sides say so.
    w.wait(2 * DAY);
    assert_eq!(w.status().0.state, State::Stale);
    let (f, _) = w.box_check();
    assert!(stale(&f), "{f:?}");
    assert!(f[0].to_string().contains("(the source last checked in for it 3d 1h ago)"), "{}", f[0]);
}

#[test]
fn hourly_runs_that_find_nothing_changed_write_only_every_few_hours_and_nobody_alarms() {
    let _one = serial();
    let mut w = World::new();
    // A second dataset (under the first, so the same config selects it):
    // the first confirmed snapshot is written every run (it dates the
    // target's last backup run), the others only when due.
    let child = format!("{DS}/b");
    w.src.create(&child, true).write(&child, 1000);
    w.run();
    let child_box = w.the_box.at(&child);
    let (mut src_writes, mut box_writes) = (Vec::new(), Vec::new());
    // Three days of hourly runs, nothing changing: status (max_age 26h)
    // and box check (48h; the data is older than that from hour 48, and
    // only the heartbeats keep it quiet) are asked just before each run.
    for hour in 1..=72 {
        w.wait(3600);
        let (st, _) = w.status();
        assert_eq!(st.state, State::Current, "hour {hour}: {st:?}");
        let (f, d) = w.box_check();
        assert_eq!(f, [], "hour {hour}: {f:?}");
        assert!(d.iter().all(|d| d.excused == (hour > 48)), "hour {hour}: {d:?}");
        w.src.clear_log();
        w.the_box.fake.clear_log();
        let (r, ev) = w.run();
        assert!(ev.errors.is_empty() && ev.warnings.is_empty(), "hour {hour}: {:?} {:?}", ev.errors, ev.warnings);
        assert_eq!((r.snapshot.is_none(), r.targets[0].heartbeat), (true, Some(2)), "hour {hour}");
        let src_sets: Vec<String> = w.src.log().lines().filter(|l| l.starts_with("set ")).map(str::to_owned).collect();
        assert!(src_sets.iter().any(|l| l.contains(&format!("{DS}@"))), "hour {hour}: the run's date, every run");
        if src_sets.iter().any(|l| l.contains(&format!("{child}@"))) {
            src_writes.push(hour);
        }
        // The box writes its root's heartbeat (the last check-in) every
        // run; a dataset's only when due.
        if w.the_box.fake.log().lines().any(|l| l.starts_with("set ") && l.contains(&child_box)) {
            box_writes.push(hour);
        }
        assert_eq!(w.box_heartbeat("offsite/home"), Some(w.now), "hour {hour}");
    }
    // The source's refresh is 26h / 8 = 3h15m, so every 4th run writes
    // (the first when the snapshot itself is 4h old); the box's 6h.
    assert_eq!(src_writes, (1..=18).map(|i| 4 * i).collect::<Vec<_>>());
    assert_eq!(box_writes, (1..=12).map(|i| 6 * i).collect::<Vec<_>>());
    // Runs stop: status counts from the last run's date (written on the
    // first dataset every run), box check from the heartbeats.
    let last = w.now;
    w.wait(26 * 3600);
    assert_eq!(w.status().0.state, State::Current, "26h after the last run");
    w.wait(1);
    let (st, _) = w.status();
    assert_eq!((st.state, st.confirmed), (State::Stale, Some(last)));
}

#[test]
fn an_honest_source_sends_new_data_at_least_every_six_days_and_box_check_stays_quiet() {
    let _one = serial();
    let mut w = World::new();
    w.run();
    let first = w.newest();
    // Daily runs, nothing ever changes. Check the box each day, just
    // before the run.
    for day in 1..=20 {
        w.wait(DAY);
        let (f, _) = w.box_check();
        assert_eq!(f, [], "day {day}: {f:?}");
        let (r, ev) = w.run();
        assert!(ev.errors.is_empty(), "day {day}: {:?}", ev.errors);
        if day % 6 == 0 {
            assert!(r.snapshot.is_some(), "day {day}: a fresh snapshot of the unchanged dataset");
            assert_eq!(r.targets[0].datasets[0].status, SendStatus::Ok);
        } else {
            assert_eq!(r.snapshot, None, "day {day}");
        }
        assert_eq!(w.status().0.state, State::Current, "day {day}");
    }
    assert_ne!(w.newest(), first);
    assert_eq!(w.the_box.fake.snapshots(&w.the_box.at(DS)).len(), 4, "the first and days 6, 12, 18");
}

#[test]
fn a_source_that_only_checks_in_is_reported_once_max_age_plus_the_grace_has_passed() {
    let _one = serial();
    let mut w = World::new();
    w.run();
    let newest = w.the_box.fake.guid(&w.the_box.at(&w.newest())).unwrap();
    // A compromised (or broken) source: every 6 hours, a session that
    // lists and sends a heartbeat naming exactly what the box holds, and
    // never anything new.
    let beat = [HeartbeatDataset { name: ds(DS), guid: guid(newest) }];
    let bound = T0 + i64::try_from((BOX_MAX_AGE + DEFAULT_HEARTBEAT_GRACE).as_secs()).unwrap();
    let mut last_quiet = None;
    while w.now < bound + 2 * DAY {
        w.wait(6 * 3600);
        let mut s = w.session();
        s.list(&[ds(DS)]).unwrap();
        assert_eq!(s.heartbeat(&beat).unwrap(), Heard::Recorded(1));
        s.close();
        let (f, d) = w.box_check();
        assert_eq!(d[0].alarm_at_latest, Some(bound));
        if stale(&f) {
            assert!(w.now > bound, "stale before the bound at {}", w.now - T0);
            let msg = f[0].to_string();
            assert!(msg.contains("although the source checks in (last 0s ago)") && msg.contains("(9d)"), "{msg}");
        } else {
            assert!(w.now <= bound, "quiet past the bound at {}", w.now - T0);
            last_quiet = Some(w.now);
        }
    }
    assert_eq!(last_quiet, Some(bound), "quiet exactly up to arrival + max_age + heartbeat_grace");
}

#[test]
fn a_dataset_whose_sends_fail_gets_no_heartbeat_and_alarms_as_before() {
    let _one = serial();
    let mut w = World::new();
    w.run();
    // The source's key changes: the box refuses every later stream of it
    // (the pin), so the runs confirm nothing for it.
    w.src.change_key(DS).write(DS, 1000);
    for _ in 0..3 {
        w.wait(DAY);
        let (r, _) = w.run();
        assert_eq!(r.targets[0].datasets[0].status, SendStatus::Failed);
        assert_eq!(r.targets[0].heartbeat, Some(0), "the root heard from the source; the dataset did not");
    }
    assert_eq!(w.box_heartbeat("offsite/home"), Some(T0 + 3 * DAY));
    assert_eq!(w.box_heartbeat(&w.the_box.at(DS)), Some(T0), "only the first run's");
    let (f, _) = w.box_check();
    assert!(stale(&f), "{f:?}");
    let (st, _) = w.status();
    assert_eq!(st.state, State::Stale, "the source's record stopped at the first run too");
}
