//! Typed wrappers around the `zfs` command.
//!
//! Every zfs invocation of zoffsite is built here, so the rules can be read
//! in one place and are pinned by the tests below:
//!
//! - sends are always raw: [`Zfs::send_raw`] is the only send builder and
//!   it always passes `-w`;
//! - receives are always `-u -s` and never `-F`: [`Zfs::receive_append`] is
//!   the only receive builder;
//! - listings are scoped (`-d 1` or `-r` under a given root) and ask only for
//!   the columns their parser expects;
//! - nothing here rolls back or renames; the only destroys are retention's,
//!   each fenced: [`Zfs::destroy_own_snapshots`] (source: `zoffsite-*`
//!   snapshots only), [`Zfs::destroy_received_snapshots`] (box, root's
//!   `box prune`: under the box root only) and [`Zfs::abort_receive`]
//!   (partial receive state only; refused by the kernel to the delegated
//!   box user).
//!
//! Failures are classified from stderr into [`ZfsError`] variants that carry
//! what to do about them.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::Path;

use zoffsite_core::names::{Dataset, Guid, SnapName, Snapshot};
use zoffsite_core::parse::{self, DatasetRow, HoldRow, ParseError, ReceiverRow, SnapshotRow, SourceListing};

use crate::process::{self, Cmd, ExecError, Output};

/// Most names one `zfs` call is given (keeps argv well under the kernel's
/// limit, however many snapshots a caller has).
pub const ARGV_CHUNK: usize = 500;

/// Most output accepted from one listing (about 500k snapshot rows).
const LIST_LIMIT: usize = 64 << 20;

#[derive(Debug, thiserror::Error)]
pub enum ZfsError {
    #[error(transparent)]
    Exec(#[from] ExecError),
    #[error("unexpected output from `{cmd}`: {source}")]
    Parse { cmd: String, source: ParseError },
    #[error("{what} does not exist")]
    NotFound { what: String, stderr: String },
    #[error("out of space on the receiving pool (pool full or quota reached): {stderr}")]
    NoSpace { stderr: String },
    #[error("permission denied: {stderr}")]
    PermissionDenied { stderr: String },
    #[error("`{cmd}` failed: {stderr}")]
    Failed { cmd: String, stderr: String },
}

impl ZfsError {
    /// Classifies a failed command by what OpenZFS printed.
    fn classify(cmd: &Cmd, what: impl FnOnce() -> String, out: &Output) -> ZfsError {
        let stderr = out.stderr.trim().to_owned();
        let lower = stderr.to_lowercase();
        if lower.contains("dataset does not exist") || lower.contains("could not find any snapshots") {
            ZfsError::NotFound { what: what(), stderr }
        } else if lower.contains("out of space") || lower.contains("quota exceeded") || lower.contains("no space left")
        {
            ZfsError::NoSpace { stderr }
        } else if lower.contains("permission denied") {
            ZfsError::PermissionDenied { stderr }
        } else {
            ZfsError::Failed { cmd: cmd.to_string(), stderr }
        }
    }
}

/// Name prefix of a restore drill's scratch dataset (`POOL/zoffsite-drill-*`).
pub const DRILL_PREFIX: &str = "zoffsite-drill-";

/// What an incremental send starts from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendFrom {
    /// `-i DS@FROM`: one snapshot's changes.
    Snapshot,
    /// `-I DS@FROM`: every snapshot in between too, as one stream.
    SnapshotWithIntermediates,
    /// `-i DS#FROM`: from a bookmark (the snapshot itself is gone).
    Bookmark,
}

/// The zfs command-line tool.
#[derive(Debug, Clone)]
pub struct Zfs {
    bin: OsString,
    /// How long one command may run ([`Zfs::with_deadlines`]); `None`: as
    /// long as it takes.
    deadline: Option<std::time::Duration>,
    /// How long `zfs load-key` may run: the wrapping key is derived in
    /// userland with the dataset's `pbkdf2iters`, which a received stream
    /// sets.
    load_key_deadline: Option<std::time::Duration>,
}

impl Default for Zfs {
    fn default() -> Self {
        Self::new()
    }
}

impl Zfs {
    /// Uses `zfs` from PATH or the usual sbin directories.
    pub fn new() -> Self {
        Self { bin: process::find_program("zfs"), deadline: None, load_key_deadline: None }
    }

    /// Uses a given binary (tests use a fake one for error paths).
    pub fn with_binary(bin: impl Into<OsString>) -> Self {
        Self { bin: bin.into(), deadline: None, load_key_deadline: None }
    }

    /// Kills any command that runs longer than `each` (and `zfs load-key`
    /// longer than `load_key`) with [`ExecError::Deadline`]: for restores
    /// and drills, whose input comes from the box.
    pub fn with_deadlines(mut self, each: std::time::Duration, load_key: std::time::Duration) -> Self {
        self.deadline = Some(each);
        self.load_key_deadline = Some(load_key);
        self
    }

    /// The per-command deadline, if any (for the stream children the
    /// caller starts itself).
    pub fn deadline(&self) -> Option<std::time::Duration> {
        self.deadline
    }

    fn cmd(&self) -> Cmd {
        Cmd::new(&self.bin)
    }

