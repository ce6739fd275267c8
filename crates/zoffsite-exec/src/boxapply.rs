//! `box apply`'s shell: reads the bundle, gathers the facts
//! [`zoffsite_core::provision::apply::plan`] decides from, and carries the
//! plan out.
//!
//! Invariants:
//! - **No symlink is followed below the root.** Every directory is opened
//!   component by component from the root's descriptor with `O_NOFOLLOW`
//!   ([`private::open_dir_at`]), and every file is written by
//!   [`private::replace_exact`] into its directory's descriptor: a fresh
//!   temporary renamed over the name, so a symlink at a target is replaced,
//!   never followed, and a crash leaves the old file or the new one.
//! - **The bundle is read once, bounded, and refused whole** when it is
//!   damaged or holds more than `box new` makes ([`bundle::parse`]), a
//!   symlink, not a regular file (a FIFO is opened non-blocking, so it
//!   cannot hang), owned by another user than the one running this, or
//!   open to group or others (it holds private keys: someone may have read
//!   them, and someone who could write it could have changed what root
//!   installs). Its SHA-256 is reported ([`ReadBundle`]).
//! - **sshd is never left broken for its next restart**: when `sshd -t`
//!   refuses the configuration with the new files, the previous ones are
//!   put back (or the new ones removed) before the error is returned.
//! - Commands run by argv through [`crate::process`], each within
//!   [`COMMAND_DEADLINE`].

use std::io::Read as _;
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;
use std::time::Duration;

use rustix::fs::{self as rfs, AtFlags, FileType, Mode};
use rustix::io::Errno;
use zoffsite_core::provision::apply::{
    self, Action, Command, Current, DirState, Facts, InitPlan, Options, Owner, Plan, SshdUnit,
};
use zoffsite_core::provision::bundle::{self, Bundle};

use crate::events::Events;
use crate::process::{self, Cmd};
use crate::zfs::Zfs;
use crate::{boxinit, private, system};

/// How long one command (`systemctl`, `sshd -t`, `sysctl`) may take.
pub const COMMAND_DEADLINE: Duration = Duration::from_secs(120);

#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("{what}: {source}")]
    Io { what: String, source: std::io::Error },
    #[error("{0}")]
    Refused(String),
    #[error("{path}: {source}")]
    Bundle { path: String, source: bundle::BundleError },
    #[error(transparent)]
    BoxInit(#[from] boxinit::BoxInitError),
    #[error("`{cmd}` failed: {stderr}")]
    Command { cmd: String, stderr: String },
    #[error(
        "`sshd -t` refuses the configuration with the new files, so they were taken back (sshd keeps its previous configuration): {stderr}"
    )]
    SshdRefused { stderr: String },
    #[error(
        "`sshd -t` refuses the configuration with the new files ({stderr}), and putting the previous ones back failed too ({restore}): fix {dropin} before sshd restarts"
    )]
    SshdBroken { stderr: String, restore: String, dropin: String },
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> ApplyError {
    let what = what.into();
    move |source| ApplyError::Io { what, source }
}

fn untrusted(path: &str, e: private::Error) -> ApplyError {
    match e {
        private::Error::Io(e) => io(format!("cannot open {path}"))(e),
        private::Error::Untrusted(flaw) => {
            ApplyError::Refused(format!("{path} is {flaw}; box apply writes through none"))
        }
    }
}

/// A bundle as read: parsed, with the SHA-256 of its bytes.
#[derive(Debug)]
pub struct ReadBundle {
    pub bundle: Bundle,
    /// [`bundle::sha256`] of the bytes read.
    pub sha256: String,
}

