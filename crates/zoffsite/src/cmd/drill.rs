//! `zoffsite verify --drill`: proves a backup comes back. Pulls one
//! snapshot from a target into a scratch dataset here, loads the key (the
//! source dataset's own key file), mounts its snapshot read-only, compares
//! every file with the same snapshot on the source (mounted read-only
//! beside it, as `.zfs/snapshot/NAME` would show it), and destroys the
//! scratch. Nothing else is written anywhere; the box only sends.
//!
//! Invariants (the box is hostile, and a drill runs unattended, as root):
//! - The box may send at most what the source itself would send for that
//!   snapshot (`zfs send -nvP -w`), plus a margin, within a time limit; every
//!   child process has a deadline (`zfs load-key` too: a received key can
//!   carry a huge `pbkdf2iters`). See [`zoffsite_core::limits`].
//! - Both snapshots are mounted in a private directory (`/run/zoffsite/
//!   drill-...`, 0700), `ro,nosuid,nodev,noexec`; the walk never follows a
//!   symlink and opens files with `O_NOFOLLOW`.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use zoffsite_core::config::Target;
use zoffsite_core::limits::{self, ByteBudget};
use zoffsite_core::names::{Dataset, SnapName};
use zoffsite_core::restore::Step;
use zoffsite_core::verify::{self, Entry, TreeDiff};
use zoffsite_exec::proto::client::Session;
use zoffsite_exec::rundir::{self, RunDir};
use zoffsite_exec::system;
use zoffsite_exec::zfs::{Zfs, DRILL_PREFIX};

use super::restore::{bounded_zfs, receive, Limits, Origin};

/// The outcome, for the report.
#[derive(Debug, serde::Serialize)]
pub struct Drill {
    pub dataset: Dataset,
    pub snapshot: SnapName,
    pub scratch: Dataset,
    pub diff: TreeDiff,
}

/// Runs a drill of `ds@snap` from `target`. The scratch is destroyed
/// whatever happens after it was created.
/// Which snapshot: a named one, or any the box holds with the source's GUID
/// among these source snapshots.
pub enum Pick {
    Named(SnapName),
    RandomOf(Vec<zoffsite_core::parse::SnapshotRow>),
}

/// `max_time`: `--max-time`, or `None` for the default.
pub fn drill(
    zfs: &Zfs,
    target: &Target,
    ds: &Dataset,
    pick: Pick,
    max_time: Option<Duration>,
) -> anyhow::Result<Drill> {
    let zfs = &bounded_zfs(zfs.clone());
    let key = key_file(zfs, ds)?;
    let now = jiff::Timestamp::now().as_second();
    let scratch = Dataset::new(format!("{}/{DRILL_PREFIX}{now}-{}", ds.pool(), std::process::id()))?;
    anyhow::ensure!(!zfs.exists(&scratch)?, "{scratch} exists already");
    let mut session = Session::connect(target)?;
    let listing = session.list(std::slice::from_ref(ds))?;
    let on_box = listing.get(ds).map(|r| r.snapshots.as_slice()).unwrap_or_default();
    let (snap, guid) = match pick {
        Pick::Named(n) => {
            let g = on_box.iter().find(|x| x.name == n).map(|x| x.guid);
            (n.clone(), g.ok_or_else(|| anyhow::anyhow!("target {} holds no {ds}@{n}", target.name))?)
        }
        Pick::RandomOf(source) => {
            let both: Vec<_> = on_box
                .iter()
                .filter(|r| source.iter().any(|s| s.snapshot.name == r.name && s.guid == r.guid))
                .collect();
            anyhow::ensure!(
                !both.is_empty(),
                "target {} holds no snapshot of {ds} that the source still has",
                target.name
            );
            // Any will do; the clock's nanoseconds vary the choice enough.
            let i = usize::try_from(jiff::Timestamp::now().subsec_nanosecond()).unwrap_or(0) % both.len();
            (both[i].name.clone(), both[i].guid)
        }
    };
    let snap = &snap;
    let source_snap = ds.snapshot(snap)?;
    // What the source itself would send for this snapshot bounds what the
    // box may send back: the box holds the same raw blocks.
    let estimate = zfs.estimate(&source_snap, None)?;
    let bytes = ByteBudget::new(
        limits::drill_bytes(estimate),
        format!("what the source would send for {source_snap}, {estimate} bytes, and a margin"),
    );
    let (max_time, why) = match max_time {
        Some(t) => (t, "--max-time"),
        None => (limits::default_time(bytes.limit()), "the default for that many bytes; more needs --max-time"),
    };
    let mut limits = Limits::new(bytes, max_time, why);
    let mut origin = Origin::Box(Box::new(session));
    let step = Step { source: ds.clone(), dest: scratch.clone(), snapshot: snap.clone(), guid };
    let received = receive(zfs, &mut origin, &step, &mut limits);
    if let Origin::Box(s) = origin {
        s.close();
    }
    let deadline = limits.deadline;
    let result = received.and_then(|_| {
        zfs.load_key(&scratch, Some(&key))?;
        let private = RunDir::open_default()?.private_dir("drill-")?;
        // The received side: its snapshot, which is what came from the box
        // (never the head, which a mountpoint property could mount
        // elsewhere, with other options).
        let got_dir = private.subdir("received")?;
        system::mount_snapshot(&scratch.snapshot(snap)?.to_string(), &got_dir)?;
        let got = walk(&got_dir, deadline);
        unmount_or_say(&got_dir);
        // The source's side: the same snapshot, mounted read-only beside.
        let want_dir = private.subdir("source")?;
        system::mount_snapshot(&source_snap.to_string(), &want_dir)?;
        let want = walk(&want_dir, deadline);
        unmount_or_say(&want_dir);
        drop(private);
        Ok(verify::compare_trees(&want?, &got?))
    });
    // The scratch goes, whatever happened (if it was created at all).
    if zfs.exists(&scratch).unwrap_or(true) {
        if let Err(e) = zfs.destroy_drill_scratch(&scratch) {
            eprintln!("zoffsite: could not destroy the drill's scratch {scratch}: {e}; destroy it by hand");
        }
    }
    Ok(Drill { dataset: ds.clone(), snapshot: snap.clone(), scratch, diff: result? })
}

