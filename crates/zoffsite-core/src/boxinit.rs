//! `zoffsite box init`: what preparing a box takes, decided from facts.
//!
//! The shell gathers facts (the `zfs version` text, the user's passwd and
//! shadow entries, the root's properties, the `zfs allow` listing, the
//! current authorized_keys file) and [`plan`] returns the steps that bring
//! the box to the wanted state, each with the reason, plus blocking
//! problems. Nothing already in the wanted state produces a step, so a
//! second run plans nothing (idempotent).
//!
//! The wanted state:
//! - OpenZFS userland and kernel module 2.3.2 or newer (`receive:append`);
//! - a dedicated user with a real shell (sshd runs the forced command
//!   through it) and an unusable but unlocked password field (`*`: with
//!   `UsePAM no` sshd refuses accounts locked with `!`);
//! - the root, a filesystem with `mountpoint=none` (so nothing under it is
//!   ever mounted: placeholders and received datasets inherit it);
//! - exactly `create,mount,receive:append,send,userprop` delegated to the user on
//!   the root and its descendants, nothing else reaching the user there
//!   (no other permissions, no create-time permissions, no `everyone`);
//! - `snapshot_limit` and `filesystem_limit` on the root, by default
//!   [`DEFAULT_SNAPSHOT_LIMIT`] and [`DEFAULT_FILESYSTEM_LIMIT`] (enforced
//!   by the kernel for the delegated user, not for root): a compromised
//!   source cannot flood the box with snapshots or datasets (every
//!   placeholder `serve` creates counts); an existing limit is kept unless
//!   asked otherwise, `none` lifts one;
//! - optionally a `quota` on the root (`--quota`): the space a source can
//!   take from the box's pool, which the box owner may share;
//! - one authorized_keys line for the source's key:
//!   `restrict,from="...",command="/abs/zoffsite serve --root ROOT" KEY`,
//!   replacing any other line with the same key, keeping all other lines.

use std::fmt;
use std::net::IpAddr;

use crate::names::Dataset;

/// What `receive:append` needs, for both the tools and the kernel module.
pub const MIN_VERSION: Version = Version(2, 3, 2);
/// The first 2.3 release reported safe for raw replication: 2.3.2 and
/// older receive raw streams with bugs fixed in 2.3.3 (openzfs#12014, PR
/// #17340). Older than this is worth a warning, not a refusal: 2.3.2 is
/// what Debian 12's backports ship.
pub const SAFE_VERSION: Version = Version(2, 3, 3);

/// Exactly what the box user is granted on the root (sorted as `zfs allow`
/// prints them).
pub const PERMISSIONS: [&str; 5] = ["create", "mount", "receive:append", "send", "userprop"];

/// Key types accepted for the source's key.
pub const KEY_TYPES: &[&str] = &[
    "ssh-ed25519",
    "sk-ssh-ed25519@openssh.com",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "sk-ecdsa-sha2-nistp256@openssh.com",
    "ssh-rsa",
];

/// The box user `box init` makes unless told otherwise.
pub const DEFAULT_USER: &str = "zoffsite";

/// Home directory of a user that `box init` creates.
pub fn default_home(user: &UserName) -> String {
    format!("/var/lib/{user}")
}

/// `snapshot_limit` set on the root unless asked otherwise: room for, say,
/// 200 datasets with 500 snapshots each, while a flood stops well before
/// listings get slow (a listing of tens of thousands of snapshots takes
/// seconds to minutes).
pub const DEFAULT_SNAPSHOT_LIMIT: u64 = 100_000;
/// `filesystem_limit` set on the root unless asked otherwise: far more
/// datasets than a personal machine backs up; each placeholder counts.
pub const DEFAULT_FILESYSTEM_LIMIT: u64 = 1_000;

/// What was asked for one of the root's limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    /// Not given: the default where the root has none, else keep it.
    Default,
    Exactly(u64),
    /// `none`: lift it.
    Unlimited,
}

impl Limit {
    /// `none` or a number, with `number` parsing the number.
    pub fn parse(s: &str, number: impl Fn(&str) -> Result<u64, String>) -> Result<Limit, String> {
        match s {
            "none" => Ok(Limit::Unlimited),
            "0" => Err("0 would allow nothing; give a positive number, or none".into()),
            _ => number(s).map(Limit::Exactly),
        }
    }
}

/// A limit property of the root.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitProp {
    SnapshotLimit,
    FilesystemLimit,
    Quota,
}

impl LimitProp {
    pub fn name(self) -> &'static str {
        match self {
            LimitProp::SnapshotLimit => "snapshot_limit",
            LimitProp::FilesystemLimit => "filesystem_limit",
            LimitProp::Quota => "quota",
        }
    }

    fn flag(self) -> &'static str {
        match self {
            LimitProp::SnapshotLimit => "--snapshot-limit",
            LimitProp::FilesystemLimit => "--filesystem-limit",
            LimitProp::Quota => "--quota",
        }
    }

    fn default(self) -> Option<u64> {
        match self {
            LimitProp::SnapshotLimit => Some(DEFAULT_SNAPSHOT_LIMIT),
            LimitProp::FilesystemLimit => Some(DEFAULT_FILESYSTEM_LIMIT),
            LimitProp::Quota => None,
        }
    }

    /// Whether `zfs get -p` text means "no limit" (`none`; a quota of 0).
    fn is_none(self, value: &str) -> bool {
        value == "none" || (self == LimitProp::Quota && value == "0")
    }
}

/// The shell a created user gets, and that a nologin shell is replaced by.
pub const SHELL: &str = "/bin/sh";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InputError(pub String);

fn bad(msg: impl Into<String>) -> InputError {
    InputError(msg.into())
}

/// A Unix user name as Debian's `useradd` accepts by default.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserName(String);

