//! The box's side of the protocol: what `zoffsite serve --root DATASET`
//! runs for each session.
//!
//! `serve` is the forced command of the source's key in the box's
//! `authorized_keys`, so this is all a holder of that key can run.
//! Invariants:
//!
//! - Whatever the client asked SSH to run (`SSH_ORIGINAL_COMMAND`) is
//!   ignored (by the command): only protocol requests are served, each
//!   mapped to a fixed argv from [`crate::zfs`].
//! - Only `ROOT/<source dataset>` is ever written, with `zfs receive -u -s`
//!   (never `-F`), and missing parents are created unmounted. Nothing is
//!   destroyed, rolled back, renamed, mounted, and no key is ever loaded.
//! - A stream reaches `zfs receive` only after its BEGIN record shows a raw
//!   single-dataset stream for exactly the requested snapshot GUID and base;
//!   every later record header is checked before `zfs receive` has it whole
//!   ([`super::pump`]).
//! - The output is the protocol channel: logs go to `tracing` (stderr),
//!   children never inherit stdout.
//! - The box's audit ([`zoffsite_core::doctor::AUDIT_PATH`]) is only read,
//!   never parsed here (the source does): opened without following a
//!   symlink, only if it and its directory are root's and nobody else may
//!   write them, and only up to
//!   [`MAX_AUDIT_LEN`](zoffsite_core::doctor::boxaudit::MAX_AUDIT_LEN)
//!   bytes. Whatever goes wrong is an answer, never the end of the session.
//! - A heartbeat ([`Request::Heartbeat`]) is recorded
//!   ([`HEARTBEAT_PROPERTY`], the box's clock) only on the root and on each
//!   named dataset whose newest snapshot (the session's listing, taken
//!   again after anything it wrote) has the named GUID, a dataset's only
//!   once its recorded one is [`Server::with_heartbeat_refresh`] old:
//!   the source's word that nothing is missing, which `box check` takes as
//!   an excuse for no new data for a bounded time only
//!   ([`zoffsite_core::boxside`], "Heartbeats").

use std::collections::{BTreeMap, BTreeSet};
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};

use zoffsite_core::boxside::{self, HEARTBEAT_PROPERTY, KEYWRAP_PROPERTY, RECEIVED_PROPERTY};
use zoffsite_core::doctor::{boxaudit::MAX_AUDIT_LEN, AUDIT_PATH};
use zoffsite_core::names::{Dataset, Guid, SnapName, Snapshot};
use zoffsite_core::nvlist::{KeyWrap, NvError};
use zoffsite_core::parse::SnapshotRow;
use zoffsite_core::protocol::{
    self, ErrorCode, Frame, FrameHead, HeartbeatDataset, ProtoError, RemoteDataset, RemoteSnapshot, Request, Response,
    MAX_LIST_DATASETS, MAX_REQUEST_LEN, PROTOCOL_NAME, PROTOCOL_VERSION,
};
use zoffsite_core::records::{Expect, Held, StreamError, StreamValidator, Summary};

use super::pump::{pump, PumpError, Sink};
use crate::process::Running;
use crate::restore::{Chunk, RawSend, RawSendError};
use crate::zfs::{Zfs, ZfsError};

/// How long a session's own listing stands for what the box holds, when
/// the session wrote nothing since: a no-op run's heartbeat follows its
/// listing within seconds.
const LISTING_REUSE: std::time::Duration = std::time::Duration::from_secs(5 * 60);

/// Ends the session (after telling the client, where possible).
#[derive(Debug, thiserror::Error)]
pub enum Fatal {
    #[error("{0}")]
    Proto(#[from] ProtoError),
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("{0}")]
    Refused(String),
}

/// A request-level failure: answered with an `Error` message; the session
/// goes on.
struct Reject {
    code: ErrorCode,
    message: String,
}

impl Reject {
    fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self { code, message: message.into() }
    }
}

impl From<ZfsError> for Reject {
    fn from(e: ZfsError) -> Self {
        let code = match e {
            ZfsError::NoSpace { .. } => ErrorCode::NoSpace,
            _ => ErrorCode::Zfs,
        };
        Reject::new(code, e.to_string())
    }
}

/// Where `serve` reads the source's frames from. Unbuffered on purpose:
/// stream payloads are spliced from the descriptor when there is one, so no
/// byte may sit in a user-space buffer in front of it.
pub trait Input: Read {
    /// The descriptor to splice from, if any.
    fn splice_fd(&self) -> Option<BorrowedFd<'_>> {
        None
    }
}

impl Input for std::fs::File {
    fn splice_fd(&self) -> Option<BorrowedFd<'_>> {
        Some(self.as_fd())
    }
}

impl Input for io::Cursor<Vec<u8>> {}

/// One session of the box's side: reads the source's requests from
/// `input`, answers on `output`, runs zfs through `zfs`, and writes only
/// under `root`.
pub struct Server<R: Input, W: Write> {
    zfs: Zfs,
    root: Dataset,
    /// Part of every dataset lock's name: empty in production; tests that
    /// run servers side by side give each its own.
    lock_scope: String,
    /// The audit file `Audit` hands over, and who must own it.
    audit: (PathBuf, u32),
    /// The box's clock (Unix seconds) for receive stamps and heartbeats:
    /// the real one, unless a test sets another.
    clock: Clock,
    /// What this session's heartbeats named: each dataset, and the root
    /// (there once the first heartbeat came), is written at most once per
    /// session.
    heard: BTreeSet<Dataset>,
    /// The snapshots under the root as this session last listed them, and
    /// when, while it has written nothing since (a receive or an abort
    /// drops it): what a heartbeat checks the source's GUIDs against, if
    /// younger than [`LISTING_REUSE`], so that a run that received nothing
    /// lists the box once, not twice.
    listed: Option<(std::time::Instant, Vec<SnapshotRow>)>,
    /// How old a dataset's recorded heartbeat may be before a heartbeat
    /// writes it again ([`boxside::check_in_refresh`] of box.toml's
    /// `max_age`); zero: every heartbeat writes every dataset it names.
    heartbeat_refresh: std::time::Duration,
    input: R,
    output: W,
}

/// Where a server reads the time.
pub type Clock = std::sync::Arc<dyn Fn() -> i64 + Send + Sync>;

impl<R: Input, W: Write> Server<R, W> {
    /// A session served from `input` to `output`, under `root`. The lock
    /// scope is empty: every session of the box shares its dataset locks.
    pub fn new(zfs: Zfs, root: Dataset, input: R, output: W) -> Self {
        Self {
            zfs,
            root,
            lock_scope: String::new(),
            audit: (PathBuf::from(AUDIT_PATH), 0),
            clock: std::sync::Arc::new(|| jiff::Timestamp::now().as_second()),
            heard: BTreeSet::new(),
            listed: None,
            heartbeat_refresh: std::time::Duration::ZERO,
            input,
            output,
        }
    }

    /// Reads the time from `clock` in place of the real clock: for tests
    /// that play out days of receives and heartbeats.
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// Writes a dataset's heartbeat again only once the recorded one is
    /// `refresh` old ([`boxside::check_in_refresh`] of box.toml's
    /// `max_age`): the box's check then sees a heartbeat at most that much
    /// older than the source's last, which only brings its alarm earlier.
    pub fn with_heartbeat_refresh(mut self, refresh: std::time::Duration) -> Self {
        self.heartbeat_refresh = refresh;
        self
    }

    /// Hands over the audit at `path`, which (with its directory) must be
    /// owned by `owner`, in place of root's [`AUDIT_PATH`]: for tests.
    pub fn with_audit(mut self, path: impl Into<PathBuf>, owner: u32) -> Self {
        self.audit = (path.into(), owner);
        self
    }

    /// Gives this server's dataset locks their own namespace, so that
    /// servers run side by side (tests, the fuzzer) do not hold each other
    /// up. Production never sets it.
    pub fn with_lock_scope(mut self, scope: impl Into<String>) -> Self {
        self.lock_scope = scope.into();
        self
    }

    fn reply(&mut self, r: &Response) -> io::Result<()> {
        protocol::write_msg(&mut self.output, r)?;
        self.output.flush()
    }

    fn reject(&mut self, r: Reject) -> io::Result<()> {
        tracing::warn!(code = ?r.code, "{}", r.message);
        self.reply(&Response::Error { code: r.code, message: r.message })
    }

    /// Serves one session: the hello, then requests until `Bye` or the
    /// end of the input. An error ends the session (the client was told,
    /// where possible).
    pub fn serve(&mut self) -> Result<(), Fatal> {
        self.handshake()?;
        loop {
            let req = match protocol::read_frame(&mut self.input, MAX_REQUEST_LEN) {
                Ok(Frame::Msg(b)) => protocol::decode::<Request>(&b),
                Ok(_) => Err(ProtoError::Violation("stream data outside a receive".into())),
                Err(ProtoError::Closed) => return Ok(()),
                Err(e) => Err(e),
            };
            let req = match req {
                Ok(r) => r,
                Err(e) => {
                    let _ = self.reject(Reject::new(ErrorCode::Protocol, e.to_string()));
                    return Err(e.into());
                }
            };
            match req {
                Request::Hello { .. } => {
                    self.reject(Reject::new(ErrorCode::Protocol, "hello sent twice"))?;
                    return Err(Fatal::Refused("hello sent twice".into()));
                }
                Request::List { datasets } => {
                    let r = match self.list(&datasets) {
                        Ok(l) => self.reply(&Response::Listing { datasets: l }),
                        Err(rej) => self.reject(rej),
                    };
                    r?;
                }
                Request::Receive { dataset, snapshot, guid, from, resume } => {
                    self.receive(&dataset, &snapshot, guid, from, resume)?;
                }
                Request::Abort { dataset } => {
                    let r = match self.abort(&dataset) {
                        Ok(()) => self.reply(&Response::Aborted { dataset }),
                        Err(rej) => self.reject(rej),
                    };
                    r?;
                }
                Request::ListTree { dataset } => {
                    let r = match self.list_tree(&dataset) {
                        Ok(l) => self.reply(&Response::Listing { datasets: l }),
                        Err(rej) => self.reject(rej),
                    };
                    r?;
                }
                Request::Send { dataset, snapshot } => self.send(&dataset, &snapshot)?,
                Request::Health => {
                    let pool = self.root.pool().to_owned();
                    let r = match self.zfs.pool_health(&pool).and_then(|h| Ok((h, self.zfs.last_scrub(&pool)?))) {
                        Ok((health, last_scrub)) => self.reply(&Response::Health { pool, health, last_scrub }),
                        Err(e) => self.reject(Reject::from(e)),
                    };
                    r?;
                }
                Request::Audit => {
                    let r = match read_audit(&self.audit.0, self.audit.1) {
                        Ok(report) => self.reply(&Response::Audit { report }),
                        Err(why) => self.reject(Reject::new(ErrorCode::Refused, why)),
                    };
                    r?;
                }
                Request::Heartbeat { datasets } => {
                    let r = match self.heartbeat(&datasets) {
                        Ok(recorded) => self.reply(&Response::Heartbeat { recorded }),
                        Err(rej) => self.reject(rej),
                    };
                    r?;
                }
                Request::Bye => return Ok(()),
            }
        }
    }

