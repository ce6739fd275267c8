//! Restore: bring a dataset tree back from a box, over the network (a
//! [`Session`] with `serve`) or from the box's pool imported on this machine
//! ([`Origin::Pool`]); and the one "send raw into a sink" that restore,
//! drill ([`crate::drill`]) and the box's `Send` ([`crate::proto::server`])
//! share: [`RawSend`] pumps a running `zfs send -w` into a sink, [`receive`]
//! takes a box's (or the imported pool's) stream into a new local dataset,
//! bounded and checked ([`CheckedSink`]).
//!
//! Invariants:
//! - The box only ever hands over raw streams, and keys stay here: the
//!   restored datasets are encrypted exactly as they were sent.
//! - The stream comes from the box, so it is hostile input: every record
//!   header is checked (raw, one snapshot, the GUID the box listed) before
//!   the chunk that carries it reaches `zfs receive`.
//! - Nothing local is overwritten or destroyed: destinations must not
//!   exist, receives never use `-F`.
//! - Each received dataset is its own encryption root (per-dataset raw
//!   sends), wrapped exactly as the box holds it, and stays so: restore
//!   never changes a key. The box pinned each dataset's wrapped key at its
//!   first receive and refuses any other (`serve`), so a re-wrapped key
//!   (`zfs change-key`, `-i` included) would stop the backups that follow
//!   a restore in place. One key file still unlocks the tree: on the
//!   source every child's key was wrapped with the top's, so
//!   `--keylocation` is set on every restored dataset (a plain property,
//!   not part of the wrapped key) and `zfs load-key -r` loads them all.
//! - Children are matched by name on the box, which a compromised source
//!   can add to. So the top comes first, its key is loaded, and its
//!   snapshot's own properties manifest (encrypted, written before that
//!   snapshot) says which children belong to that point; only those are
//!   received (`restore::vet_children`). Without that list, children come
//!   back only with `--children-unverified`.
//! - The manifest's properties are applied only as far as they are data
//!   properties (`manifest::is_data_property`), unless `--apply-properties
//!   all`; the rest is named.
//! - `--from-pool` refuses a box pool that is writable, has no altroot, or
//!   has anything mounted: the box must not decide what this machine mounts.
//! - Bounded ([`zoffsite_core::limits`]): the box's bytes count against a
//!   limit before they reach the checks or `zfs receive`, the whole restore
//!   against a time limit, and every child process has a deadline
//!   ([`bounded_zfs`]): a box cannot fill the pool, nor hang the restore
//!   (e.g. with a huge `pbkdf2iters` that `zfs load-key` would grind on).
//! - Decrypted data is only looked at in a private directory
//!   (`/run/zoffsite/...`, 0700), mounted `nosuid,nodev,noexec`, and read
//!   without following symlinks.
//!
//! Nothing here prints: [`restore()`] reports through [`Events`].

use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::time::{Duration, Instant};

use zoffsite_core::boxside;
use zoffsite_core::human;
use zoffsite_core::limits::{self, ByteBudget};
use zoffsite_core::manifest::{Apply, Manifest, ManifestError};
use zoffsite_core::names::{Dataset, Guid, NameError, SnapName, Snapshot};
use zoffsite_core::protocol::{self, RemoteDataset};
use zoffsite_core::records::{Expect, StreamError, StreamValidator};
use zoffsite_core::report::Severity;
use zoffsite_core::restore::{self, Plan, Report, Request, Step, Witness};

use crate::events::{Events, Progress};
use crate::manifest_file::ManifestFileError;
use crate::process::{Cmd, ExecError, Output, Running};
use crate::proto::client::{RemoteError, Session};
use crate::rundir::RunDirError;
use crate::system::SystemError;
use crate::zfs::{Zfs, ZfsError};

/// How long each zfs command of a restore or drill may run: listing a
/// large imported box pool is the slowest, and takes minutes at worst.
pub const CHILD_DEADLINE: Duration = Duration::from_secs(10 * 60);
/// How long `zfs load-key` may run. It derives the wrapping key in userland
/// with the dataset's `pbkdf2iters`, which the received stream sets: the
/// default (350,000) takes well under a second, a hundred times that under
/// a minute; a box that raised it to billions is stopped here.
pub const LOAD_KEY_DEADLINE: Duration = Duration::from_secs(2 * 60);

/// Bytes read from a `zfs send` at once: one data frame of the protocol
/// at most, so the box's `Send` forwards each read as one frame.
const CHUNK: usize = protocol::MAX_DATA_LEN;

/// `zfs` with the deadlines of a restore or drill.
pub fn bounded_zfs(zfs: Zfs) -> Zfs {
    zfs.with_deadlines(CHILD_DEADLINE, LOAD_KEY_DEADLINE)
}