/// Reads the bundle at `path` and parses it, refusing a symlink, anything
/// but a regular file (a FIFO cannot hang it: it is opened non-blocking),
/// a file not owned by the user running this (root: someone else who owns
/// it could rewrite it until root reads it, whatever its mode) and one
/// group or others may read or write. The file is opened once, relative
/// to its directory's descriptor, and every check is on that descriptor.
pub fn read_bundle(path: &Path) -> Result<ReadBundle, ApplyError> {
    let shown = path.display().to_string();
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| ApplyError::Refused(format!("{shown} does not name a file")))?;
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let refused = |flaw: private::Flaw| {
        match flaw {
        private::Flaw::Symlink => ApplyError::Refused(format!(
            "{shown} is a symlink: box apply reads the bundle itself, not what a link points to; give the file's own path"
        )),
        flaw => ApplyError::Refused(format!("{shown} is {flaw}: give the bundle file that `zoffsite box new` wrote")),
    }
    };
    let dir = match private::open_dir(parent) {
        Ok(Some(d)) => d,
        Ok(None) => return Err(io(format!("cannot read the bundle {shown}"))(std::io::ErrorKind::NotFound.into())),
        Err(private::Error::Io(e)) => return Err(io(format!("cannot read the bundle {shown}"))(e)),
        Err(private::Error::Untrusted(f)) => {
            return Err(ApplyError::Refused(format!("{}: {f}", parent.display())));
        }
    };
    let f = match private::open_file_at(&dir, name) {
        Ok(Some(f)) => f,
        Ok(None) => return Err(io(format!("cannot read the bundle {shown}"))(std::io::ErrorKind::NotFound.into())),
        Err(private::Error::Io(e)) => return Err(io(format!("cannot read the bundle {shown}"))(e)),
        Err(private::Error::Untrusted(f)) => return Err(refused(f)),
    };
    let st = rfs::fstat(&f).map_err(|e| io(format!("cannot inspect {shown}"))(e.into()))?;
    if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile {
        return Err(refused(private::Flaw::NotRegularFile));
    }
    let me = private::me();
    if st.st_uid != me {
        let who = if me == 0 { "root".to_owned() } else { me.to_string() };
        return Err(ApplyError::Refused(format!(
            "{shown} is owned by uid {}, not by {who} that runs box apply: its owner could change what root installs until the moment it is read; \
             `chown {who} {shown}` if you are sure nobody else changed it (compare its SHA-256 with the one `zoffsite box new` printed)",
            st.st_uid
        )));
    }
    let mode = st.st_mode & 0o777;
    if mode & 0o066 != 0 {
        return Err(ApplyError::Refused(format!(
            "{shown} is open to other users (mode {mode:04o}): it holds private keys, and anyone who could write it could change what root installs; \
             `chmod 600 {shown}` if you are sure nobody else read or changed it (otherwise make the box again with `zoffsite box new`)"
        )));
    }
    let mut bytes = Vec::new();
    std::fs::File::from(f)
        .take(bundle::MAX_BYTES as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(io(format!("cannot read {shown}")))?;
    let sha256 = bundle::sha256(&bytes);
    let text = String::from_utf8(bytes).map_err(|_| ApplyError::Bundle {
        path: shown.clone(),
        source: bundle::BundleError::Syntax("not UTF-8".into()),
    })?;
    let bundle = bundle::parse(&text).map_err(|source| ApplyError::Bundle { path: shown, source })?;
    Ok(ReadBundle { bundle, sha256 })
}

/// The root's descriptor.
fn open_root(opts: &Options) -> Result<OwnedFd, ApplyError> {
    match private::open_dir(Path::new(&opts.root)) {
        Ok(Some(fd)) => Ok(fd),
        Ok(None) => Err(ApplyError::Refused(format!("--root {} does not exist", opts.root))),
        Err(e) => Err(untrusted(&opts.root, e)),
    }
}

/// The components of an absolute path.
fn components(path: &str) -> impl Iterator<Item = &str> {
    path.split('/').filter(|c| !c.is_empty())
}

