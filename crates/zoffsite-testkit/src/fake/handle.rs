//! What a test holds of one fake machine, and where the program is.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

use super::stream;
use super::world::{Chunk, Fault, FaultAction, World, LOG_FILE, RECEIVED_FILE};

/// The `fake-zfs` program. In this crate's integration tests, cargo names
/// it (`CARGO_BIN_EXE_fake-zfs`, see [`FakeZfs::with_program`]). Elsewhere
/// (the unit tests of other crates, which cargo gives no path to another
/// package's program): `$ZOFFSITE_FAKE_ZFS` if set; else the one beside the
/// test's own executable (`target/<profile>/fake-zfs`, which `cargo test
/// --workspace` builds) when it is newer than every source file it is
/// built from; else `cargo build -p zoffsite-testkit --bin fake-zfs` is
/// run once and its program used (cargo holds no lock while tests run).
pub fn binary() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(p) = std::env::var_os("ZOFFSITE_FAKE_ZFS") {
            return p.into();
        }
        let beside = std::env::current_exe()
            .ok()
            .and_then(|e| e.parent()?.parent().map(|d| d.join("fake-zfs")))
            .filter(|p| fresh(p));
        beside.unwrap_or_else(build)
    })
    .clone()
}

/// Whether `bin` is newer than every source of the fake (this crate's and
/// core's, whose parsers and encoders it uses).
fn fresh(bin: &Path) -> bool {
    fn newest(p: &Path) -> Option<std::time::SystemTime> {
        let m = std::fs::metadata(p).ok()?;
        if !m.is_dir() {
            return m.modified().ok();
        }
        std::fs::read_dir(p).ok()?.filter_map(|e| newest(&e.ok()?.path())).max()
    }
    let Some(built) = std::fs::metadata(bin).and_then(|m| m.modified()).ok() else { return false };
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    let sources = [
        here.join("src"),
        here.join("Cargo.toml"),
        here.join("../zoffsite-core/src"),
        here.join("../zoffsite-core/Cargo.toml"),
    ];
    sources.iter().filter_map(|s| newest(s)).all(|t| t <= built)
}

