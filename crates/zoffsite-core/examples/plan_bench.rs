//! Planner benchmark: the pure planning work of one `zoffsite backup` over a
//! large synthetic inventory, with no ZFS, no box and no I/O.
//!
//! Inventory: 1,000 encrypted datasets (`tank/data` and 999 children) with
//! 100 hourly `zoffsite-` snapshots each (100,000 snapshots). The box holds
//! about 95% of them: most datasets are 5 snapshots behind (an incremental
//! with 4 intermediates), every 100th is absent on the box (a full send) and
//! every 100th (offset 50) is up to date. Each dataset carries the target's
//! hold on the box's newest snapshot, as `backup` leaves it.
//!
//! Timed, as `backup` does it: `plan::select` over the listing, grouping the
//! snapshots by dataset, `plan::plan_send` for every included dataset, and
//! `plan::prune_source` with `last = 24, daily = 7` over all 100,000
//! snapshots. Building the inventory is not timed.
//!
//! Output: `key=value` lines on stdout (read by `scripts/bench`):
//! `elapsed_ms` (median of the timed iterations), `elapsed_ms_min`,
//! `elapsed_ms_max`, `select_send_ms` and `prune_ms` (medians of the two
//! parts), `items` (snapshots planned over), `datasets`, `sends`
//! (full/incremental/up_to_date counts), `prune_destroy`, `input_rss_kib`
//! (resident set after building the inventory) and `peak_rss_kib` (VmHWM at
//! the end; `scripts/bench` also measures it from outside with
//! `/usr/bin/time -v`).
//!
//! Run: `cargo run --release -p zoffsite-core --example plan_bench [ITERATIONS]`

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use zoffsite_core::config::Source;
use zoffsite_core::names::{Dataset, Guid, SnapName, Snapshot};
use zoffsite_core::parse::{DatasetRow, Encryption, HoldRow, SnapshotRow};
use zoffsite_core::plan::{self, Send};
use zoffsite_core::protocol::{RemoteDataset, RemoteSnapshot};
use zoffsite_core::retention::KeepPolicy;

const DATASETS: usize = 1_000;
const SNAPS_PER_DATASET: usize = 100;
/// How many of each dataset's snapshots the box is missing (most datasets).
const BEHIND: usize = 5;
/// 2026-01-01T00:00:00Z.
const START: i64 = 1_767_225_600;
const HOUR: i64 = 3_600;

struct Inventory {
    source: Source,
    listed: Vec<DatasetRow>,
    snaps: Vec<SnapshotRow>,
    remote: BTreeMap<Dataset, RemoteDataset>,
    holds: Vec<HoldRow>,
    box_root: Dataset,
    now: jiff::Timestamp,
}

fn name(i: usize) -> String {
    if i == 0 {
        "tank/data".to_owned()
    } else {
        format!("tank/data/d{i:04}")
    }
}

fn snap_name(j: usize) -> SnapName {
    let t = jiff::Timestamp::from_second(START + i64::try_from(j).unwrap() * HOUR).expect("in range");
    SnapName::new(format!("{}{}", plan::SNAPSHOT_PREFIX, t.strftime("%Y%m%dT%H%M%SZ"))).expect("valid")
}

fn guid(i: usize, j: usize) -> Guid {
    Guid::new((i * SNAPS_PER_DATASET + j + 1) as u64 * 0x9E37_79B9).expect("non-zero")
}

fn build() -> Inventory {
    let names: Vec<SnapName> = (0..SNAPS_PER_DATASET).map(snap_name).collect();
    let mut listed = Vec::with_capacity(DATASETS);
    let mut snaps = Vec::with_capacity(DATASETS * SNAPS_PER_DATASET);
    let mut remote = BTreeMap::new();
    let mut holds = Vec::with_capacity(DATASETS);
    for i in 0..DATASETS {
        let ds = Dataset::new(name(i)).expect("valid");
        listed.push(DatasetRow {
            dataset: ds.clone(),
            guid: Guid::new(1_000_000_007 + i as u64).expect("non-zero"),
            encryption: Encryption::On("aes-256-gcm".into()),
            written: 0,
            backup: None,
        });
        for (j, n) in names.iter().enumerate() {
            snaps.push(SnapshotRow {
                snapshot: Snapshot::from_parts(ds.clone(), n.clone()).expect("valid"),
                guid: guid(i, j),
                // One pool: txgs grow with time across all datasets.
                createtxg: 100 + (j * DATASETS + i) as u64,
                creation: START + i64::try_from(j).unwrap() * HOUR,
            });
        }
        // How many of this dataset's snapshots the box holds.
        let held = match i % 100 {
            7 => 0,                  // absent on the box: full send
            50 => SNAPS_PER_DATASET, // up to date
            _ => SNAPS_PER_DATASET - BEHIND,
        };
        if held > 0 {
            remote.insert(
                ds.clone(),
                RemoteDataset {
                    name: ds.clone(),
                    exists: true,
                    snapshots: (0..held)
                        .map(|j| RemoteSnapshot { name: names[j].clone(), guid: guid(i, j), createtxg: 10 + j as u64 })
                        .collect(),
                    resume_token: None,
                },
            );
            holds.push(HoldRow {
                snapshot: Snapshot::from_parts(ds, names[held - 1].clone()).expect("valid"),
                tag: "zoffsite-friend".into(),
            });
        }
    }
    Inventory {
        source: Source {
            datasets: vec![Dataset::new("tank/data").expect("valid")],
            // One exclusion that matches nothing, so the check runs for every dataset.
            exclude: vec![Dataset::new("tank/data/games").expect("valid")],
            keep: None,
        },
        listed,
        snaps,
        remote,
        holds,
        box_root: Dataset::new("offsite/home").expect("valid"),
        now: jiff::Timestamp::from_second(START + i64::try_from(SNAPS_PER_DATASET).unwrap() * HOUR).expect("in range"),
    }
}

