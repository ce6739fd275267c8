//! `box init`'s shell: the facts its plan is made from (zfs, getent, the
//! filesystem) and its steps, carried out in order, each by a fixed argv
//! (or, for `authorized_keys`, an atomic write). The decisions are
//! [`zoffsite_core::boxinit::plan`]'s.
//!
//! The box user can write its home: `~/.ssh` and `authorized_keys` are
//! written through [`crate::private`] (no symlink followed, changed through
//! an open descriptor only), so nothing that user plants can turn root's
//! writes, chown or chmod onto another path.

use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use zoffsite_core::boxinit::{self, Facts, FileFacts, Inputs, RootFacts, Step};

use crate::private;
use crate::process::Cmd;
use crate::system::{self, SystemError};
use crate::zfs::{Zfs, ZfsError};

/// Largest authorized_keys file (or `--source-key` file) read.
pub const MAX_KEYS_FILE: u64 = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum BoxInitError {
    #[error(transparent)]
    Zfs(#[from] ZfsError),
    #[error(transparent)]
    System(#[from] SystemError),
    #[error("{what}: {source}")]
    Io { what: String, source: std::io::Error },
    #[error("{0}")]
    Refused(String),
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> BoxInitError {
    let what = what.into();
    move |source| BoxInitError::Io { what, source }
}

/// Reads a small text file (a public key, an authorized_keys file), at
/// most [`MAX_KEYS_FILE`] bytes of it.
pub fn read_small(p: &Path) -> std::io::Result<String> {
    use std::io::Read as _;
    let mut s = String::new();
    std::fs::File::open(p)?.take(MAX_KEYS_FILE).read_to_string(&mut s)?;
    Ok(s)
}

/// Everything [`boxinit::plan`] needs to know about this machine.
pub fn gather(zfs: &Zfs, inp: &Inputs) -> Result<Facts, BoxInitError> {
    let user = system::getent("passwd", inp.user.as_str())?
        .map(|l| {
            boxinit::parse_passwd(&l)
                .ok_or_else(|| BoxInitError::Refused(format!("unexpected passwd entry for {}", inp.user)))
        })
        .transpose()?;
    let password_field = if user.is_some() {
        system::getent("shadow", inp.user.as_str())?.and_then(|l| boxinit::shadow_password(&l).map(str::to_owned))
    } else {
        None
    };
    let root = if zfs.exists(&inp.root)? {
        Some(RootFacts {
            kind: zfs.get_value(inp.root.as_str(), "type")?,
            mountpoint: zfs.get_value(inp.root.as_str(), "mountpoint")?,
            snapshot_limit: zfs.get_value(inp.root.as_str(), "snapshot_limit")?,
            filesystem_limit: zfs.get_value(inp.root.as_str(), "filesystem_limit")?,
            quota: zfs.get_value(inp.root.as_str(), "quota")?,
        })
    } else {
        None
    };
    // The root's delegations (with its ancestors'), or its parent's when it
    // does not exist yet (those would reach it).
    let listed = if root.is_some() {
        Some(inp.root.clone())
    } else {
        match inp.root.parent() {
            Some(p) if zfs.exists(&p)? => Some(p),
            _ => None,
        }
    };
    let allow = match listed {
        Some(ds) => {
            let text = zfs.allow_listing(&ds)?;
            boxinit::parse_allow(&text)
                .map_err(|e| BoxInitError::Refused(format!("unexpected `zfs allow {ds}` output: {e}")))?
        }
        None => Vec::new(),
    };
    let (path, dir) = boxinit::authorized_keys_path(inp, user.as_ref());
    Ok(Facts {
        zfs_version: zfs.version_text()?,
        user,
        password_field,
        root,
        allow,
        authorized_keys: file_facts(Path::new(&path), true)?,
        ssh_dir: dir.map(|d| file_facts(Path::new(&d), false)).transpose()?.flatten(),
    })
}

fn file_facts(p: &Path, read: bool) -> Result<Option<FileFacts>, BoxInitError> {
    let m = match std::fs::symlink_metadata(p) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io(format!("cannot inspect {}", p.display()))(e)),
    };
    let is_symlink = m.file_type().is_symlink();
    let content = if read && m.is_file() {
        if m.len() > MAX_KEYS_FILE {
            return Err(BoxInitError::Refused(format!(
                "{} is larger than {MAX_KEYS_FILE} bytes; refusing to rewrite it",
                p.display()
            )));
        }
        Some(read_small(p).map_err(io(format!("cannot read {}", p.display())))?)
    } else {
        None
    };
    Ok(Some(FileFacts { is_symlink, is_dir: m.is_dir(), uid: m.uid(), mode: m.mode(), content }))
}

/// Checks only this machine can answer: can the box user open /dev/zfs
/// and run this binary?
pub fn local_warnings(inp: &Inputs, uid: Option<u32>) -> Vec<String> {
    let mut w = Vec::new();
    match std::fs::metadata("/dev/zfs") {
        Ok(m) if m.permissions().mode() & 0o006 == 0o006 => {}
        Ok(m) => w.push(format!(
            "/dev/zfs has mode {:o}: {} cannot use its delegation until it is 0666 (OpenZFS's udev rule sets that; without udev: chmod 666 /dev/zfs)",
            m.permissions().mode() & 0o777,
            inp.user
        )),
        Err(e) => w.push(format!("/dev/zfs: {e} (is the zfs module loaded?)")),
    }
    if let Some(p) = closed_to(Path::new(&inp.exe), 0o005, None) {
        w.push(format!(
            "{} may not be able to run {} ({} is not open to other users); install zoffsite somewhere like /usr/local/bin",
            inp.user,
            inp.exe,
            p.display()
        ));
    }
    if let Some(ak) = &inp.authorized_keys {
        let dir = Path::new(ak).parent().unwrap_or(Path::new("/"));
        if let Some(p) = closed_to(dir, 0o001, uid) {
            w.push(format!(
                "sshd reads {ak} as {}, who cannot get through {}: make that directory traversable (chmod o+x) or choose another file",
                inp.user,
                p.display()
            ));
        }
    }
    w
}

/// The first of `path` and its ancestors that another user (or `uid`, for
/// what it owns) cannot get through: `need` on `path` itself (0o005 to run
/// a file, 0o001 to traverse), o+x on the directories above.
fn closed_to(path: &Path, need: u32, uid: Option<u32>) -> Option<PathBuf> {
    for p in path.ancestors() {
        let need = if p == path { need } else { 0o001 };
        match std::fs::metadata(p) {
            Ok(m) if Some(m.uid()) == uid && m.permissions().mode() & (need << 6) == need << 6 => {}
            Ok(m) if m.permissions().mode() & need == need => {}
            _ => return Some(p.to_owned()),
        }
    }
    None
}

/// The commands a step runs (none for the authorized_keys write).
pub fn commands(zfs: &Zfs, step: &Step) -> Vec<Cmd> {
    match step {
        Step::CreateUser { user, home } => vec![system::useradd_cmd(user.as_str(), home, boxinit::SHELL)],
        Step::SetShell { user, .. } => vec![system::set_shell_cmd(user.as_str(), boxinit::SHELL)],
        Step::CreateRoot { root } => vec![zfs.create_box_root_cmd(root)],
        Step::SetMountpointNone { root, .. } => vec![zfs.set_mountpoint_none_cmd(root)],
        Step::Allow { user, root, .. } => vec![zfs.allow_user_cmd(user.as_str(), &boxinit::PERMISSIONS, root)],
        Step::Unallow { user, root, extra } => {
            let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
            vec![zfs.unallow_user_cmd(user.as_str(), &extra, root)]
        }
        Step::SetLimit { root, prop, value, .. } => vec![zfs.set_limit_cmd(root, prop.name(), *value)],
        Step::WriteAuthorizedKeys { .. } => vec![],
    }
}

/// Carries out one step of the plan.
pub fn execute(zfs: &Zfs, inp: &Inputs, step: &Step) -> Result<(), BoxInitError> {
    match step {
        Step::CreateUser { .. } | Step::SetShell { .. } => {
            for c in commands(zfs, step) {
                system::run(&c)?;
            }
        }
        Step::WriteAuthorizedKeys { path, ssh_dir, content, .. } => write_keys(inp, path, ssh_dir.as_deref(), content)?,
        _ => {
            for c in commands(zfs, step) {
                zfs.run_admin(&c)?;
            }
        }
    }
    Ok(())
}

/// Writes the authorized_keys file atomically (`private::replace`: a new
/// file in the same directory, renamed over the old one, so a symlink
/// planted there is replaced, never followed), 0600 and owned by the user;
/// creates or fixes `~/.ssh` (0700, the user's) first. `~/.ssh` is opened
/// without following a symlink and changed through that descriptor only: a
/// directory swapped for a link after the check cannot turn root's
/// chown/chmod onto another path.
fn write_keys(inp: &Inputs, path: &str, ssh_dir: Option<&str>, content: &str) -> Result<(), BoxInitError> {
    let pw = system::getent("passwd", inp.user.as_str())?
        .and_then(|l| boxinit::parse_passwd(&l))
        .ok_or_else(|| BoxInitError::Refused(format!("user {} not found", inp.user)))?;
    let owner = private::Owner { uid: pw.uid, gid: pw.gid };
    let open = |dir: &Path| -> Result<std::os::fd::OwnedFd, BoxInitError> {
        match private::open_dir(dir) {
            Ok(Some(fd)) => Ok(fd),
            Ok(None) => Err(BoxInitError::Refused(format!("{} does not exist", dir.display()))),
            Err(private::Error::Untrusted(flaw)) => {
                Err(BoxInitError::Refused(format!("{} is {flaw}; refusing to write through it", dir.display())))
            }
            Err(private::Error::Io(e)) => Err(io(format!("cannot open {}", dir.display()))(e)),
        }
    };
    if let Some(dir) = ssh_dir {
        let d = Path::new(dir);
        match std::fs::create_dir(d) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(io(format!("cannot create {dir}"))(e)),
        }
        private::fix_dir(&open(d)?, owner, 0o700).map_err(io(format!("cannot chown/chmod {dir}")))?;
    }
    let target = Path::new(path);
    let refused = |what: &str| BoxInitError::Refused(format!("authorized_keys path {path} has no {what}"));
    let dir = target.parent().ok_or_else(|| refused("directory"))?;
    let name = target.file_name().and_then(|n| n.to_str()).ok_or_else(|| refused("file name"))?;
    private::replace(&open(dir)?, name, content.as_bytes(), 0o600, Some(owner))
        .map_err(io(format!("cannot write {path}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn closed_directories_are_found() {
        let d = tempfile::tempdir().unwrap();
        let inner = d.path().join("a/b");
        std::fs::create_dir_all(&inner).unwrap();
        let file = inner.join("f");
        std::fs::write(&file, "").unwrap();
        let set = |p: &Path, mode| std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
        set(d.path(), 0o755);
        set(&d.path().join("a"), 0o700);
        set(&inner, 0o755);
        set(&file, 0o755);
        let me = std::fs::metadata(d.path()).unwrap().uid();
        assert_eq!(closed_to(&file, 0o005, None), Some(d.path().join("a")));
        assert_eq!(closed_to(&file, 0o005, Some(me)), None, "the owner gets through its own 0700 directory");
        set(&d.path().join("a"), 0o711);
        assert_eq!(closed_to(&file, 0o005, None), None);
        set(&file, 0o700);
        assert_eq!(closed_to(&file, 0o005, None), Some(file.clone()));
    }
}
