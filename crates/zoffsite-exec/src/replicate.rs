//! The source's backup run: snapshot the selection, send it raw to every
//! target, keep each target's next incremental possible, apply source
//! retention. `zoffsite backup` is this, with a config, a lock and a
//! renderer around it.
//!
//! Order of work, and why:
//! 1. Datasets are listed under the configured roots only; the selection
//!    refuses unencrypted datasets by name (a raw send of those would be
//!    plaintext) and goes on with the rest.
//! 2. One snapshot name for the run; one `zfs snapshot` call per pool, so
//!    each pool's datasets share one point in time.
//! 3. Per target, one session (opened before the snapshot; an unreachable
//!    target does not stop the snapshot): list what the box holds, plan each
//!    dataset by GUID (full, or incremental from the box's newest snapshot),
//!    stream it, and accept success only when the box reports the planned
//!    snapshot with the source's GUID.
//! 4. Each confirmed snapshot becomes that target's base: bookmarked and
//!    held before the old base is released ([`holds::after_confirmation`]).
//! 5. Source retention ([`crate::prune`]), after the holds moved.
//!
//! With [`Options::dry_run`], steps 2-5 only plan: no snapshot is taken,
//! nothing is sent, held or destroyed; the box is only asked what it holds.
//!
//! Nothing here prints: every line, warning, failure (with its severity,
//! in one call) and progress goes to [`Events`]; what the run did is the
//! returned [`BackupReport`]. Sessions come from [`Options::connect`]
//! (ssh in production), so a test can run this against in-process boxes.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;

use zoffsite_core::config::{Config, Target};
use zoffsite_core::holds::{self, Step};
use zoffsite_core::human;
use zoffsite_core::names::{Bookmark, Dataset, Guid, SnapName, Snapshot};
use zoffsite_core::parse::{BookmarkRow, SnapshotRow};
use zoffsite_core::plan::{self, BaseKind, Send, Skip};
use zoffsite_core::protocol::{HeartbeatDataset, RemoteDataset, RemoteSnapshot, Request};
use zoffsite_core::report::{BackupReport, DatasetReport, DatasetStatus, Severity, SkippedDataset, TargetReport};

use crate::events::{Events, Progress};
use crate::process::Running;
use crate::proto::client::{Heard, RemoteError, Session};
use crate::prune::{self, Prune};
use crate::zfs::{SendFrom, Zfs, ZfsError, ARGV_CHUNK};

/// Opens a session to a target: [`Session::connect`] in production.
pub type Connect = dyn Fn(&Target) -> Result<Session, RemoteError> + std::marker::Send + Sync;

/// How to run; never a command-line type.
#[derive(Clone)]
pub struct Options<'a> {
    /// Plan only: take no snapshot, send, hold or destroy nothing.
    pub dry_run: bool,
    /// Take a new snapshot even if no selected dataset changed since its
    /// last zoffsite snapshot.
    pub force_snapshot: bool,
    /// The config file, named in messages that say what to change.
    pub config_path: &'a Path,
    /// The run's time: it names the snapshot.
    pub now: jiff::Timestamp,
    /// Opens each target's session; called on a thread of its own per
    /// target, at the start of the run.
    pub connect: Arc<Connect>,
}

/// Runs a backup of `cfg`'s selection to its targets (see the module docs).
/// The outcome is the worst severity reported through `events`.
pub fn backup(cfg: &Config, zfs: &Zfs, opts: &Options<'_>, events: &mut dyn Events) -> BackupReport {
    // Log in to every target now, in the background: an SSH login is the
    // slowest fixed step of a run (key exchange, the box starting `serve`),
    // and it needs nothing from the local steps below. Nothing is asked of
    // a box before the selection is known. The threads are not scoped: a
    // run that stops early does not wait for a slow login.
    let logins: Vec<Login<'_>> = cfg
        .targets
        .iter()
        .map(|t| {
            let (target, connect) = (t.clone(), opts.connect.clone());
            (t, std::thread::spawn(move || connect(&target)))
        })
        .collect();
    let mut run =
        Run { cfg, zfs, opts, events, report: BackupReport { dry_run: opts.dry_run, ..BackupReport::default() } };
    run.run(logins);
    run.report
}

type Login<'a> = (&'a Target, std::thread::JoinHandle<Result<Session, RemoteError>>);

/// Each dataset's snapshots on the source.
type SourceSnaps = BTreeMap<Dataset, Vec<SnapshotRow>>;

/// A run under way.
struct Run<'a> {
    cfg: &'a Config,
    zfs: &'a Zfs,
    opts: &'a Options<'a>,
    events: &'a mut dyn Events,
    report: BackupReport,
}

/// What [`Run::take_snapshots`] leaves to send from.
struct Snapped {
    /// The run's new snapshot of each dataset to send, parents first.
    new_snaps: Vec<SnapshotRow>,
    source_snaps: SourceSnaps,
    /// The source's snapshots that carried a user hold when listed.
    held: BTreeSet<Snapshot>,
    /// Whether `source_snaps` lists every selected dataset (so retention
    /// can use it instead of listing again).
    listed_all: bool,
}