/// Opens the directory `dir` (absolute, as on the machine) under the root,
/// one component at a time, following no symlink. `Ok(None)`: a component
/// does not exist.
fn open_under(root: &OwnedFd, dir: &str) -> Result<Option<OwnedFd>, private::Error> {
    let mut at = rfs::openat(
        root,
        ".",
        rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::DIRECTORY | rustix::fs::OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    for c in components(dir) {
        match private::open_dir_at(&at, c)? {
            Some(fd) => at = fd,
            None => return Ok(None),
        }
    }
    Ok(Some(at))
}

fn split(path: &str) -> (&str, &str) {
    path.rsplit_once('/').map_or(("/", path), |(d, n)| (if d.is_empty() { "/" } else { d }, n))
}

fn read_all(fd: OwnedFd, limit: usize) -> std::io::Result<Option<Vec<u8>>> {
    let mut b = Vec::new();
    std::fs::File::from(fd).take(limit as u64 + 1).read_to_end(&mut b)?;
    Ok((b.len() <= limit).then_some(b))
}

fn current(root: &OwnedFd, path: &str) -> Result<Current, ApplyError> {
    let (dir, name) = split(path);
    let dir = match open_under(root, dir) {
        Ok(Some(d)) => d,
        // A symlink or a file in the way is the plan's problem, reported
        // for the directory.
        Ok(None) | Err(private::Error::Untrusted(_)) => return Ok(Current::Absent),
        Err(e) => return Err(untrusted(dir, e)),
    };
    let st = match rfs::statat(&dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) => st,
        Err(Errno::NOENT) => return Ok(Current::Absent),
        Err(e) => return Err(io(format!("cannot inspect {path}"))(e.into())),
    };
    match FileType::from_raw_mode(st.st_mode) {
        FileType::Symlink => Ok(Current::Symlink),
        FileType::RegularFile => {
            let fd = private::open_file_at(&dir, name).map_err(|e| untrusted(path, e))?;
            let Some(fd) = fd else { return Ok(Current::Absent) };
            let st = rfs::fstat(&fd).map_err(|e| io(format!("cannot inspect {path}"))(e.into()))?;
            let bytes = read_all(fd, bundle::MAX_BYTES).map_err(io(format!("cannot read {path}")))?;
            Ok(Current::File { bytes, mode: st.st_mode & 0o7777, uid: st.st_uid, gid: st.st_gid })
        }
        _ => Ok(Current::Other),
    }
}

fn dir_state(root: &OwnedFd, dir: &str) -> Result<DirState, ApplyError> {
    let (parent, name) = split(dir);
    let parent = match open_under(root, parent) {
        Ok(Some(p)) => p,
        // Reported for the parent itself.
        Ok(None) | Err(private::Error::Untrusted(_)) => return Ok(DirState::Absent),
        Err(e) => return Err(untrusted(parent, e)),
    };
    match private::open_dir_at(&parent, name) {
        Ok(Some(_)) => Ok(DirState::Dir),
        Ok(None) => Ok(DirState::Absent),
        Err(private::Error::Untrusted(private::Flaw::Symlink)) => Ok(DirState::Symlink),
        Err(private::Error::Untrusted(_)) => Ok(DirState::NotDir),
        Err(e) => Err(untrusted(dir, e)),
    }
}

/// A group's gid: from the system's databases on the live root, from the
/// tree's own `/etc/group` under another root (an image's groups are not
/// this machine's).
fn group_gid(root: &OwnedFd, opts: &Options, name: &str) -> Result<Option<u32>, ApplyError> {
    let line = if opts.live_root() {
        system::getent("group", name).map_err(|e| ApplyError::Refused(format!("cannot look up group {name}: {e}")))?
    } else {
        let Some(etc) = open_under(root, "/etc").map_err(|e| untrusted("/etc", e))? else { return Ok(None) };
        let Some(fd) = private::open_file_at(&etc, "group").map_err(|e| untrusted("/etc/group", e))? else {
            return Ok(None);
        };
        let text = read_all(fd, 1 << 20).map_err(io("cannot read /etc/group"))?.unwrap_or_default();
        String::from_utf8_lossy(&text).lines().find(|l| l.split(':').next() == Some(name)).map(str::to_owned)
    };
    Ok(line.and_then(|l| l.split(':').nth(2).and_then(|g| g.parse().ok())))
}

fn installed(name: &str) -> bool {
    Path::new(&process::find_program(name)).is_absolute()
}

