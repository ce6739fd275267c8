//! `zoffsite backup`: snapshot the selection, send it raw to every target.
//!
//! Order of work, and why:
//! 1. Config and files are checked first: a bad config changes nothing.
//! 2. Datasets are listed under the configured roots only; the selection
//!    refuses unencrypted datasets by name (a raw send of those would be
//!    plaintext) and goes on with the rest.
//! 3. One snapshot name for the run; one `zfs snapshot` call per pool, so
//!    each pool's datasets share one point in time.
//! 4. Per target, one SSH session (opened before the snapshot; an unreachable
//!    target does not stop the snapshot): list what the box holds, plan each
//!    dataset by GUID (full, or incremental from the box's newest snapshot),
//!    stream it, and accept success only when the box reports the planned
//!    snapshot with the source's GUID.
//!
//! With `-n`, steps 3-4 only plan: no snapshot is taken, nothing is sent;
//! the box is only asked what it holds.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::io::IsTerminal as _;

use serde::Serialize;
use zoffsite_core::config::{Config, Target};
use zoffsite_core::names::{Bookmark, Dataset, Guid, SnapName, Snapshot};
use zoffsite_core::parse::{BookmarkRow, SnapshotRow};
use zoffsite_core::plan::{self, BaseKind, Send, Skip};
use zoffsite_core::protocol::{RemoteDataset, Request};
use zoffsite_exec::process::Running;
use zoffsite_exec::proto::client::{RemoteError, Session};
use zoffsite_exec::zfs::{SendFrom, Zfs, ZfsError};

use crate::cli::BackupArgs;
use crate::cmd::common;
use crate::exit::{Code as _, Exit};

/// Everything a run did (or, with `-n`, would do); printed with `--json`.
#[derive(Debug, Default, Serialize)]
struct Report {
    dry_run: bool,
    snapshot: Option<SnapName>,
    /// Problems not tied to one target (missing datasets, snapshot failures).
    errors: Vec<String>,
    skipped: Vec<SkippedDataset>,
    targets: Vec<TargetReport>,
    /// Snapshots source retention destroyed (or, with -n, would destroy).
    pruned: Vec<String>,
    exit_code: u8,
}

#[derive(Debug, Serialize)]
struct SkippedDataset {
    dataset: Dataset,
    #[serde(flatten)]
    reason: Skip,
    message: String,
}

#[derive(Debug, Serialize)]
struct TargetReport {
    name: String,
    /// Set when the target as a whole failed (unreachable, host key, ...).
    error: Option<String>,
    datasets: Vec<DatasetReport>,
}

#[derive(Debug, Serialize)]
struct DatasetReport {
    dataset: Dataset,
    /// `ok` (the box holds the snapshot with the source's GUID), `planned`
    /// (dry run), or `failed`.
    status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    send: Option<Send>,
    #[serde(skip_serializing_if = "Option::is_none")]
    bytes: Option<u64>,
    /// Bytes sent to finish an interrupted transfer first, if there was one.
    #[serde(skip_serializing_if = "Option::is_none")]
    resumed_bytes: Option<u64>,
    /// `zfs send -nvP`'s estimate, in dry runs.
    #[serde(skip_serializing_if = "Option::is_none")]
    estimated_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

pub fn run(args: BackupArgs) -> Exit {
    let cfg = match common::config_or_exit(&args.config) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let _lock = match common::lock_unless_dry_run(&args.config, args.dry_run) {
        Ok(l) => l,
        Err(code) => return code,
    };
    let mut report = Report { dry_run: args.dry_run, ..Report::default() };
    let exit = backup(&cfg, &args, &Zfs::new(), jiff::Timestamp::now(), &mut report);
    report.exit_code = exit.code();
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report).expect("report serializes"));
    }
    exit
}