impl UserName {
    pub fn new(s: &str) -> Result<Self, InputError> {
        let ok = !s.is_empty()
            && s.len() <= 32
            && s.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
            && s.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-');
        if ok {
            Ok(Self(s.to_owned()))
        } else {
            Err(bad(format!("--user {s:?}: a user name is 1-32 of [a-z0-9_-], starting with a letter or '_'")))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for UserName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The source's public key: type, base64 body (its embedded type checked),
/// and an optional comment without quotes or control characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicKey {
    pub kind: String,
    pub body: String,
    pub comment: Option<String>,
}

impl PublicKey {
    /// Parses the content of a `.pub` file: exactly one key line.
    pub fn parse(text: &str) -> Result<Self, InputError> {
        let lines: Vec<&str> = text.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
        let line = match lines.as_slice() {
            [one] => *one,
            [] => return Err(bad("the source key file is empty; give the source's .pub file (e.g. id_ed25519.pub)")),
            _ => {
                return Err(bad(if text.contains("PRIVATE KEY") {
                    "this is a PRIVATE key: give the source's public key (the .pub file), and keep the private one on the source"
                } else {
                    "the source key file has more than one line; give exactly the source's .pub file (one key)"
                }))
            }
        };
        if line.chars().any(|c| c.is_control() && c != '\t') {
            return Err(bad("the source key contains control characters"));
        }
        let kind = line.split([' ', '\t']).next().unwrap_or_default();
        // Our allowlist first: a line with options (`restrict,command=...
        // KEY`) or a type we do not take is refused with what to give.
        if !KEY_TYPES.contains(&kind) {
            return Err(bad(format!(
                "the source key starts with {:?}, not a key type ({}); give the .pub file itself, not an authorized_keys line with options",
                crate::protocol::sanitize(kind, 40),
                KEY_TYPES.join(", ")
            )));
        }
        // The ssh-key crate decodes the rest: canonical base64, the key
        // data for that type, and the type written inside the data the
        // same as in front of it.
        let key = ssh_key::PublicKey::from_openssh(line)
            .map_err(|e| bad(format!("the source key's body is not a valid {kind} key ({e})")))?;
        if key.algorithm().as_str() != kind {
            return Err(bad(format!("the source key's body is not an {kind} key")));
        }
        let body = line.split(' ').nth(1).unwrap_or_default();
        let comment = Some(key.comment().trim()).filter(|c| !c.is_empty());
        if let Some(c) = comment {
            if c.contains(['"', '\\']) || c.len() > 200 {
                return Err(bad("the source key's comment has quotes or backslashes, or is over 200 bytes; edit it"));
            }
        }
        Ok(Self { kind: kind.to_owned(), body: body.to_owned(), comment: comment.map(str::to_owned) })
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.kind, self.body)?;
        if let Some(c) = &self.comment {
            write!(f, " {c}")?;
        }
        Ok(())
    }
}

/// Standard base64 with padding, strictly (no whitespace, canonical length).
pub(crate) fn base64_decode(s: &str) -> Option<Vec<u8>> {
    if s.is_empty() || !s.len().is_multiple_of(4) {
        return None;
    }
    let val = |c: u8| -> Option<u32> {
        Some(u32::from(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        }))
    };
    let bytes = s.as_bytes();
    let pad = bytes.iter().rev().take_while(|&&c| c == b'=').count();
    if pad > 2 {
        return None;
    }
    let mut out = Vec::with_capacity(s.len() / 4 * 3);
    for (i, chunk) in bytes.chunks(4).enumerate() {
        let last = i == bytes.len() / 4 - 1;
        let mut n = 0u32;
        for (j, &c) in chunk.iter().enumerate() {
            let v = if c == b'=' && last && j >= 4 - pad { 0 } else { val(c)? };
            n = n << 6 | v;
        }
        let [_, b0, b1, b2] = n.to_be_bytes();
        let got = [b0, b1, b2];
        let keep = if last { 3 - pad } else { 3 };
        out.extend_from_slice(&got[..keep]);
    }
    Some(out)
}

/// `--from`: a comma-separated list of addresses or CIDR blocks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FromList(String);

impl FromList {
    pub fn new(s: &str) -> Result<Self, InputError> {
        let mut items = Vec::new();
        for item in s.split(',') {
            let item = item.trim();
            let (addr, prefix) = match item.split_once('/') {
                Some((a, p)) => (a, Some(p)),
                None => (item, None),
            };
            let ip: IpAddr = addr.parse().map_err(|_| {
                bad(format!(
                    "--from {:?}: {:?} is not an IP address (or CIDR block like 10.77.0.0/24); host names are not accepted",
                    crate::protocol::sanitize(s, 100),
                    crate::protocol::sanitize(item, 60)
                ))
            })?;
            if let Some(p) = prefix {
                let max = if ip.is_ipv4() { 32 } else { 128 };
                match p.parse::<u8>() {
                    Ok(n) if n <= max && p == n.to_string() => {}
                    _ => return Err(bad(format!("--from: {item:?} has a bad prefix length (0-{max})"))),
                }
            }
            items.push(item.to_owned());
        }
        Ok(Self(items.join(",")))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Checks that `s` can sit unquoted in `command="..."`: an absolute path or
/// a dataset name of plain characters (no quotes, spaces, shell syntax).
fn plain(what: &str, s: &str, absolute: bool) -> Result<(), InputError> {
    let ok = !s.is_empty()
        && (!absolute || s.starts_with('/'))
        && s.chars().all(|c| c.is_ascii_alphanumeric() || "_./+:-".contains(c));
    if ok {
        Ok(())
    } else {
        Err(bad(format!(
            "{what} {:?} cannot go into the forced command: it must be{} made of letters, digits and _./+:- only",
            crate::protocol::sanitize(s, 200),
            if absolute { " an absolute path" } else { "" }
        )))
    }
}

/// What `box init` was asked for, validated.
#[derive(Debug, Clone)]
pub struct Inputs {
    pub root: Dataset,
    pub user: UserName,
    pub key: PublicKey,
    pub from: Option<FromList>,
    /// Absolute path of the zoffsite binary the forced command runs.
    pub exe: String,
    /// `--authorized-keys`; `None`: `~USER/.ssh/authorized_keys`.
    pub authorized_keys: Option<String>,
    pub snapshot_limit: Limit,
    pub filesystem_limit: Limit,
    /// `Default`: leave the root's quota as it is.
    pub quota: Limit,
}

impl Inputs {
    /// Validates what goes into the forced command.
    pub fn check(&self) -> Result<(), InputError> {
        plain("the zoffsite binary path", &self.exe, true)?;
        plain("--root", self.root.as_str(), false)?;
        if let Some(p) = &self.authorized_keys {
            if !p.starts_with('/') || p.ends_with('/') || p.contains('\0') {
                return Err(bad(format!("--authorized-keys {p:?} must be an absolute file path")));
            }
        }
        Ok(())
    }

    /// What the source's key is forced to run.
    pub fn forced_command(&self) -> String {
        format!("{} serve --root {}", self.exe, self.root)
    }

    /// The authorized_keys line for the source's key.
    pub fn key_line(&self) -> String {
        let from = self.from.as_ref().map(|f| format!("from=\"{}\",", f.as_str())).unwrap_or_default();
        format!("restrict,{from}command=\"{}\" {}", self.forced_command(), self.key)
    }
}

/// A `major.minor.patch` OpenZFS version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Version(pub u32, pub u32, pub u32);

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.0, self.1, self.2)
    }
}

/// The two versions `zfs version` prints (`zfs-2.3.2-2~bpo12+2`,
/// `zfs-kmod-2.3.2-2~bpo12+2`); `None` when a line is missing or unparsable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ZfsVersions {
    pub userland: Option<Version>,
    pub kmod: Option<Version>,
}

pub fn parse_zfs_version(text: &str) -> ZfsVersions {
    fn ver(s: &str) -> Option<Version> {
        let mut it = s.split(['-', '.']).map(|p| {
            let digits: String = p.chars().take_while(char::is_ascii_digit).collect();
            digits.parse::<u32>().ok()
        });
        Some(Version(it.next()??, it.next()??, it.next()??))
    }
    let mut v = ZfsVersions::default();
    for l in text.lines().map(str::trim) {
        if let Some(rest) = l.strip_prefix("zfs-kmod-") {
            v.kmod = v.kmod.or(ver(rest));
        } else if let Some(rest) = l.strip_prefix("zfs-") {
            v.userland = v.userland.or(ver(rest));
        }
    }
    v
}