    /// Records the source's heartbeat (the module docs): the box's clock
    /// on the root, and on each named dataset whose newest snapshot under
    /// the root, by `createtxg`, has the named GUID, where its recorded
    /// heartbeat is due ([`boxside::check_in_due`]). The listing is this
    /// session's own when it has written nothing since it listed, less
    /// than [`LISTING_REUSE`] ago, else taken now. In between, another
    /// session may have received a newer snapshot, or root destroyed the
    /// newest: the heartbeat is then recorded as of the listing, which can
    /// excuse no more than a heartbeat sent at that time could (bounded
    /// like any, by `max_age + heartbeat_grace` after the last arrival). Returns how many
    /// datasets have the named GUID as their newest. A name given twice, or
    /// more than [`MAX_LIST_DATASETS`] names, is refused whole.
    fn heartbeat(&mut self, asked: &[HeartbeatDataset]) -> Result<u32, Reject> {
        if asked.len() > MAX_LIST_DATASETS {
            return Err(Reject::new(
                ErrorCode::Protocol,
                format!("at most {MAX_LIST_DATASETS} datasets per heartbeat"),
            ));
        }
        let mut wanted: BTreeMap<Dataset, Guid> = BTreeMap::new();
        let first = !self.heard.contains(&self.root);
        for d in asked {
            let local =
                self.root.join(&d.name).map_err(|e| Reject::new(ErrorCode::Refused, format!("{}: {e}", d.name)))?;
            if self.heard.contains(&local) || wanted.insert(local, d.guid).is_some() {
                return Err(Reject::new(
                    ErrorCode::Protocol,
                    format!("{} named twice in one session's heartbeats", d.name),
                ));
            }
        }
        let mut newest: BTreeMap<&Dataset, (u64, Guid)> = BTreeMap::new();
        let fresh = self.listed.as_ref().is_some_and(|(at, _)| at.elapsed() < LISTING_REUSE);
        if !wanted.is_empty() && !fresh {
            self.listed = Some((std::time::Instant::now(), self.zfs.list_box(&self.root)?.1));
        }
        for s in self.listed.iter().flat_map(|(_, l)| l).filter(|s| wanted.contains_key(&s.snapshot.dataset)) {
            let e = newest.entry(&s.snapshot.dataset).or_insert((s.createtxg, s.guid));
            if s.createtxg > e.0 {
                *e = (s.createtxg, s.guid);
            }
        }
        let current: Vec<&Dataset> = wanted
            .iter()
            .filter(|(ds, guid)| newest.get(ds).is_some_and(|(_, g)| g == *guid))
            .map(|(ds, _)| ds)
            .collect();
        // The clock is read only for a heartbeat that may write.
        let now = if first || !current.is_empty() { (self.clock)() } else { 0 };
        // Only the heartbeats that are due: the others were written less
        // than the refresh ago. Read only when it can spare a write.
        let due: Vec<&Dataset> = if self.heartbeat_refresh.is_zero() || current.is_empty() {
            current.clone()
        } else {
            match self.zfs.box_heartbeats(&self.root) {
                Ok(rows) => {
                    let stored = boxside::parse_heartbeats(&self.root, &rows);
                    boxside::heartbeats_due(current.iter().copied(), &stored, now, self.heartbeat_refresh)
                }
                // Unread (a value the box user set that is not one line,
                // a zfs hiccup): every one is written, as without a refresh.
                Err(e) => {
                    tracing::warn!("cannot read the recorded heartbeats ({e}); writing them all");
                    current.clone()
                }
            }
        };
        // Each name at most once a session, the root with the first
        // heartbeat: a source that repeats heartbeats (each `zfs set` is
        // a pool sync and a line of `zpool history`) gets no more writes
        // than datasets the box holds.
        self.heard.insert(self.root.clone());
        let first_root = first.then(|| self.root.to_string());
        let names: Vec<String> = first_root.into_iter().chain(due.iter().map(ToString::to_string)).collect();
        let (recorded, written, of) = (current.len(), due.len(), wanted.len());
        self.heard.extend(wanted.into_keys());
        if !names.is_empty() {
            self.zfs.set_user_property(&names, HEARTBEAT_PROPERTY, &now.to_string())?;
        }
        tracing::info!(datasets = recorded, of, written, "heartbeat");
        Ok(u32::try_from(recorded).unwrap_or(u32::MAX))
    }

    fn list_tree(&mut self, asked: &Dataset) -> Result<Vec<RemoteDataset>, Reject> {
        let (datasets, snapshots) = self.zfs.list_box(&self.root)?;
        Ok(zoffsite_core::boxside::tree_listing(&self.root, asked, datasets, snapshots))
    }

    /// Sends one snapshot under the root back to the source, raw: the only
    /// way anything leaves the box, and it is ciphertext (`zfs send -w`;
    /// the box never has a key, so nothing else could be sent).
    fn send(&mut self, dataset: &Dataset, snapshot: &SnapName) -> Result<(), Fatal> {
        let snap = match self.root.join(dataset).and_then(|t| t.snapshot(snapshot)) {
            Ok(s) => s,
            Err(e) => {
                return Ok(self.reject(Reject::new(
                    ErrorCode::Refused,
                    format!("{dataset}@{snapshot} under {}: {e}", self.root),
                ))?)
            }
        };
        let guid = match self.zfs.snapshot_guid(&snap) {
            Ok(g) => g,
            Err(e) => return Ok(self.reject(Reject::from(e))?),
        };
        let send = match RawSend::start(&self.zfs, &snap, None) {
            Ok(r) => r,
            Err(e) => return Ok(self.reject(Reject::new(ErrorCode::Zfs, e.to_string()))?),
        };
        tracing::info!(snapshot = %snap, "sending back for a restore");
        self.reply(&Response::Sending { dataset: dataset.clone(), snapshot: snapshot.clone(), guid })?;
        // Each read of zfs send's output is one data frame; its end, the
        // end frame, sent before zfs send's exit status is known.
        let output = &mut self.output;
        let sent = send.pump(&mut |c| match c {
            Chunk::Data(d) => protocol::write_data(output, d),
            Chunk::End => protocol::write_end(output),
        });
        // A failed read of zfs send's output ended the stream early: the
        // answer is how the send, killed, ended.
        let sent = match sent {
            Err(RawSendError::Read { killed, .. }) => Err(*killed),
            other => other,
        };
        match sent {
            Ok(bytes) => self.reply(&Response::Sent { bytes })?,
            // The source's side of the connection failed.
            Err(RawSendError::Sink(e)) => return Err(e.into()),
            Err(RawSendError::Failed(e)) => self.reject(Reject::from(e))?,
            Err(e) => self.reject(Reject::new(ErrorCode::Zfs, e.to_string()))?,
        }
        Ok(())
    }

    fn handshake(&mut self) -> Result<(), Fatal> {
        let hello = protocol::read_msg::<Request>(&mut self.input, MAX_REQUEST_LEN);
        match hello {
            Ok(Request::Hello { protocol, version, client }) if protocol == PROTOCOL_NAME => {
                tracing::info!(client = %protocol::sanitize(&client, 100), version, "hello");
                if version != PROTOCOL_VERSION {
                    let msg = format!("this box speaks protocol version {PROTOCOL_VERSION}, not {version}: install the same zoffsite version on both sides");
                    self.reject(Reject::new(ErrorCode::Version, msg.clone()))?;
                    return Err(Fatal::Refused(msg));
                }
            }
            Err(ProtoError::Io(e)) => return Err(e.into()),
            _ => {
                let msg = "expected a zoffsite hello; this command only speaks the zoffsite protocol (it is the forced command of a backup key)";
                let _ = self.reject(Reject::new(ErrorCode::Protocol, msg));
                return Err(Fatal::Refused(msg.into()));
            }
        }
        // The root must exist before anything is received under it (serve
        // never creates it: that is the box owner's decision), with
        // mountpoint=none: placeholders inherit it, so nothing under the
        // root can ever be mounted on the box. One `zfs get` tells both.
        let fix = format!("zfs create -o canmount=off -o mountpoint=none {}", self.root);
        let why = match self.zfs.get_value(self.root.as_str(), "mountpoint") {
            Ok(m) if m == "none" => None,
            Ok(m) => Some(format!(
                "box root {} must have mountpoint=none so that nothing under it is ever mounted (it is {m:?}); on the box run: zfs set mountpoint=none {}",
                self.root, self.root
            )),
            Err(ZfsError::NotFound { .. }) => {
                Some(format!("box root {} is not usable (it does not exist). On the box, create it: {fix}", self.root))
            }
            Err(e) => Some(format!("box root {} is not usable ({e}). On the box, create it: {fix}", self.root)),
        };
        if let Some(msg) = why {
            self.reject(Reject::new(ErrorCode::Root, msg.clone()))?;
            return Err(Fatal::Refused(msg));
        }
        self.reply(&Response::Hello {
            protocol: PROTOCOL_NAME.into(),
            version: PROTOCOL_VERSION,
            server: format!("zoffsite {}", env!("CARGO_PKG_VERSION")),
            root: self.root.clone(),
        })?;
        Ok(())
    }

    fn list(&mut self, asked: &[Dataset]) -> Result<Vec<RemoteDataset>, Reject> {
        if asked.len() > MAX_LIST_DATASETS {
            return Err(Reject::new(ErrorCode::Protocol, format!("at most {MAX_LIST_DATASETS} datasets per list")));
        }
        let (datasets, snapshots) = self.zfs.list_box(&self.root)?;
        self.listed = Some((std::time::Instant::now(), snapshots.clone()));
        let tokens: BTreeMap<Dataset, Option<String>> =
            datasets.into_iter().map(|r| (r.dataset, r.resume_token)).collect();
        let mut snaps: BTreeMap<Dataset, Vec<RemoteSnapshot>> = BTreeMap::new();
        for s in snapshots {
            snaps.entry(s.snapshot.dataset).or_default().push(RemoteSnapshot {
                name: s.snapshot.name,
                guid: s.guid,
                createtxg: s.createtxg,
            });
        }
        let mut out = Vec::new();
        let mut seen = BTreeSet::new();
        for d in asked {
            if !seen.insert(d) {
                continue;
            }
            let Ok(local) = self.root.join(d) else {
                out.push(RemoteDataset { name: d.clone(), exists: false, snapshots: vec![], resume_token: None });
                continue;
            };
            let exists = tokens.contains_key(&local);
            out.push(RemoteDataset {
                name: d.clone(),
                exists,
                snapshots: snaps.remove(&local).unwrap_or_default(),
                resume_token: tokens.get(&local).cloned().flatten(),
            });
        }
        Ok(out)
    }

    /// Handles one `Receive` and its stream. Exactly one answer is sent,
    /// and the stream is always consumed up to its `E` frame.
    /// Discards partial-receive state of one dataset under the root, and
    /// only if it has some: this cannot touch received snapshots.
    fn abort(&mut self, dataset: &Dataset) -> Result<(), Reject> {
        self.listed = None;
        let target = self.root.join(dataset).map_err(|e| Reject::new(ErrorCode::Refused, e.to_string()))?;
        let _lock = self.lock_dataset(&target)?;
        let partial =
            self.zfs.list_receiver(&self.root)?.into_iter().any(|r| r.dataset == target && r.resume_token.is_some());
        if !partial {
            return Err(Reject::new(ErrorCode::Conflict, format!("{target} has no partial receive to abort")));
        }
        tracing::warn!(dataset = %target, "aborting partial receive at the source's request");
        match self.zfs.abort_receive(&target) {
            Ok(()) => Ok(()),
            // Under `box init`'s delegation the kernel refuses this: for an
            // interrupted *full* receive it is a destroy. Only the box's
            // owner may discard it; say exactly how.
            Err(ZfsError::PermissionDenied { stderr }) => Err(Reject::new(
                ErrorCode::Refused,
                format!(
                    "the box user may not discard the partial receive of {target} (the kernel counts it as a destroy: {stderr}). The box owner discards it, as root on the box: zfs receive -A {target}"
                ),
            )),
            Err(e) => Err(e.into()),
        }
    }

