//! `box new`'s shell, on the source: what it reads ([`gather`]: the
//! config, the configured datasets' mountpoints, the output directory, an
//! existing `--identity`) and what it does ([`execute`]: the keys, the two
//! bundles, the pinned `known_hosts`, the config's new `[[target]]`). The
//! files are core's ([`zoffsite_core::provision`]), the bundle format
//! [`bundle`]'s, the config edit [`target`]'s.
//!
//! # Invariants
//!
//! - **Nothing is made before everything was checked**, and nothing is
//!   written outside the output directory but the config, last: a
//!   failure leaves the config as it was, and the directory (0700) says
//!   what was made.
//! - **An existing box's keys are never overwritten**: the output
//!   directory must be missing or empty, checked when planning and again,
//!   through its descriptor, before the first key is made.
//! - **Keys are made by the tools the source has anyway**: `wg genkey` /
//!   `wg pubkey` (the private key on stdin, never in an argv, where any
//!   user can read it in `/proc`) and `ssh-keygen -t ed25519`, writing
//!   only into the 0700 directory; the box's host key file is removed once
//!   read into the bundle. No key crate: these tools are what WireGuard and
//!   OpenSSH use themselves, and what `doctor` and the tests check against.
//! - **Secrets stay [`Secret`]s** from the moment they are read: no
//!   `Debug`, log or `-n` line shows one.
//! - **The box's bundle holds no secret of the source**: [`bundle::for_box`]
//!   never sees one, and the bytes about to be written are checked again
//!   here (the source's WireGuard key and SSH private key, which box new
//!   made), so a future change cannot ship them to the box unnoticed.
//! - **Every directory above the output directory is root's or ours and
//!   writable by no one else** (root's with the sticky bit may be):
//!   `ssh-keygen`, and later `ssh`, open the files there by path, so no
//!   other user may be able to swap the directory for a symlink
//!   ([`check_ancestors`]).
//! - The config is replaced atomically ([`private::replace_exact`]) with
//!   exactly its mode and its owner, and only if it still holds exactly the text the plan
//!   was made from.

use std::os::fd::OwnedFd;
use std::os::unix::fs::{DirBuilderExt as _, MetadataExt as _};
use std::path::{Path, PathBuf};
use std::time::Duration;

use rustix::fs::{self as rfs, AtFlags, FileType, Mode};
use rustix::io::Errno;
use zoffsite_core::boxinit::PublicKey;
use zoffsite_core::names::Dataset;
use zoffsite_core::provision::bundle::{self, BoxSecrets, Bundle, Secret, SourceSecrets};
use zoffsite_core::provision::target::{self, Appended};
use zoffsite_core::provision::values::{AbsPath, BoxRoot, HostKey, WgKey};
use zoffsite_core::provision::{sshd, Inputs, Keys};

use crate::events::Events;
use crate::private::{self, Rule};
use crate::process::{self, Cmd, ExecError};
use crate::zfs::{Zfs, ZfsError};

