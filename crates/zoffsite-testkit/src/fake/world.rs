//! The fake's model of one machine's ZFS: pools, datasets, snapshots,
//! bookmarks, holds, properties, keys and partial receives, kept as JSON in
//! the fake's directory and changed under a lock.
//!
//! Invariants:
//! - Every change happens between [`World::load_locked`] and
//!   [`Locked::save`], under an exclusive `flock` of the directory's lock
//!   file: the source's and the box's side (or two threads of one side) may
//!   call the fake at the same time.
//! - A dataset's data is an append-only list of [`Chunk`]s; a snapshot or a
//!   bookmark records how many chunks it holds, so a stream between two of
//!   them carries exactly the chunks in between, and two copies agree on
//!   their data iff their chunk lists agree.
//! - Nothing here prints: the command layer ([`super::cli`]) decides what a
//!   real `zfs` would say.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The state file in the fake's directory.
pub const STATE_FILE: &str = "state.json";
/// The lock file every call takes.
pub const LOCK_FILE: &str = "lock";
/// One line per call: the argv after the program name, joined by spaces.
pub const LOG_FILE: &str = "log";
/// Everything every `zfs receive` read on its stdin, appended.
pub const RECEIVED_FILE: &str = "received.bin";

/// The largest chunk one write makes (a record's block size).
pub const CHUNK_MAX: usize = 128 << 10;

/// A machine's ZFS.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct World {
    /// Distinguishes this machine's GUIDs from every other fake's.
    pub seed: u64,
    /// GUIDs and key material drawn so far.
    pub drawn: u64,
    /// The last transaction group: each change that creates something
    /// takes the next one.
    pub txg: u64,
    /// A fixed clock (Unix seconds) for creation times and holds; `None`:
    /// the real clock.
    pub clock: Option<i64>,
    pub pools: BTreeMap<String, Pool>,
    /// Filesystems and volumes by full name.
    pub datasets: BTreeMap<String, Ds>,
    pub faults: Vec<Fault>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Pool {
    pub guid: u64,
    pub health: String,
    /// When the last scrub finished, if one did.
    pub last_scrub: Option<i64>,
}

/// A filesystem or volume.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Ds {
    pub guid: u64,
    pub createtxg: u64,
    pub creation: i64,
    /// The wrapped key a raw send carries; `None`: `encryption=off`.
    pub key: Option<Key>,
    /// Whether the key is loaded (never on a box: a raw receive leaves it
    /// unavailable).
    pub key_loaded: bool,
    /// Properties set here (`zfs set`, `create -o`): native and user.
    pub props: BTreeMap<String, String>,
    pub content: Vec<Chunk>,
    /// Oldest first (by createtxg).
    pub snapshots: Vec<Snap>,
    pub bookmarks: Vec<Mark>,
    /// An interrupted `zfs receive -s` into this dataset.
    pub partial: Option<Partial>,
    /// Created by a full receive that has not completed: the dataset has
    /// no snapshot yet and is not usable (`zfs receive -A` destroys it).
    pub inconsistent: bool,
}

/// Some bytes of data, made from `seed` (see [`payload`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Chunk {
    pub seed: u64,
    pub len: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Snap {
    pub name: String,
    pub guid: u64,
    pub createtxg: u64,
    pub creation: i64,
    /// Chunks of the dataset's content this snapshot holds.
    pub chunks: usize,
    /// User properties set on the snapshot itself.
    pub props: BTreeMap<String, String>,
    /// User holds: tag -> when placed.
    pub holds: BTreeMap<String, i64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Mark {
    pub name: String,
    pub guid: u64,
    pub createtxg: u64,
    pub creation: i64,
    pub chunks: usize,
}

/// The state `zfs receive -s` keeps of a stream it did not get whole.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Partial {
    pub toguid: u64,
    /// 0 for a full stream.
    pub fromguid: u64,
    /// The sender's `dataset@snapshot`.
    pub toname: String,
    pub creation: i64,
    /// The chunks received so far (after the base's).
    pub got: Vec<Chunk>,
    /// Stream bytes received so far, resumed parts included.
    pub bytes: u64,
    /// The key the stream carried.
    pub key: Option<Key>,
}

