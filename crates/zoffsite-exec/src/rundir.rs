//! zoffsite's private runtime directory, and reading files without
//! following symlinks.
//!
//! Run locks, and the mountpoints where a restore or a drill looks at
//! decrypted data, live in one directory that only this user can enter:
//! `/run/zoffsite` for root, `$XDG_RUNTIME_DIR/zoffsite` for another user,
//! or `$ZOFFSITE_RUN_DIR` (the tests' override; whoever sets zoffsite's
//! environment is already trusted with everything it does).
//!
//! Invariants:
//! - The directory is opened with `O_NOFOLLOW` and checked on the open
//!   descriptor: a real directory, owned by our effective uid, mode 0700.
//!   Anything else (a symlink, another owner, a wider mode) is refused,
//!   never repaired: it means someone else got there first.
//! - Files in it are created relative to that descriptor, with
//!   `O_NOFOLLOW`, and subdirectories ([`RunDir::private_dir`]) are made
//!   with `mkdirat` 0700, which fails on any existing name: no other user
//!   can plant or predict anything zoffsite uses there.

use std::ffi::OsStr;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use rustix::fs::{self as rfs, Mode, OFlags};
use rustix::io::Errno;

use crate::private;

/// The runtime directory of a zoffsite run as root.
pub const SYSTEM_DIR: &str = "/run/zoffsite";
/// Environment variable naming another runtime directory (tests).
pub const ENV: &str = "ZOFFSITE_RUN_DIR";

#[derive(Debug, thiserror::Error)]
pub enum RunDirError {
    #[error("cannot use the runtime directory {path}: {source}")]
    Io { path: String, source: io::Error },
    #[error("refusing the runtime directory {path}: {why}. Someone else may have made it: look at it, remove it, and zoffsite makes it again (a directory owned by uid {uid}, mode 0700)")]
    Unsafe { path: String, why: String, uid: u32 },
    #[error("no runtime directory for uid {uid}: XDG_RUNTIME_DIR is not set; set it, or set {ENV} to a directory only you can write")]
    NoDir { uid: u32 },
}

/// Where the runtime directory is for this process.
pub fn default_path() -> Result<PathBuf, RunDirError> {
    if let Some(p) = std::env::var_os(ENV).filter(|p| !p.is_empty()) {
        return Ok(PathBuf::from(p));
    }
    let uid = rustix::process::geteuid();
    if uid.is_root() {
        return Ok(PathBuf::from(SYSTEM_DIR));
    }
    match std::env::var_os("XDG_RUNTIME_DIR").filter(|p| !p.is_empty()) {
        Some(p) => Ok(PathBuf::from(p).join("zoffsite")),
        None => Err(RunDirError::NoDir { uid: uid.as_raw() }),
    }
}

/// The open, checked runtime directory.
#[derive(Debug)]
pub struct RunDir {
    fd: OwnedFd,
    path: PathBuf,
}

impl RunDir {
    /// Opens (creating it if absent) the runtime directory at [`default_path`].
    pub fn open_default() -> Result<RunDir, RunDirError> {
        RunDir::open(&default_path()?)
    }