/// Where `box new NAME` writes by default: `DEFAULT_DIR/NAME`.
pub const DEFAULT_DIR: &str = "/etc/zoffsite/boxes";
/// The source's SSH key for the box, in the output directory (and `.pub`).
pub const IDENTITY: &str = "id_ed25519";
/// The pinned host key line, in the output directory.
pub const KNOWN_HOSTS: &str = "known_hosts";
/// The box's host key while `ssh-keygen` makes it (removed once read).
const HOST_KEY_TMP: &str = ".box_host_ed25519_key";
/// Largest config file read, and largest key file.
pub const MAX_FILE: usize = 1 << 20;
/// How long one `wg` or `ssh-keygen` may take.
const TOOL_DEADLINE: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum BoxNewError {
    /// The command line, the config or the output directory must change
    /// (exit 2): nothing was made.
    #[error("{0}")]
    Usage(String),
    #[error(transparent)]
    Zfs(#[from] ZfsError),
    #[error("{what}: {source}")]
    Io { what: String, source: std::io::Error },
    /// `wg` or `ssh-keygen` could not be run.
    #[error("{0} (box new runs wg and ssh-keygen: are wireguard-tools and openssh-client installed?)")]
    Tool(#[from] ExecError),
    #[error("{0}")]
    Failed(String),
}

fn usage(msg: impl Into<String>) -> BoxNewError {
    BoxNewError::Usage(msg.into())
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> BoxNewError {
    let what = what.into();
    move |source| BoxNewError::Io { what, source }
}

fn private_err(what: impl Into<String>) -> impl FnOnce(private::Error) -> BoxNewError {
    let what = what.into();
    move |e| match e {
        private::Error::Io(source) => BoxNewError::Io { what, source },
        private::Error::Untrusted(flaw) => usage(format!("{what}: it is {flaw}; refusing to use it")),
    }
}

/// This machine's host name (`/proc/sys/kernel/hostname`).
pub fn hostname() -> Option<String> {
    let text = std::fs::read_to_string("/proc/sys/kernel/hostname").ok()?;
    Some(text.trim().to_owned()).filter(|h| !h.is_empty())
}

/// The default `--root`: `offsite/HOST`, HOST the source's host name up to
/// its first dot (the box's pool is `offsite` in every guide; one dataset
/// per source, so two sources can share a box). `None` when the name
/// cannot be a dataset component.
pub fn default_root(hostname: &str) -> Option<BoxRoot> {
    let short = hostname.split('.').next()?;
    let ok = !short.is_empty() && short.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_".contains(&b));
    ok.then(|| Dataset::new(format!("offsite/{short}")).ok().and_then(|d| BoxRoot::new(d).ok())).flatten()
}

/// Valid stand-ins for the four public keys, for the plan: before
/// [`execute`] makes the keys only the files' paths are known, and only
/// they are shown. Never rendered into anything written.
pub fn placeholder_keys() -> Keys {
    let wg = WgKey::new("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAE=")
        .unwrap_or_else(|e| unreachable!("a constant key is valid: {e}"));
    let ssh = PublicKey::parse("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA")
        .unwrap_or_else(|e| unreachable!("a constant key is valid: {e}"));
    let host = HostKey::new(ssh.clone()).unwrap_or_else(|e| unreachable!("a constant key is valid: {e}"));
    Keys { source_wg: wg.clone(), box_wg: wg, box_host: host, source_ssh: ssh }
}

/// The source's SSH key for the box.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Identity {
    /// Made by box new: `DIR/id_ed25519`.
    New,
    /// `--identity FILE`: an existing key, whose `FILE.pub` was read.
    Existing { public: PublicKey },
}

/// What box new will do, before anything is made.
#[derive(Debug)]
pub struct Plan {
    /// Everything the files are rendered from. Its keys are
    /// [`placeholder_keys`] until [`execute`] makes the real ones.
    pub inputs: Inputs,
    /// The output directory (absolute).
    pub dir: PathBuf,
    /// The source's config file (absolute).
    pub config_path: PathBuf,
    /// The config with the new target.
    pub config: Appended,
    pub identity: Identity,
    /// The key the new target uses (`DIR/id_ed25519` or `--identity`).
    pub identity_file: PathBuf,
    pub warnings: Vec<String>,
    config_before: ConfigFile,
}

impl Plan {
    /// The files box new writes (all in the output directory).
    pub fn written(&self) -> Vec<PathBuf> {
        let mut names = vec![bundle::SOURCE_FILE, bundle::BOX_FILE, KNOWN_HOSTS];
        if self.identity == Identity::New {
            names.extend([IDENTITY, "id_ed25519.pub"]);
        }
        names.into_iter().map(|n| self.dir.join(n)).collect()
    }

    /// The two bundles as they will be, but for the secrets' text (empty):
    /// what each installs where, for showing.
    pub fn preview(&self) -> (Bundle, Bundle) {
        let empty = || Secret::new(String::new());
        (
            bundle::for_source(&self.inputs, &SourceSecrets { wg: empty() }),
            bundle::for_box(&self.inputs, &BoxSecrets { wg: empty(), host_key: empty() }),
        )
    }
}

/// The config file as read: its text, and what it is.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ConfigFile {
    text: String,
    mode: u32,
    uid: u32,
    gid: u32,
}

fn split(path: &Path) -> Result<(&Path, &str), BoxNewError> {
    let parent = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("/"));
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| usage(format!("{} does not name a file", path.display())))?;
    Ok((parent, name))
}

