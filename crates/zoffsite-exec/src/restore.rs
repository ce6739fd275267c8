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
//! Nothing here prints: [`restore`] reports through [`Events`].

use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::time::{Duration, Instant};

use zoffsite_core::boxside;
use zoffsite_core::limits::{self, ByteBudget};
use zoffsite_core::manifest::{Apply, Manifest, ManifestError};
use zoffsite_core::names::{Dataset, Guid, NameError, SnapName, Snapshot};
use zoffsite_core::protocol::{self, RemoteDataset};
use zoffsite_core::records::{Expect, StreamError, StreamValidator};
use zoffsite_core::report::Severity;
use zoffsite_core::restore::{self, Plan, Request, Step, Witness};

use crate::events::Events;
use crate::manifest_file::ManifestFileError;
use crate::process::{Cmd, ExecError, Running};
use crate::remote::{RemoteError, Session};
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

/// `e` and its causes, `: `-separated (as `anyhow` shows `{:#}`).
pub(crate) fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cause = c.source();
    }
    s
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
        format!("did not finish within {:?} ({}): stopped", self.max_time, self.time_why)
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
/// through `events` (the worst severity reported is the outcome). Every
/// zfs command runs with [`bounded_zfs`]'s deadlines.
pub fn restore(zfs: &Zfs, mut origin: Origin, opts: &Options, events: &mut dyn Events) {
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
    for (d, why) in &plan.skipped {
        events.error(Severity::Partial, &format!("left out {d}: {why}"));
    }
    let mut limits = match restore_limits(zfs, opts, &plan) {
        Ok(l) => l,
        Err(e) => {
            events.error(Severity::Error, &chain(&e));
            return;
        }
    };
    events.line(&format!(
        "accepting at most {} bytes from the box ({}), for at most {:?} ({})",
        limits.bytes.limit(),
        if opts.max_bytes.is_some() { "--max-bytes" } else { "the default" },
        limits.max_time,
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
    if !receive_step(zfs, &mut origin, &top, &mut limits, events) {
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
                            chain(&e)
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
        events.error(Severity::Partial, &format!("left out {d}: {why}"));
    }
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
        if !receive_step(zfs, &mut origin, step, &mut limits, events) {
            origin.close();
            return;
        }
    }
    origin.close();
    let children: Vec<&Dataset> = vetted.steps.iter().map(|s| &s.dest).collect();
    let mut restored = vec![top.clone()];
    restored.extend(vetted.steps.iter().cloned());
    keys(zfs, opts, &top.dest, &children, manifest.as_ref(), &restored, events);
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
                format!("the default: {pool}'s available {available} bytes less a twentieth; a larger restore needs --max-bytes"),
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
fn receive_step(zfs: &Zfs, origin: &mut Origin, step: &Step, limits: &mut Limits, events: &mut dyn Events) -> bool {
    match receive(zfs, origin, step, limits) {
        Ok(bytes) => {
            events.line(&format!(
                "restored {}@{} as {} ({} bytes, guid {})",
                step.source, step.snapshot, step.dest, bytes, step.guid
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
/// killed (without `-s`, it leaves nothing behind).
pub fn receive(zfs: &Zfs, origin: &mut Origin, step: &Step, limits: &mut Limits) -> Result<u64, RestoreError> {
    if Instant::now() >= limits.deadline {
        return Err(RestoreError::Other(limits.out_of_time()));
    }
    let cmd = zfs.receive_new(&step.dest);
    let deadline = limits.deadline;
    let mut child = Running::with_stdin(&cmd)?.deadline(deadline);
    let stdin = child.child.stdin.take().expect("piped");
    let mut sink = CheckedSink::new(step.guid, limits, stdin);
    let streamed = match origin {
        Origin::Box(s) => {
            s.fetch(&step.source, &step.snapshot, &mut |c| sink.chunk(c)).map(|(_, n)| n).map_err(RestoreError::from)
        }
        Origin::Pool(root) => send_local(zfs, root, &step.source, &step.snapshot, deadline, &mut |c| sink.chunk(c)),
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
        return Err(Zfs::stream_error(&cmd, step.dest.as_str(), out).into());
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
        let failed = |o| RawSendError::Failed(Zfs::stream_error(&self.cmd, self.dataset.as_str(), o));
        match read_error {
            Some(error) => {
                let killed = match self.running.kill() {
                    Ok(o) => failed(o),
                    Err(e) => RawSendError::Exec(e),
                };
                Err(RawSendError::Read { error, killed: Box::new(killed) })
            }
            None => match self.running.finish() {
                Ok(o) if o.success() => Ok(bytes),
                Ok(o) => Err(failed(o)),
                Err(e) => Err(RawSendError::Exec(e)),
            },
        }
    }
}

/// Puts the key in place: with `--keylocation` (the top is unlocked by
/// now), loads each child's key with it and sets it as the child's
/// keylocation (each stays its own encryption root, wrapped as the box
/// holds it: no `change-key`), sets the recorded properties, and mounts;
/// without, says exactly how.
fn keys(
    zfs: &Zfs,
    opts: &Options,
    top: &Dataset,
    children: &[&Dataset],
    manifest: Option<&Manifest>,
    restored: &[Step],
    events: &mut dyn Events,
) {
    let Some(uri) = &opts.keylocation else {
        events.line(&format!(
            "restored, not mounted: the keys are not loaded. Each restored dataset is its own encryption root, wrapped as the box holds it, and they all open with the key file of {top}. To unlock and mount them:"
        ));
        for c in restore::unlock_commands(top, children, "file:///PATH/TO/KEY") {
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
    for c in children {
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
    if let Some(m) = manifest {
        match restore_properties(zfs, m, restored, opts.apply, events) {
            Ok(0) => {}
            Ok(n) => events.line(&format!("set {n} recorded propert{} again", if n == 1 { "y" } else { "ies" })),
            Err(e) => {
                events.error(
                    Severity::Partial,
                    &format!("the recorded properties were not all set again: {}", chain(&e)),
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
    for d in std::iter::once(&top).chain(children.iter()) {
        // Setting a recorded mountpoint on an unlocked dataset mounts it.
        let mounted = zfs.get_value(d.as_str(), "mounted").is_ok_and(|m| m == "yes");
        ok = ok && (mounted || step(format!("mount {d}"), zfs.mount(d), events));
    }
    if !ok {
        return;
    }
    events.line(&format!("{top} is unlocked with {uri} (one key file for the whole tree) and mounted at {mountpoint}"));
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