fn backup(cfg: &Config, args: &BackupArgs, zfs: &Zfs, now: jiff::Timestamp, report: &mut Report) -> Exit {
    let say = |line: String| {
        if !args.json {
            println!("{line}");
        }
    };
    let mut exit = Exit::Ok;

    // Log in to every target now, in the background: an SSH login is the
    // slowest fixed step of a run (key exchange, the box starting `serve`),
    // and it needs nothing from the local steps below. Nothing is asked of
    // a box before the selection is known.
    let logins: Vec<(&Target, std::thread::JoinHandle<Result<Session, RemoteError>>)> = cfg
        .targets
        .iter()
        .map(|t| {
            let target = t.clone();
            (t, std::thread::spawn(move || Session::connect(&target)))
        })
        .collect();

    // `written` (what decides whether anything changed) counts synced data
    // only: sync first, or a file written a moment ago would look
    // unchanged. If that fails, every dataset counts as changed.
    let pools: BTreeSet<&str> = cfg.source.datasets.iter().map(|d| d.pool()).collect();
    let synced = match zfs.sync_pools(pools.iter().copied()) {
        Ok(()) => true,
        Err(e) => {
            tracing::warn!("cannot sync pools, so every dataset counts as changed: {e}");
            false
        }
    };

    // 1-2. What is there, under the configured roots only, and the
    // selection: excluded and unencrypted datasets are left out by name.
    let sel = match common::list_selection(cfg, zfs, &args.config) {
        Ok((sel, missing)) => {
            for msg in missing {
                eprintln!("zoffsite: {msg}");
                report.errors.push(msg);
                exit = exit.max(Exit::Partial);
            }
            sel
        }
        Err(e) => {
            let msg = format!("cannot list the configured datasets: {e}");
            eprintln!("zoffsite: {msg}");
            report.errors.push(msg);
            return Exit::Error;
        }
    };
    if args.dry_run {
        for i in &sel.included {
            say(format!("in:  {} ({})", i.row.dataset, i.why));
        }
    }
    for (ds, why) in &sel.skipped {
        let message = match why {
            Skip::Unencrypted => format!(
                "refused {ds}: it is not encrypted (encryption=off), and zoffsite sends only raw encrypted streams, so nothing of it was sent. Either move its data into an encrypted dataset (`zfs create -o encryption=on -o keyformat=raw -o keylocation=file:///... NEW`, then copy), or add \"{ds}\" to source.exclude in {}",
                args.config.display()
            ),
            other => format!("{ds}: {other}"),
        };
        if matches!(why, Skip::Unencrypted | Skip::BadProperty { .. }) {
            exit = exit.max(Exit::Partial);
            eprintln!("zoffsite: {message}");
        } else if args.dry_run {
            say(format!("out: {ds} ({why})"));
        }
        report.skipped.push(SkippedDataset { dataset: ds.clone(), reason: why.clone(), message });
    }
    if sel.included.is_empty() {
        let msg = "nothing to back up: no encrypted dataset is selected".to_owned();
        eprintln!("zoffsite: {msg}");
        report.errors.push(msg);
        return exit.max(Exit::Partial);
    }
    let included: Vec<Dataset> = sel.datasets();

    // 3. One snapshot name for the whole run, one `zfs snapshot` per pool;
    // none at all when nothing changed since the last run's snapshot (the
    // targets may still need to catch up to it).
    // Bookmarks come from the same traversal: taking a snapshot adds none,
    // and only this run (under its lock) makes zoffsite's.
    let (before, bookmarks, mut held) = match zfs.list_snapshots_and_bookmarks(&included) {
        Ok(l) => (l.snapshots, l.bookmarks, l.held),
        Err(e) => {
            return fail(report, format!("cannot list snapshots and bookmarks: {e}"));
        }
    };
    let unchanged: Vec<Option<&SnapshotRow>> =
        sel.included.iter().map(|i| if synced { plan::unchanged_since_ours(&i.row, &before) } else { None }).collect();
    let new_snaps: Vec<SnapshotRow>;
    let source_snaps: SourceSnaps;
    // Whether `source_snaps` lists every selected dataset (so retention can
    // use it instead of listing again).
    let listed_all: bool;
    if !args.force_snapshot && unchanged.iter().all(Option::is_some) {
        say("no selected dataset changed since its last zoffsite snapshot: no new snapshot".into());
        new_snaps = unchanged.into_iter().flatten().cloned().collect();
        source_snaps = by_dataset(before);
        listed_all = true;
    } else {
        // The properties you set travel inside your encrypted data (never
        // as properties, which would reach the box in the clear), recorded
        // just before a snapshot is taken: reading every property of every
        // dataset is too slow to do on runs that change nothing, so a
        // property-only change is recorded with the next data change.
        record_properties(cfg, zfs, &included, args.dry_run, &say);
        let taken: BTreeSet<&SnapName> = before.iter().map(|s| &s.snapshot.name).collect();
        let name = plan::snapshot_name(now, |n| taken.contains(n));
        report.snapshot = Some(name.clone());
        match take_snapshots(zfs, &included, &name, (before, held), args, &say, report, &mut exit) {
            Some((n, s, h, all)) => (new_snaps, source_snaps, held, listed_all) = (n, s, h, all),
            None => return Exit::Error,
        }
    }

    // 4. Each target on its own: one failing does not stop the others.
    // The logins started at the top (one session per target, kept open),
    // each now asked what its box holds. A target that cannot be reached
    // does not stop the run: the snapshot is taken anyway, and the box gets
    // it with the next run that reaches it (one `-I` stream for everything
    // pending).
    let mut connected = Vec::new();
    for (target, login) in logins {
        let login =
            login.join().unwrap_or_else(|_| Err(RemoteError::Ssh("internal error: the login thread panicked".into())));
        match login.and_then(|s| list(s, &included)) {
            Ok((session, remote)) => connected.push((target, session, remote)),
            Err(e) => {
                let msg = format!("target {}: {e}", target.name);
                eprintln!("zoffsite: {msg}");
                report.targets.push(TargetReport { name: target.name.clone(), error: Some(msg), datasets: Vec::new() });
                exit = exit.max(Exit::Target);
            }
        }
    }
    let ctx_datasets = included.clone();
    let ctx = Sends {
        zfs,
        args,
        new_snaps: &new_snaps,
        source_snaps: &source_snaps,
        bookmarks: &RefCell::new(bookmarks),
        held: &held,
        say: &say,
    };
    for (target, session, remote) in connected {
        let (tr, texit) = to_target(&ctx, target, session, remote);
        exit = exit.max(texit);
        report.targets.push(tr);
    }

    // 5. Source retention, after the holds moved to the new bases.
    if let Some(policy) = &cfg.source.keep {
        // The clock now, not at the start of the run: the new snapshot must
        // not look "dated in the future" to retention (which would keep it
        // out of the `last` count and keep one more old snapshot).
        let prune_now = if args.dry_run { now } else { jiff::Timestamp::now().max(now) };
        // The run's own listing, taken after its snapshot, is what retention
        // needs (sends and anchoring add no snapshot; the holds, which did
        // move, are read afresh): one traversal fewer.
        let (decisions, pexit) = if listed_all {
            let rows: Vec<SnapshotRow> = source_snaps.values().flatten().cloned().collect();
            // Every snapshot a target confirmed in this run is one of
            // `new_snaps`: with those, `held` covers every hold placed since.
            let held: BTreeSet<Snapshot> =
                held.iter().cloned().chain(new_snaps.iter().map(|n| n.snapshot.clone())).collect();
            crate::cmd::prune::prune_listed(zfs, &rows, &held, policy, prune_now, args.dry_run, &say)
        } else {
            crate::cmd::prune::prune(zfs, &ctx_datasets, policy, prune_now, args.dry_run, &say)
        };
        report.pruned = decisions.into_iter().filter(|d| d.destroy).map(|d| d.snapshot).collect();
        exit = exit.max(pexit);
    }
    exit
}