fn open_parent(path: &Path) -> Result<(OwnedFd, &str), BoxNewError> {
    let (parent, name) = split(path)?;
    let dir = private::open_dir(parent)
        .map_err(private_err(parent.display().to_string()))?
        .ok_or_else(|| usage(format!("{} does not exist", parent.display())))?;
    Ok((dir, name))
}

/// Reads the config without following a symlink; `None` when missing.
fn read_config(path: &Path) -> Result<Option<ConfigFile>, BoxNewError> {
    let what = || format!("config file {}", path.display());
    let (dir, name) = match open_parent(path) {
        Ok(x) => x,
        Err(BoxNewError::Usage(_)) if path.parent().is_some_and(|p| !p.exists()) => return Ok(None),
        Err(e) => return Err(e),
    };
    let Some(fd) = private::open_file_at(&dir, name).map_err(private_err(what()))? else { return Ok(None) };
    let st = rfs::fstat(&fd).map_err(|e| io(what())(e.into()))?;
    let text = private::read_bounded(fd, MAX_FILE)
        .map_err(io(what()))?
        .ok_or_else(|| usage(format!("{} is larger than {MAX_FILE} bytes", what())))?;
    Ok(Some(ConfigFile { text, mode: st.st_mode & 0o7777, uid: st.st_uid, gid: st.st_gid }))
}

/// The names in an open directory, `.` and `..` left out.
fn entries(dir: &OwnedFd) -> Result<Vec<String>, Errno> {
    let mut names = Vec::new();
    for e in rfs::Dir::read_from(dir)? {
        let name = e?.file_name().to_string_lossy().into_owned();
        if name != "." && name != ".." {
            names.push(name);
        }
    }
    names.sort();
    Ok(names)
}

/// Refuses an output directory that is not ours and closed, or holds
/// anything.
fn check_dir(path: &Path, fd: &OwnedFd) -> Result<(), BoxNewError> {
    let what = || format!("output directory {}", path.display());
    private::check(fd, FileType::Directory, Rule::NotWritableByOthers).map_err(private_err(what()))?;
    let names = entries(fd).map_err(|e| io(what())(e.into()))?;
    let ours = [bundle::BOX_FILE, bundle::SOURCE_FILE, KNOWN_HOSTS, IDENTITY, "id_ed25519.pub", HOST_KEY_TMP];
    if names.iter().any(|n| ours.contains(&n.as_str()) || n.ends_with(".bundle") || n.ends_with(".key")) {
        return Err(usage(format!(
            "{} already holds a box's keys or bundles ({}): box new refuses to overwrite an existing box's keys; choose another --dir (or box name), or move that directory away if that box is gone",
            what(),
            names.join(", ")
        )));
    }
    if !names.is_empty() {
        return Err(usage(format!(
            "{} is not empty ({}): box new writes only into a new or empty directory; choose another --dir",
            what(),
            names.join(", ")
        )));
    }
    Ok(())
}

