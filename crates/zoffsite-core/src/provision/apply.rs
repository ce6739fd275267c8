//! `zoffsite box apply BUNDLE`: what installing a [`Bundle`] changes on
//! this machine, decided from facts the shell gathered (each target's
//! current bytes, mode and owner, which parent directories exist, which
//! tools are installed, `box init`'s facts). Nothing here reads, writes
//! or runs anything.
//!
//! # Invariants
//!
//! - **Idempotent, and a rerun finishes an interrupted run.** A file whose
//!   bytes, mode and owner are already the bundle's is
//!   [`Action::Unchanged`] and never rewritten. On a live, online root the
//!   commands that make the installed files take effect (`sysctl -p`,
//!   `daemon-reload`, `sshd -t` and sshd's reload, `enable --now`, the
//!   services' reload or restart) run on every apply, changed files or
//!   not: each is idempotent, and a run that stopped after installing the
//!   files (a failed `box init` or command, a power cut) would otherwise
//!   leave the old configuration running for good. The one command
//!   planned only after a change is `networkctl delete` (a replaced
//!   `.netdev` or its key: networkd does not update an existing netdev).
//! - **Commands are argv** ([`Command::argv`]), never a shell string.
//! - **Secrets are named, never shown**: a [`FilePlan`] holds a path, a
//!   mode and an action; the secret's text stays in the bundle, and
//!   [`Current`]'s `Debug` hides the bytes the shell read.
//! - **Nothing is changed while the plan has a problem** (a symlink or a
//!   file where a directory must be, a directory where a file must be, a
//!   group that does not exist, `box init`'s own problems).
//! - **`--root` other than `/` is offline**: no running system is asked
//!   or changed (no `sysctl`, no `daemon-reload`, no `sshd`, no `box
//!   init`: those act on the machine that runs them, not on the tree under
//!   the root); units are enabled with `systemctl --root=DIR enable`.

use std::collections::BTreeMap;
use std::fmt;

use super::bundle::{Bundle, Side};
use crate::boxinit;

/// Where files whose change needs `sshd -t` and a reload of sshd live.
pub const SSH_DIR: &str = "/etc/ssh/";
/// Where files whose change needs `systemctl daemon-reload` live.
pub const SYSTEMD_DIR: &str = "/etc/systemd/";
/// Where the sysctl drop-ins live (`sysctl -p FILE` after a change).
pub const SYSCTL_DIR: &str = "/etc/sysctl.d/";
/// Directories made 0700 when missing (wireguard-tools' own mode for it:
/// it holds the key), all others 0755.
pub const PRIVATE_DIRS: &[&str] = &[super::WG_DIR];

/// A target path as it is now (never followed if a symlink).
#[derive(Clone, PartialEq, Eq)]
pub enum Current {
    Absent,
    /// A regular file. `bytes` is `None` when it was too large to read
    /// (it is replaced).
    File {
        bytes: Option<Vec<u8>>,
        mode: u32,
        uid: u32,
        gid: u32,
    },
    /// A symlink: replaced by the file, never followed.
    Symlink,
    /// A directory, a FIFO, a device: refused.
    Other,
}

impl fmt::Debug for Current {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Current::Absent => f.write_str("Absent"),
            Current::File { bytes, mode, uid, gid } => write!(
                f,
                "File {{ {} bytes, mode {mode:04o}, {uid}:{gid} }}",
                bytes.as_ref().map_or("?".to_owned(), |b| b.len().to_string())
            ),
            Current::Symlink => f.write_str("Symlink"),
            Current::Other => f.write_str("Other"),
        }
    }
}

/// A parent directory as it is now (each component below the root is
/// looked at without following a symlink).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DirState {
    Dir,
    Absent,
    Symlink,
    NotDir,
}

/// Who owns what `box apply` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Owner {
    pub uid: u32,
    pub gid: u32,
}

/// Which sshd unit this distribution has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SshdUnit {
    /// Debian, Ubuntu.
    Ssh,
    /// Arch, Fedora.
    Sshd,
}

impl SshdUnit {
    pub fn name(self) -> &'static str {
        match self {
            SshdUnit::Ssh => "ssh.service",
            SshdUnit::Sshd => "sshd.service",
        }
    }
}

/// How `box apply` was asked to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// The prefix every path is installed under: `/`, or a directory (an
    /// image being built, a test).
    pub root: String,
    /// `--offline` (implied by a root other than `/`).
    pub offline: bool,
}

impl Options {
    pub fn new(root: impl Into<String>, offline: bool) -> Options {
        let root = root.into();
        let offline = offline || root != "/";
        Options { root, offline }
    }

    /// Whether the machine running this is the one being installed.
    pub fn live_root(&self) -> bool {
        self.root == "/"
    }
}