/// Whether `zfs version` shows tools and kernel module new enough: what
/// was found, or what is missing.
pub fn check_version(zfs_version: &str) -> Result<String, String> {
    match parse_zfs_version(zfs_version) {
        ZfsVersions { userland: Some(u), kmod: Some(k) } if u >= MIN_VERSION && k >= MIN_VERSION => {
            Ok(format!("OpenZFS {u} (kernel module {k})"))
        }
        ZfsVersions { userland: u, kmod: k } => {
            let show = |x: Option<Version>| x.map_or("unknown".to_owned(), |v| v.to_string());
            Err(format!(
                "OpenZFS {MIN_VERSION} or newer is needed, for both the zfs tools and the kernel module (the `receive:append` permission); found tools {}, module {}{}",
                show(u),
                show(k),
                if k.is_none() { " (is the zfs module loaded? `modprobe zfs`)" } else { "" }
            ))
        }
    }
}

/// A passwd entry (`getent passwd USER`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Passwd {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    pub home: String,
    pub shell: String,
}

pub fn parse_passwd(line: &str) -> Option<Passwd> {
    let f: Vec<&str> = line.trim_end_matches('\n').split(':').collect();
    if f.len() != 7 {
        return None;
    }
    Some(Passwd {
        name: f[0].to_owned(),
        uid: f[2].parse().ok()?,
        gid: f[3].parse().ok()?,
        home: f[5].to_owned(),
        shell: f[6].to_owned(),
    })
}

/// The password field of a shadow line (`getent shadow USER`).
pub fn shadow_password(line: &str) -> Option<&str> {
    line.split(':').nth(1)
}

/// Who a `zfs allow` entry is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Who {
    User(String),
    Group(String),
    Everyone,
    /// A create-time permission (`zfs allow -c`).
    Creator,
    /// A permission set's definition (`zfs allow -s @name`).
    Set(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Local,
    Descendent,
    LocalDescendent,
    /// Create-time permissions and set definitions.
    Other,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// The dataset whose section lists it.
    pub on: String,
    pub scope: Scope,
    pub who: Who,
    pub perms: Vec<String>,
}

/// Parses `zfs allow DATASET` (sections for the dataset and its ancestors).
pub fn parse_allow(text: &str) -> Result<Vec<Grant>, String> {
    let mut out = Vec::new();
    let mut on: Option<String> = None;
    let mut scope: Option<(Scope, bool)> = None; // (scope, is set definitions)
    for line in text.lines() {
        if line.trim().is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix("---- Permissions on ") {
            let name = rest.trim_end_matches('-').trim_end();
            on = Some(name.to_owned());
            scope = None;
            continue;
        }
        if let Some(entry) = line.strip_prefix('\t') {
            let (Some(on), Some((sc, sets))) = (&on, scope) else {
                return Err(format!("entry outside a section: {line:?}"));
            };
            let (who, perms) = if sets {
                let (name, perms) = entry.split_once(' ').ok_or_else(|| format!("bad set line {line:?}"))?;
                (Who::Set(name.to_owned()), perms)
            } else if sc == Scope::Other {
                (Who::Creator, entry)
            } else if let Some(p) = entry.strip_prefix("everyone ") {
                (Who::Everyone, p)
            } else if let Some(rest) = entry.strip_prefix("user ") {
                let (n, p) = rest.rsplit_once(' ').ok_or_else(|| format!("bad line {line:?}"))?;
                (Who::User(n.to_owned()), p)
            } else if let Some(rest) = entry.strip_prefix("group ") {
                let (n, p) = rest.rsplit_once(' ').ok_or_else(|| format!("bad line {line:?}"))?;
                (Who::Group(n.to_owned()), p)
            } else {
                return Err(format!("unknown entry {line:?}"));
            };
            out.push(Grant {
                on: on.clone(),
                scope: sc,
                who,
                perms: perms.split(',').map(|p| p.trim().to_owned()).filter(|p| !p.is_empty()).collect(),
            });
            continue;
        }
        scope = Some(match line.trim_end() {
            "Permission sets:" => (Scope::Other, true),
            "Create time permissions:" => (Scope::Other, false),
            "Local permissions:" => (Scope::Local, false),
            "Descendent permissions:" => (Scope::Descendent, false),
            "Local+Descendent permissions:" => (Scope::LocalDescendent, false),
            other => return Err(format!("unknown line {other:?}")),
        });
    }
    Ok(out)
}

/// The root as it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RootFacts {
    /// `type`: must be `filesystem`.
    pub kind: String,
    pub mountpoint: String,
    /// `snapshot_limit` (`none` or a number).
    pub snapshot_limit: String,
    /// `filesystem_limit` (`none` or a number).
    pub filesystem_limit: String,
    /// `quota` as `zfs get -p` prints it (`0`: none).
    pub quota: String,
}

/// A file or directory as it is (not followed if a symlink).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileFacts {
    pub is_symlink: bool,
    pub is_dir: bool,
    pub uid: u32,
    pub mode: u32,
    /// The file's text (files only).
    pub content: Option<String>,
}

/// Everything `plan` looks at.
#[derive(Debug, Clone, Default)]
pub struct Facts {
    /// `zfs version` output (stdout and stderr).
    pub zfs_version: String,
    pub user: Option<Passwd>,
    /// The shadow password field, when readable.
    pub password_field: Option<String>,
    /// `None`: the root does not exist.
    pub root: Option<RootFacts>,
    /// `zfs allow` of the root, or of its parent when the root does not exist.
    pub allow: Vec<Grant>,
    /// The authorized_keys file; `None`: absent.
    pub authorized_keys: Option<FileFacts>,
    /// Its directory (for the default `~/.ssh`); `None`: absent.
    pub ssh_dir: Option<FileFacts>,
}