/// Everything box new needs to know before it makes anything, and the
/// checks that refuse it: the config (which must exist: it names the
/// datasets), the target's name free in it, the datasets' mountpoints, the
/// output directory missing or empty, the `--identity` key readable.
/// `inputs.backup_write_paths` is filled here.
pub fn gather(
    zfs: &Zfs,
    mut inputs: Inputs,
    dir: &Path,
    config_path: &Path,
    identity: Option<&Path>,
) -> Result<Plan, BoxNewError> {
    let config_before = read_config(config_path)?.ok_or_else(|| {
        usage(format!(
            "config file {} does not exist: box new adds the box's [[target]] to it and reads from it which datasets are backed up; write it first with at least its [source] table (datasets = [...]; examples/zoffsite.toml shows every key), or name another with -c FILE",
            config_path.display()
        ))
    })?;
    let (identity, identity_file) = match identity {
        None => (Identity::New, dir.join(IDENTITY)),
        Some(p) => {
            let mut public_path = p.as_os_str().to_owned();
            public_path.push(".pub");
            let public_path = PathBuf::from(public_path);
            if !p.is_file() {
                return Err(usage(format!("--identity {}: no such key file", p.display())));
            }
            let text = crate::boxinit::read_small(&public_path).map_err(|e| {
                usage(format!("--identity {}: cannot read {}: {e}", p.display(), public_path.display()))
            })?;
            let public = PublicKey::parse(&text).map_err(|e| usage(format!("{}: {e}", public_path.display())))?;
            (Identity::Existing { public }, p.to_owned())
        }
    };
    let utf8 = |p: &Path, what: &str| {
        p.to_str().map(str::to_owned).ok_or_else(|| usage(format!("{what} {} is not UTF-8", p.display())))
    };
    let config = target::append(
        &config_before.text,
        &inputs,
        &utf8(&identity_file, "the identity file")?,
        &utf8(&dir.join(KNOWN_HOSTS), "the output directory")?,
    )
    .map_err(|e| usage(format!("config file {}: {e}", config_path.display())))?;

    let mut warnings = Vec::new();
    for ds in &config.config.source.datasets {
        let mountpoint = zfs.get_value(ds.as_str(), "mountpoint")?;
        if !mountpoint.starts_with('/') {
            warnings.push(format!(
                "{ds} has mountpoint={mountpoint}: backup cannot keep its properties manifest at the top of it (restore then cannot set its properties again)"
            ));
            continue;
        }
        match AbsPath::new(&mountpoint) {
            Ok(p) if !inputs.backup_write_paths.contains(&p) => inputs.backup_write_paths.push(p),
            Ok(_) => {}
            Err(_) => warnings.push(format!(
                "{ds}'s mountpoint {mountpoint:?} cannot be named in the backup unit's ReadWritePaths= (only letters, digits and _.+- between slashes): add it by hand with `systemctl edit zoffsite-backup.service` after box apply, or backup cannot write its properties manifest there"
            )),
        }
    }

    check_ancestors(dir)?;
    if let Some(fd) = private::open_dir(dir).map_err(private_err(format!("output directory {}", dir.display())))? {
        check_dir(dir, &fd)?;
    }
    Ok(Plan {
        inputs,
        dir: dir.to_owned(),
        config_path: config_path.to_owned(),
        config,
        identity,
        identity_file,
        warnings,
        config_before,
    })
}

/// The public keys box new made, and the files it wrote.
#[derive(Debug)]
pub struct Made {
    pub keys: Keys,
    pub written: Vec<PathBuf>,
    /// [`bundle::sha256`] of the source's and the box's bundle as written:
    /// `box apply` prints the one of what it read, to compare.
    pub source_sha256: String,
    pub box_sha256: String,
}