/// Everything the plan is made from.
#[derive(Debug, Clone)]
pub struct Facts {
    /// Every file and secret of the bundle, by its path.
    pub files: BTreeMap<String, Current>,
    /// Every ancestor directory of those paths (not `/`).
    pub dirs: BTreeMap<String, DirState>,
    /// Each group a secret names: its gid, `None` when there is none.
    pub groups: BTreeMap<String, Option<u32>>,
    /// Who the files belong to: root:root, or the user running a test
    /// under `--root` (then `can_chown` is false).
    pub owner: Owner,
    /// Whether this runs as root (can give a secret to its group).
    pub can_chown: bool,
    pub systemctl: bool,
    pub sysctl: bool,
    /// Whether `networkctl` is installed (systemd-networkd's tool).
    pub networkctl: bool,
    /// `None`: no sshd installed (or its unit not found).
    pub sshd: Option<SshdUnit>,
    /// `box init`'s facts: box side, live root only.
    pub init: Option<boxinit::Facts>,
}

/// What happens to one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Unchanged,
    Create,
    Replace {
        /// The bytes differ.
        content: bool,
        /// The mode was this (when it differs).
        mode_was: Option<u32>,
        /// The owner was this (when it differs).
        owner_was: Option<Owner>,
        /// A symlink was there (replaced, not followed).
        symlink: bool,
    },
}

impl Action {
    pub fn changes(&self) -> bool {
        !matches!(self, Action::Unchanged)
    }

    /// `unchanged`, `create`, `replace`.
    pub fn word(&self) -> &'static str {
        match self {
            Action::Unchanged => "unchanged",
            Action::Create => "create",
            Action::Replace { .. } => "replace",
        }
    }

    /// What differs, for people: `content`, `mode 0644 -> 0600`, ...
    pub fn details(&self, mode: u32, owner: Owner) -> Vec<String> {
        let Action::Replace { content, mode_was, owner_was, symlink } = self else { return Vec::new() };
        let mut d = Vec::new();
        if *symlink {
            d.push("a symlink is replaced (not followed)".to_owned());
        }
        if *content {
            d.push("content".to_owned());
        }
        if let Some(m) = mode_was {
            d.push(format!("mode {m:04o} -> {mode:04o}"));
        }
        if let Some(o) = owner_was {
            d.push(format!("owner {}:{} -> {}:{}", o.uid, o.gid, owner.uid, owner.gid));
        }
        d
    }
}

/// One file or secret to install.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilePlan {
    /// The path on the machine (the root is prefixed when writing).
    pub path: String,
    pub mode: u32,
    pub owner: Owner,
    /// A private key: never shown.
    pub secret: bool,
    pub action: Action,
}

/// A directory to create (root-owned).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mkdir {
    pub path: String,
    pub mode: u32,
}

/// A command, in the order [`plan`] lists them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// `sysctl -p FILE`: the box's `ip_nonlocal_bind`, now, not at the
    /// next boot.
    Sysctl { file: String },
    /// `systemctl daemon-reload`.
    DaemonReload,
    /// `sshd -t`: the whole effective configuration, with the drop-in.
    SshdTest,
    /// `systemctl enable --now --no-block UNITS`: the starts are queued,
    /// not waited for (wg-quick on the box waits for the source's name
    /// however long it takes to resolve).
    Enable { units: Vec<String> },
    /// `systemctl --root=DIR enable UNITS`: nothing started.
    EnableOffline { root: String, units: Vec<String> },
    /// `systemctl try-reload-or-restart --no-block SERVICES`: the
    /// bundle's running services take the installed files and keys now
    /// (the firewall reloads its table atomically; the tunnel, whose
    /// wg-quick has no reload, restarts; `--no-block`: its restart may wait
    /// for the source's name). `enable --now` leaves a running unit as it
    /// is, so without this a changed rule set or key would wait for a reboot.
    Refresh { units: Vec<String> },
    /// `networkctl delete IF`: systemd-networkd makes a netdev once and
    /// does not update it on reload, so a replaced `.netdev` or key needs
    /// the interface deleted first ([`Command::Refresh`] then reloads
    /// networkd, which makes it again from the new files).
    DeleteNetdev { interface: String },
    /// `systemctl try-reload-or-restart UNIT`: sshd rereads its
    /// configuration (and rebinds) if it runs, and nothing happens if not.
    ReloadSshd { unit: SshdUnit },
}

impl Command {
    /// The program and its arguments.
    pub fn argv(&self) -> Vec<String> {
        let v = |a: &[&str]| a.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        match self {
            Command::Sysctl { file } => v(&["sysctl", "-p", file]),
            Command::DaemonReload => v(&["systemctl", "daemon-reload"]),
            Command::SshdTest => v(&["sshd", "-t"]),
            Command::Enable { units } => {
                let mut a = v(&["systemctl", "enable", "--now", "--no-block", "--"]);
                a.extend(units.iter().cloned());
                a
            }
            Command::EnableOffline { root, units } => {
                let mut a =
                    vec!["systemctl".to_owned(), format!("--root={root}"), "enable".to_owned(), "--".to_owned()];
                a.extend(units.iter().cloned());
                a
            }
            Command::Refresh { units } => {
                let mut a = v(&["systemctl", "try-reload-or-restart", "--no-block", "--"]);
                a.extend(units.iter().cloned());
                a
            }
            Command::DeleteNetdev { interface } => v(&["networkctl", "delete", interface]),
            Command::ReloadSshd { unit } => v(&["systemctl", "try-reload-or-restart", unit.name()]),
        }
    }