    fn receive(
        &mut self,
        dataset: &Dataset,
        snapshot: &SnapName,
        guid: Guid,
        from: Option<Guid>,
        resume: bool,
    ) -> Result<(), Fatal> {
        // Whatever happens below may change what the box holds.
        self.listed = None;
        let target = match self.root.join(dataset).and_then(|t| t.snapshot(snapshot).map(|_| t)) {
            Ok(t) => t,
            Err(e) => {
                return self.reject_and_drain(Reject::new(
                    ErrorCode::Refused,
                    format!("{dataset}@{snapshot} under {}: {e}", self.root),
                ))
            }
        };
        if dataset.depth() > MAX_NESTING {
            return self.reject_and_drain(Reject::new(
                ErrorCode::Refused,
                format!("{dataset} is nested {} levels deep; the box takes at most {MAX_NESTING}", dataset.depth()),
            ));
        }
        // From here to the answer, no other session touches this dataset:
        // the pin read below must still hold when the stream is checked
        // against it, and the listing must still be what the box holds.
        let _lock = match self.lock_dataset(&target) {
            Ok(l) => l,
            Err(rej) => return self.reject_and_drain(rej),
        };
        // What the box holds of it: a stream may only add to this, and only
        // snapshots above it (by the box's createtxg) get a receive stamp.
        let before = match self.zfs.dataset_snapshots(&target) {
            Ok(b) => b,
            Err(e) => return self.reject_and_drain(e.into()),
        };
        // The wrapped key the box's copy was first received with, if any:
        // a stream with another one would re-wrap the whole history.
        let pinned = if from.is_some() || resume {
            match self.pinned_key(&target) {
                Ok(k) => k,
                Err(rej) => return self.reject_and_drain(rej),
            }
        } else {
            None
        };
        // Hold the stream back until its first substream's BEGIN record and
        // key data have been checked (raw, the requested base, this dataset,
        // the pinned key, nothing the box holds already): `zfs receive`
        // sees no byte of a stream that fails that.
        let mut validator = StreamValidator::new(Expect {
            from,
            to: guid,
            resuming: resume,
            key: pinned,
            name: Some(snapshot.clone()),
            held: Held {
                names: before.iter().map(|s| s.snapshot.name.clone()).collect(),
                guids: before.iter().map(|s| s.guid).collect(),
            },
        });
        let mut head = Vec::new();
        let mut ended = false;
        while validator.key().is_none() {
            match protocol::read_frame(&mut self.input, 0)? {
                Frame::Data(d) => {
                    if let Err(e) = validator.feed(&d) {
                        return self.reject_and_drain(refused(&target, &e));
                    }
                    head.extend_from_slice(&d);
                    if head.len() > MAX_HEAD {
                        return self.reject_and_drain(Reject::new(
                            ErrorCode::Refused,
                            format!("refused stream for {target}: no substream within its first {MAX_HEAD} bytes"),
                        ));
                    }
                }
                Frame::End => {
                    ended = true;
                    break;
                }
                Frame::Msg(_) => return Err(ProtoError::Violation("message inside a stream".into()).into()),
            }
        }
        let check = match validator.substreams().first() {
            None => Err("the stream ended before its first snapshot".to_owned()),
            // (The validator checked its name against the request.) A single-snapshot stream must be exactly the requested one.
            Some((s, g)) if !validator.is_compound() && *g != guid => {
                Err(format!("stream is for @{} (guid {g}), not the requested @{snapshot} (guid {guid})", s.name))
            }
            Some(_) => Ok(()),
        };
        if let Err(why) = check {
            let rej = Reject::new(ErrorCode::Refused, format!("refused stream for {target}: {why}"));
            return if ended { Ok(self.reject(rej)?) } else { self.reject_and_drain(rej) };
        }
        if let Err(rej) = self.ensure_parents(&target) {
            return self.reject_and_drain(rej);
        }
        let cmd = self.zfs.receive_append(&target);
        let mut child = match Running::with_stdin(&cmd) {
            Ok(c) => c,
            Err(e) => return self.reject_and_drain(Reject::new(ErrorCode::Zfs, e.to_string())),
        };
        let mut sink = Sink::new(child.child.stdin.take());
        sink.write(&head);
        let mut scratch = Vec::new();
        let mut invalid = None;
        while !ended && !sink.broken {
            let lost = match protocol::read_frame_head(&mut self.input, 0) {
                // Every record header is checked before zfs receive sees it.
                Ok(FrameHead::Data(len)) => match pump(&mut self.input, len, &mut validator, &mut sink, &mut scratch) {
                    Ok(()) => None,
                    Err(PumpError::Invalid(e)) => {
                        invalid = Some(e);
                        break;
                    }
                    Err(PumpError::Input(e)) => Some(e),
                },
                Ok(FrameHead::End) => {
                    ended = true;
                    None
                }
                Ok(FrameHead::Msg(_)) => {
                    let _ = child.kill();
                    return Err(ProtoError::Violation("message inside a stream".into()).into());
                }
                Err(e) => Some(e),
            };
            if let Some(e) = lost {
                // The connection dropped mid-stream. Let `zfs receive` see
                // the end of its input and save its resumable state (-s)
                // before this process goes: the next run continues from
                // there instead of starting over.
                sink.close();
                let out = child.finish();
                tracing::warn!(dataset = %target, "connection lost mid-stream; partial state kept for resume: {out:?}");
                self.stamp_what_landed(&target, &before, validator.substreams());
                return Err(e.into());
            }
        }
        if let Some(e) = invalid {
            // Stop zfs receive before it commits anything more.
            drop(sink);
            let _ = child.kill();
            self.stamp_what_landed(&target, &before, validator.substreams());
            return self.reject_and_drain(refused(&target, &e));
        }
        let broken = sink.close();
        let out = child.finish().map_err(|e| Fatal::Refused(e.to_string()))?;
        let streamed = validator.substreams().to_vec();
        let mut received = None;
        if out.success() {
            match validator.finish() {
                Ok(summary) => received = Some(summary),
                Err(e) => {
                    // zfs receive accepted what the validator did not:
                    // report it, never confirm it.
                    self.stamp_what_landed(&target, &before, &streamed);
                    let rej = refused(&target, &e);
                    return Ok(self.reject(rej)?);
                }
            }
        }
        let answer = if let (Some(summary), false) = (received, broken) {
            self.record_receive(&target, snapshot, &before, &summary, pinned).map(|g| Response::Received {
                dataset: dataset.clone(),
                snapshot: snapshot.clone(),
                guid: g,
            })
        } else {
            self.stamp_what_landed(&target, &before, &streamed);
            let rej = Reject::from(Zfs::stream_error(&cmd, target.as_str(), &out));
            Err(match (rej.code, self.snapshot_limit_reached()) {
                // ZFS reports a reached snapshot_limit as a space quota
                // (EDQUOT): say which it is.
                (ErrorCode::NoSpace, Some(why)) => Reject::new(ErrorCode::NoSpace, format!("{why} ({})", rej.message)),
                _ => rej,
            })
        };
        match answer {
            Ok(r) => self.reply(&r)?,
            Err(rej) => {
                // zfs receive gave up before the stream ended: answer now so
                // the source stops sending, then discard the rest.
                return if ended { Ok(self.reject(rej)?) } else { self.reject_and_drain(rej) };
            }
        }
        Ok(())
    }

    /// When the root's `snapshot_limit` (`box init --snapshot-limit`) is
    /// reached: what to tell the source.
    fn snapshot_limit_reached(&self) -> Option<String> {
        let num = |prop: &str| self.zfs.get_value(self.root.as_str(), prop).ok()?.parse::<u64>().ok();
        let limit = num("snapshot_limit").filter(|l| *l != u64::MAX)?;
        let count = num("snapshot_count")?;
        (count >= limit).then(|| {
            format!(
                "the box's snapshot_limit={limit} on {root} is reached ({count} snapshots): the box owner can let `zoffsite box prune` make room or raise it (zfs set snapshot_limit=N {root})",
                root = self.root
            )
        })
    }

    /// The key fingerprint pinned on `target` (set locally: a child must
    /// not inherit its parent's), or `None` before its first receive.
    fn pinned_key(&self, target: &Dataset) -> Result<Option<KeyWrap>, Reject> {
        match self.zfs.get_local(target.as_str(), KEYWRAP_PROPERTY)? {
            None => Ok(None),
            Some(v) => KeyWrap::parse(&v).map(Some).ok_or_else(|| {
                Reject::new(
                    ErrorCode::Refused,
                    format!(
                        "{target} has {KEYWRAP_PROPERTY}={:?}, which is not a key fingerprint zoffsite wrote, so the stream's key cannot be checked and nothing was received. The box owner can clear it, as root on the box: zfs inherit {KEYWRAP_PROPERTY} {target}",
                        protocol::sanitize(&v, 100)
                    ),
                )
            }),
        }
    }

    /// After `zfs receive` accepted a stream, and before the source is
    /// answered (so that a source hanging up on the answer cannot leave
    /// the work undone): stamps the snapshots this receive created, pins
    /// the key at a first receive, and returns the requested snapshot's
    /// GUID as the box now holds it.
    fn record_receive(
        &self,
        target: &Dataset,
        snapshot: &SnapName,
        before: &[SnapshotRow],
        summary: &Summary,
        pinned: Option<KeyWrap>,
    ) -> Result<Guid, Reject> {
        let after = self.zfs.dataset_snapshots(target)?;
        let created = boxside::created_by_receive(before, &after, &summary.snapshots);
        self.stamp_received(target, &created);
        if let (None, Some(key)) = (pinned, summary.key) {
            self.pin_key(target, key)?;
        }
        after.iter().find(|s| s.snapshot.name == *snapshot).map(|s| s.guid).ok_or_else(|| {
            Reject::new(ErrorCode::Zfs, format!("zfs receive succeeded, but {target}@{snapshot} is not on the box"))
        })
    }

    /// After a receive that did not complete: the earlier substreams of a
    /// compound stream may have landed all the same. They are stamped like
    /// any other new snapshot (best effort: this is already a failure).
    fn stamp_what_landed(&self, target: &Dataset, before: &[SnapshotRow], streamed: &[(Snapshot, Guid)]) {
        if streamed.is_empty() {
            return;
        }
        match self.zfs.dataset_snapshots(target) {
            Ok(after) => self.stamp_received(target, &boxside::created_by_receive(before, &after, streamed)),
            Err(e) => tracing::warn!("cannot list {target} to stamp what an incomplete receive left: {e}"),
        }
    }

    /// Pins the key `target` was first received with: from now on only
    /// streams with this wrapped key are received into it. A failure is
    /// the answer: the snapshot is on the box, but the source must hear
    /// that its key is not pinned (the next receive would take any key).
    fn pin_key(&self, target: &Dataset, key: KeyWrap) -> Result<(), Reject> {
        tracing::info!(dataset = %target, %key, "pinning the dataset's wrapped key");
        self.zfs.set_user_property(&[target.to_string()], KEYWRAP_PROPERTY, &key.to_string()).map_err(|e| {
            Reject::new(
                ErrorCode::Zfs,
                format!("{target} was received, but its wrapped key could not be pinned (the next receive tries again): {e}"),
            )
        })
    }