/// Writes each configured root's properties manifest
/// (`zoffsite_core::manifest`) at the top of its mounted filesystem, when
/// it changed. Returns whether any did. Not being able to write one is a
/// warning: the data is still backed up, only its properties would not
/// come back by themselves.
fn record_properties(cfg: &Config, zfs: &Zfs, included: &[Dataset], dry_run: bool, say: &dyn Fn(String)) -> bool {
    let mut changed = false;
    for root in cfg.source.datasets.iter().filter(|r| included.contains(r)) {
        let under: Vec<Dataset> = included.iter().filter(|d| d.is_within(root)).cloned().collect();
        let attempt = || -> anyhow::Result<bool> {
            let rows = zfs.local_properties(&under)?;
            // Every dataset of the tree this run backs up, so that a restore
            // of this point can tell its children from ones added later.
            let text = zoffsite_core::manifest::build(root, &under, &rows).render();
            let mountpoint = zfs.get_value(root.as_str(), "mountpoint")?;
            if !mountpoint.starts_with('/') || zfs.get_value(root.as_str(), "mounted")? != "yes" {
                anyhow::bail!("it is not mounted here (mountpoint={mountpoint}), so there is nowhere to keep them");
            }
            let path = std::path::Path::new(&mountpoint).join(zoffsite_core::manifest::MANIFEST_PATH);
            // No symlink followed, in a directory only root may write.
            let changed = zoffsite_exec::manifest_file::write(std::path::Path::new(&mountpoint), &text, dry_run)?;
            if !changed {
                return Ok(false);
            }
            if dry_run {
                say(format!("would record the properties of {root} in {}", path.display()));
                return Ok(true);
            }
            tracing::info!(root = %root, path = %path.display(), "recorded the properties manifest");
            Ok(true)
        };
        match attempt() {
            Ok(c) => changed |= c,
            Err(e) => eprintln!(
                "zoffsite: warning: the properties of {root} are not recorded for restores: {e:#}. The data is backed up; only properties like mountpoint and compression would have to be set again by hand after a restore"
            ),
        }
    }
    changed
}