impl Partial {
    /// The `receive_resume_token` ZFS shows for this state.
    pub fn token(&self) -> String {
        super::stream::Token {
            toguid: self.toguid,
            fromguid: self.fromguid,
            toname: self.toname.clone(),
            got: self.got.len() as u64,
            bytes: self.bytes,
            raw: self.key.is_some(),
        }
        .encode()
    }
}

/// A dataset's wrapped key, as a raw send's `crypt_keydata` carries it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Key {
    pub suite: u64,
    pub guid: u64,
    pub version: u64,
    pub keyformat: u64,
    pub pbkdf2iters: u64,
    pub pbkdf2salt: u64,
    pub master: Vec<u8>,
    pub hmac: Vec<u8>,
    pub iv: Vec<u8>,
    pub mac: Vec<u8>,
}

/// Something a test asked the fake to do wrong.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fault {
    /// The subcommand it applies to (`send`, `receive`, `hold`, ...; for
    /// zpool: `zpool list`, ...).
    pub command: String,
    /// Only calls whose argv (joined by spaces) contains this.
    pub matching: Option<String>,
    /// The matching call it fires on, 1-based; 0: every one.
    pub nth: u64,
    /// Matching calls seen so far.
    pub seen: u64,
    pub action: FaultAction,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum FaultAction {
    /// Print `stderr` and exit with `code`, changing nothing.
    Fail { code: i32, stderr: String },
    /// `send` only: write the first `bytes` bytes of the stream, then
    /// fail as a killed send would.
    Truncate { bytes: u64 },
    /// Print `stderr`, then run normally.
    Stderr { stderr: String },
    /// Sleep this many milliseconds, then run normally.
    Sleep { ms: u64 },
    /// Run normally, answering with this output instead of the real one
    /// (hostile or odd output for a parser) and this status.
    Reply { stdout: String, stderr: String, code: i32 },
    /// Run normally; if that succeeds, run this zfs command line too, as
    /// if someone else did right after (a race the code must survive).
    Then { args: Vec<String> },
}

/// What a dataset, snapshot or bookmark name refers to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Obj {
    Ds(String),
    Snap(String, String),
    Mark(String, String),
}

impl Obj {
    pub fn parse(name: &str) -> Obj {
        if let Some((d, s)) = name.split_once('@') {
            Obj::Snap(d.to_owned(), s.to_owned())
        } else if let Some((d, b)) = name.split_once('#') {
            Obj::Mark(d.to_owned(), b.to_owned())
        } else {
            Obj::Ds(name.to_owned())
        }
    }

    pub fn dataset(&self) -> &str {
        match self {
            Obj::Ds(d) | Obj::Snap(d, _) | Obj::Mark(d, _) => d,
        }
    }

    pub fn name(&self) -> String {
        match self {
            Obj::Ds(d) => d.clone(),
            Obj::Snap(d, s) => format!("{d}@{s}"),
            Obj::Mark(d, b) => format!("{d}#{b}"),
        }
    }
}

/// A 64-bit mix (splitmix64): GUIDs, key bytes, chunk payloads.
pub fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The bytes of a chunk: a function of its seed alone, so the receiving
/// side can tell a chunk arrived intact.
pub fn payload(c: Chunk) -> Vec<u8> {
    let mut out = Vec::with_capacity(c.len as usize + 8);
    let mut i = 0u64;
    while out.len() < c.len as usize {
        out.extend_from_slice(&mix(c.seed ^ mix(i)).to_le_bytes());
        i += 1;
    }
    out.truncate(c.len as usize);
    out
}

fn bytes(seed: u64, n: usize) -> Vec<u8> {
    payload(Chunk { seed, len: u32::try_from(n).expect("a chunk fits") })
}

impl World {
    pub fn new(seed: u64) -> World {
        World { seed, ..World::default() }
    }

    /// A fresh non-zero number from this machine's sequence.
    pub fn draw(&mut self) -> u64 {
        self.drawn += 1;
        mix(self.seed ^ mix(self.drawn)).max(1)
    }

    pub fn next_txg(&mut self) -> u64 {
        self.txg += 1;
        self.txg
    }

