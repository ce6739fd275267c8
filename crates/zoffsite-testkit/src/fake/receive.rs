//! The fake's `zfs receive [-u] [-s] TARGET`: reads a stream record by
//! record and lands each substream when its END arrives, as the kernel
//! commits each snapshot of a `-I` stream on its own.
//!
//! What it refuses, with real OpenZFS's words: a full stream into an
//! existing dataset (no `-F`: the fake does not model it, zoffsite never
//! uses it), an incremental whose base is not the target's newest snapshot
//! or into a dataset that does not exist, a plaintext stream into an
//! encrypted dataset, a stream with bad checksums or a WRITE payload that is
//! not what was sent, a resume that does not continue the partial state, a
//! receive past the `snapshot_limit` of the target or an ancestor. A
//! substream whose snapshot the target already holds (by GUID) is skipped
//! and the receive still succeeds (`recv_skip` in libzfs): the replay that
//! `serve` must refuse before it gets here. A stream cut short leaves
//! resumable state with `-s` (shown as `receive_resume_token`), nothing
//! without it.
//!
//! The input is read before the lock is taken (and each substream is landed
//! under it): a sender on the same fake can never wait on this receive.

use std::io::Write as _;
use std::path::Path;

use zoffsite_core::records::{craft, RECORD_LEN};

use super::stream::{self, Begin, Record};
use super::world::{parent, Chunk, FaultAction, Partial, Snap, World, RECEIVED_FILE};

/// Most bytes one read of the input takes (what a receive stopped at once
/// may have read but not yet put in the tap).
pub const READ_SIZE: usize = 256 << 10;

/// A substream being read.
struct Current {
    begin: Begin,
    /// Where its BEGIN starts in the input.
    at: usize,
    /// Chunks read so far.
    got: Vec<Chunk>,
    /// The index the next chunk must have.
    next: usize,
    /// The target already holds it: read and dropped.
    skip: bool,
}

pub fn run(dir: &Path, args: &[String], command: &str, joined: &str) -> i32 {
    let mut resumable = false;
    let mut target = None;
    for a in args {
        match a.as_str() {
            "-u" => {}
            "-s" => resumable = true,
            "-F" => {
                eprintln!("fake-zfs: not modelled: receive -F (zoffsite never forces a receive)");
                return 2;
            }
            t if !t.starts_with('-') && target.is_none() => target = Some(t.to_owned()),
            other => {
                eprintln!("fake-zfs: not modelled: receive {other}");
                return 2;
            }
        }
    }
    let Some(target) = target else {
        eprintln!("missing target dataset");
        return 2;
    };
    // Faults are looked up first: a failing receive reads nothing.
    let mut then = None;
    let mut reply = None;
    match World::load_locked(dir).map(|mut l| {
        let f = l.world.fault_for(command, joined);
        (l.save(), f)
    }) {
        Ok((_, Some(FaultAction::Fail { code, stderr }))) => {
            eprint!("{stderr}");
            return code;
        }
        Ok((_, Some(FaultAction::Stderr { stderr }))) => eprint!("{stderr}"),
        Ok((_, Some(FaultAction::Sleep { ms }))) => std::thread::sleep(std::time::Duration::from_millis(ms)),
        Ok((_, Some(FaultAction::Then { args }))) => then = Some(args),
        Ok((_, Some(FaultAction::Reply { stdout, stderr, code }))) => reply = Some((stdout, stderr, code)),
        Ok(_) => {}
        Err(e) => {
            eprintln!("fake-zfs: {e}");
            return 2;
        }
    }
    let code = match Receive::new(dir, target, resumable).read(std::io::stdin()) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("{e}");
            1
        }
    };
    if let (Some(then), 0) = (then, code) {
        if let Ok(mut l) = World::load_locked(dir) {
            let after = super::cli::zfs_cmd(&mut l.world, &then);
            let _ = l.save();
            if after.code != 0 {
                eprintln!("fake-zfs: the planted command {then:?} failed: {}", after.stderr);
            }
        }
    }
    match reply {
        Some((stdout, stderr, code)) => {
            print!("{stdout}");
            eprint!("{stderr}");
            code
        }
        None => code,
    }
}

