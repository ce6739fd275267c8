//! The properties manifest's file (`zoffsite_core::manifest`) at the top
//! of a root dataset's filesystem: written by `backup`, read back by
//! `restore` from the restored snapshot.
//!
//! Invariants:
//! - Its directory (`.zoffsite`) is owned by the user zoffsite runs as
//!   (root) and writable by nobody else; anything else is refused, never
//!   "fixed": whoever could write there could have put a manifest of their
//!   own there, which a restore would apply.
//! - Nothing is followed: the directory and the file are opened with
//!   `O_NOFOLLOW`, relative to the directory above (`openat`), so a symlink
//!   placed by a user who can write the top of the filesystem (a home
//!   directory) never redirects root's write elsewhere, and a renamed
//!   directory cannot be swapped in between the check and the write.
//! - The file is replaced atomically (a fresh `O_EXCL` temporary, then
//!   `renameat`), and read back bounded.

use std::os::fd::OwnedFd;
use std::path::Path;

use rustix::fs::{FileType, Mode, OFlags};
use rustix::io::Errno;
use zoffsite_core::manifest::{MANIFEST_DIR, MANIFEST_FILE, MAX_MANIFEST_LEN};

use crate::private::{self, Rule};

#[derive(Debug, thiserror::Error)]
pub enum ManifestFileError {
    #[error("{path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error(
        "{path} is {what}: only the user zoffsite runs as (uid {uid}) may write where the manifest is kept, since a restore applies what it finds there. Move it away (it is zoffsite's: `rm -r {path}`), and the next backup makes it again"
    )]
    Untrusted { path: String, what: String, uid: u32 },
    #[error("{path} is larger than {MAX_MANIFEST_LEN} bytes")]
    TooLarge { path: String },
}

fn io(path: &Path) -> impl FnOnce(Errno) -> ManifestFileError + '_ {
    move |e| ManifestFileError::Io { path: path.display().to_string(), source: e.into() }
}

fn untrusted(path: &Path, what: String) -> ManifestFileError {
    ManifestFileError::Untrusted { path: path.display().to_string(), what, uid: private::me() }
}

fn private_err(path: &Path) -> impl FnOnce(private::Error) -> ManifestFileError + '_ {
    move |e| match e {
        private::Error::Io(source) => ManifestFileError::Io { path: path.display().to_string(), source },
        private::Error::Untrusted(flaw) => untrusted(path, flaw.to_string()),
    }
}

/// The manifest's directory under `top`: ours, writable by no one else.
fn open_dir_at(top: &OwnedFd, path: &Path) -> Result<Option<OwnedFd>, ManifestFileError> {
    private::open_dir_at(top, MANIFEST_DIR).map_err(private_err(path))
}

fn check_owner(fd: &OwnedFd, kind: FileType, path: &Path) -> Result<(), ManifestFileError> {
    private::check(fd, kind, Rule::NotWritableByOthers).map_err(private_err(path))
}

fn read_bounded(fd: OwnedFd, path: &Path) -> Result<String, ManifestFileError> {
    private::read_bounded(fd, MAX_MANIFEST_LEN)
        .map_err(|source| ManifestFileError::Io { path: path.display().to_string(), source })?
        .ok_or_else(|| ManifestFileError::TooLarge { path: path.display().to_string() })
}

fn open_top(top: &Path) -> Result<OwnedFd, ManifestFileError> {
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
    rustix::fs::open(top, flags, Mode::empty()).map_err(io(top))
}

/// Writes `text` as the manifest under `top` (a root's mountpoint) unless
/// it is there already. Returns whether it changed (with `dry_run`:
/// whether it would), and writes nothing with `dry_run`.
pub fn write(top: &Path, text: &str, dry_run: bool) -> Result<bool, ManifestFileError> {
    let dir_path = top.join(MANIFEST_DIR);
    let file_path = dir_path.join(MANIFEST_FILE);
    let top_fd = open_top(top)?;
    let dir = match open_dir_at(&top_fd, &dir_path)? {
        Some(d) => d,
        None if dry_run => return Ok(true),
        None => {
            rustix::fs::mkdirat(&top_fd, MANIFEST_DIR, Mode::from_raw_mode(0o755)).map_err(io(&dir_path))?;
            let d = open_dir_at(&top_fd, &dir_path)?.ok_or_else(|| io(&dir_path)(Errno::NOENT))?;
            // Whatever the umask: readable, written by its owner only.
            rustix::fs::fchmod(&d, Mode::from_raw_mode(0o755)).map_err(io(&dir_path))?;
            d
        }
    };
    check_owner(&dir, FileType::Directory, &dir_path)?;
    match private::open_file_at(&dir, MANIFEST_FILE) {
        Ok(Some(fd)) => {
            if read_bounded(fd, &file_path).is_ok_and(|old| old == text) {
                return Ok(false);
            }
        }
        // Missing, or not a plain file (a symlink: the replace below
        // replaces the link itself).
        Ok(None) | Err(private::Error::Untrusted(_)) => {}
        Err(private::Error::Io(source)) => {
            return Err(ManifestFileError::Io { path: file_path.display().to_string(), source })
        }
    }
    if dry_run {
        return Ok(true);
    }
    private::replace(&dir, MANIFEST_FILE, text.as_bytes(), 0o644, None)
        .map_err(|source| ManifestFileError::Io { path: file_path.display().to_string(), source })?;
    Ok(true)
}