/// Refuses an output directory below a directory someone else could
/// change: one owned by another user than root or us, or writable by group
/// or others (but root's with the sticky bit, like `/tmp`, where no one
/// can rename what is ours). Each existing directory above `dir` is
/// checked, and, when one of them is reached through a symlink, each above
/// where it leads too; missing ones are made by us, 0700.
///
/// Why refuse rather than work around it: `ssh-keygen -f DIR/NAME` writes
/// the keys by path, and so do `ssh` and `backup` later read
/// `DIR/id_ed25519` and `DIR/known_hosts` (the config names them by
/// path). Whoever can rename an entry above DIR can swap DIR for a symlink
/// between our checks and those opens: they would receive the source's
/// SSH key and the box's host key now, or feed ssh another known_hosts
/// later. Writing keys into a private temporary directory would protect
/// only the first; a trusted chain of directories protects both.
fn check_ancestors(dir: &Path) -> Result<(), BoxNewError> {
    let lexical: Vec<PathBuf> = dir.ancestors().skip(1).map(Path::to_owned).collect();
    let mut all = lexical.clone();
    if let Some(c) = lexical.iter().find(|p| p.exists()).and_then(|p| std::fs::canonicalize(p).ok()) {
        all.extend(c.ancestors().map(Path::to_owned));
    }
    let me = private::me();
    for p in all {
        // Missing: box new makes it (0700). Unreadable: making the
        // directory fails later, with its own message.
        let Ok(m) = std::fs::metadata(&p) else { continue };
        let mode = m.mode() & 0o7777;
        let flaw = if m.uid() != 0 && m.uid() != me {
            format!("owned by another user (uid {})", m.uid())
        } else if mode & 0o022 != 0 && !(m.uid() == 0 && mode & 0o1000 != 0) {
            format!("writable by group or others without being root's with the sticky bit (mode {mode:04o})")
        } else {
            continue;
        };
        return Err(usage(format!(
            "output directory {}: {} is {flaw}: another user could swap the output directory for a symlink while the keys are written into it by path (and ssh reads them there later); choose a --dir whose every parent directory is root's or yours and writable by no one else (the default, {DEFAULT_DIR}/NAME, is), or `chmod go-w` {}",
            dir.display(),
            p.display(),
            p.display()
        )));
    }
    Ok(())
}

/// Creates the output directory (0700, missing parents too) or opens the
/// empty one there, through descriptors, and checks it again.
fn make_dir(path: &Path) -> Result<OwnedFd, BoxNewError> {
    check_ancestors(path)?;
    let (parent, name) = split(path)?;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(parent)
        .map_err(io(format!("cannot create {}", parent.display())))?;
    let (pfd, _) = open_parent(path)?;
    match rfs::mkdirat(&pfd, name, Mode::from_raw_mode(0o700)) {
        Ok(()) | Err(Errno::EXIST) => {}
        Err(e) => return Err(io(format!("cannot create {}", path.display()))(e.into())),
    }
    let fd = private::open_dir_at(&pfd, name)
        .map_err(private_err(format!("output directory {}", path.display())))?
        .ok_or_else(|| BoxNewError::Failed(format!("{} vanished after it was made", path.display())))?;
    check_dir(path, &fd)?;
    rfs::fchmod(&fd, Mode::from_raw_mode(0o700))
        .map_err(|e| io(format!("cannot chmod {}", path.display()))(e.into()))?;
    Ok(fd)
}

fn tool_failed(cmd: &Cmd, out: &process::Output) -> BoxNewError {
    BoxNewError::Failed(format!("`{cmd}` failed: {}", out.stderr.trim()))
}

/// A WireGuard key pair: `wg genkey`, then `wg pubkey` with the private
/// key on stdin.
fn wg_pair() -> Result<(Secret, WgKey), BoxNewError> {
    let wg = process::find_program("wg");
    let genkey = Cmd::new(&wg).arg("genkey");
    let out = process::run_by(&genkey, 256, Some(TOOL_DEADLINE))?;
    if !out.success() {
        return Err(tool_failed(&genkey, &out));
    }
    let private = Secret::new(
        String::from_utf8(out.stdout).map_err(|_| BoxNewError::Failed("`wg genkey` printed no text".into()))?,
    );
    let pubkey = Cmd::new(&wg).arg("pubkey");
    let out = process::run_with_input(&pubkey, private.expose().as_bytes(), 256, Some(TOOL_DEADLINE))?;
    if !out.success() {
        return Err(tool_failed(&pubkey, &out));
    }
    let public = String::from_utf8_lossy(&out.stdout);
    let public = WgKey::new(public.trim_end()).map_err(|e| BoxNewError::Failed(format!("`wg pubkey`: {e}")))?;
    Ok((private, public))
}

/// `ssh-keygen -t ed25519` into `DIR/NAME` (and `NAME.pub`), no passphrase.
fn ssh_keygen(dir: &Path, name: &str, comment: &str) -> Result<(), BoxNewError> {
    let cmd = Cmd::new(process::find_program("ssh-keygen"))
        .args(["-q", "-t", "ed25519", "-N", "", "-C", comment, "-f"])
        .arg(dir.join(name));
    let out = process::run_by(&cmd, 64 * 1024, Some(TOOL_DEADLINE))?;
    if out.success() {
        Ok(())
    } else {
        Err(tool_failed(&cmd, &out))
    }
}

