//! Files and directories that only the user zoffsite runs as may change:
//! the one place that opens, checks and replaces them.
//!
//! Used by the runtime directory ([`crate::rundir`]), the properties
//! manifest ([`crate::manifest_file`]), the box's txg journal
//! ([`crate::journal`]) and `box init`'s `authorized_keys`.
//!
//! Invariants:
//! - Nothing is followed: directories and files are opened with
//!   `O_NOFOLLOW`, files relative to their directory's descriptor
//!   (`openat`), so a symlink planted by someone who can write a parent
//!   never redirects a read or a write, and a directory swapped in after
//!   the check is not the one written.
//! - Checks ([`check`]) run on the open descriptor (`fstat`), never on a
//!   path that could change between the check and the use. A descriptor
//!   that fails them is refused, never repaired: whoever could write there
//!   could have planted what zoffsite would then trust.
//! - A file is replaced atomically ([`replace`]): a fresh `O_EXCL`
//!   temporary beside it, written, fsynced, renamed over the old name, and
//!   the directory fsynced; a crash leaves the old file or the new one.
//! - Reads are bounded ([`read_bounded`]).

use std::fmt;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use rustix::fs::{self as rfs, AtFlags, FileType, Mode, OFlags};
use rustix::io::Errno;

/// What a private file or directory must be, beyond being ours.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    /// Writable by its owner only (group and others may read).
    NotWritableByOthers,
    /// Exactly mode 0700: nobody else may even look.
    Exactly0700,
}

/// Why a descriptor is not trusted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Flaw {
    /// A symlink (found by `O_NOFOLLOW`).
    Symlink,
    NotDirectory,
    NotRegularFile,
    /// Owned by `uid`, not by this process's effective user `me`.
    Owner {
        uid: u32,
        me: u32,
    },
    /// Group or others may write it.
    WritableByOthers {
        mode: u32,
    },
    /// Not mode 0700 ([`Rule::Exactly0700`]).
    Mode {
        mode: u32,
    },
}

impl fmt::Display for Flaw {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Flaw::Symlink => write!(f, "a symlink"),
            Flaw::NotDirectory => write!(f, "not a directory"),
            Flaw::NotRegularFile => write!(f, "not a regular file"),
            Flaw::Owner { uid, me } => write!(f, "owned by uid {uid}, not by uid {me} that runs this"),
            Flaw::WritableByOthers { mode } => write!(f, "writable by others (mode {mode:04o})"),
            Flaw::Mode { mode } => write!(f, "of mode {mode:04o}, not 0700"),
        }
    }
}

/// An error opening or checking a private file: either I/O, or a [`Flaw`].
#[derive(Debug)]
pub enum Error {
    Io(io::Error),
    Untrusted(Flaw),
}

impl From<Errno> for Error {
    fn from(e: Errno) -> Self {
        Error::Io(e.into())
    }
}

impl From<io::Error> for Error {
    fn from(e: io::Error) -> Self {
        Error::Io(e)
    }
}

/// This process's effective uid: the owner every private file must have.
pub fn me() -> u32 {
    rustix::process::geteuid().as_raw()
}

/// Checks an open descriptor: of `kind`, owned by this process's user, and
/// as closed as `rule` asks.
pub fn check(fd: impl AsFd, kind: FileType, rule: Rule) -> Result<(), Error> {
    let st = rfs::fstat(fd)?;
    let got = FileType::from_raw_mode(st.st_mode);
    if got != kind {
        return Err(Error::Untrusted(match kind {
            FileType::Directory => Flaw::NotDirectory,
            _ => Flaw::NotRegularFile,
        }));
    }
    let me = me();
    if st.st_uid != me {
        return Err(Error::Untrusted(Flaw::Owner { uid: st.st_uid, me }));
    }
    let mode = st.st_mode & 0o7777;
    match rule {
        Rule::NotWritableByOthers if mode & 0o022 != 0 => Err(Error::Untrusted(Flaw::WritableByOthers { mode })),
        Rule::Exactly0700 if mode != 0o700 => Err(Error::Untrusted(Flaw::Mode { mode })),
        _ => Ok(()),
    }
}

fn nofollow_errno(e: Errno, symlink_or: Flaw) -> Error {
    match e {
        // ELOOP: the last component is a symlink. ENOTDIR (with
        // O_DIRECTORY): a symlink or a file where a directory should be.
        Errno::LOOP => Error::Untrusted(Flaw::Symlink),
        Errno::NOTDIR => Error::Untrusted(symlink_or),
        e => Error::Io(e.into()),
    }
}

/// Opens the directory at `path` without following a symlink in its last
/// component. `Ok(None)` when it does not exist.
pub fn open_dir(path: &Path) -> Result<Option<OwnedFd>, Error> {
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    match rfs::open(path, flags, Mode::empty()) {
        Ok(fd) => Ok(Some(fd)),
        Err(Errno::NOENT) => Ok(None),
        Err(e) => Err(nofollow_errno(e, not_dir_or_symlink(path))),
    }
}

