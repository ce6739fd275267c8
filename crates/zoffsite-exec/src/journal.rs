//! The box's txg journal on disk ([`zoffsite_core::journal`]): a file that
//! only root (the user `box prune` and `box check` run as) can change.
//!
//! Invariants: the file and its directory belong to this process's user and
//! are writable by nobody else; neither is reached through a symlink
//! (`O_NOFOLLOW`, and the directory is checked with `lstat`); a file that
//! fails these checks or does not parse is refused, never repaired or
//! half-read; a new version replaces the old one atomically (write a
//! fresh file beside it, fsync, rename, fsync the directory), so a crash
//! leaves the old journal or the new one.

use std::os::fd::OwnedFd;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use rustix::fs::FileType;

use zoffsite_core::journal::{Journal, JournalError, MAX_ENTRIES};
use zoffsite_core::names::Dataset;

use crate::private::{self, Rule};

/// Far above what [`MAX_ENTRIES`] lines take.
const MAX_BYTES: usize = MAX_ENTRIES * 64 + 4096;

#[derive(Debug, thiserror::Error)]
pub enum JournalFileError {
    #[error("txg journal {path}: {what}")]
    Unsafe { path: PathBuf, what: String },
    #[error("txg journal {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("txg journal {path} is corrupt ({source}); move it aside (mv {path} {path}.bad) and the next run starts a new one")]
    Corrupt { path: PathBuf, source: JournalError },
}

/// What [`load`] found.
#[derive(Debug)]
pub struct Loaded {
    pub journal: Journal,
    /// The file was kept for another pool or root: this is a new journal,
    /// and saving it replaces that one. Says which it was kept for.
    pub replaced: Option<String>,
}

fn unsafe_(path: &Path, what: impl Into<String>) -> JournalFileError {
    JournalFileError::Unsafe { path: path.to_owned(), what: what.into() }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> JournalFileError + '_ {
    move |source| JournalFileError::Io { path: path.to_owned(), source }
}

/// Maps a failed check of the journal's `what` ("file", "directory") to
/// an error that names the fix.
fn checked<'a>(path: &'a Path, what: &'static str) -> impl FnOnce(private::Error) -> JournalFileError + 'a {
    move |e| match e {
        private::Error::Io(source) => JournalFileError::Io { path: path.to_owned(), source },
        private::Error::Untrusted(flaw @ private::Flaw::Owner { me, .. }) => {
            unsafe_(path, format!("its {what} is {flaw}; fix: chown {me} it"))
        }
        private::Error::Untrusted(flaw @ private::Flaw::WritableByOthers { .. }) => {
            unsafe_(path, format!("its {what} is {flaw}; fix: chmod go-w it"))
        }
        private::Error::Untrusted(flaw) => unsafe_(path, format!("its {what} is {flaw}; it must be a plain {what}")),
    }
}

/// The journal's directory, open: created (0700) when missing, else it
/// must be a real directory of ours that nobody else can write.
fn directory(path: &Path) -> Result<OwnedFd, JournalFileError> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).ok_or_else(|| unsafe_(path, "has no directory"))?;
    let fd = match private::open_dir(dir).map_err(checked(path, "directory"))? {
        Some(fd) => fd,
        None => {
            std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(io(path))?;
            private::open_dir(dir)
                .map_err(checked(path, "directory"))?
                .ok_or_else(|| io(path)(std::io::ErrorKind::NotFound.into()))?
        }
    };
    private::check(&fd, FileType::Directory, Rule::NotWritableByOthers).map_err(checked(path, "directory"))?;
    Ok(fd)
}

fn file_name(path: &Path) -> Result<&str, JournalFileError> {
    path.file_name().and_then(|n| n.to_str()).ok_or_else(|| unsafe_(path, "has no file name (or not UTF-8)"))
}