    /// Records the box's own clock on each snapshot this receive created.
    /// Box retention ages snapshots by this, never by their `creation`,
    /// which the sender controls. Write-once: a snapshot that already has
    /// a stamp of its own keeps it. A failure leaves a snapshot unstamped,
    /// which box retention then ages by its txg journal (`boxside`).
    fn stamp_received(&self, target: &Dataset, created: &[&SnapshotRow]) {
        let names: Vec<String> = created.iter().map(|s| s.snapshot.to_string()).collect();
        let stamped = match self.zfs.local_values(&names, RECEIVED_PROPERTY) {
            Ok(v) => v,
            Err(e) => {
                tracing::warn!("cannot read the receive stamps of {target}'s new snapshots, so none is written: {e}");
                return;
            }
        };
        let todo: Vec<String> = names.into_iter().filter(|n| !stamped.contains_key(n)).collect();
        let now = (self.clock)().to_string();
        if let Err(e) = self.zfs.set_user_property(&todo, RECEIVED_PROPERTY, &now) {
            tracing::warn!("cannot record the receive time of {} snapshots of {target}: {e}", todo.len());
        }
    }

    /// One session at a time per dataset: taken for the whole of a receive
    /// or an abort, released when the value is dropped (or the process
    /// dies). An abstract Unix socket is the lock: it needs no directory
    /// the box user could be tricked into, and the kernel frees it with
    /// its holder. Its name is per network namespace, which all of sshd's
    /// sessions share.
    fn lock_dataset(&self, target: &Dataset) -> Result<UnixListener, Reject> {
        use sha2::Digest;
        use std::os::linux::net::SocketAddrExt;
        let digest = sha2::Sha256::digest(format!("{}\0{target}", self.lock_scope));
        let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(format!("zoffsite-serve/{hex}"))
            .map_err(|e| Reject::new(ErrorCode::Internal, e.to_string()))?;
        // A child forked by another thread of this process holds a copy of
        // every descriptor until its exec closes it (the listener is
        // close-on-exec), so a lock just released can look taken for that
        // instant. A session that really holds it does so for a whole
        // receive: waiting out LOCK_GRACE tells the two apart.
        let deadline = std::time::Instant::now() + LOCK_GRACE;
        loop {
            match UnixListener::bind_addr(&addr) {
                Ok(l) => return Ok(l),
                Err(e) if e.kind() == io::ErrorKind::AddrInUse && std::time::Instant::now() < deadline => {
                    std::thread::sleep(LOCK_GRACE / 20);
                }
                Err(e) if e.kind() == io::ErrorKind::AddrInUse => {
                    return Err(Reject::new(
                        ErrorCode::Conflict,
                        format!("another session is receiving into {target} right now; the next backup tries again"),
                    ));
                }
                Err(e) => {
                    return Err(Reject::new(
                        ErrorCode::Internal,
                        format!("cannot take the receive lock of {target}: {e}"),
                    ));
                }
            }
        }
    }

    fn reject_and_drain(&mut self, rej: Reject) -> Result<(), Fatal> {
        self.reject(rej)?;
        loop {
            match protocol::read_frame(&mut self.input, 0)? {
                Frame::Data(_) => {}
                Frame::End => return Ok(()),
                Frame::Msg(_) => return Err(ProtoError::Violation("message inside a stream".into()).into()),
            }
        }
    }

    /// Creates the missing ancestors of `target` below the root, unmounted.
    fn ensure_parents(&mut self, target: &Dataset) -> Result<(), Reject> {
        // Only the ancestors are looked at (at most MAX_NESTING), never the
        // whole root: a source must not make each receive cost a listing
        // of everything it ever created.
        for a in target.ancestors_below(&self.root) {
            if !self.zfs.exists(&a)? {
                tracing::info!(dataset = %a, "creating placeholder parent");
                self.zfs.create_placeholder(&a)?;
            }
        }
        Ok(())
    }
}

/// How long a taken receive lock is retried before the session is told
/// another one holds it (see `lock_dataset`).
const LOCK_GRACE: std::time::Duration = std::time::Duration::from_millis(500);

/// How deep a source's dataset name may be (components, pool included):
/// each level may be a placeholder `serve` creates, and a 255-byte name
/// could otherwise nest over a hundred. Real trees are a few levels deep.
const MAX_NESTING: usize = 16;

/// Most bytes held back from `zfs receive` while waiting for the first
/// substream's BEGIN record (a `-I` stream's compound header before it is
/// 624 bytes; a substream BEGIN's payload, the wrapped key, about 1 KiB).
const MAX_HEAD: usize = 1 << 20;

/// The audit file's text (`None`: it, or its directory, does not exist),
/// or why it is not handed over.
fn read_audit(path: &Path, owner: u32) -> Result<Option<String>, String> {
    use crate::private::{self, Error};
    let shown = path.display();
    let (Some(dir), Some(name)) = (path.parent(), path.file_name().and_then(|n| n.to_str())) else {
        return Err(format!("{shown} is not a file's path"));
    };
    let flaw = |what: &str, e: Error| match e {
        Error::Io(e) => format!("cannot read {what}: {e}"),
        Error::Untrusted(f) => format!("{what} is {f}"),
    };
    let Some(dir_fd) = private::open_dir(dir).map_err(|e| flaw(&dir.display().to_string(), e))? else {
        return Ok(None);
    };
    let Some(fd) = private::open_file_at(&dir_fd, name).map_err(|e| flaw(&shown.to_string(), e))? else {
        return Ok(None);
    };
    // Root's, and nobody else may write it or swap it: otherwise it is not
    // what root's doctor wrote.
    for (what, f) in [(dir.display().to_string(), dir_fd.as_fd()), (shown.to_string(), fd.as_fd())] {
        let st = rustix::fs::fstat(f).map_err(|e| format!("cannot read {what}: {e}"))?;
        if st.st_uid != owner {
            return Err(format!("{what} belongs to uid {}, not {owner}: it is not the audit root wrote", st.st_uid));
        }
        if st.st_mode & 0o022 != 0 {
            return Err(format!(
                "{what} is writable by others (mode {:04o}): it is not the audit root wrote",
                st.st_mode & 0o7777
            ));
        }
    }
    match private::read_bounded(fd, MAX_AUDIT_LEN) {
        Ok(Some(text)) => Ok(Some(text)),
        Ok(None) => Err(format!("{shown} is larger than the {MAX_AUDIT_LEN} bytes serve hands over")),
        Err(e) => Err(format!("cannot read {shown}: {e}")),
    }
}

fn refused(target: &Dataset, e: &StreamError) -> Reject {
    let fix = match e {
        StreamError::KeyChanged { .. } => format!(
            ". That part was not received, and no snapshot on the box changed its key. If you changed the key yourself, have the box owner accept the new key, as root on the box: zfs inherit {KEYWRAP_PROPERTY} {target} (that dataset only; add -r only if you changed the key of every dataset below it too, since -r clears all their pins). The next backup then re-wraps the box's copy with it. If you did not change the key, the source may be compromised: leave the box as it is"
        ),
        StreamError::KeyData { error: NvError::Duplicate { .. } | NvError::NotCanonical { .. }, .. } => {
            ". OpenZFS never writes key data like that: the stream was crafted, so the source may be compromised. That part \
             was not received"
                .to_owned()
        }
        _ => String::new(),
    };
    Reject::new(ErrorCode::Refused, format!("refused stream for {target}: {e}{fix}"))
}

#[cfg(test)]
mod tests {
    //! `serve` against the stateful fake `zfs` (`zoffsite_testkit`), whose
    //! log shows what ran and whose receive lands what a stream carries.
    //! The real behaviour (real receives, real refusals by the kernel) is
    //! tested end to end in the VM; whole sessions with the real client,
    //! in `zoffsite-testkit`'s tests.
    use super::*;
    use std::io::Cursor;
    use zoffsite_core::records::RECORD_LEN;
    use zoffsite_core::stream::{encode_begin, FEATURE_RAW};
    use zoffsite_testkit::fake::world::{FaultAction, Snap};
    use zoffsite_testkit::FakeZfs;

    /// A box with its root `offsite/home`, and nothing under it.
    struct Fake {
        zfs: FakeZfs,
        /// The audit file its server hands over (none: the default path).
        audit: Option<PathBuf>,
        /// Its server's heartbeat refresh (zero: none).
        refresh: std::time::Duration,
        /// Its server's clock (none: the real one).
        now: std::cell::Cell<Option<i64>>,
    }

    impl Fake {
        fn new() -> Self {
            let zfs = FakeZfs::new();
            zfs.box_root("offsite/home");
            Fake { zfs, audit: None, refresh: std::time::Duration::ZERO, now: std::cell::Cell::new(None) }
        }

        /// Its server hands over `path`, owned by whoever runs the tests.
        fn with_audit(mut self, path: PathBuf) -> Self {
            self.audit = Some(path);
            self
        }

        fn with_refresh(mut self, refresh: std::time::Duration) -> Self {
            self.refresh = refresh;
            self
        }

        /// Its next sessions run with the box's clock at `t`.
        fn at(&self, t: i64) {
            self.now.set(Some(t));
        }

        /// How many times its zfs listed the whole root (`list -r`).
        fn listings(&self) -> usize {
            self.log().lines().filter(|l| l.starts_with("list ") && l.contains(" -r ")).count()
        }

        fn with_mountpoint(mountpoint: &str) -> Self {
            let f = Self::new();
            f.zfs.set("offsite/home", "mountpoint", mountpoint);
            f
        }

        /// The box's copy of tank/data already holds these snapshots.
        fn holding(self, snaps: &[(&str, u64)]) -> Self {
            self.zfs.world(|w| {
                for d in ["offsite/home/tank", T] {
                    if !w.datasets.contains_key(d) {
                        w.create(d, &[]).unwrap();
                    }
                }
                for (name, guid) in snaps {
                    let createtxg = w.next_txg();
                    w.ds_mut(T).unwrap().snapshots.push(Snap {
                        name: (*name).into(),
                        guid: *guid,
                        createtxg,
                        creation: 1,
                        chunks: 0,
                        props: Default::default(),
                        holds: Default::default(),
                    });
                }
            });
            self
        }

        /// Sets the box's key pin on its copy of tank/data.
        fn pinned(self, value: &str) -> Self {
            self.zfs.set(T, KEYWRAP_PROPERTY, value);
            self
        }

        /// What every `zfs receive` read, in order.
        fn received(&self) -> Vec<u8> {
            self.zfs.received()
        }

        fn log(&self) -> String {
            self.zfs.log()
        }

        fn serve(&self, input: Vec<u8>) -> (Result<(), Fatal>, Vec<Response>) {
            self.serve_from(Cursor::new(input))
        }

        /// Through a real pipe, as sshd gives it: the stream's payloads
        /// are then spliced.
        fn serve_piped(&self, input: Vec<u8>) -> (Result<(), Fatal>, Vec<Response>) {
            let (r, mut w) = std::io::pipe().unwrap();
            let writer = std::thread::spawn(move || {
                // serve may stop reading early (a refused session).
                let _ = w.write_all(&input);
            });
            let out = self.serve_from(std::fs::File::from(std::os::fd::OwnedFd::from(r)));
            writer.join().unwrap();
            out
        }

        fn serve_from(&self, input: impl Input) -> (Result<(), Fatal>, Vec<Response>) {
            let _one_at_a_time = serial();
            let mut s = Server::new(
                Zfs::with_binary(self.zfs.path()),
                Dataset::new("offsite/home").unwrap(),
                input,
                Vec::new(),
            )
            .with_lock_scope(self.zfs.dir().display().to_string());
            if let Some(p) = &self.audit {
                s = s.with_audit(p, crate::private::me());
            }
            if let Some(t) = self.now.get() {
                s = s.with_clock(std::sync::Arc::new(move || t));
            }
            s = s.with_heartbeat_refresh(self.refresh);
            let r = s.serve();
            let mut out = Cursor::new(s.output);
            let mut msgs = Vec::new();
            while let Ok(m) = protocol::read_msg::<Response>(&mut out, usize::MAX) {
                msgs.push(m);
            }
            (r, msgs)
        }
    }