    /// Why it runs, for people. Online, every command but
    /// [`Command::DeleteNetdev`] runs on every apply, changed files or not
    /// (see [`plan`]): each says so.
    pub fn why(&self) -> &'static str {
        match self {
            Command::Sysctl { .. } => {
                "apply the sysctl file now, not only at the next boot (every time: a previous apply may have stopped before it)"
            }
            Command::DaemonReload => "systemd rereads the unit files (every time, whether or not they changed)",
            Command::SshdTest => "check sshd's whole configuration, with its files, before it is reloaded",
            Command::Enable { .. } => {
                "start at boot, and now (queued, not waited for; an enabled, running unit is left as it is)"
            }
            Command::EnableOffline { .. } => "start at boot; nothing is started now (offline)",
            Command::Refresh { .. } => {
                "running services reload or restart (queued) to use the installed files (every time: a previous apply may have stopped before it)"
            }
            Command::DeleteNetdev { .. } => {
                "the .netdev or its key was replaced, and systemd-networkd does not update an existing interface: it makes it again on its reload"
            }
            Command::ReloadSshd { .. } => "sshd rereads its configuration, if it runs (every time, whether or not it changed)",
        }
    }
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.argv().join(" "))
    }
}

/// `box init`'s part of the plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InitPlan {
    /// A source bundle: nothing of the kind.
    None,
    /// Under a root other than `/`: it runs when `box apply` runs on the
    /// box itself.
    Deferred,
    Planned(boxinit::Plan),
}

/// The whole plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub side: Side,
    pub mkdirs: Vec<Mkdir>,
    /// The bundle's files, then its secrets.
    pub files: Vec<FilePlan>,
    pub init: InitPlan,
    pub commands: Vec<Command>,
    /// Blocking: nothing is done while there are any.
    pub problems: Vec<String>,
    pub warnings: Vec<String>,
}

impl Plan {
    /// Whether a directory, a file or `box init` would change. The commands
    /// do not count: they run on every apply and change nothing when
    /// everything is already in place, except [`Command::DeleteNetdev`],
    /// planned only with a replaced file.
    pub fn changes(&self) -> bool {
        !self.mkdirs.is_empty()
            || self.files.iter().any(|f| f.action.changes())
            || matches!(&self.init, InitPlan::Planned(p) if !p.steps.is_empty())
    }

    /// The files whose previous state must be put back when `sshd -t`
    /// refuses the new configuration.
    pub fn sshd_files(&self) -> impl Iterator<Item = &FilePlan> {
        self.files.iter().filter(|f| f.action.changes() && f.path.starts_with(SSH_DIR))
    }
}

/// The ancestors of `path`, outermost first, without `/`.
pub fn ancestors(path: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut at = 0;
    while let Some(i) = path[at + 1..].find('/') {
        at += 1 + i;
        out.push(path[..at].to_owned());
    }
    out
}

fn action(current: Option<&Current>, text: &[u8], mode: u32, owner: Owner) -> Result<Action, &'static str> {
    Ok(match current.unwrap_or(&Current::Absent) {
        Current::Absent => Action::Create,
        Current::Symlink => Action::Replace { content: true, mode_was: None, owner_was: None, symlink: true },
        Current::Other => return Err("not a regular file (a directory, a FIFO or a device)"),
        Current::File { bytes, mode: m, uid, gid } => {
            let content = bytes.as_deref() != Some(text);
            let mode_was = (m & 0o7777 != mode).then_some(m & 0o7777);
            let was = Owner { uid: *uid, gid: *gid };
            let owner_was = (was != owner).then_some(was);
            if !content && mode_was.is_none() && owner_was.is_none() {
                Action::Unchanged
            } else {
                Action::Replace { content, mode_was, owner_was, symlink: false }
            }
        }
    })
}