/// The key file of `ds`'s encryption root: a drill runs unattended.
fn key_file(zfs: &Zfs, ds: &Dataset) -> anyhow::Result<String> {
    let root = zfs.get_value(ds.as_str(), "encryptionroot")?;
    let loc = zfs.get_value(&root, "keylocation")?;
    anyhow::ensure!(
        loc.starts_with("file://"),
        "{ds}'s key is keylocation={loc} (on {root}): a drill loads the key unattended, so it needs a key file (file://...)"
    );
    Ok(loc)
}

fn unmount_or_say(dir: &Path) {
    if let Err(e) = system::unmount(dir) {
        eprintln!("zoffsite: could not unmount {} ({e}); unmount it by hand", dir.display());
    }
}

/// Every entry under `root`, by path relative to it; symlinks are not
/// followed (entries are classified by `lstat`, files opened with
/// `O_NOFOLLOW`); files are hashed in 1 MiB reads; gives up at `deadline`.
fn walk(root: &Path, deadline: Instant) -> anyhow::Result<BTreeMap<String, Entry>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    let mut buf = vec![0u8; 1 << 20];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).map_err(|e| anyhow::anyhow!("{}: {e}", dir.display()))? {
            let e = e?;
            let path = e.path();
            let rel = path.strip_prefix(root).expect("below root").to_string_lossy().into_owned();
            anyhow::ensure!(Instant::now() < deadline, "the drill ran out of time comparing files (--max-time)");
            let ft = e.file_type()?;
            let entry = if ft.is_dir() {
                stack.push(path.clone());
                Entry::Dir
            } else if ft.is_symlink() {
                Entry::Link(std::fs::read_link(&path)?.to_string_lossy().into_owned())
            } else if ft.is_file() {
                let mut f = rundir::open_nofollow(&path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
                let (mut h, mut size) = (Sha256::new(), 0u64);
                loop {
                    let n = f.read(&mut buf)?;
                    if n == 0 {
                        break;
                    }
                    h.update(&buf[..n]);
                    size += n as u64;
                }
                Entry::File { size, sha256: h.finalize().into() }
            } else {
                Entry::Other
            };
            out.insert(rel, entry);
        }
    }
    Ok(out)
}