impl Run<'_> {
    /// A failure not tied to one target: reported, and kept in the report.
    fn error(&mut self, severity: Severity, msg: String) {
        self.events.error(severity, &msg);
        self.report.errors.push(msg);
    }

    fn run(&mut self, logins: Vec<Login<'_>>) {
        let (zfs, dry_run) = (self.zfs, self.opts.dry_run);
        // `written` (what decides whether anything changed) counts synced
        // data only: sync first, or a file written a moment ago would look
        // unchanged. If that fails, every dataset counts as changed.
        let pools: BTreeSet<&str> = self.cfg.source.datasets.iter().map(zoffsite_core::names::Dataset::pool).collect();
        let synced = match zfs.sync_pools(pools.iter().copied()) {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!("cannot sync pools, so every dataset counts as changed: {e}");
                false
            }
        };

        // 1. What is there, under the configured roots only, and the
        // selection: excluded and unencrypted datasets are left out by name.
        let sel = match crate::selection::list(self.cfg, zfs, self.opts.config_path) {
            Ok((sel, missing)) => {
                for msg in missing {
                    self.error(Severity::Partial, msg);
                }
                sel
            }
            Err(e) => return self.error(Severity::Error, format!("cannot list the configured datasets: {e}")),
        };
        if dry_run {
            for i in &sel.included {
                self.events.line(&format!("in:  {} ({})", i.row.dataset, i.why));
            }
        }
        for (ds, why) in &sel.skipped {
            let message = match why {
                Skip::Unencrypted => format!(
                    "refused {ds}: it is not encrypted (encryption=off), and zoffsite sends only raw encrypted streams, so nothing of it was sent. Either move its data into an encrypted dataset (`zfs create -o encryption=on -o keyformat=raw -o keylocation=file:///... NEW`, then copy), or add \"{ds}\" to source.exclude in {}",
                    self.opts.config_path.display()
                ),
                other => format!("{ds}: {other}"),
            };
            if matches!(why, Skip::Unencrypted | Skip::BadProperty { .. }) {
                // In the report as skipped, not as a run error.
                self.events.error(Severity::Partial, &message);
            } else if dry_run {
                self.events.line(&format!("out: {ds} ({why})"));
            }
            self.report.skipped.push(SkippedDataset { dataset: ds.clone(), reason: why.clone(), message });
        }
        if sel.included.is_empty() {
            return self.error(Severity::Partial, "nothing to back up: no encrypted dataset is selected".into());
        }
        let included: Vec<Dataset> = sel.datasets();

        // 2. One snapshot name for the whole run, one `zfs snapshot` per
        // pool; none at all when nothing changed since the last run's
        // snapshot (the targets may still need to catch up to it).
        // Bookmarks come from the same traversal: taking a snapshot adds
        // none, and only this run (under its lock) makes zoffsite's.
        let (before, bookmarks, held) = match zfs.list_snapshots_and_bookmarks(&included) {
            Ok(l) => (l.snapshots, l.bookmarks, l.held),
            Err(e) => return self.error(Severity::Error, format!("cannot list snapshots and bookmarks: {e}")),
        };
        let unchanged: Vec<Option<&SnapshotRow>> = sel
            .included
            .iter()
            .map(|i| if synced { plan::unchanged_since_ours(&i.row, &before, self.opts.now.as_second()) } else { None })
            .collect();
        let snapped = if !self.opts.force_snapshot && unchanged.iter().all(Option::is_some) {
            self.events.line("no selected dataset changed since its last zoffsite snapshot: no new snapshot");
            Snapped {
                new_snaps: unchanged.into_iter().flatten().cloned().collect(),
                source_snaps: by_dataset(before),
                held,
                listed_all: true,
            }
        } else {
            // The properties you set travel inside your encrypted data
            // (never as properties, which would reach the box in the
            // clear), recorded just before a snapshot is taken: reading
            // every property of every dataset is too slow to do on runs
            // that change nothing, so a property-only change is recorded
            // with the next data change.
            record_properties(self.cfg, zfs, &included, dry_run, self.events);
            let taken: BTreeSet<&SnapName> = before.iter().map(|s| &s.snapshot.name).collect();
            let name = plan::snapshot_name(self.opts.now, |n| taken.contains(n));
            self.report.snapshot = Some(name.clone());
            match self.take_snapshots(&included, &name, before, held) {
                Some(s) => s,
                None => return,
            }
        };

        // 3-4. Each target on its own: one failing does not stop the
        // others. The logins started at the top (one session per target,
        // kept open), each now asked what its box holds. A target that
        // cannot be reached does not stop the run: the snapshot is taken
        // anyway, and the box gets it with the next run that reaches it
        // (one `-I` stream for everything pending).
        let mut connected = Vec::new();
        for (target, login) in logins {
            let login = login
                .join()
                .unwrap_or_else(|_| Err(RemoteError::Ssh("internal error: the login thread panicked".into())));
            match login.and_then(|s| list(s, &included)) {
                Ok((session, remote)) => connected.push((target, session, remote)),
                Err(e) => {
                    let msg = format!("target {}: {e}", target.name);
                    self.events.error(Severity::Target, &msg);
                    self.report.targets.push(TargetReport {
                        name: target.name.clone(),
                        error: Some(msg),
                        datasets: Vec::new(),
                        heartbeat: None,
                    });
                }
            }
        }
        let ctx = Sends {
            zfs,
            dry_run,
            now: self.opts.now.as_second(),
            new_snaps: &snapped.new_snaps,
            source_snaps: &snapped.source_snaps,
            bookmarks: &RefCell::new(bookmarks),
            held: &snapped.held,
        };
        for (target, session, remote) in connected {
            let tr = ctx.to_target(target, session, &remote, self.events);
            self.report.targets.push(tr);
        }

        // 5. Source retention, after the holds moved to the new bases.
        if let Some(policy) = &self.cfg.source.keep {
            // The clock now, not at the start of the run: the new snapshot
            // must not look "dated in the future" to retention (which would
            // keep it out of the `last` count and keep one more old
            // snapshot).
            let now = if dry_run { self.opts.now } else { jiff::Timestamp::now().max(self.opts.now) };
            let how = Prune { policy, now, dry_run };
            // The run's own listing, taken after its snapshot, is what
            // retention needs (sends and anchoring add no snapshot; the
            // holds, which did move, are read afresh): one traversal fewer.
            let decisions = if snapped.listed_all {
                let rows: Vec<SnapshotRow> = snapped.source_snaps.values().flatten().cloned().collect();
                // Every snapshot a target confirmed in this run is one of
                // `new_snaps`: with those, `held` covers every hold placed
                // since.
                let held: BTreeSet<Snapshot> =
                    snapped.held.iter().cloned().chain(snapped.new_snaps.iter().map(|n| n.snapshot.clone())).collect();
                prune::prune_listed(zfs, &rows, &held, &how, self.events)
            } else {
                prune::prune(zfs, &included, &how, self.events)
            };
            self.report.pruned = decisions.into_iter().filter(|d| d.destroy).map(|d| d.snapshot).collect();
        }
    }

    /// Takes `name` on every dataset (one call per pool) and returns each
    /// dataset's new snapshot, all its snapshots, those of them that carry
    /// a hold, and whether they cover every one of `included`. `None` when
    /// the source cannot even be listed.
    fn take_snapshots(
        &mut self,
        included: &[Dataset],
        name: &SnapName,
        before: Vec<SnapshotRow>,
        held_before: BTreeSet<Snapshot>,
    ) -> Option<Snapped> {
        let (zfs, dry_run) = (self.zfs, self.opts.dry_run);
        let mut ready: Vec<Dataset> = Vec::new();
        for ds in included {
            if ds.snapshot(name).is_err() {
                self.error(
                    Severity::Partial,
                    format!(
                        "{ds}: its name is too long to add @{name} (ZFS allows 255 bytes); rename it or exclude it"
                    ),
                );
            } else {
                ready.push(ds.clone());
            }
        }
        let mut failed: BTreeSet<Dataset> = BTreeSet::new();
        for group in plan::snapshot_groups(&ready, name) {
            if dry_run {
                self.events.line(&format!("would run: {}", zfs.snapshot_cmd(&group)));
                continue;
            }
            if let Err(e) = zfs.snapshot(&group) {
                self.error(Severity::Partial, format!("cannot snapshot pool {}: {e}", group[0].dataset.pool()));
                failed.extend(group.into_iter().map(|s| s.dataset));
            }
        }
        ready.retain(|d| !failed.contains(d));
        let listed_all = dry_run || ready.len() == included.len();
        let rows =
            if dry_run { Ok((before, held_before)) } else { zfs.list_snapshots(&ready).map(|l| (l.snapshots, l.held)) };
        let (source_snaps, held) = match rows {
            Ok((rows, held)) => (by_dataset(rows), held),
            Err(e) => {
                self.error(Severity::Error, format!("cannot list snapshots: {e}"));
                return None;
            }
        };
        let mut new_snaps = Vec::new();
        for ds in &ready {
            let snaps = source_snaps.get(ds).map(Vec::as_slice).unwrap_or_default();
            match snaps.iter().find(|s| s.snapshot.name == *name) {
                Some(s) => new_snaps.push(s.clone()),
                // A dry run has no new snapshot yet: plan with a stand-in
                // that is newer than everything and matches no GUID on the
                // box.
                None if dry_run => new_snaps.push(SnapshotRow {
                    snapshot: ds.snapshot(name).expect("length checked"),
                    guid: Guid::new(u64::MAX).expect("non-zero"),
                    createtxg: u64::MAX,
                    creation: jiff::Timestamp::now().as_second(),
                }),
                None => {
                    self.error(Severity::Partial, format!("{ds}@{name} vanished right after it was taken; not sent"));
                }
            }
        }
        Some(Snapped { new_snaps, source_snaps, held, listed_all })
    }
}