fn read_in(dir: &OwnedFd, dir_path: &Path, name: &str) -> Result<String, BoxNewError> {
    let what = || dir_path.join(name).display().to_string();
    let fd = private::open_file_at(dir, name)
        .map_err(private_err(what()))?
        .ok_or_else(|| BoxNewError::Failed(format!("{} was not made", what())))?;
    private::read_bounded(fd, MAX_FILE)
        .map_err(io(what()))?
        .ok_or_else(|| BoxNewError::Failed(format!("{} is larger than {MAX_FILE} bytes", what())))
}

fn public_in(dir: &OwnedFd, dir_path: &Path, name: &str) -> Result<PublicKey, BoxNewError> {
    let text = read_in(dir, dir_path, name)?;
    PublicKey::parse(&text).map_err(|e| BoxNewError::Failed(format!("{}: {e}", dir_path.join(name).display())))
}

/// The box's SSH host key: made in the directory, read, and removed (its
/// only copy is then the box's bundle).
fn host_key(dir: &OwnedFd, dir_path: &Path, comment: &str) -> Result<(Secret, HostKey), BoxNewError> {
    let public_name = format!("{HOST_KEY_TMP}.pub");
    let made = ssh_keygen(dir_path, HOST_KEY_TMP, comment);
    let read = made.and_then(|()| {
        let private = Secret::new(read_in(dir, dir_path, HOST_KEY_TMP)?);
        let public = public_in(dir, dir_path, &public_name)?;
        Ok((private, public))
    });
    for n in [HOST_KEY_TMP, public_name.as_str()] {
        match rfs::unlinkat(dir, n, AtFlags::empty()) {
            Ok(()) | Err(Errno::NOENT) => {}
            Err(e) => return Err(io(format!("cannot remove {}", dir_path.join(n).display()))(e.into())),
        }
    }
    let (private, public) = read?;
    let public = HostKey::new(public).map_err(|e| BoxNewError::Failed(e.to_string()))?;
    Ok((private, public))
}

/// Whether any of `secrets` appears in `text`: whole (trimmed), or any
/// line of an OpenSSH private key's body but its first, which is the same
/// in every unencrypted ed25519 key (the format's header); every later
/// line holds bytes of that key alone.
pub fn holds_any(text: &str, secrets: &[&str]) -> bool {
    secrets.iter().any(|s| {
        let s = s.trim();
        (!s.is_empty() && text.contains(s))
            || s.lines().filter(|l| !l.starts_with("-----")).skip(1).filter(|l| l.len() >= 16).any(|l| text.contains(l))
    })
}