/// Reads the manifest under `top` (a restored snapshot, mounted read-only),
/// or `None` when there is none. Refused unless the directory and the file
/// are owned by this process's user (root) and writable by no one else:
/// anything else was not written by zoffsite.
pub fn read(top: &Path) -> Result<Option<String>, ManifestFileError> {
    let dir_path = top.join(MANIFEST_DIR);
    let file_path = dir_path.join(MANIFEST_FILE);
    let top_fd = open_top(top)?;
    let Some(dir) = open_dir_at(&top_fd, &dir_path)? else { return Ok(None) };
    check_owner(&dir, FileType::Directory, &dir_path)?;
    let Some(fd) = private::open_file_at(&dir, MANIFEST_FILE).map_err(private_err(&file_path))? else {
        return Ok(None);
    };
    check_owner(&fd, FileType::RegularFile, &file_path)?;
    read_bounded(fd, &file_path).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn writes_once_reads_back_and_rewrites_only_a_change() {
        let top = tempfile::tempdir().unwrap();
        assert_eq!(read(top.path()).unwrap(), None);
        assert!(write(top.path(), "one\n", true).unwrap(), "would write");
        assert!(!top.path().join(MANIFEST_DIR).exists(), "a dry run writes nothing");
        assert!(write(top.path(), "one\n", false).unwrap());
        assert!(!write(top.path(), "one\n", false).unwrap(), "unchanged");
        assert_eq!(read(top.path()).unwrap().as_deref(), Some("one\n"));
        let dir = top.path().join(MANIFEST_DIR);
        assert_eq!(std::fs::metadata(&dir).unwrap().permissions().mode() & 0o7777, 0o755);
        assert!(write(top.path(), "two\n", false).unwrap());
        assert_eq!(std::fs::read_to_string(dir.join(MANIFEST_FILE)).unwrap(), "two\n");
        let names: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, [MANIFEST_FILE], "no temporary left behind");
    }

    #[test]
    fn symlinks_are_never_followed() {
        let top = tempfile::tempdir().unwrap();
        let elsewhere = tempfile::tempdir().unwrap();
        // `.zoffsite` pointing elsewhere: refused, nothing written there.
        std::os::unix::fs::symlink(elsewhere.path(), top.path().join(MANIFEST_DIR)).unwrap();
        let e = write(top.path(), "x\n", false).unwrap_err();
        assert!(matches!(e, ManifestFileError::Untrusted { .. }), "{e}");
        assert!(e.to_string().contains("symlink"), "{e}");
        assert!(std::fs::read_dir(elsewhere.path()).unwrap().next().is_none());
        assert!(matches!(read(top.path()), Err(ManifestFileError::Untrusted { .. })));
        // The file, or a planted temporary, as a symlink: replaced, the
        // target untouched.
        std::fs::remove_file(top.path().join(MANIFEST_DIR)).unwrap();
        std::fs::create_dir(top.path().join(MANIFEST_DIR)).unwrap();
        let dir = top.path().join(MANIFEST_DIR);
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        let target = elsewhere.path().join("victim");
        std::fs::write(&target, "victim\n").unwrap();
        std::os::unix::fs::symlink(&target, dir.join(MANIFEST_FILE)).unwrap();
        // Temporaries are named `.NAME.PID-N.tmp`: plant the next few.
        for n in 0..8 {
            let tmp = format!(".{MANIFEST_FILE}.{}-{n}.tmp", std::process::id());
            std::os::unix::fs::symlink(&target, dir.join(tmp)).unwrap();
        }
        assert!(
            matches!(read(top.path()), Err(ManifestFileError::Untrusted { .. })),
            "a symlinked manifest is not read"
        );
        assert!(write(top.path(), "x\n", false).unwrap());
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "victim\n");
        assert!(!std::fs::symlink_metadata(dir.join(MANIFEST_FILE)).unwrap().file_type().is_symlink());
        assert_eq!(read(top.path()).unwrap().as_deref(), Some("x\n"));
    }

    #[test]
    fn a_directory_others_can_write_or_own_is_refused() {
        let top = tempfile::tempdir().unwrap();
        let dir = top.path().join(MANIFEST_DIR);
        std::fs::create_dir(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
        let e = write(top.path(), "x\n", false).unwrap_err();
        assert!(e.to_string().contains("writable by others (mode 0777)"), "{e}");
        assert!(!dir.join(MANIFEST_FILE).exists());
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert!(write(top.path(), "x\n", false).unwrap());
        // A manifest others may rewrite is not read.
        std::fs::set_permissions(dir.join(MANIFEST_FILE), std::fs::Permissions::from_mode(0o666)).unwrap();
        assert!(read(top.path()).unwrap_err().to_string().contains("writable by others"));
        if rustix::process::geteuid().is_root() {
            std::fs::set_permissions(dir.join(MANIFEST_FILE), std::fs::Permissions::from_mode(0o644)).unwrap();
            std::os::unix::fs::chown(&dir, Some(65534), None).unwrap();
            let e = write(top.path(), "y\n", false).unwrap_err();
            assert!(e.to_string().contains("owned by uid 65534"), "{e}");
            assert!(read(top.path()).unwrap_err().to_string().contains("owned by uid 65534"));
        }
    }
}