    /// Opens (creating it if absent) `path` as a runtime directory: see the
    /// module's invariants.
    pub fn open(path: &Path) -> Result<RunDir, RunDirError> {
        let uid = rustix::process::geteuid();
        let shown = path.display().to_string();
        let io_err = |e: Errno| RunDirError::Io { path: shown.clone(), source: e.into() };
        let unsafe_ = |why: String| RunDirError::Unsafe { path: shown.clone(), why, uid: uid.as_raw() };
        let created = match rfs::mkdir(path, Mode::RWXU) {
            Ok(()) => true,
            Err(Errno::EXIST) => false,
            Err(e) => return Err(io_err(e)),
        };
        let untrusted = |e: private::Error| match e {
            private::Error::Io(e) => RunDirError::Io { path: shown.clone(), source: e },
            private::Error::Untrusted(flaw) => unsafe_(format!("it is {flaw}")),
        };
        let fd = private::open_dir(path).map_err(untrusted)?.ok_or_else(|| io_err(Errno::NOENT))?;
        if created {
            // The umask may have narrowed it; never widened.
            rfs::fchmod(&fd, Mode::RWXU).map_err(io_err)?;
        }
        private::check(&fd, rfs::FileType::Directory, private::Rule::Exactly0700).map_err(untrusted)?;
        Ok(RunDir { fd, path: path.to_owned() })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Opens (creating it 0600 if absent) the file `name` directly in the
    /// directory, read-write, never following a symlink.
    pub fn open_file(&self, name: &str) -> io::Result<File> {
        debug_assert!(!name.contains('/'), "{name}");
        let flags = OFlags::RDWR | OFlags::CREATE | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let fd = rfs::openat(&self.fd, name, flags, Mode::RUSR | Mode::WUSR)?;
        Ok(File::from(fd))
    }

    /// A new, empty directory in it, 0700, with a name nobody chose before
    /// (`mkdtemp`): removed (if empty) when the value is dropped.
    pub fn private_dir(&self, prefix: &str) -> io::Result<PrivateDir> {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos();
        for _ in 0..100 {
            let n = COUNTER.fetch_add(1, Ordering::Relaxed);
            let name = format!("{prefix}{}-{:x}-{n}", std::process::id(), nanos & 0xffff_ffff_ffff);
            match rfs::mkdirat(&self.fd, name.as_str(), Mode::RWXU) {
                Ok(()) => return Ok(PrivateDir { path: self.path.join(name) }),
                Err(Errno::EXIST) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(io::Error::other(format!("no free directory name in {}", self.path.display())))
    }
}

/// A directory made by [`RunDir::private_dir`].
#[derive(Debug)]
pub struct PrivateDir {
    path: PathBuf,
}

impl PrivateDir {
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A new, empty subdirectory `name` (0700), e.g. a mountpoint.
    pub fn subdir(&self, name: &str) -> io::Result<PathBuf> {
        let p = self.path.join(name);
        rfs::mkdir(&p, Mode::RWXU)?;
        Ok(p)
    }
}

impl Drop for PrivateDir {
    /// Removes the directory and its empty subdirectories; never anything
    /// else (`rmdir` only: a directory with something mounted or written in
    /// it stays, and says so by staying).
    fn drop(&mut self) {
        if let Ok(entries) = std::fs::read_dir(&self.path) {
            for e in entries.flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    let _ = std::fs::remove_dir(e.path());
                }
            }
        }
        let _ = std::fs::remove_dir(&self.path);
    }
}

/// Opens the regular file `rel` (a relative path) below the directory
/// `root`, following no symlink on the way, in `rel`'s directories or its
/// last component, and refusing anything but a regular file (a FIFO or a
/// device there would hang or misbehave the reader).
pub fn open_beneath(root: &Path, rel: &Path) -> io::Result<File> {
    let dir_flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let mut dir: OwnedFd = rfs::open(root, dir_flags, Mode::empty())?;
    let parts: Vec<&OsStr> = rel
        .components()
        .map(|c| match c {
            Component::Normal(n) => Ok(n),
            _ => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{} is not a plain relative path", rel.display()),
            )),
        })
        .collect::<io::Result<_>>()?;
    let Some((last, dirs)) = parts.split_last() else {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "empty path"));
    };
    for d in dirs {
        dir = rfs::openat(&dir, *d, dir_flags, Mode::empty())?;
    }
    let fd = rfs::openat(
        &dir,
        *last,
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    let st = rfs::fstat(&fd)?;
    if rfs::FileType::from_raw_mode(st.st_mode) != rfs::FileType::RegularFile {
        return Err(io::Error::new(io::ErrorKind::InvalidData, format!("{} is not a regular file", rel.display())));
    }
    Ok(File::from(fd))
}