    /// A dataset lock is an abstract socket, and a child that another
    /// test thread forks holds a copy of every descriptor until it execs:
    /// a session that receives twice into one dataset could find its own
    /// lock, just released, still bound (`another session is receiving`).
    /// `serve` itself forks only from its one thread, and each spawn
    /// returns after the exec; so the tests that serve run one at a time.
    fn serial() -> std::sync::MutexGuard<'static, ()> {
        static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());
        SERIAL.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn hello() -> Vec<u8> {
        let mut v = Vec::new();
        protocol::write_msg(&mut v, &Request::Hello { protocol: "zoffsite".into(), version: 1, client: "t".into() })
            .unwrap();
        v
    }

    /// Real streams captured from OpenZFS 2.3.2 (see zoffsite-core's
    /// testdata/capture.sh): a raw full send of t/src@s1, and a non-raw
    /// incremental t/plain@p1 -> @p2 of an unencrypted dataset.
    const RAW_FULL: &[u8] = include_bytes!("../../../zoffsite-core/testdata/raw-full.zstream");
    const S1: u64 = 10546291128629098134;
    const PLAIN_INCR: &[u8] = include_bytes!("../../../zoffsite-core/testdata/plain-incr.zstream");
    const P1: u64 = 8786584037763858465;
    const P2: u64 = 13308449606923206071;

    fn heartbeat(datasets: &[(&str, u64)]) -> Vec<u8> {
        let mut v = hello();
        let datasets = datasets
            .iter()
            .map(|(n, g)| HeartbeatDataset { name: Dataset::new(*n).unwrap(), guid: Guid::new(*g).unwrap() })
            .collect();
        protocol::write_msg(&mut v, &Request::Heartbeat { datasets }).unwrap();
        v
    }

    #[test]
    fn a_heartbeat_is_recorded_only_where_the_box_holds_what_the_source_names() {
        let f = Fake::new().holding(&[("a", 11), ("b", 12)]);
        f.zfs.create("offsite/home/tank/other", true);
        let before = jiff::Timestamp::now().as_second();
        // tank/data's newest is b (12): named right. tank/other holds
        // nothing; tank/gone is not on the box; a is not the newest.
        let (r, msgs) = f.serve(heartbeat(&[("tank/data", 12), ("tank/other", 5), ("tank/gone", 6)]));
        r.unwrap();
        assert_eq!(msgs[1..], [Response::Heartbeat { recorded: 1 }]);
        let at = |n: &str| f.zfs.local(n, HEARTBEAT_PROPERTY).map(|v| v.parse::<i64>().unwrap());
        let t = at(T).expect("recorded on tank/data");
        assert!(t >= before && t <= jiff::Timestamp::now().as_second());
        assert_eq!(at("offsite/home"), Some(t), "and on the root: the source checked in");
        assert_eq!(at("offsite/home/tank/other"), None);
        assert!(!f.zfs.exists("offsite/home/tank/gone"), "nothing is created for a heartbeat");
        // Naming an older snapshot records nothing on the dataset, but the
        // root still hears of it.
        let f = Fake::new().holding(&[("a", 11), ("b", 12)]);
        let (r, msgs) = f.serve(heartbeat(&[("tank/data", 11)]));
        r.unwrap();
        assert_eq!(msgs[1..], [Response::Heartbeat { recorded: 0 }]);
        assert_eq!(f.zfs.local(T, HEARTBEAT_PROPERTY), None);
        assert!(f.zfs.local("offsite/home", HEARTBEAT_PROPERTY).is_some());
    }

    /// A backup run's session: the listing, these receives, the heartbeat.
    fn run(receives: &[(Request, &[u8])], beat: &[(&str, u64)]) -> Vec<u8> {
        let mut v = hello();
        protocol::write_msg(&mut v, &Request::List { datasets: vec![Dataset::new("tank/data").unwrap()] }).unwrap();
        for (req, stream) in receives {
            protocol::write_msg(&mut v, req).unwrap();
            protocol::write_data(&mut v, stream).unwrap();
            protocol::write_end(&mut v).unwrap();
        }
        let datasets = beat
            .iter()
            .map(|(n, g)| HeartbeatDataset { name: Dataset::new(*n).unwrap(), guid: Guid::new(*g).unwrap() })
            .collect();
        protocol::write_msg(&mut v, &Request::Heartbeat { datasets }).unwrap();
        protocol::write_msg(&mut v, &Request::Bye).unwrap();
        v
    }

    #[test]
    fn a_run_that_received_nothing_lists_the_box_once_and_one_that_did_lists_again() {
        let f = Fake::new().holding(&[("a", 11), ("b", 12)]);
        let (r, msgs) = f.serve(run(&[], &[("tank/data", 12)]));
        r.unwrap();
        assert_eq!(msgs.last(), Some(&Response::Heartbeat { recorded: 1 }), "{msgs:?}");
        assert_eq!(f.listings(), 1, "the heartbeat took the session's listing: {}", f.log());
        // A receive since the listing: the heartbeat's listing must show
        // it (the source names what it just sent, unknown to the first).
        let f = Fake::new();
        let (r, msgs) = f.serve(run(&[(request("s1", S1, None, false), RAW_FULL)], &[("tank/data", S1)]));
        r.unwrap();
        assert_eq!(msgs.last(), Some(&Response::Heartbeat { recorded: 1 }), "{msgs:?}");
        assert!(f.zfs.local(T, HEARTBEAT_PROPERTY).is_some());
        assert_eq!(f.listings(), 2, "the session's, and the heartbeat's after the receive: {}", f.log());
    }

    #[test]
    fn with_a_refresh_a_heartbeat_is_written_again_only_once_the_recorded_one_is_that_old() {
        let f = Fake::new().holding(&[("a", 11), ("b", 12)]).with_refresh(std::time::Duration::from_secs(6 * 3600));
        let t0 = 1_800_000_000;
        let beat = |f: &Fake, t: i64| {
            f.at(t);
            let (r, msgs) = f.serve(run(&[], &[("tank/data", 12)]));
            r.unwrap();
            assert_eq!(msgs.last(), Some(&Response::Heartbeat { recorded: 1 }), "recorded, written or not: {msgs:?}");
            (f.zfs.local("offsite/home", HEARTBEAT_PROPERTY), f.zfs.local(T, HEARTBEAT_PROPERTY))
        };
        let v = |t: i64| Some(t.to_string());
        assert_eq!(beat(&f, t0), (v(t0), v(t0)), "none recorded yet");
        // An hour later: only the root (the last check-in, shown) moves.
        assert_eq!(beat(&f, t0 + 3600), (v(t0 + 3600), v(t0)));
        assert!(!f.log().lines().last().unwrap().contains(T), "{}", f.log());
        assert_eq!(beat(&f, t0 + 6 * 3600 - 1), (v(t0 + 6 * 3600 - 1), v(t0)));
        assert_eq!(beat(&f, t0 + 6 * 3600), (v(t0 + 6 * 3600), v(t0 + 6 * 3600)), "due again");
        // A value forged ahead (box check would not take it) is replaced.
        f.zfs.set(T, HEARTBEAT_PROPERTY, &(t0 + 30 * 86400).to_string());
        assert_eq!(beat(&f, t0 + 7 * 3600).1, v(t0 + 7 * 3600));
        // Without a refresh, every heartbeat writes (and reads nothing).
        let f = Fake::new().holding(&[("b", 12)]);
        f.at(t0);
        f.serve(run(&[], &[("tank/data", 12)])).0.unwrap();
        f.at(t0 + 60);
        f.serve(run(&[], &[("tank/data", 12)])).0.unwrap();
        assert_eq!(f.zfs.local(T, HEARTBEAT_PROPERTY), v(t0 + 60));
        assert!(!f.log().contains("get -H -p -r"), "{}", f.log());
        // Recorded values that cannot be read (the box user may set any
        // text): every heartbeat is written, as without a refresh.
        let f = Fake::new().holding(&[("b", 12)]).with_refresh(std::time::Duration::from_secs(6 * 3600));
        f.zfs.create("offsite/home/tank/odd", true);
        f.zfs.set("offsite/home/tank/odd", HEARTBEAT_PROPERTY, "1\n2");
        f.zfs.set(T, HEARTBEAT_PROPERTY, &t0.to_string());
        f.at(t0 + 60);
        let (r, msgs) = f.serve(run(&[], &[("tank/data", 12)]));
        r.unwrap();
        assert_eq!(msgs.last(), Some(&Response::Heartbeat { recorded: 1 }), "{msgs:?}");
        assert!(f.log().contains("get -H -p -r"), "it tried: {}", f.log());
        assert_eq!(f.zfs.local(T, HEARTBEAT_PROPERTY), v(t0 + 60), "written although recorded a minute ago");
    }

    #[test]
    fn a_heartbeat_naming_a_dataset_twice_or_too_many_is_refused_whole() {
        let f = Fake::new().holding(&[("a", 11)]);
        let (r, msgs) = f.serve(heartbeat(&[("tank/data", 11), ("tank/data", 11)]));
        r.unwrap();
        assert!(
            matches!(&msgs[1..], [Response::Error { code: ErrorCode::Protocol, message }] if message.contains("named twice")),
            "{msgs:?}"
        );
        let many: Vec<(String, u64)> = (0..=MAX_LIST_DATASETS).map(|i| (format!("tank/d{i}"), 1)).collect();
        let many: Vec<(&str, u64)> = many.iter().map(|(n, g)| (n.as_str(), *g)).collect();
        let (r, msgs) = f.serve(heartbeat(&many));
        r.unwrap();
        assert!(matches!(&msgs[1..], [Response::Error { code: ErrorCode::Protocol, .. }]), "{msgs:?}");
        assert_eq!(f.zfs.local("offsite/home", HEARTBEAT_PROPERTY), None, "nothing recorded");
        assert_eq!(f.zfs.local(T, HEARTBEAT_PROPERTY), None);
    }

    #[test]
    fn a_session_writes_each_heartbeat_name_once_however_often_the_source_repeats() {
        let f = Fake::new().holding(&[("a", 11), ("b", 12)]);
        let mut input = heartbeat(&[("tank/data", 12)]);
        let again = |v: &mut Vec<u8>, datasets: Vec<HeartbeatDataset>| {
            protocol::write_msg(v, &Request::Heartbeat { datasets }).unwrap();
        };
        for _ in 0..3 {
            again(&mut input, vec![]);
        }
        again(
            &mut input,
            vec![HeartbeatDataset { name: Dataset::new("tank/data").unwrap(), guid: Guid::new(12).unwrap() }],
        );
        // Each reading of the clock is a second later: a rewrite would show.
        let ticks = std::sync::Arc::new(std::sync::atomic::AtomicI64::new(1_800_000_000));
        let clock: Clock = {
            let ticks = ticks.clone();
            std::sync::Arc::new(move || ticks.fetch_add(1, std::sync::atomic::Ordering::SeqCst))
        };
        let _one_at_a_time = serial();
        let mut s = Server::new(
            Zfs::with_binary(f.zfs.path()),
            Dataset::new("offsite/home").unwrap(),
            Cursor::new(input),
            Vec::new(),
        )
        .with_lock_scope(f.zfs.dir().display().to_string())
        .with_clock(clock);
        s.serve().unwrap();
        let mut out = Cursor::new(s.output);
        let mut msgs = Vec::new();
        while let Ok(m) = protocol::read_msg::<Response>(&mut out, usize::MAX) {
            msgs.push(m);
        }
        assert_eq!(
            msgs[1..5],
            [
                Response::Heartbeat { recorded: 1 },
                Response::Heartbeat { recorded: 0 },
                Response::Heartbeat { recorded: 0 },
                Response::Heartbeat { recorded: 0 }
            ]
        );
        assert!(
            matches!(&msgs[5..], [Response::Error { code: ErrorCode::Protocol, message }] if message.contains("named twice in one session")),
            "{msgs:?}"
        );
        assert_eq!(
            ticks.load(std::sync::atomic::Ordering::SeqCst),
            1_800_000_001,
            "one write, one reading of the clock"
        );
        assert_eq!(f.zfs.local("offsite/home", HEARTBEAT_PROPERTY).as_deref(), Some("1800000000"));
        assert_eq!(f.zfs.local(T, HEARTBEAT_PROPERTY).as_deref(), Some("1800000000"));
    }

    /// A session that asks for the audit, then lists (the session must go
    /// on whatever the audit's answer).
    fn audit_then_list() -> Vec<u8> {
        let mut v = hello();
        protocol::write_msg(&mut v, &Request::Audit).unwrap();
        protocol::write_msg(&mut v, &Request::List { datasets: vec![Dataset::new("tank/data").unwrap()] }).unwrap();
        v
    }

    /// A directory and an audit file in it as `doctor --output` leaves
    /// them: 0755 and 0644.
    fn audit_dir(text: &[u8]) -> (tempfile::TempDir, PathBuf) {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let path = dir.path().join("box.json");
        std::fs::write(&path, text).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        (dir, path)
    }

    /// The answers to [`audit_then_list`]: the audit's, and that the
    /// listing still came.
    fn audit_answer(f: &Fake) -> Response {
        let (r, msgs) = f.serve(audit_then_list());
        r.unwrap();
        assert_eq!(msgs.len(), 3, "{msgs:?}");
        assert!(matches!(msgs[2], Response::Listing { .. }), "the session goes on: {msgs:?}");
        msgs[1].clone()
    }

    #[test]
    fn the_audit_file_is_handed_over_as_it_is_unparsed() {
        // serve never parses it: even text that is no report goes as is.
        let text = "{\"status\": \"not even checked here\"}\n\u{1b}[2J";
        let (_dir, path) = audit_dir(text.as_bytes());
        let f = Fake::new().with_audit(path);
        assert_eq!(audit_answer(&f), Response::Audit { report: Some(text.to_owned()) });
        assert_eq!(f.log().lines().count(), 2, "no zfs command for an audit, only the hello's one and the listing's");
    }

    #[test]
    fn no_audit_yet_is_an_answer_not_an_error() {
        let (dir, path) = audit_dir(b"");
        std::fs::remove_file(&path).unwrap();
        assert_eq!(audit_answer(&Fake::new().with_audit(path)), Response::Audit { report: None });
        // Nor the directory (the timer never ran).
        let gone = dir.path().join("nothing").join("box.json");
        assert_eq!(audit_answer(&Fake::new().with_audit(gone)), Response::Audit { report: None });
    }

    #[test]
    fn a_symlink_at_the_audit_path_is_not_followed() {
        let (dir, real) = audit_dir(b"{}");
        let link = dir.path().join("link.json");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        let answer = audit_answer(&Fake::new().with_audit(link));
        let Response::Error { code: ErrorCode::Refused, message } = answer else { panic!("{answer:?}") };
        assert!(message.contains("link.json"), "{message}");
        // A symlinked directory neither.
        let dir_link = dir.path().join("dirlink");
        std::os::unix::fs::symlink(dir.path(), &dir_link).unwrap();
        let answer = audit_answer(&Fake::new().with_audit(dir_link.join("box.json")));
        let Response::Error { code: ErrorCode::Refused, message } = answer else { panic!("{answer:?}") };
        assert!(message.contains("a symlink"), "{message}");
    }

    #[test]
    fn an_audit_over_the_limit_or_writable_by_others_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let (_dir, path) = audit_dir(&vec![b' '; MAX_AUDIT_LEN + 1]);
        let answer = audit_answer(&Fake::new().with_audit(path));
        let Response::Error { code: ErrorCode::Refused, message } = answer else { panic!("{answer:?}") };
        assert!(message.contains("larger than"), "{message}");
        let (_dir, path) = audit_dir(&vec![b' '; MAX_AUDIT_LEN]);
        assert!(matches!(audit_answer(&Fake::new().with_audit(path)), Response::Audit { report: Some(_) }));
        let (dir, path) = audit_dir(b"{}");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666)).unwrap();
        let answer = audit_answer(&Fake::new().with_audit(path.clone()));
        assert!(
            matches!(&answer, Response::Error { message, .. } if message.contains("writable by others")),
            "{answer:?}"
        );
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
        let answer = audit_answer(&Fake::new().with_audit(path.clone()));
        assert!(
            matches!(&answer, Response::Error { message, .. } if message.contains("writable by others")),
            "{answer:?}"
        );
        // Root's file, when the server runs as someone else: not handed over.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let one_at_a_time = serial();
        let f = Fake::new();
        let mut s = Server::new(
            Zfs::with_binary(f.zfs.path()),
            Dataset::new("offsite/home").unwrap(),
            Cursor::new(audit_then_list()),
            Vec::new(),
        )
        .with_lock_scope(f.zfs.dir().display().to_string())
        .with_audit(&path, crate::private::me() + 1);
        s.serve().unwrap();
        let mut out = Cursor::new(s.output);
        let _hello = protocol::read_msg::<Response>(&mut out, usize::MAX).unwrap();
        let answer = protocol::read_msg::<Response>(&mut out, usize::MAX).unwrap();
        assert!(matches!(&answer, Response::Error { message, .. } if message.contains("belongs to uid")), "{answer:?}");
        drop(one_at_a_time);
        // A FIFO cannot hang it.
        let fifo = dir.path().join("fifo.json");
        zoffsite_testkit::mkfifo(&fifo);
        let answer = audit_answer(&Fake::new().with_audit(fifo));
        assert!(
            matches!(&answer, Response::Error { message, .. } if message.contains("not a regular file")),
            "{answer:?}"
        );
    }

    fn request(snapshot: &str, guid: u64, from: Option<u64>, resume: bool) -> Request {
        Request::Receive {
            dataset: Dataset::new("tank/data").unwrap(),
            snapshot: SnapName::new(snapshot).unwrap(),
            guid: Guid::new(guid).unwrap(),
            from: from.map(|f| Guid::new(f).unwrap()),
            resume,
        }
    }

    fn session(items: &[(Request, &[u8])]) -> Vec<u8> {
        let mut v = hello();
        for (req, stream) in items {
            protocol::write_msg(&mut v, req).unwrap();
            protocol::write_data(&mut v, stream).unwrap();
            protocol::write_end(&mut v).unwrap();
        }
        protocol::write_msg(&mut v, &Request::Bye).unwrap();
        v
    }

    const RAW: u64 = (1 << 16) | (1 << 22) | FEATURE_RAW;

    /// RAW_FULL's BEGIN record (and its wrapped-key payload), then `writes`
    /// 128 KiB WRITE records, each payload distinct, then an END: a stream
    /// whose payloads are large enough to be spliced. `foreign_at` puts a
    /// WRITE for another snapshot GUID at that position.
    fn big_stream(writes: usize, foreign_at: Option<usize>) -> (Vec<u8>, usize) {
        let begin = RECORD_LEN + u32::from_le_bytes(RAW_FULL[4..8].try_into().unwrap()) as usize;
        let mut s = RAW_FULL[..begin].to_vec();
        let mut foreign_offset = 0;
        for i in 0..writes {
            let mut r = [0u8; RECORD_LEN];
            r[0] = 3; // WRITE
            let toguid = if foreign_at == Some(i) { S1 + 1 } else { S1 };
            r[32..40].copy_from_slice(&(128u64 << 10).to_le_bytes()); // logical size
            r[40..48].copy_from_slice(&toguid.to_le_bytes());
            r[50] = 15; // compressed (zstd): the payload is the compressed size
            r[96..104].copy_from_slice(&(128u64 << 10).to_le_bytes());
            if foreign_at == Some(i) {
                foreign_offset = s.len();
            }
            s.extend_from_slice(&r);
            s.extend((0..128usize << 10).map(|j| (i * 31 + j / 7).to_le_bytes()[0]));
        }
        let mut end = [0u8; RECORD_LEN];
        end[0] = 5;
        end[40..48].copy_from_slice(&S1.to_le_bytes());
        s.extend_from_slice(&end);
        // The checksums a sender computes: zfs receive (the fake's too)
        // checks them.
        zoffsite_core::records::craft::fix_checksums(&mut s);
        (s, foreign_offset)
    }

    #[test]
    fn large_payloads_reach_zfs_receive_byte_for_byte_spliced_or_copied() {
        let (stream, _) = big_stream(40, None);
        for piped in [true, false] {
            let f = Fake::new();
            let input = session(&[(request("s1", S1, None, false), &stream)]);
            let (r, msgs) = if piped { f.serve_piped(input) } else { f.serve(input) };
            assert!(r.is_ok(), "{r:?}");
            assert!(matches!(&msgs[..], [Response::Hello { .. }, Response::Received { .. }]), "{msgs:?}");
            let got = f.received();
            assert!(got == stream, "piped={piped}: {} bytes received of {}", got.len(), stream.len());
        }
    }

    #[test]
    fn a_bad_header_after_spliced_payloads_never_reaches_zfs_receive() {
        let (stream, foreign) = big_stream(40, Some(25));
        for piped in [true, false] {
            let f = Fake::new();
            let (good, _) = big_stream(3, None);
            // The refused stream, then a good one in the same session: the
            // frames stay in step after the refusal.
            // (The second into another dataset: a receive killed as its input
            // ends may keep resumable state, as a real one does.)
            let mut other = request("s1", S1, None, false);
            if let Request::Receive { dataset, .. } = &mut other {
                *dataset = Dataset::new("tank/other").unwrap();
            }
            let input = session(&[(request("s1", S1, None, false), &stream), (other, &good)]);
            let (r, msgs) = if piped { f.serve_piped(input) } else { f.serve(input) };
            assert!(r.is_ok(), "{r:?}");
            match &msgs[..] {
                [Response::Hello { .. }, Response::Error { code: ErrorCode::Refused, message }, Response::Received { .. }] =>
                {
                    assert!(message.contains("is for snapshot GUID"), "{message}");
                }
                other => panic!("piped={piped}: {other:?}"),
            }
            // The fake's receives append to one file: what the first one
            // got is a prefix of the stream that stops before the foreign
            // header, then comes the whole good stream.
            let got = f.received();
            let (first, second) = got.split_at(got.len() - good.len());
            assert!(second == good, "piped={piped}");
            assert!(first.len() <= foreign && first == &stream[..first.len()], "piped={piped}: {} bytes", first.len());
            // The records before it went through: zfs receive is stopped as
            // soon as the bad header is seen, so what it had not read yet of
            // its pipe (and of its last read, for the fake's log) never
            // shows; everything before that does.
            let unread = crate::process::STREAM_PIPE_SIZE + zoffsite_testkit::fake::receive::READ_SIZE;
            assert!(first.len() + unread > 24 * (128 << 10), "piped={piped}: {} bytes went through", first.len());
        }
    }

    /// A pipe `serve` may splice from, counting what is read from it into
    /// user space.
    struct Counted {
        pipe: std::fs::File,
        read: usize,
    }

    impl Read for Counted {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = self.pipe.read(buf)?;
            self.read += n;
            Ok(n)
        }
    }

    impl Input for Counted {
        fn splice_fd(&self) -> Option<BorrowedFd<'_>> {
            Some(self.pipe.as_fd())
        }
    }

    #[test]
    fn after_a_spliced_payload_only_the_next_header_is_read_into_user_space() {
        use super::super::pump::MIN_READ;
        let writes = 6;
        let (stream, _) = big_stream(writes, None);
        let begin = RECORD_LEN + u32::from_le_bytes(RAW_FULL[4..8].try_into().unwrap()) as usize;
        let header = |i: usize| begin + i * (RECORD_LEN + (128 << 10));
        // Frames that end inside a header, and inside a payload with
        // enough of it left to splice: the next frame goes on where the
        // last one stopped.
        let cuts = [header(1) + 100, header(3) + 1, header(4) + RECORD_LEN + 50_000, stream.len()];
        // The whole stream waits in the pipe, so that no read or splice
        // comes short for want of input (a payload's last bytes are then
        // read, not spliced, and the count below would not be exact).
        let (r, mut w) = std::io::pipe().unwrap();
        crate::process::widen_pipe(&w);
        let room = rustix::pipe::fcntl_getpipe_size(&w).unwrap();
        assert!(room >= stream.len(), "a {room}-byte pipe: this test needs pipe-max-size >= 1 MiB");
        w.write_all(&stream).unwrap();
        drop(w);
        let mut input = Counted { pipe: std::fs::File::from(std::os::fd::OwnedFd::from(r)), read: 0 };
        let out = tempfile::NamedTempFile::new().unwrap();
        let cat = crate::process::Cmd::new("sh").args(["-c", &format!("cat > '{}'", out.path().display())]);
        let mut child = Running::with_stdin(&cat).unwrap();
        let mut sink = Sink::new(child.child.stdin.take());
        let mut v = StreamValidator::new(Expect {
            from: None,
            to: Guid::new(S1).unwrap(),
            resuming: false,
            key: None,
            name: None,
            held: Held::default(),
        });
        let mut scratch = Vec::new();
        let mut at = 0;
        for cut in cuts {
            assert!(pump(&mut input, cut - at, &mut v, &mut sink, &mut scratch).is_ok(), "frame ending at {cut}");
            at = cut;
        }
        assert!(!sink.close());
        assert!(child.finish().unwrap().success());
        assert!(v.finish().is_ok());
        assert!(std::fs::read(out.path()).unwrap() == stream, "zfs receive got the stream byte for byte");
        // The first read takes MIN_READ (BEGIN, its key data, the first
        // WRITE's header and the start of its payload); after that, only
        // each record's header (5 more WRITEs and the END) is read: every other
        // payload byte was spliced.
        assert_eq!(input.read, MIN_READ + writes * RECORD_LEN);
    }

    /// `zfs send -w -I @s1 t/src@s4`, a compound stream of 3 substreams.
    const RAW_I: &[u8] = include_bytes!("../../../zoffsite-core/testdata/raw-I.zstream");
    const S4: u64 = 3450180799739347870;
    /// RAW_I's other two substreams (testdata/capture.log).
    const S2: u64 = 16838371782063219762;
    const S3: u64 = 6057413346056771907;
    /// The box's copy of tank/data under the test root.
    const T: &str = "offsite/home/tank/data";
    /// `zfs send -w -t` of another dataset (t/big), with another key.
    const RESUMED_INCR: &[u8] = include_bytes!("../../../zoffsite-core/testdata/raw-resumed-incr.zstream");

    fn key_of(stream: &[u8]) -> KeyWrap {
        let len = u32::from_le_bytes(stream[4..8].try_into().unwrap()) as usize;
        KeyWrap::from_begin_payload(&stream[RECORD_LEN..RECORD_LEN + len]).unwrap()
    }

    #[test]
    fn the_first_receive_pins_the_key_and_a_pinned_key_is_not_pinned_again() {
        let f = Fake::new();
        let (r, msgs) = f.serve(session(&[(request("s1", S1, None, false), RAW_FULL)]));
        assert!(r.is_ok() && matches!(msgs[1], Response::Received { .. }), "{msgs:?}");
        let pin = format!("set zoffsite:keywrap={} offsite/home/tank/data", key_of(RAW_FULL));
        assert!(f.log().contains(&pin), "{}", f.log());

        let f = Fake::new().holding(&[("s1", S1)]).pinned(&key_of(RAW_FULL).to_string());
        let (r, msgs) = f.serve(session(&[(request("s4", S4, Some(S1), false), RAW_I)]));
        assert!(r.is_ok() && matches!(msgs[1], Response::Received { .. }), "{msgs:?}");
        assert!(f.log().contains("get -H -p -s local -o value zoffsite:keywrap offsite/home/tank/data"), "{}", f.log());
        assert!(!f.log().contains("set zoffsite:keywrap"), "{}", f.log());
    }

    #[test]
    fn a_re_keyed_stream_is_refused_before_zfs_receive_sees_it() {
        // The box's copy was first received with t/big's key: t/src's
        // streams now carry another (as after `zfs change-key`).
        let f = Fake::new().holding(&[("s1", S1)]).pinned(&key_of(RESUMED_INCR).to_string());
        let (r, msgs) = f.serve(session(&[(request("s4", S4, Some(S1), false), RAW_I)]));
        assert!(r.is_ok(), "{r:?}");
        match &msgs[..] {
            [Response::Hello { .. }, Response::Error { code: ErrorCode::Refused, message }] => {
                assert!(message.contains("different encryption key"), "{message}");
                assert!(
                    message.contains("zfs inherit zoffsite:keywrap offsite/home/tank/data (that dataset only"),
                    "{message}"
                );
            }
            other => panic!("{other:?}"),
        }
        assert!(!f.log().contains("receive"), "{}", f.log());
        // A value the owner (or anyone) wrote by hand is not trusted either.
        let f = Fake::new().holding(&[("s1", S1)]).pinned("whatever");
        let (_, msgs) = f.serve(session(&[(request("s4", S4, Some(S1), false), RAW_I)]));
        assert!(
            matches!(&msgs[1], Response::Error { code: ErrorCode::Refused, message } if message.contains("zfs inherit zoffsite:keywrap")),
            "{msgs:?}"
        );
        assert!(!f.log().contains("receive"), "{}", f.log());
    }

    /// RAW_I with crypt_keydata twice in its 2nd substream's key data: the
    /// pinned one first, t/big's after it (which zfs receive, reading the
    /// last, would install), checksums recomputed.
    fn with_second_key_data() -> Vec<u8> {
        use zoffsite_core::nvlist::{pack, unpack};
        use zoffsite_core::records::craft;
        let len = u32::from_le_bytes(RESUMED_INCR[4..8].try_into().unwrap()) as usize;
        let theirs = unpack(&RESUMED_INCR[RECORD_LEN..RECORD_LEN + len]).unwrap();
        let theirs = theirs.pairs.into_iter().find(|(n, _)| n == "crypt_keydata").unwrap();
        craft::with_begin_payloads(RAW_I, |i, p| {
            let mut top = unpack(p).unwrap();
            if i == 1 {
                top.pairs.push(theirs.clone());
            }
            pack(&top, false)
        })
    }

    #[test]
    fn a_second_crypt_keydata_is_refused_before_zfs_receive_sees_it_pinned_or_not() {
        let crafted = with_second_key_data();
        for pinned in [true, false] {
            let mut f = Fake::new().holding(&[("s1", S1)]);
            if pinned {
                f = f.pinned(&key_of(RAW_FULL).to_string());
            }
            let (r, msgs) = f.serve(session(&[(request("s4", S4, Some(S1), false), &crafted)]));
            assert!(r.is_ok(), "{r:?}");
            match &msgs[..] {
                [Response::Hello { .. }, Response::Error { code: ErrorCode::Refused, message }] => {
                    assert!(message.contains("\"crypt_keydata\" appears twice"), "{message}");
                    assert!(message.contains("t/src@s3") && message.contains("never writes"), "{message}");
                }
                other => panic!("pinned={pinned}: {other:?}"),
            }
            // Refused at the 2nd substream's BEGIN: zfs receive may have
            // taken the first substream, never a byte of the crafted one.
            let got = f.received();
            assert!(got.len() < 19652 && crafted.starts_with(&got), "pinned={pinned}: {} bytes", got.len());
            assert!(!f.log().contains("set zoffsite:keywrap"), "nothing pinned: {}", f.log());
        }
    }

    #[test]
    fn a_replay_of_snapshots_the_box_holds_is_refused_before_zfs_receive_sees_it() {
        // The whole history again as one -I stream (s2..s4 from s1), onto a
        // box that already holds s2: zfs receive would skip it, exit 0, and
        // the old snapshots would be stamped as received now.
        let f = Fake::new().holding(&[("s1", S1), ("s2", S2)]).pinned(&key_of(RAW_FULL).to_string());
        let (r, msgs) = f.serve(session(&[(request("s4", S4, Some(S1), false), RAW_I)]));
        assert!(r.is_ok(), "{r:?}");
        match &msgs[..] {
            [Response::Hello { .. }, Response::Error { code: ErrorCode::Refused, message }] => {
                assert!(message.contains("t/src@s2") && message.contains("already holds"), "{message}");
            }
            other => panic!("{other:?}"),
        }
        // A full stream of a snapshot it holds, by name alone or by GUID alone.
        for before in [("s1", 42), ("other", S1)] {
            let g = Fake::new().holding(&[before]);
            let (_, msgs) = g.serve(session(&[(request("s1", S1, None, false), RAW_FULL)]));
            assert!(
                matches!(&msgs[1], Response::Error { code: ErrorCode::Refused, message } if message.contains("already holds")),
                "{msgs:?}"
            );
            assert!(!g.log().contains("receive") && !g.log().contains("set "), "{}", g.log());
        }
        assert!(!f.log().contains("receive") && !f.log().contains("set "), "{}", f.log());
    }

    #[test]
    fn only_snapshots_this_receive_created_are_stamped_and_never_twice() {
        // The box holds s1 with a stamp of its own; the -I stream lands s2,
        // s3 and s4, and someone stamps s4 right after zfs receive, before
        // serve does: s1 and s4 keep their stamps, s2 and s3 get one, in one
        // call. (Which snapshots a receive created, by the box's own txg, is
        // core's `created_by_receive`, tested there.)
        let f = Fake::new().holding(&[("s1", S1)]).pinned(&key_of(RAW_FULL).to_string());
        f.zfs.set(&format!("{T}@s1"), RECEIVED_PROPERTY, "1600000000");
        let race = vec!["set".into(), format!("{RECEIVED_PROPERTY}=1700000000"), format!("{T}@s4")];
        f.zfs.fault("receive", None, 1, FaultAction::Then { args: race });
        let (r, msgs) = f.serve(session(&[(request("s4", S4, Some(S1), false), RAW_I)]));
        assert!(r.is_ok(), "{r:?}");
        assert!(matches!(&msgs[1], Response::Received { guid, .. } if guid.get() == S4), "{msgs:?}");
        let log = f.log();
        let sets: Vec<&str> = log.lines().filter(|l| l.starts_with("set zoffsite:received=")).collect();
        assert_eq!(sets.len(), 1, "{log}");
        assert!(sets[0].ends_with(&format!(" {T}@s2 {T}@s3")), "only s2 and s3 are stamped: {}", sets[0]);
        assert_eq!(f.zfs.local(&format!("{T}@s1"), RECEIVED_PROPERTY).as_deref(), Some("1600000000"));
        assert_eq!(f.zfs.local(&format!("{T}@s4"), RECEIVED_PROPERTY).as_deref(), Some("1700000000"));
        let landed: Vec<(String, u64)> = f.zfs.snapshots(T);
        assert_eq!(landed[1..], [("s2".into(), S2), ("s3".into(), S3), ("s4".into(), S4)], "with the stream's GUIDs");
    }

    /// Accepts `n` bytes, then fails: a source that hangs up right after
    /// its stream, before the answer.
    struct HangUp(usize);

    impl Write for HangUp {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            if b.len() > self.0 {
                return Err(io::ErrorKind::BrokenPipe.into());
            }
            self.0 -= b.len();
            Ok(b.len())
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn stamps_and_pin_are_written_before_the_answer() {
        let f = Fake::new();
        let mut hello_len = Vec::new();
        protocol::write_msg(
            &mut hello_len,
            &Response::Hello {
                protocol: PROTOCOL_NAME.into(),
                version: PROTOCOL_VERSION,
                server: format!("zoffsite {}", env!("CARGO_PKG_VERSION")),
                root: Dataset::new("offsite/home").unwrap(),
            },
        )
        .unwrap();
        let mut s = Server::new(
            Zfs::with_binary(f.zfs.path()),
            Dataset::new("offsite/home").unwrap(),
            Cursor::new(session(&[(request("s1", S1, None, false), RAW_FULL)])),
            HangUp(hello_len.len()),
        )
        .with_lock_scope(f.zfs.dir().display().to_string());
        let served = {
            let _one_at_a_time = serial();
            s.serve()
        };
        assert!(matches!(served, Err(Fatal::Io(_))), "the answer could not be written");
        let log = f.log();
        assert!(log.contains("set zoffsite:received=") && log.contains(&format!(" {T}@s1\n")), "{log}");
        assert!(log.contains(&format!("set zoffsite:keywrap={} {T}\n", key_of(RAW_FULL))), "{log}");
    }

    /// A server whose receive locks are scoped to `f` (tests run side by side).
    fn locking_server(f: &Fake) -> Server<Cursor<Vec<u8>>, Vec<u8>> {
        Server::new(
            Zfs::with_binary(f.zfs.path()),
            Dataset::new("offsite/home").unwrap(),
            Cursor::new(Vec::new()),
            Vec::new(),
        )
        .with_lock_scope(f.zfs.dir().display().to_string())
    }

    #[test]
    fn one_session_at_a_time_receives_into_a_dataset() {
        let f = Fake::new();
        let s = locking_server(&f);
        let target = Dataset::new(T).unwrap();
        let held = s.lock_dataset(&target).ok().expect("free");
        let (r, msgs) = f.serve(session(&[(request("s1", S1, None, false), RAW_FULL)]));
        assert!(r.is_ok(), "{r:?}");
        assert!(
            matches!(&msgs[1], Response::Error { code: ErrorCode::Conflict, message } if message.contains("another session")),
            "{msgs:?}"
        );
        assert!(!f.log().contains("receive"), "{}", f.log());
        // Another dataset is not held up, and the lock goes with its holder.
        assert!(s.lock_dataset(&Dataset::new("offsite/home/tank/other").unwrap()).is_ok());
        drop(held);
        let (_, msgs) = f.serve(session(&[(request("s1", S1, None, false), RAW_FULL)]));
        assert!(matches!(&msgs[1], Response::Received { .. }), "{msgs:?}");
    }

    #[test]
    fn a_lock_released_within_the_grace_is_taken_and_one_held_longer_is_a_conflict() {
        // What a fork in another thread does: the lock stays bound for a
        // moment after its holder let go.
        let f = Fake::new();
        let s = locking_server(&f);
        let target = Dataset::new(T).unwrap();
        let held = s.lock_dataset(&target).ok().expect("free");
        let releaser = std::thread::spawn(move || {
            std::thread::sleep(LOCK_GRACE / 5);
            drop(held);
        });
        let again = s.lock_dataset(&target);
        releaser.join().unwrap();
        assert!(again.is_ok(), "a lock released within the grace is taken");
        let started = std::time::Instant::now();
        let r = s.lock_dataset(&target);
        assert!(matches!(&r, Err(rej) if rej.code == ErrorCode::Conflict), "held for good: a conflict");
        assert!(started.elapsed() >= LOCK_GRACE, "the conflict is only reported after the grace");
    }

    #[test]
    fn a_stream_named_otherwise_than_the_request_is_refused_up_front() {
        // The compound header names s4; the request says s5 with s4's GUID.
        let f = Fake::new().holding(&[("s1", S1)]).pinned(&key_of(RAW_FULL).to_string());
        let (_, msgs) = f.serve(session(&[(request("s5", S4, Some(S1), false), RAW_I)]));
        assert!(
            matches!(&msgs[1], Response::Error { code: ErrorCode::Refused, message } if message.contains("byte 0") && message.contains("not the requested @s5")),
            "{msgs:?}"
        );
        assert!(!f.log().contains("receive"), "{}", f.log());
    }

    #[test]
    fn deep_nesting_is_refused_before_any_placeholder() {
        let f = Fake::new();
        let deep = (0..=MAX_NESTING).map(|i| format!("d{i}")).collect::<Vec<_>>().join("/");
        let req = Request::Receive {
            dataset: Dataset::new(&deep).unwrap(),
            snapshot: SnapName::new("s1").unwrap(),
            guid: Guid::new(S1).unwrap(),
            from: None,
            resume: false,
        };
        let (_, msgs) = f.serve(session(&[(req, RAW_FULL)]));
        assert!(
            matches!(&msgs[1], Response::Error { code: ErrorCode::Refused, message } if message.contains("at most 16")),
            "{msgs:?}"
        );
        assert!(!f.log().contains("create") && !f.log().contains("receive"), "{}", f.log());
    }

    #[test]
    fn a_shell_command_on_stdin_runs_nothing() {
        let f = Fake::new();
        let (r, msgs) = f.serve(b"zfs destroy -r offsite; touch /tmp/x\n".to_vec());
        assert!(r.is_err());
        assert!(matches!(&msgs[..], [Response::Error { code: ErrorCode::Protocol, .. }]), "{msgs:?}");
        assert_eq!(f.log(), "", "no zfs command may run");
    }

    #[test]
    fn a_mountable_root_is_refused() {
        let f = Fake::with_mountpoint("/offsite/home");
        let (r, msgs) = f.serve(session(&[]));
        assert!(r.is_err());
        assert!(
            matches!(&msgs[..], [Response::Error { code: ErrorCode::Root, message }] if message.contains("zfs set mountpoint=none offsite/home")),
            "{msgs:?}"
        );
    }

    #[test]
    fn a_missing_root_is_refused_with_how_to_make_it_in_one_zfs_call() {
        let f = Fake { zfs: FakeZfs::new(), ..Fake::new() };
        f.zfs.world(|w| w.add_pool("offsite"));
        let (r, msgs) = f.serve(session(&[]));
        assert!(r.is_err());
        assert!(
            matches!(&msgs[..], [Response::Error { code: ErrorCode::Root, message }]
                if message.contains("does not exist") && message.contains("zfs create -o canmount=off -o mountpoint=none offsite/home")),
            "{msgs:?}"
        );
        assert_eq!(f.log().lines().count(), 1, "{}", f.log());
    }

    #[test]
    fn no_input_at_all_is_explained() {
        let f = Fake::new();
        let (r, _) = f.serve(Vec::new());
        assert!(r.unwrap_err().to_string().contains("only speaks the zoffsite protocol"));
        assert_eq!(f.log(), "");
    }

    #[test]
    fn a_plaintext_stream_never_reaches_zfs_receive() {
        let f = Fake::new().holding(&[("p1", P1)]);
        let (r, msgs) = f.serve(session(&[(request("p2", P2, Some(P1), false), PLAIN_INCR)]));
        assert!(r.is_ok());
        match &msgs[..] {
            [Response::Hello { .. }, Response::Error { code: ErrorCode::Refused, message }] => {
                assert!(message.contains("not raw"), "{message}");
            }
            other => panic!("{other:?}"),
        }
        assert!(!f.log().contains("receive"), "{}", f.log());
        assert!(f.received().is_empty());
    }

    #[test]
    fn abort_touches_only_partial_state() {
        let f = Fake::new();
        let mut input = hello();
        protocol::write_msg(&mut input, &Request::Abort { dataset: Dataset::new("tank/data").unwrap() }).unwrap();
        let (r, msgs) = f.serve(input);
        assert!(r.is_ok());
        // The fake lists no partial state, so nothing may be aborted.
        assert!(matches!(&msgs[1], Response::Error { code: ErrorCode::Conflict, .. }), "{msgs:?}");
        assert!(!f.log().contains("receive -A"), "{}", f.log());
    }

    #[test]
    fn a_normal_stream_cannot_pose_as_a_resume_and_back() {
        let f = Fake::new().holding(&[("s0", 77)]);
        let resuming =
            encode_begin(RAW | zoffsite_core::stream::FEATURE_RESUMING, 1, S1, 0, "tank/data@zoffsite-1", false);
        let (_, msgs) =
            f.serve(session(&[(request("s1", S1, None, true), RAW_FULL), (request("s1", S1, None, false), &resuming)]));
        for m in &msgs[1..3] {
            assert!(
                matches!(m, Response::Error { code: ErrorCode::Refused, message } if message.contains("resum")),
                "{msgs:?}"
            );
        }
        assert!(!f.log().contains("receive"));
    }

    #[test]
    fn a_stream_for_another_snapshot_is_refused() {
        let f = Fake::new();
        let (_, msgs) = f.serve(session(&[(request("s1", 4242, None, false), RAW_FULL)]));
        assert!(
            matches!(&msgs[1], Response::Error { code: ErrorCode::Refused, message } if message.contains("4242")),
            "{msgs:?}"
        );
        assert!(!f.log().contains("receive"));
    }

    #[test]
    fn a_raw_stream_is_received_append_only_under_the_root() {
        let f = Fake::new();
        let (r, msgs) = f.serve(session(&[(request("s1", S1, None, false), RAW_FULL)]));
        assert!(r.is_ok());
        assert!(matches!(&msgs[1], Response::Received { guid, .. } if guid.get() == S1), "{msgs:?}");
        let log = f.log();
        assert!(log.contains("create -u offsite/home/tank\n"), "{log}");
        assert!(log.contains("set zoffsite:received="), "the box's clock is recorded: {log}");
        assert!(log.contains("receive -u -s offsite/home/tank/data\n"), "{log}");
        assert!(!log.contains("-F") && !log.contains("destroy") && !log.contains("load-key"), "{log}");
        // zfs receive got the stream byte for byte, BEGIN record included.
        assert_eq!(f.received(), RAW_FULL);
    }

    #[test]
    fn a_stream_with_trailing_garbage_is_cut_before_zfs_receive_sees_it() {
        let f = Fake::new();
        let mut stream = RAW_FULL.to_vec();
        stream.extend_from_slice(&[7u8; 4096]);
        let (_, msgs) = f.serve(session(&[(request("s1", S1, None, false), &stream)]));
        assert!(matches!(&msgs[1], Response::Error { code: ErrorCode::Refused, .. }), "{msgs:?}");
        let got = f.received();
        assert!(got.len() <= RAW_FULL.len(), "the garbage never reached zfs receive");
    }
}