/// One change to make.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    CreateUser {
        user: UserName,
        home: String,
    },
    SetShell {
        user: UserName,
        was: String,
    },
    CreateRoot {
        root: Dataset,
    },
    SetMountpointNone {
        root: Dataset,
        was: String,
    },
    Allow {
        user: UserName,
        root: Dataset,
        missing: Vec<String>,
    },
    Unallow {
        user: UserName,
        root: Dataset,
        extra: Vec<String>,
    },
    /// `zfs set PROP=VALUE ROOT`; `value` `None`: `none`.
    SetLimit {
        root: Dataset,
        prop: LimitProp,
        value: Option<u64>,
        was: String,
    },
    /// Write `content` to `path` (atomically; 0600, owned by the user);
    /// `ssh_dir`: also create/fix that directory (0700, owned by the user).
    WriteAuthorizedKeys {
        path: String,
        ssh_dir: Option<String>,
        content: String,
        why: String,
    },
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Step::CreateUser { user, home } => write!(
                f,
                "create user {user} (home {home}, shell {SHELL}, password field '*': no password login, yet not locked for sshd)"
            ),
            Step::SetShell { user, was } => write!(
                f,
                "set {user}'s shell to {SHELL} (it is {was}; sshd runs the forced command through the user's shell)"
            ),
            Step::CreateRoot { root } => write!(f, "create {root} with canmount=off, mountpoint=none (never mounted)"),
            Step::SetMountpointNone { root, was } => write!(
                f,
                "set mountpoint=none on {root} (it is {was}): everything received under it inherits it, so nothing there is ever mounted, and `serve` refuses a root without it"
            ),
            Step::Allow { user, root, missing } => {
                write!(f, "delegate {} on {root} to {user}", PERMISSIONS.join(","))?;
                if missing.len() < PERMISSIONS.len() {
                    write!(f, " (missing: {})", missing.join(","))?;
                }
                Ok(())
            }
            Step::Unallow { user, root, extra } => write!(
                f,
                "remove {user}'s other permissions on {root}: {} (only {} keeps the box append-only)",
                extra.join(","),
                PERMISSIONS.join(",")
            ),
            Step::SetLimit { root, prop, value, was } => {
                let v = value.map_or("none".to_owned(), |n| n.to_string());
                let why = match prop {
                    LimitProp::Quota => "the most space the source can take from the pool",
                    LimitProp::SnapshotLimit => "enforced for the delegated user: a source cannot flood the box with snapshots",
                    LimitProp::FilesystemLimit => "enforced for the delegated user: a source cannot flood the box with datasets",
                };
                write!(f, "set {}={v} on {root} (it is {was}; {why})", prop.name())
            }
            Step::WriteAuthorizedKeys { path, why, .. } => {
                write!(f, "write the source key's forced-command line to {path} ({why})")
            }
        }
    }
}

/// The outcome of [`plan`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    pub steps: Vec<Step>,
    /// Blocking: nothing is done while there are any.
    pub problems: Vec<String>,
    /// Worth knowing, not blocking.
    pub warnings: Vec<String>,
    /// What is already as wanted.
    pub ok: Vec<String>,
}

/// Decides what to do.
pub fn plan(inp: &Inputs, facts: &Facts) -> Plan {
    let mut p = Plan::default();
    let user = &inp.user;
    let root = &inp.root;

    // OpenZFS version.
    match check_version(&facts.zfs_version) {
        Ok(ok) => {
            p.ok.push(ok);
            let v = parse_zfs_version(&facts.zfs_version);
            if let Some(old) = [v.userland, v.kmod].into_iter().flatten().filter(|v| *v < SAFE_VERSION).min() {
                p.warnings.push(format!(
                    "OpenZFS {old} works, but raw receives have bugs fixed in {SAFE_VERSION} (openzfs#12014, PR #17340): upgrade the zfs tools and module when your distribution offers it"
                ));
            }
        }
        Err(problem) => p.problems.push(problem),
    }

    // The user.
    match &facts.user {
        None => p.steps.push(Step::CreateUser { user: user.clone(), home: default_home(user) }),
        Some(pw) => {
            p.ok.push(format!("user {user} exists (uid {}, home {})", pw.uid, pw.home));
            if pw.uid == 0 {
                p.problems.push(format!(
                    "user {user} is uid 0: serve must run as an unprivileged user, or the kernel enforces nothing"
                ));
            }
            let base = pw.shell.rsplit('/').next().unwrap_or_default();
            if pw.shell.is_empty() || matches!(base, "nologin" | "false") {
                p.steps.push(Step::SetShell { user: user.clone(), was: pw.shell.clone() });
            }
            if let Some(pwfield) = &facts.password_field {
                if pwfield.starts_with('!') {
                    p.warnings.push(format!(
                        "{user}'s password is locked ('!' in /etc/shadow): an sshd with `UsePAM no` refuses locked accounts even for keys; if it has no password you need, run `usermod -p '*' {user}`"
                    ));
                }
            }
        }
    }

    // The root.
    match &facts.root {
        None => p.steps.push(Step::CreateRoot { root: root.clone() }),
        Some(r) if r.kind != "filesystem" => {
            p.problems.push(format!("{root} is a {}, not a filesystem; choose another --root", r.kind));
        }
        Some(r) => {
            if r.mountpoint == "none" {
                p.ok.push(format!("{root} exists with mountpoint=none"));
            } else {
                p.steps.push(Step::SetMountpointNone { root: root.clone(), was: r.mountpoint.clone() });
            }
        }
    }

    // The delegation.
    delegation(inp, facts, &mut p);

    // The limits.
    for (prop, want) in [
        (LimitProp::SnapshotLimit, inp.snapshot_limit),
        (LimitProp::FilesystemLimit, inp.filesystem_limit),
        (LimitProp::Quota, inp.quota),
    ] {
        let was = facts.root.as_ref().map_or("none".to_owned(), |r| match prop {
            LimitProp::SnapshotLimit => r.snapshot_limit.clone(),
            LimitProp::FilesystemLimit => r.filesystem_limit.clone(),
            LimitProp::Quota => r.quota.clone(),
        });
        limit(&mut p, root, prop, want, was);
    }

    authorized_keys(inp, facts, &mut p);
    p
}

/// Plans one of the root's limits.
fn limit(p: &mut Plan, root: &Dataset, prop: LimitProp, want: Limit, was: String) {
    let (name, flag) = (prop.name(), prop.flag());
    let was_none = prop.is_none(&was);
    let value = match want {
        Limit::Exactly(n) => Some(n),
        Limit::Unlimited => None,
        Limit::Default if was_none => match prop.default() {
            Some(n) => Some(n),
            None => {
                p.ok.push(format!("no {name} on {root} ({flag} SIZE caps the space a source can take)"));
                return;
            }
        },
        Limit::Default => {
            p.ok.push(format!("{name}={was} on {root} (kept; {flag} changes it)"));
            return;
        }
    };
    let already = match value {
        Some(n) => was == n.to_string(),
        None => was_none,
    };
    if already {
        p.ok.push(format!("{name}={} on {root}", value.map_or("none".to_owned(), |n| n.to_string())));
    } else {
        p.steps.push(Step::SetLimit { root: root.clone(), prop, value, was });
    }
}

fn delegation(inp: &Inputs, facts: &Facts, p: &mut Plan) {
    let (user, root) = (&inp.user, &inp.root);
    let d = check_delegation(user, root, facts.root.is_some(), &facts.allow);
    p.problems.extend(d.problems);
    p.warnings.extend(d.warnings);
    if d.missing.is_empty() {
        p.ok.push(format!("{user} holds exactly {} on {root}", PERMISSIONS.join(",")));
    } else {
        p.steps.push(Step::Allow { user: user.clone(), root: root.clone(), missing: d.missing });
    }
    if !d.extra.is_empty() {
        p.steps.push(Step::Unallow { user: user.clone(), root: root.clone(), extra: d.extra });
    }
}

/// How the delegation on the root compares with [`PERMISSIONS`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Delegation {
    /// Of [`PERMISSIONS`], what the user lacks as local+descendent on the root.
    pub missing: Vec<String>,
    /// Other permissions the user holds on the root (sorted).
    pub extra: Vec<String>,
    /// Grants elsewhere that reach the root and so the user (the user's on
    /// ancestors, `everyone`'s, create-time permissions): each with its fix.
    pub problems: Vec<String>,
    /// Group grants that reach the root (the user may be in the group).
    pub warnings: Vec<String>,
}