/// Opens the regular file at `path` (found by a walk that does not follow
/// symlinks) without following a symlink in its last component.
pub fn open_nofollow(path: &Path) -> io::Result<File> {
    let fd = rfs::open(path, OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC, Mode::empty())?;
    let st = rfs::fstat(&fd)?;
    if rfs::FileType::from_raw_mode(st.st_mode) != rfs::FileType::RegularFile {
        return Err(io::Error::new(io::ErrorKind::InvalidData, format!("{} is not a regular file", path.display())));
    }
    Ok(File::from(fd))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read as _;
    use std::os::unix::fs::{symlink, PermissionsExt as _};

    #[test]
    fn made_private_and_refused_when_someone_else_could_have_made_it() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("run");
        let d = RunDir::open(&p).unwrap();
        assert_eq!(std::fs::symlink_metadata(&p).unwrap().permissions().mode() & 0o7777, 0o700);
        drop(d);
        // Opening it again is fine.
        RunDir::open(&p).unwrap();
        // A wider mode is refused, not repaired.
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        let e = RunDir::open(&p).unwrap_err();
        assert!(e.to_string().contains("mode 0755, not 0700"), "{e}");
        // A symlink to a directory of ours is refused too.
        let real = t.path().join("real");
        std::fs::create_dir(&real).unwrap();
        std::fs::set_permissions(&real, std::fs::Permissions::from_mode(0o700)).unwrap();
        let link = t.path().join("link");
        symlink(&real, &link).unwrap();
        let e = RunDir::open(&link).unwrap_err();
        assert!(e.to_string().contains("it is a symlink"), "{e}");
        // A file is refused.
        let f = t.path().join("file");
        std::fs::write(&f, "").unwrap();
        assert!(RunDir::open(&f).unwrap_err().to_string().contains("not a directory"));
    }

    #[test]
    fn files_and_private_dirs_never_follow_planted_symlinks() {
        let t = tempfile::tempdir().unwrap();
        let d = RunDir::open(&t.path().join("run")).unwrap();
        let victim = t.path().join("victim");
        std::fs::write(&victim, "keep").unwrap();
        symlink(&victim, d.path().join("x.lock")).unwrap();
        assert!(d.open_file("x.lock").is_err(), "a symlink is not followed");
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "keep");
        let a = d.private_dir("drill-").unwrap();
        let b = d.private_dir("drill-").unwrap();
        assert_ne!(a.path(), b.path());
        assert_eq!(std::fs::metadata(a.path()).unwrap().permissions().mode() & 0o7777, 0o700);
        let m = a.subdir("mnt").unwrap();
        assert!(m.is_dir());
        let kept = a.path().to_owned();
        drop(a);
        assert!(!kept.exists(), "removed with its empty subdirectories");
    }

    #[test]
    fn open_beneath_follows_no_symlink_anywhere() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().join("mnt");
        std::fs::create_dir_all(root.join(".zoffsite")).unwrap();
        std::fs::write(root.join(".zoffsite/properties.json"), "{}").unwrap();
        let mut s = String::new();
        open_beneath(&root, Path::new(".zoffsite/properties.json")).unwrap().read_to_string(&mut s).unwrap();
        assert_eq!(s, "{}");
        // Elsewhere: a secret outside the mounted data.
        let secret = t.path().join("secret");
        std::fs::create_dir(&secret).unwrap();
        std::fs::write(secret.join("properties.json"), "secret").unwrap();
        // The last component a symlink.
        let r2 = t.path().join("mnt2");
        std::fs::create_dir_all(r2.join(".zoffsite")).unwrap();
        symlink(secret.join("properties.json"), r2.join(".zoffsite/properties.json")).unwrap();
        assert!(open_beneath(&r2, Path::new(".zoffsite/properties.json")).is_err());
        // A directory on the way a symlink.
        let r3 = t.path().join("mnt3");
        std::fs::create_dir(&r3).unwrap();
        symlink(&secret, r3.join(".zoffsite")).unwrap();
        assert!(open_beneath(&r3, Path::new(".zoffsite/properties.json")).is_err());
        // `..` and absolute paths are refused.
        assert!(open_beneath(&root, Path::new("../secret/properties.json")).is_err());
        // Not a regular file.
        std::fs::create_dir(root.join("dir")).unwrap();
        assert!(open_beneath(&root, Path::new("dir")).is_err());
        assert!(open_nofollow(&r2.join(".zoffsite/properties.json")).is_err());
        assert!(open_nofollow(&root.join(".zoffsite/properties.json")).is_ok());
    }
}
