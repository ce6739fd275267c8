//! The source's side of a session with `zoffsite serve` on a box.
//!
//! Everything read here comes from the box and is hostile input: frames are
//! size-bounded before allocation ([`protocol::read_frame`]), messages are
//! decoded into validated types, listings are checked against what was
//! asked, and every wait has a deadline so a box that stalls cannot hang a
//! run. Text from the box is sanitized before anyone prints it.
//!
//! A session runs over any reader and writer with a [`Peer`] behind them
//! ([`Session::over`]): in production that is ssh ([`Session::connect`],
//! spawned by [`crate::process`]); tests connect a
//! [`Server`](super::server::Server) in-process.

use std::collections::BTreeMap;
use std::io::{BufWriter, Read, Write};
use std::os::fd::AsFd;
use std::process::Child;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, TryRecvError};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use jiff::tz::TimeZone;
use zoffsite_core::bandwidth::Schedule;
use zoffsite_core::config::Target;
use zoffsite_core::doctor::boxaudit::{Fetched, MAX_AUDIT_LEN};
use zoffsite_core::names::{Dataset, Guid, SnapName};
use zoffsite_core::protocol::{
    self, ErrorCode, HeartbeatDataset, ProtoError, RemoteDataset, Request, Response, MAX_ERROR_TEXT, MAX_RESPONSE_LEN,
    PROTOCOL_NAME, PROTOCOL_VERSION,
};

use crate::pace::{Pacer, SystemClock};
use crate::process::{self, Running, StderrCollector};
use crate::ssh::{self, SshFailure};
use crate::zfs::{Zfs, ZfsError};

/// How long the box may take to answer a request other than a receive.
const REPLY_TIMEOUT: Duration = Duration::from_secs(300);
/// How long the box may take to confirm a receive after the stream ended.
const RECEIVE_TIMEOUT: Duration = Duration::from_secs(1800);
/// A write to the box that makes no progress for this long means the box
/// stopped reading: the connection is killed ([`Peer::kill`]), so the run
/// (and its lock) cannot hang.
const WRITE_STALL: Duration = Duration::from_secs(300);
/// How long `close` waits for the box's side to end after saying goodbye.
const CLOSE_WAIT: Duration = Duration::from_secs(30);
/// Stream chunk size: big enough that framing costs nothing measurable.
const CHUNK: usize = protocol::MAX_DATA_LEN;
/// After a read from `zfs send` that brought less than a chunk, the relay
/// sleeps `COALESCE_STEP` at a time and takes what came
/// ([`Relay::top_up`](crate::splice::Relay::top_up)), for `COALESCE_WAIT`
/// at most: `zfs send` writes each record's header and payload
/// separately, and without this each write it makes while zoffsite keeps
/// up is a frame of its own (about 15 per MiB, each a few system calls and
/// a wake-up on both sides). A step that brings nothing ends the wait, so a
/// slow or pausing stream is held back one step. zfs send's pipe holds
/// [`STREAM_PIPE_SIZE`](crate::process::STREAM_PIPE_SIZE) meanwhile, so it
/// is not stalled by a step unless it writes faster than that per step.
const COALESCE_STEP: Duration = Duration::from_millis(1);
const COALESCE_WAIT: Duration = Duration::from_millis(2);

#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    #[error("the box's SSH host key is not the one pinned in {known_hosts}. Someone may be intercepting the connection, or the box was reinstalled. Nothing was sent. If you reinstalled the box, check its new host key fingerprint on the box itself and replace its line in {known_hosts}")]
    HostKeyChanged { known_hosts: String },
    #[error("the box's SSH host key is not pinned in {known_hosts}, so the box cannot be verified and nothing was sent. Pin it: on the box run `ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub`, compare, and add the key to {known_hosts}")]
    HostKeyUnknown { known_hosts: String },
    #[error("the box refused the key {identity}: add its public key, with the forced `zoffsite serve` command, to the box user's authorized_keys")]
    AuthFailed { identity: String },
    #[error("cannot reach the box at {host}: {detail}. Check that the box is powered and its WireGuard tunnel is up (`wg show` on the source shows a recent handshake)")]
    Unreachable { host: String, detail: String },
    #[error("ssh failed: {0}")]
    Ssh(String),
    #[error("the box broke the protocol: {error}{stderr}")]
    Protocol { error: ProtoError, stderr: String },
    #[error("the box did not answer within {0:?}")]
    Timeout(Duration),
    #[error("the box refused: {message}")]
    Refused { code: ErrorCode, message: String },
    #[error("local zfs send failed: {0}")]
    Send(ZfsError),
    #[error("{0}")]
    Local(String),
}

/// What stands behind a session's reader and writer: the ssh process to a
/// box ([`Session::connect`]), or whatever a test connects (a
/// [`Server`](super::server::Server) on a thread).
pub trait Peer: Send + Sync {
    /// Ends the connection now, from any thread, as often as it is called:
    /// afterwards a write blocked on the box must fail and the reader must
    /// reach its end (ssh is killed; an in-process transport shuts its
    /// socket down). Called on a stalled write, a timeout, a protocol
    /// violation. A peer that cannot do this only loses the stall and
    /// timeout guards (acceptable in a test, never in production).
    fn kill(&self);

    /// Called once the session's writer is closed (after the goodbye, or
    /// when the connection failed): gives the box's side up to `grace` to
    /// end by itself, kills it otherwise, and waits until it has ended.
    fn end(&self, grace: Duration);

    /// Why the connection dropped, once [`end`](Self::end) returned. ssh
    /// tells its own failures (host key, authentication, network) on its
    /// stderr; by default, the box just closed the connection.
    fn lost(&self) -> RemoteError {
        RemoteError::Protocol { error: ProtoError::Closed, stderr: String::new() }
    }
}