    pub fn now(&self) -> i64 {
        self.clock.unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        })
    }

    /// A new wrapped key (what `encryption=on` at create time makes).
    pub fn new_key(&mut self) -> Key {
        let (k, w) = (self.draw(), self.draw());
        Key {
            suite: 8, // aes-256-gcm
            guid: mix(k),
            version: 1,
            keyformat: 1, // raw
            pbkdf2iters: 0,
            pbkdf2salt: 0,
            master: bytes(k, 32),
            hmac: bytes(k ^ 1, 64),
            iv: bytes(w, 12),
            mac: bytes(w ^ 1, 16),
        }
    }

    /// `zfs change-key`: the same master key wrapped anew (a new IV and
    /// MAC), as every key change does.
    pub fn rewrap(&mut self, ds: &str) -> Result<(), String> {
        let w = self.draw();
        let d = self.datasets.get_mut(ds).ok_or_else(|| not_found(ds))?;
        let key = d.key.as_mut().ok_or_else(|| format!("'{ds}' is not encrypted"))?;
        key.iv = bytes(w, 12);
        key.mac = bytes(w ^ 1, 16);
        Ok(())
    }

    pub fn add_pool(&mut self, name: &str) {
        let guid = self.draw();
        self.pools.insert(name.to_owned(), Pool { guid, health: "ONLINE".into(), last_scrub: None });
        if !self.datasets.contains_key(name) {
            let ds = self.blank_dataset();
            self.datasets.insert(name.to_owned(), ds);
        }
    }

    pub fn blank_dataset(&mut self) -> Ds {
        Ds { guid: self.draw(), createtxg: self.next_txg(), creation: self.now(), ..Ds::default() }
    }

    /// `zfs create`: the parent must exist; a child of an encrypted
    /// dataset is encrypted (with its own master key).
    pub fn create(&mut self, name: &str, props: &[(String, String)]) -> Result<(), String> {
        if self.datasets.contains_key(name) {
            return Err(format!("cannot create '{name}': dataset already exists"));
        }
        let parent = parent(name).ok_or_else(|| format!("cannot create '{name}': missing dataset name"))?;
        let parent_encrypted = match self.datasets.get(parent) {
            Some(p) => p.key.is_some(),
            None => return Err(format!("cannot create '{name}': parent does not exist")),
        };
        let mut ds = self.blank_dataset();
        let mut encrypt = parent_encrypted;
        for (k, v) in props {
            match k.as_str() {
                "encryption" => encrypt = v != "off",
                "keyformat" | "keylocation" | "pbkdf2iters" => {}
                _ => {
                    ds.props.insert(k.clone(), v.clone());
                }
            }
        }
        if encrypt {
            ds.key = Some(self.new_key());
            ds.key_loaded = true;
        }
        self.datasets.insert(name.to_owned(), ds);
        Ok(())
    }

    pub fn ds(&self, name: &str) -> Result<&Ds, String> {
        self.datasets.get(name).ok_or_else(|| not_found(name))
    }

    pub fn ds_mut(&mut self, name: &str) -> Result<&mut Ds, String> {
        self.datasets.get_mut(name).ok_or_else(|| not_found(name))
    }

    pub fn snap(&self, ds: &str, snap: &str) -> Result<&Snap, String> {
        self.ds(ds)?.snapshots.iter().find(|s| s.name == snap).ok_or_else(|| not_found(&format!("{ds}@{snap}")))
    }

    pub fn snap_mut(&mut self, ds: &str, snap: &str) -> Result<&mut Snap, String> {
        let full = format!("{ds}@{snap}");
        self.ds_mut(ds)?.snapshots.iter_mut().find(|s| s.name == snap).ok_or_else(|| not_found(&full))
    }

    /// Whether `name` (a dataset, snapshot or bookmark) exists.
    pub fn exists(&self, name: &str) -> bool {
        match Obj::parse(name) {
            Obj::Ds(d) => self.datasets.contains_key(&d),
            Obj::Snap(d, s) => self.snap(&d, &s).is_ok(),
            Obj::Mark(d, b) => self.datasets.get(&d).is_some_and(|x| x.bookmarks.iter().any(|m| m.name == b)),
        }
    }

    /// Appends `n` bytes of new data to `ds`, in chunks of at most
    /// [`CHUNK_MAX`].
    pub fn write(&mut self, ds: &str, mut n: usize) -> Result<(), String> {
        let mut seeds = Vec::new();
        while n > 0 {
            let len = n.min(CHUNK_MAX);
            seeds.push(Chunk { seed: self.draw(), len: u32::try_from(len).expect("a chunk fits") });
            n -= len;
        }
        self.ds_mut(ds)?.content.extend(seeds);
        Ok(())
    }

    /// `zfs snapshot A@x B@y ...`: all or none.
    pub fn snapshot(&mut self, names: &[(String, String)]) -> Result<(), String> {
        for (d, s) in names {
            let ds = self.ds(d)?;
            if ds.snapshots.iter().any(|x| &x.name == s) {
                return Err(format!("cannot create snapshot '{d}@{s}': dataset already exists"));
            }
        }
        let txg = self.next_txg();
        let now = self.now();
        for (d, s) in names {
            let guid = self.draw();
            let ds = self.ds_mut(d)?;
            let chunks = ds.content.len();
            ds.snapshots.push(Snap {
                name: s.clone(),
                guid,
                createtxg: txg,
                creation: now,
                chunks,
                props: BTreeMap::new(),
                holds: BTreeMap::new(),
            });
        }
        Ok(())
    }

    /// The effective value of a user property on `obj` and where it comes
    /// from: set on it (`local`), or inherited from the dataset and its
    /// ancestors (`inherited from X`).
    pub fn user_prop(&self, obj: &Obj, prop: &str) -> Option<(String, String)> {
        if let Obj::Snap(d, s) = obj {
            if let Some(v) = self.snap(d, s).ok().and_then(|x| x.props.get(prop)) {
                return Some((v.clone(), "local".into()));
            }
        }
        let mut cur = Some(obj.dataset());
        let mut first = matches!(obj, Obj::Ds(_));
        while let Some(d) = cur {
            if let Some(v) = self.datasets.get(d).and_then(|x| x.props.get(prop)) {
                let source = if first { "local".to_owned() } else { format!("inherited from {d}") };
                return Some((v.clone(), source));
            }
            first = false;
            cur = parent(d);
        }
        None
    }

    /// Datasets directly below `name`, by name.
    pub fn children(&self, name: &str) -> Vec<String> {
        let prefix = format!("{name}/");
        self.datasets.keys().filter(|k| k.strip_prefix(&prefix).is_some_and(|r| !r.contains('/'))).cloned().collect()
    }

    /// Bytes of data in `ds` after its `chunks` first chunks.
    pub fn bytes_after(&self, ds: &Ds, chunks: usize) -> u64 {
        ds.content.iter().skip(chunks).map(|c| u64::from(c.len)).sum()
    }

    /// Finds the fault that fires on this call, counting the call for
    /// every fault it matches.
    pub fn fault_for(&mut self, command: &str, argv: &str) -> Option<FaultAction> {
        let mut fired = None;
        for f in &mut self.faults {
            if f.command != command || f.matching.as_ref().is_some_and(|m| !argv.contains(m.as_str())) {
                continue;
            }
            f.seen += 1;
            if fired.is_none() && (f.nth == 0 || f.nth == f.seen) {
                fired = Some(f.action.clone());
            }
        }
        fired
    }
}