/// Which sshd unit the tree under the root has (Debian's `ssh.service`
/// first: Debian also aliases it as `sshd.service`).
fn sshd_unit(root: &OwnedFd) -> Option<SshdUnit> {
    for (unit, u) in [("ssh.service", SshdUnit::Ssh), ("sshd.service", SshdUnit::Sshd)] {
        for dir in ["/usr/lib/systemd/system", "/lib/systemd/system", "/etc/systemd/system"] {
            if let Ok(Some(d)) = open_under(root, dir) {
                if rfs::statat(&d, unit, AtFlags::empty()).is_ok() {
                    return Some(u);
                }
            }
        }
    }
    None
}

/// Everything the plan is made from.
pub fn gather(bundle: &Bundle, opts: &Options, zfs: &Zfs) -> Result<Facts, ApplyError> {
    let root = open_root(opts)?;
    let mut facts = Facts {
        files: Default::default(),
        dirs: Default::default(),
        groups: Default::default(),
        owner: Owner { uid: private::me(), gid: rustix::process::getegid().as_raw() },
        can_chown: system::is_root(),
        systemctl: installed("systemctl"),
        sysctl: installed("sysctl"),
        networkctl: installed("networkctl"),
        sshd: if installed("sshd") { Some(sshd_unit(&root).unwrap_or(SshdUnit::Sshd)) } else { None },
        init: None,
    };
    if facts.can_chown {
        facts.owner = Owner { uid: 0, gid: 0 };
    }
    let paths: Vec<String> =
        bundle.files.iter().map(|f| f.path.clone()).chain(bundle.secrets.iter().map(|s| s.path.to_string())).collect();
    for p in &paths {
        for d in apply::ancestors(p) {
            if let std::collections::btree_map::Entry::Vacant(e) = facts.dirs.entry(d) {
                let s = dir_state(&root, e.key())?;
                e.insert(s);
            }
        }
        facts.files.insert(p.clone(), current(&root, p)?);
    }
    if facts.can_chown {
        for g in bundle.secrets.iter().filter_map(|s| s.group.as_ref()) {
            let gid = group_gid(&root, opts, g.as_str())?;
            facts.groups.insert(g.to_string(), gid);
        }
    }
    if let (Some(init), true) = (&bundle.init, opts.live_root()) {
        facts.init = Some(boxinit::gather(zfs, &init.inputs())?);
    }
    Ok(facts)
}

/// `box init`'s local warnings, for the plan's (live root only).
pub fn init_warnings(bundle: &Bundle, facts: &Facts) -> Vec<String> {
    match (&bundle.init, &facts.init) {
        (Some(i), Some(f)) => boxinit::local_warnings(&i.inputs(), f.user.as_ref().map(|u| u.uid)),
        _ => Vec::new(),
    }
}

/// The process command for a planned one.
pub fn cmd(c: &Command) -> Cmd {
    let argv = c.argv();
    Cmd::new(process::find_program(&argv[0])).args(&argv[1..])
}

fn text_of<'a>(bundle: &'a Bundle, path: &str) -> Option<&'a [u8]> {
    bundle
        .files
        .iter()
        .find(|f| f.path == path)
        .map(|f| f.text.as_bytes())
        .or_else(|| bundle.secrets.iter().find(|s| s.path.as_str() == path).map(|s| s.text.expose().as_bytes()))
}

/// A directory box apply made or found moments ago is gone (something else
/// is changing the tree at the same time).
fn vanished(dir: &str) -> ApplyError {
    ApplyError::Refused(format!(
        "{dir} vanished while box apply was installing: make sure nothing else changes it, then run `zoffsite box apply` again"
    ))
}

fn write(root: &OwnedFd, path: &str, bytes: &[u8], mode: u32, owner: Option<private::Owner>) -> Result<(), ApplyError> {
    let (dir, name) = split(path);
    let d = open_under(root, dir).map_err(|e| untrusted(dir, e))?.ok_or_else(|| vanished(dir))?;
    private::replace_exact(&d, name, bytes, mode, owner).map_err(io(format!("cannot write {path}")))
}