/// The ssh process behind a session to a box.
struct Ssh {
    child: Mutex<Child>,
    stderr: Mutex<StderrCollector>,
    host: String,
    known_hosts: String,
    identity: String,
}

fn locked<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Peer for Ssh {
    fn kill(&self) {
        // std never signals a child it has reaped, so a late kill (the
        // watchdog's) cannot reach a recycled pid.
        let _ = locked(&self.child).kill();
    }

    fn end(&self, grace: Duration) {
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline && matches!(locked(&self.child).try_wait(), Ok(None)) {
            std::thread::sleep(Duration::from_millis(50));
        }
        let mut child = locked(&self.child);
        let _ = child.kill();
        let _ = child.wait();
    }

    fn lost(&self) -> RemoteError {
        let stderr = locked(&self.stderr).finish();
        let known_hosts = self.known_hosts.clone();
        match ssh::classify(&stderr) {
            SshFailure::HostKeyChanged => RemoteError::HostKeyChanged { known_hosts },
            SshFailure::HostKeyUnknown => RemoteError::HostKeyUnknown { known_hosts },
            SshFailure::AuthFailed => RemoteError::AuthFailed { identity: self.identity.clone() },
            SshFailure::Unreachable(detail) => RemoteError::Unreachable { host: self.host.clone(), detail },
            SshFailure::Other(_) if stderr.trim().is_empty() => {
                RemoteError::Protocol { error: ProtoError::Closed, stderr: String::new() }
            }
            SshFailure::Other(_) => RemoteError::Protocol {
                error: ProtoError::Closed,
                stderr: format!("; the box said: {}", protocol::sanitize(stderr.trim(), MAX_ERROR_TEXT)),
            },
        }
    }
}

/// The session's writer: stream chunks are spliced into its descriptor.
trait Outgoing: Write + AsFd + Send {}

impl<T: Write + AsFd + Send> Outgoing for T {}

/// What the box's side of the session delivers.
enum Incoming {
    Msg(Response),
    Data(Vec<u8>),
    End,
}

/// An open session with a box.
pub struct Session {
    peer: Arc<dyn Peer>,
    /// Milliseconds since `epoch` when the current write began; 0 when no
    /// write is under way. Read by the watchdog thread.
    writing_since: Arc<AtomicU64>,
    epoch: Instant,
    watchdog_stop: Arc<AtomicBool>,
    out: Option<BufWriter<Box<dyn Outgoing>>>,
    rx: Receiver<Result<Incoming, ProtoError>>,
    /// Most stream bytes per second sent to the box, by time of day in
    /// `tz` (unlimited: no pacing).
    bandwidth: Schedule,
    /// The source's time zone, for the bandwidth windows.
    tz: TimeZone,
    /// The box's root dataset, as it announced it.
    pub root: Dataset,
    /// The box's software version, sanitized.
    pub server: String,
}

impl Session {
    /// Opens SSH to the box and greets `serve`.
    pub fn connect(target: &Target) -> Result<Session, RemoteError> {
        let cmd = ssh::command(target);
        tracing::debug!(%cmd, "connecting");
        let ssh = process::spawn_piped(&cmd).map_err(|e| RemoteError::Ssh(e.to_string()))?;
        let peer = Ssh {
            child: Mutex::new(ssh.child),
            stderr: Mutex::new(ssh.stderr),
            host: target.host.clone(),
            known_hosts: target.known_hosts.display().to_string(),
            identity: target.identity_file.display().to_string(),
        };
        let hello_wait = target.connect_timeout + REPLY_TIMEOUT;
        let s = Self::start(ssh.stdout, Box::new(ssh.stdin), Arc::new(peer), hello_wait, WRITE_STALL)?;
        if !target.bandwidth.is_unlimited() {
            tracing::info!(target = %target.name, "bandwidth: {}", target.bandwidth.describe());
        }
        Ok(s.with_bandwidth(target.bandwidth.clone(), TimeZone::system()))
    }

    /// Greets `serve` over any transport: the box's frames are read from
    /// `reader`, requests and streams written to `writer` (a pipe or a
    /// socket, for the zero-copy relay), and `peer` is what stands behind
    /// them (see [`Peer`]).
    pub fn over(
        reader: impl Read + Send + 'static,
        writer: impl Write + AsFd + Send + 'static,
        peer: impl Peer + 'static,
    ) -> Result<Session, RemoteError> {
        Self::start(reader, Box::new(writer), Arc::new(peer), REPLY_TIMEOUT, WRITE_STALL)
    }

    /// Paces this session's stream sends to `schedule`, its windows read on
    /// the wall clock of `tz` ([`connect`](Self::connect) takes the
    /// target's `bandwidth_limit` and `bandwidth_window`s, and the system's
    /// time zone).
    pub fn with_bandwidth(mut self, schedule: Schedule, tz: TimeZone) -> Self {
        self.bandwidth = schedule;
        self.tz = tz;
        self
    }