    fn run_ok(&self, cmd: &Cmd, what: impl FnOnce() -> String) -> Result<Output, ZfsError> {
        self.run_ok_by(cmd, self.deadline, what)
    }

    fn run_ok_by(
        &self,
        cmd: &Cmd,
        deadline: Option<std::time::Duration>,
        what: impl FnOnce() -> String,
    ) -> Result<Output, ZfsError> {
        let out = process::run_by(cmd, LIST_LIMIT, deadline)?;
        if out.success() {
            Ok(out)
        } else {
            Err(ZfsError::classify(cmd, what, &out))
        }
    }

    fn parsed<T>(cmd: &Cmd, out: &Output, f: impl FnOnce(&str) -> Result<T, ParseError>) -> Result<T, ZfsError> {
        let text = String::from_utf8_lossy(&out.stdout);
        f(&text).map_err(|source| ZfsError::Parse { cmd: cmd.to_string(), source })
    }

    /// `zpool sync POOL...`: commits open transaction groups, so that
    /// `written` counts everything written so far (it only counts synced
    /// data; a file written a second ago would otherwise look unchanged).
    pub fn sync_pools<'a>(&self, pools: impl IntoIterator<Item = &'a str>) -> Result<(), ZfsError> {
        let zpool = Path::new(&self.bin).with_file_name("zpool");
        let program = if zpool.is_file() { zpool.into_os_string() } else { process::find_program("zpool") };
        let cmd = Cmd::new(program).arg("sync").args(pools);
        self.run_ok(&cmd, || "a pool".into()).map(drop)
    }

    /// `root` and every filesystem and volume below it.
    pub fn list_datasets(&self, root: &Dataset) -> Result<Vec<DatasetRow>, ZfsError> {
        let cmd = self
            .cmd()
            .args(["list", "-H", "-p", "-r", "-t", "filesystem,volume", "-o", parse::DATASET_COLUMNS])
            .arg(root.as_str());
        let out = self.run_ok(&cmd, || format!("dataset {root}"))?;
        Self::parsed(&cmd, &out, parse::datasets)
    }

    /// The snapshots of exactly these datasets (`-d 1`: not their
    /// children's), and which of them carry a user hold.
    pub fn list_snapshots(&self, datasets: &[Dataset]) -> Result<SourceListing, ZfsError> {
        self.list_source(datasets, "snapshot")
    }

    /// The box's view in one traversal: every filesystem and volume below
    /// `root` with its partial-receive token, and every snapshot.
    pub fn list_box(&self, root: &Dataset) -> Result<(Vec<ReceiverRow>, Vec<SnapshotRow>), ZfsError> {
        let cmd = self
            .cmd()
            .args(["list", "-H", "-p", "-r", "-t", "filesystem,volume,snapshot", "-o", parse::BOX_COLUMNS])
            .arg(root.as_str());
        let out = self.run_ok(&cmd, || format!("dataset {root}"))?;
        Self::parsed(&cmd, &out, parse::box_inventory)
    }

    /// Every filesystem and volume below `root` with its partial-receive
    /// token (the box's view).
    pub fn list_receiver(&self, root: &Dataset) -> Result<Vec<ReceiverRow>, ZfsError> {
        let cmd = self
            .cmd()
            .args(["list", "-H", "-p", "-r", "-t", "filesystem,volume", "-o", parse::RECEIVER_COLUMNS])
            .arg(root.as_str());
        let out = self.run_ok(&cmd, || format!("dataset {root}"))?;
        Self::parsed(&cmd, &out, parse::receiver_datasets)
    }

    /// The snapshots of one dataset (`-d 1`), or none when it does not
    /// exist yet (a first receive).
    pub fn dataset_snapshots(&self, ds: &Dataset) -> Result<Vec<SnapshotRow>, ZfsError> {
        let cmd = self
            .cmd()
            .args(["list", "-H", "-p", "-d", "1", "-t", "snapshot", "-o", parse::SNAPSHOT_COLUMNS])
            .arg(ds.as_str());
        match self.run_ok(&cmd, || format!("dataset {ds}")) {
            Ok(out) => Self::parsed(&cmd, &out, parse::snapshots),
            Err(ZfsError::NotFound { .. }) => Ok(Vec::new()),
            Err(e) => Err(e),
        }
    }

    /// Which of `names` have `prop` set locally, and to what (`zfs get -s
    /// local`: an inherited value is not the name's own, and a user property
    /// is inherited by snapshots from their dataset).
    pub fn local_values(&self, names: &[String], prop: &str) -> Result<BTreeMap<String, String>, ZfsError> {
        let mut out = BTreeMap::new();
        for chunk in names.chunks(ARGV_CHUNK) {
            let cmd = self.cmd().args(["get", "-H", "-p", "-s", "local", "-o", "name,value", prop]).args(chunk);
            let text = self.run_ok(&cmd, || chunk.join(", "))?;
            out.extend(Self::parsed(&cmd, &text, parse::name_values)?);
        }
        Ok(out)
    }

    /// `PROP` of each name, inherited or not (`zfs get -H -p -o name,value
    /// PROP NAME...`, [`ARGV_CHUNK`] names per call): for `doctor`'s
    /// `encryptionroot` and `keylocation`.
    pub fn values(&self, names: &[String], prop: &str) -> Result<Vec<(String, String)>, ZfsError> {
        let mut out = Vec::new();
        for chunk in names.chunks(ARGV_CHUNK) {
            let cmd = self.cmd().args(["get", "-H", "-p", "-o", "name,value", prop]).args(chunk);
            let text = self.run_ok(&cmd, || chunk.join(", "))?;
            out.extend(Self::parsed(&cmd, &text, parse::name_values)?);
        }
        Ok(out)
    }

    /// Whether a filesystem or volume exists.
    pub fn exists(&self, ds: &Dataset) -> Result<bool, ZfsError> {
        let cmd = self.cmd().args(["list", "-H", "-o", "name", "-t", "filesystem,volume"]).arg(ds.as_str());
        match self.run_ok(&cmd, || format!("dataset {ds}")) {
            Ok(_) => Ok(true),
            Err(ZfsError::NotFound { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// `written@NAME` for each dataset: bytes written since its snapshot
    /// `NAME` (how far a target holding `NAME` is behind).
    pub fn written_since(&self, name: &SnapName, datasets: &[Dataset]) -> Result<Vec<(Dataset, u64)>, ZfsError> {
        if datasets.is_empty() {
            return Ok(Vec::new());
        }
        let cmd = self
            .cmd()
            .args(["get", "-H", "-p", "-o", "name,value"])
            .arg(format!("written@{name}"))
            .args(datasets.iter().map(zoffsite_core::names::Dataset::as_str));
        let out = self.run_ok(&cmd, || format!("snapshot @{name}"))?;
        Self::parsed(&cmd, &out, parse::dataset_numbers)
    }

    /// Takes all `snaps` in one call: atomic when they share a pool.
    pub fn snapshot(&self, snaps: &[Snapshot]) -> Result<(), ZfsError> {
        let cmd = self.snapshot_cmd(snaps);
        self.run_ok(&cmd, || "a dataset to snapshot".into()).map(drop)
    }

    pub fn snapshot_cmd(&self, snaps: &[Snapshot]) -> Cmd {
        self.cmd().arg("snapshot").args(snaps.iter().map(std::string::ToString::to_string))
    }

    /// The GUID of one snapshot.
    pub fn snapshot_guid(&self, snap: &Snapshot) -> Result<Guid, ZfsError> {
        let cmd = self.cmd().args(["get", "-H", "-p", "-o", "value", "guid"]).arg(snap.to_string());
        let out = self.run_ok(&cmd, || format!("snapshot {snap}"))?;
        Self::parsed(&cmd, &out, parse::single_guid)
    }

    /// Creates an empty dataset to hold received children whose parent is
    /// not itself backed up. `-u`: not mounted now; it inherits the box
    /// root's `mountpoint=none`, so it is never mounted later either. (No
    /// `-o canmount=off`: the delegated box user may not set `canmount`.)
    pub fn create_placeholder(&self, ds: &Dataset) -> Result<(), ZfsError> {
        let cmd = self.cmd().args(["create", "-u"]).arg(ds.as_str());
        self.run_ok(&cmd, || format!("parent of {ds}")).map(drop)
    }

    /// One property's value (`zfs get -H -p -o value PROP NAME`), as text.
    pub fn get_value(&self, name: &str, prop: &str) -> Result<String, ZfsError> {
        let cmd = self.cmd().args(["get", "-H", "-p", "-o", "value", prop, name]);
        let out = self.run_ok(&cmd, || name.to_owned())?;
        let v = String::from_utf8_lossy(&out.stdout).trim_end_matches('\n').to_owned();
        if v.contains(['\n', '\t', '\0']) {
            return Err(ZfsError::Failed { cmd: cmd.to_string(), stderr: "unexpected multi-line value".into() });
        }
        Ok(v)
    }

    /// The value of `prop` set locally on `name` (not inherited, not a
    /// default), or `None`. A user property is inherited by children, so a
    /// value that must belong to one dataset is read this way.
    pub fn get_local(&self, name: &str, prop: &str) -> Result<Option<String>, ZfsError> {
        let cmd = self.cmd().args(["get", "-H", "-p", "-s", "local", "-o", "value", prop, name]);
        let out = self.run_ok(&cmd, || name.to_owned())?;
        let v = String::from_utf8_lossy(&out.stdout).trim_end_matches('\n').to_owned();
        if v.contains(['\n', '\t', '\0']) {
            return Err(ZfsError::Failed { cmd: cmd.to_string(), stderr: "unexpected multi-line value".into() });
        }
        Ok((!v.is_empty()).then_some(v))
    }

    /// Sets a user property on every name, [`ARGV_CHUNK`] names per call
    /// (`zfs set PROP=VALUE NAME...`: one zfs invocation for a whole `-I`
    /// stream's snapshots); `prop` must be a user property (`module:name`),
    /// which the delegated box user may set.
    pub fn set_user_property(&self, names: &[String], prop: &str, value: &str) -> Result<(), ZfsError> {
        debug_assert!(prop.contains(':'), "only user properties");
        for chunk in names.chunks(ARGV_CHUNK) {
            let cmd = self.cmd().arg("set").arg(format!("{prop}={value}")).args(chunk);
            self.run_ok(&cmd, || chunk.join(", "))?;
        }
        Ok(())
    }

    /// `zfs send -w [-i FROM | -I FROM] SNAPSHOT`: the only way zoffsite
    /// sends. Raw means the blocks leave exactly as they are on disk,
    /// encrypted; the caller has already refused datasets whose
    /// `encryption` is `off` (for those, `-w` would send plaintext).
    pub fn send_raw(&self, snap: &Snapshot, from: Option<(&SnapName, SendFrom)>) -> Cmd {
        let mut c = self.cmd().args(["send", "-w"]);
        match from {
            None => {}
            Some((f, SendFrom::Snapshot)) => c = c.arg("-i").arg(format!("{}@{f}", snap.dataset)),
            Some((f, SendFrom::SnapshotWithIntermediates)) => c = c.arg("-I").arg(format!("{}@{f}", snap.dataset)),
            Some((f, SendFrom::Bookmark)) => c = c.arg("-i").arg(format!("{}#{f}", snap.dataset)),
        }
        c.arg(snap.to_string())
    }

    /// The size `send_raw(snap, from)` would stream (`zfs send -n -v -P`).
    pub fn estimate(&self, snap: &Snapshot, from: Option<(&SnapName, SendFrom)>) -> Result<u64, ZfsError> {
        let real = self.send_raw(snap, from);
        // Same arguments as the real send, with -n -v -P after `send`.
        let cmd = self.cmd().args(["send", "-n", "-v", "-P"]).args(&real.args[1..]);
        let out = self.run_ok(&cmd, || format!("snapshot {snap}"))?;
        let text = format!("{}\n{}", String::from_utf8_lossy(&out.stdout), out.stderr);
        parse::send_size(&text).map_err(|source| ZfsError::Parse { cmd: cmd.to_string(), source })
    }

    /// [`Zfs::list_snapshots`] and the datasets' bookmarks, in one
    /// traversal (`-t snapshot,bookmark`): about a third less than listing
    /// each on its own, since visiting a dataset is what a listing costs.
    pub fn list_snapshots_and_bookmarks(&self, datasets: &[Dataset]) -> Result<SourceListing, ZfsError> {
        self.list_source(datasets, "snapshot,bookmark")
    }

    fn list_source(&self, datasets: &[Dataset], types: &str) -> Result<SourceListing, ZfsError> {
        if datasets.is_empty() {
            return Ok(SourceListing::default());
        }
        let cmd = self
            .cmd()
            .args(["list", "-H", "-p", "-d", "1", "-t", types, "-o", parse::SOURCE_COLUMNS])
            .args(datasets.iter().map(zoffsite_core::names::Dataset::as_str));
        let out = self.run_ok(&cmd, || "a selected dataset".into())?;
        Self::parsed(&cmd, &out, parse::source_listing)
    }

    /// `zfs bookmark DS@NAME DS#NAME`.
    pub fn bookmark(&self, snap: &Snapshot) -> Result<(), ZfsError> {
        let cmd = self.cmd().arg("bookmark").arg(snap.to_string()).arg(format!("{}#{}", snap.dataset, snap.name));
        self.run_ok(&cmd, || format!("snapshot {snap}")).map(drop)
    }

    /// The holds on `snaps`, listed [`ARGV_CHUNK`] snapshots per `zfs
    /// holds` call (a bound on argv length, however many there are).
    pub fn holds(&self, snaps: &[Snapshot]) -> Result<Vec<HoldRow>, ZfsError> {
        let mut all = Vec::new();
        for chunk in snaps.chunks(ARGV_CHUNK) {
            let cmd = self.cmd().args(["holds", "-H", "-p"]).args(chunk.iter().map(std::string::ToString::to_string));
            let out = self.run_ok(&cmd, || "a snapshot".into())?;
            all.extend(Self::parsed(&cmd, &out, parse::holds)?);
        }
        Ok(all)
    }

    pub fn hold(&self, tag: &str, snaps: &[Snapshot]) -> Result<(), ZfsError> {
        let cmd = self.cmd().arg("hold").arg(tag).args(snaps.iter().map(std::string::ToString::to_string));
        self.run_ok(&cmd, || "a snapshot to hold".into()).map(drop)
    }

    pub fn release(&self, tag: &str, snaps: &[Snapshot]) -> Result<(), ZfsError> {
        let cmd = self.cmd().arg("release").arg(tag).args(snaps.iter().map(std::string::ToString::to_string));
        self.run_ok(&cmd, || "a held snapshot".into()).map(drop)
    }

    /// `zfs receive -u -s TARGET`: never `-F` (which could destroy the box's
    /// newer snapshots), never mounted (`-u`), resumable (`-s`).
    pub fn receive_append(&self, target: &Dataset) -> Cmd {
        self.cmd().args(["receive", "-u", "-s"]).arg(target.as_str())
    }

    /// `zfs receive -u DEST` of a full stream into a new dataset, for a
    /// restore on the trusted side: never `-F` (an existing dataset makes
    /// it fail), not mounted until the keys are in place.
    pub fn receive_new(&self, dest: &Dataset) -> Cmd {
        self.cmd().args(["receive", "-u"]).arg(dest.as_str())
    }

    /// `zfs set keylocation=URI DS` (a restored encryption root's key file;
    /// a plain property: the wrapped key the box pinned does not change).
    pub fn set_keylocation(&self, ds: &Dataset, uri: &str) -> Result<(), ZfsError> {
        let cmd = self.cmd().arg("set").arg(format!("keylocation={uri}")).arg(ds.as_str());
        self.run_ok(&cmd, || ds.to_string()).map(drop)
    }

    /// `zfs load-key [-L URI] DS`.
    pub fn load_key(&self, ds: &Dataset, uri: Option<&str>) -> Result<(), ZfsError> {
        let mut cmd = self.cmd().arg("load-key");
        if let Some(u) = uri {
            cmd = cmd.arg("-L").arg(u);
        }
        let cmd = cmd.arg(ds.as_str());
        self.run_ok_by(&cmd, self.load_key_deadline, || ds.to_string()).map(drop)
    }

    /// Every property set locally on `datasets` (`zfs get -s local all`),
    /// for the properties manifest.
    pub fn local_properties(&self, datasets: &[Dataset]) -> Result<Vec<(Dataset, String, String)>, ZfsError> {
        if datasets.is_empty() {
            return Ok(Vec::new());
        }
        let cmd = self
            .cmd()
            .args(["get", "-H", "-p", "-s", "local", "-o", "name,property,value", "all"])
            .args(datasets.iter().map(zoffsite_core::names::Dataset::as_str));
        let out = self.run_ok(&cmd, || "the selected datasets".into())?;
        zoffsite_core::manifest::parse_local_properties(&String::from_utf8_lossy(&out.stdout))
            .map_err(|e| ZfsError::Failed { cmd: cmd.to_string(), stderr: e.to_string() })
    }

    /// `zfs set P1=V1 P2=V2 ... DS`: the properties a restore brings back
    /// from the manifest (names checked when it was read).
    pub fn set_properties(&self, ds: &Dataset, props: &[(String, String)]) -> Result<(), ZfsError> {
        if props.is_empty() {
            return Ok(());
        }
        let cmd = self.cmd().arg("set").args(props.iter().map(|(k, v)| format!("{k}={v}"))).arg(ds.as_str());
        self.run_ok(&cmd, || ds.to_string()).map(drop)
    }

    /// `zfs set PROP=VALUE DS` for the native properties a restore or a
    /// drill sets on what it received (`readonly`, `mountpoint`).
    pub fn set_property(&self, ds: &Dataset, prop: &str, value: &str) -> Result<(), ZfsError> {
        debug_assert!(matches!(prop, "readonly" | "mountpoint" | "canmount"), "{prop}");
        let cmd = self.cmd().arg("set").arg(format!("{prop}={value}")).arg(ds.as_str());
        self.run_ok(&cmd, || ds.to_string()).map(drop)
    }

    /// `zfs destroy -r POOL/zoffsite-drill-...`: the scratch of a restore
    /// drill, and nothing else: any other name is refused before zfs runs.
    pub fn destroy_drill_scratch(&self, ds: &Dataset) -> Result<(), ZfsError> {
        let ok = ds.depth() == 2 && ds.as_str().rsplit('/').next().is_some_and(|n| n.starts_with(DRILL_PREFIX));
        if !ok {
            return Err(ZfsError::Failed {
                cmd: format!("zfs destroy -r {ds}"),
                stderr: "refused: not a drill scratch dataset".into(),
            });
        }
        let cmd = self.cmd().args(["destroy", "-r"]).arg(ds.as_str());
        self.run_ok(&cmd, || ds.to_string()).map(drop)
    }

    /// `zfs mount DS`.
    pub fn mount(&self, ds: &Dataset) -> Result<(), ZfsError> {
        let cmd = self.cmd().arg("mount").arg(ds.as_str());
        self.run_ok(&cmd, || ds.to_string()).map(drop)
    }

    /// `zfs destroy DS@a,b,c`: the only destroy in zoffsite, for source
    /// retention. It refuses any name without zoffsite's prefix, so it can
    /// never take a snapshot of the user's.
    pub fn destroy_own_snapshots(&self, ds: &Dataset, names: &[SnapName]) -> Result<(), ZfsError> {
        if names.is_empty() {
            return Ok(());
        }
        if let Some(bad) = names.iter().find(|n| !n.as_str().starts_with(zoffsite_core::plan::SNAPSHOT_PREFIX)) {
            return Err(ZfsError::Failed {
                cmd: "zfs destroy".into(),
                stderr: format!("refusing to destroy {ds}@{bad}: not a zoffsite snapshot"),
            });
        }
        let list = names.iter().map(zoffsite_core::names::SnapName::as_str).collect::<Vec<_>>().join(",");
        let cmd = self.cmd().arg("destroy").arg(format!("{ds}@{list}"));
        self.run_ok(&cmd, || format!("a snapshot of {ds}")).map(drop)
    }

    /// `zfs receive -A TARGET`: discards partial-receive state, nothing else.
    pub fn abort_receive(&self, target: &Dataset) -> Result<(), ZfsError> {
        let cmd = self.cmd().args(["receive", "-A"]).arg(target.as_str());
        self.run_ok(&cmd, || format!("partial receive state of {target}")).map(drop)
    }

    /// `zfs send -w -t TOKEN`: resumes a raw send. `-w` is passed although
    /// the token says whether the stream is raw, because the token comes
    /// from the box: a forged token without `rawok` must fail, not send
    /// plaintext.
    pub fn send_resume(&self, token: &str) -> Cmd {
        self.cmd().args(["send", "-w", "-t", token])
    }

    /// `zfs send -n -v -t TOKEN`: decodes a resume token without sending.
    pub fn describe_token(&self, token: &str) -> Result<String, ZfsError> {
        let cmd = self.cmd().args(["send", "-n", "-v", "-t", token]);
        let out = self.run_ok(&cmd, || "the snapshot the resume token names".into())?;
        Ok(format!("{}{}", String::from_utf8_lossy(&out.stdout), out.stderr))
    }

    /// Classifies a failed `zfs send`/`zfs receive` run.
    pub fn stream_error(cmd: &Cmd, target: &str, out: &Output) -> ZfsError {
        ZfsError::classify(cmd, || target.to_owned(), out)
    }

    // ---- box side (`box prune`, `box check`) ----

    /// Every snapshot below `root` with its box receive stamp
    /// (`zoffsite:received`), for box retention and box check: one listing,
    /// and the stamps as set on each snapshot itself (`-s local`), never a
    /// value a snapshot inherits from its dataset.
    pub fn list_box_snapshots(&self, root: &Dataset) -> Result<Vec<zoffsite_core::boxside::BoxSnapshot>, ZfsError> {
        let cmd = self
            .cmd()
            .args(["list", "-H", "-p", "-r", "-t", "snapshot", "-o", parse::SNAPSHOT_COLUMNS])
            .arg(root.as_str());
        let out = self.run_ok(&cmd, || format!("dataset {root}"))?;
        let rows = Self::parsed(&cmd, &out, parse::snapshots)?;
        let cmd = self
            .cmd()
            .args(["get", "-H", "-p", "-r", "-t", "snapshot", "-s", "local", "-o", "name,value"])
            .arg(zoffsite_core::boxside::RECEIVED_PROPERTY)
            .arg(root.as_str());
        let out = self.run_ok(&cmd, || format!("dataset {root}"))?;
        let stamps: BTreeMap<String, String> = Self::parsed(&cmd, &out, parse::name_values)?.into_iter().collect();
        Ok(zoffsite_core::boxside::box_snapshots(rows, &stamps))
    }

    /// The source's heartbeats as `serve` recorded them under `root`
    /// (`zoffsite:heartbeat` set locally on the root and its filesystems and
    /// volumes; an inherited value is no dataset's own), as `(name, value)`
    /// rows for [`zoffsite_core::boxside::parse_heartbeats`].
    pub fn box_heartbeats(&self, root: &Dataset) -> Result<Vec<(String, String)>, ZfsError> {
        let cmd = self
            .cmd()
            .args(["get", "-H", "-p", "-r", "-t", "filesystem,volume", "-s", "local", "-o", "name,value"])
            .arg(zoffsite_core::boxside::HEARTBEAT_PROPERTY)
            .arg(root.as_str());
        let out = self.run_ok(&cmd, || format!("dataset {root}"))?;
        Self::parsed(&cmd, &out, parse::name_values)
    }

    /// The pool's GUID (`zpool get -H -p -o value guid POOL`): what the
    /// box's txg journal is kept for.
    pub fn pool_guid(&self, pool: &str) -> Result<u64, ZfsError> {
        let cmd = Cmd::new(self.zpool()).args(["get", "-H", "-p", "-o", "value", "guid", pool]);
        let out = self.run_ok(&cmd, || format!("pool {pool}"))?;
        let v = String::from_utf8_lossy(&out.stdout).trim_end_matches('\n').to_owned();
        v.parse::<u64>()
            .ok()
            .filter(|g| *g != 0 && v.bytes().all(|b| b.is_ascii_digit()))
            .ok_or_else(|| ZfsError::Failed { cmd: cmd.to_string(), stderr: format!("unexpected pool GUID {v:?}") })
    }

    /// `zpool` beside this `zfs` (a test's fake), or the one on the path.
    fn zpool(&self) -> OsString {
        let zpool = Path::new(&self.bin).with_file_name("zpool");
        if zpool.is_file() {
            zpool.into_os_string()
        } else {
            process::find_program("zpool")
        }
    }

    /// When `pool`'s last scrub finished (`zpool status -j --json-int`).
    pub fn last_scrub(&self, pool: &str) -> Result<Option<i64>, ZfsError> {
        let cmd = Cmd::new(self.zpool()).args(["status", "-j", "--json-int", pool]);
        let out = self.run_ok(&cmd, || format!("pool {pool}"))?;
        let text = String::from_utf8_lossy(&out.stdout);
        parse::last_scrub(&text, pool).map_err(|source| ZfsError::Parse { cmd: cmd.to_string(), source })
    }

    /// How a box's pool is imported here, for `restore --from-pool`:
    /// `zpool get readonly,altroot` and every filesystem's `mounted`.
    pub fn imported_pool(&self, pool: &str) -> Result<zoffsite_core::restore::ImportedPool, ZfsError> {
        let zpool = Path::new(&self.bin).with_file_name("zpool");
        let program = if zpool.is_file() { zpool.into_os_string() } else { process::find_program("zpool") };
        let get = Cmd::new(program).args(["get", "-H", "-p", "-o", "property,value", "readonly,altroot", pool]);
        let props = self.run_ok(&get, || format!("pool {pool}"))?;
        let list = self.cmd().args([
            "list",
            "-H",
            "-p",
            "-r",
            "-t",
            "filesystem",
            "-o",
            zoffsite_core::restore::MOUNTED_COLUMNS,
            pool,
        ]);
        let mounted = self.run_ok(&list, || format!("pool {pool}"))?;
        let (props, mounted) = (String::from_utf8_lossy(&props.stdout), String::from_utf8_lossy(&mounted.stdout));
        zoffsite_core::restore::ImportedPool::parse(&props, &mounted)
            .map_err(|source| ZfsError::Parse { cmd: format!("{get}; {list}"), source })
    }

    /// `zpool list -H -o health POOL`: `ONLINE`, `DEGRADED`, ...
    pub fn pool_health(&self, pool: &str) -> Result<String, ZfsError> {
        let cmd = Cmd::new(self.zpool()).args(["list", "-H", "-o", "health", pool]);
        let out = self.run_ok(&cmd, || format!("pool {pool}"))?;
        let v = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        if v.is_empty() || v.len() > 32 || !v.bytes().all(|b| b.is_ascii_uppercase()) {
            return Err(ZfsError::Failed { cmd: cmd.to_string(), stderr: format!("unexpected health {v:?}") });
        }
        Ok(v)
    }

    /// `zfs destroy DS@a,b,c` for box retention: only snapshots of a
    /// dataset at or below `root`; anything else is refused before zfs
    /// runs.
    pub fn destroy_received_snapshots(&self, root: &Dataset, ds: &Dataset, names: &[SnapName]) -> Result<(), ZfsError> {
        if names.is_empty() {
            return Ok(());
        }
        if !ds.is_within(root) {
            return Err(ZfsError::Failed {
                cmd: "zfs destroy".into(),
                stderr: format!("refusing to destroy snapshots of {ds}: it is not under the box root {root}"),
            });
        }
        let list = names.iter().map(zoffsite_core::names::SnapName::as_str).collect::<Vec<_>>().join(",");
        let cmd = self.cmd().arg("destroy").arg(format!("{ds}@{list}"));
        self.run_ok(&cmd, || format!("a snapshot of {ds}")).map(drop)
    }

    // ---- `box init` (run by root on the box) ----

    /// `zfs version`: the tools' and the kernel module's versions, stdout
    /// and stderr whatever the exit status (the caller says what is missing).
    pub fn version_text(&self) -> Result<String, ZfsError> {
        let out = process::run_by(&self.cmd().arg("version"), 64 * 1024, self.deadline)?;
        Ok(format!("{}\n{}", String::from_utf8_lossy(&out.stdout), out.stderr))
    }

    /// `zfs allow DATASET`: the delegations on it and its ancestors, as text.
    pub fn allow_listing(&self, ds: &Dataset) -> Result<String, ZfsError> {
        let cmd = self.cmd().arg("allow").arg(ds.as_str());
        let out = self.run_ok(&cmd, || format!("dataset {ds}"))?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// `zfs create -o canmount=off -o mountpoint=none ROOT`: the box root,
    /// never mounted, nor anything that inherits its mountpoint.
    pub fn create_box_root_cmd(&self, root: &Dataset) -> Cmd {
        self.cmd().args(["create", "-o", "canmount=off", "-o", "mountpoint=none"]).arg(root.as_str())
    }

    /// `zfs set mountpoint=none ROOT`.
    pub fn set_mountpoint_none_cmd(&self, root: &Dataset) -> Cmd {
        self.cmd().args(["set", "mountpoint=none"]).arg(root.as_str())
    }

    /// `zfs set PROP=N ROOT` (`none` for `None`), for the root's
    /// `snapshot_limit`, `filesystem_limit` and `quota`.
    pub fn set_limit_cmd(&self, root: &Dataset, prop: &str, value: Option<u64>) -> Cmd {
        debug_assert!(matches!(prop, "snapshot_limit" | "filesystem_limit" | "quota"), "{prop}");
        let v = value.map_or("none".to_owned(), |n| n.to_string());
        self.cmd().arg("set").arg(format!("{prop}={v}")).arg(root.as_str())
    }

    /// `zfs allow -u USER P1,P2 ROOT` (local and descendent).
    pub fn allow_user_cmd(&self, user: &str, perms: &[&str], root: &Dataset) -> Cmd {
        self.cmd().args(["allow", "-u", user]).arg(perms.join(",")).arg(root.as_str())
    }

    /// `zfs unallow -u USER P1,P2 ROOT` (local and descendent).
    pub fn unallow_user_cmd(&self, user: &str, perms: &[&str], root: &Dataset) -> Cmd {
        self.cmd().args(["unallow", "-u", user]).arg(perms.join(",")).arg(root.as_str())
    }

    /// Runs one of the `box init` commands above.
    pub fn run_admin(&self, cmd: &Cmd) -> Result<(), ZfsError> {
        self.run_ok(cmd, || "the parent dataset".into()).map(drop)
    }
}

#[cfg(test)]
mod tests {
    //! Error paths, against the fake `zfs` of `zoffsite_testkit` made to
    //! fail or answer oddly (the fake's normal answers are tested through
    //! these wrappers in that crate's tests).
    use super::*;
    use zoffsite_testkit::fake::world::FaultAction;
    use zoffsite_testkit::FakeZfs;

    fn ds(s: &str) -> Dataset {
        Dataset::new(s).unwrap()
    }

    #[test]
    fn sends_are_always_raw_and_receives_never_forced() {
        let z = Zfs::with_binary("zfs");
        let snap = Snapshot::new("tank/my data@zoffsite-2").unwrap();
        assert_eq!(z.send_raw(&snap, None).argv(), ["zfs", "send", "-w", "tank/my data@zoffsite-2"]);
        let one = SnapName::new("zoffsite-1").unwrap();
        assert_eq!(
            z.send_raw(&snap, Some((&one, SendFrom::Snapshot))).argv(),
            ["zfs", "send", "-w", "-i", "tank/my data@zoffsite-1", "tank/my data@zoffsite-2"]
        );
        assert_eq!(
            z.send_raw(&snap, Some((&one, SendFrom::SnapshotWithIntermediates))).argv(),
            ["zfs", "send", "-w", "-I", "tank/my data@zoffsite-1", "tank/my data@zoffsite-2"]
        );
        assert_eq!(
            z.send_raw(&snap, Some((&one, SendFrom::Bookmark))).argv(),
            ["zfs", "send", "-w", "-i", "tank/my data#zoffsite-1", "tank/my data@zoffsite-2"]
        );
        let r = z.receive_append(&ds("offsite/home/tank/my data")).argv();
        assert_eq!(r, ["zfs", "receive", "-u", "-s", "offsite/home/tank/my data"]);
        assert!(!r.iter().any(|a| a == "-F"));
    }

    #[test]
    fn destroy_refuses_foreign_snapshots() {
        let f = FakeZfs::new();
        let z = Zfs::with_binary(f.path());
        let e = z.destroy_own_snapshots(&ds("tank/a"), &[SnapName::new("manual").unwrap()]).unwrap_err();
        assert!(e.to_string().contains("not a zoffsite snapshot"), "{e}");
        assert_eq!(f.log(), "", "refused before zfs runs");
    }

    /// A fake `zfs` whose every `command` call fails with `stderr` and
    /// exit status `code` (the real texts are tested in the VM).
    fn failing(command: &str, stderr: &str, code: i32) -> (FakeZfs, Zfs) {
        let f = FakeZfs::new();
        f.pool("t");
        f.fault(command, None, 0, FaultAction::Fail { code, stderr: stderr.into() });
        let z = Zfs::with_binary(f.path());
        (f, z)
    }

    #[test]
    fn errors_are_classified() {
        let f = FakeZfs::new();
        assert!(matches!(Zfs::with_binary(f.path()).list_datasets(&ds("tank/nope")), Err(ZfsError::NotFound { .. })));
        let (_f, z) = failing("snapshot", "cannot receive new filesystem stream: out of space", 1);
        assert!(matches!(z.snapshot(&[Snapshot::new("t@s").unwrap()]), Err(ZfsError::NoSpace { .. })));
        let (_f, z) = failing("snapshot", "cannot create snapshots : permission denied", 1);
        assert!(matches!(z.snapshot(&[Snapshot::new("t@s").unwrap()]), Err(ZfsError::PermissionDenied { .. })));
        let (_f, z) = failing("snapshot", "something odd", 2);
        let e = z.snapshot(&[Snapshot::new("t@s").unwrap()]).unwrap_err();
        assert!(e.to_string().contains("something odd") && e.to_string().contains("snapshot t@s"), "{e}");
    }

    #[test]
    fn a_hung_load_key_is_killed_and_named() {
        // Like a received key wrapped with a huge pbkdf2iters.
        let f = FakeZfs::new();
        f.fault("load-key", None, 0, FaultAction::Sleep { ms: 60_000 });
        let z = Zfs::with_binary(f.path())
            .with_deadlines(std::time::Duration::from_secs(60), std::time::Duration::from_millis(300));
        let started = std::time::Instant::now();
        let e = z.load_key(&ds("pool/zoffsite-drill-1"), Some("file:///k")).unwrap_err();
        assert!(started.elapsed() < std::time::Duration::from_secs(20), "killed at its deadline");
        let msg = e.to_string();
        assert!(
            msg.contains("load-key") && msg.contains("pool/zoffsite-drill-1") && msg.contains("was killed"),
            "{msg}"
        );
    }

    #[test]
    fn hostile_output_is_a_parse_error_not_a_panic() {
        let reply = |stdout: &str, stderr: &str| {
            let f = FakeZfs::new();
            f.create("tank/a", true);
            f.fault("list", None, 0, FaultAction::Reply { stdout: stdout.into(), stderr: stderr.into(), code: 0 });
            f
        };
        let f = reply("tank@a\tnotaguid\t1\t1\t0\n", "");
        let e = Zfs::with_binary(f.path()).list_snapshots(&[ds("tank")]).unwrap_err();
        assert!(matches!(e, ZfsError::Parse { .. }), "{e}");
        // Exit 0 decides success even with noise on stderr.
        let f = reply("tank@a\t7\t1\t1\t2\n", "warning: noise");
        let l = Zfs::with_binary(f.path()).list_snapshots(&[ds("tank")]).unwrap();
        assert_eq!(l.snapshots[0].guid.get(), 7);
        assert!(l.held.contains(&l.snapshots[0].snapshot));
    }
}