fn mkdir(root: &OwnedFd, path: &str, mode: u32, owner: Option<private::Owner>) -> Result<(), ApplyError> {
    let (parent, name) = split(path);
    let p = open_under(root, parent).map_err(|e| untrusted(parent, e))?.ok_or_else(|| vanished(parent))?;
    match rfs::mkdirat(&p, name, Mode::from_raw_mode(mode)) {
        Ok(()) | Err(Errno::EXIST) => {}
        Err(e) => return Err(io(format!("cannot create {path}"))(e.into())),
    }
    let d = private::open_dir_at(&p, name).map_err(|e| untrusted(path, e))?.ok_or_else(|| vanished(path))?;
    let fixed = match owner {
        Some(o) => private::fix_dir(&d, o, mode),
        None => rfs::fchmod(d.as_fd(), Mode::from_raw_mode(mode)).map_err(Into::into),
    };
    fixed.map_err(io(format!("cannot set the mode of {path}")))
}

fn chown(facts: &Facts, o: Owner) -> Option<private::Owner> {
    facts.can_chown.then_some(private::Owner { uid: o.uid, gid: o.gid })
}

/// Puts back what sshd's files were before this run (see the module docs).
fn restore_sshd(root: &OwnedFd, plan: &Plan, facts: &Facts) -> Result<(), ApplyError> {
    for f in plan.sshd_files() {
        match facts.files.get(&f.path) {
            Some(Current::File { bytes: Some(b), mode, uid, gid }) => {
                write(root, &f.path, b, *mode, chown(facts, Owner { uid: *uid, gid: *gid }))?;
            }
            _ => {
                let (dir, name) = split(&f.path);
                if let Some(d) = open_under(root, dir).map_err(|e| untrusted(dir, e))? {
                    match rfs::unlinkat(&d, name, AtFlags::empty()) {
                        Ok(()) | Err(Errno::NOENT) => {}
                        Err(e) => return Err(io(format!("cannot remove {}", f.path))(e.into())),
                    }
                }
            }
        }
    }
    Ok(())
}