    fn start(
        mut reader: impl Read + Send + 'static,
        writer: Box<dyn Outgoing>,
        peer: Arc<dyn Peer>,
        hello_wait: Duration,
        stall: Duration,
    ) -> Result<Session, RemoteError> {
        let out = Some(BufWriter::with_capacity(CHUNK + 64, writer));
        let (tx, rx) = mpsc::sync_channel(4);
        std::thread::spawn(move || loop {
            // Stream data comes only in answer to a `Send`; the session
            // decides whether it is expected (bounded channel: at most a few
            // MiB wait here).
            let msg = match protocol::read_frame(&mut reader, MAX_RESPONSE_LEN) {
                Ok(protocol::Frame::Msg(b)) => protocol::decode::<Response>(&b).map(Incoming::Msg),
                Ok(protocol::Frame::Data(d)) => Ok(Incoming::Data(d)),
                Ok(protocol::Frame::End) => Ok(Incoming::End),
                Err(e) => Err(e),
            };
            let stop = msg.is_err();
            if tx.send(msg).is_err() || stop {
                break;
            }
        });
        let writing_since = Arc::new(AtomicU64::new(0));
        let watchdog_stop = Arc::new(AtomicBool::new(false));
        let epoch = Instant::now();
        spawn_watchdog(peer.clone(), epoch, writing_since.clone(), watchdog_stop.clone(), stall);
        let mut s = Session {
            peer,
            writing_since,
            epoch,
            watchdog_stop,
            out,
            rx,
            bandwidth: Schedule::default(),
            tz: TimeZone::UTC,
            root: Dataset::new("unknown").expect("valid"),
            server: String::new(),
        };
        s.send(&Request::Hello {
            protocol: PROTOCOL_NAME.into(),
            version: PROTOCOL_VERSION,
            client: format!("zoffsite {}", env!("CARGO_PKG_VERSION")),
        })?;
        match s.recv(hello_wait)? {
            Response::Hello { protocol, version, server, root }
                if protocol == PROTOCOL_NAME && version == PROTOCOL_VERSION =>
            {
                s.root = root;
                s.server = protocol::sanitize(&server, 200);
                Ok(s)
            }
            other => Err(s.violation(format!("unexpected greeting {:?}", short(&other)))),
        }
    }

    fn send(&mut self, req: &Request) -> Result<(), RemoteError> {
        self.write(|w| protocol::write_msg(w, req).and_then(|_| w.flush()))
    }