impl Delegation {
    /// Exactly the wanted set, and nothing else reaching the user.
    pub fn is_exact(&self) -> bool {
        self.missing.is_empty() && self.extra.is_empty() && self.problems.is_empty() && self.warnings.is_empty()
    }
}

/// Compares `allow` (`zfs allow ROOT` parsed by [`parse_allow`], or of
/// its parent when the root does not exist) with what `user` must hold.
pub fn check_delegation(user: &UserName, root: &Dataset, root_exists: bool, allow: &[Grant]) -> Delegation {
    let mut d = Delegation::default();
    let mut full: Vec<String> = Vec::new(); // local+descendent on the root
    for g in allow {
        let on_root = root_exists && g.on == root.as_str();
        let reaches_root = on_root || g.scope != Scope::Local;
        let perms = g.perms.join(",");
        match &g.who {
            Who::User(u) if u == user.as_str() && on_root => {
                for perm in &g.perms {
                    if g.scope == Scope::LocalDescendent && PERMISSIONS.contains(&perm.as_str()) {
                        full.push(perm.clone());
                    } else if !PERMISSIONS.contains(&perm.as_str()) && !d.extra.contains(perm) {
                        d.extra.push(perm.clone());
                    }
                }
            }
            Who::User(u) if u == user.as_str() && reaches_root => d.problems.push(format!(
                "{user} also holds {perms} on {}, which reaches {root}: remove it (`zfs unallow -u {user} {perms} {}`) so the box stays append-only",
                g.on, g.on
            )),
            Who::Everyone if reaches_root => d.problems.push(format!(
                "everyone holds {perms} on {}, which reaches {root} and so {user}: remove it (`zfs unallow -e {perms} {}`)",
                g.on, g.on
            )),
            Who::Creator => d.problems.push(format!(
                "{} has create-time permissions ({perms}): {user} would get them on every dataset it creates under {root}; remove them (`zfs unallow -c {perms} {}`)",
                g.on, g.on
            )),
            Who::Group(grp) if reaches_root => d.warnings.push(format!(
                "group {grp} holds {perms} on {}: if {user} is in that group, it has those permissions on {root} too",
                g.on
            )),
            _ => {}
        }
    }
    d.missing = PERMISSIONS.iter().filter(|w| !full.iter().any(|h| h == *w)).map(|s| (*s).to_owned()).collect();
    d.extra.sort();
    d
}

/// `content` with `line` as the only line for `key`: replaces the first
/// line carrying the key (any options), drops other lines with it, keeps
/// every other line; appends when there is none. Returns the new content
/// and how many lines were replaced or dropped.
pub fn update_authorized_keys(content: &str, key: &PublicKey, line: &str) -> (String, usize) {
    let mut out = String::new();
    let mut placed = false;
    let mut replaced = 0;
    for l in content.lines() {
        let toks: Vec<&str> = l.split_whitespace().collect();
        let has_key = !l.trim_start().starts_with('#') && toks.windows(2).any(|w| w[0] == key.kind && w[1] == key.body);
        if has_key {
            if l != line {
                replaced += 1;
            }
            if !placed {
                out.push_str(line);
                out.push('\n');
                placed = true;
            }
        } else {
            out.push_str(l);
            out.push('\n');
        }
    }
    if !placed {
        out.push_str(line);
        out.push('\n');
    }
    (out, replaced)
}

/// Where the key line goes: `--authorized-keys`, or the user's (existing
/// or to-be-created) `~/.ssh/authorized_keys` with that `.ssh` directory.
pub fn authorized_keys_path(inp: &Inputs, user: Option<&Passwd>) -> (String, Option<String>) {
    match &inp.authorized_keys {
        Some(path) => (path.clone(), None),
        None => {
            let home = user.map_or_else(|| default_home(&inp.user), |u| u.home.clone());
            let dir = format!("{}/.ssh", home.trim_end_matches('/'));
            (format!("{dir}/authorized_keys"), Some(dir))
        }
    }
}