/// Opens the directory `name` in `dir` without following a symlink.
/// `Ok(None)` when it does not exist.
pub fn open_dir_at(dir: impl AsFd, name: &str) -> Result<Option<OwnedFd>, Error> {
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let dir = dir.as_fd();
    match rfs::openat(dir, name, flags, Mode::empty()) {
        Ok(fd) => Ok(Some(fd)),
        Err(Errno::NOENT) => Ok(None),
        Err(e) => {
            let what = match rfs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
                Ok(st) if FileType::from_raw_mode(st.st_mode) == FileType::Symlink => Flaw::Symlink,
                _ => Flaw::NotDirectory,
            };
            Err(nofollow_errno(e, what))
        }
    }
}

/// Opens the regular file `name` in `dir` for reading, without following a
/// symlink; `Ok(None)` when it does not exist. A FIFO or device is refused
/// (`O_NONBLOCK` on the open, so one cannot hang it).
pub fn open_file_at(dir: impl AsFd, name: &str) -> Result<Option<OwnedFd>, Error> {
    let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC;
    let fd = match rfs::openat(dir, name, flags, Mode::empty()) {
        Ok(fd) => fd,
        Err(Errno::NOENT) => return Ok(None),
        Err(e) => return Err(nofollow_errno(e, Flaw::NotRegularFile)),
    };
    if FileType::from_raw_mode(rfs::fstat(&fd)?.st_mode) != FileType::RegularFile {
        return Err(Error::Untrusted(Flaw::NotRegularFile));
    }
    Ok(Some(fd))
}

/// Why `path` could not be opened as a directory: a symlink, or a file.
fn not_dir_or_symlink(path: &Path) -> Flaw {
    match rfs::lstat(path) {
        Ok(st) if FileType::from_raw_mode(st.st_mode) == FileType::Symlink => Flaw::Symlink,
        _ => Flaw::NotDirectory,
    }
}

/// Reads all of `fd` as text, refusing more than `limit` bytes:
/// `Ok(None)` when it is longer.
pub fn read_bounded(fd: OwnedFd, limit: usize) -> io::Result<Option<String>> {
    let mut text = String::new();
    std::fs::File::from(fd).take(limit as u64 + 1).read_to_string(&mut text)?;
    Ok((text.len() <= limit).then_some(text))
}

/// Gives the open directory `dir` to `owner` with `mode`: through the
/// descriptor, so nothing swapped in at its path is changed instead.
pub fn fix_dir(dir: impl AsFd, owner: Owner, mode: u32) -> io::Result<()> {
    let dir = dir.as_fd();
    rfs::fchown(dir, Some(rustix::process::Uid::from_raw(owner.uid)), Some(rustix::process::Gid::from_raw(owner.gid)))?;
    rfs::fchmod(dir, Mode::from_raw_mode(mode))?;
    Ok(())
}

/// Who a replaced file belongs to, when not to this process's user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Owner {
    pub uid: u32,
    pub gid: u32,
}

/// Replaces `name` in `dir` with `bytes`, atomically (see the module's
/// invariants), created with `mode` (the umask can only narrow it), owned
/// by `owner` when given. A symlink at `name` is replaced itself, never followed.
pub fn replace(dir: impl AsFd, name: &str, bytes: &[u8], mode: u32, owner: Option<Owner>) -> io::Result<()> {
    replace_impl(dir.as_fd(), name, bytes, mode, owner, false)
}

/// [`replace`], the new file given exactly `mode` whatever the umask: a
/// file others must read written from a unit with `UMask=0077` (doctor's
/// audit report), and `box apply`, whose second run must find the mode it
/// asked for, or it would rewrite the file every time.
pub fn replace_exact(dir: impl AsFd, name: &str, bytes: &[u8], mode: u32, owner: Option<Owner>) -> io::Result<()> {
    replace_impl(dir.as_fd(), name, bytes, mode, owner, true)
}