pub fn not_found(name: &str) -> String {
    format!("cannot open '{name}': dataset does not exist")
}

/// The parent dataset's name, `None` for a pool.
pub fn parent(name: &str) -> Option<&str> {
    name.rsplit_once('/').map(|(p, _)| p)
}

/// The world of the fake in `dir`, loaded under its lock.
pub struct Locked {
    _lock: File,
    path: PathBuf,
    pub world: World,
}

impl World {
    /// Takes `dir`'s lock (blocking) and loads its state.
    pub fn load_locked(dir: &Path) -> std::io::Result<Locked> {
        let lock = OpenOptions::new().create(true).truncate(false).write(true).open(dir.join(LOCK_FILE))?;
        rustix::fs::flock(&lock, rustix::fs::FlockOperation::LockExclusive)?;
        let path = dir.join(STATE_FILE);
        let world = match std::fs::read(&path) {
            Ok(b) => serde_json::from_slice(&b).map_err(std::io::Error::other)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => World::default(),
            Err(e) => return Err(e),
        };
        Ok(Locked { _lock: lock, path, world })
    }
}

impl Locked {
    /// Writes the state back (atomically: a reader never sees half of it);
    /// the lock goes with `self`.
    pub fn save(self) -> std::io::Result<()> {
        let tmp = self.path.with_extension("tmp");
        let mut f = File::create(&tmp)?;
        f.write_all(&serde_json::to_vec(&self.world).map_err(std::io::Error::other)?)?;
        f.sync_data().ok();
        std::fs::rename(&tmp, &self.path)
    }
}