fn build() -> PathBuf {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let out = Command::new(cargo)
        .args(["build", "-p", "zoffsite-testkit", "--bin", "fake-zfs", "--message-format=json-render-diagnostics"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stderr(std::process::Stdio::inherit())
        .output()
        .expect("run cargo to build the fake zfs");
    assert!(out.status.success(), "cargo build -p zoffsite-testkit --bin fake-zfs failed");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|m| m["target"]["name"] == "fake-zfs")
        .find_map(|m| m["executable"].as_str().map(PathBuf::from))
        .expect("cargo names the fake zfs program it built")
}

/// One fake machine (see the module docs of [`super`]). Its directory is
/// removed when it is dropped.
pub struct FakeZfs {
    dir: tempfile::TempDir,
}

impl Default for FakeZfs {
    fn default() -> Self {
        Self::new()
    }
}

impl FakeZfs {
    /// A machine with nothing on it, run by [`binary`].
    pub fn new() -> Self {
        Self::with_program(&binary())
    }

    /// A machine with nothing on it, run by `program`.
    pub fn with_program(program: &Path) -> Self {
        static MADE: AtomicU64 = AtomicU64::new(0);
        let dir = tempfile::Builder::new().prefix("fake-zfs-").tempdir().expect("a temporary directory");
        for name in ["zfs", "zpool"] {
            std::os::unix::fs::symlink(program, dir.path().join(name)).expect("link the fake");
        }
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
        let seed =
            super::world::mix(nanos ^ u64::from(std::process::id()) << 32 ^ MADE.fetch_add(1, Ordering::Relaxed));
        let fake = FakeZfs { dir };
        fake.world(|w| *w = World::new(seed));
        fake
    }

    /// The `zfs` to run (`Zfs::with_binary(fake.path())`); `zpool` is
    /// beside it, where `Zfs` looks for it.
    pub fn path(&self) -> PathBuf {
        self.dir.path().join("zfs")
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Changes the machine under its lock.
    pub fn world<T>(&self, f: impl FnOnce(&mut World) -> T) -> T {
        let mut l = World::load_locked(self.dir()).expect("the fake's state");
        let r = f(&mut l.world);
        l.save().expect("save the fake's state");
        r
    }

    /// Reads the machine under its lock.
    pub fn read<T>(&self, f: impl FnOnce(&World) -> T) -> T {
        let l = World::load_locked(self.dir()).expect("the fake's state");
        f(&l.world)
    }

    /// Adds a pool (and its root dataset).
    pub fn pool(&self, name: &str) -> &Self {
        self.world(|w| w.add_pool(name));
        self
    }

    /// `zfs create [-o encryption=on] DS` (the pool is added if missing).
    pub fn create(&self, ds: &str, encrypted: bool) -> &Self {
        self.world(|w| {
            let pool = ds.split('/').next().unwrap_or(ds);
            if !w.pools.contains_key(pool) {
                w.add_pool(pool);
            }
            let props = [("encryption".to_owned(), if encrypted { "on" } else { "off" }.to_owned())];
            w.create(ds, &props).unwrap_or_else(|e| panic!("{e}"));
        });
        self
    }

    /// A box root as `box init` makes it (`canmount=off`,
    /// `mountpoint=none`), its pool and parents added if missing.
    pub fn box_root(&self, root: &str) -> &Self {
        self.world(|w| {
            let mut parts = root.split('/');
            let mut name = parts.next().unwrap_or(root).to_owned();
            if !w.pools.contains_key(&name) {
                w.add_pool(&name);
            }
            for p in parts {
                name = format!("{name}/{p}");
                if !w.datasets.contains_key(&name) {
                    w.create(&name, &[]).unwrap_or_else(|e| panic!("{e}"));
                }
            }
            let d = w.ds_mut(root).expect("made");
            d.props.insert("canmount".into(), "off".into());
            d.props.insert("mountpoint".into(), "none".into());
        });
        self
    }

    /// Writes `bytes` of new data into `ds`.
    pub fn write(&self, ds: &str, bytes: usize) -> &Self {
        self.world(|w| w.write(ds, bytes)).unwrap_or_else(|e| panic!("{e}"));
        self
    }

    /// `zfs snapshot DS@NAME`.
    pub fn snapshot(&self, snap: &str) -> &Self {
        let (d, s) = snap.split_once('@').expect("DS@NAME");
        self.world(|w| w.snapshot(&[(d.to_owned(), s.to_owned())])).unwrap_or_else(|e| panic!("{e}"));
        self
    }

    /// `zfs set PROP=VALUE NAME` (a dataset's property, or a snapshot's
    /// user property).
    pub fn set(&self, name: &str, prop: &str, value: &str) -> &Self {
        self.world(|w| match super::world::Obj::parse(name) {
            super::world::Obj::Snap(d, s) => {
                w.snap_mut(&d, &s).map(|x| drop(x.props.insert(prop.into(), value.into())))
            }
            o => w.ds_mut(o.dataset()).map(|x| drop(x.props.insert(prop.into(), value.into()))),
        })
        .unwrap_or_else(|e| panic!("{e}"));
        self
    }

    /// `zfs change-key DS`: the same data, its key wrapped anew.
    pub fn change_key(&self, ds: &str) -> &Self {
        self.world(|w| w.rewrap(ds)).unwrap_or_else(|e| panic!("{e}"));
        self
    }

    /// The snapshots of `ds`, oldest first: name and GUID.
    pub fn snapshots(&self, ds: &str) -> Vec<(String, u64)> {
        self.read(|w| w.datasets.get(ds).map(|d| d.snapshots.iter().map(|s| (s.name.clone(), s.guid)).collect()))
            .unwrap_or_default()
    }

    /// The snapshot names of `ds`, oldest first.
    pub fn snapshot_names(&self, ds: &str) -> Vec<String> {
        self.snapshots(ds).into_iter().map(|(n, _)| n).collect()
    }

    /// The GUID of `DS@NAME`.
    pub fn guid(&self, snap: &str) -> Option<u64> {
        let (d, s) = snap.split_once('@')?;
        self.read(|w| w.snap(d, s).ok().map(|x| x.guid))
    }

    /// The hold tags on `DS@NAME`, sorted.
    pub fn holds(&self, snap: &str) -> Vec<String> {
        let Some((d, s)) = snap.split_once('@') else { return Vec::new() };
        self.read(|w| w.snap(d, s).map(|x| x.holds.keys().cloned().collect()).unwrap_or_default())
    }

    /// The bookmark names of `ds`.
    pub fn bookmarks(&self, ds: &str) -> Vec<String> {
        self.read(|w| w.datasets.get(ds).map(|d| d.bookmarks.iter().map(|b| b.name.clone()).collect()))
            .unwrap_or_default()
    }

    /// Whether a dataset, snapshot or bookmark exists.
    pub fn exists(&self, name: &str) -> bool {
        self.read(|w| w.exists(name))
    }

    /// `ds`'s partial receive, if it has one: its resume token.
    pub fn resume_token(&self, ds: &str) -> Option<String> {
        self.read(|w| w.datasets.get(ds)?.partial.as_ref().map(super::world::Partial::token))
    }

    /// A property set on `name` itself (not inherited), as `zfs get -s
    /// local` reads it.
    pub fn local(&self, name: &str, prop: &str) -> Option<String> {
        self.read(|w| match super::world::Obj::parse(name) {
            super::world::Obj::Snap(d, s) => w.snap(&d, &s).ok()?.props.get(prop).cloned(),
            o => w.datasets.get(o.dataset())?.props.get(prop).cloned(),
        })
    }

    /// The fingerprint of `ds`'s wrapped key, as `serve` pins it.
    pub fn key(&self, ds: &str) -> Option<String> {
        self.read(|w| w.datasets.get(ds)?.key.as_ref().map(stream::fingerprint))
    }

    /// The data `DS@NAME` holds: equal on two machines iff the same data.
    pub fn content(&self, snap: &str) -> Vec<Chunk> {
        let (d, s) = snap.split_once('@').expect("DS@NAME");
        self.read(|w| {
            let ds = w.ds(d).unwrap_or_else(|e| panic!("{e}"));
            let n = w.snap(d, s).unwrap_or_else(|e| panic!("{e}")).chunks;
            ds.content[..n].to_vec()
        })
    }

    /// Plants a fault (see [`Fault`]).
    pub fn fault(&self, command: &str, matching: Option<&str>, nth: u64, action: FaultAction) -> &Self {
        self.world(|w| {
            w.faults.push(Fault { command: command.into(), matching: matching.map(Into::into), nth, seen: 0, action });
        });
        self
    }

    /// The `nth` call of `command` (1-based; 0: every one) prints `stderr`
    /// and exits 1, changing nothing.
    pub fn fail(&self, command: &str, nth: u64, stderr: &str) -> &Self {
        self.fault(command, None, nth, FaultAction::Fail { code: 1, stderr: format!("{stderr}\n") })
    }

    /// The `nth` `zfs send` (0: every one) stops after `bytes` bytes and
    /// fails, as a send that was killed.
    pub fn truncate_send(&self, nth: u64, bytes: u64) -> &Self {
        self.fault("send", None, nth, FaultAction::Truncate { bytes })
    }

    /// Removes every fault.
    pub fn clear_faults(&self) -> &Self {
        self.world(|w| w.faults.clear());
        self
    }

    /// Every call so far, one line each: the arguments after the program's
    /// name, joined by spaces (`zpool ` first for zpool's).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir().join(LOG_FILE)).unwrap_or_default()
    }

    /// The calls whose line starts with `prefix` (`"receive"`, `"hold "`).
    pub fn calls(&self, prefix: &str) -> Vec<String> {
        self.log().lines().filter(|l| l.starts_with(prefix)).map(str::to_owned).collect()
    }

    /// Forgets the calls so far.
    pub fn clear_log(&self) -> &Self {
        let _ = std::fs::remove_file(self.dir().join(LOG_FILE));
        self
    }

    /// Every byte every `zfs receive` read, in order.
    pub fn received(&self) -> Vec<u8> {
        std::fs::read(self.dir().join(RECEIVED_FILE)).unwrap_or_default()
    }

    /// Runs the fake `zfs` with `args` (a test's own command line).
    pub fn run(&self, args: &[&str]) -> std::process::Output {
        Command::new(self.path()).args(args).output().expect("run the fake zfs")
    }

    /// The stream `zfs send ARGS` writes; panics if the send fails.
    pub fn send(&self, args: &[&str]) -> Vec<u8> {
        let out = self.run(&[&["send"], args].concat());
        assert!(out.status.success(), "zfs send {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        out.stdout
    }
}