/// Why a restore or drill step failed. Each wrapped error shows as itself
/// (and keeps its causes), so messages read as the failing call's own.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error(transparent)]
    Zfs(#[from] ZfsError),
    #[error(transparent)]
    Exec(#[from] ExecError),
    #[error(transparent)]
    Remote(#[from] RemoteError),
    #[error(transparent)]
    Send(#[from] RawSendError),
    #[error(transparent)]
    Name(#[from] NameError),
    #[error(transparent)]
    Io(#[from] io::Error),
    #[error(transparent)]
    RunDir(#[from] RunDirError),
    #[error(transparent)]
    System(#[from] SystemError),
    #[error(transparent)]
    ManifestFile(#[from] ManifestFileError),
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    #[error("{0}")]
    Other(String),
}

/// What a restore or drill accepts from the box ([`zoffsite_core::limits`]).
#[derive(Debug)]
pub struct Limits {
    pub bytes: ByteBudget,
    /// When the whole restore or drill must be done.
    pub deadline: Instant,
    pub max_time: Duration,
    /// Where the time limit comes from, for the error.
    pub time_why: String,
}

impl Limits {
    pub fn new(bytes: ByteBudget, max_time: Duration, time_why: impl Into<String>) -> Self {
        Self { bytes, deadline: Instant::now() + max_time, max_time, time_why: time_why.into() }
    }

    fn out_of_time(&self) -> String {
        format!("did not finish within {} ({}): stopped", human::duration(self.max_time), self.time_why)
    }
}

/// Where the streams come from.
pub enum Origin {
    Box(Box<Session>),
    Pool(Dataset),
}

impl Origin {
    /// Says goodbye to the box, if it is one.
    pub fn close(self) {
        if let Origin::Box(s) = self {
            s.close();
        }
    }
}

/// What to restore, and how: what `zoffsite restore` was asked.
#[derive(Debug, Clone)]
pub struct Options {
    /// Which dataset and snapshot, where to, with or without children.
    pub request: Request,
    /// Set as every restored dataset's keylocation, keys loaded and the
    /// tree mounted; `None`: left locked, and how to unlock it is said.
    pub keylocation: Option<String>,
    /// Bring back children the restored point's manifest cannot vouch for.
    pub children_unverified: bool,
    /// Which recorded properties are set again.
    pub apply: Apply,
    /// Say what would be restored where; change nothing.
    pub dry_run: bool,
    /// `--max-bytes`; `None`: the destination pool's available less a
    /// twentieth.
    pub max_bytes: Option<u64>,
    /// `--max-time`; `None`: the default for the byte limit.
    pub max_time: Option<Duration>,
}

/// Restores `opts.request` from `origin`, reporting every step and failure
/// through `events` (the worst severity reported is the outcome), and
/// returns what was (or with `-n` would be) done: as far as it got. Every
/// zfs command runs with [`bounded_zfs`]'s deadlines.
pub fn restore(zfs: &Zfs, origin: Origin, opts: &Options, events: &mut dyn Events) -> Report {
    let mut report = Report { dry_run: opts.dry_run, keylocation: opts.keylocation.clone(), ..Report::default() };
    run(zfs, origin, opts, events, &mut report);
    report
}

/// [`restore()`], filling `report`.
fn run(zfs: &Zfs, mut origin: Origin, opts: &Options, events: &mut dyn Events, report: &mut Report) {
    let zfs = &bounded_zfs(zfs.clone());
    let dataset = &opts.request.dataset;
    if let Origin::Pool(root) = &origin {
        // Before anything is read from it: what the box stored must not
        // already be mounted here, nor be mountable later.
        let checked = zfs
            .imported_pool(root.pool())
            .map_err(|e| e.to_string())
            .and_then(|state| restore::check_imported_pool(root.pool(), &state).map_err(|e| e.to_string()));
        if let Err(e) = checked {
            events.error(Severity::Error, &format!("refusing --from-pool {root}: {e}"));
            return;
        }
    }
    let listing = match list(zfs, &mut origin, dataset) {
        Ok(l) => l,
        Err(e) => {
            events.error(Severity::Target, &format!("cannot list what the box holds of {dataset}: {e}"));
            return;
        }
    };
    let mut exists_failure = None;
    let plan = restore::plan(&opts.request, &listing, |d| match zfs.exists(d) {
        Ok(e) => e,
        Err(e) => {
            exists_failure = Some(e.to_string());
            true
        }
    });
    if let Some(e) = exists_failure {
        events.error(Severity::Error, &format!("cannot check the local datasets: {e}"));
        return;
    }
    let plan = match plan {
        Ok(p) => p,
        Err(e) => {
            events.error(Severity::Error, &e.to_string());
            return;
        }
    };
    *report = Report { keylocation: report.keylocation.take(), ..Report::planned(opts.dry_run, &plan.steps) };
    for (d, why) in &plan.skipped {
        report.left_out(d, why);
        events.error(Severity::Partial, &format!("left out {d}: {why}"));
    }
    let mut limits = match restore_limits(zfs, opts, &plan) {
        Ok(l) => l,
        Err(e) => {
            events.error(Severity::Error, &crate::events::with_causes(&e));
            return;
        }
    };
    report.max_bytes = Some(limits.bytes.limit());
    report.max_time = Some(limits.max_time.as_secs());
    events.line(&format!(
        "accepting at most {} from the box ({}), for at most {} ({})",
        human::bytes(limits.bytes.limit()),
        if opts.max_bytes.is_some() { "--max-bytes" } else { "the default" },
        human::duration(limits.max_time),
        limits.time_why
    ));
    let top = plan.steps[0].clone();
    let candidates = plan.steps.len() - 1;
    // Which children belong to the restored point is recorded inside its
    // encrypted data: without the key, nothing can check them.
    let unchecked = candidates > 0 && opts.keylocation.is_none() && !opts.children_unverified;
    let refusal = format!(
        "the box holds {candidates} dataset(s) below {} under @{}, and which of them were part of the tree at that point is recorded inside the encrypted data, so restore needs the key to check them (the box, or a compromised source, can add children under an old snapshot's name): give --keylocation URI, or --no-children, or --children-unverified to bring back whatever the box holds under that name",
        top.source, top.snapshot
    );
    if opts.dry_run {
        for (i, s) in plan.steps.iter().enumerate() {
            let note = match (i, opts.keylocation.is_some()) {
                (0, _) => "",
                (_, true) => " if the manifest of that point lists it",
                (_, false) => " unchecked (--children-unverified)",
            };
            events.line(&format!("would restore {}@{} (guid {}) as {}{note}", s.source, s.snapshot, s.guid, s.dest));
        }
        if unchecked {
            events.error(Severity::Usage, &format!("without -n this would be refused: {refusal}"));
        }
        return;
    }
    if unchecked {
        events.error(Severity::Usage, &refusal);
        return;
    }
    if !receive_step(zfs, &mut origin, &top, &mut limits, events, report) {
        origin.close();
        return;
    }
    // The top's key, then its snapshot's manifest: which children belong
    // to this point, and the properties to set again.
    let (manifest, witness) = match &opts.keylocation {
        Some(uri) => {
            if let Err(e) = unlock(zfs, &top.dest, uri) {
                events.error(Severity::Error, &format!("{e}; nothing below {} was restored", top.dest));
                origin.close();
                return;
            }
            match read_manifest(&top, events) {
                Ok(Some(m)) => {
                    let w = match m.tree() {
                        Some(t) => Witness::Listed(t),
                        None => Witness::Missing(format!(
                            "the manifest of {}@{} has no list of its datasets (written by a zoffsite from before it kept one)",
                            top.source, top.snapshot
                        )),
                    };
                    (Some(m), w)
                }
                Ok(None) => {
                    events.line(&format!(
                        "{} has no properties manifest ({}): its properties are as inherited here",
                        top.dest,
                        zoffsite_core::manifest::MANIFEST_PATH
                    ));
                    (None, Witness::Missing(format!("{}@{} has no properties manifest", top.source, top.snapshot)))
                }
                Err(e) => {
                    events.error(
                        Severity::Partial,
                        &format!(
                            "the properties manifest of {}@{} is not used: {}",
                            top.source,
                            top.snapshot,
                            crate::events::with_causes(&e)
                        ),
                    );
                    (
                        None,
                        Witness::Missing(format!("the manifest of {}@{} could not be used", top.source, top.snapshot)),
                    )
                }
            }
        }
        None => (None, Witness::Missing("restored without --keylocation".into())),
    };
    let vetted = restore::vet_children(&plan, &witness, opts.children_unverified);
    for (d, why) in &vetted.left_out {
        report.left_out(d, why);
        events.error(Severity::Partial, &format!("left out {d}: {why}"));
    }
    report.unverified.clone_from(&vetted.unverified);
    if !vetted.unverified.is_empty() {
        let why = match &witness {
            Witness::Missing(why) => why.as_str(),
            Witness::Listed(_) => "",
        };
        events.warn(&format!(
            "{} child(ren) brought back unchecked (--children-unverified; {why}): {}. Any of them may have been added on the box after that snapshot: look before you trust them",
            vetted.unverified.len(),
            vetted.unverified.iter().map(Dataset::as_str).collect::<Vec<_>>().join(", ")
        ));
    }
    for step in &vetted.steps {
        if !receive_step(zfs, &mut origin, step, &mut limits, events, report) {
            origin.close();
            return;
        }
    }
    origin.close();
    let mut restored = vec![top.clone()];
    restored.extend(vetted.steps.iter().cloned());
    keys(zfs, opts, manifest.as_ref(), &restored, events, report);
}

/// `--max-bytes` and `--max-time`, or their defaults: what the
/// destination pool has available less a twentieth, and 30 min plus that at
/// 256 KiB/s ([`zoffsite_core::limits`]).
fn restore_limits(zfs: &Zfs, opts: &Options, plan: &Plan) -> Result<Limits, RestoreError> {
    let bytes = match opts.max_bytes {
        Some(n) => ByteBudget::new(n, "--max-bytes"),
        None => {
            let pool = plan.steps.first().map(|s| s.dest.pool().to_owned()).unwrap_or_default();
            let available = zfs
                .get_value(&pool, "available")
                .map_err(|e| e.to_string())
                .and_then(|v| v.parse::<u64>().map_err(|e| format!("available={v:?}: {e}")))
                .map_err(|e| {
                    RestoreError::Other(format!(
                        "cannot tell how much space {pool} has ({e}); give the most the box may send with --max-bytes"
                    ))
                })?;
            let n = limits::restore_default_bytes(available);
            ByteBudget::new(
                n,
                format!(
                    "the default: {pool}'s available {} less a twentieth; a larger restore needs --max-bytes",
                    human::bytes(available)
                ),
            )
        }
    };
    let (max_time, why) = match opts.max_time {
        Some(t) => (t, "--max-time".to_owned()),
        None => {
            (limits::default_time(bytes.limit()), "the default for that many bytes; more needs --max-time".to_owned())
        }
    };
    Ok(Limits::new(bytes, max_time, why))
}

/// Receives one step and says so; on failure says what failed. False on
/// failure.
fn receive_step(
    zfs: &Zfs,
    origin: &mut Origin,
    step: &Step,
    limits: &mut Limits,
    events: &mut dyn Events,
    report: &mut Report,
) -> bool {
    // The box lists no sizes: progress is bytes and rate, without a total.
    let label = format!("{}@{}", step.source, step.snapshot);
    events.progress(Progress::Start { label: &label, estimate: None });
    let received = receive(zfs, origin, step, limits, &mut |n| events.progress(Progress::Bytes(n)));
    events.progress(Progress::Done);
    report.received(&step.dest, received.as_ref().ok().copied());
    match received {
        Ok(bytes) => {
            events.line(&format!(
                "restored {}@{} as {} ({}, guid {})",
                step.source,
                step.snapshot,
                step.dest,
                human::bytes(bytes),
                step.guid
            ));
            true
        }
        Err(e) => {
            events.error(Severity::Error, &format!("{}@{}: {e}", step.source, step.snapshot));
            false
        }
    }
}

/// Sets `uri` as the restored top's keylocation and loads its key.
fn unlock(zfs: &Zfs, top: &Dataset, uri: &str) -> Result<(), String> {
    zfs.set_keylocation(top, uri).map_err(|e| format!("set keylocation on {top}: {e}"))?;
    zfs.load_key(top, None).map_err(|e| format!("load the key of {top}: {e}"))
}

/// What the box (or the imported pool) holds of `dataset` and below.
pub fn list(
    zfs: &Zfs,
    origin: &mut Origin,
    dataset: &Dataset,
) -> Result<BTreeMap<Dataset, RemoteDataset>, RestoreError> {
    Ok(match origin {
        Origin::Box(s) => s.list_tree(dataset)?,
        Origin::Pool(root) => {
            let (datasets, snapshots) = zfs.list_box(root)?;
            boxside::tree_listing(root, dataset, datasets, snapshots).into_iter().map(|d| (d.name.clone(), d)).collect()
        }
    })
}

/// A stream on its way from the box into `out` (`zfs receive`'s stdin):
/// every chunk counts against the byte limit and the deadline first, then
/// its record headers are checked (raw, one snapshot, ending at the GUID
/// the box listed), and only then is it written. A refused chunk is never
/// written, so `zfs receive` never sees the END record of a refused stream
/// and commits nothing.
pub struct CheckedSink<'a, W: Write> {
    limits: &'a mut Limits,
    v: StreamValidator,
    out: W,
}

impl<'a, W: Write> CheckedSink<'a, W> {
    /// A sink for the full stream of the snapshot with GUID `guid`.
    pub fn new(guid: Guid, limits: &'a mut Limits, out: W) -> Self {
        let v = StreamValidator::new(Expect {
            from: None,
            to: guid,
            resuming: false,
            key: None,
            name: None,
            held: Default::default(),
        });
        Self { limits, v, out }
    }

    /// Takes the next chunk: counted, checked, then written.
    pub fn chunk(&mut self, chunk: &[u8]) -> io::Result<()> {
        self.limits.bytes.take(chunk.len() as u64).map_err(io::Error::other)?;
        if Instant::now() >= self.limits.deadline {
            return Err(io::Error::other(self.limits.out_of_time()));
        }
        self.v.feed(chunk).map_err(|e| io::Error::other(format!("refused the box's stream: {e}")))?;
        self.out.write_all(chunk)
    }

    /// The stream ended: it must have ended exactly after its final END.
    /// Closes `out` (the end of `zfs receive`'s input).
    pub fn finish(self) -> Result<(), StreamError> {
        drop(self.out);
        self.v.finish().map(|_| ())
    }
}

/// Receives one step's stream into a new local dataset, checking every
/// record header first ([`CheckedSink`]); confirms the GUID. Returns the
/// stream's size. Every chunk counts against `limits` before it is checked
/// or received; past either limit, the stream is cut and `zfs receive`
/// killed (without `-s`, it leaves nothing behind). `progress` gets the
/// bytes received so far after each chunk.
pub fn receive(
    zfs: &Zfs,
    origin: &mut Origin,
    step: &Step,
    limits: &mut Limits,
    progress: &mut dyn FnMut(u64),
) -> Result<u64, RestoreError> {
    if Instant::now() >= limits.deadline {
        return Err(RestoreError::Other(limits.out_of_time()));
    }
    let cmd = zfs.receive_new(&step.dest);
    let deadline = limits.deadline;
    let mut child = Running::with_stdin(&cmd)?.deadline(deadline);
    let stdin = child.child.stdin.take().expect("piped");
    let mut sink = CheckedSink::new(step.guid, limits, stdin);
    let mut moved = 0u64;
    let mut take = |c: &[u8]| {
        sink.chunk(c)?;
        moved += c.len() as u64;
        progress(moved);
        Ok(())
    };
    let streamed = match origin {
        Origin::Box(s) => s.fetch(&step.source, &step.snapshot, &mut take).map(|(_, n)| n).map_err(RestoreError::from),
        Origin::Pool(root) => send_local(zfs, root, &step.source, &step.snapshot, deadline, &mut take),
    };
    // Closing the sink ends zfs receive's input.
    let checked = sink.finish();
    let streamed = match streamed {
        Ok(n) => n,
        Err(e) => {
            // zfs receive killed at the deadline explains a broken pipe.
            return Err(match child.kill() {
                Err(d @ ExecError::Deadline { .. }) => d.into(),
                _ => e,
            });
        }
    };
    if let Err(e) = checked {
        let _ = child.kill();
        return Err(RestoreError::Other(format!("refused the box's stream: {e}")));
    }
    let out = child.finish()?;
    if !out.success() {
        return Err(Zfs::stream_error(&cmd, step.dest.as_str(), &out).into());
    }
    let got = zfs.snapshot_guid(&step.dest.snapshot(&step.snapshot)?)?;
    if got != step.guid {
        return Err(RestoreError::Other(format!(
            "restored {}@{} has GUID {got}, not the box's {}",
            step.dest, step.snapshot, step.guid
        )));
    }
    Ok(streamed)
}

/// `zfs send -w ROOT/DATASET@SNAPSHOT` from the imported pool into `sink`;
/// the bytes sent.
fn send_local(
    zfs: &Zfs,
    root: &Dataset,
    dataset: &Dataset,
    snapshot: &SnapName,
    deadline: Instant,
    sink: &mut dyn FnMut(&[u8]) -> io::Result<()>,
) -> Result<u64, RestoreError> {
    let snap = root.join(dataset)?.snapshot(snapshot)?;
    // Named first, with zfs's own words if it is not there.
    zfs.snapshot_guid(&snap)?;
    let send = RawSend::start(zfs, &snap, Some(deadline))?;
    Ok(send.pump(&mut |c| match c {
        Chunk::Data(d) => sink(d),
        Chunk::End => Ok(()),
    })?)
}

/// What a [`RawSend`] hands its sink: the stream's bytes, then its end
/// (once the send's output ended, before its exit status is known).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Chunk<'a> {
    Data(&'a [u8]),
    End,
}

/// How a [`RawSend`] failed.
#[derive(Debug, thiserror::Error)]
pub enum RawSendError {
    /// The sink refused a chunk or the end; the send was killed.
    #[error(transparent)]
    Sink(io::Error),
    /// Reading the send's output failed; the send was killed, and `killed`
    /// says how it ended.
    #[error("{error}")]
    Read { error: io::Error, killed: Box<RawSendError> },
    /// `zfs send` failed (its exit status, classified).
    #[error(transparent)]
    Failed(ZfsError),
    /// It could not be waited for, or it ran past its deadline.
    #[error(transparent)]
    Exec(ExecError),
}

/// A running `zfs send -w` of one snapshot: raw, so only ciphertext ever
/// moves (the box has no key; the source never sends plaintext).
pub struct RawSend {
    running: Running,
    cmd: Cmd,
    dataset: Dataset,
}

impl RawSend {
    /// Starts `zfs send -w SNAP`, killed at `deadline` if one is given.
    pub fn start(zfs: &Zfs, snap: &Snapshot, deadline: Option<Instant>) -> Result<Self, ExecError> {
        let cmd = zfs.send_raw(snap, None);
        let mut running = Running::with_stdout(&cmd)?;
        if let Some(d) = deadline {
            running = running.deadline(d);
        }
        Ok(Self { running, cmd, dataset: snap.dataset.clone() })
    }

    /// Hands the stream to `sink` as it comes, in reads of at most one
    /// protocol data frame, then [`Chunk::End`]; then waits for the send.
    /// Returns the bytes sent. A sink that fails stops the send (killed).
    pub fn pump(mut self, sink: &mut dyn FnMut(Chunk<'_>) -> io::Result<()>) -> Result<u64, RawSendError> {
        let mut out = self.running.child.stdout.take().expect("piped");
        let mut buf = vec![0u8; CHUNK];
        let mut bytes = 0u64;
        let read_error = loop {
            match out.read(&mut buf) {
                Ok(0) => break None,
                Ok(n) => {
                    if let Err(e) = sink(Chunk::Data(&buf[..n])) {
                        drop(out);
                        let _ = self.running.kill();
                        return Err(RawSendError::Sink(e));
                    }
                    bytes += n as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => break Some(e),
            }
        };
        drop(out);
        if let Err(e) = sink(Chunk::End) {
            let _ = self.running.kill();
            return Err(RawSendError::Sink(e));
        }
        let failed = |o: &Output| RawSendError::Failed(Zfs::stream_error(&self.cmd, self.dataset.as_str(), o));
        match read_error {
            Some(error) => {
                let killed = match self.running.kill() {
                    Ok(o) => failed(&o),
                    Err(e) => RawSendError::Exec(e),
                };
                Err(RawSendError::Read { error, killed: Box::new(killed) })
            }
            None => match self.running.finish() {
                Ok(o) if o.success() => Ok(bytes),
                Ok(o) => Err(failed(&o)),
                Err(e) => Err(RawSendError::Exec(e)),
            },
        }
    }
}

/// Puts the key in place: with `--keylocation` (the top is unlocked by
/// now), loads each child's key with it and sets it as the child's
/// keylocation (each stays its own encryption root, wrapped as the box
/// holds it: no `change-key`), sets the recorded properties, and mounts;
/// without, says exactly how. `restored`: the top first, then its
/// children.
fn keys(
    zfs: &Zfs,
    opts: &Options,
    manifest: Option<&Manifest>,
    restored: &[Step],
    events: &mut dyn Events,
    report: &mut Report,
) {
    let top = &restored[0].dest;
    let children: Vec<&Dataset> = restored[1..].iter().map(|s| &s.dest).collect();
    let Some(uri) = &opts.keylocation else {
        events.line(&format!(
            "restored, not mounted: the keys are not loaded. Each restored dataset is its own encryption root, wrapped as the box holds it, and they all open with the key file of {top}. To unlock and mount them:"
        ));
        for c in restore::unlock_commands(top, &children, "file:///PATH/TO/KEY") {
            events.line(&format!("  {c}"));
        }
        events.line(
            "Leave the keys as they are (no zfs change-key, not even -i): the box refuses a changed key, and backups go on from these snapshots as they are (docs/restore.md).",
        );
        events.line(&format!(
            "The properties you had set are recorded inside it, in {}: set them again from there (with --keylocation, restore sets its data properties itself).",
            zoffsite_core::manifest::MANIFEST_PATH
        ));
        return;
    };
    let step = |what: String, r: Result<(), ZfsError>, events: &mut dyn Events| match r {
        Ok(()) => true,
        Err(e) => {
            events.error(Severity::Error, &format!("{what}: {e}"));
            false
        }
    };
    // Loaded first, then set: a child that does not open with `uri` (it
    // had a key of its own on the source) keeps keylocation=prompt, and
    // `zfs load-key -a` at boot does not trip over a wrong file.
    let mut ok = true;
    for c in &children {
        ok = ok
            && step(
                format!("load the key of {c} with {uri} (if it had a key of its own, load that: zfs load-key -L URI {c}, then zfs set keylocation=URI {c})"),
                zfs.load_key(c, Some(uri)),
                events,
            )
            && step(format!("set keylocation on {c}"), zfs.set_keylocation(c, uri), events);
    }
    if !ok {
        return;
    }
    report.unlocked = true;
    if let Some(m) = manifest {
        match restore_properties(zfs, m, restored, opts.apply, events) {
            Ok(0) => {}
            Ok(n) => events.line(&format!("set {n} recorded propert{} again", if n == 1 { "y" } else { "ies" })),
            Err(e) => {
                events.error(
                    Severity::Partial,
                    &format!("the recorded properties were not all set again: {}", crate::events::with_causes(&e)),
                );
            }
        }
    }
    // Mount only where the tree now has a mountpoint path (recorded, or
    // inherited from where it sits).
    let mountpoint = zfs.get_value(top.as_str(), "mountpoint").unwrap_or_default();
    if !mountpoint.starts_with('/') {
        events.line(&format!("{top} is unlocked with {uri} (one key file for the whole tree), not mounted: it has mountpoint={mountpoint} here. Give it one, and it mounts: zfs set mountpoint=/PATH {top}"));
        say_keys(top, uri, events);
        return;
    }
    for d in std::iter::once(top).chain(children.iter().copied()) {
        // Setting a recorded mountpoint on an unlocked dataset mounts it.
        let mounted = zfs.get_value(d.as_str(), "mounted").is_ok_and(|m| m == "yes");
        ok = ok && (mounted || step(format!("mount {d}"), zfs.mount(d), events));
    }
    if !ok {
        return;
    }
    events.line(&format!("{top} is unlocked with {uri} (one key file for the whole tree) and mounted at {mountpoint}"));
    report.mountpoint = Some(mountpoint);
    say_keys(top, uri, events);
}

/// Reads the properties manifest from the restored snapshot of the top
/// (mounted read-only aside for a moment: its key is loaded by now).
/// `None` when the snapshot has none.
fn read_manifest(top: &Step, events: &mut dyn Events) -> Result<Option<Manifest>, RestoreError> {
    let snap = top.dest.snapshot(&top.snapshot)?;
    // Decrypted: looked at only in a private directory (0700, a name no
    // one else could predict or plant), nosuid,nodev,noexec, read without
    // following symlinks.
    let private = crate::rundir::RunDir::open_default()?.private_dir("restore-")?;
    let dir = private.subdir("snapshot")?;
    crate::system::mount_snapshot(&snap.to_string(), &dir)?;
    // No symlink followed; only a manifest root wrote is believed.
    let text = crate::manifest_file::read(&dir);
    unmount_or_say(&dir, events);
    drop(private);
    match text? {
        Some(t) => Ok(Some(Manifest::parse(&t)?)),
        None => Ok(None),
    }
}

/// Unmounts a private mount, or says to do it by hand (the run's outcome
/// does not change: what it had to read was read).
pub(crate) fn unmount_or_say(dir: &std::path::Path, events: &mut dyn Events) {
    if let Err(e) = crate::system::unmount(dir) {
        events.error(Severity::Ok, &format!("could not unmount {} ({e}); unmount it by hand", dir.display()));
    }
}

/// Sets what `manifest` recorded on each restored dataset, as far as
/// `apply` allows, and names what it left unset. Returns how many
/// properties were set.
fn restore_properties(
    zfs: &Zfs,
    manifest: &Manifest,
    restored: &[Step],
    apply: Apply,
    events: &mut dyn Events,
) -> Result<usize, ZfsError> {
    let top = &restored[0];
    let restored: Vec<(String, Dataset)> = restored
        .iter()
        .map(|s| (s.source.strip_root(&top.source).map_or_else(String::new, |d| d.to_string()), s.dest.clone()))
        .collect();
    let in_place = top.dest == top.source;
    let plan = manifest.to_set(&restored, in_place, apply);
    if !plan.held_back.is_empty() {
        events.line(
            "left unset, as they are not data properties and the manifest was written by the source (set them by hand, or restore with --apply-properties all if you trust this point):",
        );
        for (ds, props) in &plan.held_back {
            // Debug-quoted: a value from the manifest reaches the terminal.
            let list: Vec<String> = props.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
            events.line(&format!("  {ds}: {}", list.join(" ")));
        }
    }
    let mut n = 0;
    for (ds, props) in &plan.set {
        zfs.set_properties(ds, props)?;
        n += props.len();
    }
    Ok(n)
}

/// What the restored tree's keys look like, and how to unlock it again.
fn say_keys(top: &Dataset, uri: &str, events: &mut dyn Events) {
    events.line(&format!(
        "Each restored dataset is its own encryption root with keylocation={uri}, wrapped exactly as the box holds it, so backups go on from it as before. After a reboot: zfs load-key -r {top}, then mount. Leave the keys as they are: a zfs change-key (-i included) is a key change the box refuses (docs/restore.md)."
    ));
}

#[cfg(test)]
mod tests {
    //! The receive path against real captured streams (zoffsite-core's
    //! testdata) and a fake `zfs`/`zpool` that log their argv: the checks,
    //! the bounds, a restore from an imported pool, and the box's `Send`
    //! through the same [`RawSend`]. Real receives are tested end to end in
    //! the VM.
    use super::*;
    use crate::events::Recorded;
    use std::os::unix::fs::PermissionsExt;
    use std::path::PathBuf;

    /// A raw full send of t/src@s1, and a non-raw incremental of an
    /// unencrypted dataset (OpenZFS 2.3.2; testdata/capture.sh).
    const RAW_FULL: &[u8] = include_bytes!("../../zoffsite-core/testdata/raw-full.zstream");
    const S1: u64 = 10546291128629098134;
    const PLAIN_INCR: &[u8] = include_bytes!("../../zoffsite-core/testdata/plain-incr.zstream");

    fn guid(g: u64) -> Guid {
        Guid::new(g).unwrap()
    }

    fn limits(bytes: u64) -> Limits {
        Limits::new(ByteBudget::new(bytes, "the test's limit"), Duration::from_secs(60), "the test's time")
    }

    /// Feeds `stream` in 4 KiB chunks; what reached the writer, and the
    /// first refusal (or the end's verdict).
    fn through_sink(stream: &[u8], want: u64, limits: &mut Limits) -> (Vec<u8>, Result<(), String>) {
        let mut out = Vec::new();
        let mut sink = CheckedSink::new(guid(want), limits, &mut out);
        for c in stream.chunks(4096) {
            if let Err(e) = sink.chunk(c) {
                return (out, Err(e.to_string()));
            }
        }
        let end = sink.finish().map_err(|e| e.to_string());
        (out, end)
    }

    #[test]
    fn the_sink_passes_the_raw_stream_it_expects_byte_for_byte() {
        let (out, end) = through_sink(RAW_FULL, S1, &mut limits(1 << 30));
        assert_eq!(end, Ok(()));
        assert_eq!(out, RAW_FULL);
    }

    #[test]
    fn the_sink_refuses_a_plaintext_stream_before_any_byte_of_it_is_written() {
        let (out, end) = through_sink(PLAIN_INCR, S1, &mut limits(1 << 30));
        let e = end.unwrap_err();
        assert!(e.starts_with("refused the box's stream: "), "{e}");
        assert!(out.is_empty(), "{} bytes reached zfs receive", out.len());
    }

    #[test]
    fn the_sink_refuses_another_snapshot_before_its_end_reaches_zfs_receive() {
        let (out, end) = through_sink(RAW_FULL, 4242, &mut limits(1 << 30));
        let e = end.unwrap_err();
        assert!(e.contains("refused the box's stream") && e.contains("4242"), "{e}");
        // zfs receive commits nothing without the final END record.
        assert!(out.len() < RAW_FULL.len(), "the END record was withheld");
        assert_eq!(out[..], RAW_FULL[..out.len()]);
    }

    #[test]
    fn the_byte_limit_is_counted_before_the_check_and_the_deadline_too() {
        let mut l = limits(4096 * 2);
        let (out, end) = through_sink(RAW_FULL, S1, &mut l);
        let e = end.unwrap_err();
        assert!(e.contains("the test's limit"), "{e}");
        assert_eq!(out.len(), 4096 * 2, "nothing past the limit was written");
        // Out of time: refused before it is counted or checked.
        let mut l = Limits::new(ByteBudget::new(1 << 30, "x"), Duration::ZERO, "the test's time");
        let (out, end) = through_sink(RAW_FULL, S1, &mut l);
        let e = end.unwrap_err();
        assert!(e.contains("did not finish within") && e.contains("the test's time"), "{e}");
        assert!(out.is_empty());
    }

    /// A fake `zfs` (and `zpool`) for a box root `off/h` imported here and
    /// a local pool `tank`: `stream` is what `zfs send` sends.
    struct Fake {
        _tmp: tempfile::TempDir,
        dir: PathBuf,
    }

    impl Fake {
        fn new(stream: &[u8]) -> Self {
            let tmp = tempfile::tempdir().unwrap();
            let dir = tmp.path().to_owned();
            let zfs = format!(
                r#"#!/bin/sh
D='{d}'
echo "$*" >> "$D/log"
case "$*" in
 'list -H -p -r -t filesystem,volume,snapshot '*) cat "$D/box";;
 'list -H -p -r -t filesystem -o name,mounted '*) cat "$D/mounted";;
 'list -H -o name -t filesystem,volume '*) grep -qx "$7" "$D/exists" && exit 0; echo "cannot open '$7': dataset does not exist" >&2; exit 1;;
 'get -H -p -o value available '*) echo 1000000000;;
 'get -H -p -o value mountpoint '*) echo none;;
 'get -H -p -o value guid '*) echo {S1};;
 'send -w '*) [ -e "$D/send-fails" ] && {{ echo "cannot send: I/O error" >&2; exit 1; }}; [ -e "$D/endless" ] && exec cat /dev/zero; cat "$D/stream";;
 'receive -u '*) cat > "$D/received";;
 *) exit 1;;
esac
"#,
                d = dir.display()
            );
            let zpool = format!(
                "#!/bin/sh\nprintf 'readonly\\t%s\\naltroot\\t/mnt\\n' \"$(cat '{}/readonly')\"\n",
                dir.display()
            );
            for (name, body) in [("zfs", zfs), ("zpool", zpool)] {
                std::fs::write(dir.join(name), body).unwrap();
                std::fs::set_permissions(dir.join(name), std::fs::Permissions::from_mode(0o755)).unwrap();
            }
            let files = [
                ("stream", stream.to_vec()),
                ("box", format!("off/h\t1\t1\t1\t-\noff/h/tank\t2\t2\t1\t-\noff/h/tank/data\t3\t3\t1\t-\noff/h/tank/data@s1\t{S1}\t4\t1764140003\t-\n").into_bytes()),
                ("mounted", b"off\tno\noff/h\tno\n".to_vec()),
                ("exists", b"tank\noff/h\n".to_vec()),
                ("readonly", b"on".to_vec()),
            ];
            for (name, content) in files {
                std::fs::write(dir.join(name), content).unwrap();
            }
            Fake { _tmp: tmp, dir }
        }

        fn zfs(&self) -> Zfs {
            Zfs::with_binary(self.dir.join("zfs"))
        }

        fn touch(&self, name: &str) {
            std::fs::write(self.dir.join(name), "").unwrap();
        }

        fn read(&self, name: &str) -> Vec<u8> {
            std::fs::read(self.dir.join(name)).unwrap_or_default()
        }

        fn log(&self) -> String {
            String::from_utf8(self.read("log")).unwrap()
        }
    }

    fn options(dry_run: bool) -> Options {
        Options {
            request: Request { dataset: ds("tank/data"), snapshot: None, to: None, children: true },
            keylocation: None,
            children_unverified: false,
            apply: Apply::Data,
            dry_run,
            max_bytes: None,
            max_time: None,
        }
    }

    fn ds(s: &str) -> Dataset {
        Dataset::new(s).unwrap()
    }

    fn from_pool(f: &Fake, opts: &Options) -> Recorded {
        let mut ev = Recorded::default();
        restore(&f.zfs(), Origin::Pool(ds("off/h")), opts, &mut ev);
        ev
    }

    #[test]
    fn a_restore_from_an_imported_pool_receives_and_says_how_to_unlock() {
        let f = Fake::new(RAW_FULL);
        let ev = from_pool(&f, &options(false));
        assert_eq!(ev.worst, Severity::Ok, "{:?}", ev.errors);
        assert!(ev.lines[0].starts_with("accepting at most 905.99 MiB from the box (the default)"), "{:?}", ev.lines);
        let done = format!("restored tank/data@s1 as tank/data ({}, guid {S1})", human::bytes(RAW_FULL.len() as u64));
        assert_eq!(ev.lines[1], done);
        assert!(ev.lines[2].starts_with("restored, not mounted: the keys are not loaded"), "{:?}", ev.lines);
        assert_eq!(f.read("received"), RAW_FULL);
        let log = f.log();
        assert!(log.contains("send -w off/h/tank/data@s1\n") && log.contains("receive -u tank/data\n"), "{log}");
        assert!(!log.contains("-F") && !log.contains("load-key") && !log.contains("destroy"), "{log}");
    }

    #[test]
    fn a_plaintext_stream_on_the_box_is_refused_and_nothing_is_received() {
        let f = Fake::new(PLAIN_INCR);
        let ev = from_pool(&f, &options(false));
        assert_eq!(ev.worst, Severity::Error);
        let (_, e) = &ev.errors[0];
        assert!(e.starts_with("tank/data@s1: ") && e.contains("refused the box's stream"), "{e}");
        assert!(f.read("received").is_empty(), "zfs receive saw none of it");
    }

    #[test]
    fn a_writable_box_pool_is_refused_before_anything_is_read() {
        let f = Fake::new(RAW_FULL);
        std::fs::write(f.dir.join("readonly"), "off").unwrap();
        let ev = from_pool(&f, &options(false));
        assert_eq!(ev.worst, Severity::Error);
        assert!(ev.errors[0].1.starts_with("refusing --from-pool off/h: ") && ev.errors[0].1.contains("not read-only"));
        assert!(!f.log().contains("send"), "{}", f.log());
    }

    #[test]
    fn a_dry_run_says_what_it_would_restore_and_receives_nothing() {
        let f = Fake::new(RAW_FULL);
        let ev = from_pool(&f, &options(true));
        assert_eq!(ev.worst, Severity::Ok, "{:?}", ev.errors);
        assert_eq!(ev.lines[1], format!("would restore tank/data@s1 (guid {S1}) as tank/data"));
        assert!(!f.log().contains("send -w") && !f.log().contains("receive -u"), "{}", f.log());
    }

    #[test]
    fn children_the_manifest_cannot_vouch_for_are_refused_without_the_key() {
        let f = Fake::new(RAW_FULL);
        let mut listing = String::from_utf8(f.read("box")).unwrap();
        listing.push_str("off/h/tank/data/sub\t5\t5\t1\t-\noff/h/tank/data/sub@s1\t77\t6\t1764140003\t-\n");
        std::fs::write(f.dir.join("box"), listing).unwrap();
        let ev = from_pool(&f, &options(true));
        assert_eq!(ev.worst, Severity::Usage);
        assert!(ev.errors[0]
            .1
            .starts_with("without -n this would be refused: the box holds 1 dataset(s) below tank/data"));
        assert!(ev.lines[2].ends_with(" unchecked (--children-unverified)"), "{:?}", ev.lines);
        let ev = from_pool(&f, &options(false));
        assert_eq!(ev.worst, Severity::Usage);
        assert!(ev.errors[0].1.starts_with("the box holds 1 dataset(s) below tank/data"), "{:?}", ev.errors);
        assert!(!f.log().contains("send -w"), "nothing was received: {}", f.log());
    }

    #[test]
    fn a_stream_past_the_byte_limit_is_cut_and_zfs_receive_killed() {
        let f = Fake::new(RAW_FULL);
        let mut opts = options(false);
        opts.max_bytes = Some(1000);
        let ev = from_pool(&f, &opts);
        assert_eq!(ev.worst, Severity::Error);
        assert!(
            ev.errors[0].1.starts_with("tank/data@s1: ") && ev.errors[0].1.contains("--max-bytes"),
            "{:?}",
            ev.errors
        );
        assert!(ev.lines[0].contains("accepting at most 1000 B from the box (--max-bytes)"), "{:?}", ev.lines);
        assert!(f.read("received").is_empty(), "the chunk past the limit never reached zfs receive");
    }

    #[test]
    fn a_raw_send_hands_over_data_then_its_end_and_fails_as_zfs_said() {
        let f = Fake::new(RAW_FULL);
        let snap = Snapshot::new("off/h/tank/data@s1").unwrap();
        let (mut got, mut ends) = (Vec::new(), 0);
        let n = RawSend::start(&f.zfs(), &snap, None)
            .unwrap()
            .pump(&mut |c| {
                match c {
                    Chunk::Data(d) => got.extend_from_slice(d),
                    Chunk::End => ends += 1,
                }
                Ok(())
            })
            .unwrap();
        assert_eq!((n, got.as_slice(), ends), (RAW_FULL.len() as u64, RAW_FULL, 1));
        f.touch("send-fails");
        let e = RawSend::start(&f.zfs(), &snap, None).unwrap().pump(&mut |_| Ok(())).unwrap_err();
        assert!(matches!(e, RawSendError::Failed(_)) && e.to_string().contains("I/O error"), "{e}");
    }

    #[test]
    fn a_sink_that_gives_up_stops_the_send() {
        let f = Fake::new(RAW_FULL);
        f.touch("endless");
        let snap = Snapshot::new("off/h/tank/data@s1").unwrap();
        let started = Instant::now();
        let e = RawSend::start(&f.zfs(), &snap, None)
            .unwrap()
            .pump(&mut |_| Err(io::Error::other("no more, thanks")))
            .unwrap_err();
        assert!(matches!(e, RawSendError::Sink(_)) && e.to_string() == "no more, thanks", "{e}");
        assert!(started.elapsed() < Duration::from_secs(30), "killed, not read to the end");
    }

    /// The box's side: `serve` answers a `Send` through the same
    /// [`RawSend`], one data frame per read, then the end, then `Sent`.
    fn serve_send(f: &Fake) -> Vec<protocol::Frame> {
        use zoffsite_core::protocol::Request as Req;
        let mut input = Vec::new();
        protocol::write_msg(&mut input, &Req::Hello { protocol: "zoffsite".into(), version: 1, client: "t".into() })
            .unwrap();
        protocol::write_msg(
            &mut input,
            &Req::Send { dataset: ds("tank/data"), snapshot: SnapName::new("s1").unwrap() },
        )
        .unwrap();
        protocol::write_msg(&mut input, &Req::Bye).unwrap();
        let mut output = Vec::new();
        crate::proto::server::Server::new(f.zfs(), ds("off/h"), io::Cursor::new(input), &mut output).serve().unwrap();
        let mut out = io::Cursor::new(output);
        let mut frames = Vec::new();
        while let Ok(fr) = protocol::read_frame(&mut out, usize::MAX) {
            frames.push(fr);
        }
        frames
    }

    fn msg(f: &protocol::Frame) -> protocol::Response {
        match f {
            protocol::Frame::Msg(b) => protocol::decode(b).unwrap(),
            other => panic!("not a message: {other:?}"),
        }
    }

    #[test]
    fn the_box_sends_a_snapshot_back_raw_in_frames() {
        use zoffsite_core::protocol::{Frame, Response};
        let f = Fake::new(RAW_FULL);
        let frames = serve_send(&f);
        assert!(matches!(msg(&frames[1]), Response::Sending { guid, .. } if guid.get() == S1));
        let mut data = Vec::new();
        let mut i = 2;
        while let Frame::Data(d) = &frames[i] {
            data.extend_from_slice(d);
            i += 1;
        }
        assert_eq!(data, RAW_FULL);
        assert!(matches!(frames[i], Frame::End));
        assert!(matches!(msg(&frames[i + 1]), Response::Sent { bytes } if bytes == RAW_FULL.len() as u64));
        assert!(f.log().contains("send -w off/h/tank/data@s1\n"), "{}", f.log());
        // A failing zfs send: the stream ends, and the answer says why.
        f.touch("send-fails");
        let frames = serve_send(&f);
        assert!(matches!(frames[2], Frame::End), "{frames:?}");
        assert!(
            matches!(msg(&frames[3]), Response::Error { code: protocol::ErrorCode::Zfs, message } if message.contains("I/O error")),
            "{frames:?}"
        );
    }
}