#[derive(Default, Debug, PartialEq, Eq, Clone, Copy)]
struct Counts {
    datasets: usize,
    full: usize,
    incremental: usize,
    up_to_date: usize,
    blocked: usize,
    prune_decisions: usize,
    prune_destroy: usize,
}

/// Where the time of one iteration went.
#[derive(Default, Clone, Copy)]
struct Split {
    /// `select`, grouping and every `plan_send`.
    sends: Duration,
    /// `prune_source`.
    prune: Duration,
}

/// The timed part: what `backup` computes from the listings.
fn plan_all(inv: &Inventory, policy: &KeepPolicy) -> (Counts, Split) {
    let mut c = Counts::default();
    let t = Instant::now();
    let sel = plan::select(&inv.source, &inv.listed);
    let mut by_ds: BTreeMap<&Dataset, Vec<SnapshotRow>> = BTreeMap::new();
    for s in &inv.snaps {
        by_ds.entry(&s.snapshot.dataset).or_default().push(s.clone());
    }
    for inc in &sel.included {
        let ds = &inc.row.dataset;
        c.datasets += 1;
        let Some(list) = by_ds.get(ds) else { continue };
        let Some(newest) = list.iter().max_by_key(|s| s.createtxg) else { continue };
        let box_ds = inv.box_root.join(ds).expect("fits");
        match plan::plan_send(newest, list, &[], inv.remote.get(ds), &box_ds) {
            Ok(Send::Full { .. }) => c.full += 1,
            Ok(Send::Incremental { .. }) => c.incremental += 1,
            Ok(Send::UpToDate { .. }) => c.up_to_date += 1,
            Err(_) => c.blocked += 1,
        }
    }
    let sends = t.elapsed();
    let t = Instant::now();
    let decisions = plan::prune_source(policy, &inv.snaps, &inv.holds, inv.now).expect("valid policy");
    c.prune_decisions = decisions.len();
    c.prune_destroy = decisions.iter().filter(|d| d.destroy).count();
    (c, Split { sends, prune: t.elapsed() })
}

/// A `VmRSS`/`VmHWM` line of /proc/self/status, in KiB (0 where unavailable).
fn proc_status_kib(key: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix(key)?.strip_prefix(':')?.trim().strip_suffix("kB")?.trim().parse().ok())
        })
        .unwrap_or(0)
}

fn ms(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1000.0)
}

fn main() {
    let iterations: usize = match std::env::args().nth(1) {
        None => 5,
        Some(a) => match a.parse() {
            Ok(n) if n > 0 => n,
            _ => {
                eprintln!("usage: plan_bench [ITERATIONS > 0]");
                std::process::exit(2);
            }
        },
    };
    let t0 = Instant::now();
    let inv = build();
    let build_time = t0.elapsed();
    let input_rss = proc_status_kib("VmRSS");
    let policy = KeepPolicy { last: 24, daily: 7, ..KeepPolicy::default() };

    let mut times = Vec::with_capacity(iterations);
    let mut splits = Vec::with_capacity(iterations);
    let mut counts = None;
    for _ in 0..iterations {
        let t = Instant::now();
        let (c, split) = std::hint::black_box(plan_all(std::hint::black_box(&inv), &policy));
        times.push(t.elapsed());
        splits.push(split);
        // Every iteration must decide the same.
        assert!(counts.is_none_or(|p| p == c), "planning is not deterministic");
        counts = Some(c);
    }
    let c = counts.expect("at least one iteration");
    times.sort();
    let mut sends: Vec<Duration> = splits.iter().map(|s| s.sends).collect();
    let mut prune: Vec<Duration> = splits.iter().map(|s| s.prune).collect();
    sends.sort();
    prune.sort();
    println!("datasets={}", inv.listed.len());
    println!("items={}", inv.snaps.len());
    println!("remote_snapshots={}", inv.remote.values().map(|r| r.snapshots.len()).sum::<usize>());
    println!("holds={}", inv.holds.len());
    println!("iterations={iterations}");
    println!("build_ms={}", ms(build_time));
    println!("elapsed_ms={}", ms(times[times.len() / 2]));
    println!("elapsed_ms_min={}", ms(times[0]));
    println!("elapsed_ms_max={}", ms(times[times.len() - 1]));
    println!("select_send_ms={}", ms(sends[sends.len() / 2]));
    println!("prune_ms={}", ms(prune[prune.len() / 2]));
    println!("planned_datasets={}", c.datasets);
    println!("sends_full={}", c.full);
    println!("sends_incremental={}", c.incremental);
    println!("sends_up_to_date={}", c.up_to_date);
    println!("sends_blocked={}", c.blocked);
    println!("prune_decisions={}", c.prune_decisions);
    println!("prune_destroy={}", c.prune_destroy);
    println!("input_rss_kib={input_rss}");
    println!("peak_rss_kib={}", proc_status_kib("VmHWM"));
}