/// Asks the box what it holds of `datasets`.
fn list(
    mut session: Session,
    datasets: &[Dataset],
) -> Result<(Session, BTreeMap<Dataset, RemoteDataset>), RemoteError> {
    let remote = session.list(datasets)?;
    Ok((session, remote))
}

/// What every target's sends share.
struct Sends<'a> {
    zfs: &'a Zfs,
    args: &'a BackupArgs,
    /// The run's new snapshot of each dataset to send, parents first.
    new_snaps: &'a [SnapshotRow],
    /// All of the source's snapshots of those datasets.
    source_snaps: &'a SourceSnaps,
    /// The source's bookmarks of those datasets, with those this run made
    /// added as it makes them: every target that confirms the same new
    /// snapshot needs its bookmark, and only the first makes it.
    bookmarks: &'a RefCell<Vec<BookmarkRow>>,
    /// The source's snapshots that carried a user hold when listed.
    held: &'a BTreeSet<Snapshot>,
    say: &'a dyn Fn(String),
}

/// Records an error that stops the run, prints it, and gives its exit code.
fn fail(report: &mut Report, msg: String) -> Exit {
    eprintln!("zoffsite: {msg}");
    report.errors.push(msg);
    Exit::Error
}

/// Each dataset's snapshots on the source.
type SourceSnaps = BTreeMap<Dataset, Vec<SnapshotRow>>;

fn now_unix() -> i64 {
    jiff::Timestamp::now().as_second()
}

fn by_dataset(rows: Vec<SnapshotRow>) -> SourceSnaps {
    let mut m: BTreeMap<Dataset, Vec<SnapshotRow>> = BTreeMap::new();
    for r in rows {
        m.entry(r.snapshot.dataset.clone()).or_default().push(r);
    }
    m
}

/// Takes `name` on every dataset (one call per pool) and returns each
/// dataset's new snapshot, all its snapshots, those of them that carry a
/// hold, and whether they cover every one of `included`. `None` when the
/// source cannot even be listed.
#[allow(clippy::too_many_arguments)]
fn take_snapshots(
    zfs: &Zfs,
    included: &[Dataset],
    name: &SnapName,
    (before, held_before): (Vec<SnapshotRow>, BTreeSet<Snapshot>),
    args: &BackupArgs,
    say: &dyn Fn(String),
    report: &mut Report,
    exit: &mut Exit,
) -> Option<(Vec<SnapshotRow>, SourceSnaps, BTreeSet<Snapshot>, bool)> {
    let mut ready: Vec<Dataset> = Vec::new();
    for ds in included {
        if ds.snapshot(name).is_err() {
            let msg =
                format!("{ds}: its name is too long to add @{name} (ZFS allows 255 bytes); rename it or exclude it");
            eprintln!("zoffsite: {msg}");
            report.errors.push(msg);
            *exit = (*exit).max(Exit::Partial);
        } else {
            ready.push(ds.clone());
        }
    }
    let mut failed: BTreeSet<Dataset> = BTreeSet::new();
    for group in plan::snapshot_groups(&ready, name) {
        if args.dry_run {
            say(format!("would run: {}", zfs.snapshot_cmd(&group)));
            continue;
        }
        if let Err(e) = zfs.snapshot(&group) {
            let msg = format!("cannot snapshot pool {}: {e}", group[0].dataset.pool());
            eprintln!("zoffsite: {msg}");
            report.errors.push(msg);
            *exit = (*exit).max(Exit::Partial);
            failed.extend(group.into_iter().map(|s| s.dataset));
        }
    }
    ready.retain(|d| !failed.contains(d));
    let listed_all = args.dry_run || ready.len() == included.len();
    let rows = if args.dry_run {
        Ok((before, held_before))
    } else {
        zfs.list_snapshots(&ready).map(|l| (l.snapshots, l.held))
    };
    let (source_snaps, held) = match rows {
        Ok((rows, held)) => (by_dataset(rows), held),
        Err(e) => {
            report.errors.push(format!("cannot list snapshots: {e}"));
            eprintln!("zoffsite: cannot list snapshots: {e}");
            return None;
        }
    };
    let mut new_snaps = Vec::new();
    for ds in &ready {
        let snaps = source_snaps.get(ds).map(Vec::as_slice).unwrap_or_default();
        match snaps.iter().find(|s| s.snapshot.name == *name) {
            Some(s) => new_snaps.push(s.clone()),
            // A dry run has no new snapshot yet: plan with a stand-in that
            // is newer than everything and matches no GUID on the box.
            None if args.dry_run => new_snaps.push(SnapshotRow {
                snapshot: ds.snapshot(name).expect("length checked"),
                guid: Guid::new(u64::MAX).expect("non-zero"),
                createtxg: u64::MAX,
                creation: now_unix(),
            }),
            None => {
                let msg = format!("{ds}@{name} vanished right after it was taken; not sent");
                eprintln!("zoffsite: {msg}");
                report.errors.push(msg);
                *exit = (*exit).max(Exit::Partial);
            }
        }
    }
    Some((new_snaps, source_snaps, held, listed_all))
}