    /// Writes to the box; once the connection is gone (the writer taken by
    /// [`connection_lost`](Self::connection_lost)) every write fails cleanly.
    fn write(
        &mut self,
        f: impl FnOnce(&mut BufWriter<Box<dyn Outgoing>>) -> std::io::Result<()>,
    ) -> Result<(), RemoteError> {
        // Armed while the write may block; the watchdog kills the
        // connection if it stays blocked for WRITE_STALL.
        let started = u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX).max(1);
        self.writing_since.store(started, Ordering::Relaxed);
        let r = match self.out.as_mut() {
            Some(w) => f(w),
            None => Err(std::io::ErrorKind::BrokenPipe.into()),
        };
        self.writing_since.store(0, Ordering::Relaxed);
        r.map_err(|_| self.connection_lost())
    }

    /// Waits for the next message, mapping a closed connection to the SSH
    /// failure that caused it.
    fn recv(&mut self, wait: Duration) -> Result<Response, RemoteError> {
        match self.recv_any(wait)? {
            Incoming::Msg(r) => Ok(r),
            Incoming::Data(_) | Incoming::End => Err(self.violation("the box sent stream data unasked".into())),
        }
    }

    /// The next frame, message or stream data.
    fn recv_any(&mut self, wait: Duration) -> Result<Incoming, RemoteError> {
        match self.rx.recv_timeout(wait) {
            Ok(Ok(Incoming::Msg(Response::Error { code, message }))) => {
                Err(RemoteError::Refused { code, message: protocol::sanitize(&message, MAX_ERROR_TEXT) })
            }
            Ok(Ok(r)) => Ok(r),
            Ok(Err(ProtoError::Closed)) | Err(RecvTimeoutError::Disconnected) => Err(self.connection_lost()),
            Ok(Err(error)) => Err(RemoteError::Protocol { error, stderr: String::new() }),
            Err(RecvTimeoutError::Timeout) => {
                self.peer.kill();
                Err(RemoteError::Timeout(wait))
            }
        }
    }

    /// After the connection dropped: why? Ends the peer (reaps ssh) and
    /// asks it (ssh's stderr tells its own failures).
    fn connection_lost(&mut self) -> RemoteError {
        drop(self.out.take());
        self.peer.end(Duration::ZERO);
        self.peer.lost()
    }

    fn violation(&mut self, what: String) -> RemoteError {
        self.peer.kill();
        RemoteError::Protocol { error: ProtoError::Violation(what), stderr: String::new() }
    }

    /// What the box holds of each source dataset in `datasets`.
    pub fn list(&mut self, datasets: &[Dataset]) -> Result<BTreeMap<Dataset, RemoteDataset>, RemoteError> {
        let mut all = BTreeMap::new();
        for chunk in protocol::request_chunks(datasets, |d| d.as_str().len()) {
            self.send(&Request::List { datasets: chunk.to_vec() })?;
            match self.recv(REPLY_TIMEOUT)? {
                Response::Listing { datasets: listing } => {
                    let checked = protocol::check_listing(chunk, listing)
                        .map_err(|error| RemoteError::Protocol { error, stderr: String::new() })?;
                    all.extend(checked);
                }
                other => return Err(self.violation(format!("expected a listing, got {:?}", short(&other)))),
            }
        }
        Ok(all)
    }

    /// The box's pool health and last scrub (sanitized: box text).
    pub fn health(&mut self) -> Result<(String, String, Option<i64>), RemoteError> {
        self.send(&Request::Health)?;
        match self.recv(REPLY_TIMEOUT)? {
            Response::Health { pool, health, last_scrub } => {
                Ok((protocol::sanitize(&pool, 256), protocol::sanitize(&health, 32), last_scrub))
            }
            other => Err(self.violation(format!("expected a health report, got {:?}", short(&other)))),
        }
    }

    /// The box root's last audit, unparsed ([`Fetched`]; the caller judges
    /// it with [`Posture::judge`](zoffsite_core::doctor::boxaudit::Posture::judge)),
    /// and the session closed. It takes the session because it must be
    /// the last request: a box older than the request answers
    /// `Error{protocol}` and ends the session, which is taken to mean
    /// [`Fetched::Unsupported`], not a failure. A box that could not read
    /// its file answers with an error too, and that is
    /// [`Fetched::Unreadable`]; only a lost connection or a broken
    /// protocol is an `Err`.
    pub fn audit(mut self) -> Result<Fetched, RemoteError> {
        self.send(&Request::Audit)?;
        let fetched = match self.recv(REPLY_TIMEOUT) {
            Ok(Response::Audit { report: None }) => Fetched::Missing,
            Ok(Response::Audit { report: Some(text) }) if text.len() <= MAX_AUDIT_LEN => Fetched::Report(text),
            Ok(Response::Audit { report: Some(text) }) => Fetched::Unreadable(format!(
                "it sent {} bytes, more than the {MAX_AUDIT_LEN} the source reads",
                text.len()
            )),
            Err(RemoteError::Refused { code: ErrorCode::Protocol, .. }) => {
                // An old serve ended the session after this answer.
                drop(self);
                return Ok(Fetched::Unsupported);
            }
            Err(RemoteError::Refused { message, .. }) => Fetched::Unreadable(message),
            Ok(other) => return Err(self.violation(format!("expected an audit, got {:?}", short(&other)))),
            Err(e) => return Err(e),
        };
        self.close();
        Ok(fetched)
    }

    /// Tells the box that this backup run is over and that it holds the
    /// source's newest snapshot of each of `datasets` (name, GUID): the
    /// heartbeat its `box check` takes as an excuse, for a bounded time,
    /// for no new data ([`zoffsite_core::boxside`]). Send it last: a box
    /// older than the request answers `Error{protocol}` and ends the
    /// session, which is [`Heard::Unsupported`], not a failure. Otherwise
    /// how many datasets the box recorded (it records only those whose
    /// newest snapshot has the GUID given).
    pub fn heartbeat(&mut self, datasets: &[HeartbeatDataset]) -> Result<Heard, RemoteError> {
        let mut recorded = 0u32;
        // An empty list still tells the box that the source checked in
        // (request_chunks gives one empty chunk).
        for chunk in protocol::request_chunks(datasets, |d| d.name.as_str().len()) {
            self.send(&Request::Heartbeat { datasets: chunk.to_vec() })?;
            match self.recv(REPLY_TIMEOUT) {
                Ok(Response::Heartbeat { recorded: n }) => {
                    if usize::try_from(n).map_or(true, |n| n > chunk.len()) {
                        return Err(self.violation(format!(
                            "the box says it recorded {n} datasets of a heartbeat that named {}",
                            chunk.len()
                        )));
                    }
                    recorded = recorded.saturating_add(n);
                }
                Err(RemoteError::Refused { code: ErrorCode::Protocol, .. }) if recorded == 0 => {
                    return Ok(Heard::Unsupported);
                }
                Ok(other) => return Err(self.violation(format!("expected a heartbeat, got {:?}", short(&other)))),
                Err(e) => return Err(e),
            }
        }
        Ok(Heard::Recorded(recorded))
    }

    /// What the box holds of `dataset` and everything below it (restores).
    pub fn list_tree(&mut self, dataset: &Dataset) -> Result<BTreeMap<Dataset, RemoteDataset>, RemoteError> {
        self.send(&Request::ListTree { dataset: dataset.clone() })?;
        match self.recv(REPLY_TIMEOUT)? {
            Response::Listing { datasets } => protocol::check_tree_listing(dataset, datasets)
                .map_err(|error| RemoteError::Protocol { error, stderr: String::new() }),
            other => Err(self.violation(format!("expected a listing, got {:?}", short(&other)))),
        }
    }

    /// Has the box send `dataset@snapshot` back (raw) and hands each chunk
    /// of the stream to `sink` as it arrives; returns the GUID the box
    /// announced and the bytes received. A failing `sink` ends the session
    /// (the stream cannot be skipped in step).
    pub fn fetch(
        &mut self,
        dataset: &Dataset,
        snapshot: &SnapName,
        sink: &mut dyn FnMut(&[u8]) -> std::io::Result<()>,
    ) -> Result<(Guid, u64), RemoteError> {
        self.send(&Request::Send { dataset: dataset.clone(), snapshot: snapshot.clone() })?;
        let guid = match self.recv(REPLY_TIMEOUT)? {
            Response::Sending { dataset: d, snapshot: s, guid } if d == *dataset && s == *snapshot => guid,
            other => return Err(self.violation(format!("expected a stream, got {:?}", short(&other)))),
        };
        let mut bytes = 0u64;
        loop {
            match self.recv_any(REPLY_TIMEOUT)? {
                Incoming::Data(d) => {
                    bytes += d.len() as u64;
                    if let Err(e) = sink(&d) {
                        self.peer.kill();
                        return Err(RemoteError::Local(e.to_string()));
                    }
                }
                Incoming::End => break,
                Incoming::Msg(other) => {
                    return Err(self.violation(format!("a message inside a stream: {:?}", short(&other))))
                }
            }
        }
        match self.recv(RECEIVE_TIMEOUT)? {
            Response::Sent { bytes: b } if b == bytes => Ok((guid, bytes)),
            other => Err(self.violation(format!("unexpected end of a stream ({bytes} bytes): {:?}", short(&other)))),
        }
    }

    /// Discards the box's partial receive of `dataset`.
    pub fn abort(&mut self, dataset: &Dataset) -> Result<(), RemoteError> {
        self.send(&Request::Abort { dataset: dataset.clone() })?;
        match self.recv(REPLY_TIMEOUT)? {
            Response::Aborted { dataset: d } if d == *dataset => Ok(()),
            other => Err(self.violation(format!("unexpected answer to an abort: {:?}", short(&other)))),
        }
    }

    /// Streams `send` (a running `zfs send -w`, or `-w -t` with `resume`)
    /// into the box as `dataset`'s snapshot `snapshot` and returns the GUID
    /// the box reports for it, with the number of stream bytes sent.
    /// `progress` is called with the bytes sent so far after each chunk.
    pub fn receive(
        &mut self,
        req: &Request,
        mut send: Running,
        progress: &mut dyn FnMut(u64),
    ) -> Result<(Guid, u64), RemoteError> {
        let Request::Receive { dataset, snapshot, .. } = &req else {
            let _ = send.kill();
            return Err(self.violation("internal: receive() needs a receive request".into()));
        };
        let (dataset, snapshot) = (dataset.clone(), snapshot.clone());
        if let Err(e) = self.send(req) {
            let _ = send.kill();
            return Err(e);
        }
        let send_cmd = send.cmd.clone();
        let mut out = send.child.stdout.take().expect("zfs send stdout is piped");
        // Zero-copy where the kernel allows it (zfs send's stdout is a pipe,
        // and so is ssh's stdin); copying through `buf` otherwise.
        let mut relay = crate::splice::Relay::new(CHUNK).ok();
        let mut buf = Vec::new();
        let mut sent = 0u64;
        // Paced to the target's bandwidth schedule, asked again as the
        // stream runs (a window may open or close mid-transfer).
        let mut pacer = (!self.bandwidth.is_unlimited())
            .then(|| Pacer::new(self.bandwidth.clone(), self.tz.clone(), SystemClock::new()));
        let mut early: Option<Result<Response, ProtoError>> = None;
        let mut read_err = None;
        loop {
            // The box answers before the end only to refuse: stop sending.
            match self.rx.try_recv() {
                Ok(m) => {
                    early = Some(m.and_then(|i| match i {
                        Incoming::Msg(r) => Ok(r),
                        _ => Err(ProtoError::Violation("the box sent stream data during a receive".into())),
                    }));
                    break;
                }
                Err(TryRecvError::Disconnected) => break,
                Err(TryRecvError::Empty) => {}
            }
            let max = pacer.as_mut().map_or(CHUNK, |p| p.chunk_len(CHUNK));
            let chunk = match &relay {
                // Topped up only after a fill that brought something (not
                // the end): the frame's length is then what is in the relay.
                Some(r) => match r.fill(&out, max) {
                    Ok(n) if n > 0 && n < max => {
                        Ok(Chunk::Relayed(r.top_up(&out, n, max, COALESCE_STEP, COALESCE_WAIT)))
                    }
                    Ok(n) => Ok(Chunk::Relayed(n)),
                    Err(e) if crate::splice::unsupported(&e) && sent == 0 => {
                        tracing::debug!("splice unsupported here ({e}): copying the stream");
                        relay = None;
                        continue;
                    }
                    Err(e) => Err(e),
                },
                None => {
                    buf.resize(max, 0);
                    out.read(&mut buf).map(Chunk::Copied)
                }
            };
            let (n, written) = match chunk {
                Ok(Chunk::Relayed(0) | Chunk::Copied(0)) => break,
                Ok(Chunk::Relayed(n)) => (
                    n,
                    self.write(|w| {
                        protocol::write_data_head(w, n)?;
                        w.flush()?;
                        relay.as_ref().expect("relaying").drain(w.get_ref().as_fd(), n)
                    }),
                ),
                Ok(Chunk::Copied(n)) => (n, self.write(|w| protocol::write_data(w, &buf[..n]))),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    read_err = Some(e);
                    break;
                }
            };
            if let Err(e) = written {
                drop(out);
                let _ = send.kill();
                return Err(e);
            }
            sent += n as u64;
            progress(sent);
            if let Some(p) = &mut pacer {
                // What went on the wire: the frame's header too.
                p.sent((n + protocol::FRAME_HEAD_LEN) as u64);
            }
        }
        drop(out);
        let local = if early.is_some() || read_err.is_some() { send.kill() } else { send.finish() };
        // Always end the stream so the box's frame reader stays in step.
        self.write(|w| protocol::write_end(w).and_then(|_| w.flush()))?;
        let answered_early = early.is_some();
        let reply = match early {
            Some(Ok(Response::Error { code, message })) => {
                Err(RemoteError::Refused { code, message: protocol::sanitize(&message, MAX_ERROR_TEXT) })
            }
            Some(Ok(other)) => Err(self.violation(format!("unexpected answer during a stream: {:?}", short(&other)))),
            Some(Err(_)) => Err(self.connection_lost()),
            None => self.recv(RECEIVE_TIMEOUT),
        };
        // A local failure explains a box-side failure (truncated stream), so
        // it is reported first.
        match local {
            Ok(o) if o.success() && read_err.is_none() => {}
            Ok(o) if !answered_early => {
                let e = Zfs::stream_error(&send_cmd, dataset.as_str(), &o);
                return Err(RemoteError::Send(e));
            }
            Ok(_) => {}
            Err(e) => return Err(RemoteError::Send(ZfsError::Exec(e))),
        }
        match reply? {
            Response::Received { dataset: d, snapshot: s, guid: g } if d == dataset && s == snapshot => Ok((g, sent)),
            other => Err(self.violation(format!("unexpected answer to a receive: {:?}", short(&other)))),
        }
    }

    /// Says goodbye and waits for the box's side (ssh) to end.
    pub fn close(mut self) {
        let _ = self.send(&Request::Bye);
        drop(self.out.take());
        // A box that ignores the goodbye must not hold the run.
        self.peer.end(CLOSE_WAIT);
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.watchdog_stop.store(true, Ordering::Relaxed);
        if self.out.is_some() {
            drop(self.out.take());
            self.peer.end(Duration::ZERO);
        }
    }
}

