//! A restore drill (`zoffsite verify --drill`): proves a backup comes back.
//! Pulls one snapshot from a target into a scratch dataset here, loads the
//! key (the source dataset's own key file), mounts its snapshot read-only,
//! compares every file with the same snapshot on the source (mounted
//! read-only beside it, as `.zfs/snapshot/NAME` would show it), and
//! destroys the scratch. Nothing else is written anywhere; the box only
//! sends.
//!
//! Invariants (the box is hostile, and a drill runs unattended, as root):
//! - The box may send at most what the source itself would send for that
//!   snapshot (`zfs send -nvP -w`), plus a margin, within a time limit; every
//!   child process has a deadline (`zfs load-key` too: a received key can
//!   carry a huge `pbkdf2iters`). See [`zoffsite_core::limits`]. The stream
//!   is received by restore's checked [`receive`].
//! - Both snapshots are mounted in a private directory (`/run/zoffsite/
//!   drill-...`, 0700), `ro,nosuid,nodev,noexec`; the walk never follows a
//!   symlink and opens files with `O_NOFOLLOW`.
//! - The scratch is destroyed whatever happens after it was created.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use zoffsite_core::config::Target;
use zoffsite_core::limits::{self, ByteBudget};
use zoffsite_core::names::{Dataset, SnapName};
use zoffsite_core::parse::SnapshotRow;
use zoffsite_core::report::Severity;
use zoffsite_core::restore::Step;
use zoffsite_core::verify::{self, Entry, TreeDiff};

use crate::events::{Events, Progress};
use crate::proto::client::Session;
use crate::restore::{bounded_zfs, receive, unmount_or_say, Limits, Origin, RestoreError};
use crate::rundir::{self, RunDir};
use crate::system;
use crate::zfs::{Zfs, DRILL_PREFIX};

/// The outcome, for the report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Drill {
    pub dataset: Dataset,
    pub snapshot: SnapName,
    pub scratch: Dataset,
    pub diff: TreeDiff,
}

/// Which snapshot: a named one, or any the box holds with the source's GUID
/// among these source snapshots.
#[derive(Debug, Clone)]
pub enum Pick {
    Named(SnapName),
    RandomOf(Vec<SnapshotRow>),
}

/// Runs a drill of a snapshot of `ds` from `target` (`max_time`:
/// `--max-time`, or `None` for the default). The scratch is destroyed
/// whatever happens after it was created; what could not be cleaned up is
/// reported through `events`.
pub fn drill(
    zfs: &Zfs,
    target: &Target,
    ds: &Dataset,
    pick: Pick,
    max_time: Option<Duration>,
    events: &mut dyn Events,
) -> Result<Drill, RestoreError> {
    let zfs = &bounded_zfs(zfs.clone());
    let key = key_file(zfs, ds)?;
    let now = jiff::Timestamp::now().as_second();
    let scratch = Dataset::new(format!("{}/{DRILL_PREFIX}{now}-{}", ds.pool(), std::process::id()))?;
    if zfs.exists(&scratch)? {
        return Err(RestoreError::Other(format!("{scratch} exists already")));
    }
    let mut session = Session::connect(target)?;
    let listing = session.list(std::slice::from_ref(ds))?;
    let on_box = listing.get(ds).map(|r| r.snapshots.as_slice()).unwrap_or_default();
    let (snap, guid) = match pick {
        Pick::Named(n) => {
            let g = on_box.iter().find(|x| x.name == n).map(|x| x.guid);
            let g = g.ok_or_else(|| RestoreError::Other(format!("target {} holds no {ds}@{n}", target.name)))?;
            (n, g)
        }
        Pick::RandomOf(source) => {
            let both: Vec<_> = on_box
                .iter()
                .filter(|r| source.iter().any(|s| s.snapshot.name == r.name && s.guid == r.guid))
                .collect();
            if both.is_empty() {
                return Err(RestoreError::Other(format!(
                    "target {} holds no snapshot of {ds} that the source still has",
                    target.name
                )));
            }
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
        format!(
            "what the source would send for {source_snap}, {}, and a margin",
            zoffsite_core::human::bytes(estimate)
        ),
    );
    let (max_time, why) = match max_time {
        Some(t) => (t, "--max-time"),
        None => (limits::default_time(bytes.limit()), "the default for that many bytes; more needs --max-time"),
    };
    let mut limits = Limits::new(bytes, max_time, why);
    let mut origin = Origin::Box(Box::new(session));
    let step = Step { source: ds.clone(), dest: scratch.clone(), snapshot: snap.clone(), guid };
    // The source's estimate is the bar's total (on a terminal only: the
    // caller's `Events` decides).
    let label = format!("drill {ds}@{snap}");
    events.progress(Progress::Start { label: &label, estimate: Some(estimate) });
    let received = receive(zfs, &mut origin, &step, &mut limits, &mut |n| events.progress(Progress::Bytes(n)));
    events.progress(Progress::Done);
    origin.close();
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
        unmount_or_say(&got_dir, events);
        // The source's side: the same snapshot, mounted read-only beside.
        let want_dir = private.subdir("source")?;
        system::mount_snapshot(&source_snap.to_string(), &want_dir)?;
        let want = walk(&want_dir, deadline);
        unmount_or_say(&want_dir, events);
        drop(private);
        Ok(verify::compare_trees(&want?, &got?))
    });
    // The scratch goes, whatever happened (if it was created at all).
    if zfs.exists(&scratch).unwrap_or(true) {
        if let Err(e) = zfs.destroy_drill_scratch(&scratch) {
            // Said, as it always was; the drill's own outcome stands.
            events.error(
                Severity::Ok,
                &format!("could not destroy the drill's scratch {scratch}: {e}; destroy it by hand"),
            );
        }
    }
    Ok(Drill { dataset: ds.clone(), snapshot: snap.clone(), scratch, diff: result? })
}