/// Reads the journal kept for `pool_guid` and `root`; a missing file is an
/// empty journal.
pub fn load(path: &Path, pool_guid: u64, root: &Dataset) -> Result<Loaded, JournalFileError> {
    let dir = directory(path)?;
    let fresh = || Journal::new(pool_guid, root.clone());
    let Some(fd) = private::open_file_at(&dir, file_name(path)?).map_err(checked(path, "file"))? else {
        return Ok(Loaded { journal: fresh(), replaced: None });
    };
    private::check(&fd, FileType::RegularFile, Rule::NotWritableByOthers).map_err(checked(path, "file"))?;
    let Some(text) = private::read_bounded(fd, MAX_BYTES).map_err(io(path))? else {
        return Err(JournalFileError::Corrupt { path: path.to_owned(), source: JournalError::TooLong });
    };
    let journal =
        Journal::parse(&text).map_err(|source| JournalFileError::Corrupt { path: path.to_owned(), source })?;
    if journal.is_for(pool_guid, root) {
        return Ok(Loaded { journal, replaced: None });
    }
    let was = format!("pool {} root {}", journal.pool_guid, journal.root);
    Ok(Loaded { journal: fresh(), replaced: Some(was) })
}

/// Replaces the journal file with `journal`, atomically.
pub fn save(path: &Path, journal: &Journal) -> Result<(), JournalFileError> {
    let dir = directory(path)?;
    private::replace(&dir, file_name(path)?, journal.render().as_bytes(), 0o600, None).map_err(io(path))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{MetadataExt as _, PermissionsExt};
    use zoffsite_core::journal::Entry;

    fn root() -> Dataset {
        Dataset::new("offsite/home").unwrap()
    }

    #[test]
    fn a_journal_round_trips_and_another_pools_is_not_used() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("state/txg-journal");
        let l = load(&path, 7, &root()).unwrap();
        assert!(l.journal.entries.is_empty() && l.replaced.is_none());
        let dir_mode = std::fs::metadata(tmp.path().join("state")).unwrap().mode() & 0o777;
        assert_eq!(dir_mode, 0o700);
        let mut j = l.journal;
        assert!(j.record(Entry { txg: 5, start: 10, end: 11 }));
        save(&path, &j).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().mode() & 0o777, 0o600);
        assert_eq!(load(&path, 7, &root()).unwrap().journal, j);
        let other = load(&path, 8, &root()).unwrap();
        assert!(other.journal.entries.is_empty());
        assert_eq!(other.replaced.as_deref(), Some("pool 7 root offsite/home"));
        // No temporary file is left behind.
        assert_eq!(std::fs::read_dir(tmp.path().join("state")).unwrap().count(), 1);
    }

    #[test]
    fn symlinks_shared_directories_and_corrupt_files_are_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let real = tmp.path().join("real");
        std::fs::write(&real, "x").unwrap();
        let link = tmp.path().join("journal");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        let e = load(&link, 1, &root()).unwrap_err();
        assert!(e.to_string().contains("symlink"), "{e}");
        // Saving over a symlink replaces the link, never writes through it.
        save(&link, &Journal::new(1, root())).unwrap();
        assert_eq!(std::fs::read_to_string(&real).unwrap(), "x");

        let shared = tmp.path().join("shared");
        std::fs::create_dir(&shared).unwrap();
        std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o777)).unwrap();
        let e = load(&shared.join("j"), 1, &root()).unwrap_err();
        assert!(e.to_string().contains("chmod go-w"), "{e}");

        let bad = tmp.path().join("bad");
        std::fs::write(&bad, "zoffsite-txg-journal 9\n").unwrap();
        let e = load(&bad, 1, &root()).unwrap_err();
        assert!(matches!(e, JournalFileError::Corrupt { .. }) && e.to_string().contains("mv "), "{e}");

        let loose = tmp.path().join("loose");
        std::fs::write(&loose, Journal::new(1, root()).render()).unwrap();
        std::fs::set_permissions(&loose, std::fs::Permissions::from_mode(0o666)).unwrap();
        assert!(load(&loose, 1, &root()).unwrap_err().to_string().contains("writable by others"));
    }
}