fn replace_impl(
    dir: std::os::fd::BorrowedFd<'_>,
    name: &str,
    bytes: &[u8],
    mode: u32,
    owner: Option<Owner>,
    exact: bool,
) -> io::Result<()> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let flags = OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let (tmp, fd) = (0..100)
        .find_map(|_| {
            let n = COUNTER.fetch_add(1, Ordering::Relaxed);
            let tmp = format!(".{name}.{}-{n}.tmp", std::process::id());
            match rfs::openat(dir, tmp.as_str(), flags, Mode::from_raw_mode(mode)) {
                Err(Errno::EXIST) => None,
                r => Some(r.map(|fd| (tmp, fd))),
            }
        })
        .unwrap_or(Err(Errno::EXIST))?;
    let written = (|| -> io::Result<()> {
        if let Some(o) = owner {
            rfs::fchown(&fd, Some(rustix::process::Uid::from_raw(o.uid)), Some(rustix::process::Gid::from_raw(o.gid)))?;
        }
        if exact {
            rfs::fchmod(&fd, Mode::from_raw_mode(mode))?;
        }
        let mut f = std::fs::File::from(fd);
        f.write_all(bytes)?;
        f.sync_all()?;
        drop(f);
        rfs::renameat(dir, tmp.as_str(), dir, name)?;
        Ok(())
    })();
    if let Err(e) = written {
        let _ = rfs::unlinkat(dir, tmp.as_str(), AtFlags::empty());
        return Err(e);
    }
    // Renamed: the temporary's name is gone (and may be someone else's
    // now), so nothing is removed after this point.
    rfs::fsync(dir)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    #[test]
    fn replace_is_atomic_private_and_does_not_follow_a_planted_symlink() {
        let d = tempfile::tempdir().unwrap();
        let elsewhere = d.path().join("elsewhere");
        std::fs::write(&elsewhere, "theirs").unwrap();
        std::os::unix::fs::symlink(&elsewhere, d.path().join("f")).unwrap();
        let dir = open_dir(d.path()).unwrap().unwrap();
        replace(&dir, "f", b"ours", 0o640, None).unwrap();
        assert_eq!(std::fs::read_to_string(&elsewhere).unwrap(), "theirs", "the link's target is untouched");
        let meta = std::fs::symlink_metadata(d.path().join("f")).unwrap();
        assert!(meta.is_file() && meta.permissions().mode() & 0o7777 & !0o640 == 0, "never wider than asked");
        assert_eq!(std::fs::read_to_string(d.path().join("f")).unwrap(), "ours");
        let left: Vec<_> = std::fs::read_dir(d.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(left.len(), 2, "no temporary left behind: {left:?}");
    }

    #[test]
    fn replace_exact_ignores_the_umask() {
        let d = tempfile::tempdir().unwrap();
        let dir = open_dir(d.path()).unwrap().unwrap();
        // 0666: any usual umask (022, 077) would narrow it.
        replace_exact(&dir, "r", b"{}", 0o666, None).unwrap();
        let meta = std::fs::symlink_metadata(d.path().join("r")).unwrap();
        assert_eq!(meta.permissions().mode() & 0o7777, 0o666);
    }

    #[test]
    fn checks_refuse_symlinks_other_owners_and_open_modes() {
        let d = tempfile::tempdir().unwrap();
        let dir = open_dir(d.path()).unwrap().unwrap();
        std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
        check(&dir, FileType::Directory, Rule::Exactly0700).unwrap();
        std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        check(&dir, FileType::Directory, Rule::NotWritableByOthers).unwrap();
        assert!(matches!(
            check(&dir, FileType::Directory, Rule::Exactly0700),
            Err(Error::Untrusted(Flaw::Mode { mode: 0o755 }))
        ));
        std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
        let e = check(&dir, FileType::Directory, Rule::NotWritableByOthers);
        assert!(matches!(e, Err(Error::Untrusted(Flaw::WritableByOthers { mode: 0o777 }))), "{e:?}");
        assert_eq!(Flaw::WritableByOthers { mode: 0o777 }.to_string(), "writable by others (mode 0777)");
        assert!(matches!(check(&dir, FileType::RegularFile, Rule::NotWritableByOthers), Err(Error::Untrusted(_))));

        std::fs::create_dir(d.path().join("real")).unwrap();
        std::fs::write(d.path().join("file"), "x").unwrap();
        std::os::unix::fs::symlink(d.path().join("real"), d.path().join("link")).unwrap();
        assert!(matches!(open_dir(&d.path().join("link")), Err(Error::Untrusted(Flaw::Symlink))));
        assert!(matches!(open_dir_at(&dir, "link"), Err(Error::Untrusted(Flaw::Symlink))));
        assert!(matches!(open_dir_at(&dir, "file"), Err(Error::Untrusted(Flaw::NotDirectory))));
        assert!(open_dir_at(&dir, "missing").unwrap().is_none());
        std::os::unix::fs::symlink(d.path().join("file"), d.path().join("flink")).unwrap();
        assert!(matches!(open_file_at(&dir, "flink"), Err(Error::Untrusted(Flaw::Symlink))));
        assert!(matches!(open_file_at(&dir, "real"), Err(Error::Untrusted(Flaw::NotRegularFile))));
        let fd = open_file_at(&dir, "file").unwrap().unwrap();
        assert_eq!(read_bounded(fd, 1).unwrap().as_deref(), Some("x"));
        let fd = open_file_at(&dir, "file").unwrap().unwrap();
        assert_eq!(read_bounded(fd, 0).unwrap(), None, "longer than the limit");

        if me() == 0 {
            std::fs::create_dir(d.path().join("nobody")).unwrap();
            std::os::unix::fs::chown(d.path().join("nobody"), Some(65534), None).unwrap();
            let fd = open_dir_at(&dir, "nobody").unwrap().unwrap();
            let e = check(&fd, FileType::Directory, Rule::NotWritableByOthers);
            assert!(matches!(e, Err(Error::Untrusted(Flaw::Owner { uid: 65534, .. }))), "{e:?}");
        }
    }
}