fn authorized_keys(inp: &Inputs, facts: &Facts, p: &mut Plan) {
    let (path, ssh_dir) = authorized_keys_path(inp, facts.user.as_ref());
    let line = inp.key_line();
    let uid = facts.user.as_ref().map(|u| u.uid);
    let mut why = Vec::new();
    if let Some(dir) = &ssh_dir {
        match &facts.ssh_dir {
            Some(d) if d.is_symlink || !d.is_dir => {
                p.problems.push(format!("{dir} is a symlink or not a directory; refusing to write through it"));
                return;
            }
            Some(d) if Some(d.uid) != uid || d.mode & 0o7777 != 0o700 => {
                why.push(format!("{dir} to be owned by {} with mode 0700", inp.user));
            }
            Some(_) => {}
            None => why.push(format!("create {dir}")),
        }
    }
    let content = match &facts.authorized_keys {
        Some(f) if f.is_symlink || f.is_dir => {
            p.problems.push(format!("{path} is a symlink or a directory; refusing to write through it"));
            return;
        }
        Some(f) => {
            let old = f.content.clone().unwrap_or_default();
            let (new, replaced) = update_authorized_keys(&old, &inp.key, &line);
            if new != old {
                why.push(if replaced > 0 {
                    format!("replacing {replaced} other line(s) with the same key")
                } else {
                    "adding it".to_owned()
                });
            }
            if Some(f.uid) != uid || f.mode & 0o7777 != 0o600 {
                why.push(format!("the file to be owned by {} with mode 0600", inp.user));
            }
            new
        }
        None => {
            why.push("new file".to_owned());
            format!("{line}\n")
        }
    };
    if why.is_empty() {
        p.ok.push(format!("{path} has the forced-command line"));
    } else {
        p.steps.push(Step::WriteAuthorizedKeys { path, ssh_dir, content, why: why.join("; ") });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ED: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHIfjJ0Bzj+0cM/VU4AJL8lCM3diW6Vx5KoRigKVXKG2 zoffsite-source";

    fn inputs() -> Inputs {
        Inputs {
            root: Dataset::new("offsite/home").unwrap(),
            user: UserName::new("zoffsite").unwrap(),
            key: PublicKey::parse(ED).unwrap(),
            from: Some(FromList::new("10.77.0.1").unwrap()),
            exe: "/usr/local/bin/zoffsite".into(),
            authorized_keys: None,
            snapshot_limit: Limit::Default,
            filesystem_limit: Limit::Default,
            quota: Limit::Default,
        }
    }

    const ALLOW_OK: &str = "---- Permissions on offsite/home ------------------------------------------\nLocal+Descendent permissions:\n\tuser zoffsite create,mount,receive:append,send,userprop\n";

    fn ready() -> Facts {
        let inp = inputs();
        Facts {
            zfs_version: "zfs-2.3.3-1\nzfs-kmod-2.3.3-1\n".into(),
            user: Some(Passwd {
                name: "zoffsite".into(),
                uid: 999,
                gid: 995,
                home: "/var/lib/zoffsite".into(),
                shell: "/bin/sh".into(),
            }),
            password_field: Some("*".into()),
            root: Some(RootFacts {
                kind: "filesystem".into(),
                mountpoint: "none".into(),
                snapshot_limit: DEFAULT_SNAPSHOT_LIMIT.to_string(),
                filesystem_limit: DEFAULT_FILESYSTEM_LIMIT.to_string(),
                quota: "0".into(),
            }),
            allow: parse_allow(ALLOW_OK).unwrap(),
            authorized_keys: Some(FileFacts {
                is_symlink: false,
                is_dir: false,
                uid: 999,
                mode: 0o100600,
                content: Some(format!("{}\n", inp.key_line())),
            }),
            ssh_dir: Some(FileFacts { is_symlink: false, is_dir: true, uid: 999, mode: 0o40700, content: None }),
        }
    }

    #[test]
    fn key_line_is_the_forced_command() {
        assert_eq!(
            inputs().key_line(),
            format!(r#"restrict,from="10.77.0.1",command="/usr/local/bin/zoffsite serve --root offsite/home" {ED}"#)
        );
        let mut i = inputs();
        i.from = None;
        assert!(i.key_line().starts_with(r#"restrict,command="/usr/local/bin/zoffsite serve"#));
    }

    #[test]
    fn keys_are_validated_strictly() {
        assert_eq!(PublicKey::parse(&format!("\n{ED}\n")).unwrap().comment.as_deref(), Some("zoffsite-source"));
        let bare = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHIfjJ0Bzj+0cM/VU4AJL8lCM3diW6Vx5KoRigKVXKG2";
        assert_eq!(PublicKey::parse(bare).unwrap().to_string(), bare);
        for bad in [
            "",
            &format!("{ED}\n{ED}"),
            &format!("restrict {ED}"),
            &format!("command=\"sh\" {ED}"),
            "ssh-dss AAAAB3NzaC1kc3MAAACBAP",
            // the body of an ed25519 key under another type
            "ssh-rsa AAAAC3NzaC1lZDI1NTE5AAAAIHIfjJ0Bzj+0cM/VU4AJL8lCM3diW6Vx5KoRigKVXKG2",
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBGCLbiHLBBFuDm5Wwfhr7ovZOuqzySPU1BHLeDWk3s",
            "ssh-ed25519 AAAAC3Nza\"C1lZDI1NTE5AAAAIBGCLbiHLBBFuDm5Wwfhr7ovZOuqzySPU1BHLeDWk3sR",
            &format!("{ED} \"quoted\""),
            &format!("{ED} a\x07b"),
        ] {
            assert!(PublicKey::parse(bad).is_err(), "{bad:?} accepted");
        }
        // Every type we take, as ssh-keygen writes them (and a security
        // key's, made by hand), each with its comment.
        for (line, kind) in [
            ("ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBNeFq/CeOOBhdTl3aJY+MBBDdMjjywDdMQXgM4R6KdBLnOGM8gUVl+T2/rQNFRYnNcFzcGSp0b62LeSSvhietr4= t@p256", "ecdsa-sha2-nistp256"),
            ("ecdsa-sha2-nistp521 AAAAE2VjZHNhLXNoYTItbmlzdHA1MjEAAAAIbmlzdHA1MjEAAACFBADVXxFtiKfXvHTwJFUESmqu0ihlSV3tU+66IFYQ6R0WHAy6KtNNROE+Izvw/zM0HXtMoXcqohkB3H7fb+U+fG5mYADuGEVCUEb114iwTfuOR0WUmpz0BJSNvSXs9csroLPHX+czgORbxe9YgW+eY84YonuktRbgx49zh/bQCu4O5P4oiA== t@p521", "ecdsa-sha2-nistp521"),
            ("ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAAAgQDhkFfOuaR8K6aNoiaWNno65kHDKAGaZEWOoBzmiIdkCCyvTe/S2Aa6cRkwGty0uy3OBwo50x78/OZPvsweeS53PSbdrtt89h+JANIwHZjeAdoL/e+ZqKL6Te+InuG2/ufo5lHuNjJOY1O5/AurMXZCFjbJa8bdT2WOm799EJvEpQ== t@rsa", "ssh-rsa"),
            ("sk-ssh-ed25519@openssh.com AAAAGnNrLXNzaC1lZDI1NTE5QG9wZW5zc2guY29tAAAAIAABAgMEBQYHCAkKCwwNDg8QERITFBUWFxgZGhscHR4fAAAABHNzaDo= yubi", "sk-ssh-ed25519@openssh.com"),
        ] {
            let k = PublicKey::parse(line).unwrap_or_else(|e| panic!("{kind}: {e}"));
            assert_eq!(k.kind, kind);
            assert_eq!(k.to_string(), line, "shown as given");
        }
        // A known type the crate decodes but we do not take, and one it
        // does not know: both refused by our list, naming what is taken.
        for other in ["ssh-dss AAAAB3NzaC1kc3MAAACBAP", "ssh-ed448 AAAACXNzaC1lZDQ0OA=="] {
            let e = PublicKey::parse(other).unwrap_err().to_string();
            assert!(e.contains("not a key type") && e.contains("ssh-ed25519"), "{e}");
        }
        let e = PublicKey::parse(&ED.replace(' ', "\t")).unwrap_err().to_string();
        assert!(e.contains("not a valid ssh-ed25519 key"), "a tab is not what ssh-keygen writes: {e}");
        assert_eq!(base64_decode("aGk="), Some(b"hi".to_vec()));
        assert_eq!(base64_decode("aGkh"), Some(b"hi!".to_vec()));
        assert_eq!(base64_decode("aA=="), Some(b"h".to_vec()));
        assert_eq!(base64_decode("a=A="), None);
        assert_eq!(base64_decode("aGk"), None);
    }

    #[test]
    fn from_and_paths_are_validated() {
        assert_eq!(
            FromList::new("10.77.0.1, 10.77.0.0/24,fd00::1/128").unwrap().as_str(),
            "10.77.0.1,10.77.0.0/24,fd00::1/128"
        );
        for bad in ["", "box.example", "10.77.0.1\"", "10.0.0.0/33", "10.0.0.0/", "*", "10.0.0.1,", "10.0.0.0/08"] {
            assert!(FromList::new(bad).is_err(), "{bad:?}");
        }
        let mut i = inputs();
        i.exe = "/opt/my apps/zoffsite".into();
        assert!(i.check().is_err());
        i.exe = "zoffsite".into();
        assert!(i.check().is_err());
        i.exe = "/usr/bin/zoffsite\"".into();
        assert!(i.check().is_err());
        let mut i = inputs();
        i.root = Dataset::new("offsite/my home").unwrap();
        assert!(i.check().unwrap_err().0.contains("--root"));
        assert!(inputs().check().is_ok());
        assert!(UserName::new("zo123").is_ok());
        for bad in ["", "Root", "1a", "a b", "a:b", &"a".repeat(33)] {
            assert!(UserName::new(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn versions() {
        let v = parse_zfs_version("zfs-2.3.2-2~bpo12+2\nzfs-kmod-2.3.2-2~bpo12+2\n");
        assert_eq!(v, ZfsVersions { userland: Some(Version(2, 3, 2)), kmod: Some(Version(2, 3, 2)) });
        let v = parse_zfs_version("zfs-2.1.11-1\nzfs-kmod-2.3.10\n");
        assert_eq!(v, ZfsVersions { userland: Some(Version(2, 1, 11)), kmod: Some(Version(2, 3, 10)) });
        assert!(Version(2, 3, 10) > MIN_VERSION && Version(2, 4, 0) > MIN_VERSION && Version(2, 3, 1) < MIN_VERSION);
        let v = parse_zfs_version("zfs-2.3.2-1\nzfs-kmod-unknown\n");
        assert_eq!(v.kmod, None);
        let mut f = ready();
        f.zfs_version = "zfs-2.2.7-1\nzfs-kmod-2.3.2-1\n".into();
        let p = plan(&inputs(), &f);
        assert!(p.problems[0].contains("2.3.2 or newer") && p.problems[0].contains("tools 2.2.7"), "{p:?}");
        // 2.3.2 (Debian 12's backports) works, with a warning to upgrade.
        f.zfs_version = "zfs-2.3.3-1\nzfs-kmod-2.3.2-2~bpo12+2\n".into();
        let p = plan(&inputs(), &f);
        assert!(p.problems.is_empty(), "{p:?}");
        assert!(matches!(&p.warnings[..], [w] if w.contains("OpenZFS 2.3.2 works") && w.contains("2.3.3")), "{p:?}");
        f.zfs_version = "Unable to open /dev/zfs: No such device.\nzfs-2.3.2-1\n".into();
        let p = plan(&inputs(), &f);
        assert!(p.problems[0].contains("module unknown") && p.problems[0].contains("modprobe zfs"), "{p:?}");
    }

    #[test]
    fn ready_box_needs_nothing() {
        let p = plan(&inputs(), &ready());
        assert_eq!(p.steps, vec![], "{p:?}");
        assert!(p.problems.is_empty() && p.warnings.is_empty(), "{p:?}");
        assert!(p.ok.iter().any(|o| o.contains("holds exactly")), "{p:?}");
    }

    #[test]
    fn fresh_box_gets_every_step_in_order() {
        let f = Facts {
            zfs_version: ready().zfs_version,
            allow: parse_allow(
                "---- Permissions on offsite -----\nLocal+Descendent permissions:\n\tgroup wheel send\n",
            )
            .unwrap(),
            ..Facts::default()
        };
        let mut inp = inputs();
        inp.snapshot_limit = Limit::Exactly(10000);
        let p = plan(&inp, &f);
        assert!(p.problems.is_empty(), "{p:?}");
        let kinds: Vec<String> =
            p.steps.iter().map(|s| format!("{s:?}").split([' ', '{']).next().unwrap().to_owned()).collect();
        assert_eq!(kinds, ["CreateUser", "CreateRoot", "Allow", "SetLimit", "SetLimit", "WriteAuthorizedKeys"]);
        // Both limits, the filesystem_limit by default; no quota unless asked.
        assert!(p.steps.contains(&Step::SetLimit {
            root: inp.root.clone(),
            prop: LimitProp::SnapshotLimit,
            value: Some(10000),
            was: "none".into()
        }));
        assert!(p.steps.contains(&Step::SetLimit {
            root: inp.root.clone(),
            prop: LimitProp::FilesystemLimit,
            value: Some(DEFAULT_FILESYSTEM_LIMIT),
            was: "none".into()
        }));
        assert!(p.ok.iter().any(|o| o.contains("no quota") && o.contains("--quota")), "{p:?}");
        match &p.steps[5] {
            Step::WriteAuthorizedKeys { path, ssh_dir, content, .. } => {
                assert_eq!(path, "/var/lib/zoffsite/.ssh/authorized_keys");
                assert_eq!(ssh_dir.as_deref(), Some("/var/lib/zoffsite/.ssh"));
                assert_eq!(content, &format!("{}\n", inp.key_line()));
            }
            s => panic!("{s:?}"),
        }
        assert!(p.warnings[0].contains("group wheel"), "{p:?}");
    }

    #[test]
    fn mountpoint_shell_and_limit_are_fixed() {
        let mut f = ready();
        f.root.as_mut().unwrap().mountpoint = "/offsite/home".into();
        f.user.as_mut().unwrap().shell = "/usr/sbin/nologin".into();
        f.password_field = Some("!".into());
        let mut inp = inputs();
        inp.snapshot_limit = Limit::Exactly(5);
        let p = plan(&inp, &f);
        assert!(p.steps.contains(&Step::SetMountpointNone { root: inp.root.clone(), was: "/offsite/home".into() }));
        assert!(p.steps.contains(&Step::SetShell { user: inp.user.clone(), was: "/usr/sbin/nologin".into() }));
        assert!(p.steps.contains(&Step::SetLimit {
            root: inp.root.clone(),
            prop: LimitProp::SnapshotLimit,
            value: Some(5),
            was: DEFAULT_SNAPSHOT_LIMIT.to_string()
        }));
        assert!(p.warnings[0].contains("usermod -p '*'"), "{p:?}");
        f.root.as_mut().unwrap().snapshot_limit = "5".into();
        f.root.as_mut().unwrap().kind = "volume".into();
        let p = plan(&inp, &f);
        assert!(!p.steps.iter().any(|s| matches!(s, Step::SetLimit { .. })));
        assert!(p.problems[0].contains("volume"), "{p:?}");
        f.user.as_mut().unwrap().uid = 0;
        assert!(plan(&inp, &f).problems.iter().any(|p| p.contains("uid 0")));
    }

    #[test]
    fn limits_default_on_an_unlimited_root_are_kept_otherwise_and_can_be_lifted() {
        let inp = inputs();
        let steps = |inp: &Inputs, f: &Facts| -> Vec<(LimitProp, Option<u64>)> {
            plan(inp, f)
                .steps
                .into_iter()
                .filter_map(|s| match s {
                    Step::SetLimit { prop, value, .. } => Some((prop, value)),
                    _ => None,
                })
                .collect()
        };
        // An existing root without limits gets the defaults.
        let mut f = ready();
        let r = f.root.as_mut().unwrap();
        r.snapshot_limit = "none".into();
        r.filesystem_limit = "none".into();
        assert_eq!(
            steps(&inp, &f),
            [
                (LimitProp::SnapshotLimit, Some(DEFAULT_SNAPSHOT_LIMIT)),
                (LimitProp::FilesystemLimit, Some(DEFAULT_FILESYSTEM_LIMIT))
            ]
        );
        // A limit the owner chose is kept, and said so.
        let r = f.root.as_mut().unwrap();
        r.snapshot_limit = "250000".into();
        r.filesystem_limit = "20".into();
        let p = plan(&inp, &f);
        assert!(steps(&inp, &f).is_empty(), "{p:?}");
        assert!(p.ok.iter().any(|o| o.contains("filesystem_limit=20") && o.contains("kept")), "{p:?}");
        // Asked for: set exactly; none lifts; a quota only when asked.
        let mut i2 = inputs();
        i2.filesystem_limit = Limit::Exactly(50);
        i2.snapshot_limit = Limit::Unlimited;
        i2.quota = Limit::Exactly(500 << 30);
        assert_eq!(
            steps(&i2, &f),
            [
                (LimitProp::SnapshotLimit, None),
                (LimitProp::FilesystemLimit, Some(50)),
                (LimitProp::Quota, Some(500 << 30))
            ]
        );
        let shown: Vec<String> = plan(&i2, &f).steps.iter().map(ToString::to_string).collect();
        assert!(
            shown.iter().any(|s| s.starts_with("set snapshot_limit=none on offsite/home (it is 250000")),
            "{shown:?}"
        );
        assert!(shown.iter().any(|s| s.starts_with(&format!("set quota={} on offsite/home (it is 0;", 500u64 << 30))));
        // Once set, a second run plans nothing (a quota of 0 is none).
        let r = f.root.as_mut().unwrap();
        r.snapshot_limit = "none".into();
        r.filesystem_limit = "50".into();
        r.quota = (500u64 << 30).to_string();
        assert!(steps(&i2, &f).is_empty());
        i2.quota = Limit::Unlimited;
        assert_eq!(steps(&i2, &f), [(LimitProp::Quota, None)]);
        assert_eq!(Limit::parse("none", |_| Err(String::new())), Ok(Limit::Unlimited));
        assert_eq!(Limit::parse("7", |s| s.parse().map_err(|_| String::new())), Ok(Limit::Exactly(7)));
        assert!(Limit::parse("0", |s| s.parse().map_err(|_| String::new())).is_err());
    }

    #[test]
    fn allow_listing_is_parsed() {
        let text = "---- Permissions on pp/home ------------------------------------------\nPermission sets:\n\t@set1 hold,snapshot\nCreate time permissions:\n\tsnapshot\nLocal permissions:\n\tuser zo1 rollback\nDescendent permissions:\n\tuser zo1 hold\nLocal+Descendent permissions:\n\tuser zo1 @set1,create,destroy,mount,receive:append,userprop\n\teveryone release\n\tuser (unknown: 4242) create\n---- Permissions on pp -----------------------------------------------\nLocal+Descendent permissions:\n\tgroup root send\n";
        let g = parse_allow(text).unwrap();
        assert_eq!(g.len(), 8);
        assert_eq!(g[0].who, Who::Set("@set1".into()));
        assert_eq!(
            g[1],
            Grant { on: "pp/home".into(), scope: Scope::Other, who: Who::Creator, perms: vec!["snapshot".into()] }
        );
        assert_eq!(g[2].scope, Scope::Local);
        assert_eq!(g[6].who, Who::User("(unknown: 4242)".into()));
        assert_eq!(
            g[7],
            Grant {
                on: "pp".into(),
                scope: Scope::LocalDescendent,
                who: Who::Group("root".into()),
                perms: vec!["send".into()]
            }
        );
        assert!(parse_allow("garbage\n").is_err());
        assert!(parse_allow("\tuser x y\n").is_err());
        assert_eq!(parse_allow("").unwrap(), vec![]);
    }

    #[test]
    fn extra_permissions_are_removed_and_foreign_grants_block() {
        let mut inp = inputs();
        inp.root = Dataset::new("pp/home").unwrap();
        inp.user = UserName::new("zo1").unwrap();
        let mut f = ready();
        f.allow = parse_allow("---- Permissions on pp/home -----\nLocal permissions:\n\tuser zo1 rollback\nDescendent permissions:\n\tuser zo1 hold\nLocal+Descendent permissions:\n\tuser zo1 @set1,create,destroy,mount,receive:append\n").unwrap();
        let p = plan(&inp, &f);
        assert!(
            p.steps.contains(&Step::Allow {
                user: inp.user.clone(),
                root: inp.root.clone(),
                missing: vec!["send".into(), "userprop".into()]
            }),
            "{p:?}"
        );
        assert!(
            p.steps.contains(&Step::Unallow {
                user: inp.user.clone(),
                root: inp.root.clone(),
                extra: vec!["@set1".into(), "destroy".into(), "hold".into(), "rollback".into()]
            }),
            "{p:?}"
        );
        // Grants elsewhere that reach the user on the root block.
        f.allow = parse_allow("---- Permissions on pp/home -----\nCreate time permissions:\n\tdestroy\nLocal+Descendent permissions:\n\tuser zo1 create,mount,receive:append,send,userprop\n\teveryone release\n---- Permissions on pp -----\nLocal permissions:\n\tuser zo1 destroy\nDescendent permissions:\n\tuser zo1 rollback\n").unwrap();
        let p = plan(&inp, &f);
        assert_eq!(p.problems.len(), 3, "{p:?}");
        assert!(p.problems[0].contains("create-time") && p.problems[0].contains("zfs unallow -c destroy pp/home"));
        assert!(p.problems[1].contains("everyone holds release"));
        assert!(p.problems[2].contains("rollback on pp") && p.problems[2].contains("zfs unallow -u zo1 rollback pp"));
        assert!(!p.steps.iter().any(|s| matches!(s, Step::Allow { .. } | Step::Unallow { .. })), "{p:?}");
    }

    #[test]
    fn authorized_keys_are_updated_in_place() {
        let inp = inputs();
        let line = inp.key_line();
        let other = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOtherKeyOtherKeyOtherKeyOtherKeyOtherKey1 admin";
        let old = format!("# mine\n{other}\ncommand=\"/bin/sh\" {ED}\nrestrict {ED}\n");
        let (new, n) = update_authorized_keys(&old, &inp.key, &line);
        assert_eq!(new, format!("# mine\n{other}\n{line}\n"));
        assert_eq!(n, 2);
        assert_eq!(update_authorized_keys(&new, &inp.key, &line), (new.clone(), 0), "idempotent");
        assert_eq!(update_authorized_keys("", &inp.key, &line).0, format!("{line}\n"));
        assert_eq!(update_authorized_keys(other, &inp.key, &line).0, format!("{other}\n{line}\n"));

        let mut f = ready();
        f.authorized_keys.as_mut().unwrap().content = Some(old);
        f.authorized_keys.as_mut().unwrap().mode = 0o100644;
        let p = plan(&inp, &f);
        match &p.steps[..] {
            [Step::WriteAuthorizedKeys { why, ssh_dir, .. }] => {
                assert!(why.contains("replacing 2") && why.contains("0600"), "{why}");
                assert_eq!(ssh_dir.as_deref(), Some("/var/lib/zoffsite/.ssh"));
            }
            s => panic!("{s:?}"),
        }
        let mut inp2 = inputs();
        inp2.authorized_keys = Some("/etc/ssh/keys/zoffsite".into());
        f.authorized_keys = None;
        f.ssh_dir = None;
        match &plan(&inp2, &f).steps[..] {
            [Step::WriteAuthorizedKeys { path, ssh_dir: None, .. }] => assert_eq!(path, "/etc/ssh/keys/zoffsite"),
            s => panic!("{s:?}"),
        }
        let mut f = ready();
        f.ssh_dir.as_mut().unwrap().is_symlink = true;
        assert!(plan(&inp, &f).problems[0].contains("symlink"));
    }
}