/// Makes the keys, writes the bundles and `known_hosts` into the output
/// directory, and then the config (see the module docs). A
/// [`BoxNewError::Usage`] means nothing was made (the directory is at most
/// made, empty); after any other error the directory holds what was made
/// so far and the config is unchanged, unless the error says the files
/// are complete (then only the config's change is left to do, by hand).
pub fn execute(plan: &Plan, events: &mut dyn Events) -> Result<Made, BoxNewError> {
    let unchanged = || -> Result<(), BoxNewError> {
        if read_config(&plan.config_path)?.as_ref() != Some(&plan.config_before) {
            return Err(usage(format!(
                "config file {} changed while box new ran; run box new again",
                plan.config_path.display()
            )));
        }
        Ok(())
    };
    unchanged()?;
    let dir_path = &plan.dir;
    let dir = make_dir(dir_path)?;
    let name = &plan.inputs.name;

    let (box_wg, box_wg_public) = wg_pair()?;
    let (source_wg, source_wg_public) = wg_pair()?;
    events.line("made the WireGuard key pairs of both ends");
    let (host_secret, box_host) = host_key(&dir, dir_path, &format!("zoffsite-box-{name}"))?;
    events.line("made the box's SSH host key");
    let (source_ssh, source_ssh_secret) = match &plan.identity {
        Identity::Existing { public } => (public.clone(), None),
        Identity::New => {
            ssh_keygen(dir_path, IDENTITY, &format!("zoffsite-source-for-{name}"))?;
            events.line(&format!("made the source's SSH key for the box: {}", dir_path.join(IDENTITY).display()));
            (public_in(&dir, dir_path, "id_ed25519.pub")?, Some(Secret::new(read_in(&dir, dir_path, IDENTITY)?)))
        }
    };
    let keys = Keys { source_wg: source_wg_public, box_wg: box_wg_public, box_host, source_ssh };
    let mut inputs = plan.inputs.clone();
    inputs.keys = keys.clone();

    let source_text = bundle::render(&bundle::for_source(&inputs, &SourceSecrets { wg: source_wg.clone() }));
    let box_text = bundle::render(&bundle::for_box(&inputs, &BoxSecrets { wg: box_wg, host_key: host_secret }));
    let mut source_secrets = vec![source_wg.expose()];
    if let Some(s) = &source_ssh_secret {
        source_secrets.push(s.expose());
    }
    if holds_any(&box_text, &source_secrets) {
        return Err(BoxNewError::Failed(
            "refusing to write the box's bundle: it holds a secret of the source (a bug in zoffsite; please report it)"
                .into(),
        ));
    }
    let (source_sha256, box_sha256) = (bundle::sha256(source_text.as_bytes()), bundle::sha256(box_text.as_bytes()));
    let mut written = Vec::new();
    for (file, text, mode) in [
        (bundle::SOURCE_FILE, source_text, 0o600),
        (bundle::BOX_FILE, box_text, 0o600),
        (KNOWN_HOSTS, sshd::known_hosts_line(&inputs), 0o644),
    ] {
        let path = dir_path.join(file);
        private::replace(&dir, file, text.as_bytes(), mode, None)
            .map_err(io(format!("cannot write {}", path.display())))?;
        let sha = match file {
            bundle::SOURCE_FILE => format!(" (SHA-256 {source_sha256})"),
            bundle::BOX_FILE => format!(" (SHA-256 {box_sha256})"),
            _ => String::new(),
        };
        events.line(&format!("wrote {}{sha}", path.display()));
        written.push(path);
    }
    if plan.identity == Identity::New {
        written.extend([dir_path.join(IDENTITY), dir_path.join("id_ed25519.pub")]);
    }

    unchanged().and_then(|()| write_config(&plan.config_path, &plan.config.text, &plan.config_before)).map_err(
        |e| {
            BoxNewError::Failed(format!(
                "{e}; the box's files are complete in {}: add its target to {} by hand:\n{}",
                dir_path.display(),
                plan.config_path.display(),
                plan.config.added
            ))
        },
    )?;
    events.line(&format!("added target {name} to {}", plan.config_path.display()));
    Ok(Made { keys, written, source_sha256, box_sha256 })
}