/// Decides what installing `bundle` does (see the module docs).
pub fn plan(bundle: &Bundle, opts: &Options, facts: &Facts) -> Plan {
    let mut p = Plan {
        side: bundle.side,
        mkdirs: Vec::new(),
        files: Vec::new(),
        init: InitPlan::None,
        commands: Vec::new(),
        problems: Vec::new(),
        warnings: Vec::new(),
    };

    // Directories: every ancestor of every path, outermost first.
    let mut dirs = BTreeMap::new();
    let paths = bundle.files.iter().map(|f| f.path.as_str()).chain(bundle.secrets.iter().map(|s| s.path.as_str()));
    for path in paths {
        for d in ancestors(path) {
            dirs.insert(d, ());
        }
    }
    for d in dirs.keys() {
        match facts.dirs.get(d).copied().unwrap_or(DirState::Absent) {
            DirState::Dir => {}
            DirState::Absent => {
                let mode = if PRIVATE_DIRS.contains(&d.as_str()) { 0o700 } else { 0o755 };
                p.mkdirs.push(Mkdir { path: d.clone(), mode });
            }
            DirState::Symlink => p.problems.push(format!(
                "{d} is a symlink: box apply writes through no symlink; make it a directory (or install the files there yourself)"
            )),
            DirState::NotDir => p.problems.push(format!("{d} is not a directory; move it away")),
        }
    }

    // Files, then secrets.
    for f in &bundle.files {
        match action(facts.files.get(&f.path), f.text.as_bytes(), f.mode, facts.owner) {
            Ok(a) => p.files.push(FilePlan {
                path: f.path.clone(),
                mode: f.mode,
                owner: facts.owner,
                secret: false,
                action: a,
            }),
            Err(why) => p.problems.push(format!("{} is {why}; move it away", f.path)),
        }
    }
    for s in &bundle.secrets {
        let path = s.path.to_string();
        let mut owner = facts.owner;
        if let Some(g) = &s.group {
            match (facts.groups.get(g.as_str()).copied().flatten(), facts.can_chown) {
                (Some(gid), true) => owner.gid = gid,
                (None, true) => p.problems.push(format!(
                    "{path} is for the group {g}, which does not exist here: install its package first (systemd-networkd's, for {g})"
                )),
                (_, false) => p.warnings.push(format!("{path} is not given to the group {g}: not running as root")),
            }
        }
        match action(facts.files.get(&path), s.text.expose().as_bytes(), s.mode, owner) {
            Ok(a) => p.files.push(FilePlan { path, mode: s.mode, owner, secret: true, action: a }),
            Err(why) => p.problems.push(format!("{path} is {why}; move it away")),
        }
    }

    // box init.
    if let Some(init) = &bundle.init {
        p.init = if !opts.live_root() {
            InitPlan::Deferred
        } else if let Some(f) = &facts.init {
            let ip = boxinit::plan(&init.inputs(), f);
            p.problems.extend(ip.problems.iter().map(|e| format!("box init: {e}")));
            InitPlan::Planned(ip)
        } else {
            p.problems.push("box init: its facts were not gathered".to_owned());
            InitPlan::Deferred
        };
    }

    // Commands. On a live, online root every command that makes the
    // installed files take effect runs, whether or not a file changed in
    // this run: each is idempotent, and a previous run may have stopped
    // after installing the files and before running them (a failed `box
    // init` or command, a power cut); its rerun must not find everything
    // unchanged and leave the old configuration running.
    let in_bundle = |prefix: &str| -> Vec<String> {
        p.files.iter().filter(|f| f.path.starts_with(prefix)).map(|f| f.path.clone()).collect()
    };
    let changed = |prefix: &str| p.files.iter().any(|f| f.action.changes() && f.path.starts_with(prefix));
    let sysctl_files = in_bundle(SYSCTL_DIR);
    let has_units = !in_bundle(SYSTEMD_DIR).is_empty();
    let has_sshd = !in_bundle(SSH_DIR).is_empty();
    let sshd_changed = changed(SSH_DIR);
    let mut commands = Vec::new();
    if !opts.offline {
        if facts.sysctl {
            commands.extend(sysctl_files.into_iter().map(|file| Command::Sysctl { file }));
        } else if !sysctl_files.is_empty() {
            p.warnings.push("sysctl not found: the sysctl file takes effect at the next boot".to_owned());
        }
        if has_units && facts.systemctl {
            commands.push(Command::DaemonReload);
        }
    }
    // Offline, sshd -t still checks what was installed on the live root
    // (only when its files changed: nothing is reloaded).
    if opts.live_root() && (if opts.offline { sshd_changed } else { has_sshd }) {
        match facts.sshd {
            Some(_) => commands.push(Command::SshdTest),
            None if bundle.side == Side::Box => p.warnings.push(
                "sshd is not installed: the source reaches the box only through it; install openssh-server and run box apply again"
                    .to_owned(),
            ),
            None => {}
        }
    }
    if !bundle.enable.is_empty() {
        if !facts.systemctl {
            p.warnings.push(format!("systemctl not found: enable these units yourself: {}", bundle.enable.join(" ")));
        } else if opts.offline {
            commands.push(Command::EnableOffline { root: opts.root.clone(), units: bundle.enable.clone() });
        } else {
            commands.push(Command::Enable { units: bundle.enable.clone() });
        }
    }
    // systemd-networkd does not update an existing netdev on reload
    // (networkctl(1)): a replaced .netdev or key takes effect only once the
    // interface is deleted, and the reload below makes it again.
    let interface = bundle.name.interface();
    let netdev = [super::netdev_path(&interface), super::Backend::Networkd.key_file(&interface)];
    let netdev_replaced =
        p.files.iter().any(|f| netdev.contains(&f.path) && matches!(f.action, Action::Replace { .. }));
    if netdev_replaced && !opts.offline {
        if facts.networkctl {
            commands.push(Command::DeleteNetdev { interface });
        } else {
            p.warnings.push(format!(
                "networkctl not found: the replaced {} takes effect once the interface is deleted (`networkctl delete {interface}`, then `networkctl reload`) or at the next boot",
                netdev[0]
            ));
        }
    }
    let services: Vec<String> = bundle.enable.iter().filter(|u| u.ends_with(".service")).cloned().collect();
    if !opts.offline && facts.systemctl && !services.is_empty() {
        commands.push(Command::Refresh { units: services });
    }
    if has_sshd && !opts.offline && facts.systemctl {
        if let Some(unit) = facts.sshd {
            commands.push(Command::ReloadSshd { unit });
        }
    }
    p.commands = commands;
    p
}