fn to_target(
    ctx: &Sends<'_>,
    target: &Target,
    mut session: Session,
    remote: BTreeMap<Dataset, RemoteDataset>,
) -> (TargetReport, Exit) {
    let Sends { zfs, args, new_snaps, source_snaps, bookmarks, held, say } = *ctx;
    let mut tr = TargetReport { name: target.name.clone(), error: None, datasets: Vec::new() };
    let mut exit = Exit::Ok;
    let mut failed: BTreeSet<Dataset> = BTreeSet::new();
    // Snapshots the box now provably holds: the next incremental's bases.
    let mut confirmed: Vec<&SnapshotRow> = Vec::new();
    for new in new_snaps {
        let ds = &new.snapshot.dataset;
        if let Some(p) = plan::failed_ancestor(ds, &failed) {
            let msg = plan::Blocked::ParentFailed(p.clone()).to_string();
            record_failure(&mut tr, &mut failed, &target.name, ds, None, msg);
            exit = exit.max(Exit::Partial);
            continue;
        }
        let box_ds = session.root.join(ds).unwrap_or_else(|_| session.root.clone());
        let snaps = source_snaps.get(ds).map(Vec::as_slice).unwrap_or_default();
        let bms: Vec<BookmarkRow> = bookmarks.borrow().iter().filter(|b| b.bookmark.dataset == *ds).cloned().collect();
        // An interrupted transfer is finished first (or discarded when the
        // source can no longer continue it); the box's view is updated so
        // the plan below starts from what the box now holds.
        let mut here = remote.get(ds).cloned();
        let mut resumed_bytes = None;
        if let Some(r) = here.as_mut().filter(|r| r.resume_token.is_some()) {
            if args.dry_run {
                say(format!("{}: {ds}: would resume an interrupted transfer first", target.name));
                r.resume_token = None;
            } else {
                match resume(zfs, &mut session, ds, r, snaps, show_progress_for(args)) {
                    Ok((msg, bytes)) => {
                        say(format!("{}: {ds}: {msg}", target.name));
                        resumed_bytes = Some(bytes);
                    }
                    Err(e) => {
                        let fatal = !matches!(
                            e,
                            ResumeFailure::Refused(_)
                                | ResumeFailure::Remote(RemoteError::Refused { .. })
                                | ResumeFailure::Remote(RemoteError::Send(_))
                        );
                        record_failure(&mut tr, &mut failed, &target.name, ds, None, e.to_string());
                        exit = exit.max(if fatal { Exit::Target } else { Exit::Partial });
                        if fatal {
                            break;
                        }
                        continue;
                    }
                }
            }
        }
        let send = match plan::plan_send(new, snaps, &bms, here.as_ref(), &box_ds) {
            Ok(s) => s,
            Err(b) => {
                record_failure(&mut tr, &mut failed, &target.name, ds, None, b.to_string());
                exit = exit.max(Exit::Partial);
                continue;
            }
        };
        let (from, from_guid) = match &send {
            Send::UpToDate { at } => {
                say(format!("{}: {ds}: box already holds {at}", target.name));
                let mut row = DatasetReport::done(ds, "ok", send, Some(0));
                row.resumed_bytes = resumed_bytes;
                tr.datasets.push(row);
                confirmed.push(new);
                continue;
            }
            Send::Full { .. } => (None, None),
            Send::Incremental { from, base, intermediates, .. } => {
                let kind = match (base, intermediates) {
                    (BaseKind::Bookmark, _) => SendFrom::Bookmark,
                    (BaseKind::Snapshot, 0) => SendFrom::Snapshot,
                    (BaseKind::Snapshot, _) => SendFrom::SnapshotWithIntermediates,
                };
                (Some((from.name.clone(), kind)), Some(from.guid))
            }
        };
        let cmd = zfs.send_raw(&new.snapshot, from.as_ref().map(|(n, k)| (n, *k)));
        let from_arg = from.as_ref().map(|(n, k)| (n, *k));
        // The estimate feeds the dry-run plan and the progress bar's ETA;
        // the snapshot of a dry run does not exist yet, so its estimate is
        // from the newest existing state of the dataset.
        let show_progress = show_progress_for(args);
        let estimate = if args.dry_run || show_progress {
            let snap = if args.dry_run && new.guid.get() == u64::MAX { None } else { Some(&new.snapshot) };
            snap.and_then(|s| zfs.estimate(s, from_arg).ok())
        } else {
            None
        };
        if args.dry_run {
            let size = estimate.map_or_else(|| "size known once the snapshot exists".to_owned(), human_bytes);
            say(format!("{}: {ds}: would send {} ({size}; {cmd})", target.name, describe(&send)));
            let mut row = DatasetReport::done(ds, "planned", send, None);
            row.estimated_bytes = estimate;
            tr.datasets.push(row);
            continue;
        }
        let running = match Running::with_stdout(&cmd) {
            Ok(r) => r,
            Err(e) => {
                record_failure(
                    &mut tr,
                    &mut failed,
                    &target.name,
                    ds,
                    Some(send),
                    format!("cannot start zfs send: {e}"),
                );
                exit = exit.max(Exit::Error);
                continue;
            }
        };
        let bar = show_progress.then(|| progress_bar(&target.name, ds, estimate));
        let mut progress = |n: u64| {
            if let Some(b) = &bar {
                b.set_position(n);
            }
        };
        let result = session.receive(
            Request::Receive {
                dataset: ds.clone(),
                snapshot: new.snapshot.name.clone(),
                guid: new.guid,
                from: from_guid,
                resume: false,
            },
            running,
            &mut progress,
        );
        if let Some(b) = bar {
            b.finish_and_clear();
        }
        match result {
            Ok((guid, bytes)) if guid == new.guid => {
                say(format!(
                    "{}: {ds}: sent {}, {}; the box holds it with the same GUID",
                    target.name,
                    describe(&send),
                    human_bytes(bytes)
                ));
                let mut row = DatasetReport::done(ds, "ok", send, Some(bytes));
                row.resumed_bytes = resumed_bytes;
                tr.datasets.push(row);
                confirmed.push(new);
            }
            Ok((guid, _)) => {
                record_failure(
                    &mut tr,
                    &mut failed,
                    &target.name,
                    ds,
                    Some(send),
                    format!(
                        "the box reports GUID {guid} for @{}, but the source's is {}: not verified",
                        new.snapshot.name, new.guid
                    ),
                );
                exit = exit.max(Exit::Partial);
            }
            Err(e @ (RemoteError::Refused { .. } | RemoteError::Send(_))) => {
                record_failure(&mut tr, &mut failed, &target.name, ds, Some(send), e.to_string());
                exit = exit.max(Exit::Partial);
            }
            Err(e) => {
                // The session is gone: the rest of this target waits for the
                // next run.
                record_failure(&mut tr, &mut failed, &target.name, ds, Some(send), e.to_string());
                let msg = format!("target {}: {e}", target.name);
                tr.error = Some(msg);
                exit = Exit::Target;
                break;
            }
        }
    }
    // Saying goodbye (the box finishes its bookkeeping and ssh exits) and
    // anchoring the chain here are independent: do both at once.
    let anchored = std::thread::scope(|scope| {
        scope.spawn(move || session.close());
        (!args.dry_run).then(|| anchor_chain(zfs, &target.name, &confirmed, source_snaps, bookmarks, held))
    });
    if let Some(Err(e)) = anchored {
        let msg = format!("target {}: could not protect the next incremental's base: {e}", target.name);
        eprintln!("zoffsite: {msg}");
        tr.error.get_or_insert(msg);
        exit = exit.max(Exit::Partial);
    }
    (tr, exit)
}