/// Carries out `plan` (which must have no problems): directories, files,
/// `box init`'s steps, the commands, each reported through `events` as it
/// is done. Stops at the first failure.
pub fn execute(
    bundle: &Bundle,
    opts: &Options,
    plan: &Plan,
    facts: &Facts,
    zfs: &Zfs,
    events: &mut dyn Events,
) -> Result<(), ApplyError> {
    if !plan.problems.is_empty() {
        return Err(ApplyError::Refused("the plan has problems; nothing was changed".into()));
    }
    let root = open_root(opts)?;
    for d in &plan.mkdirs {
        mkdir(&root, &d.path, d.mode, chown(facts, facts.owner))?;
        events.line(&format!("created {} ({:04o})", d.path, d.mode));
    }
    for f in plan.files.iter().filter(|f| f.action.changes()) {
        let bytes =
            text_of(bundle, &f.path).ok_or_else(|| ApplyError::Refused(format!("{} is not in the bundle", f.path)))?;
        write(&root, &f.path, bytes, f.mode, chown(facts, f.owner))?;
        let verb = if f.action == Action::Create { "created" } else { "replaced" };
        events.line(&format!("{verb} {} ({:04o})", f.path, f.mode));
    }
    if let (InitPlan::Planned(ip), Some(init)) = (&plan.init, &bundle.init) {
        let inputs = init.inputs();
        for step in &ip.steps {
            boxinit::execute(zfs, &inputs, step)?;
            events.line(&format!("done: {step}"));
        }
    }
    for c in &plan.commands {
        let command = cmd(c);
        let out = process::run_by(&command, 64 * 1024, Some(COMMAND_DEADLINE))
            .map_err(|e| ApplyError::Command { cmd: command.to_string(), stderr: e.to_string() });
        let failed = match out {
            Ok(o) if o.success() => None,
            Ok(o) => Some(o.stderr.trim().to_owned()),
            Err(ApplyError::Command { stderr, .. }) => Some(stderr),
            Err(e) => return Err(e),
        };
        if let Some(stderr) = failed {
            if *c == Command::SshdTest && plan.sshd_files().next().is_some() {
                return Err(match restore_sshd(&root, plan, facts) {
                    Ok(()) => ApplyError::SshdRefused { stderr },
                    Err(e) => ApplyError::SshdBroken {
                        stderr,
                        restore: e.to_string(),
                        dropin: zoffsite_core::provision::sshd::DROPIN_PATH.to_owned(),
                    },
                });
            }
            return Err(ApplyError::Command { cmd: command.to_string(), stderr });
        }
        events.line(&format!("ran: {command}"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_split_into_directory_and_name() {
        assert_eq!(split("/etc/ssh/x.conf"), ("/etc/ssh", "x.conf"));
        assert_eq!(split("/x"), ("/", "x"));
        assert_eq!(components("/etc/ssh").collect::<Vec<_>>(), ["etc", "ssh"]);
    }

    fn bundle_file(dir: &Path) -> std::path::PathBuf {
        use std::os::unix::fs::PermissionsExt as _;
        use zoffsite_core::provision::bundle::{for_source, render, Secret, SourceSecrets};
        let i = zoffsite_core::provision::Inputs::new(
            zoffsite_core::provision::values::BoxName::new("friend").unwrap(),
            zoffsite_core::provision::values::Endpoint::parse("source.example.org:51821").unwrap(),
            zoffsite_core::provision::values::BoxRoot::new(zoffsite_core::names::Dataset::new("offsite/home").unwrap())
                .unwrap(),
            test_keys(),
        );
        let path = dir.join("source.bundle");
        std::fs::write(&path, render(&for_source(&i, &SourceSecrets { wg: Secret::new("k\n") }))).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        path
    }

    fn test_keys() -> zoffsite_core::provision::Keys {
        use zoffsite_core::boxinit::PublicKey;
        use zoffsite_core::provision::values::{HostKey, WgKey};
        let ssh = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIH0nK8sOTxp3TwKquMXrnsesaBBFG1ALsl9V95Jhbzm4 root@home";
        zoffsite_core::provision::Keys {
            source_wg: WgKey::new("dRxa9htU+RVUuCymxLHBa675zq3mKpdXLAGKijKxuTo=").unwrap(),
            box_wg: WgKey::new("Hz64cXtZeK1304qYfOILdM5dNHCFy3q7C2DJM+rRU04=").unwrap(),
            box_host: HostKey::new(PublicKey::parse(ssh).unwrap()).unwrap(),
            source_ssh: PublicKey::parse(ssh).unwrap(),
        }
    }

    #[test]
    fn the_bundle_is_read_with_its_sha256() {
        let d = tempfile::tempdir().unwrap();
        let path = bundle_file(d.path());
        let read = read_bundle(&path).unwrap();
        assert_eq!(read.bundle.name.as_str(), "friend");
        assert_eq!(read.sha256, bundle::sha256(&std::fs::read(&path).unwrap()));
    }

    #[test]
    fn a_symlinked_fifo_or_foreign_bundle_is_refused() {
        let d = tempfile::tempdir().unwrap();
        let path = bundle_file(d.path());
        let link = d.path().join("link.bundle");
        std::os::unix::fs::symlink(&path, &link).unwrap();
        let err = read_bundle(&link).unwrap_err().to_string();
        assert!(err.contains("is a symlink"), "{err}");

        let fifo = d.path().join("fifo.bundle");
        rustix::fs::mkfifoat(rustix::fs::CWD, &fifo, Mode::from_raw_mode(0o600)).unwrap();
        // Returns (does not wait for a writer).
        let err = read_bundle(&fifo).unwrap_err().to_string();
        assert!(err.contains("not a regular file"), "{err}");

        // Owned by someone else: as root, give it away; otherwise a file root
        // owns is someone else's.
        let foreign = if private::me() == 0 {
            rustix::fs::chown(&path, Some(rustix::process::Uid::from_raw(65534)), None).unwrap();
            path.clone()
        } else {
            std::path::PathBuf::from("/etc/passwd")
        };
        let err = read_bundle(&foreign).unwrap_err().to_string();
        assert!(err.contains("is owned by uid") && err.contains("`chown "), "{err}");
        if private::me() == 0 {
            assert!(err.contains(&format!("`chown root {}`", foreign.display())), "{err}");
        }
    }

    #[test]
    fn a_vanished_directory_says_to_run_box_apply_again() {
        let d = tempfile::tempdir().unwrap();
        let root = private::open_dir(d.path()).unwrap().unwrap();
        let err = write(&root, "/gone/x", b"x", 0o644, None).unwrap_err().to_string();
        assert!(err.contains("/gone vanished") && err.contains("run `zoffsite box apply` again"), "{err}");
    }

    #[test]
    fn nothing_below_the_root_is_followed() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("real/ssh")).unwrap();
        std::os::unix::fs::symlink(d.path().join("real"), d.path().join("etc")).unwrap();
        let root = private::open_dir(d.path()).unwrap().unwrap();
        assert!(matches!(open_under(&root, "/etc/ssh"), Err(private::Error::Untrusted(private::Flaw::Symlink))));
        assert_eq!(dir_state(&root, "/etc").unwrap(), DirState::Symlink);
        assert_eq!(dir_state(&root, "/etc/ssh").unwrap(), DirState::Absent, "reported for /etc");
        assert!(open_under(&root, "/real/ssh").unwrap().is_some());
        assert!(open_under(&root, "/real/none").unwrap().is_none());
    }

    #[test]
    fn a_refused_sshd_configuration_is_taken_back() {
        use std::os::unix::fs::PermissionsExt as _;
        use zoffsite_core::provision::bundle::Side;
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("etc/ssh/sshd_config.d")).unwrap();
        let dropin = d.path().join("etc/ssh/sshd_config.d/zoffsite.conf");
        std::fs::write(&dropin, "old\n").unwrap();
        std::fs::write(d.path().join("etc/ssh/key"), "new key\n").unwrap();
        let root = private::open_dir(d.path()).unwrap().unwrap();
        let me = Owner { uid: private::me(), gid: rustix::process::getegid().as_raw() };
        let file =
            |path: &str, action| apply::FilePlan { path: path.into(), mode: 0o600, owner: me, secret: false, action };
        let replace = Action::Replace { content: true, mode_was: None, owner_was: None, symlink: false };
        let plan = Plan {
            side: Side::Box,
            mkdirs: vec![],
            files: vec![
                file("/etc/ssh/sshd_config.d/zoffsite.conf", replace),
                file("/etc/ssh/key", Action::Create),
                file("/etc/other", Action::Create),
            ],
            init: InitPlan::None,
            commands: vec![],
            problems: vec![],
            warnings: vec![],
        };
        let mut facts = gather(
            &Bundle {
                side: Side::Box,
                name: zoffsite_core::provision::values::BoxName::new("x").unwrap(),
                files: vec![],
                secrets: vec![],
                enable: vec![],
                init: None,
            },
            &Options::new(d.path().to_str().unwrap(), true),
            &Zfs::new(),
        )
        .unwrap();
        facts.files.insert(
            "/etc/ssh/sshd_config.d/zoffsite.conf".into(),
            Current::File { bytes: Some(b"old\n".to_vec()), mode: 0o640, uid: me.uid, gid: me.gid },
        );
        facts.files.insert("/etc/ssh/key".into(), Current::Absent);
        std::fs::write(&dropin, "new\n").unwrap();
        restore_sshd(&root, &plan, &facts).unwrap();
        assert_eq!(std::fs::read_to_string(&dropin).unwrap(), "old\n");
        assert_eq!(std::fs::metadata(&dropin).unwrap().permissions().mode() & 0o7777, 0o640);
        assert!(!d.path().join("etc/ssh/key").exists(), "a file that was not there is removed");
    }
}