fn by_dataset(rows: Vec<SnapshotRow>) -> SourceSnaps {
    let mut m: BTreeMap<Dataset, Vec<SnapshotRow>> = BTreeMap::new();
    for r in rows {
        m.entry(r.snapshot.dataset.clone()).or_default().push(r);
    }
    m
}

/// Writes each configured root's properties manifest
/// (`zoffsite_core::manifest`) at the top of its mounted filesystem, when
/// it changed. Returns whether any did. Not being able to write one is a
/// warning: the data is still backed up, only its properties would not
/// come back by themselves.
fn record_properties(cfg: &Config, zfs: &Zfs, included: &[Dataset], dry_run: bool, events: &mut dyn Events) -> bool {
    let mut changed = false;
    for root in cfg.source.datasets.iter().filter(|r| included.contains(r)) {
        let under: Vec<Dataset> = included.iter().filter(|d| d.is_within(root)).cloned().collect();
        let mut attempt = || -> Result<bool, String> {
            let rows = zfs.local_properties(&under).map_err(|e| crate::events::with_causes(&e))?;
            // Every dataset of the tree this run backs up, so that a restore
            // of this point can tell its children from ones added later.
            let text = zoffsite_core::manifest::build(root, &under, &rows).render();
            let mountpoint = zfs.get_value(root.as_str(), "mountpoint").map_err(|e| crate::events::with_causes(&e))?;
            let mounted = || zfs.get_value(root.as_str(), "mounted").map_err(|e| crate::events::with_causes(&e));
            if !mountpoint.starts_with('/') || mounted()? != "yes" {
                return Err(format!(
                    "it is not mounted here (mountpoint={mountpoint}), so there is nowhere to keep them"
                ));
            }
            let path = Path::new(&mountpoint).join(zoffsite_core::manifest::MANIFEST_PATH);
            // No symlink followed, in a directory only root may write.
            let changed = crate::manifest_file::write(Path::new(&mountpoint), &text, dry_run)
                .map_err(|e| crate::events::with_causes(&e))?;
            if !changed {
                return Ok(false);
            }
            if dry_run {
                events.line(&format!("would record the properties of {root} in {}", path.display()));
                return Ok(true);
            }
            tracing::info!(root = %root, path = %path.display(), "recorded the properties manifest");
            Ok(true)
        };
        match attempt() {
            Ok(c) => changed |= c,
            Err(e) => events.warn(&format!(
                "the properties of {root} are not recorded for restores: {e}. The data is backed up; only properties like mountpoint and compression would have to be set again by hand after a restore"
            )),
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
    dry_run: bool,
    /// The run's start (Unix seconds): what a confirmation records.
    now: i64,
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
}

/// One target's part of the run, as it goes.
struct TargetRun<'a> {
    name: &'a str,
    report: TargetReport,
    /// Datasets that failed on this target: their children wait.
    failed: BTreeSet<Dataset>,
    events: &'a mut dyn Events,
}

impl TargetRun<'_> {
    /// `ds` failed on this target: reported, recorded, and its children
    /// wait for the next run.
    fn fail(&mut self, severity: Severity, ds: &Dataset, send: Option<Send>, msg: String) {
        self.events.error(severity, &format!("target {}: {ds}: {msg}", self.name));
        self.report.datasets.push(DatasetReport::failed(ds, send, msg));
        self.failed.insert(ds.clone());
    }

    fn line(&mut self, ds: &Dataset, what: &str) {
        self.events.line(&format!("{}: {ds}: {what}", self.name));
    }
}