/// The hold tag that keeps `target`'s incremental base on the source.
pub fn hold_tag(target: &str) -> String {
    format!("zoffsite-{target}")
}

/// Keeps the next incremental possible for every `confirmed` snapshot (the
/// newest the target holds): a bookmark of it, which survives the
/// snapshot's destruction, and the target's hold on it, which stops the
/// snapshot being destroyed at all. The new hold is placed before the old
/// ones are released, so the base is never unprotected.
fn anchor_chain(
    zfs: &Zfs,
    target: &str,
    confirmed: &[&SnapshotRow],
    source_snaps: &SourceSnaps,
    bookmarks: &RefCell<Vec<BookmarkRow>>,
    held: &BTreeSet<Snapshot>,
) -> Result<(), ZfsError> {
    for s in confirmed {
        let known = bookmarks.borrow().iter().any(|b| b.guid == s.guid && b.bookmark.dataset == s.snapshot.dataset);
        if !known {
            zfs.bookmark(&s.snapshot)?;
            bookmarks.borrow_mut().push(BookmarkRow {
                bookmark: Bookmark { dataset: s.snapshot.dataset.clone(), name: s.snapshot.name.clone() },
                guid: s.guid,
                createtxg: s.createtxg,
                creation: s.creation,
            });
        }
    }
    let tag = hold_tag(target);
    let ours: Vec<Snapshot> = confirmed
        .iter()
        .flat_map(|c| source_snaps.get(&c.snapshot.dataset).into_iter().flatten())
        // This target's tag can only be on a snapshot that carried a hold
        // when listed: only zoffsite places it, and under the run lock.
        .filter(|s| s.snapshot.name.as_str().starts_with(plan::SNAPSHOT_PREFIX) && held.contains(&s.snapshot))
        .map(|s| s.snapshot.clone())
        .collect();
    let tagged: Vec<Snapshot> = zfs.holds(&ours)?.into_iter().filter(|h| h.tag == tag).map(|h| h.snapshot).collect();
    let keep: BTreeSet<&Snapshot> = confirmed.iter().map(|c| &c.snapshot).collect();
    let to_hold: Vec<Snapshot> = keep.iter().filter(|s| !tagged.contains(s)).map(|s| (*s).clone()).collect();
    let to_release: Vec<Snapshot> = tagged.into_iter().filter(|s| !keep.contains(s)).collect();
    for chunk in to_hold.chunks(500) {
        zfs.hold(&tag, chunk)?;
    }
    for chunk in to_release.chunks(500) {
        zfs.release(&tag, chunk)?;
    }
    Ok(())
}