/// The box's answer to a heartbeat ([`Session::heartbeat`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Heard {
    /// It recorded the heartbeat of this many datasets (and the root's).
    Recorded(u32),
    /// Its `serve` predates heartbeats (and ended the session).
    Unsupported,
}

/// One chunk of the send stream, by how it travels.
enum Chunk {
    /// In the splice relay, this many bytes.
    Relayed(usize),
    /// In the copy buffer, this many bytes.
    Copied(usize),
}

/// Kills the connection ([`Peer::kill`]) when a write has been under way
/// for longer than `stall` ([`WRITE_STALL`]). Stops when the session is
/// dropped.
fn spawn_watchdog(
    peer: Arc<dyn Peer>,
    epoch: Instant,
    writing_since: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    stall: Duration,
) {
    std::thread::spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(stall.as_millis().clamp(10, 1000) as u64));
            let since = writing_since.load(Ordering::Relaxed);
            let now = u64::try_from(epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
            if since != 0 && now.saturating_sub(since) > u64::try_from(stall.as_millis()).unwrap_or(u64::MAX) {
                tracing::warn!("the box stopped reading for {stall:?}; closing the connection");
                peer.kill();
                return;
            }
        }
    });
}

/// A short, sanitized rendering of a message for error text.
fn short(r: &Response) -> String {
    protocol::sanitize(&format!("{r:?}"), 200)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixStream;

    use crate::process::Cmd;
    use crate::proto::server::Server;

    /// A peer that has nothing to end: the test itself owns the other side.
    struct Nothing;

    impl Peer for Nothing {
        fn kill(&self) {}
        fn end(&self, _grace: Duration) {}
    }

    /// One end of a socket pair: shutting it down is what ends the
    /// connection, as killing ssh does.
    struct Socket(UnixStream);

    impl Peer for Socket {
        fn kill(&self) {
            let _ = self.0.shutdown(std::net::Shutdown::Both);
        }
        fn end(&self, _grace: Duration) {
            self.kill();
        }
    }

    fn sleeper() -> Arc<Ssh> {
        let child = std::process::Command::new("sleep").arg("30").spawn().unwrap();
        Arc::new(Ssh {
            child: Mutex::new(child),
            stderr: Mutex::new(StderrCollector::start(None)),
            host: String::new(),
            known_hosts: String::new(),
            identity: String::new(),
        })
    }

    /// Whether `peer`'s process ended within `wait` (polling, so that the
    /// watchdog can take the lock to kill it).
    fn exits_within(peer: &Ssh, wait: Duration) -> bool {
        let deadline = Instant::now() + wait;
        while Instant::now() < deadline {
            if matches!(locked(&peer.child).try_wait(), Ok(Some(_))) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    #[test]
    fn a_stalled_write_gets_the_connection_killed_and_an_idle_one_does_not() {
        let (stalled, idle) = (sleeper(), sleeper());
        let epoch = Instant::now();
        let stop = Arc::new(AtomicBool::new(false));
        let writing = Arc::new(AtomicU64::new(1));
        let stall = Duration::from_millis(500);
        spawn_watchdog(stalled.clone(), epoch, writing, stop.clone(), stall);
        spawn_watchdog(idle.clone(), epoch, Arc::new(AtomicU64::new(0)), stop.clone(), stall);
        assert!(exits_within(&stalled, Duration::from_secs(10)), "killed by the watchdog");
        assert!(!exits_within(&idle, Duration::from_millis(100)), "no write under way: left alone");
        stop.store(true, Ordering::Relaxed);
        idle.end(Duration::ZERO);
    }

    #[test]
    fn a_box_that_stops_reading_is_cut_off_on_any_transport() {
        // The box answers the hello, then reads nothing more: the stream
        // fills the socket and the write blocks until the watchdog shuts
        // the socket down.
        let (ours, theirs) = UnixStream::pair().unwrap();
        let (hold, held) = mpsc::channel::<()>();
        let the_box = std::thread::spawn(move || {
            let mut theirs = theirs;
            let hello = protocol::read_msg::<Request>(&mut theirs, MAX_RESPONSE_LEN).unwrap();
            assert!(matches!(hello, Request::Hello { .. }), "{hello:?}");
            let root = Dataset::new("offsite/home").unwrap();
            let reply =
                Response::Hello { protocol: PROTOCOL_NAME.into(), version: PROTOCOL_VERSION, server: "t".into(), root };
            protocol::write_msg(&mut theirs, &reply).unwrap();
            theirs.flush().unwrap();
            let _ = held.recv();
        });
        let peer = Arc::new(Socket(ours.try_clone().unwrap()));
        let reader = ours.try_clone().unwrap();
        let mut s = Session::start(reader, Box::new(ours), peer, REPLY_TIMEOUT, Duration::from_millis(300)).unwrap();
        assert_eq!(s.root.as_str(), "offsite/home");
        let send = Running::with_stdout(&Cmd::new("head").args(["-c", "256M", "/dev/zero"])).unwrap();
        let req = Request::Receive {
            dataset: Dataset::new("tank/data").unwrap(),
            snapshot: SnapName::new("zoffsite-1").unwrap(),
            guid: Guid::new(7).unwrap(),
            from: None,
            resume: false,
        };
        let started = Instant::now();
        let e = s.receive(&req, send, &mut |_| {}).unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(20), "cut off, not waited for");
        assert!(matches!(e, RemoteError::Protocol { error: ProtoError::Closed, .. }), "{e}");
        drop(s);
        drop(hold);
        the_box.join().unwrap();
    }

    /// A box whose `serve` predates `Audit`: it answers it as any message it
    /// cannot decode (exactly what the old server's decode failure sends)
    /// and ends the session. The source takes that for "too old", not for
    /// a failure.
    #[test]
    fn an_old_box_that_does_not_know_the_audit_is_unsupported_not_an_error() {
        let (ours, theirs) = UnixStream::pair().unwrap();
        let the_box = std::thread::spawn(move || {
            let mut theirs = theirs;
            let _hello = protocol::read_msg::<Request>(&mut theirs, MAX_RESPONSE_LEN).unwrap();
            let root = Dataset::new("offsite/home").unwrap();
            let reply = Response::Hello {
                protocol: PROTOCOL_NAME.into(),
                version: PROTOCOL_VERSION,
                server: "old".into(),
                root,
            };
            protocol::write_msg(&mut theirs, &reply).unwrap();
            theirs.flush().unwrap();
            let body = match protocol::read_frame(&mut theirs, MAX_RESPONSE_LEN).unwrap() {
                protocol::Frame::Msg(b) => b,
                other => panic!("{other:?}"),
            };
            // What an old server's decode of the new request says.
            assert_eq!(body, br#"{"type":"audit"}"#);
            let message =
                "peer sent a malformed message: unknown variant `audit`, expected one of `hello`, `list`".into();
            protocol::write_msg(&mut theirs, &Response::Error { code: ErrorCode::Protocol, message }).unwrap();
            theirs.flush().unwrap();
            // ...and it ends the session.
        });
        let peer = Socket(ours.try_clone().unwrap());
        let s = Session::over(ours.try_clone().unwrap(), ours, peer).unwrap();
        assert_eq!(s.audit().unwrap(), Fetched::Unsupported);
        the_box.join().unwrap();
    }

    /// The box's side of the handshake: reads the hello, answers it.
    fn greet(theirs: &mut UnixStream) {
        let _hello = protocol::read_msg::<Request>(theirs, MAX_RESPONSE_LEN).unwrap();
        let root = Dataset::new("offsite/home").unwrap();
        let reply =
            Response::Hello { protocol: PROTOCOL_NAME.into(), version: PROTOCOL_VERSION, server: "x".into(), root };
        protocol::write_msg(theirs, &reply).unwrap();
        theirs.flush().unwrap();
    }

    /// A box that greets, then answers the next request with `answer` and
    /// hangs up; returns the request's bytes.
    fn one_answer_box(answer: Response) -> (Session, std::thread::JoinHandle<Vec<u8>>) {
        let (ours, theirs) = UnixStream::pair().unwrap();
        let the_box = std::thread::spawn(move || {
            let mut theirs = theirs;
            greet(&mut theirs);
            let body = match protocol::read_frame(&mut theirs, MAX_RESPONSE_LEN).unwrap() {
                protocol::Frame::Msg(b) => b,
                other => panic!("{other:?}"),
            };
            protocol::write_msg(&mut theirs, &answer).unwrap();
            theirs.flush().unwrap();
            body
        });
        let peer = Socket(ours.try_clone().unwrap());
        (Session::over(ours.try_clone().unwrap(), ours, peer).unwrap(), the_box)
    }

    #[test]
    fn a_box_older_than_heartbeats_is_unsupported_not_a_failure() {
        let message = "peer sent a malformed message: unknown variant `heartbeat`, expected one of `hello`".into();
        let (mut s, the_box) = one_answer_box(Response::Error { code: ErrorCode::Protocol, message });
        let beat = [HeartbeatDataset { name: Dataset::new("tank/a").unwrap(), guid: Guid::new(7).unwrap() }];
        assert_eq!(s.heartbeat(&beat).unwrap(), Heard::Unsupported);
        assert_eq!(the_box.join().unwrap(), br#"{"type":"heartbeat","datasets":[{"name":"tank/a","guid":7}]}"#);
        s.close();
        // A box that says it recorded more than it was told of is lying.
        let (mut s, the_box) = one_answer_box(Response::Heartbeat { recorded: 2 });
        let e = s.heartbeat(&beat).unwrap_err();
        assert!(matches!(e, RemoteError::Protocol { error: ProtoError::Violation(_), .. }), "{e}");
        the_box.join().unwrap();
        // Any other refusal is an error the run reports.
        let (mut s, the_box) =
            one_answer_box(Response::Error { code: ErrorCode::Zfs, message: "cannot set property".into() });
        assert!(matches!(s.heartbeat(&[]).unwrap_err(), RemoteError::Refused { code: ErrorCode::Zfs, .. }));
        assert_eq!(the_box.join().unwrap(), br#"{"type":"heartbeat","datasets":[]}"#, "an empty one still goes");
    }

    #[test]
    fn a_box_audit_that_is_not_an_audit_answer_is_a_violation() {
        let (s, the_box) = one_answer_box(Response::Sent { bytes: 1 });
        let e = s.audit().unwrap_err();
        assert!(matches!(e, RemoteError::Protocol { error: ProtoError::Violation(_), .. }), "{e}");
        assert_eq!(the_box.join().unwrap(), br#"{"type":"audit"}"#);
    }

    /// The box's side of [`stream_box`]: each data frame's length, the bytes.
    type StreamBox = std::thread::JoinHandle<(Vec<usize>, Vec<u8>)>;

    /// A box that takes one stream: it greets, reads the receive request
    /// and the stream's frames (each exactly as long as its header says, or
    /// the read fails or waits), and confirms the receive. Returns each
    /// data frame's length and the bytes.
    fn stream_box() -> (Session, StreamBox) {
        let (ours, theirs) = UnixStream::pair().unwrap();
        let the_box = std::thread::spawn(move || {
            let mut theirs = theirs;
            greet(&mut theirs);
            let Request::Receive { dataset, snapshot, guid, .. } =
                protocol::read_msg::<Request>(&mut theirs, MAX_RESPONSE_LEN).unwrap()
            else {
                panic!("not a receive")
            };
            let (mut frames, mut data) = (Vec::new(), Vec::new());
            loop {
                match protocol::read_frame(&mut theirs, 0).unwrap() {
                    protocol::Frame::Data(d) => {
                        frames.push(d.len());
                        data.extend_from_slice(&d);
                    }
                    protocol::Frame::End => break,
                    protocol::Frame::Msg(m) => panic!("a message inside the stream: {m:?}"),
                }
            }
            protocol::write_msg(&mut theirs, &Response::Received { dataset, snapshot, guid }).unwrap();
            theirs.flush().unwrap();
            (frames, data)
        });
        let peer = Socket(ours.try_clone().unwrap());
        (Session::over(ours.try_clone().unwrap(), ours, peer).unwrap(), the_box)
    }

    fn receive_request() -> Request {
        Request::Receive {
            dataset: Dataset::new("tank/data").unwrap(),
            snapshot: SnapName::new("zoffsite-1").unwrap(),
            guid: Guid::new(7).unwrap(),
            from: None,
            resume: false,
        }
    }

    /// Streams `send` into a [`stream_box`] on another thread; a receive
    /// that does not end within a minute fails the test rather than hang it.
    fn stream_into_box(send: Running) -> (u64, Vec<usize>, Vec<u8>) {
        let (mut s, the_box) = stream_box();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let r = s.receive(&receive_request(), send, &mut |_| {}).map(|(_, sent)| sent);
            let _ = tx.send(r);
            s.close();
        });
        let sent = rx.recv_timeout(Duration::from_secs(60)).expect("the receive ends").unwrap();
        let (frames, data) = the_box.join().unwrap();
        assert!(frames.iter().all(|&n| n > 0 && n <= protocol::MAX_DATA_LEN), "{frames:?}");
        (sent, frames, data)
    }

    #[test]
    fn a_zfs_send_that_writes_headers_and_payloads_apart_is_sent_in_few_frames() {
        // The stand-in for zfs send passes on what the test writes into a
        // FIFO: each record as zfs send writes it, a 312-byte header, then
        // its 128 KiB payload, with short pauses between the writes.
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("send");
        zoffsite_testkit::mkfifo(&fifo);
        let send = Running::with_stdout(&Cmd::new("cat").arg(&fifo)).unwrap();
        let records: usize = 32;
        let data: Vec<u8> = (0..records * (312 + (128 << 10))).map(|i| (i * 7 + i / 5003).to_le_bytes()[0]).collect();
        let writer = {
            let (data, fifo) = (data.clone(), fifo.clone());
            std::thread::spawn(move || {
                let mut w = std::fs::OpenOptions::new().write(true).open(fifo)?;
                for record in data.chunks(312 + (128 << 10)) {
                    for write in [&record[..312], &record[312..]] {
                        w.write_all(write)?;
                        std::thread::sleep(Duration::from_micros(100));
                    }
                }
                Ok::<_, std::io::Error>(())
            })
        };
        let (sent, frames, got) = stream_into_box(send);
        writer.join().unwrap().unwrap();
        assert_eq!(sent, data.len() as u64);
        assert!(got == data, "every byte, in order");
        let writes = 2 * records;
        assert!(frames.len() <= writes / 2, "{} frames for {writes} writes: {frames:?}", frames.len());
    }

    #[test]
    fn a_zfs_send_that_pauses_then_ends_gets_exact_frames_and_no_wait() {
        // Part of the stream, a pause far longer than any top-up, the rest,
        // the end: every frame carries exactly what its header promised
        // (the box reads each whole), and nothing waits for more.
        let data: Vec<u8> = (0..300_000u32).map(|i| (i * 11 + i / 777).to_le_bytes()[0]).collect();
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), &data).unwrap();
        let script = r#"head -c 200000 "$0"; sleep 1; tail -c +200001 "$0""#;
        let send = Running::with_stdout(&Cmd::new("sh").args(["-c", script]).arg(file.path())).unwrap();
        let started = Instant::now();
        let (sent, frames, got) = stream_into_box(send);
        assert!(started.elapsed() < Duration::from_secs(30), "{:?}", started.elapsed());
        assert_eq!(sent, data.len() as u64);
        assert!(got == data, "every byte, in order");
        assert!(frames.len() >= 2, "the pause ends a frame: {frames:?}");
    }

    /// A box (the fake `zfs` of `zoffsite_testkit`): its root unmounted,
    /// holding one received snapshot of tank/data.
    fn fake_box() -> zoffsite_testkit::FakeZfs {
        let f = zoffsite_testkit::FakeZfs::new();
        f.box_root("offsite/home").create("offsite/home/tank", false).create("offsite/home/tank/data", false);
        f.snapshot("offsite/home/tank/data@zoffsite-1");
        f
    }

    #[test]
    fn a_session_over_pipes_greets_and_lists_a_real_server() {
        let f = fake_box();
        let (to_box_r, to_box_w) = std::io::pipe().unwrap();
        let (from_box_r, from_box_w) = std::io::pipe().unwrap();
        let input = std::fs::File::from(std::os::fd::OwnedFd::from(to_box_r));
        let mut server =
            Server::new(Zfs::with_binary(f.path()), Dataset::new("offsite/home").unwrap(), input, from_box_w)
                .with_lock_scope(f.dir().display().to_string());
        let the_box = std::thread::spawn(move || server.serve());
        let mut s = Session::over(from_box_r, to_box_w, Nothing).unwrap();
        assert_eq!(s.root.as_str(), "offsite/home");
        assert!(s.server.starts_with("zoffsite "), "{}", s.server);
        let (data, other) = (Dataset::new("tank/data").unwrap(), Dataset::new("tank/other").unwrap());
        let listing = s.list(&[data.clone(), other.clone()]).unwrap();
        let held = &listing[&data];
        assert!(held.exists && held.resume_token.is_none());
        let names: Vec<&str> = held.snapshots.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["zoffsite-1"]);
        assert_eq!(Some(held.snapshots[0].guid.get()), f.guid("offsite/home/tank/data@zoffsite-1"));
        assert!(!listing[&other].exists && listing[&other].snapshots.is_empty());
        s.close();
        the_box.join().unwrap().unwrap();
    }
}