impl Sends<'_> {
    fn to_target(
        &self,
        target: &Target,
        mut session: Session,
        remote: &BTreeMap<Dataset, RemoteDataset>,
        events: &mut dyn Events,
    ) -> TargetReport {
        let Sends { zfs, dry_run, now, new_snaps, source_snaps, bookmarks, held } = *self;
        let mut t = TargetRun {
            name: &target.name,
            report: TargetReport { name: target.name.clone(), error: None, datasets: Vec::new(), heartbeat: None },
            failed: BTreeSet::new(),
            events,
        };
        // Snapshots the box now provably holds: the next incremental's bases.
        let mut confirmed: Vec<&SnapshotRow> = Vec::new();
        for new in new_snaps {
            let ds = &new.snapshot.dataset;
            if let Some(p) = plan::failed_ancestor(ds, &t.failed) {
                let msg = plan::Blocked::ParentFailed(p.clone()).to_string();
                t.fail(Severity::Partial, ds, None, msg);
                continue;
            }
            let box_ds = session.root.join(ds).unwrap_or_else(|_| session.root.clone());
            let snaps = source_snaps.get(ds).map(Vec::as_slice).unwrap_or_default();
            let bms: Vec<BookmarkRow> =
                bookmarks.borrow().iter().filter(|b| b.bookmark.dataset == *ds).cloned().collect();
            // An interrupted transfer is finished first (or discarded when
            // the source can no longer continue it); the box's view is
            // updated so the plan below starts from what the box now holds.
            let mut here = remote.get(ds).cloned();
            let mut resumed_bytes = None;
            if let Some(r) = here.as_mut().filter(|r| r.resume_token.is_some()) {
                if dry_run {
                    t.line(ds, "would resume an interrupted transfer first");
                    r.resume_token = None;
                } else {
                    match resume(zfs, &mut session, ds, r, snaps, t.events) {
                        Ok((msg, bytes)) => {
                            t.line(ds, &msg);
                            resumed_bytes = Some(bytes);
                        }
                        Err(e) => {
                            let fatal = !matches!(
                                e,
                                ResumeFailure::Refused(_)
                                    | ResumeFailure::Remote(RemoteError::Refused { .. } | RemoteError::Send(_))
                            );
                            t.fail(if fatal { Severity::Target } else { Severity::Partial }, ds, None, e.to_string());
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
                    t.fail(Severity::Partial, ds, None, b.to_string());
                    continue;
                }
            };
            let (from, from_guid) = match &send {
                Send::UpToDate { at } => {
                    t.line(ds, &format!("box already holds {at}"));
                    let mut row = DatasetReport::done(ds, DatasetStatus::Ok, send, Some(0));
                    row.resumed_bytes = resumed_bytes;
                    t.report.datasets.push(row);
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
            let from_arg = from.as_ref().map(|(n, k)| (n, *k));
            let cmd = zfs.send_raw(&new.snapshot, from_arg);
            // The estimate feeds the dry-run plan and the progress bar's
            // ETA; the snapshot of a dry run does not exist yet, so its
            // estimate is from the newest existing state of the dataset.
            let estimate = if dry_run || t.events.wants_progress() {
                let snap = if dry_run && new.guid.get() == u64::MAX { None } else { Some(&new.snapshot) };
                snap.and_then(|s| zfs.estimate(s, from_arg).ok())
            } else {
                None
            };
            if dry_run {
                let size = estimate.map_or_else(|| "size known once the snapshot exists".to_owned(), human::bytes);
                t.line(ds, &format!("would send {} ({size}; {cmd})", describe(&send)));
                let mut row = DatasetReport::done(ds, DatasetStatus::Planned, send, None);
                row.estimated_bytes = estimate;
                t.report.datasets.push(row);
                continue;
            }
            let running = match Running::with_stdout(&cmd) {
                Ok(r) => r,
                Err(e) => {
                    t.fail(Severity::Error, ds, Some(send), format!("cannot start zfs send: {e}"));
                    continue;
                }
            };
            let req = Request::Receive {
                dataset: ds.clone(),
                snapshot: new.snapshot.name.clone(),
                guid: new.guid,
                from: from_guid,
                resume: false,
            };
            let result = transfer(&mut session, &req, running, &format!("{}: {ds}", target.name), estimate, t.events);
            match result {
                Ok((guid, bytes)) if guid == new.guid => {
                    t.line(
                        ds,
                        &format!(
                            "sent {}, {}; the box holds it with the same GUID",
                            describe(&send),
                            human::bytes(bytes)
                        ),
                    );
                    let mut row = DatasetReport::done(ds, DatasetStatus::Ok, send, Some(bytes));
                    row.resumed_bytes = resumed_bytes;
                    t.report.datasets.push(row);
                    confirmed.push(new);
                }
                Ok((guid, _)) => {
                    let msg = format!(
                        "the box reports GUID {guid} for @{}, but the source's is {}: not verified",
                        new.snapshot.name, new.guid
                    );
                    t.fail(Severity::Partial, ds, Some(send), msg);
                }
                Err(e @ (RemoteError::Refused { .. } | RemoteError::Send(_))) => {
                    t.fail(Severity::Partial, ds, Some(send), e.to_string());
                }
                Err(e) => {
                    // The session is gone: the rest of this target waits for
                    // the next run.
                    t.fail(Severity::Target, ds, Some(send), e.to_string());
                    t.report.error = Some(format!("target {}: {e}", target.name));
                    break;
                }
            }
        }
        // The heartbeat (the run is over, and the box holds the source's
        // newest of each confirmed dataset: its `box check` may take that
        // as an excuse, for a bounded time, for no new data), the goodbye
        // (the box finishes its bookkeeping and ssh exits), and anchoring
        // the chain here are independent: do them at once. No heartbeat
        // from a dry run, or over a session that was lost.
        let beats: Vec<HeartbeatDataset> =
            confirmed.iter().map(|c| HeartbeatDataset { name: c.snapshot.dataset.clone(), guid: c.guid }).collect();
        let beat = !dry_run && t.report.error.is_none();
        let (heard, anchored) = std::thread::scope(|scope| {
            let closing = scope.spawn(move || {
                let heard = beat.then(|| session.heartbeat(&beats));
                session.close();
                heard
            });
            let anchored = (!dry_run).then(|| {
                let anchored = anchor_chain(zfs, &target.name, &confirmed, source_snaps, bookmarks, held);
                (anchored, record_confirmations(zfs, target, &confirmed, now))
            });
            (closing.join().unwrap_or_else(|p| std::panic::resume_unwind(p)), anchored)
        });
        if let Some((anchored, recorded)) = anchored {
            if let Err(e) = anchored {
                let msg = format!("target {}: could not protect the next incremental's base: {e}", target.name);
                t.events.error(Severity::Partial, &msg);
                t.report.error.get_or_insert(msg);
            }
            if let Err(e) = recorded {
                t.events.warn(&format!(
                    "target {}: could not record this run's confirmation on the source's snapshots ({e}); `status` counts the box's data from when it was taken until a run records one",
                    target.name
                ));
            }
        }
        match heard {
            Some(Ok(Heard::Recorded(n))) => {
                if usize::try_from(n).is_ok_and(|n| n < confirmed.len()) {
                    t.events.warn(&format!(
                        "target {}: the box recorded the heartbeat of {n} of {} datasets (its newest snapshot of the others is not the one this run confirmed)",
                        target.name,
                        confirmed.len()
                    ));
                }
                t.report.heartbeat = Some(n);
            }
            Some(Ok(Heard::Unsupported)) => t.events.warn(&format!(
                "target {}: the box's zoffsite is too old to record heartbeats, so its `box check` reports a dataset that did not change as stale after max_age; update zoffsite on the box",
                target.name
            )),
            Some(Err(e)) => t.events.warn(&format!(
                "target {}: the box did not record this run's heartbeat ({e}); its `box check` may report datasets that did not change as stale",
                target.name
            )),
            None => {}
        }
        t.report
    }
}

/// Streams `send` into the box with `req`, showing progress under `label`.
fn transfer(
    session: &mut Session,
    req: &Request,
    send: Running,
    label: &str,
    estimate: Option<u64>,
    events: &mut dyn Events,
) -> Result<(Guid, u64), RemoteError> {
    events.progress(Progress::Start { label, estimate });
    let result = session.receive(req, send, &mut |n| events.progress(Progress::Bytes(n)));
    events.progress(Progress::Done);
    result
}

/// Keeps the next incremental possible for every `confirmed` snapshot (the
/// newest the target holds): a bookmark of it, which survives the
/// snapshot's destruction, and the target's hold on it, which stops the
/// snapshot being destroyed at all. The new hold is placed before the old
/// ones are released, so the base is never unprotected
/// ([`holds::after_confirmation`]).
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
    // This target's tag can only be on a snapshot that carried a hold when
    // listed: only zoffsite places it, and under the run lock.
    let ours = holds::held_ours(
        confirmed.iter().flat_map(|c| source_snaps.get(&c.snapshot.dataset).into_iter().flatten()),
        held,
    );
    let current = zfs.holds(&ours)?;
    let confirmed: Vec<Snapshot> = confirmed.iter().map(|c| c.snapshot.clone()).collect();
    let tag = holds::tag(target);
    for step in holds::after_confirmation(target, &confirmed, &current) {
        match step {
            Step::Hold(snaps) => snaps.chunks(ARGV_CHUNK).try_for_each(|c| zfs.hold(&tag, c))?,
            Step::Release(snaps) => snaps.chunks(ARGV_CHUNK).try_for_each(|c| zfs.release(&tag, c))?,
        }
    }
    Ok(())
}

/// Records, on each snapshot `target` confirmed holding in this run, the
/// run's start `now` in the target's
/// [`confirmed_property`](zoffsite_core::status::confirmed_property): from
/// then on the box held data at least as new as the source's (the run's
/// own snapshot, or the newest one when nothing had changed since), which
/// is what `status` ages the box's copy by. Only where that is due again
/// ([`zoffsite_core::status::confirmation_due`]): a snapshot this run
/// sent is as new as its creation says, and one confirmed within the
/// refresh needs no new record; each `zfs set` is a pool sync per
/// snapshot. The recorded values are read only for snapshots older than
/// the refresh. The first confirmed snapshot is always written: `status`
/// takes the newest confirmation as the target's last backup run, which
/// stays exact for the price of one name a run.
fn record_confirmations(zfs: &Zfs, target: &Target, confirmed: &[&SnapshotRow], now: i64) -> Result<(), ZfsError> {
    use zoffsite_core::status::{confirmation_due, confirmed_property, parse_confirmations};
    let Some(first) = confirmed.first() else { return Ok(()) };
    let prop = confirmed_property(&target.name);
    let old: Vec<&SnapshotRow> =
        confirmed[1..].iter().copied().filter(|c| confirmation_due(c.creation, None, now, target.max_age)).collect();
    let stored = if old.is_empty() {
        BTreeMap::new()
    } else {
        let names: Vec<String> = old.iter().map(|c| c.snapshot.to_string()).collect();
        // Unread, every one is written, as before there was a refresh.
        match zfs.local_values(&names, &prop) {
            Ok(rows) => parse_confirmations(&rows.into_iter().collect::<Vec<_>>()),
            Err(e) => {
                tracing::debug!("cannot read {prop} ({e}): writing every confirmation");
                BTreeMap::new()
            }
        }
    };
    let due: Vec<String> = std::iter::once(first.snapshot.to_string())
        .chain(
            old.iter()
                .filter(|c| confirmation_due(c.creation, stored.get(&c.snapshot).copied(), now, target.max_age))
                .map(|c| c.snapshot.to_string()),
        )
        .collect();
    zfs.set_user_property(&due, &prop, &now.to_string())
}

/// The confirmations [`record_confirmations`] made for `target` of the
/// snapshots the box holds as its newest of each of `datasets` (`remote`:
/// the box's listing), as `status` reads them
/// ([`zoffsite_core::status::evaluate`]).
pub fn confirmations(
    zfs: &Zfs,
    target: &str,
    datasets: &[Dataset],
    snaps: &[SnapshotRow],
    remote: &BTreeMap<Dataset, RemoteDataset>,
) -> Result<BTreeMap<Snapshot, i64>, ZfsError> {
    let names: Vec<String> = datasets
        .iter()
        .filter_map(|d| zoffsite_core::status::box_newest_on_source(d, snaps, remote.get(d)))
        .map(|s| s.to_string())
        .collect();
    if names.is_empty() {
        return Ok(BTreeMap::new());
    }
    let rows = zfs.local_values(&names, &zoffsite_core::status::confirmed_property(target))?;
    let rows: Vec<(String, String)> = rows.into_iter().collect();
    Ok(zoffsite_core::status::parse_confirmations(&rows))
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
    events: &mut dyn Events,
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
            // Said on stderr; the run's outcome does not change.
            events.error(
                Severity::Ok,
                &format!(
                    "{ds}: ZFS cannot resolve the box's resume token ({e}); discarding that partial receive on the box"
                ),
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
    let req = Request::Receive {
        dataset: ds.clone(),
        snapshot: row.snapshot.name.clone(),
        guid: row.guid,
        from: box_newest,
        resume: true,
    };
    let (guid, bytes) = transfer(session, &req, running, &format!("resume: {ds}"), None, events)?;
    if guid != row.guid {
        return Err(ResumeFailure::Refused(format!("after resuming, the box reports GUID {guid}, not {}", row.guid)));
    }
    let txg = remote.snapshots.iter().map(|s| s.createtxg).max().unwrap_or(0) + 1;
    remote.snapshots.push(RemoteSnapshot { name: row.snapshot.name.clone(), guid, createtxg: txg });
    remote.resume_token = None;
    remote.exists = true;
    Ok((format!("resumed the interrupted transfer of @{}: {} more", row.snapshot.name, human::bytes(bytes)), bytes))
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

#[cfg(test)]
mod tests {
    //! The run's wiring without ssh or root: the source is a fake machine
    //! (`zoffsite_testkit`'s stateful fake `zfs`), each target a real
    //! `proto::server::Server` on a thread, reached through `Session::over`,
    //! on a fake machine of its own. Streams are not sent here (whole runs
    //! that send are in zoffsite-testkit's tests).
    use super::*;
    use std::time::Duration;

    use crate::events::Recorded;
    use crate::proto::client::Peer;
    use crate::proto::server::Server;
    use zoffsite_testkit::fake::world::Snap;
    use zoffsite_testkit::FakeZfs;

    const OLD: &str = "zoffsite-20251231T000000Z";
    const NEW: &str = "zoffsite-20260101T000000Z";

    /// A source with an encrypted tank/data holding @OLD and @NEW (taken
    /// at those times), and `holds` (tags) on @OLD.
    fn source(holds: &[&str]) -> FakeZfs {
        let f = FakeZfs::new();
        f.create("tank/data", true).write("tank/data", 4096);
        for (name, at) in [(OLD, 1_767_139_200), (NEW, 1_767_225_600)] {
            f.world(|w| w.clock = Some(at));
            f.snapshot(&format!("tank/data@{name}"));
        }
        f.world(|w| w.clock = None);
        for tag in holds {
            assert!(f.run(&["hold", tag, &format!("tank/data@{OLD}")]).status.success());
        }
        f.clear_log();
        f
    }

    /// Nothing to end: the box is a thread that ends with its input.
    struct InProcess;

    impl Peer for InProcess {
        fn kill(&self) {}
        fn end(&self, _grace: Duration) {}
    }

    /// Connects "away" to nothing (unreachable) and every other target to
    /// a box under `offsite/home` that holds what `src` has of tank/data
    /// (an earlier run sent it and did not get to move its hold).
    fn boxes(src: &FakeZfs) -> (FakeZfs, Arc<Connect>) {
        let the_box = FakeZfs::new();
        the_box.box_root("offsite/home");
        let held = src.read(|w| w.datasets["tank/data"].snapshots.clone());
        the_box.world(|w| {
            w.create("offsite/home/tank", &[]).unwrap();
            w.create("offsite/home/tank/data", &[]).unwrap();
            for s in held {
                let createtxg = w.next_txg();
                w.ds_mut("offsite/home/tank/data").unwrap().snapshots.push(Snap {
                    createtxg,
                    holds: Default::default(),
                    ..s
                });
            }
        });
        let zfs = the_box.path();
        let connect = Arc::new(move |t: &Target| {
            if t.name == "away" {
                return Err(RemoteError::Unreachable { host: t.host.clone(), detail: "No route to host".into() });
            }
            let (to_box_r, to_box_w) = std::io::pipe().unwrap();
            let (from_box_r, from_box_w) = std::io::pipe().unwrap();
            let input = std::fs::File::from(std::os::fd::OwnedFd::from(to_box_r));
            let mut server =
                Server::new(Zfs::with_binary(&zfs), Dataset::new("offsite/home").unwrap(), input, from_box_w);
            std::thread::spawn(move || server.serve());
            Session::over(from_box_r, to_box_w, InProcess)
        });
        (the_box, connect)
    }

    fn config(targets: &[&str], keep: &str) -> Config {
        let mut text = format!("[source]\ndatasets = [\"tank/data\"]\n{keep}\n");
        for t in targets {
            text.push_str(&format!(
                "[[target]]\nname = \"{t}\"\nhost = \"10.77.0.2\"\nuser = \"root\"\nidentity_file = \"/nonexistent/id\"\nknown_hosts = \"/nonexistent/kh\"\n"
            ));
        }
        Config::parse(&text).unwrap()
    }

    fn options(dry_run: bool, connect: Arc<Connect>) -> Options<'static> {
        Options {
            dry_run,
            force_snapshot: false,
            config_path: Path::new("/etc/zoffsite/test.toml"),
            now: "2026-01-02T00:00:00Z".parse().unwrap(),
            connect,
        }
    }

    #[test]
    fn two_targets_each_move_their_own_hold_and_the_old_base_is_pruned() {
        // Nothing changed since NEW, which both boxes hold; both targets'
        // holds are still on OLD. The first target bookmarks NEW, the
        // second finds that bookmark (3c7a11d: it tried to make it again,
        // failed, and never moved its hold); each moves its own tag, new
        // hold first; then OLD, held by nobody, is pruned.
        let src = source(&["zoffsite-friend", "zoffsite-other"]);
        let cfg = config(&["friend", "other"], "[source.keep]\nlast = 1\n");
        let mut ev = Recorded::default();
        let (_box, connect) = boxes(&src);
        let report = backup(&cfg, &Zfs::with_binary(src.path()), &options(false, connect), &mut ev);
        assert_eq!(ev.worst, Severity::Ok, "{:?}", ev.errors);
        assert_eq!(report.snapshot, None, "nothing changed: no snapshot");
        assert_eq!(report.targets.len(), 2);
        for t in &report.targets {
            assert_eq!(t.error, None);
            assert!(matches!(&t.datasets[..], [d] if d.status == DatasetStatus::Ok && d.bytes == Some(0)), "{t:?}");
        }
        assert_eq!(report.pruned.iter().map(ToString::to_string).collect::<Vec<_>>(), [format!("tank/data@{OLD}")]);
        assert_eq!(src.holds(&format!("tank/data@{NEW}")), ["zoffsite-friend", "zoffsite-other"]);
        assert_eq!(src.snapshot_names("tank/data"), [NEW]);
        let log = src.log();
        let at = |line: &str| log.lines().position(|l| l == line).unwrap_or_else(|| panic!("no `{line}` in\n{log}"));
        assert_eq!(log.lines().filter(|l| l.starts_with("bookmark ")).count(), 1, "{log}");
        for t in ["friend", "other"] {
            assert!(
                at(&format!("hold zoffsite-{t} tank/data@{NEW}"))
                    < at(&format!("release zoffsite-{t} tank/data@{OLD}"))
            );
        }
        assert!(at(&format!("release zoffsite-other tank/data@{OLD}")) < at(&format!("destroy tank/data@{OLD}")));
        assert!(ev.lines.iter().any(|l| l.starts_with("friend: tank/data: box already holds @")), "{:?}", ev.lines);
        assert!(ev.lines.contains(&format!("tank/data@{OLD}: destroy")), "{:?}", ev.lines);
    }

    #[test]
    fn a_dry_run_plans_refuses_and_reports_an_unreachable_target_without_changing_anything() {
        let src = source(&[]);
        src.create("tank/data/plain", false).write("tank/data", 4096).clear_log();
        let cfg = config(&["friend", "away"], "");
        let mut ev = Recorded::default();
        let (_box, connect) = boxes(&src);
        let report = backup(&cfg, &Zfs::with_binary(src.path()), &options(true, connect), &mut ev);
        assert_eq!(ev.worst, Severity::Target, "{:?}", ev.errors);
        assert!(report.dry_run);
        assert_eq!(report.snapshot.as_ref().map(SnapName::as_str), Some("zoffsite-20260102T000000Z"));
        // The unencrypted child: refused by name, with the fix, as skipped.
        assert_eq!(report.skipped.len(), 1);
        assert!(report.skipped[0].message.starts_with("refused tank/data/plain: it is not encrypted"));
        assert!(report.skipped[0].message.ends_with("source.exclude in /etc/zoffsite/test.toml"));
        assert!(report.errors.is_empty(), "{:?}", report.errors);
        // The unreachable target is reported as it is found; the other plans.
        assert_eq!(report.targets[0].name, "away");
        assert!(report.targets[0].error.as_deref().unwrap().starts_with("target away: cannot reach the box"));
        let friend = &report.targets[1];
        assert!(
            matches!(&friend.datasets[..], [d] if d.status == DatasetStatus::Planned && matches!(d.send, Some(Send::Incremental { .. }))),
            "{friend:?}"
        );
        let severities: Vec<Severity> = ev.errors.iter().map(|(s, _)| *s).collect();
        assert_eq!(severities, [Severity::Partial, Severity::Target], "{:?}", ev.errors);
        assert!(
            ev.lines
                .iter()
                .any(|l| l.starts_with("would run: ") && l.ends_with(" snapshot tank/data@zoffsite-20260102T000000Z")),
            "{:?}",
            ev.lines
        );
        assert!(
            ev.lines.iter().any(|l| l.starts_with(&format!("friend: tank/data: would send incremental @{NEW}"))),
            "{:?}",
            ev.lines
        );
        // Only listings ran (and reads of the properties, which have
        // nowhere to go here: tank/data is not mounted; a warning).
        let log = src.log();
        assert!(
            log.lines().all(|l| l.starts_with("list ") || l.starts_with("get ") || l == "zpool sync tank"),
            "{log}"
        );
        assert_eq!(ev.warnings.len(), 1, "{:?}", ev.warnings);
    }

    #[test]
    fn causes_are_told_as_anyhow_told_them() {
        let e = ZfsError::Exec(crate::process::ExecError::Spawn {
            program: "zfs".into(),
            source: std::io::Error::from(std::io::ErrorKind::NotFound),
        });
        assert_eq!(crate::events::with_causes(&e), "cannot run zfs: entity not found: entity not found");
    }
}