/// Keys of WireGuard's configuration whose value is a secret.
const SECRET_KEYS: [&str; 2] = ["PrivateKey", "PresharedKey"];

/// The old text of a file `box apply -v` replaces, as it may be shown:
/// `None` for a file that may hold a private key (anything under
/// wireguard-tools' directory, a `.netdev`, a `.key`: a hand-written one
/// may hold `PrivateKey = ...`), otherwise the text with the value of any
/// `PrivateKey` or `PresharedKey` line hidden ([`redact`]). The bundle's
/// own files hold no key; what they replace may.
pub fn old_text_shown(path: &str, old: &[u8]) -> Option<String> {
    let private =
        path.starts_with(&format!("{}/", super::WG_DIR)) || path.ends_with(".netdev") || path.ends_with(".key");
    (!private).then(|| redact(&String::from_utf8_lossy(old)))
}

/// `text` with the value of each `PrivateKey`/`PresharedKey` line (any
/// case, as wg-quick and networkd read them) replaced by `(hidden)`.
pub fn redact(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for line in text.split_inclusive('\n') {
        let key = line.split('=').next().unwrap_or("").trim();
        if line.contains('=') && SECRET_KEYS.iter().any(|k| k.eq_ignore_ascii_case(key)) {
            out.push_str(&format!("{key} = (hidden)"));
            if line.ends_with('\n') {
                out.push('\n');
            }
        } else {
            out.push_str(line);
        }
    }
    out
}