impl DatasetReport {
    fn done(dataset: &Dataset, status: &'static str, send: Send, bytes: Option<u64>) -> Self {
        DatasetReport {
            dataset: dataset.clone(),
            status,
            send: Some(send),
            bytes,
            resumed_bytes: None,
            estimated_bytes: None,
            error: None,
        }
    }
}

fn record_failure(
    tr: &mut TargetReport,
    failed: &mut BTreeSet<Dataset>,
    target: &str,
    ds: &Dataset,
    send: Option<Send>,
    msg: String,
) {
    eprintln!("zoffsite: target {target}: {ds}: {msg}");
    tr.datasets.push(DatasetReport {
        dataset: ds.clone(),
        status: "failed",
        send,
        bytes: None,
        resumed_bytes: None,
        estimated_bytes: None,
        error: Some(msg),
    });
    failed.insert(ds.clone());
}

fn show_progress_for(args: &BackupArgs) -> bool {
    !args.json && !args.dry_run && std::io::stderr().is_terminal()
}

#[derive(Debug, thiserror::Error)]
enum ResumeFailure {
    #[error("{0}")]
    Refused(String),
    #[error(transparent)]
    Remote(#[from] RemoteError),
}

/// Continues the box's interrupted receive of `ds`, after checking its
/// token (hostile input: it decides what `zfs send -t` sends) against the
/// source's own view: same dataset, a snapshot the source has, the base
/// the box really holds, raw. A token the source can no longer continue
/// (its snapshot is gone) is discarded on the box, and the dataset is then
/// planned afresh. `remote` is updated to what the box holds afterwards.
fn resume(
    zfs: &Zfs,
    session: &mut Session,
    ds: &Dataset,
    remote: &mut RemoteDataset,
    snaps: &[SnapshotRow],
    show_progress: bool,
) -> Result<(String, u64), ResumeFailure> {
    use zoffsite_core::resume;
    let token = remote.resume_token.clone().unwrap_or_default();
    resume::check_token_alphabet(&token).map_err(|e| ResumeFailure::Refused(format!("the box's resume token: {e}")))?;
    let box_newest = remote.snapshots.iter().max_by_key(|s| s.createtxg).map(|s| s.guid);
    let decoded = zfs.describe_token(&token);
    let info = match decoded {
        Ok(text) => resume::parse_send_nvt(&text).map_err(|e| ResumeFailure::Refused(e.to_string()))?,
        // A well-formed token ZFS cannot resolve names a snapshot this
        // source does not have: destroyed meanwhile (by retention or the
        // user), or forged. Nothing can be sent from it either way; its
        // partial state is discarded (the only thing `abort` can touch,
        // and useless without the snapshot) and the dataset planned afresh.
        Err(e) => {
            eprintln!(
                "zoffsite: {ds}: ZFS cannot resolve the box's resume token ({e}); discarding that partial receive on the box"
            );
            session.abort(ds)?;
            remote.resume_token = None;
            remote.exists = !remote.snapshots.is_empty();
            return Ok((
                "discarded an interrupted transfer this source cannot continue (its snapshot is gone)".into(),
                0,
            ));
        }
    };
    // ZFS resolved the token: it must continue exactly what this source
    // would send now (this dataset, the box's real base, raw), or it is
    // refused and left for the box's owner to clear.
    let row = snaps.iter().find(|s| s.guid == info.toguid);
    resume::check_against(&info, ds, row.map_or(info.toguid, |r| r.guid), box_newest)
        .map_err(|e| ResumeFailure::Refused(e.to_string()))?;
    let Some(row) = row else {
        return Err(ResumeFailure::Refused(format!(
            "the box's resume token for {ds} names {}, which is not among its snapshots here; the box's owner can discard that partial receive with `zfs receive -A <box root>/{ds}`",
            info.toname
        )));
    };
    let running = Running::with_stdout(&zfs.send_resume(&token))
        .map_err(|e| ResumeFailure::Remote(RemoteError::Send(ZfsError::Exec(e))))?;
    let bar = show_progress.then(|| progress_bar("resume", ds, None));
    let mut progress = |n: u64| {
        if let Some(b) = &bar {
            b.set_position(n);
        }
    };
    let req = Request::Receive {
        dataset: ds.clone(),
        snapshot: row.snapshot.name.clone(),
        guid: row.guid,
        from: box_newest,
        resume: true,
    };
    let (guid, bytes) = session.receive(req, running, &mut progress)?;
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    if guid != row.guid {
        return Err(ResumeFailure::Refused(format!("after resuming, the box reports GUID {guid}, not {}", row.guid)));
    }
    let txg = remote.snapshots.iter().map(|s| s.createtxg).max().unwrap_or(0) + 1;
    remote.snapshots.push(zoffsite_core::protocol::RemoteSnapshot {
        name: row.snapshot.name.clone(),
        guid,
        createtxg: txg,
    });
    remote.resume_token = None;
    remote.exists = true;
    Ok((format!("resumed the interrupted transfer of @{}: {} more", row.snapshot.name, human_bytes(bytes)), bytes))
}

/// Bytes, rate and ETA on stderr, only when stderr is a terminal.
fn progress_bar(target: &str, ds: &Dataset, estimate: Option<u64>) -> indicatif::ProgressBar {
    let bar = match estimate {
        Some(n) => indicatif::ProgressBar::new(n).with_style(
            indicatif::ProgressStyle::with_template(
                "{prefix} {bar:30} {bytes}/{total_bytes} {binary_bytes_per_sec} ETA {eta}",
            )
            .expect("valid template"),
        ),
        None => indicatif::ProgressBar::new_spinner().with_style(
            indicatif::ProgressStyle::with_template("{prefix} {bytes} {binary_bytes_per_sec}").expect("valid template"),
        ),
    };
    bar.set_draw_target(indicatif::ProgressDrawTarget::stderr());
    bar.with_prefix(format!("{target}: {ds}"))
}

fn describe(send: &Send) -> String {
    match send {
        Send::Full { to } => format!("full {to}"),
        Send::Incremental { from, to, base: BaseKind::Bookmark, .. } => {
            format!("incremental from bookmark #{} (guid {}) -> {to}", from.name, from.guid)
        }
        Send::Incremental { from, to, intermediates: 0, .. } => format!("incremental {from} -> {to}"),
        Send::Incremental { from, to, intermediates, .. } => {
            format!("incremental {from} -> {to} with {intermediates} snapshots in between")
        }
        Send::UpToDate { at } => format!("nothing (already at {at})"),
    }
}

fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut i = 0;
    while v >= 1024.0 && i < UNITS.len() - 1 {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[i])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn human_bytes_reads_well() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(256 << 20), "256.0 MiB");
    }

    #[test]
    fn missing_config_file_names_the_file_and_the_fix() {
        let e = common::load_config(Path::new("/nonexistent/zoffsite.toml")).unwrap_err();
        let msg = format!("{e:#}");
        assert!(msg.contains("/nonexistent/zoffsite.toml") && msg.contains("-c FILE"), "{msg}");
    }
}