/// The key file of `ds`'s encryption root: a drill runs unattended.
fn key_file(zfs: &Zfs, ds: &Dataset) -> Result<String, RestoreError> {
    let root = zfs.get_value(ds.as_str(), "encryptionroot")?;
    let loc = zfs.get_value(&root, "keylocation")?;
    if !loc.starts_with("file://") {
        return Err(RestoreError::Other(format!(
            "{ds}'s key is keylocation={loc} (on {root}): a drill loads the key unattended, so it needs a key file (file://...)"
        )));
    }
    Ok(loc)
}

/// Every entry under `root`, by path relative to it; symlinks are not
/// followed (entries are classified by `lstat`, files opened with
/// `O_NOFOLLOW`); files are hashed in 1 MiB reads; gives up at `deadline`.
fn walk(root: &Path, deadline: Instant) -> Result<BTreeMap<String, Entry>, RestoreError> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    let mut buf = vec![0u8; 1 << 20];
    while let Some(dir) = stack.pop() {
        let entries = std::fs::read_dir(&dir).map_err(|e| RestoreError::Other(format!("{}: {e}", dir.display())))?;
        for e in entries {
            let e = e?;
            let path = e.path();
            let rel = path.strip_prefix(root).expect("below root").to_string_lossy().into_owned();
            if Instant::now() >= deadline {
                return Err(RestoreError::Other("the drill ran out of time comparing files (--max-time)".into()));
            }
            let ft = e.file_type()?;
            let entry = if ft.is_dir() {
                stack.push(path.clone());
                Entry::Dir
            } else if ft.is_symlink() {
                Entry::Link(std::fs::read_link(&path)?.to_string_lossy().into_owned())
            } else if ft.is_file() {
                let mut f = rundir::open_nofollow(&path)
                    .map_err(|e| RestoreError::Other(format!("{}: {e}", path.display())))?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_walk_follows_no_symlink_and_hashes_files() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        std::fs::create_dir(root.join("d")).unwrap();
        std::fs::write(root.join("d/f"), b"hello").unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("secret"), b"x").unwrap();
        std::os::unix::fs::symlink(outside.path(), root.join("out")).unwrap();
        let got = walk(root, Instant::now() + Duration::from_secs(60)).unwrap();
        assert_eq!(got.keys().collect::<Vec<_>>(), ["d", "d/f", "out"]);
        assert!(matches!(&got["d/f"], Entry::File { size: 5, sha256 } if sha256[..] == Sha256::digest(b"hello")[..]));
        assert!(matches!(&got["out"], Entry::Link(t) if t == &outside.path().to_string_lossy()));
        // Past its deadline it gives up, and says so.
        let e = walk(root, Instant::now()).unwrap_err();
        assert!(e.to_string().contains("ran out of time"), "{e}");
    }
}