/// The lines `new` removes from `old` (`- `) and adds (`+ `), in order,
/// by a longest common subsequence: for `-v`, on files of a few hundred
/// lines at most (a bundle is at most 1 MiB; a longer file is shown whole).
pub fn diff(old: &str, new: &str) -> Vec<String> {
    let (a, b): (Vec<&str>, Vec<&str>) = (old.lines().collect(), new.lines().collect());
    if a.len().saturating_mul(b.len()) > 4_000_000 {
        return a.iter().map(|l| format!("- {l}")).chain(b.iter().map(|l| format!("+ {l}"))).collect();
    }
    // lcs[i][j]: the longest common subsequence of a[i..] and b[j..].
    let mut lcs = vec![vec![0u32; b.len() + 1]; a.len() + 1];
    for i in (0..a.len()).rev() {
        for j in (0..b.len()).rev() {
            lcs[i][j] = if a[i] == b[j] { lcs[i + 1][j + 1] + 1 } else { lcs[i + 1][j].max(lcs[i][j + 1]) };
        }
    }
    let (mut i, mut j, mut out) = (0, 0, Vec::new());
    while i < a.len() || j < b.len() {
        if i < a.len() && j < b.len() && a[i] == b[j] {
            i += 1;
            j += 1;
        } else if i < a.len() && (j == b.len() || lcs[i + 1][j] >= lcs[i][j + 1]) {
            out.push(format!("- {}", a[i]));
            i += 1;
        } else {
            out.push(format!("+ {}", b[j]));
            j += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provision::bundle::{for_box, for_source, BoxSecrets, Secret, SourceSecrets};
    use crate::provision::tests::example;
    use crate::provision::{sshd, Backend};

    fn box_bundle() -> Bundle {
        let s = BoxSecrets { wg: Secret::new("wgkey\n"), host_key: Secret::new("hostkey\n") };
        for_box(&example(), &s)
    }

    const ROOT: Owner = Owner { uid: 0, gid: 0 };

    fn facts(b: &Bundle) -> Facts {
        Facts {
            files: BTreeMap::new(),
            dirs: BTreeMap::new(),
            groups: BTreeMap::new(),
            owner: ROOT,
            can_chown: true,
            systemctl: true,
            sysctl: true,
            networkctl: true,
            sshd: Some(SshdUnit::Ssh),
            init: b.init.as_ref().map(|_| init_done()),
        }
    }

    /// `box init`'s facts of a box where it already ran.
    fn init_done() -> boxinit::Facts {
        boxinit::Facts {
            zfs_version: "zfs-2.3.3-1\nzfs-kmod-2.3.3-1\n".into(),
            user: boxinit::parse_passwd("zoffsite:x:999:999:zoffsite serve:/var/lib/zoffsite:/bin/sh"),
            password_field: Some("*".into()),
            root: Some(boxinit::RootFacts {
                kind: "filesystem".into(),
                mountpoint: "none".into(),
                snapshot_limit: "100000".into(),
                filesystem_limit: "1000".into(),
                quota: "0".into(),
            }),
            allow: boxinit::parse_allow(
                "---- Permissions on offsite/home ----\nLocal+Descendent permissions:\n\tuser zoffsite create,mount,receive:append,send,userprop\n",
            )
            .unwrap(),
            authorized_keys: None,
            ssh_dir: None,
        }
    }

    /// The facts after everything was installed as planned.
    fn installed(b: &Bundle, f: &mut Facts, p: &Plan) {
        for d in &p.mkdirs {
            f.dirs.insert(d.path.clone(), DirState::Dir);
        }
        for fp in &p.files {
            let text = b
                .files
                .iter()
                .find(|x| x.path == fp.path)
                .map(|x| x.text.clone())
                .or_else(|| b.secrets.iter().find(|s| s.path.as_str() == fp.path).map(|s| s.text.expose().to_owned()))
                .unwrap();
            f.files.insert(
                fp.path.clone(),
                Current::File { bytes: Some(text.into_bytes()), mode: fp.mode, uid: fp.owner.uid, gid: fp.owner.gid },
            );
        }
        if let (InitPlan::Planned(ip), Some(init)) = (&p.init, f.init.as_mut()) {
            for step in &ip.steps {
                if let boxinit::Step::WriteAuthorizedKeys { content, .. } = step {
                    let file = |is_dir, mode, content| boxinit::FileFacts {
                        is_symlink: false,
                        is_dir,
                        uid: 999,
                        mode,
                        content,
                    };
                    init.authorized_keys = Some(file(false, 0o100600, Some(content.clone())));
                    init.ssh_dir = Some(file(true, 0o40700, None));
                }
            }
        }
    }

    #[test]
    fn a_fresh_box_creates_everything_and_runs_every_command_in_order() {
        let b = box_bundle();
        let mut f = facts(&b);
        f.init.as_mut().unwrap().authorized_keys = None;
        let p = plan(&b, &Options::new("/", false), &f);
        assert!(p.problems.is_empty(), "{:?}", p.problems);
        assert!(p.files.iter().all(|f| f.action == Action::Create));
        assert_eq!(p.files.len(), b.files.len() + b.secrets.len());
        assert!(p.files.iter().filter(|f| f.secret).all(|f| f.mode == 0o600));
        let dirs: Vec<_> = p.mkdirs.iter().map(|d| (d.path.as_str(), d.mode)).collect();
        assert!(dirs.contains(&("/etc", 0o755)) && dirs.contains(&("/etc/wireguard", 0o700)), "{dirs:?}");
        assert!(dirs.iter().position(|d| d.0 == "/etc") < dirs.iter().position(|d| d.0 == "/etc/ssh"));
        let argv: Vec<String> = p.commands.iter().map(ToString::to_string).collect();
        assert_eq!(
            argv,
            [
                format!("sysctl -p {}", sshd::SYSCTL_PATH),
                "systemctl daemon-reload".to_owned(),
                "sshd -t".to_owned(),
                format!("systemctl enable --now --no-block -- {}", b.enable.join(" ")),
                "systemctl try-reload-or-restart --no-block -- zoffsite-firewall.service wg-quick@zo-friend.service"
                    .to_owned(),
                "systemctl try-reload-or-restart ssh.service".to_owned(),
            ]
        );
        let InitPlan::Planned(ip) = &p.init else { panic!("{:?}", p.init) };
        assert!(matches!(ip.steps[..], [boxinit::Step::WriteAuthorizedKeys { .. }]), "{:?}", ip.steps);
        assert!(p.changes());
    }

    /// Every command that makes the box's installed files take effect.
    fn every_box_command(b: &Bundle) -> Vec<Command> {
        vec![
            Command::Sysctl { file: sshd::SYSCTL_PATH.into() },
            Command::DaemonReload,
            Command::SshdTest,
            Command::Enable { units: b.enable.clone() },
            Command::Refresh { units: vec!["zoffsite-firewall.service".into(), "wg-quick@zo-friend.service".into()] },
            Command::ReloadSshd { unit: SshdUnit::Ssh },
        ]
    }

    #[test]
    fn a_second_apply_of_the_same_bundle_changes_nothing() {
        let b = box_bundle();
        let mut f = facts(&b);
        let first = plan(&b, &Options::new("/", false), &f);
        installed(&b, &mut f, &first);
        let p = plan(&b, &Options::new("/", false), &f);
        assert!(p.problems.is_empty() && p.mkdirs.is_empty(), "{p:?}");
        assert!(p.files.iter().all(|f| f.action == Action::Unchanged), "{:?}", p.files);
        assert!(matches!(&p.init, InitPlan::Planned(ip) if ip.steps.is_empty()), "{:?}", p.init);
        // The files are all unchanged; the (idempotent) commands still run,
        // and each says why.
        assert_eq!(p.commands, every_box_command(&b));
        for c in p.commands.iter().filter(|c| matches!(c, Command::Sysctl { .. } | Command::Refresh { .. })) {
            assert!(c.why().contains("every time"), "{c}: {}", c.why());
        }
        assert!(!p.changes());
    }

    #[test]
    fn files_installed_by_a_run_that_stopped_before_its_commands_are_still_made_to_take_effect() {
        // The first run installed every file, then `box init` failed (or the
        // power went): nothing was reloaded, restarted or initialized.
        let b = box_bundle();
        let mut f = facts(&b);
        f.init.as_mut().unwrap().authorized_keys = None;
        let first = plan(&b, &Options::new("/", false), &f);
        let init = f.init.clone();
        installed(&b, &mut f, &first);
        f.init = init;
        let p = plan(&b, &Options::new("/", false), &f);
        assert!(p.files.iter().all(|f| f.action == Action::Unchanged), "{:?}", p.files);
        let InitPlan::Planned(ip) = &p.init else { panic!("{:?}", p.init) };
        assert!(!ip.steps.is_empty(), "box init is done again");
        assert_eq!(p.commands, every_box_command(&b), "the reloads run though no file changed in this run");
    }

    #[test]
    fn a_changed_file_is_replaced_and_a_secret_closed_again() {
        let b = box_bundle();
        let mut f = facts(&b);
        let first = plan(&b, &Options::new("/", false), &f);
        installed(&b, &mut f, &first);
        f.files.insert(
            sshd::DROPIN_PATH.to_owned(),
            Current::File { bytes: Some(b"ListenAddress 0.0.0.0\n".to_vec()), mode: 0o600, uid: 0, gid: 0 },
        );
        let key = "/etc/wireguard/zo-friend.key".to_owned();
        f.files.insert(key.clone(), Current::File { bytes: Some(b"wgkey\n".to_vec()), mode: 0o644, uid: 1000, gid: 0 });
        let p = plan(&b, &Options::new("/", false), &f);
        let dropin = p.files.iter().find(|x| x.path == sshd::DROPIN_PATH).unwrap();
        assert_eq!(
            dropin.action,
            Action::Replace { content: true, mode_was: Some(0o600), owner_was: None, symlink: false }
        );
        assert_eq!(dropin.action.details(0o644, ROOT), ["content", "mode 0600 -> 0644"]);
        let k = p.files.iter().find(|x| x.path == key).unwrap();
        assert_eq!(
            k.action.details(k.mode, k.owner),
            ["mode 0644 -> 0600", "owner 1000:0 -> 0:0"],
            "a secret readable by others is closed again"
        );
        assert_eq!(p.commands, every_box_command(&b));
        assert_eq!(
            p.commands[4].argv(),
            [
                "systemctl",
                "try-reload-or-restart",
                "--no-block",
                "--",
                "zoffsite-firewall.service",
                "wg-quick@zo-friend.service"
            ],
            "running services take the replaced files now; timers are left alone"
        );
        assert_eq!(p.sshd_files().map(|f| f.path.as_str()).collect::<Vec<_>>(), [sshd::DROPIN_PATH]);
    }

    #[test]
    fn offline_enables_under_the_root_and_starts_reloads_and_inits_nothing() {
        let b = box_bundle();
        let mut f = facts(&b);
        f.init = None;
        let p = plan(&b, &Options::new("/tmp/image", false), &f);
        assert!(p.problems.is_empty(), "{:?}", p.problems);
        assert_eq!(p.init, InitPlan::Deferred);
        assert_eq!(p.commands, [Command::EnableOffline { root: "/tmp/image".into(), units: b.enable.clone() }]);
        assert_eq!(p.commands[0].argv()[..4], ["systemctl", "--root=/tmp/image", "enable", "--"]);
        // --offline on the live root: sshd -t still checks the files, nothing is started or reloaded.
        let mut f = facts(&b);
        f.init.as_mut().unwrap().authorized_keys = None;
        let p = plan(&b, &Options::new("/", true), &f);
        assert_eq!(
            p.commands,
            [Command::SshdTest, Command::EnableOffline { root: "/".into(), units: b.enable.clone() }]
        );
        assert!(matches!(p.init, InitPlan::Planned(_)));
    }

    #[test]
    fn the_source_side_has_no_init_and_no_sshd() {
        let i = example();
        let b = for_source(&i, &SourceSecrets { wg: Secret::new("k\n") });
        let mut f = facts(&b);
        f.sshd = None;
        let p = plan(&b, &Options::new("/", false), &f);
        assert_eq!(p.init, InitPlan::None);
        assert!(p.warnings.is_empty() && p.problems.is_empty(), "{p:?}");
        assert_eq!(
            p.commands,
            [
                Command::DaemonReload,
                Command::Enable { units: b.enable.clone() },
                Command::Refresh {
                    units: vec!["zoffsite-firewall-friend.service".into(), "wg-quick@zo-friend.service".into()]
                },
            ]
        );
    }

    #[test]
    fn a_replaced_netdev_or_key_deletes_the_interface_before_networkd_reloads() {
        let mut i = example();
        i.box_backend = Backend::Networkd;
        let b = for_box(&i, &BoxSecrets { wg: Secret::new("k\n"), host_key: Secret::new("h\n") });
        let mut f = facts(&b);
        f.groups.insert("systemd-network".into(), Some(101));
        let first = plan(&b, &Options::new("/", false), &f);
        assert!(!first.commands.iter().any(|c| matches!(c, Command::DeleteNetdev { .. })), "a new netdev is made");
        installed(&b, &mut f, &first);
        let again = plan(&b, &Options::new("/", false), &f);
        assert!(!again.commands.iter().any(|c| matches!(c, Command::DeleteNetdev { .. })), "{:?}", again.commands);
        for path in [super::super::netdev_path("zo-friend"), Backend::Networkd.key_file("zo-friend")] {
            let mut f = f.clone();
            f.files
                .insert(path.clone(), Current::File { bytes: Some(b"old\n".to_vec()), mode: 0o640, uid: 0, gid: 101 });
            let p = plan(&b, &Options::new("/", false), &f);
            let del = p.commands.iter().position(|c| *c == Command::DeleteNetdev { interface: "zo-friend".into() });
            let refresh = p.commands.iter().position(
                |c| matches!(c, Command::Refresh { units } if units.contains(&"systemd-networkd.service".to_owned())),
            );
            assert!(del.is_some() && del < refresh, "{path}: {:?}", p.commands);
            assert_eq!(p.commands[del.unwrap()].argv(), ["networkctl", "delete", "zo-friend"]);
            f.networkctl = false;
            let p = plan(&b, &Options::new("/", false), &f);
            assert!(p.warnings.iter().any(|w| w.contains("networkctl delete zo-friend")), "{:?}", p.warnings);
            assert!(plan(&b, &Options::new("/tmp/image", false), &f)
                .commands
                .iter()
                .all(|c| !matches!(c, Command::DeleteNetdev { .. })));
        }
    }

    #[test]
    fn verbose_never_shows_an_old_private_key() {
        let conf = b"[Interface]\nPrivateKey = c2VjcmV0\nAddress = 10.77.0.2/24\n";
        assert_eq!(old_text_shown("/etc/wireguard/zo-friend.conf", conf), None);
        assert_eq!(old_text_shown("/etc/systemd/network/zo-friend.netdev", b"x"), None);
        assert_eq!(old_text_shown("/etc/systemd/network/zo-friend.key", b"x"), None);
        let shown = old_text_shown("/etc/systemd/system/x.service", b"a\n privatekey=c2VjcmV0\nPresharedKey = cHNr\nb")
            .unwrap();
        assert_eq!(shown, "a\nprivatekey = (hidden)\nPresharedKey = (hidden)\nb");
        assert_eq!(old_text_shown("/etc/ssh/sshd_config.d/zoffsite.conf", b"Port 22\n").unwrap(), "Port 22\n");
    }

    #[test]
    fn symlinks_and_directories_in_the_way_and_missing_groups() {
        let b = box_bundle();
        let mut f = facts(&b);
        f.files.insert(sshd::DROPIN_PATH.to_owned(), Current::Symlink);
        let p = plan(&b, &Options::new("/", false), &f);
        assert!(p.problems.is_empty(), "{:?}", p.problems);
        let d = p.files.iter().find(|x| x.path == sshd::DROPIN_PATH).unwrap();
        assert!(matches!(d.action, Action::Replace { symlink: true, .. }), "a symlink is replaced, not followed");

        f.files.insert(sshd::SYSCTL_PATH.to_owned(), Current::Other);
        f.dirs.insert("/etc/wireguard".into(), DirState::Symlink);
        let p = plan(&b, &Options::new("/", false), &f);
        assert_eq!(p.problems.len(), 2, "{:?}", p.problems);
        assert!(p.problems[0].contains("/etc/wireguard is a symlink"), "{:?}", p.problems);

        let mut i = example();
        i.box_backend = Backend::Networkd;
        let b = for_box(&i, &BoxSecrets { wg: Secret::new("k\n"), host_key: Secret::new("h\n") });
        let mut f = facts(&b);
        f.groups.insert("systemd-network".into(), None);
        let p = plan(&b, &Options::new("/", false), &f);
        assert!(p.problems.iter().any(|e| e.contains("group systemd-network")), "{:?}", p.problems);
        f.groups.insert("systemd-network".into(), Some(101));
        let p = plan(&b, &Options::new("/", false), &f);
        let key = p.files.iter().find(|x| x.secret && x.mode == 0o640).unwrap();
        assert_eq!(key.owner, Owner { uid: 0, gid: 101 });
    }

    #[test]
    fn a_secret_never_shows_in_the_plan_or_the_facts() {
        let b = box_bundle();
        let mut f = facts(&b);
        let first = plan(&b, &Options::new("/", false), &f);
        installed(&b, &mut f, &first);
        let shown = format!("{:?}{:?}", plan(&b, &Options::new("/", false), &f), f);
        assert!(!shown.contains("wgkey") && !shown.contains("hostkey"), "{shown}");
    }

    #[test]
    fn diff_shows_removed_and_added_lines_in_order() {
        assert_eq!(diff("a\nb\nc\n", "a\nB\nc\nd\n"), ["- b", "+ B", "+ d"]);
        assert!(diff("same\n", "same\n").is_empty());
        assert_eq!(diff("", "x\n"), ["+ x"]);
    }

    #[test]
    fn ancestors_outermost_first() {
        assert_eq!(ancestors("/etc/ssh/sshd_config.d/zoffsite.conf"), ["/etc", "/etc/ssh", "/etc/ssh/sshd_config.d"]);
        assert!(ancestors("/x").is_empty());
    }
}