/// Replaces the config with `text`, keeping its mode and owner as read
/// (`before`).
fn write_config(path: &Path, text: &str, before: &ConfigFile) -> Result<(), BoxNewError> {
    let (dir, name) = open_parent(path)?;
    let owner = (before.uid != private::me() || before.gid != rustix::process::getegid().as_raw())
        .then_some(private::Owner { uid: before.uid, gid: before.gid });
    // Exactly its mode, whatever the umask, set before the rename: no
    // moment with another mode.
    private::replace_exact(&dir, name, text.as_bytes(), before.mode, owner)
        .map_err(io(format!("cannot write {}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_root_is_offsite_slash_the_short_host_name() {
        assert_eq!(default_root("home").unwrap().to_string(), "offsite/home");
        assert_eq!(default_root("nas-1.lan.example.org").unwrap().to_string(), "offsite/nas-1");
        assert_eq!(default_root(""), None);
        assert_eq!(default_root("a b"), None);
    }

    #[test]
    fn a_secret_is_found_whole_or_by_any_line_of_its_body() {
        let key = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\nQyNTUxOQAAACBDhD2Kn9vRcf\n-----END OPENSSH PRIVATE KEY-----\n";
        assert!(holds_any("x QyNTUxOQAAACBDhD2Kn9vRcf y", &[key]));
        assert!(!holds_any("x b3BlbnNzaC1rZXktdjEAAAAA y", &[key]), "the header every key shares");
        assert!(holds_any("aaa sWg= bbb", &["sWg=\n"]));
        assert!(!holds_any("-----BEGIN OPENSSH PRIVATE KEY-----", &[key]));
        assert!(!holds_any("anything", &["", "\n"]));
    }

    #[test]
    fn the_output_directory_must_be_new_or_empty() {
        let d = tempfile::tempdir().unwrap();
        let fd = private::open_dir(d.path()).unwrap().unwrap();
        check_dir(d.path(), &fd).unwrap();
        std::fs::write(d.path().join("notes.txt"), "").unwrap();
        let e = check_dir(d.path(), &fd).unwrap_err().to_string();
        assert!(e.contains("not empty") && e.contains("notes.txt"), "{e}");
        std::fs::write(d.path().join("box.bundle"), "").unwrap();
        let e = check_dir(d.path(), &fd).unwrap_err().to_string();
        assert!(e.contains("refuses to overwrite an existing box's keys"), "{e}");
    }

    #[test]
    fn an_output_directory_below_one_others_can_write_is_refused_before_anything_is_made() {
        use std::os::unix::fs::PermissionsExt as _;
        let d = tempfile::tempdir().unwrap();
        let shared = d.path().join("shared");
        std::fs::create_dir(&shared).unwrap();
        check_ancestors(&shared.join("boxes/friend")).unwrap();
        // Anyone may write `shared` (no sticky bit): they could rename
        // `boxes` and put a symlink there between make_dir and ssh-keygen.
        std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o777)).unwrap();
        let out = shared.join("boxes/friend");
        let e = make_dir(&out).unwrap_err();
        assert!(matches!(e, BoxNewError::Usage(_)), "{e:?}");
        let e = e.to_string();
        assert!(
            e.contains(&format!("{} is writable by group or others", shared.display())) && e.contains("--dir"),
            "{e}"
        );
        assert!(!shared.join("boxes").exists(), "nothing was made");
        // Its parent, too, not only the directory right above.
        let e = make_dir(&shared.join("a/b/c")).unwrap_err().to_string();
        assert!(e.contains("mode 0777"), "{e}");
        // Group-writable is no better.
        std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o770)).unwrap();
        assert!(check_ancestors(&out).is_err());
        // The sticky bit helps only on root's directories (like /tmp,
        // which every tempdir here is below).
        std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o1777)).unwrap();
        assert_eq!(check_ancestors(&out).is_ok(), private::me() == 0);
        // Through a symlink, what it leads to is checked as well.
        std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o777)).unwrap();
        let safe = d.path().join("safe");
        std::fs::create_dir(&safe).unwrap();
        std::os::unix::fs::symlink(&shared, safe.join("link")).unwrap();
        let e = check_ancestors(&safe.join("link/boxes/friend")).unwrap_err().to_string();
        assert!(e.contains("mode 0777"), "{e}");
        std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o755)).unwrap();
        make_dir(&out).unwrap();
    }

    #[test]
    fn the_config_keeps_exactly_its_mode_whatever_the_umask() {
        use std::os::unix::fs::PermissionsExt as _;
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("zoffsite.toml");
        std::fs::write(&path, "old").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        let before = read_config(&path).unwrap().unwrap();
        assert_eq!(before.mode, 0o640);
        // 077 would make a new file 0600; the umask is the process's, so
        // it is put back at once.
        let old = rustix::process::umask(Mode::from_raw_mode(0o077));
        let written = write_config(&path, "new", &before);
        rustix::process::umask(old);
        written.unwrap();
        let meta = std::fs::symlink_metadata(&path).unwrap();
        assert_eq!(meta.permissions().mode() & 0o7777, 0o640);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "new");
    }
}