struct Receive<'a> {
    dir: &'a Path,
    target: String,
    resumable: bool,
    input: Vec<u8>,
    /// Start of the first record not yet read.
    pos: usize,
    cur: Option<Current>,
    ours: bool,
    /// The stream is a compound (`-I`) stream.
    compound: bool,
    done: bool,
    /// Whether any substream began (for the error text).
    incremental: bool,
}

impl<'a> Receive<'a> {
    fn new(dir: &'a Path, target: String, resumable: bool) -> Self {
        Receive {
            dir,
            target,
            resumable,
            input: Vec::new(),
            pos: 0,
            cur: None,
            ours: false,
            compound: false,
            done: false,
            incremental: false,
        }
    }

    fn kind(&self) -> &'static str {
        if self.incremental {
            "incremental"
        } else {
            "new filesystem"
        }
    }

    fn read(mut self, stdin: impl std::io::Read + Send + 'static) -> Result<(), String> {
        // Read as fast as the pipe gives (and into the tap), as the kernel
        // does, however long the checks below take: what the sender got
        // through before it was stopped is then what the tap shows.
        let tap = std::fs::OpenOptions::new().create(true).append(true).open(self.dir.join(RECEIVED_FILE)).ok();
        let (tx, rx) = std::sync::mpsc::channel::<std::io::Result<Vec<u8>>>();
        std::thread::spawn(move || {
            let (mut stdin, mut tap) = (stdin, tap);
            let mut buf = vec![0u8; READ_SIZE];
            loop {
                let r = match stdin.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => {
                        if let Some(t) = tap.as_mut() {
                            let _ = t.write_all(&buf[..n]);
                        }
                        Ok(buf[..n].to_vec())
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(e) => Err(e),
                };
                let stop = r.is_err();
                if tx.send(r).is_err() || stop {
                    break;
                }
            }
        });
        for piece in rx {
            let piece = piece.map_err(|e| format!("cannot receive: failed to read from stream: {e}"))?;
            self.input.extend_from_slice(&piece);
            self.walk()?;
            if self.done {
                // The rest of the input is not this stream's: left unread,
                // as zfs receive leaves it.
                return Ok(());
            }
        }
        if self.done {
            return Ok(());
        }
        // The input ended inside the stream.
        let cut = format!("cannot receive {} stream: failed to read from stream", self.kind());
        if let Some(cur) = self.cur.take().filter(|c| !c.skip) {
            if self.resumable {
                self.keep_partial(cur)?;
            }
            return Err(cut);
        }
        if self.input.is_empty() {
            return Err("cannot receive: failed to read from stream".into());
        }
        Err(cut)
    }

    /// Reads every complete record after `pos`.
    fn walk(&mut self) -> Result<(), String> {
        let (recs, _) = craft::records(&self.input[self.pos..]);
        let base = self.pos;
        for r in recs {
            let at = base + r.at;
            let end = at + RECORD_LEN + r.payload;
            let rec = self.input[at..end].to_vec();
            self.pos = end;
            self.record(at, &rec)?;
            if self.done {
                break;
            }
        }
        Ok(())
    }

    fn record(&mut self, at: usize, rec: &[u8]) -> Result<(), String> {
        if at == 0 && u32::from_le_bytes(rec[..4].try_into().expect("4 bytes")) != 0 {
            return Err("cannot receive: invalid stream (bad magic number)".into());
        }
        let kind = self.kind();
        match stream::read(rec, self.ours).map_err(|e| format!("cannot receive {kind} stream: {e}"))? {
            Record::Compound if at == 0 => self.compound = true,
            Record::Compound => {
                return Err(format!("cannot receive {kind} stream: invalid stream (a second compound header)"))
            }
            Record::Begin(b) => {
                if self.cur.is_some() {
                    return Err(format!("cannot receive {kind} stream: invalid stream (BEGIN inside a substream)"));
                }
                self.ours = b.ours;
                self.incremental = b.fromguid != 0;
                let (skip, next) = self.check_begin(&b)?;
                self.cur = Some(Current { begin: b, at, got: Vec::new(), next, skip });
            }
            Record::Write { index, chunk } => {
                let Some(cur) = self.cur.as_mut() else {
                    return Err(format!(
                        "cannot receive {kind} stream: invalid stream (a record outside any substream)"
                    ));
                };
                if let Some(i) = index {
                    if i != cur.next && !cur.skip {
                        return Err(format!(
                            "cannot receive {kind} stream: invalid stream (data at chunk {i}, expected {})",
                            cur.next
                        ));
                    }
                }
                cur.next += 1;
                cur.got.push(chunk);
            }
            Record::End { toguid } => match self.cur.take() {
                Some(cur) => {
                    if toguid != cur.begin.toguid {
                        return Err(format!("cannot receive {kind} stream: invalid stream (END for another snapshot)"));
                    }
                    if !stream::checksums_ok(&self.input[cur.at..at + RECORD_LEN]) {
                        return Err(format!("cannot receive {kind} stream: checksum mismatch or incomplete stream"));
                    }
                    if !cur.skip {
                        self.land(cur)?;
                    }
                    // A plain (non-compound) stream ends with its one END.
                    self.done = !self.compound;
                }
                // A compound stream's header END, or its final END.
                None if self.compound && at > RECORD_LEN => self.done = true,
                None if self.compound => {}
                None => return Err(format!("cannot receive {kind} stream: invalid stream (END outside a substream)")),
            },
            Record::Other => {}
        }
        Ok(())
    }

    /// What real zfs receive checks when a substream begins. Returns
    /// whether the substream is skipped (the target holds it) and the index
    /// its first chunk must have.
    fn check_begin(&self, b: &Begin) -> Result<(bool, usize), String> {
        let l = World::load_locked(self.dir).map_err(|e| format!("fake-zfs: {e}"))?;
        let w = &l.world;
        let t = &self.target;
        let kind = self.kind();
        if let Err(e) = &b.key {
            return Err(format!("cannot receive {kind} stream: {e}"));
        }
        let existing = w.datasets.get(t);
        if b.resuming {
            let Some(p) = existing.and_then(|d| d.partial.as_ref()) else {
                return Err(format!("cannot receive resume stream: kernel modules must be upgraded to receive this stream; or '{t}' does not have any resumable receive state"));
            };
            if p.toguid != b.toguid || p.fromguid != b.fromguid {
                return Err(format!(
                    "cannot receive resume stream: the stream does not continue the partial receive into '{t}'"
                ));
            }
            let base = existing.map_or(0, |d| d.snapshots.last().map_or(0, |s| s.chunks));
            let start = base + p.got.len();
            if b.ours && b.resume_offset != (start * super::world::CHUNK_MAX) as u64 {
                return Err(format!("cannot receive resume stream: it resumes at another offset than '{t}' stopped"));
            }
            return Ok((false, start));
        }
        if existing.is_some_and(|d| d.partial.is_some()) {
            return Err(format!("cannot receive {kind} stream: destination {t} contains partially-complete state from \"zfs receive -s\"."));
        }
        if b.fromguid == 0 {
            if existing.is_some() {
                return Err(format!(
                    "cannot receive new filesystem stream: destination '{t}' exists\nmust specify -F to overwrite it"
                ));
            }
            if parent(t).is_none_or(|p| !w.datasets.contains_key(p)) {
                return Err(format!("cannot receive new filesystem stream: parent of '{t}' does not exist"));
            }
            self.check_limit(w)?;
            return Ok((false, 0));
        }
        let Some(d) = existing else {
            return Err(format!("cannot receive incremental stream: destination '{t}' does not exist"));
        };
        if d.snapshots.iter().any(|s| s.guid == b.toguid) {
            // libzfs's recv_skip: "snap ... already exists; ignoring".
            return Ok((true, 0));
        }
        let name = b.toname.split_once('@').map_or("", |(_, s)| s);
        if d.snapshots.iter().any(|s| s.name == name) {
            return Err(format!("cannot receive incremental stream: destination snapshot {t}@{name} exists"));
        }
        if d.snapshots.last().is_none_or(|s| s.guid != b.fromguid) {
            return Err(format!(
                "cannot receive incremental stream: most recent snapshot of {t} does not\nmatch incremental source"
            ));
        }
        if d.key.is_some() && !b.raw {
            return Err(format!("cannot receive incremental stream: '{t}' is encrypted and the stream is not raw (IV set guid mismatch)"));
        }
        self.check_limit(w)?;
        Ok((false, d.snapshots.last().map_or(0, |s| s.chunks)))
    }

    /// A `snapshot_limit` on the target or above it that is reached:
    /// reported, like the kernel's EDQUOT, as a quota.
    fn check_limit(&self, w: &World) -> Result<(), String> {
        let mut cur = Some(self.target.as_str());
        while let Some(c) = cur {
            if let Some(limit) =
                w.datasets.get(c).and_then(|d| d.props.get("snapshot_limit")).and_then(|v| v.parse::<usize>().ok())
            {
                let prefix = format!("{c}/");
                let count: usize = w
                    .datasets
                    .iter()
                    .filter(|(k, _)| *k == c || k.starts_with(&prefix))
                    .map(|(_, d)| d.snapshots.len())
                    .sum();
                if count >= limit {
                    return Err(format!("cannot receive {} stream: out of space: disk quota exceeded", self.kind()));
                }
            }
            cur = parent(c);
        }
        Ok(())
    }

    /// Commits one complete substream: the snapshot, its data, its key.
    fn land(&self, cur: Current) -> Result<(), String> {
        let mut l = World::load_locked(self.dir).map_err(|e| format!("fake-zfs: {e}"))?;
        let w = &mut l.world;
        let b = &cur.begin;
        let key = b.key.clone().unwrap_or(None);
        let name = b.toname.split_once('@').map_or(b.toname.as_str(), |(_, s)| s).to_owned();
        let txg = w.next_txg();
        if !w.datasets.contains_key(&self.target) {
            let mut d = w.blank_dataset();
            d.key = key.clone();
            w.datasets.insert(self.target.clone(), d);
        }
        let d = w.datasets.get_mut(&self.target).expect("just made");
        let mut chunks = d.partial.take().map(|p| p.got).unwrap_or_default();
        chunks.extend(cur.got);
        d.content.extend(chunks);
        d.inconsistent = false;
        // A raw stream installs the key it carries (after a key change on
        // the source: the whole history's, re-wrapped).
        if key.is_some() {
            d.key = key;
        }
        d.snapshots.push(Snap {
            name,
            guid: b.toguid,
            createtxg: txg,
            creation: b.creation,
            chunks: d.content.len(),
            props: Default::default(),
            holds: Default::default(),
        });
        l.save().map_err(|e| format!("fake-zfs: {e}"))
    }

    /// `-s` and the input ended inside a substream: keep what came.
    fn keep_partial(&self, cur: Current) -> Result<(), String> {
        let mut l = World::load_locked(self.dir).map_err(|e| format!("fake-zfs: {e}"))?;
        let w = &mut l.world;
        let b = cur.begin;
        let bytes = (self.input.len() - cur.at) as u64;
        if !w.datasets.contains_key(&self.target) {
            let mut d = w.blank_dataset();
            d.inconsistent = true;
            w.datasets.insert(self.target.clone(), d);
        }
        let d = w.datasets.get_mut(&self.target).expect("just made");
        let (mut got, before) = d.partial.take().map_or((Vec::new(), 0), |p| (p.got, p.bytes));
        got.extend(cur.got);
        d.partial = Some(Partial {
            toguid: b.toguid,
            fromguid: b.fromguid,
            toname: b.toname,
            creation: b.creation,
            got,
            bytes: before + bytes,
            key: b.key.unwrap_or(None),
        });
        l.save().map_err(|e| format!("fake-zfs: {e}"))
    }
}
